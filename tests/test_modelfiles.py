"""Model files: safetensors with documented metadata, pickles refused (a malicious one never runs), --allow-pickle and
--convert for old files, a clear one-line error for each kind of bad file, atomic saves (CPU, tiny models)."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

from utils import UserError

import numpy as np
import paddle
import pytest
from safetensors import safe_open

import modelfile
import network
import train as train_mod
from conftest import ROOT, TINY_NET, assert_same_state, tiny
from generator import generate
from modelfile import CHECKPOINT_FORMAT, load_discriminator, load_generator
from network import Discriminator, Generator

GENERATOR_METADATA = {"format", "version", "nz", "ngf"}  # as docs/ documents them
CHECKPOINT_METADATA = {
    "format",
    "version",
    "G",
    "D",
    "G_ema",
    "optG",
    "optD",
    "scalerG",
    "scalerD",
    "epoch",
    "iteration",
    "rng",
    "config",
    "history",
}


class Payload:
    """Unpickling this runs exec(): it writes the marker file, as an attacker's os.system would run anything."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def evil_pickle(path: Path, marker: Path) -> Path:
    """A .pdparams-looking pickle (a dict like an old generator.pdparams) whose loading writes `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": modelfile.GENERATOR_FORMAT, "version": 1, "nz": 100, "ngf": 8, "state_dict": Payload(marker)}
    path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


def one_line_error(r: subprocess.CompletedProcess, prog: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


def run_all(cmds: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Start every command at once (each pays `import paddle`), then collect them."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = {k: subprocess.Popen([sys.executable, *a], cwd=cwd, **pipes) for k, a in cmds.items()}
    out = {}
    for k, p in procs.items():
        o, e = p.communicate(timeout=300)
        out[k] = subprocess.CompletedProcess(p.args, p.returncode, o, e)
    return out


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The shared tiny run (5 iterations, EMA on) and its data."""
    return tiny_run, tiny_run.parent / "faces.npy"


def guarded_names(tree: dict) -> dict:
    """`tree` with its optimizer state under the names earlier versions used: Paddle's own ("<param>_moment1_0"), from
    G and D built in a fresh unique_name scope, G first (as the earlier Trainer built them)."""
    cfg = tree["config"]
    with paddle.utils.unique_name.guard():
        G, D = Generator(cfg["nz"], cfg["ngf"]), Discriminator(cfg["ndf"])
    out = dict(tree)
    for part, model in (("optG", G), ("optD", D)):
        names = [p.name for p in model.parameters() if p.trainable]
        out[part] = {f"{names[int(k.split('.')[0])]}_{k.split('.')[1]}_0": v for k, v in tree[part].items()}
    return out


def legacy_files(out: Path, dest: Path) -> tuple[Path, Path]:
    """The generator.pdparams and checkpoint.pdparams an earlier version would have written for this run."""
    dest.mkdir(parents=True, exist_ok=True)
    ckpt = guarded_names(modelfile.read_state(out / modelfile.CHECKPOINT_FILE))
    gen = modelfile.read_state(out / modelfile.GENERATOR_FILE)

    def to_paddle(tree):
        return {
            k: to_paddle(v) if isinstance(v, dict) else paddle.to_tensor(v) if isinstance(v, np.ndarray) else v
            for k, v in tree.items()
        }

    old = {k: v for k, v in ckpt.items() if k not in ("format", "version", "fixed_noise", "history")}
    history = {k: list(map(float, v)) for k, v in ckpt["history"].items()}  # lists, as the old train.py kept them
    old = to_paddle(old) | {"fixed_noise": ckpt["fixed_noise"], "history": history}
    weights = {k: paddle.to_tensor(v) for k, v in gen.items() if isinstance(v, np.ndarray)}
    old_gen = {
        "format": modelfile.GENERATOR_FORMAT,
        "version": 1,
        "nz": gen["nz"],
        "ngf": gen["ngf"],
        "state_dict": weights,
    }
    paddle.save(old_gen, str(dest / "generator.pdparams"))
    paddle.save(old, str(dest / "checkpoint.pdparams"))
    assert (dest / "checkpoint.pdparams").read_bytes()[:1] == b"\x80"  # really pickles, as Paddle 3.3.1 writes them
    return dest / "generator.pdparams", dest / "checkpoint.pdparams"


