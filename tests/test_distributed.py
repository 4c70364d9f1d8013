"""Data-parallel training under paddle.distributed.launch on CPU (2 processes, gloo)."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import modelfile
from conftest import ROOT


def launch_cmd(tmp_path, *args) -> list[str]:
    """Paddle's launcher with 2 processes on this machine, its worker logs under tmp_path/log."""
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
            str(tmp_path / "log"), *args]  # fmt: skip


def launch(tmp_path, *args, timeout=240):
    r = subprocess.run(launch_cmd(tmp_path, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        logs = "\n".join(p.read_text()[-3000:] for p in sorted((tmp_path / "log").glob("workerlog.*")))
        pytest.fail(f"launch failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{logs}")
    return r


@pytest.fixture(scope="module")
def numbered_faces(tmp_path_factory):
    """40 images, image i filled with the value i, so a batch tells which images it holds."""
    path = tmp_path_factory.mktemp("data") / "faces.npy"
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    imgs[:, 0, 0, 0] = np.arange(40)
    np.save(path, imgs)
    return path


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory, numbered_faces):
    out = tmp_path_factory.mktemp("dist")
    launch(out, str(ROOT / "tests" / "dist_worker.py"), str(numbered_faces), str(out))
    return out, [np.load(out / f"rank{r}.npz") for r in (0, 1)]


def test_ranks_see_disjoint_shards_reshuffled_per_epoch(worker_run):
    _, ranks = worker_run
    assert all(int(r["world"]) == 2 for r in ranks)
    for epoch in (0, 1):
        a, b = ranks[0][f"ids_epoch{epoch}"], ranks[1][f"ids_epoch{epoch}"]
        assert len(a) == len(b) == 20
        assert not set(a) & set(b)
        assert sorted(set(a) | set(b)) == list(range(40))
    assert not np.array_equal(ranks[0]["ids_epoch0"], ranks[0]["ids_epoch1"])


def test_weights_identical_on_both_ranks_after_steps(worker_run):
    _, (r0, r1) = worker_run
    keys = [k for k in r0.files if k.startswith(("G.", "D."))]
    assert len(keys) > 20
    for k in keys:
        if "_mean" in k or "_variance" in k:
            continue  # BatchNorm statistics are per rank (each sees its own shard), as on one GPU
        np.testing.assert_allclose(r0[k], r1[k], rtol=0, atol=1e-6, err_msg=k)
    assert any(not np.array_equal(r0[k], r1[k]) for k in keys if "_mean" in k)  # the shards did differ


def test_only_rank0_writes_files(worker_run):
    out, _ = worker_run
    writes0 = (out / "rank0.writes.txt").read_text().split()
    assert (out / "rank1.writes.txt").read_text() == ""
    names = {Path(p).name for p in writes0}
    assert {"checkpoint.safetensors", "generator.safetensors", "log.csv", "loss.png"} <= names
    assert len((out / "run" / "log.csv").read_text().strip().splitlines()) == 1 + 3


def test_launched_train_checkpoint_resumes_in_one_process(tmp_path, numbered_faces):
    out = tmp_path / "run"
    common = [
        "--data",
        str(numbered_faces),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--nz",
        "16",
        "--no-progress",
        "--epochs",
        "3",
    ]
    r = launch(tmp_path, str(ROOT / "train.py"), *common, "--max-iters", "4")
    ckpt = modelfile.read_state(out / "checkpoint.safetensors")
    assert ckpt["iteration"] == 4 and not any(k.startswith("_layers") for k in ckpt["G"])
    assert r.returncode == 0
    r1 = subprocess.run(
        [sys.executable, "train.py", *common, "--resume", "--max-iters", "7"], cwd=ROOT, capture_output=True, text=True
    )
    assert r1.returncode == 0, r1.stderr
    assert "resuming at iteration 4" in r1.stdout
    assert modelfile.read_state(out / "checkpoint.safetensors")["iteration"] == 7


def test_a_device_trap_on_one_rank_stops_every_rank(tmp_path, numbered_faces):
    """Rank 1 meets a GPU trap in its step and exits with the one line; rank 0, left waiting in the step's
    all_reduce, is stopped by the launcher, which exits non-zero: no rank waits forever. The last checkpoint stays."""
    out = tmp_path / "run"
    trap = "7"  # the trap's iteration (5 iterations an epoch)
    cmd = launch_cmd(tmp_path, str(ROOT / "tests" / "dist_trap_worker.py"), str(numbered_faces), str(out), trap)
    t = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t
    logs = {p.name: p.read_text() for p in (tmp_path / "log").glob("workerlog.*")}
    assert r.returncode != 0, r.stdout[-2000:]
    assert ": error: iteration 7: the GPU stopped on an error (CUDA error(700))" in logs["workerlog.1"]
    assert "Traceback" not in logs["workerlog.1"]
    assert modelfile.read_state(out / "checkpoint.safetensors")["iteration"] == 5
    assert took < 240  # stopped by the launcher, not by a collective's timeout (gloo's and NCCL's are far longer)
