"""`make demo` end to end, with a shorter schedule (slow: make test-all)."""

import json
import os
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_make_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    args = f"--iters 150 --out {out} --data {tmp_path}/demo64.npy --no-progress"
    r = subprocess.run(
        ["make", "-s", "demo", f"DEMO_ARGS={args}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"face_rate_real", "face_rate_fake", "swd", "swd_avg", "demo_seconds"} <= set(metrics)
    assert metrics["face_rate_real"] >= 0.8
    assert metrics["face_rate_fake"] >= 0.5
    for name in [
        "loss.png",
        "log.csv",
        "generator.safetensors",
        "faces/grid.png",
        "faces/interpolation.png",
        "faces/face_0063.png",
    ]:
        assert (out / name).is_file(), name
    assert (out / "completions" / "grid.png").is_file() and metrics["completion"]["images"] == 8
    assert str(out / "completions" / "grid.png") in r.stdout
    assert "demo done in" in r.stdout and str(out / "metrics.json") in r.stdout
