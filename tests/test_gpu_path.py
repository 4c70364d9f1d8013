"""The GPU path's logic, on the CPU: the AMP op lists and level, deferred loss fetching (--log-every), the data set
in device memory (--data-on-device, forced on), and train.py --check."""

import csv
import os
import re
import sys
from pathlib import Path

from utils import UserError, parse_config

import numpy as np
import paddle
import pytest

import dataReader
import modelfile
import runlog
import train as train_mod
from dataReader import DeviceLoader, make_loader, on_device, plan_on_device
from device import amp_settings, check_amp, uses_grad_scaler
from train import TrainingDiverged, train

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import TINY_NET, make_faces, run_script, tiny


@pytest.fixture
def faces(tmp_path):
    return make_faces(tmp_path / "faces.npy")


# -- mixed precision ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:amp_guard can only be enabled")
@pytest.mark.parametrize("mode, dtype, scaler", [("fp16", "float16", True), ("bf16", "bfloat16", False)])
def test_amp_covers_both_networks_convolutions_and_keeps_bn_sigmoid_and_loss_float32(mode, dtype, scaler):
    from paddle.amp.amp_lists import white_list
    from paddle.amp.auto_cast import _update_list
    from paddle.base import core

    s = amp_settings(mode, "gpu")
    assert s["enable"] and s["level"] == "O1" and s["dtype"] == dtype
    assert uses_grad_scaler(s) is scaler  # bfloat16: float32's exponent range, no loss scaling
    assert "conv2d_transpose" not in white_list()[dtype]["O1"]  # why the list is extended: G would stay float32
    ops = set(core.get_all_op_names())
    assert set(s["custom_white_list"]) | set(s["custom_black_list"]) <= ops  # real op names, no silent typo
    white, black = _update_list(
        s["custom_white_list"], s["custom_black_list"], s["level"], dtype
    )  # what auto_cast applies
    assert {"conv2d", "conv2d_transpose"} <= white
    assert {"batch_norm", "sigmoid", "bce_loss"} <= black and not {"batch_norm", "sigmoid", "bce_loss"} & white
    with paddle.amp.auto_cast(**s):  # on a CPU auto_cast turns itself off, but it still installs the lists
        w, b = paddle.base.framework._dygraph_tracer()._get_amp_op_list()
    assert {"conv2d_transpose", "conv2d"} <= set(w) and {"batch_norm", "bce_loss", "sigmoid"} <= set(b)


def test_amp_is_float32_on_cpu_or_off_and_the_flag_alone_is_fp16(tmp_path, faces):
    assert (
        amp_settings("fp16", "cpu") is None
        and amp_settings("bf16", "cpu") is None
        and amp_settings("off", "gpu") is None
    )
    assert amp_settings(True, "gpu")["dtype"] == "float16"  # notebooks' old amp=True
    assert parse_config(train_mod.TrainConfig, ["--amp"]).amp == "fp16"
    assert parse_config(train_mod.TrainConfig, ["--amp", "bf16"]).amp == "bf16"
    assert parse_config(train_mod.TrainConfig, []).amp == "off"
    trainer = train_mod.Trainer(tiny(tmp_path, faces, amp="bf16"), "cpu")
    assert trainer.amp is None and not trainer.scalerG.is_enable()
    r = run_script(
        "train.py",
        "--data",
        str(faces),
        "--out",
        str(tmp_path / "o"),
        *TINY_NET,
        "--max-iters",
        "1",
        "--amp",
        "bf16",
        "--no-progress",
    )
    assert r.returncode == 0 and "device cpu (--amp bf16 ignored: mixed precision is for GPU)" in r.stdout, r.stderr


def test_amp_the_gpu_cannot_run_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(paddle.device.cuda, "get_device_capability", lambda *a: (7, 0))
    monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda *a: "Tesla V100-SXM2-32GB")
    with pytest.raises(
        UserError, match=r"^--amp bf16: Tesla V100-SXM2-32GB \(compute capability 7\.0\) cannot run it, .*--amp fp16$"
    ):
        check_amp("bf16", "gpu", {"fp16": True, "bf16": False})
    check_amp("fp16", "gpu", {"fp16": True, "bf16": False})
    check_amp("bf16", "cpu", {"fp16": False, "bf16": False})  # CPU: a note at start, not an error


