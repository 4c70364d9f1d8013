"""Hostile and broken inputs (issue 23): each case is a small file made here and a command run on it in a subprocess
under an address-space cap (RLIMIT_AS) and a time limit. Every case must exit with status 2 (utils.UserError), print
exactly one line on stderr naming the file (or the flag), no traceback, leave no marker from any payload, and stay
under a peak memory (the child's ru_maxrss, from os.wait4). A new case is one line in CASES:
(file name, how to make its bytes, command), optionally what the line must name instead of the file."""

from __future__ import annotations

import io
import shlex
import zipfile
from typing import NamedTuple

import numpy as np
import pth_craft as c
import pytest

from conftest import ROOT, assert_one_line, run_limited

DATA = ROOT / "tests" / "data"
# peak resident MB by command (measured 2026-12-04: pthfile.py 37, evaluate.py up to 69, network.py 286 with paddle,
# fid.py 374 with paddle and the Inception built; the attacks these cases replay took 1.3-2 GB)
PEAK_MB = {"pthfile.py": 100, "-c": 100, "evaluate.py": 150, "fid.py": 600, "network.py": 500}


class Case(NamedTuple):
    name: str  # the file's name (its suffix too)
    make: object  # () -> bytes
    cmd: str  # {f}: the file, {tmp}: the case's folder; the first word is a script in the project root (or -c)
    names: str = "{f}"  # what the error line must contain
    peak_mb: int = 0  # the peak allowed, when not PEAK_MB[command]


# ---------------------------------------------------------------------------------------------
# makers


def fixture(name: str):
    return lambda: (DATA / name).read_bytes()


def tiny_zip(**kw) -> bytes:
    """A legitimate two-tensor file (w and its transpose over one storage)."""
    pkl = c.state({"w": c.tensor(c.storage("0", 6), (2, 3), (3, 1)), "t": c.tensor(c.storage("0", 6), (3, 2), (1, 3))})
    return c.zipped(pkl, {"0": np.arange(6, dtype=np.float32).tobytes()}, **kw)


def one(t: bytes, storages: dict | None = None, name: str = "w", **kw) -> bytes:
    """A zip holding one tensor named `name`."""
    return c.zipped(c.state({name: t}), storages if storages is not None else {"0": bytes(4)}, **kw)


def run_code(code: str) -> bytes:  # a pickle that runs `code` (os.system): any marker it leaves fails the case
    return c.PROTO2 + c.glob("posix", "system") + c.tup([c.s(code)]) + c.REDUCE + c.STOP


def dag_key(levels: int) -> bytes:
    """{(t, t): None} with t = (t', t') nested `levels` deep: hashing it visits 2**levels tuples."""
    body = c.EMPTY_TUPLE + c.put(0)
    for k in range(1, levels + 1):
        body += c.get(k - 1) + c.TUPLE2 + c.put(k)  # (t, t): t is on the stack already
    return c.zipped(c.PROTO2 + c.EMPTY_DICT + body + c.NONE + c.SETITEM + c.STOP)


def build_on(global_: bytes) -> bytes:
    """BUILD on an allowed global (its class attributes, a function's __dict__), then a state dict."""
    attrs = c.EMPTY_DICT + c.MARK + c.s("itemsize") + c.i(8) + c.s("dtype") + c.s("float64") + c.SETITEMS
    return c.zipped(c.PROTO2 + global_ + attrs + c.BUILD + c.STOP)


def stats_npz(**arrays) -> bytes:
    """An --fid-stats file with these members (the defaults make a well-formed one of tiny features)."""
    full = dict(
        mu=np.zeros(2048),
        sigma=np.zeros((2048, 2048)),
        kid_features=np.zeros((3, 2048), np.float32),
        images_sha256="0" * 64,
        weights_sha256="0" * 64,
        version=1,
    )
    full.update(arrays)
    buf = io.BytesIO()
    np.savez(buf, **full)
    return buf.getvalue()


def npy_header_only(shape: tuple, descr: str = "<f8") -> bytes:
    f, shape = io.BytesIO(), tuple(int(n) for n in shape)
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue() + bytes(64)


def with_member(npz: bytes, name: str, content: bytes) -> bytes:
    src, out = zipfile.ZipFile(io.BytesIO(npz)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info, content if info.filename == name else src.read(info))
    return out.getvalue()