# -- the files ----------------------------------------------------------------------------------


def test_files_are_safetensors_with_only_the_documented_metadata(trained):
    out, _ = trained
    files = ((modelfile.GENERATOR_FILE, GENERATOR_METADATA), (modelfile.CHECKPOINT_FILE, CHECKPOINT_METADATA))
    for name, documented in files:
        path = out / name
        head = path.read_bytes()[:9]
        assert head[8:9] == b"{" and head[:1] != b"\x80", name  # a safetensors header, not Paddle's pickle fallback
        with safe_open(str(path), framework="numpy") as f:
            meta, keys = f.metadata(), list(f.keys())
            assert set(meta) == documented, name
            values = {k: json.loads(v) for k, v in meta.items()}  # every value is JSON
            assert all(f.get_tensor(k).dtype in (np.float32, np.float64) for k in keys)
        assert values["version"] == 1
    gen = json.loads(safe_open(str(out / modelfile.GENERATOR_FILE), "numpy").metadata()["format"])
    assert gen == modelfile.GENERATOR_FORMAT
    with safe_open(str(out / modelfile.CHECKPOINT_FILE), framework="numpy") as f:
        keys, meta = set(f.keys()), {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["format"] == CHECKPOINT_FORMAT and meta["iteration"] == 5 and meta["config"]["ngf"] == 8
    assert {"fixed_noise", "history/d_loss", "G/main.0.weight", "D/main.0.weight", "G_ema/main.0.weight"} <= keys
    assert "optG/0.moment1" in keys and not any(k.endswith("_moment1_0") for k in keys)  # by parameter order
    assert "optD/0.beta2_pow_acc" in keys
    assert {k.split("/")[0] for k in keys} == {"G", "D", "G_ema", "optG", "optD", "fixed_noise", "history"}


def test_generator_file_loads_with_plain_paddle_load(trained):
    """The generator file's tensors are G's state_dict as is: paddle.load(safetensors=True) + set_state_dict."""
    out, _ = trained
    G = load_generator(out / modelfile.GENERATOR_FILE)
    plain = Generator(nz=G.nz, ngf=G.ngf)
    plain.set_state_dict(paddle.load(str(out / modelfile.GENERATOR_FILE), safetensors=True))
    plain.eval()
    assert np.array_equal(generate(G, 4, seed=1), generate(plain, 4, seed=1))


def test_loaders_return_eval_models_from_both_files(trained):
    out, _ = trained
    ckpt = modelfile.read_state(out / modelfile.CHECKPOINT_FILE)
    G_file, G_ckpt = load_generator(out / modelfile.GENERATOR_FILE), load_generator(out / modelfile.CHECKPOINT_FILE)
    G_plain = load_generator(out / modelfile.CHECKPOINT_FILE, use_ema=False)
    D = load_discriminator(out / modelfile.CHECKPOINT_FILE)
    assert not any(m.training for m in (G_file, G_ckpt, G_plain, D))
    assert np.array_equal(G_file.state_dict()["main.0.weight"].numpy(), ckpt["G_ema"]["main.0.weight"])  # EMA weights
    assert np.array_equal(G_ckpt.state_dict()["main.0.weight"].numpy(), ckpt["G_ema"]["main.0.weight"])
    assert np.array_equal(G_plain.state_dict()["main.0.weight"].numpy(), ckpt["G"]["main.0.weight"])
    for k, v in D.state_dict().items():
        assert np.array_equal(v.numpy(), ckpt["D"][k]), k
    assert D.ndf == 8
    with pytest.raises(UserError, match="generator-only file holds no discriminator"):
        load_discriminator(out / modelfile.GENERATOR_FILE)


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "checkpoint.safetensors"
    modelfile.save_state(path, {"epoch": 1, "w": np.arange(4, dtype=np.float32)})
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{half")  # a partial write, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        modelfile.save_state(path, {"epoch": 2, "w": np.zeros(4, np.float32)})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]
    assert modelfile.read_state(path)["epoch"] == 1


# -- pickles ------------------------------------------------------------------------------------


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The control: without the guard the test pickle does write its marker (so the tests below can fail)."""
    marker = tmp_path / "marker"
    path = evil_pickle(tmp_path / "evil.pdparams", marker)
    paddle.load(str(path))
    assert marker.read_text() == "pwned"


def test_malicious_pickle_never_runs_from_the_command_lines(tmp_path, trained):
    _, faces = trained
    marker = tmp_path / "PWNED"
    evil = evil_pickle(tmp_path / "evil.pdparams", marker)
    evil_pickle(tmp_path / "run_new" / modelfile.CHECKPOINT_FILE, marker)  # a pickle under the new name
    evil_pickle(tmp_path / "run_old" / "checkpoint.pdparams", marker)  # an earlier version's run
    base = [
        "--data",
        str(faces),
        *TINY_NET,
        "--no-progress",
        "--resume",
    ]
    cmds = {
        "generator": [str(ROOT / "generator.py"), "--ckpt", str(evil), "--out", str(tmp_path / "faces")],
        "evaluate": [str(ROOT / "evaluate.py"), "--ckpt", str(evil), "--data", str(faces), "--num", "4"],
        "train_new": [str(ROOT / "train.py"), *base, "--out", str(tmp_path / "run_new")],
        "train_old": [str(ROOT / "train.py"), *base, "--out", str(tmp_path / "run_old")],
    }
    results = run_all(cmds, ROOT)
    assert not marker.exists()
    for name in ("generator", "evaluate", "train_new", "train_old"):
        line = one_line_error(results[name], cmds[name][0].rsplit("/", 1)[-1])
        assert "is a pickle" in line and "can run any code" in line and "--allow-pickle" in line, line
        assert ("evil.pdparams" if name in ("generator", "evaluate") else "checkpoint.") in line
    assert "run_old/checkpoint.pdparams" in results["train_old"].stderr


def test_malicious_pickle_never_runs_from_the_python_apis(tmp_path, trained):
    out, faces = trained
    marker = tmp_path / "PWNED"
    evil = evil_pickle(tmp_path / "evil.pdparams", marker)
    calls = {
        "load_generator": lambda: load_generator(evil),
        "load_discriminator": lambda: load_discriminator(evil),
        "read_model_file": lambda: modelfile.read_model_file(evil),
        "read_state": lambda: modelfile.read_state(evil),
        "generate": lambda: generate(evil, 2),
    }
    for name, call in calls.items():
        with pytest.raises(UserError, match=r"evil\.pdparams: this is a pickle .*--allow-pickle") as e:
            call()
        assert "\n" not in str(e.value), name
    run_dir = tmp_path / "run"
    evil_pickle(run_dir / modelfile.CHECKPOINT_FILE, marker)
    with pytest.raises(UserError, match="is a pickle"):
        train_mod.train(tiny(tmp_path, faces, out=str(run_dir), resume=True))
    assert not marker.exists()


def test_allow_pickle_loads_old_files_and_resumes_them_bit_for_bit(tmp_path, trained):
    out, faces = trained
    old_gen, old_ckpt = legacy_files(out, tmp_path / "old")
    G = load_generator(out / modelfile.GENERATOR_FILE)
    for path in (old_gen, old_ckpt):
        with pytest.raises(UserError, match="is a pickle"):
            load_generator(path)
    G_old = load_generator(old_gen, allow_pickle=True)
    assert np.array_equal(generate(G_old, 4, seed=2), generate(G, 4, seed=2))
    assert np.array_equal(generate(old_ckpt, 4, seed=2, allow_pickle=True), generate(G, 4, seed=2))  # its EMA weights
    D_old, D = load_discriminator(old_ckpt, allow_pickle=True), load_discriminator(out / modelfile.CHECKPOINT_FILE)
    assert all(np.array_equal(v.numpy(), D.state_dict()[k].numpy()) for k, v in D_old.state_dict().items())

    # train.py --resume: an old run folder (checkpoint.pdparams only) continues with --allow-pickle
    run = tmp_path / "oldrun"
    run.mkdir()
    os.replace(old_ckpt, run / "checkpoint.pdparams")
    with pytest.raises(UserError, match=r"checkpoint\.pdparams: this is a pickle"):
        train_mod.train(tiny(tmp_path, faces, out=str(run), max_iters=8, ema=0.5, resume=True))
    h_old = train_mod.train(tiny(tmp_path, faces, out=str(run), max_iters=8, ema=0.5, resume=True, allow_pickle=True))
    h_new = train_mod.train(tiny(tmp_path, faces, out=str(tmp_path / "straight"), max_iters=8, ema=0.5))
    assert h_old == h_new
    straight = modelfile.read_state(tmp_path / "straight" / modelfile.CHECKPOINT_FILE)
    assert_same_state(modelfile.read_state(run / modelfile.CHECKPOINT_FILE), straight)


def test_a_checkpoint_of_the_previous_version_resumes_bit_for_bit(tmp_path, trained):
    """checkpoint.safetensors as written before the optimizer state was keyed by parameter order (Paddle's names,
    "<param>_moment1_0") resumes exactly where the run would have gone."""
    out, faces = trained
    run = tmp_path / "prev"
    run.mkdir()
    old = guarded_names(modelfile.read_state(out / modelfile.CHECKPOINT_FILE))
    assert any(k.endswith("_moment1_0") for k in old["optG"])
    modelfile.save_state(run / modelfile.CHECKPOINT_FILE, old)
    h_old = train_mod.train(tiny(tmp_path, faces, out=str(run), max_iters=8, ema=0.5, resume=True))
    h_new = train_mod.train(tiny(tmp_path, faces, out=str(tmp_path / "straight"), max_iters=8, ema=0.5))
    assert h_old == h_new
    straight = modelfile.read_state(tmp_path / "straight" / modelfile.CHECKPOINT_FILE)
    assert_same_state(modelfile.read_state(run / modelfile.CHECKPOINT_FILE), straight)


def test_convert_turns_old_files_into_new_ones(tmp_path, trained, capsys):
    out, _ = trained
    old_gen, old_ckpt = legacy_files(out, tmp_path / "old")
    r = subprocess.run(
        [sys.executable, str(ROOT / "network.py"), "--convert", str(old_gen), str(tmp_path / "g.safetensors")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "unpickling" in r.stdout and "a pickle can run code" in r.stdout
    network.main(["--convert", str(old_ckpt), str(tmp_path / "c.safetensors")])
    assert f"checkpoint {old_ckpt} -> {tmp_path / 'c.safetensors'}" in capsys.readouterr().out
    with pytest.raises(UserError, match="exists; remove it"):
        modelfile.convert(old_gen, out / modelfile.GENERATOR_FILE)
    with pytest.raises(UserError, match="already a safetensors file"):
        modelfile.convert(out / modelfile.GENERATOR_FILE, tmp_path / "n.safetensors")
    with pytest.raises(UserError, match="nothing to do"):
        network.main([])
    assert_same_state(
        modelfile.read_state(tmp_path / "g.safetensors"), modelfile.read_state(out / modelfile.GENERATOR_FILE)
    )
    assert_same_state(
        modelfile.read_state(tmp_path / "c.safetensors"), modelfile.read_state(out / modelfile.CHECKPOINT_FILE)
    )


# -- bad files ----------------------------------------------------------------------------------


def _write_bad(case: str, d: Path, out: Path) -> Path:
    gen, ckpt = out / modelfile.GENERATOR_FILE, out / modelfile.CHECKPOINT_FILE
    p = d / f"{case}.safetensors"
    if case == "folder":
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(gen.read_bytes()[:-100])
    elif case == "corrupt_header":
        data = bytearray(gen.read_bytes())
        data[20:40] = b"#" * 20
        p.write_bytes(bytes(data))
    elif case == "text":
        p.write_text("hello, world\n")
    elif case == "zip":
        import zipfile

        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data.pkl", "x")
    elif case == "other_model":  # someone else's safetensors: no metadata, other names
        from safetensors.numpy import save_file

        save_file({"encoder.weight": np.zeros((4, 4), np.float32)}, str(p))
    elif case == "not_json":
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(2, np.float32)}, str(p), metadata={"format": "dcgan"})
    else:
        tree = modelfile.read_state(gen)
        if case == "missing_meta":
            del tree["nz"]
        elif case == "wrong_keys":
            tree["main.99.weight"] = tree.pop("main.12.weight")
        elif case == "wrong_shape":
            tree["main.3.weight"] = tree["main.3.weight"][:, :4]
        elif case == "wrong_dtype":
            tree["main.1.weight"] = tree["main.1.weight"].astype(np.float64)
        elif case == "huge_claim":
            tree["ngf"] = 100000
        elif case == "newer":
            tree["version"] = 2
        elif case == "wrong_format":
            tree["format"] = "someone/else"
        elif case == "no_discriminator":
            tree = modelfile.read_state(ckpt)
            del tree["D"]
        modelfile.save_state(p, tree)
    return p


BAD = {
    "folder": "is a folder",
    "empty": "empty file",
    "truncated": "corrupt or truncated safetensors file",
    "corrupt_header": "corrupt or truncated safetensors file",
    "text": "not a safetensors model file",
    "zip": "a zip archive",
    "other_model": "not a dcgan-faces-paddle generator or checkpoint (no 'format' in its metadata; holds encoder.w",
    "not_json": "metadata 'format' is not JSON",
    "missing_meta": "nz is None in the file",
    "wrong_keys": "missing 1 tensors (first: main.12.weight)",
    "wrong_shape": "weight main.3.weight has shape [64, 4, 4, 4], expected [64, 32, 4, 4] for nz=16, ngf=8",
    "wrong_dtype": "weight main.1.weight is float64, expected float32",
    "huge_claim": "weight main.0.weight has shape [16, 64, 4, 4], expected [16, 800000, 4, 4]",
    "newer": "format version 2 is newer than this code reads",
    "wrong_format": "its format is 'someone/else'",
    "no_discriminator": "holds no discriminator weights",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_file_gets_its_one_line_error(case, tmp_path, trained):
    out, _ = trained
    path = _write_bad(case, tmp_path, out)
    load = load_discriminator if case == "no_discriminator" else load_generator
    with pytest.raises(UserError) as e:
        load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and BAD[case] in msg, msg


def test_bad_files_on_the_command_line_and_resume(tmp_path, trained):
    out, faces = trained
    truncated = _write_bad("truncated", tmp_path, out)
    run = tmp_path / "run"
    run.mkdir()
    (run / modelfile.CHECKPOINT_FILE).write_bytes((out / modelfile.CHECKPOINT_FILE).read_bytes()[:5000])
    args = [
        "--data",
        str(faces),
        "--out",
        str(run),
        *TINY_NET,
        "--no-progress",
    ]
    r = run_all(
        {
            "gen": [str(ROOT / "generator.py"), "--ckpt", str(truncated)],
            "train": [str(ROOT / "train.py"), *args, "--resume"],
        },
        tmp_path,
    )
    assert f"{truncated}: corrupt or truncated" in one_line_error(r["gen"], "generator.py")
    assert f"{run / modelfile.CHECKPOINT_FILE}: corrupt or truncated" in one_line_error(r["train"], "train.py")


@pytest.mark.parametrize("case", ["no_optimizer", "optimizer_shape", "g_shape", "history", "generator_file"])
def test_resume_checks_every_part_before_setting_it(case, tmp_path, trained):
    out, faces = trained
    run = tmp_path / "run"
    tree = modelfile.read_state(out / modelfile.CHECKPOINT_FILE)
    if case == "no_optimizer":
        del tree["optD"]
        expect = "no 'optD'"
    elif case == "optimizer_shape":
        k = next(k for k in tree["optG"] if k.endswith(".moment2"))
        tree["optG"][k] = tree["optG"][k][:1]
        expect = f"optG tensor {k} has shape"
    elif case == "g_shape":
        tree["G"]["main.1.weight"] = tree["G"]["main.1.weight"][:3]
        expect = "G weight main.1.weight has shape [3]"
    elif case == "history":
        tree["history"]["g_loss"] = tree["history"]["g_loss"][:2]
        expect = "loss history does not have one entry per iteration"
    else:
        tree = modelfile.read_state(out / modelfile.GENERATOR_FILE)
        expect = "not a train.py checkpoint (a generator file)"
    modelfile.save_state(run / modelfile.CHECKPOINT_FILE, tree)
    with pytest.raises(UserError, match="^" + re.escape(str(run / modelfile.CHECKPOINT_FILE)) + ": ") as e:
        train_mod.train(tiny(tmp_path, faces, out=str(run), max_iters=8, ema=0.5, resume=True))
    assert expect in str(e.value)


def test_state_tree_round_trip_keeps_every_kind_of_leaf(tmp_path):
    """What a checkpoint may hold (an AMP scaler's state, an LR scheduler's, empty and None parts) comes back as it was:
    arrays bit for bit with their dtype and shape, the rest through JSON."""
    scaler = {
        "scale": np.array([32768.0], np.float32),
        "incr_ratio": 2.0,
        "decr_ratio": 0.5,
        "incr_every_n_steps": 1000,
        "incr_count": 7,
        "use_dynamic_loss_scaling": True,
    }
    tree = {
        "format": "x",
        "version": 1,
        "scalerG": scaler,
        "scalerD": {},
        "G_ema": None,
        "optG": {"w_moment1_0": paddle.to_tensor([[1.5, -0.0]]), "LR_Scheduler": {"last_epoch": 3, "last_lr": 1e-4}},
        "history": {"d_loss": np.array([0.1, float(np.float32(0.3))], np.float64), "empty": np.zeros(0)},
        "zero_d": np.array(np.int64(5)),
        "noise": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32),
        "rng": {"seed": np.int64(3), "iteration": 9},
        "tags": ["a", "b"],
        "nested": {"deeper": {"t": np.ones(2, np.uint8)}},
    }
    modelfile.save_state(tmp_path / "s.safetensors", tree)
    back = modelfile.read_state(tmp_path / "s.safetensors")
    optG = {**tree["optG"], "w_moment1_0": tree["optG"]["w_moment1_0"].numpy()}
    expected = {**tree, "optG": optG, "rng": {"seed": 3, "iteration": 9}}
    assert_same_state(back, expected)
    assert back["zero_d"].shape == () and back["nested"]["deeper"]["t"].dtype == np.uint8
    with pytest.raises(ValueError, match="without '/'"):
        modelfile.save_state(tmp_path / "bad.safetensors", {"a/b": 1})
    assert not (tmp_path / "bad.safetensors").exists()


# -- the one validator and the one resolver ------------------------------------------------------

EXPECTED = {"a.weight": ((2, 3), "float32"), "a.bias": ((2,), "float32"), "steps": ((), None)}
GOOD = {"a.weight": np.zeros((2, 3), np.float32), "a.bias": np.zeros(2, np.float32), "steps": np.array(0, np.int64)}
TENSOR_PROBLEMS = {  # state -> (problem, name, the message after "f.st: ")
    "absent": (None, "", "holds no net weights"),
    "missing": (
        {"a.bias": GOOD["a.bias"], "steps": GOOD["steps"]},
        "a.weight",
        "net weights are missing 1 tensors (first: a.weight)",
    ),
    "unknown": (
        {**GOOD, "b.weight": np.zeros(1, np.float32)},
        "b.weight",
        "net weights hold 1 unknown tensors (first: b.weight)",
    ),
    "shape": (
        {**GOOD, "a.weight": np.zeros((3, 2), np.float32)},
        "a.weight",
        "net weight a.weight has shape [3, 2], expected [2, 3] for width=2",
    ),
    "dtype": ({**GOOD, "a.bias": np.zeros(2, np.float64)}, "a.bias", "net weight a.bias is float64, expected float32"),
    "no_shape": ({**GOOD, "a.bias": 7}, "a.bias", "net weight a.bias has no shape, expected [2] for width=2"),
    "optional_shape": (
        {**GOOD, "fc": np.zeros(4, np.float32)},
        "fc",
        "net weight fc has shape [4], expected [5] for width=2",
    ),
}


@pytest.mark.parametrize("case", sorted(TENSOR_PROBLEMS))
def test_check_tensors_names_the_first_problem_in_one_line(case):
    state, name, message = TENSOR_PROBLEMS[case]
    with pytest.raises(UserError) as e:
        modelfile.check_tensors("f.st", state, EXPECTED, "net", " for width=2", optional={"fc": ((5,), None)})
    assert str(e.value) == f"f.st: {message}" and isinstance(e.value, modelfile.TensorMismatch)
    assert e.value.problem == {"no_shape": "shape", "optional_shape": "shape"}.get(case, case) and e.value.name == name


def test_check_tensors_accepts_a_fit_state_any_dtype_where_none_and_optional_tensors():
    modelfile.check_tensors("f.st", GOOD, EXPECTED, "net")
    as_int = {**GOOD, "steps": np.array(0, np.int32)}  # dtype None: not checked
    modelfile.check_tensors(
        "f.st", {**as_int, "fc": np.zeros(5, np.float32)}, EXPECTED, "net", optional={"fc": ((5,), None)}
    )
    G = Generator(nz=4, ngf=8)
    modelfile.check_tensors("g", {k: v.numpy() for k, v in G.state_dict().items()}, modelfile.expected_tensors(G), "G")


def test_generator_of_and_models_of_take_a_path_a_generator_or_a_pair(trained):
    out, _ = trained
    G, D = load_generator(out / modelfile.CHECKPOINT_FILE), load_discriminator(out / modelfile.CHECKPOINT_FILE)
    assert modelfile.generator_of(G) is G and modelfile.models_of(G, False) == (G, None)
    assert modelfile.models_of((G, D), True) == (G, D) and modelfile.models_of([G, D], False) == (G, D)
    from_path = modelfile.generator_of(out / modelfile.GENERATOR_FILE)  # a Path, as str below
    assert isinstance(from_path, Generator) and not from_path.training
    for k, v in from_path.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), G.state_dict()[k].numpy())  # the EMA G in both files
    G2, D2 = modelfile.models_of(str(out / modelfile.CHECKPOINT_FILE), True, use_ema=False)
    assert not D2.training and np.array_equal(D2.state_dict()["main.0.weight"].numpy(), D.state_dict()["main.0.weight"])
    assert modelfile.models_of(str(out / modelfile.CHECKPOINT_FILE), False)[1] is None  # D only when needed


def test_models_of_says_in_one_line_why_it_needs_D(trained):
    out, _ = trained
    G = load_generator(out / modelfile.GENERATOR_FILE)
    with pytest.raises(UserError, match="^lam > 0 needs D$"):
        modelfile.models_of(G, True, why_D="lam > 0 needs D")
    with pytest.raises(UserError, match="^lam > 0 needs D$"):
        modelfile.models_of((G, None), True, why_D="lam > 0 needs D")
    gen = out / modelfile.GENERATOR_FILE
    with pytest.raises(UserError) as e:
        modelfile.models_of(gen, True)
    msg = str(e.value)
    assert msg.startswith(f"{gen}: a generator-only file holds no discriminator") and "\n" not in msg
    assert msg.endswith(f"this needs D (the discriminator): pass the training checkpoint ({modelfile.CHECKPOINT_FILE})")


def test_network_still_exports_the_documented_model_file_api():
    from network import CHECKPOINT_FILE, GENERATOR_FILE, load_discriminator, load_generator

    assert (load_generator, load_discriminator) == (modelfile.load_generator, modelfile.load_discriminator)
    assert (GENERATOR_FILE, CHECKPOINT_FILE) == ("generator.safetensors", "checkpoint.safetensors")
    with pytest.raises(AttributeError, match="no attribute 'read_state'"):
        network.read_state  # noqa: B018  (the rest is modelfile's only)


def test_file_kind_sniffs_without_parsing(tmp_path):
    cases = {
        "s": b"\x10\x00\x00\x00\x00\x00\x00\x00{}",
        "huge": (1 << 27).to_bytes(8, "little") + b"{",  # a header size no model file has: not safetensors
        "p": pickle.dumps({}, protocol=4),
        "z": b"PK\x03\x04rest",
        "e": b"",
        "t": b"hello, world",
    }
    kinds = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        kinds[name] = modelfile.file_kind(tmp_path / name)
    assert kinds == {"s": "safetensors", "huge": "unknown", "p": "pickle", "z": "zip", "e": "empty", "t": "unknown"}
    with pytest.raises(UserError, match="^.*huge: not a safetensors model file"):
        modelfile.read_state(tmp_path / "huge")