# -- deferred fetching --------------------------------------------------------------------------


def csv_rows(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "img_s"} for r in csv.DictReader(open(out / "log.csv"))]


def test_log_every_5_trains_logs_and_saves_exactly_what_log_every_1_does(tmp_path, faces):
    a, b = (
        tiny(tmp_path / "a", faces, max_iters=11, save_every=4),
        tiny(tmp_path / "b", faces, max_iters=11, save_every=4, log_every=5),
    )
    ha, hb = train(a), train(b)
    assert ha == hb and len(ha["d_loss"]) == 11
    ra, rb = csv_rows(Path(a.out)), csv_rows(Path(b.out))
    assert ra == rb and [int(r["iteration"]) for r in rb] == list(range(1, 12))
    ca, cb = (
        modelfile.read_state(Path(a.out) / "checkpoint.safetensors"),
        modelfile.read_state(Path(b.out) / "checkpoint.safetensors"),
    )
    assert ca.keys() == cb.keys()
    for key in ca:
        if key == "config":
            assert {**ca[key], "out": "", "log_every": 0} == {**cb[key], "out": "", "log_every": 0}
        elif isinstance(ca[key], dict):
            assert ca[key].keys() == cb[key].keys()
            for k, v in ca[key].items():
                va, vb = (v.numpy(), cb[key][k].numpy()) if isinstance(v, paddle.Tensor) else (v, cb[key][k])
                np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=f"{key}.{k}")
        else:
            np.testing.assert_array_equal(np.asarray(ca[key]), np.asarray(cb[key]), err_msg=key)


def test_a_windows_noise_is_the_noise_each_step_draws(tmp_path, faces):
    """train() sends a log window's noise to the device in one copy: iteration i's part of it is, bit for bit, what
    i's own draws are (default_rng([seed, rank, i]), one batch after another: D's steps, then G's)."""
    cfg = tiny(tmp_path, faces, d_steps=2, g_steps=3)
    t = train_mod.Trainer(cfg)
    window = t.noise(8, first=0, count=3).numpy()
    drawn, pre = [], []
    for i in range(3):
        rng = np.random.default_rng([cfg.seed, 0, i])
        drawn += [rng.standard_normal((8, cfg.nz, 1, 1), dtype=np.float32) for _ in range(5)]
        pre += list(window[i])
        t.iteration = i
        assert t.noise(8)[0].numpy().tobytes() == window[i].tobytes()  # one iteration's draw alone
    assert len(pre) == len(drawn) == 3 * 5
    assert all(a.tobytes() == b.tobytes() for a, b in zip(drawn, pre, strict=True))


