"""kill -9 at random moments of a tiny training run, resumed each time: the result is the uninterrupted run's, bit for
bit, and no temporary file of an interrupted write is left in the run folder."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import modelfile
import train
from conftest import ROOT, TINY_NET, make_faces

# 6 iterations per epoch, 2 epochs; a checkpoint, a sample grid and (each epoch) loss.png at every iteration: most
# moments of the loop are inside some write
ITERATIONS = 12
FLAGS = [*TINY_NET, "--epochs", "2", "--save-every", "1", "--sample-every", "1", "--no-progress", "--device", "cpu"]


def run(data: Path, out: Path, kill_after: float | None = None) -> tuple[bool, float]:
    """train.py (resuming when there is a checkpoint) to the end, or killed (SIGKILL) `kill_after` seconds after
    its loop starts; (whether it ended, seconds from the loop's start to the end)."""
    resume = "--resume" if (out / modelfile.CHECKPOINT_FILE).exists() else "--overwrite"
    cmd = [sys.executable, "train.py", "--data", str(data), "--out", str(out), *FLAGS, resume]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:  # the loop starts after this line
        if line.startswith("train.py: device"):
            break
    t0 = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        p.kill()
    _, stderr = p.communicate(timeout=120)
    assert p.returncode in (0, -9), stderr[-2000:]
    return p.returncode == 0, time.monotonic() - t0


def log_rows(out: Path) -> list[list[str]]:
    with open(out / "log.csv", newline="") as f:
        return [row[:-1] for row in csv.reader(f)]  # less img_s


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_random_kills_resume_to_the_uninterrupted_run(tmp_path):
    data = make_faces(tmp_path / "faces.npy", n=48)
    _, seconds = run(data, tmp_path / "ref")
    rng = np.random.default_rng(23)
    out, kills, ended, leftovers = tmp_path / "killed", 0, False, 0
    while kills < 3 and not ended:  # kill moments spread over the rest of the loop (its start included)
        done = modelfile.read_state(out / modelfile.CHECKPOINT_FILE)["iteration"] if out.exists() else 0
        ended, _ = run(data, out, kill_after=float(rng.uniform(0.0, 0.8 * seconds * (1 - done / ITERATIONS))))
        kills += not ended
        leftovers += len(temp_files(out))
    if not ended:
        run(data, out)
    assert kills >= 2
    print(f"{kills} kills, {leftovers} temporary files seen after them")
    assert temp_files(out) == []
    assert log_rows(out) == log_rows(tmp_path / "ref")
    for name in (modelfile.CHECKPOINT_FILE, modelfile.GENERATOR_FILE):
        a, b = modelfile.read_state(out / name), modelfile.read_state(tmp_path / "ref" / name)
        for tree in (a, b):  # the flags that differ by design: the folder, and how each run was started
            for k in ("out", "resume", "overwrite"):
                tree.get("config", {}).pop(k, None)
        assert_same_tree(a, b, name)


def assert_same_tree(a, b, where: str) -> None:
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
    else:
        assert a == b, where


def test_stale_temp_files_of_atomic_path_are_removed_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "samples").mkdir(parents=True)
    stale = [out / ".loss.png.a1b2_c3d.tmp", out / ".checkpoint.safetensors.zz9y8x7w.tmp",
             out / "samples" / ".epoch_001.png.q1w2e3r4.tmp"]  # fmt: skip
    kept = [out / "notes.tmp", out / ".notes.tmp", out / ".x.short.tmp", out / "samples" / "epoch_001.png",
            out / ".loss.png.a1b2c3d4.tmp.keep"]  # fmt: skip
    for p in stale + kept:
        p.write_bytes(b"x")
    (out / ".dir.abcdefgh.tmp").mkdir()  # a folder of that name is not ours
    train.remove_stale_temps(out)
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept) and (out / ".dir.abcdefgh.tmp").is_dir()
    assert "removed 3 temporary file(s) of an interrupted run" in capsys.readouterr().out
