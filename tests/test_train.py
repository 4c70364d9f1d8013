"""train.py: the schedule, the outputs, exact resume, crash safety and clear errors (CPU, tiny models)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from utils import UserError

import numpy as np
import paddle
import pytest
from PIL import Image

import device
import modelfile
import train as train_mod
from conftest import ROOT, TINY_NET, assert_same_state, make_faces, run_script, tiny
from modelfile import load_generator
from train import Trainer, TrainingDiverged, train


@pytest.fixture
def faces(tmp_path):
    return make_faces(tmp_path / "faces.npy")


def state_arrays(layer) -> dict:
    return {k: v.numpy().copy() for k, v in layer.state_dict().items()}


def run_cli(*args, timeout=120):
    return run_script("train.py", *args, timeout=timeout)


# -- the schedule -------------------------------------------------------------------------------


def count_steps(trainer):
    counts = {"D": 0, "G": 0}
    for name, opt in (("D", trainer.optD), ("G", trainer.optG)):
        orig = opt.step

        def counted(orig=orig, name=name):
            counts[name] += 1
            return orig()

        opt.step = counted
    return counts


def test_one_d_step_and_two_g_steps_per_iteration(tmp_path, faces):
    trainer = Trainer(tiny(tmp_path, faces))
    counts = count_steps(trainer)
    real = paddle.to_tensor(np.load(faces)[:8].transpose(0, 3, 1, 2).astype("float32") / 127.5 - 1)
    stats = trainer.step(real)
    assert counts == {"D": 1, "G": 2}
    assert stats.shape == [4] and np.all(np.isfinite(stats.numpy()))
    trainer2 = Trainer(tiny(tmp_path, faces, d_steps=2, g_steps=3))
    counts2 = count_steps(trainer2)
    trainer2.step(real)
    assert counts2 == {"D": 2, "G": 3}


def test_g_step_leaves_d_unchanged_and_d_step_leaves_g_unchanged(tmp_path, faces):
    from network import bce_loss

    trainer = Trainer(tiny(tmp_path, faces))
    trainable = lambda m: {p.name: p.numpy().copy() for p in m.parameters() if p.trainable}  # noqa: E731
    d0, g0 = trainable(trainer.D), trainable(trainer.G)
    loss_g = bce_loss(trainer.D(trainer.G(trainer.noise(8)[0][0])), 1.0)
    trainer._update(loss_g, trainer.optG, trainer.scalerG)
    d1, g1 = trainable(trainer.D), trainable(trainer.G)
    assert all(np.array_equal(d0[k], d1[k]) for k in d0)
    assert any(not np.array_equal(g0[k], g1[k]) for k in g0)
    real = paddle.randn([8, 3, 64, 64]).clip(-1, 1)
    loss_d = bce_loss(trainer.D(real), 1.0) + bce_loss(trainer.D(trainer.G(trainer.noise(8)[0][0]).detach()), 0.0)
    trainer._update(loss_d, trainer.optD, trainer.scalerD)
    g2, d2 = trainable(trainer.G), trainable(trainer.D)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    assert any(not np.array_equal(d1[k], d2[k]) for k in d1)


def test_step_matches_the_textbook_step_bit_for_bit(tmp_path, faces):
    """The fast step (no autograd graph through G for D's loss, D frozen in the G steps) trains exactly what the
    old, plain one (kept in the benchmark as its baseline) does: G's output detached for D, and D's unused gradients
    in the G steps cleared by optD."""
    from bench.bench_train import legacy_step

    real = paddle.to_tensor(np.load(faces)[:8].transpose(0, 3, 1, 2).astype("float32") / 127.5 - 1)
    fast, plain = Trainer(tiny(tmp_path, faces, ema=0.9)), Trainer(tiny(tmp_path, faces, ema=0.9))
    for _ in range(3):
        assert np.array_equal(
            fast.step(real).numpy(), legacy_step(plain, real).numpy()
        )  # the logged losses and D outputs
        fast.iteration += 1
        plain.iteration += 1
    for a, b in ((fast.G, plain.G), (fast.D, plain.D), (fast.G_ema, plain.G_ema)):
        sa, sb = state_arrays(a), state_arrays(b)
        assert all(np.array_equal(sa[k], sb[k]) for k in sa)  # weights and BN running statistics
    assert all(not p.stop_gradient for p in fast.D_trainable)  # D trainable again after the G steps
    oa = modelfile.optimizer_state(fast.optG, modelfile.trainable(fast.G))  # by parameter order: the two
    ob = modelfile.optimizer_state(plain.optG, modelfile.trainable(plain.G))  # trainers' parameter names differ
    assert sorted(oa) == sorted(ob) and all(
        np.array_equal(np.asarray(oa[k]), np.asarray(ob[k])) for k in oa if k != "LR_Scheduler"
    )


# -- outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("every, grids", [(4, [4, 8, 12]), (5, [5, 10, 12]), (0, [12])])
def test_no_epoch_grids_draws_the_sample_every_ones_and_the_last(tmp_path, faces, every, grids):
    """--no-epoch-grids (the demo: its epochs are 6 iterations): no epoch_*.png, a grid every --sample-every
    iterations and one of the last iteration; the checkpoints stay at each epoch."""
    train(tiny(tmp_path, faces, epoch_grids=False, sample_every=every))  # 6 iterations an epoch, 12 in all
    names = sorted(p.name for p in (tmp_path / "out" / "samples").iterdir())
    assert names == [f"iter_{i:06d}.png" for i in grids]
    assert (tmp_path / "out" / "checkpoint.safetensors").is_file()


def test_loss_png_is_drawn_at_most_every_ten_seconds_and_always_at_the_end(tmp_path, faces, monkeypatch):
    """loss.png takes ~0.3 s to draw, longer than a demo epoch's iterations: at an epoch's end it is redrawn only when
    runlog.PLOT_EVERY_S have passed since the last one; the run's last picture has every iteration."""
    import runlog

    drawn = []
    monkeypatch.setattr(runlog, "plot_history", lambda h, path, per_epoch: drawn.append(len(h["d_loss"])))
    history = train(tiny(tmp_path, faces, epochs=3))  # 6 iterations an epoch, well under 10 s each
    assert drawn == [6, 18] == [6, len(history["d_loss"])]

    clock = [100.0]
    monkeypatch.setattr(runlog.time, "perf_counter", lambda: clock[0])
    drawn.clear()
    log = runlog.RunLog(tmp_path / "out", history, per_epoch=6, total=18)
    for t, force in ((100.0, False), (105.0, False), (105.0, True), (114.9, False), (115.0, False)):
        clock[0] = t
        log.plot(force=force)
    log.close()
    assert len(drawn) == 3  # at 100 (the first), 105 (forced), 115 (10 s after the last)


def test_short_run_writes_every_output(tmp_path, faces):
    cfg = tiny(tmp_path, faces, sample_every=4)
    history = train(cfg)
    out = Path(cfg.out)
    nb = 48 // 8
    assert {k: len(v) for k, v in history.items()} == {k: 2 * nb for k in ("d_loss", "g_loss", "d_real", "d_fake")}
    for name in [
        "checkpoint.safetensors",
        "generator.safetensors",
        "loss.png",
        "log.csv",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
        "samples/iter_000004.png",
        "samples/iter_000008.png",
    ]:
        assert (out / name).is_file(), name
    grid = Image.open(out / "samples/epoch_002.png")
    assert grid.size == (8 * 66 + 2, 8 * 66 + 2) and grid.mode == "RGB"
    assert Image.open(out / "loss.png").size[0] > 400
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2 * nb
    assert list(rows[0]) == ["epoch", "iteration", "d_loss", "g_loss", "d_real", "d_fake", "img_s"]
    assert [int(r["iteration"]) for r in rows] == list(range(1, 2 * nb + 1))
    assert [int(r["epoch"]) for r in rows] == [1] * nb + [2] * nb
    np.testing.assert_allclose([float(r["d_loss"]) for r in rows], history["d_loss"], rtol=1e-5)
    assert all(0 < float(r["d_real"]) < 1 and float(r["img_s"]) > 0 for r in rows)
    ckpt = modelfile.read_state(out / "checkpoint.safetensors")
    assert {"G", "D", "optG", "optD", "epoch", "iteration", "fixed_noise", "rng", "config", "history"} <= set(ckpt)
    assert ckpt["iteration"] == 2 * nb and ckpt["epoch"] == 2 and ckpt["config"]["ngf"] == 8
    G = load_generator(str(out / "generator.safetensors"))
    assert (G.nz, G.ngf) == (16, 8)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*tmp"))


def test_max_iters_stops_mid_epoch_and_leaves_a_checkpoint(tmp_path, faces):
    cfg = tiny(tmp_path, faces, epochs=8, max_iters=9)
    history = train(cfg)
    assert len(history["d_loss"]) == 9
    ckpt = modelfile.read_state(Path(cfg.out) / "checkpoint.safetensors")
    assert ckpt["iteration"] == 9
    assert (Path(cfg.out) / "samples/iter_000009.png").is_file()


def test_ema_generator_is_saved_and_differs_from_g(tmp_path, faces):
    cfg = tiny(tmp_path, faces, epochs=1, ema=0.9)
    train(cfg)
    ckpt = modelfile.read_state(Path(cfg.out) / "checkpoint.safetensors")
    gen = modelfile.read_state(Path(cfg.out) / "generator.safetensors")
    key = "main.0.weight"
    assert ckpt["G_ema"]
    np.testing.assert_array_equal(gen[key], ckpt["G_ema"][key])
    assert not np.array_equal(ckpt["G_ema"][key], ckpt["G"][key])


# -- resume -------------------------------------------------------------------------------------


def test_resume_is_bit_identical(tmp_path, faces):
    straight = tiny(tmp_path / "a", faces, max_iters=10, ema=0.5)  # 6 per epoch: resume mid-epoch 2
    h_straight = train(straight)
    first = tiny(tmp_path / "b", faces, max_iters=5, ema=0.5)
    train(first)
    h_resumed = train(tiny(tmp_path / "b", faces, max_iters=10, ema=0.5, resume=True))
    a = modelfile.read_state(Path(straight.out) / "checkpoint.safetensors")
    b = modelfile.read_state(Path(first.out) / "checkpoint.safetensors")
    assert_same_state(a, b)
    for name in ("checkpoint.safetensors", "generator.safetensors"):  # the files' tensors, bit for bit
        ta, tb = tensors_of(Path(straight.out) / name), tensors_of(Path(first.out) / name)
        assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta), name
    n_params = len([p for p in Trainer(straight).G.parameters() if p.trainable])
    assert len(a["optG"]) == 4 * n_params  # two moments and two beta powers per parameter
    assert h_straight == h_resumed
    rows = list(csv.DictReader(open(Path(first.out) / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 11))


def test_resume_refuses_changed_architecture_and_fresh_run_refuses_to_overwrite(tmp_path, faces):
    train(tiny(tmp_path, faces, max_iters=2))
    with pytest.raises(UserError, match="--ngf 8"):
        train(tiny(tmp_path, faces, max_iters=4, ngf=16, resume=True))
    with pytest.raises(UserError, match="--resume"):
        train(tiny(tmp_path, faces, max_iters=4))
    assert len(train(tiny(tmp_path, faces, max_iters=3, overwrite=True))["d_loss"]) == 3
    with pytest.raises(UserError, match="no checkpoint"):
        train(tiny(tmp_path / "elsewhere", faces, resume=True))


def tensors_of(path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint(tmp_path):
    data = make_faces(tmp_path / "faces.npy", n=256)
    out = tmp_path / "out"
    args = [
        "--data",
        str(data),
        "--out",
        str(out),
        *TINY_NET,
        "--epochs",
        "50",
        "--save-every",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    ckpt_path = out / "checkpoint.safetensors"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if ckpt_path.exists() and len(list(csv.reader(open(out / "log.csv")))) > 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt = modelfile.read_state(ckpt_path)
    it = ckpt["iteration"]
    assert 0 < it < 32  # killed mid-epoch 1 (32 iterations per epoch)
    r = run_cli(*args, "--resume", "--max-iters", str(it + 3))
    assert r.returncode == 0, r.stderr
    assert f"resuming at iteration {it}" in r.stdout
    assert modelfile.read_state(ckpt_path)["iteration"] == it + 3
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == list(range(1, it + 4))


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["loss", "weights"])
def test_nan_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path, faces, monkeypatch, where):
    """A NaN loss (caught by the finite check) or NaN weights (Paddle's BCE kernel then refuses D's
    output): either way one line naming iteration 5, and the checkpoint of iteration 4 stays."""
    calls = {"n": 0}
    real_bce = train_mod.bce_loss

    def poisoned(prob, label):
        calls["n"] += 1  # 4 BCE calls per iteration: 2 in the D step, 1 per G step; iteration 5 is calls 17-20
        if where == "loss" and calls["n"] == 20:  # iteration 5's last G loss
            return real_bce(prob, label) * float("nan")
        if where == "weights" and calls["n"] >= 17:
            return real_bce(prob * float("nan"), label)
        return real_bce(prob, label)

    monkeypatch.setattr(train_mod, "bce_loss", poisoned)
    cfg = tiny(tmp_path, faces, save_every=1)
    msg = r"^iteration 5: g_loss is nan; stopped\." if where == "loss" else r"^iteration 5: D's output became NaN"
    with pytest.raises(TrainingDiverged, match=msg) as err:
        train(cfg)
    assert "last good checkpoint stays in" in str(err.value) and "\n" not in str(err.value)
    assert modelfile.read_state(Path(cfg.out) / "checkpoint.safetensors")["iteration"] == 4


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "pretreat.py"),
        ("wrong_shape", "64"),
        ("too_small", "batch"),
        ("not_npy", "faces"),
    ],
)
def test_bad_data_gives_one_clear_line(tmp_path, case, expect):
    path = tmp_path / "faces.npy"
    if case == "wrong_shape":
        np.save(path, np.zeros((20, 32, 32, 3), np.uint8))
    elif case == "too_small":
        np.save(path, np.zeros((5, 64, 64, 3), np.uint8))
    elif case == "not_npy":
        path.write_text("hello")
    r = run_cli(
        "--data",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--batch-size",
        "8",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--no-progress",
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: ") and "Traceback" not in r.stderr, r.stderr
    assert expect in lines[0]
    assert str(path.name) in lines[0] or case == "missing"


def test_amp_on_cpu_is_ignored_with_a_note_and_gpu_request_fails_clearly(tmp_path, faces):
    r = run_cli(
        "--data",
        str(faces),
        "--out",
        str(tmp_path / "o"),
        *TINY_NET,
        "--max-iters",
        "2",
        "--amp",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert "device cpu (--amp fp16 ignored: mixed precision is for GPU)" in r.stdout  # the flag alone is fp16
    if not paddle.device.is_compiled_with_cuda():
        with pytest.raises(UserError, match="--device gpu"):
            device.pick_device("gpu")
        assert device.pick_device("auto") == "cpu"


def test_cli_help_lists_the_flags():
    r = run_cli("--help")
    for flag in [
        "--data",
        "--out",
        "--epochs",
        "--batch-size",
        "--lr",
        "--beta1",
        "--beta2",
        "--nz",
        "--ngf",
        "--ndf",
        "--g-steps",
        "--d-steps",
        "--seed",
        "--device",
        "--amp",
        "--resume",
        "--save-every",
        "--sample-every",
        "--num-workers",
        "--max-iters",
        "--ema",
        "--log-every",
        "--data-on-device",
        "--check",
    ]:
        assert flag in r.stdout
