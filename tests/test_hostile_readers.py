"""Hostile and broken inputs, part 2 (issue 23): model-file metadata, image files and folders, flags and paths. Each
case makes its files in a fresh folder and runs a command on them in a subprocess under an address-space cap
(RLIMIT_AS) and a time limit. Every case must exit with status 2 (utils.UserError), print exactly one line on stderr
naming the file (or the flag), no traceback, and stay under a peak memory (the child's ru_maxrss, from os.wait4).
A case is one line in CASES: (name, how to make its files in the folder, command, what the line must contain).
(The same discipline as tests/test_hostile.py of the .pth reader; the tables join when both are in one branch.)"""

from __future__ import annotations

import io
import json
import os
import shlex
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from conftest import ROOT, assert_one_line, run_limited

AS_CAP = 3 << 30  # bytes of address space per case (paddle maps ~1.3 GB at import)
TIME_LIMIT = 120  # seconds per case
PEAK_MB = 600  # paddle with a tiny model stays near 300 MB; the attacks replayed here took 1.3 GB to terabytes


class Case(NamedTuple):
    name: str
    make: object  # (folder: Path) -> None: writes the case's files
    cmd: str  # {d}: the case's folder; the first word is a script in the project root
    names: str  # what the one error line must contain ({d}: the folder)


# ---------------------------------------------------------------------------------------------
# makers: model files


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file by hand (the library refuses some of what an attacker writes)."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        dtype = {"float32": "F32", "float64": "F64", "int64": "I64"}[str(a.dtype)]
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


class Raw(str):
    """Metadata text written as it is (not JSON-encoded)."""


def generator_meta(**kw) -> dict[str, str]:
    meta = {"format": "dcgan-faces-paddle/generator", "version": 1, "nz": 16, "ngf": 8} | kw
    return {k: v if isinstance(v, Raw) else json.dumps(v) for k, v in meta.items()}


def write(name: str, data: bytes | str):
    def make(d: Path) -> None:
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return make


def tiny_generator_state(nz: int = 16, ngf: int = 8) -> dict[str, np.ndarray]:
    """A generator's tensors by name, zeros, without paddle (names and shapes as network.Generator's)."""
    state, chans = {}, [nz, ngf * 8, ngf * 4, ngf * 2, ngf, 3]
    for i, layer in enumerate((0, 3, 6, 9, 12)):
        state[f"main.{layer}.weight"] = np.zeros((chans[i], chans[i + 1], 4, 4), np.float32)
        if layer != 12:
            for part in ("weight", "bias", "_mean", "_variance"):
                state[f"main.{layer + 1}.{part}"] = np.zeros(chans[i + 1], np.float32)
    return state


def gen_file(name: str, tensors=None, **meta):
    return write(
        name, safetensors_bytes(tiny_generator_state() if tensors is None else tensors, generator_meta(**meta))
    )


def deep_json(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


def checkpoint_with(tensors: dict | None = None, drop: str = "", **changes):
    """A real tiny checkpoint (made by train.py in a subprocess once per session) in d/run, with extra `tensors`,
    without the tensors under `drop`, its metadata keys changed to `changes` (JSON)."""

    def make(d: Path) -> None:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        src = tiny_run()
        with safe_open(str(src / "checkpoint.safetensors"), framework="numpy") as f:
            meta = dict(f.metadata())
        old = load_file(str(src / "checkpoint.safetensors"))
        old = {n: a for n, a in old.items() if not (drop and n.startswith(drop))}
        config = json.loads(meta["config"]) | {"data": str(d / "faces.npy"), "out": str(d / "run")}
        meta.update({"config": json.dumps(config)} | {k: json.dumps(v) for k, v in changes.items()})
        (d / "run").mkdir()
        (d / "run" / "checkpoint.safetensors").write_bytes(safetensors_bytes({**old, **(tensors or {})}, meta))
        np.save(d / "faces.npy", np.load(src / "faces.npy"))  # the data of the run, for --resume

    return make


_TINY: list[Path] = []


def tiny_run() -> Path:
    if not _TINY:
        import tempfile

        from conftest import TINY_NET, make_faces

        d = Path(tempfile.mkdtemp(prefix="hostile-readers-"))
        make_faces(d / "faces.npy", n=16)
        cmd = [sys.executable, "train.py", "--data", str(d / "faces.npy"), "--out", str(d), *TINY_NET, "--epochs",
               "1", "--no-progress", "--overwrite"]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        _TINY.append(d)
    return _TINY[0]


# ---------------------------------------------------------------------------------------------
# makers: images


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header that claims width x height, with one tiny IDAT: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )


