"""The golden run: a fixed-seed tiny training (ngf = ndf = 8, 12 iterations, --save-every 4, stopped at 8 and
resumed) and generator.py on its result, reduced to a fingerprint that must not change when code moves.

    python tests/golden_run.py --write              # record this processor's fingerprints (every backend)
    python tests/golden_run.py --write onednn-fused # re-record one backend here, keeping the others
    python tests/golden_run.py --write --here-only  # the bits moved on this processor alone (a per-processor setting)

The fingerprint holds, per backend, every checkpoint tensor (optimizer state as a multiset: its tensor names are an
implementation detail), the generator file (tensors and metadata), log.csv less its img/s column, the sample grids
and generator.py's PNGs (decoded pixels). Each entry has a hash of its bits and a few sums.

tests/data/golden_run.json holds one record per processor it was recorded on. On one of those the bits must be the
same; on another processor they are compared within a tolerance per kind of entry (TOLERANCE). When a change moves
a backend's bits on purpose, re-record it: the records of that backend from other processors are then dropped (they
are stale, and those processors compare within the tolerance until someone re-records there), unless --here-only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
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
    import paddle

    import faces

    cpu = faces.processor()
    flags = " ".join(sorted(f for f in cpu.flags if f.startswith(("avx512", "avx2", "fma"))))
    return f"{cpu.name} [{flags}] paddle {paddle.__version__}"


# Across processors the bits part at the first kernel that rounds differently (Paddle's own kernels give other bits
# on an AMD EPYC Zen 4 and an Intel Xeon, both AVX-512; the default oneDNN path gives the same). Adam then turns a
# gradient element near zero whose sign the rounding decides into a full step of lr, so the BatchNorm shifts, which
# start at 0 and move only by such steps, part most. Tolerances, as a fraction of the entry's l1, about 3x what
# those two processors differ by (2026-12-05: shift 3.2e-2, running statistics 1.5e-2, optimizer 7.4e-3, weights
# 1.9e-3, log 5.8e-4, pixels 3.6e-4), and below what a 5-10% change of BN momentum, lr, beta1 or the init's std moves
# (each moves two kinds or more past theirs).
TOLERANCE = {"shift": 0.1, "bnstat": 5e-2, "opt": 2.5e-2, "weight": 6e-3, "log": 2e-3, "pixels": 1.2e-3}


def kind(key: str) -> str:
    """Which TOLERANCE applies to a fingerprint entry."""
    if key.startswith(("samples/", "faces/")):
        return "pixels"
    if key.startswith("checkpoint/opt"):
        return "opt"
    if key.startswith(("log.csv", "checkpoint/history/")):
        return "log"
    if key.endswith(("._mean", "._variance")):
        return "bnstat"
    return "shift" if key.endswith(".bias") else "weight"  # convolutions have no bias: a .bias is a BatchNorm's


def _entry(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    x = a.astype(np.float64)
    # 64 bits of SHA-256: enough to tell any change, a quarter of the file
    digest = hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]
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
    # in its own process and so in every child of a test process, removed); MKL's code path is device.py's choice
    unset = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
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
    """What differs: exactly (the hashes) when `exact`, else sums within TOLERANCE of l1."""
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
        elif e["n"] != f["n"] or max(abs(f["l1"] - e["l1"]), abs(f["sum"] - e["sum"])) > (
            TOLERANCE[kind(key)] * e["l1"] + 1e-6
        ):
            problems.append(f"{key}: sum {f['sum']:.6g} l1 {f['l1']:.6g} vs {e['sum']:.6g} {e['l1']:.6g}")
    return problems


def check(backend: str, found: dict) -> tuple[str, list[str]]:
    """`found` against the records: bit for bit against this processor's, else within TOLERANCE of the nearest."""
    records = [r for r in json.loads(GOLDEN.read_text())["records"] if backend in r["backends"]]
    here = machine()
    for r in records:
        if r["machine"] == here:
            return "bit for bit: recorded on this processor", compare(r["backends"][backend], found, True)
    if not records:
        return "no record", [f"{backend}: not recorded (python tests/golden_run.py --write {backend})"]
    results = [(compare(r["backends"][backend], found, False), r["machine"]) for r in records]
    problems, nearest = min(results, key=lambda t: len(t[0]))
    return f"within the tolerance of the record from {nearest}", problems


def _dumps(records: list[dict]) -> str:
    """JSON with one line per entry: small, and a diff names the entries that moved."""
    one = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
    out = []
    for r in records:
        backends = [
            f"  {one(b)}: {{\n" + ",\n".join(f"   {one(k)}: {one(v)}" for k, v in sorted(fp.items())) + "\n  }"
            for b, fp in sorted(r["backends"].items())
        ]
        out.append(f' {{"machine": {one(r["machine"])}, "backends": {{\n' + ",\n".join(backends) + "\n }}")
    return '{"records": [\n' + ",\n".join(out) + "\n]}\n"


def write(backends: list[str], here_only: bool = False) -> None:
    """Record `backends` on this processor; drop other processors' records of a backend whose bits moved here
    (unless `here_only`: the change moved them on this processor alone)."""
    records = json.loads(GOLDEN.read_text())["records"] if GOLDEN.exists() else []
    here = machine()
    mine = next((r for r in records if r["machine"] == here), None)
    if mine is None:
        mine = {"machine": here, "backends": {}}
        records.append(mine)
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            found = run(backend, Path(tmp))
        old = mine["backends"].get(backend)
        moved = old is not None and bool(compare(old, found, True))
        print(f"{backend}: {'new' if old is None else 'moved' if moved else 'unchanged'}")
        if moved and not here_only:
            for r in records:
                if r is not mine and r["backends"].pop(backend, None) is not None:
                    print(f"dropped {backend} as recorded on {r['machine']}: stale, re-record it there")
        mine["backends"][backend] = found
    tmp = GOLDEN.with_suffix(".tmp")
    tmp.write_text(_dumps([r for r in records if r["backends"]]))
    tmp.replace(GOLDEN)
    print(f"wrote {', '.join(backends)} to {GOLDEN} on {here}")


def main() -> None:
    args = [a for a in sys.argv[2:] if a != "--here-only"]
    if sys.argv[1:2] != ["--write"] or not set(args) <= set(BACKENDS):
        sys.exit(__doc__)
    write(args or list(BACKENDS), here_only="--here-only" in sys.argv)


if __name__ == "__main__":
    main()
