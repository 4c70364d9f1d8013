"""The GPU path's logic, on the CPU: the AMP op lists and level, deferred loss fetching (--log-every), the data set
in device memory (--data-on-device, forced on), and train.py --check."""

import csv
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
from test_train import run_cli, tiny  # noqa: E402

from conftest import TINY_NET, make_faces


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
    r = run_cli(
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
    assert train_mod.log_interval(cfg, "cpu") == 1 and train_mod.log_interval(cfg, "gpu") == 20
    assert train_mod.log_interval(tiny(tmp_path, faces, log_every=7), "gpu") == 7
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
    r = run_cli("--check", "--data", str(faces), timeout=120)
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