def small_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((80, 64, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def folder(*entries):
    """Files in d/imgs: (name, bytes) or (name, "->target") for a symlink, (name, "/") for a folder."""

    def make(d: Path) -> None:
        (d / "imgs").mkdir()
        for name, content in entries:
            p = d / "imgs" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            if content == "/":
                p.mkdir()
            elif isinstance(content, str) and content.startswith("->"):
                os.symlink(content[2:], p)
            else:
                p.write_bytes(content)
        np.save(d / "faces.npy", np.full((8, 64, 64, 3), 100, np.uint8))

    return make


def zip_bomb(d: Path) -> None:
    """A zip whose one JPEG member inflates to 2 GiB (deflate, ~2 MB on disk)."""
    with zipfile.ZipFile(d / "celeba.zip", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("000001.jpg", "w", force_zip64=True) as f:
            block = bytes(64 << 20)
            for _ in range(32):
                f.write(block)


def long_zip(d: Path) -> None:
    """A zip whose member's name is longer than a file system allows for a file name."""
    with zipfile.ZipFile(d / "long.zip", "w") as z:
        z.writestr("x" * 300 + ".jpg", small_png())
        z.writestr("ok.jpg", small_png())


def fifo(name: str):
    def make(d: Path) -> None:
        os.mkfifo(d / name)

    return make


def bad_crc_zip(d: Path) -> None:
    """A stored (uncompressed) JPEG member with one byte of its data changed: the CRC check fails."""
    with zipfile.ZipFile(d / "bad.zip", "w") as z:
        z.writestr("000001.png", small_png())
    raw = bytearray((d / "bad.zip").read_bytes())
    raw[raw.index(b"IDAT") + 8] ^= 0xFF
    (d / "bad.zip").write_bytes(bytes(raw))


def both(*makers):
    def make(d: Path) -> None:
        for m in makers:
            m(d)

    return make


def faces(d: Path) -> None:
    np.save(d / "faces.npy", np.full((8, 64, 64, 3), 100, np.uint8))


def tiny_gen(d: Path) -> None:
    (d / "g.safetensors").write_bytes((tiny_run() / "generator.safetensors").read_bytes())


def a_file(name: str):
    return write(name, b"not a folder\n")


def a_dir(name: str):
    def make(d: Path) -> None:
        (d / name).mkdir()

    return make


GEN = "generator.py --ckpt {d}/g.safetensors --num 4 --out {d}/faces"
EVAL = "evaluate.py --images {d}/imgs --data {d}/faces.npy --num 8 --workers 1"
COMPLETE = "complete.py --ckpt {d}/run/checkpoint.safetensors --iters 2 --restarts 1 --num 2 --out {d}/out"
RESUME = "train.py --data {d}/faces.npy --out {d}/run --batch-size 8 --ngf 8 --ndf 8 --nz 16 --epochs 2 --resume"

CASES = [
    # model files: metadata that is deep, misnamed, or claims a model far larger than the file
    Case("meta_deep_100k", gen_file("g.safetensors", nz=deep_json(100_000)), GEN, "{d}/g.safetensors"),
    Case("meta_deep_key", gen_file("g.safetensors", extra=deep_json(5000)), GEN, "{d}/g.safetensors"),
    Case(
        "tensor_named_format",
        gen_file("g.safetensors", {**tiny_generator_state(), "format": np.zeros(2, np.float32)}),
        GEN,
        "{d}/g.safetensors",
    ),  # fmt: skip
    Case(
        "tensor_named_G_ema",
        checkpoint_with({"G_ema": np.zeros(3, np.float32)}),
        GEN.replace("g.safetensors", "run/checkpoint.safetensors"),
        "{d}/run/checkpoint.safetensors",
    ),  # fmt: skip
    Case(
        "nz_terabytes_120_bytes",
        write("g.safetensors", safetensors_bytes({}, generator_meta(nz=10**9, ngf=10**6))),
        GEN,
        "{d}/g.safetensors",
    ),  # fmt: skip
    Case(
        "ngf_huge_consistent_first_layer",
        gen_file("g.safetensors", {"main.0.weight": np.zeros((1, 8192, 4, 4), np.float32)}, nz=1, ngf=1024),
        GEN,
        "{d}/g.safetensors",
    ),  # fmt: skip
    Case("ngf_over_bound", gen_file("g.safetensors", nz=16, ngf=5000), GEN, "{d}/g.safetensors"),
    Case("nz_a_string", gen_file("g.safetensors", nz='"16"'), GEN, "{d}/g.safetensors"),
    Case(
        "tensor_bytes_missing",
        write("g.safetensors", safetensors_bytes(tiny_generator_state(), generator_meta())[:-4096]),
        GEN,
        "{d}/g.safetensors",
    ),  # fmt: skip
    Case(
        "resume_history_strings",
        checkpoint_with(drop="history/", history={k: ["a"] * 2 for k in ("d_loss", "g_loss", "d_real", "d_fake")}),
        RESUME,
        "{d}/run/checkpoint.safetensors",
    ),  # fmt: skip
    Case(
        "resume_fixed_noise_strings",
        checkpoint_with(drop="fixed_noise", fixed_noise=["x"] * 64),
        RESUME,
        "{d}/run/checkpoint.safetensors",
    ),  # fmt: skip
    Case("resume_iteration_string", checkpoint_with(iteration="2"), RESUME, "{d}/run/checkpoint.safetensors"),
    # images: decompression bombs, zip bombs, broken links, names a file system refuses
    Case(
        "eval_png_bomb", folder(("a.png", small_png()), ("bomb.png", png_claiming(20000, 20000))), EVAL, "{d}/imgs"
    ),  # fmt: skip
    Case(
        "complete_mask_png_bomb",
        both(checkpoint_with(), write("mask.png", png_claiming(20000, 20000))),
        COMPLETE + " --images {d}/faces.npy --mask file:{d}/mask.png",
        "{d}/mask.png",
    ),  # fmt: skip
    Case(
        "complete_images_png_bomb",
        both(checkpoint_with(), folder(("bomb.png", png_claiming(20000, 20000)))),
        COMPLETE + " --images {d}/imgs",
        "{d}/imgs",
    ),  # fmt: skip
    Case(
        "pretreat_zip_bomb",
        zip_bomb,
        "pretreat.py --src {d}/celeba.zip --out {d}/o.npy --workers 1 --no-progress",
        "{d}/celeba.zip",
    ),
    Case(
        "pretreat_dangling_symlink",
        folder(("b.png", "->/nonexistent/x.png")),
        "pretreat.py --src {d}/imgs --out {d}/o.npy --workers 1 --no-progress",
        "{d}/imgs",
    ),  # fmt: skip
    Case(
        "complete_symlink_loop",
        both(checkpoint_with(), folder(("loop.png", "->loop.png"))),
        COMPLETE + " --images {d}/imgs",
        "{d}/imgs",
    ),  # fmt: skip
    Case("eval_png_12000", folder(("big.png", png_claiming(12000, 12000))), EVAL, "{d}/imgs"),
    Case(
        "complete_mask_png_12000",
        both(checkpoint_with(), write("mask.png", png_claiming(12000, 12000))),
        COMPLETE + " --images {d}/faces.npy --mask file:{d}/mask.png",
        "{d}/mask.png",
    ),  # fmt: skip
    Case("eval_fifo", both(folder(("a.png", small_png())), fifo("imgs/b.png")), EVAL, "{d}/imgs/b.png"),
    Case(
        "pretreat_dev_zero",
        folder(("z.png", "->/dev/zero")),
        "pretreat.py --src {d}/imgs --out {d}/o.npy --workers 1 --no-progress",
        "{d}/imgs",
    ),  # fmt: skip
    Case(
        "pretreat_zip_bad_crc",
        bad_crc_zip,
        "pretreat.py --src {d}/bad.zip --out {d}/o.npy --workers 1 --no-progress",
        "{d}/bad.zip",
    ),  # fmt: skip
    Case(
        "complete_images_dangling",
        both(checkpoint_with(), folder(("gone.png", "->nowhere.png"))),
        COMPLETE + " --images {d}/imgs",
        "{d}/imgs",
    ),  # fmt: skip
    # flags and paths: refused before any work
    Case("eval_json_a_folder", both(folder(("a.png", small_png())), a_dir("j")), EVAL + " --json {d}/j", "{d}/j"),
    Case(
        "eval_data_npz",
        both(folder(("a.png", small_png())), write("faces.npz", b"PK\x03\x04" + bytes(64))),
        EVAL.replace("faces.npy", "faces.npz"),
        "{d}/faces.npz",
    ),  # fmt: skip
    Case(
        "eval_workers_negative",
        folder(("a.png", small_png())),
        EVAL.replace("--workers 1", "--workers -1"),
        "--workers",
    ),  # fmt: skip
    Case(
        "eval_fid_batch_negative",
        folder(("a.png", small_png())),
        EVAL + " --fid-batch -1 --fid-weights {d}/w.pth",
        "--fid-batch",
    ),  # fmt: skip
    Case("eval_num_negative", folder(("a.png", small_png())), EVAL.replace("--num 8", "--num -3"), "--num"),
    Case(
        "train_out_a_file",
        both(faces, a_file("out")),
        "train.py --batch-size 4 --data {d}/faces.npy --out {d}/out",
        "{d}/out",
    ),
    Case(
        "train_out_parent_a_file",
        both(faces, a_file("f")),
        "train.py --batch-size 4 --data {d}/faces.npy --out {d}/f/run",
        "{d}/f",
    ),  # fmt: skip
    Case(
        "train_workers_negative",
        faces,
        "train.py --batch-size 4 --data {d}/faces.npy --out {d}/o --num-workers -1",
        "--num-workers",
    ),  # fmt: skip
    Case("train_check_log_every", faces, "train.py --check --log-every -1", "--log-every"),
    Case("generator_out_a_file", both(tiny_gen, a_file("faces")), GEN, "{d}/faces"),
    Case("generator_num_negative", tiny_gen, GEN.replace("--num 4", "--num -3"), "--num"),
    Case("complete_out_a_file", both(checkpoint_with(), a_file("out")), COMPLETE, "{d}/out"),
]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_gets_one_line(case: Case, tmp_path, record_property):
    case.make(tmp_path)
    words = [w.format(d=tmp_path) for w in shlex.split(case.cmd)]
    status, err, peak_mb = run_limited([str(ROOT / words[0]), *words[1:]], tmp_path, AS_CAP, TIME_LIMIT)
    assert_one_line(case.name, status, err, peak_mb, case.names.format(d=tmp_path), record_property)
    assert peak_mb < PEAK_MB, f"peak {peak_mb:.0f} MB"


def test_model_sizes_computed_without_building_match_the_networks():
    import modelfile
    from network import Discriminator, Generator

    for nz, width in [(16, 8), (100, 64), (3, 5)]:
        G, D = Generator(nz, width), Discriminator(width)
        assert sum(int(v.size) for v in G.state_dict().values()) == modelfile.generator_numel(nz, width)
        assert sum(int(v.size) for v in D.state_dict().values()) == modelfile.discriminator_numel(width)


def test_metadata_depth_is_counted_without_recursion():
    import modelfile

    assert [modelfile._depth(v) for v in (1, [], {"a": {"b": [1]}}, [[]])] == [0, 1, 3, 2]
    assert modelfile._depth(json.loads("[" * 900 + "]" * 900)) == modelfile.MAX_DEPTH + 1


@pytest.mark.parametrize("kind", ["collide", "too_long"])
def test_pretreat_renames_crops_whose_names_collide_or_are_too_long(tmp_path, kind):
    if kind == "collide":  # a.jpg's crop would be a.png, a folder for a.png/x.jpg's
        folder(("a.jpg", small_png()), ("a.png/x.jpg", small_png()), ("b.png", small_png()))(tmp_path)
        src = tmp_path / "imgs"
    else:
        long_zip(tmp_path)
        src = tmp_path / "long.zip"
    argv = [str(ROOT / "pretreat.py"), "--src", str(src), "--out", str(tmp_path / "o.npy"),
            "--workers", "1", "--no-progress", "--images", str(tmp_path / "crops")]  # fmt: skip
    status, err, peak_mb = run_limited(argv, tmp_path)
    assert status == 0 and "Traceback" not in err, err[-2000:]
    crops = sorted(p.relative_to(tmp_path / "crops").as_posix() for p in (tmp_path / "crops").rglob("*.png")
                   if p.is_file())  # fmt: skip
    n = len(np.load(tmp_path / "o.npy"))
    assert len(crops) == n == (3 if kind == "collide" else 2), crops
    assert any(c.endswith((".0.png", ".1.png")) for c in crops) and all(len(Path(c).name) <= 255 for c in crops), crops