@pytest.mark.parametrize("k", [6, 7, 10])
def test_nan_at_k_stops_by_k_plus_4_and_no_checkpoint_holds_it(tmp_path, faces, monkeypatch, k):
    calls = {"n": 0}
    real_bce = train_mod.bce_loss

    def poisoned(prob, label):
        calls["n"] += 1  # 4 BCE calls per iteration: iteration k's last G loss is call 4k
        loss = real_bce(prob, label)
        return loss * float("nan") if calls["n"] == 4 * k else loss

    monkeypatch.setattr(train_mod, "bce_loss", poisoned)
    saved = []
    real_save = modelfile.save_state

    def spy(path, obj):
        if Path(path).name.startswith("checkpoint"):
            assert all(np.isfinite(v.numpy()).all() for v in obj["G"].values())
            saved.append(obj["iteration"])
        real_save(path, obj)

    monkeypatch.setattr(modelfile, "save_state", spy)
    cfg = tiny(tmp_path, faces, epochs=3, log_every=5, save_every=5)  # 6 iterations per epoch
    with pytest.raises(TrainingDiverged, match=rf"^iteration {k}: g_loss is nan; stopped\."):
        train(cfg)
    next_fetch = min(-(-k // 5) * 5, -(-k // 6) * 6)  # every 5 iterations, and at each epoch's end (6)
    # stopped by the next fetch (k + 4 at most), or earlier where Paddle's BCE refuses the NaN D output that G's
    # NaN weights give in the next iteration (the CPU kernel checks its input)
    assert 4 * k <= calls["n"] <= 4 * next_fetch <= 4 * (k + 4)
    assert saved and max(saved) < k  # every checkpoint written was checked first
    ckpt = modelfile.read_state(Path(cfg.out) / "checkpoint.safetensors")
    assert ckpt["iteration"] == max(saved) and len(ckpt["history"]["d_loss"]) == max(saved)
    rows = csv_rows(Path(cfg.out))
    assert [int(r["iteration"]) for r in rows] == list(range(1, k))  # the checked iterations before it, logged


def test_log_every_by_device_and_negative_refused(tmp_path, faces):
    cfg = tiny(tmp_path, faces)
    assert runlog.log_interval(cfg.log_every, "cpu") == 1 and runlog.log_interval(cfg.log_every, "gpu") == 20
    assert runlog.log_interval(tiny(tmp_path, faces, log_every=7).log_every, "gpu") == 7
    with pytest.raises(UserError, match="--log-every"):
        train(tiny(tmp_path, faces, log_every=-1))


# -- data on the device -------------------------------------------------------------------------


@pytest.mark.parametrize("drop_last", [True, False])
def test_device_batches_equal_the_loaders_byte_for_byte(tmp_path, drop_last):
    path = make_faces(tmp_path / "f.npy", n=45)
    host = make_loader(path, batch_size=8, seed=5, drop_last=drop_last)
    dev, note = on_device(make_loader(path, batch_size=8, seed=5, drop_last=drop_last), "on", "cpu")
    assert isinstance(dev, DeviceLoader) and "on the cpu" in note and len(dev) == len(host) == (5 if drop_last else 6)
    for epoch in (0, 1):
        for start in (0, 3):  # 3: a run resumed in the middle of the epoch
            host.set_epoch(epoch)
            dev.set_epoch(epoch)
            a = [b.numpy() for b in host.iter_from(start)]
            b = [b.numpy() for b in dev.iter_from(start)]
            assert len(a) == len(b) == len(host) - start
            for x, y in zip(a, b, strict=True):
                assert x.dtype == y.dtype == np.float32 and x.shape == y.shape and x.tobytes() == y.tobytes()
    assert list(dev.iter_from(len(dev))) == []


def test_training_from_the_device_copy_is_bit_identical_including_a_mid_epoch_resume(tmp_path, faces):
    h_host = train(tiny(tmp_path / "host", faces, max_iters=10, data_on_device="off"))
    h_dev = train(tiny(tmp_path / "dev", faces, max_iters=10, data_on_device="on"))
    assert h_host == h_dev
    train(tiny(tmp_path / "res", faces, max_iters=4, data_on_device="on"))  # 6 per epoch: stops mid-epoch 1
    assert train(tiny(tmp_path / "res", faces, max_iters=10, data_on_device="on", resume=True)) == h_host


def test_data_on_device_auto_follows_device_and_free_memory(tmp_path, monkeypatch):
    assert plan_on_device(1000, True, "auto", "cpu")[0] is False
    assert plan_on_device(1000, True, "on", "cpu")[0] is True
    assert plan_on_device(1000, True, "off", "gpu")[0] is False
    assert plan_on_device(1000, False, "auto", "gpu")[0] is False  # a folder of images: decoded per batch
    monkeypatch.setattr(dataReader, "device_free_bytes", lambda: 16 * 10**9)
    celeba = 202_599  # 2.49 GB of uint8 at 64x64
    use, note = plan_on_device(celeba, True, "auto", "gpu")
    assert use and note == "the set (2.49 GB) on the gpu, batches gathered there"
    monkeypatch.setattr(dataReader, "device_free_bytes", lambda: 4 * 10**9)
    use, note = plan_on_device(celeba, True, "auto", "gpu")
    assert not use and "over 50% of the GPU's free 4.0 GB" in note
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(UserError, match="needs a packed .npy"):
        on_device(make_loader(folder, batch_size=2, seed=0), "on", "cpu")


# -- train.py --check ---------------------------------------------------------------------------


def test_check_prints_the_setup_and_runs_a_small_model(tmp_path, faces):
    r = run_script("train.py", "--check", "--data", str(faces), timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    heads = [x.split(":")[0] for x in lines]
    assert heads == ["paddle", "device", "amp", "data", "run"], r.stdout
    assert lines[0].startswith(f"paddle: {paddle.__version__} (") and "Python" in lines[0]
    if not paddle.device.is_compiled_with_cuda():
        assert lines[0].startswith(f"paddle: {paddle.__version__} (CPU build") and lines[1].startswith("device: cpu")
        assert "none on a CPU" in lines[2]
    assert "48 images" in lines[3] and "batches from host memory" in lines[3]
    assert (
        "float32 on cpu" in lines[4] and "losses finite" in lines[4] and float(lines[4].split(": ")[2].split()[0]) > 0
    )
    assert not (tmp_path / "output").exists()


def test_a_gpu_kernel_trap_at_a_fetch_is_one_clear_line(tmp_path, faces, monkeypatch):
    """On a GPU a NaN probability makes Paddle's BCE kernel stop the device; the error surfaces at the next fetch."""
    real = runlog.to_host
    calls = {"n": 0}

    def failing(stats):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("(External) CUDA error(719), unspecified launch failure.")
        return real(stats)

    monkeypatch.setattr(runlog, "to_host", failing)
    cfg = tiny(tmp_path, faces, epochs=3, log_every=4, save_every=4)  # fetches at 4, then 6 (the epoch's end)
    with pytest.raises(TrainingDiverged, match=r"^iterations 5-6: the GPU stopped on an error .*NaN") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert modelfile.read_state(Path(cfg.out) / "checkpoint.safetensors")["iteration"] == 4
    monkeypatch.setattr(runlog, "to_host", lambda stats: (_ for _ in ()).throw(RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="something else"):
        train(tiny(tmp_path / "b", faces, log_every=4))


def test_nothing_but_the_fetch_reads_device_values_during_the_loop(tmp_path, monkeypatch):
    """With --log-every 5, in 10 iterations that write nothing else (no epoch end, no --save-every), the only host
    reads of tensor values are the two fetches, until the run's final checkpoint and grid."""
    faces = make_faces(tmp_path / "faces.npy", n=96)  # 12 iterations per epoch
    state = {"it": 0, "reads": []}
    real_step = train_mod.Trainer.step

    def step(self, real, noise=None):
        state["it"] = self.iteration + 1
        return real_step(self, real, noise)

    def spy(name):
        orig = getattr(paddle.Tensor, name)

        def read(self, *a, **kw):
            state["reads"].append((state["it"], name))
            return orig(self, *a, **kw)

        return read

    monkeypatch.setattr(train_mod.Trainer, "step", step)
    fetches = []
    real_to_host = runlog.to_host
    monkeypatch.setattr(runlog, "to_host", lambda stats: fetches.append(len(stats)) or real_to_host(stats))
    done_reads = {}

    def on_save(path, obj, orig=modelfile.save_state):
        done_reads.setdefault("before_first_save", list(state["reads"]))
        orig(path, obj)

    monkeypatch.setattr(modelfile, "save_state", on_save)
    for name in ("numpy", "item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(paddle.Tensor, name, spy(name))
    train(tiny(tmp_path, faces, epochs=1, max_iters=10, log_every=5))
    assert fetches == [5, 5]
    assert done_reads["before_first_save"] == [(5, "numpy"), (10, "numpy")]  # the two fetches' transfers


# -- device traps (issue 26) --------------------------------------------------------------------

TRAPS = [  # Paddle's wording of the CUDA and cuDNN errors a stopped GPU gives
    ("(External) CUDA error(719), unspecified launch failure.", "CUDA error(719)"),
    ("(External) CUDA error(700), an illegal memory access was encountered.", "CUDA error(700)"),
    ("(External) CUDNN error(8), CUDNN_STATUS_EXECUTION_FAILED.", "CUDNN_STATUS_EXECUTION_FAILED"),
    ("(External) CUDA error(710), device-side assert triggered.", "CUDA error(710)"),
    ("an illegal memory access was encountered", "illegal memory access"),
]


def _no_nan_checkpoint(out: Path, before: int) -> None:
    ckpt = modelfile.read_state(out / "checkpoint.safetensors")
    assert ckpt["iteration"] == before and all(np.isfinite(v).all() for v in ckpt["G"].values())


@pytest.mark.parametrize("where", ["step", "fetch", "grid"])
@pytest.mark.parametrize("message, mark", TRAPS)
def test_a_device_trap_is_one_line_wherever_it_surfaces(tmp_path, faces, monkeypatch, where, message, mark):
    """The trap surfaces at the next checked CUDA call: in the step (fp16's found_inf read, float32's backward), at a
    fetch, or in a grid's sampling; each is the same one-line stop, nothing saved after the last good checkpoint."""
    calls = {"n": 0}

    def trap_at(n, real):
        def f(*a, **kw):
            calls["n"] += 1
            if calls["n"] == n:
                raise OSError(message)
            return real(*a, **kw)

        return f

    cfg = tiny(tmp_path, faces, epochs=3, log_every=4, save_every=4, sample_every=5)
    if where == "step":  # the 7th step (iteration 7), after the checkpoint at 6
        monkeypatch.setattr(train_mod.Trainer, "step", trap_at(7, train_mod.Trainer.step))
        expect = rf"^iteration 7: the GPU stopped on an error \({re.escape(mark)}\)"
    elif where == "fetch":  # fetches at 4, 5 (the grid), 6 (the epoch's end): the third
        monkeypatch.setattr(runlog, "to_host", trap_at(3, runlog.to_host))
        expect = rf"^iterations 6-6: the GPU stopped on an error \({re.escape(mark)}\)"
    else:  # the grid at 5
        monkeypatch.setattr(train_mod, "sample", trap_at(1, train_mod.sample))
        expect = rf"^iteration 6: the GPU stopped on an error \({re.escape(mark)}\)"
    with pytest.raises(TrainingDiverged, match=expect) as err:
        train(cfg)
    assert "\n" not in str(err.value) and "NaN" in str(err.value) and "checkpoint" in str(err.value)
    _no_nan_checkpoint(Path(cfg.out), 6 if where == "step" else 4)
    r = subprocess_one_line(err.value)
    assert r.count("\n") == 1


def subprocess_one_line(e: Exception) -> str:
    """What utils.run_cli prints for it."""
    import io
    from contextlib import redirect_stderr

    from utils import run_cli as run_main

    buf = io.StringIO()

    def main(argv):
        raise e

    with redirect_stderr(buf):
        assert run_main(main, []) == 2
    return buf.getvalue()


def test_device_traps_and_divergence_are_told_apart_from_other_errors():
    for message, mark in TRAPS:
        assert runlog.device_trap(OSError(message)) == mark and runlog.is_divergence(OSError(message))
    assert runlog.is_divergence(ValueError("(InvalidArgument) Illegal input, x is nan"))
    assert runlog.device_trap(ValueError("Illegal input")) is None
    for other in ("out of memory", "Cannot allocate 2.0GB", "finance", "the maintenance window"):
        assert not runlog.is_divergence(RuntimeError(other))


def test_loss_from_logits_equals_the_cpu_loss_and_lets_a_nan_through(tmp_path, faces):
    """The GPU's loss (from D's logits) against the CPU's (BCE of D's probabilities), on the CPU: the same losses and
    gradients within float rounding at the same weights; and a NaN from D becomes a NaN loss, not a kernel error.
    (Over many steps the two drift apart as any two summation orders do: Adam divides each gradient by its own
    running scale, so rounding differences in near-zero gradients become lr-sized steps.)"""
    cfg = tiny(tmp_path, faces)
    probs, logits = train_mod.Trainer(cfg, "cpu"), train_mod.Trainer(cfg, "cpu")
    assert probs.from_logits is False
    logits.from_logits = True  # what a GPU runs
    real = paddle.uniform([8, 3, 64, 64], min=-1.0, max=1.0, seed=4)
    fake = probs.G(probs.noise(8)[0, 0])
    for label, x in ((1.0, real), (0.0, fake.detach())):
        losses, grads = [], []
        for t in (probs, logits):
            loss = t._loss(t._D(x), label)
            t.optD.clear_grad()
            loss.backward()
            losses.append(float(loss))
            grads.append([p.grad.numpy() for p in t.D.parameters() if p.grad is not None])
        assert losses[1] == pytest.approx(losses[0], rel=1e-6)
        assert len(grads[0]) == len(grads[1]) == len(modelfile.trainable(probs.D))
        for ga, gb in zip(*grads, strict=True):
            np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-5 * np.abs(ga).max())  # float rounding
    a, b = probs.step(real).numpy(), logits.step(real).numpy()  # a whole iteration from the same weights
    # (its second G step follows an Adam step on gradients that differ in rounding: 1e-6 was 1.003e-6 away once the
    # 3-channel convolutions summed in another order, 2026-12-04)
    np.testing.assert_allclose(b, a, rtol=1e-5)
    nan = paddle.full([8, 3, 64, 64], float("nan"))
    stats = logits.step(nan).numpy()
    assert np.isnan(stats[0]) and np.isnan(stats[2])
    with pytest.raises(ValueError, match="Illegal input|interval"):  # the CPU's BCE refuses it (runlog's mark)
        probs.step(nan).numpy()


# -- determinism, TF32, launcher backend, free memory, GradScaler --------------------------------


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA build that sees one Ampere GPU, as far as device.py, train.setup and dataReader ask."""
    from paddle.base import core

    state = {"flags": [], "switch": True, "switch_calls": [], "place": []}
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(paddle.device.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(paddle, "set_flags", lambda flags: state["flags"].append(dict(flags)))
    monkeypatch.setattr(paddle, "set_device", lambda d: state["place"].append(d))
    monkeypatch.setattr(core, "get_cudnn_switch", lambda: state["switch"], raising=False)

    def set_switch(on):
        state["switch_calls"].append(on)
        state["switch"] = on

    monkeypatch.setattr(core, "set_cudnn_switch", set_switch, raising=False)
    return state


def test_deterministic_cudnn_on_a_gpu_by_default_and_tf32_stated(fake_gpu):
    import device

    assert device.configure_gpu("cpu", True) == "" and fake_gpu["flags"] == []  # a CPU: nothing to set
    note = device.configure_gpu("gpu", True)
    assert fake_gpu["flags"][-1] == {
        "FLAGS_cudnn_deterministic": True,
        "FLAGS_cudnn_exhaustive_search": False,
        "FLAGS_cudnn_batchnorm_spatial_persistent": False,
    }
    assert note == ", cuDNN deterministic, TF32 convolutions"
    assert device.configure_gpu("gpu", False) == ", cuDNN non-deterministic (--no-deterministic), TF32 convolutions"
    assert fake_gpu["flags"][-1] == {"FLAGS_cudnn_deterministic": False}
    fake_gpu["switch"] = False
    assert device.configure_gpu("gpu", True) == ", cuDNN deterministic"
    paddle.device.cuda.get_device_capability = lambda *a: (7, 5)  # (restored by monkeypatch) Turing: no TF32
    fake_gpu["switch"] = True
    assert device.configure_gpu("gpu", True) == ", cuDNN deterministic"
    assert parse_config(train_mod.TrainConfig, []).deterministic is True
    assert parse_config(train_mod.TrainConfig, ["--no-deterministic"]).deterministic is False


def test_strict_float32_turns_tf32_off_and_back(fake_gpu):
    import device

    with device.strict_float32("cpu"):
        pass
    assert fake_gpu["switch_calls"] == []
    with device.strict_float32("gpu"):
        assert fake_gpu["switch"] is False
    assert fake_gpu["switch_calls"] == [False, True] and fake_gpu["switch"] is True


@pytest.mark.parametrize("choice, backend", [("cpu", "gloo"), ("gpu", None), ("auto", None)])
def test_the_device_is_chosen_before_the_process_groups_backend(
    tmp_path, faces, monkeypatch, fake_gpu, choice, backend
):
    """Under paddle.distributed.launch (2 ranks) on a CUDA build: --device cpu makes the group with gloo (Paddle's
    'auto' would pick NCCL and a GPU place); a GPU keeps the launcher's default (NCCL)."""
    import device

    for k, v in {"PADDLE_TRAINERS_NUM": "2", "PADDLE_TRAINER_ID": "0", "PADDLE_LOCAL_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PADDLE_DISTRI_BACKEND", raising=False)
    order = []
    real_pick = device.pick_device
    monkeypatch.setattr(device, "pick_device", lambda c: order.append("pick") or real_pick(c))
    monkeypatch.setattr(train_mod.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(train_mod.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(
        train_mod.dist, "init_parallel_env", lambda: order.append(("init", os.environ.get("PADDLE_DISTRI_BACKEND")))
    )
    where, rank, world, note = train_mod.setup(tiny(tmp_path, faces, device=choice))
    assert order == ["pick", ("init", backend)] and world == 2 and rank == 0
    assert where == ("cpu" if choice == "cpu" else "gpu") and fake_gpu["place"] == [where]
    assert bool(fake_gpu["flags"]) is (where == "gpu") and ("deterministic" in note) is (where == "gpu")


def test_free_gpu_memory_is_the_drivers_count(monkeypatch):
    """cudaMemGetInfo (paddle.cuda.mem_get_info) sees other processes and the CUDA context; what Paddle reserved
    but does not use is added back. Without mem_get_info: total - reserved."""
    calls = []
    monkeypatch.setattr(paddle.device, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(paddle.cuda, "mem_get_info", lambda d=None: calls.append(d) or (3 * 10**9, 16 * 10**9))
    monkeypatch.setattr(paddle.device.cuda, "memory_reserved", lambda d=None: 10**9)
    monkeypatch.setattr(paddle.device.cuda, "memory_allocated", lambda d=None: 4 * 10**8)
    props = type("P", (), {"total_memory": 16 * 10**9})
    monkeypatch.setattr(paddle.device.cuda, "get_device_properties", lambda d=None: props)
    assert dataReader.device_free_bytes() == 3 * 10**9 + 6 * 10**8 and calls == ["gpu:0"]
    use, note = plan_on_device(202_599, True, "auto", "gpu")  # CelebA (2.49 GB) is over half of 3.6 GB
    assert not use and "free 3.6 GB" in note
    monkeypatch.delattr(paddle.cuda, "mem_get_info")  # an older Paddle
    assert dataReader.device_free_bytes() == 15 * 10**9


def _as_on_a_gpu(scaler):
    """A scaler set up as paddle.amp.GradScaler() sets one up on a GPU (a CPU place turns it off in __init__)."""
    scaler._enable, scaler._use_dynamic_loss_scaling, scaler._scale = True, True, paddle.to_tensor([1024.0])
    scaler._incr_ratio, scaler._decr_ratio, scaler._incr_every_n_steps, scaler._decr_every_n_nan_or_inf = (
        2,
        0.5,
        1000,
        1,
    )
    scaler._incr_count = scaler._decr_count = 0
    return scaler


def test_fp16_scalers_lowerings_are_counted_not_printed(capsys):
    import device

    ours, plain = _as_on_a_gpu(device.GradScaler(enable=False)), _as_on_a_gpu(paddle.amp.GradScaler(enable=False))
    scales = []
    for found_inf in [True, True, False, True] + [False] * 1000 + [True]:
        ours._cache_found_inf = found_inf  # what step() leaves: an overflow in this step's gradients, or none
        ours.update()
        scales.append(float(ours._scale[0]))
    assert capsys.readouterr().out == "" and ours.lowered == 4
    # Paddle's rule: every overflow lowers the scale (decr_every_n_nan_or_inf = 1 here) by half, and 1000 clean
    # steps in a row double it
    assert scales[:4] == [512.0, 256.0, 256.0, 128.0] and scales[1003] == 256.0 and scales[-1] == 128.0
    assert ours._incr_count == 0 and ours._decr_count == 0
    plain._cache_found_inf = True  # Paddle's own: the print, which NumPy 2.4 turns into a TypeError
    try:
        plain.update()
        assert "Found inf or nan, current scale is" in capsys.readouterr().out
    except TypeError as e:
        assert "0-dimensional" in str(e) and np.lib.NumpyVersion(np.__version__) >= "2.4.0"
