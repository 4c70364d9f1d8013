"""The golden run: a fixed-seed tiny training (ngf = ndf = 8, 12 iterations, --save-every 4, stopped at 8 and
resumed) and generator.py on its result, reduced to a fingerprint that must not change when code moves.

    python tests/golden_run.py --write              # record tests/data/golden_run.json (every backend)
    python tests/golden_run.py --write onednn-fused # re-record one backend, keeping the others

The fingerprint holds, per backend, every checkpoint tensor (optimizer state as a multiset: its tensor names are an
implementation detail), the generator file (tensors and metadata), log.csv less its img/s column, the sample grids
and generator.py's PNGs (decoded pixels). Each entry has a SHA-256 (compared where the golden file was recorded:
same processor, same Paddle) and a few sums (compared within a tolerance elsewhere: other processors take other
GEMM kernels, whose rounding differs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import ROOT, make_faces  # noqa: E402

GOLDEN = HERE / "data" / "golden_run.json"
# paddle: Paddle's kernels; onednn: the oneDNN convolutions alone (recorded before the house refactor, when they were
# the default); onednn-fused: the default oneDNN path (onednn_conv.DEFAULT_FUSIONS; None = the variable unset)
BACKENDS = {
    "paddle": {"DCGAN_ONEDNN": "0"},
    "onednn": {"DCGAN_ONEDNN": "1", "DCGAN_ONEDNN_FUSE": "none"},
    "onednn-fused": {"DCGAN_ONEDNN": "1", "DCGAN_ONEDNN_FUSE": None},
}
TRAIN = ["--batch-size", "8", "--ngf", "8", "--ndf", "8", "--nz", "16", "--epochs", "2", "--seed", "3"]
TRAIN += ["--save-every", "4", "--no-progress"]
GENERATE = ["--num", "6", "--seed", "5", "--interpolate", "4", "--pairs", "2"]


def machine() -> str:
    """What decides the exact bits: the processor model and vector extensions, and Paddle's version."""
    cpu, flags = platform.processor(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = " ".join(sorted({f for f in info.split() if f.startswith(("avx512", "avx2", "fma"))}))
    except (OSError, StopIteration):
        pass
    import paddle

    return f"{cpu} [{flags}] paddle {paddle.__version__}"


def _entry(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    x = a.astype(np.float64)
    digest = hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()
    return {"sha256": digest, "sum": float(x.sum()), "l1": float(np.abs(x).sum()), "n": int(a.size)}


def _tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118


def _multiset(arrays: list[np.ndarray]) -> dict:
    entries = [_entry(a) for a in arrays]
    return {
        "sha256": sorted(e["sha256"] for e in entries),
        "sum": float(sum(e["sum"] for e in entries)),
        "l1": float(sum(e["l1"] for e in entries)),
        "n": int(sum(e["n"] for e in entries)),
    }


def _pixels(path: Path) -> dict:
    from PIL import Image

    with Image.open(path) as im:
        return _entry(np.asarray(im.convert("RGB")))


def fingerprint(out: Path, faces: Path) -> dict:
    fp: dict = {}
    tensors, meta = _tensors(out / "checkpoint.safetensors")
    for section in ("optG", "optD"):
        fp[f"checkpoint/{section}"] = _multiset([v for k, v in sorted(tensors.items()) if k.startswith(section + "/")])
    for k, v in sorted(tensors.items()):
        if not k.startswith(("optG/", "optD/")):
            fp[f"checkpoint/{k}"] = _entry(v)
    fp["checkpoint/counters"] = {"epoch": json.loads(meta["epoch"]), "iteration": json.loads(meta["iteration"])}
    tensors, meta = _tensors(out / "generator.safetensors")
    for k, v in sorted(tensors.items()):
        fp[f"generator/{k}"] = _entry(v)
    fp["generator/metadata"] = {k: json.loads(meta[k]) for k in ("format", "version", "nz", "ngf")}
    with open(out / "log.csv", newline="") as f:
        rows = [r[:-1] for r in csv.reader(f)]  # less img/s
    fp["log.csv/header"] = rows[0]
    fp["log.csv"] = _entry(np.array([[float(v) for v in r] for r in rows[1:]]))
    for p in sorted((out / "samples").glob("*.png")):
        fp[f"samples/{p.name}"] = _pixels(p)
    for p in sorted(faces.glob("*.png")):
        fp[f"faces/{p.name}"] = _pixels(p)
    return fp


def run(backend: str, workdir: Path) -> dict:
    """Train (stop at 8, resume to 12) and generate in `workdir` on `backend`; the fingerprint."""
    data = make_faces(workdir / "faces.npy")
    out, faces = workdir / "out", workdir / "faces"
    # the thread counts decide the summation order: fixed here (and OMP_NUM_THREADS, which `import paddle` sets to 1
    # in its own process and so in every child of a test process, removed)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update({k: v for k, v in BACKENDS[backend].items() if v is not None}, MKL_NUM_THREADS="2")
    for k in [k for k, v in BACKENDS[backend].items() if v is None]:
        env.pop(k, None)
    base = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--out", str(out), *TRAIN]
    for cmd in (
        [*base, "--max-iters", "8"],
        [*base, "--resume"],
        [sys.executable, str(ROOT / "generator.py"), "--ckpt", str(out / "generator.safetensors"), "--out", str(faces)]
        + GENERATE,
    ):
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
        if backend.startswith("onednn") and cmd[1].endswith("train.py") and "onednn_conv" not in r.stdout:
            raise RuntimeError(f"the oneDNN backend did not run:\n{r.stdout}")
    return fingerprint(out, faces)


def compare(expected: dict, found: dict, exact: bool) -> list[str]:
    """What differs: exactly (SHA-256) when `exact`, else sums within a tolerance."""
    problems = []
    for key in sorted(set(expected) | set(found)):
        e, f = expected.get(key), found.get(key)
        if e is None or f is None:
            problems.append(f"{key}: {'new' if e is None else 'missing'}")
        elif not isinstance(e, dict) or "sha256" not in e:
            if e != f:
                problems.append(f"{key}: {f} != {e}")
        elif exact:
            if e["sha256"] != f["sha256"]:
                problems.append(f"{key}: different bits (sum {f['sum']!r} vs {e['sum']!r})")
        elif e["n"] != f["n"] or not (
            abs(f["l1"] - e["l1"]) <= 2e-3 * e["l1"] + 1e-6 and abs(f["sum"] - e["sum"]) <= 2e-3 * e["l1"] + 1e-6
        ):
            problems.append(f"{key}: sum {f['sum']:.6g} l1 {f['l1']:.6g} vs {e['sum']:.6g} {e['l1']:.6g}")
    return problems


def main() -> None:
    if sys.argv[1:2] != ["--write"] or not set(sys.argv[2:]) <= set(BACKENDS):
        sys.exit(__doc__)
    golden = {"machine": machine(), "backends": {}}
    if sys.argv[2:]:  # only these: the others as recorded (on this machine)
        golden = json.loads(GOLDEN.read_text())
        if golden["machine"] != machine():
            sys.exit(f"{GOLDEN} was recorded on {golden['machine']}: re-record every backend here")
    for backend in sys.argv[2:] or BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            golden["backends"][backend] = run(backend, Path(tmp))
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} on {golden['machine']}")


if __name__ == "__main__":
    main()
