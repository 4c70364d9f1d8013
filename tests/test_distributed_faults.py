"""A two-node job on this machine (two `paddle.distributed.launch --nnodes 2 --master 127.0.0.1:PORT` launchers, one CPU
process each, gloo) that loses a process: the survivor stops within a bounded time with one line saying what to do,
and the last checkpoint resumes in one process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelfile
from conftest import ROOT

TINY = ["--batch-size", "4", "--ngf", "8", "--ndf", "8", "--nz", "16", "--no-progress", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(tmp_path: Path, data: Path, *train_args: str) -> list[subprocess.Popen]:
    """Two launchers of one job, as on two nodes; node i logs to tmp_path/node{i}."""
    master = f"127.0.0.1:{free_port()}"
    procs = []
    for i in (0, 1):
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2", "--master", master,
               "--nproc_per_node", "1", "--log_dir", str(tmp_path / f"node{i}"), "train.py", "--data", str(data),
               "--out", str(tmp_path / "run"), *TINY, *train_args]  # fmt: skip
        out = open(tmp_path / f"node{i}.out", "w")  # noqa: SIM115  (closed with the process)
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def worker_of(launcher: subprocess.Popen) -> int:
    """The training process the launcher started (its one child running train.py)."""
    for _ in range(100):
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        for pid in children:
            if b"train.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        time.sleep(0.2)
    raise AssertionError("the launcher started no train.py")


def wait_for_checkpoint(run: Path, procs: list[subprocess.Popen], rows: int, limit: float = 120) -> None:
    """Until a checkpoint exists and log.csv holds `rows` iterations (the job is training)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        csv = run / "log.csv"
        if (run / "checkpoint.safetensors").exists() and csv.exists() and len(csv.read_text().splitlines()) > rows:
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(run.parent.glob("node*.out")))
    raise AssertionError(f"the job did not get to iteration {rows}:\n{logs}")


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # each launcher leads its own session: its group holds its worker, even once the launcher is gone
        with contextlib.suppress(ProcessLookupError):  # (a stopped worker outlives its launcher: SIGKILL ends it)
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def lost_peer(tmp_path, data, sig: int, *train_args: str) -> tuple[str, float, int]:
    """Start the job, send `sig` to node 1's worker once it trains; (node 0's output, seconds until node 0's
    launcher exited, node 0's exit status)."""
    procs = launch_two(tmp_path, data, *train_args)
    try:
        wait_for_checkpoint(tmp_path / "run", procs, rows=5)
        os.kill(worker_of(procs[1]), sig)
        t0 = time.monotonic()
        status = procs[0].wait(timeout=90)  # never a hang
        return (tmp_path / "node0.out").read_text(), time.monotonic() - t0, status
    finally:
        stop_all(procs)


def resumes_in_one_process(tmp_path: Path, data: Path) -> None:
    saved = modelfile.read_state(tmp_path / "run" / "checkpoint.safetensors")["iteration"]
    # a whole checkpoint, never a torn one: --save-every 3, and each epoch's end (64 faces / (batch 4 x 2 ranks): 8)
    assert saved >= 3 and (saved % 3 == 0 or saved % 8 == 0), saved
    r = subprocess.run([sys.executable, "train.py", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
                        "--epochs", "50", "--resume", "--max-iters", str(saved + 2)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming at iteration {saved}" in r.stdout
    assert modelfile.read_state(tmp_path / "run" / "checkpoint.safetensors")["iteration"] == saved + 2


@pytest.fixture(scope="module")
def faces64(tmp_path_factory):
    from conftest import make_faces

    return make_faces(tmp_path_factory.mktemp("data") / "faces.npy", n=64)


def test_killed_worker_stops_the_job_with_one_line_and_the_checkpoint_resumes(tmp_path, faces64):
    out, seconds, status = lost_peer(tmp_path, faces64, signal.SIGKILL, "--epochs", "50", "--save-every", "3")
    errors = [line for line in out.splitlines() if line.startswith("train.py: error:")]
    print(f"node 0 exited {status} after {seconds:.1f} s: {errors}")
    assert status != 0 and seconds < 30, (status, seconds, out[-3000:])
    assert errors and "lost contact with another process of the job" in errors[0], out[-3000:]
    assert "resumes with --resume" in errors[0] and "Traceback" not in out, out[-3000:]
    resumes_in_one_process(tmp_path, faces64)


def test_hung_worker_stops_the_job_after_peer_timeout(tmp_path, faces64):
    """SIGSTOP: a process (or its node) stops answering and no socket is reset; gloo alone would abort after 30 s
    with a C++ traceback. --peer-timeout 4: the watchdog's line instead."""
    args = ("--epochs", "50", "--save-every", "3", "--peer-timeout", "4")
    out, seconds, status = lost_peer(tmp_path, faces64, signal.SIGSTOP, *args)
    errors = [line for line in out.splitlines() if line.startswith("train.py: error:")]
    print(f"node 0 exited {status} after {seconds:.1f} s: {errors}")
    assert status != 0 and seconds < 25, (status, seconds, out[-3000:])
    assert errors and "no iteration ended for" in errors[0] and "resumes with --resume" in errors[0], out[-3000:]
    assert "Traceback" not in out and "SIGABRT" not in out, out[-3000:]
    resumes_in_one_process(tmp_path, faces64)