def bzip2_bomb() -> bytes:  # a ~100-byte bzip2 member that inflates to the 64 MB its tensor declares
    return one(T(ST("0", 16 << 20), (4096, 4096), (4096, 1)), {"0": bytes(64 << 20)}, method=zipfile.ZIP_BZIP2)


def patched(z: bytes, **kw) -> bytes:
    return c.patch_member(z, "archive/data/0", **kw)


PTH = "pthfile.py {f}"
FID = "fid.py --weights {f} --out {tmp}/out.safetensors"
STATS = "evaluate.py --num 3 --fid-weights {tmp}/unused.pth --fid-stats {f}"
CONVERT = "network.py --convert {f} {tmp}/new.safetensors"
BUILD_THEN_READ = (  # the hostile read fails; then a legitimate read in the same process must give the right numbers
    "-c",
    "import sys, numpy as np, utils, pthfile\n"
    "from bench.fid_reference import tiny_tensors\n"
    "def main(argv):\n"
    "    try:\n"
    "        pthfile.read_pth(argv[0])\n"
    "    finally:\n"
    f"        got, want = pthfile.read_pth({str(DATA / 'fid_tiny.pth')!r}), tiny_tensors()\n"
    "        if any(got[k].dtype != want[k].dtype or not np.array_equal(got[k], want[k]) for k in want):\n"
    "            sys.exit(3)\n"
    "sys.exit(utils.run_cli(main, sys.argv[1:]))\n",
)
T = c.tensor
ST = c.storage
DATA0 = {"0": bytes(4)}

