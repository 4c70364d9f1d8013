"""onednn_conv: the oneDNN convolutions match Paddle's kernels on every layer of network.py, forward and backward;
training with them is bit-identical run to run; DCGAN_ONEDNN=0 and a failed build fall back to Paddle's kernels."""

import numpy as np
import paddle
import pytest

import network
import onednn_conv
from network import Discriminator, Generator

needs_onednn = pytest.mark.skipif(not onednn_conv.available(), reason=f"oneDNN ops not built: {onednn_conv.status()}")


def conv_inputs(ngf: int, ndf: int, nz: int = 100, batch: int = 2):
    """Each conv layer of G and D with the input shape it sees, traced in call order (10 layers)."""
    G, D = Generator(nz=nz, ngf=ngf), Discriminator(ndf=ndf)
    seen = []
    convs = [m for net in (G, D) for m in net.sublayers() if isinstance(m, (network.Conv2D, network.Conv2DTranspose))]
    hooks = [m.register_forward_pre_hook(lambda layer, inputs: seen.append((layer, inputs[0].shape))) for m in convs]
    with paddle.no_grad():
        D(G(paddle.zeros([batch, nz, 1, 1])))
    for h in hooks:
        h.remove()
    return seen


def close(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the reference's largest magnitude (floors at an absolute scale of 1)."""
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


@needs_onednn
@pytest.mark.parametrize("ngf", [64, 8])
def test_every_layer_matches_paddle_forward_and_backward(ngf):
    layers = conv_inputs(ngf, ngf)
    assert len(layers) == 10
    kinds = [type(layer).__name__ for layer, _ in layers]
    assert kinds == ["Conv2DTranspose"] * 5 + ["Conv2D"] * 5
    rng = np.random.default_rng(0)
    for layer, shape in layers:
        x0 = rng.standard_normal(shape).astype("float32")
        results = []
        for use in (True, False):  # the oneDNN forward, then the parent class's (Paddle's kernels)
            x = paddle.to_tensor(x0, stop_gradient=False)
            y = layer(x) if use else super(type(layer), layer).forward(x)
            dy = paddle.to_tensor(np.random.default_rng(1).standard_normal(y.shape).astype("float32"))
            dx, dw = paddle.grad(y, [x, layer.weight], dy)
            results.append([t.numpy() for t in (y, dx, dw)])
        for name, a, b in zip(("forward", "input grad", "weight grad"), *results, strict=True):
            assert a.shape == b.shape
            assert close(a, b) < 1e-5, f"{layer}: {name} differs by {close(a, b):.2e}"


@needs_onednn
def test_the_ops_do_run_and_skip_unneeded_gradients(monkeypatch):
    calls = []
    for op in ("dnnl_conv_fwd", "dnnl_conv_bwd_data", "dnnl_conv_bwd_weights"):
        orig = getattr(onednn_conv._ops, op)
        monkeypatch.setattr(onednn_conv._ops, op, lambda *a, orig=orig, op=op: calls.append(op) or orig(*a))
    D = Discriminator(ndf=8)
    x = paddle.randn([2, 3, 64, 64])  # an input that needs no gradient: no backward-data on the first layer
    D(x).sum().backward()
    assert calls.count("dnnl_conv_fwd") == 5 and calls.count("dnnl_conv_bwd_weights") == 5
    assert calls.count("dnnl_conv_bwd_data") == 4
    calls.clear()
    for p in D.parameters():
        p.stop_gradient = True  # D frozen, as in train.py's G steps: no weight gradients at all
    x = paddle.randn([2, 3, 64, 64])
    x.stop_gradient = False
    D(x).sum().backward()
    assert calls.count("dnnl_conv_bwd_weights") == 0 and calls.count("dnnl_conv_bwd_data") == 5


@needs_onednn
def test_training_is_bit_identical_run_to_run(tmp_path):
    from train import TrainConfig, Trainer

    real = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, (8, 3, 64, 64)).astype("float32"))
    runs = []
    for _ in range(2):
        t = Trainer(TrainConfig(out=str(tmp_path), batch_size=8, ngf=8, ndf=8, nz=16, seed=3, progress=False))
        stats = []
        for _ in range(3):
            stats.append(t.step(real).numpy())
            t.iteration += 1
        runs.append((np.stack(stats), {k: v.numpy() for net in (t.G, t.D) for k, v in net.state_dict().items()}))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert network.conv_backend("cpu").startswith("oneDNN")


def test_env_var_off_uses_paddles_kernels(monkeypatch):
    monkeypatch.setenv("DCGAN_ONEDNN", "0")

    def boom(*a):
        raise AssertionError("oneDNN op called with DCGAN_ONEDNN=0")

    monkeypatch.setattr(onednn_conv._Conv2D, "apply", boom)
    monkeypatch.setattr(onednn_conv._Conv2DTranspose, "apply", boom)
    out = Discriminator(ndf=8)(Generator(nz=16, ngf=8)(paddle.randn([2, 16, 1, 1])))
    assert out.shape == [2]
    assert network.conv_backend("cpu") == "Paddle (oneDNN off (DCGAN_ONEDNN=0))"
    assert network.conv_backend("gpu:0") == "Paddle (gpu)"


def test_a_failed_build_is_one_warning_line_and_paddles_kernels_run(monkeypatch, capsys):
    monkeypatch.setattr(onednn_conv, "_ops", None)
    monkeypatch.setattr(onednn_conv, "_status", "")
    monkeypatch.setattr(onednn_conv, "include_dir", lambda: None)  # as on a machine without the headers package
    out = Discriminator(ndf=8)(paddle.randn([2, 3, 64, 64]))
    assert out.shape == [2]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onednn_conv: warning:") and "onednn-devel-cpu-iomp" in err[0]
    Discriminator(ndf=8)(paddle.randn([2, 3, 64, 64]))  # remembered: no second warning, no second try
    assert capsys.readouterr().err == ""
    assert network.conv_backend("cpu").startswith("Paddle (oneDNN unavailable (no oneDNN headers")


@pytest.mark.skipif(onednn_conv.include_dir() is None, reason="no oneDNN headers (pip install onednn-devel-cpu-iomp)")
def test_a_compile_error_is_one_line_naming_the_log(tmp_path):
    bad = tmp_path / "bad.cc"
    bad.write_text('#include "paddle/extension.h"\nthis is not C++;\n')
    with pytest.raises(RuntimeError) as e:
        onednn_conv.build(source=bad, directory=tmp_path / "ext", name="dcgan_bad_op")
    msg = str(e.value)
    assert "\n" not in msg and "error" in msg and str(tmp_path / "ext" / "dcgan_bad_op" / "build.log") in msg