CASES = [
    # the .pth reader: pickles that would run code, or modify what later reads use
    Case("malicious.pth", fixture("fid_malicious.pth"), PTH),
    Case("malicious_fid.pth", fixture("fid_malicious.pth"), FID),
    Case("malicious_eval.pth", fixture("fid_malicious.pth"), "evaluate.py --num 3 --fid-weights {f}", peak_mb=600),
    Case("system_legacy.pth", lambda: c.legacy(run_code("touch pwned"), [], []), PTH),
    Case("stack_global_eval.pth", lambda: c.zipped(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93" + c.STOP), PTH),
    Case("build_on_storage_type.pth", lambda: build_on(c.glob("torch", "FloatStorage")), BUILD_THEN_READ),
    Case("build_on_function.pth", lambda: build_on(c.glob("torch._utils", "_rebuild_tensor_v2")), BUILD_THEN_READ),
    Case("ext1_opcode.pth", lambda: c.zipped(c.PROTO2 + b"\x82\x01" + c.STOP), PTH),
    # the .pth reader: pickles that take memory, time or the C stack
    Case("memo_bomb.pth", lambda: c.zipped(c.PROTO2 + c.NONE + c.put(0xFFFFFFF0) + c.STOP), PTH),
    Case("memo_never_put.pth", lambda: c.zipped(c.PROTO2 + c.get(7) + c.STOP), PTH),
    Case("tuple_key_20.pth", lambda: dag_key(20), PTH),
    Case("tuple_key_40.pth", lambda: dag_key(40), PTH),
    Case("nested_300k_tuples.pth", lambda: c.zipped(c.PROTO2 + c.EMPTY_TUPLE + c.TUPLE1 * 300_000 + c.STOP), PTH),
    Case("marks_100k.pth", lambda: c.zipped(c.PROTO2 + c.MARK * 100_000 + c.NONE + c.STOP), PTH),
    Case("stride0_huge.pth", lambda: one(T(ST("0", 1), (16000, 16000), (0, 0))), PTH),
    Case("stride0_huge_fid.pth", lambda: one(T(ST("0", 1), (16000, 16000), (0, 0)), name="fc.weight"), FID),
    Case("storage_huge.pth", lambda: one(T(ST("0", 1 << 40), (2,), (1,))), PTH),
    # the .pth reader: wrong types in the tensor-rebuild arguments
    Case("size_of_strings.pth", lambda: one(T(ST("0", 1), None, (1,), raw_size=c.tup([c.s("a")]))), PTH),
    Case("storage_a_list.pth", lambda: one(T(c.EMPTY_LIST, (1,), (1,))), PTH),
    Case("stride_2e70.pth", lambda: one(T(ST("0", 1), (2,), (1 << 70,))), PTH),
    Case("offset_negative.pth", lambda: one(T(ST("0", 1), (1,), (1,), offset=-1)), PTH),
    Case("storage_key_path.pth", lambda: one(T(ST("../../etc/passwd", 1), (1,), (1,))), PTH),
    # the .pth reader: zip members and storages
    Case("member_short.pth", lambda: one(T(ST("0", 1000), (1000,), (1,))), PTH),
    Case("bzip2_bomb.pth", bzip2_bomb, PTH),
    Case("lzma_member.pth", lambda: tiny_zip(method=zipfile.ZIP_LZMA), PTH),
    Case("unknown_method.pth", lambda: patched(tiny_zip(), method=99), PTH),
    Case("encrypted_member.pth", lambda: patched(tiny_zip(), flags=1), PTH),
    Case("bad_crc.pth", lambda: c.flip_byte_of(tiny_zip(), np.arange(6, dtype=np.float32).tobytes()), PTH),
    Case("truncated_zip.pth", lambda: tiny_zip()[: len(tiny_zip()) // 2], PTH),
    Case("legacy_count_lies.pth", lambda: c.legacy(c.state({"w": T(ST("0", 99), (2,), (1,))}), ["0"], [bytes(4)]), PTH),
    Case("empty.pth", lambda: b"", FID),
    Case("garbage.pth", lambda: bytes(range(256)) * 4, FID),
    Case("claims_pytorch_fid.safetensors", lambda: claims_published(), FID),
    # --convert unpickles: only with --allow-pickle
    Case("evil.pdparams", lambda: run_code("touch pwned"), CONVERT),
    # evaluate.py --fid-stats / --fid-batch: one line before any work
    Case("stats_truncated.npz", lambda: stats_npz()[:5000], STATS),
    Case("stats_garbage.npz", lambda: b"PK\x03\x04" + bytes(100), STATS),
    Case("stats_wrong_shape.npz", lambda: stats_npz(mu=np.zeros(3)), STATS),
    Case("stats_huge_header.npz", lambda: with_member(stats_npz(), "sigma.npy", npy_header_only((1e5, 1e5))), STATS),
    Case("stats_object_member.npz", lambda: with_member(stats_npz(), "mu.npy", npy_header_only((2048,), "|O")), STATS),
    Case("stats_bad_crc.npz", lambda: c.flip_byte_of(stats_npz(mu=np.full(2048, 7.0)), np.full(8, 7.0).data), STATS),
    Case("fid_batch.pth", fixture("fid_tiny.pth"), "evaluate.py --fid-batch -1 --fid-weights {f}", "--fid-batch"),
]


def claims_published() -> bytes:
    """A safetensors file whose metadata says it came from pytorch-fid's published .pth (and a tensor it never has)."""
    from safetensors.numpy import save

    return save({"evil": np.zeros(4, np.float32)}, metadata={"source_sha256": "6726825d" + "0" * 56})


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_gets_one_line(case: Case, tmp_path, record_property):
    path = tmp_path / case.name
    path.write_bytes(case.make())
    words = case.cmd if isinstance(case.cmd, tuple) else tuple(shlex.split(case.cmd))
    words = [w.format(f=path, tmp=tmp_path) for w in words]
    argv = words if words[0] == "-c" else [str(ROOT / words[0]), *words[1:]]
    if words[0] == "-c":
        argv.append(str(path))
    status, err, peak_mb = run_limited(argv, tmp_path)
    assert_one_line(case.name, status, err, peak_mb, case.names.format(f=path), record_property)
    assert not list(tmp_path.glob("*pwned*")), "a payload ran"
    assert peak_mb < (case.peak_mb or PEAK_MB[words[0]]), f"peak {peak_mb:.0f} MB"


def test_the_harness_measures_the_case_itself_and_caps_it(tmp_path):
    status, _, peak_mb = run_limited(["-c", "b = b'x' * (300 << 20)"], tmp_path)  # from this (large) pytest process
    assert status == 0 and 300 < peak_mb < 400
    status, err, _ = run_limited(["-c", "b = b'x' * (4 << 30)"], tmp_path)  # over RLIMIT_AS
    assert status == 1 and "MemoryError" in err
