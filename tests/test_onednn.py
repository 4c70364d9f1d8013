"""onednn_conv: the oneDNN convolutions match Paddle's kernels on every layer of network.py, forward and backward;
training with them is bit-identical run to run; DCGAN_ONEDNN=0 and a failed build fall back to Paddle's kernels."""

import contextlib
import os
import subprocess
import sys
import threading
from subprocess import PIPE

import numpy as np
import paddle
import pytest

import network
import onednn_conv
from conftest import ROOT
from network import Discriminator, Generator

needs_onednn = pytest.mark.skipif(not onednn_conv.available(), reason=f"oneDNN ops not built: {onednn_conv.status()}")
SCOPED = ("dnnl_conv_fwd", "dnnl_conv_bwd_data")  # the ops whose last attribute is the frozen-weights scope
# where each op's nhwc attribute sits, from the end (bwd_data: then gemm and the scope; bwd_weights: then taps)
NHWC_AT = {"dnnl_conv_fwd": -2, "dnnl_conv_bwd_data": -3, "dnnl_conv_bwd_weights": -2, "dnnl_bn_fwd": -1,
           "dnnl_bn_bwd": -1}  # fmt: skip


def conv_inputs(ngf: int, ndf: int, nz: int = 100, batch: int = 2):
    """Each conv layer of G and D with the input shape it sees, traced in call order (10 layers)."""
    G, D = Generator(nz=nz, ngf=ngf), Discriminator(ndf=ndf)
    seen = []
    convs = [m for net in (G, D) for m in net.sublayers() if isinstance(m, (network.Conv2D, network.Conv2DTranspose))]
    hooks = [m.register_forward_pre_hook(lambda layer, inputs: seen.append((layer, inputs[0].shape))) for m in convs]
    with paddle.no_grad(), _env("DCGAN_ONEDNN", "0"):  # NCHW shapes whatever the fusions
        D(G(paddle.zeros([batch, nz, 1, 1])))
    for h in hooks:
        h.remove()
    return seen


def close(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the reference's largest magnitude (floors at an absolute scale of 1)."""
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def nhwc(fn):
    """fn on [n, h, w, c] tensors, seen from NCHW: transposed in and out (autograd goes through the transposes)."""
    return lambda x: fn(x.transpose([0, 2, 3, 1])).transpose([0, 3, 1, 2])


@needs_onednn
@pytest.mark.parametrize("ngf", [64, 8])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_every_layer_matches_paddle_forward_and_backward(ngf, layout):
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
            if not use:
                y = super(type(layer), layer).forward(x)
            else:
                y = nhwc(lambda t, layer=layer: layer(t, nhwc=True))(x) if layout == "nhwc" else layer(x)
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
    log = onednn_conv.cache_folder(tmp_path / "ext", "dcgan_bad_op", onednn_conv.cache_key(bad)).name + ".build.log"
    assert "\n" not in msg and "error" in msg and str(tmp_path / "ext" / log) in msg
    assert (tmp_path / "ext" / log).is_file() and [p.name for p in (tmp_path / "ext").iterdir() if p.is_dir()] == []


# ---------------------------------------------------------------------------------------------
# the build cache: a folder per environment key, installed atomically, built once by processes started together

_CONV = """
import numpy as np, paddle, onednn_conv
assert onednn_conv.available(), onednn_conv.status()
x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32"))
w = paddle.to_tensor(np.random.default_rng(1).standard_normal((4, 3, 4, 4)).astype("float32"))
y, ref = onednn_conv.conv2d(x, w, 2, 1), paddle.nn.functional.conv2d(x, w, stride=2, padding=1)
print(float(np.abs(y.numpy() - ref.numpy()).max()), y.numpy().tobytes().hex()[:64])
"""


@pytest.mark.skipif(onednn_conv.include_dir() is None, reason="no oneDNN headers (pip install onednn-devel-cpu-iomp)")
def test_processes_started_together_on_a_cold_cache_build_once_and_all_load(tmp_path):
    ext = tmp_path / "ext"  # a cold cache, as on a machine's first distributed launch
    env = dict(os.environ, PADDLE_EXTENSION_DIR=str(ext))
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONV], cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-800:] for o in outs]
    assert len({o[0] for o in outs}) == 1  # the same library, the same numbers
    assert float(outs[0][0].split()[0]) < 1e-4  # and Paddle's
    assert sum("compiling the oneDNN convolution ops" in o[1] for o in outs) == 1  # built once
    folders = sorted(p.name for p in ext.iterdir() if p.is_dir())
    assert folders == [onednn_conv.cache_folder(ext, onednn_conv.NAME, onednn_conv.cache_key()).name]  # no temp left


def test_another_environment_gets_its_own_folder_and_evicts_none(tmp_path, monkeypatch):
    compiled, loaded = [], []

    def fake_compile(source, tmp, name, inc, key, final):  # what load() leaves: tmp/<name>/<name>.so
        (tmp / name).mkdir()
        (tmp / name / f"{name}.so").write_bytes(b"")
        compiled.append(final)
        return f"ops built for {final.name}"

    monkeypatch.setattr(onednn_conv, "_compile", fake_compile)
    monkeypatch.setattr(onednn_conv, "_load_built", lambda own, name: loaded.append(own) or f"ops from {own}")
    monkeypatch.setattr(onednn_conv, "include_dir", lambda: str(tmp_path))  # headers are part of the key: fixed
    ext = tmp_path / "ext"
    first = onednn_conv.build(directory=ext)
    monkeypatch.setattr(onednn_conv, "_compiler_id", lambda: ["/usr/bin/other-g++", "other 1.0"])
    second = onednn_conv.build(directory=ext)
    assert first != second and len(compiled) == 2 and compiled[0] != compiled[1]
    assert sorted(p for p in ext.iterdir() if p.is_dir()) == sorted(compiled)  # both kept, no temp folder left
    assert all((c / onednn_conv.STAMP).is_file() for c in compiled)
    assert onednn_conv.build(directory=ext) == f"ops from {compiled[1] / onednn_conv.NAME}"  # cached: loaded
    assert len(compiled) == 2 and loaded == [compiled[1] / onednn_conv.NAME]


# ---------------------------------------------------------------------------------------------
# what follows the convolutions: activations, BatchNorm (+ activation), fused on oneDNN


def block_inputs(ngf: int, batch: int = 2):
    """Every layer of G and D with its input shape and the layer after it, traced in call order."""
    G, D = Generator(nz=100, ngf=ngf), Discriminator(ndf=ngf)
    seen, hooks = [], []
    for net in (G, D):
        mods = list(net.main)
        for i, m in enumerate(mods):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            hook = m.register_forward_pre_hook(
                lambda layer, inputs, nxt=nxt: seen.append((layer, nxt, inputs[0].shape))
            )
            hooks.append(hook)
    with paddle.no_grad(), _env("DCGAN_ONEDNN", "0"):  # Paddle's path calls every layer
        D(G(paddle.zeros([batch, 100, 1, 1])))
    for h in hooks:
        h.remove()
    return seen


class _env:
    """An environment variable set for a block of code."""

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def __enter__(self):
        import os

        self.old = os.environ.get(self.name)
        os.environ[self.name] = self.value

    def __exit__(self, *exc):
        import os

        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old


def run_block(fn, x0: np.ndarray, params: list, seed: int = 1):
    """fn(x) forward, then the gradients of x and `params` for a random output gradient: numpy arrays."""
    x = paddle.to_tensor(x0, stop_gradient=False)
    y = fn(x)
    dy = paddle.to_tensor(np.random.default_rng(seed).standard_normal(y.shape).astype("float32"))
    grads = paddle.grad(y, [x, *params], dy)
    return [y.numpy()] + [g.numpy() for g in grads]


def paddle_act(act_layer):
    return act_layer if act_layer is not None else (lambda t: t)


@needs_onednn
@pytest.mark.parametrize("ngf", [64, 8])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_blocks_match_paddles_kernels(ngf, mode):
    """Every fusion point of G and D (convolution + activation post-op, BatchNorm + activation with and without
    fuse_norm_relu, activations alone), on NCHW and on NHWC tensors (and Paddle's own BatchNorm on NHWC, the "nhwc"
    fusion's path without "bn"): forward, input gradient and parameter gradients within 1e-5 of Paddle's own NCHW
    kernels, and the running statistics after a training forward equal."""
    rng = np.random.default_rng(0)
    checked = {}
    for layer, nxt, shape in block_inputs(ngf):
        layer.train() if mode == "train" else layer.eval()
        x0 = rng.standard_normal(shape).astype("float32")
        for lever, fused, ref, params in fusion_cases(layer, nxt, mode):
            stats = []
            results = []
            for fn in (fused, ref):
                if isinstance(layer, network.BatchNorm2D):  # the same running statistics before each
                    layer._mean.set_value(np.full(layer._mean.shape, 0.1, "float32"))
                    layer._variance.set_value(np.full(layer._variance.shape, 0.9, "float32"))
                results.append(run_block(fn, x0, params))
                if isinstance(layer, network.BatchNorm2D):
                    stats.append((layer._mean.numpy(), layer._variance.numpy()))
            names = ["forward", "input grad"] + [f"grad of {p.name}" for p in params]
            for name, a, b in zip(names, *results, strict=True):
                assert a.shape == b.shape
                assert close(a, b) < 1e-5, f"{lever} {layer} ({mode}): {name} differs by {close(a, b):.2e}"
            if stats:
                for a, b in zip(*stats, strict=True):
                    assert close(a, b) < 1e-6, f"{layer}: running statistics differ by {close(a, b):.2e}"
                if mode == "eval":
                    assert np.all(stats[0][0] == np.float32(0.1)), "eval mode must not touch the running mean"
            checked[lever] = checked.get(lever, 0) + 1
    bn_layers, relu_bn = 4 + 3, 4 if mode == "train" else 0
    expect = {"postop": 3, "bn": bn_layers, "act": 10, "normrelu": relu_bn}
    expect |= {"postop nhwc": 3, "bn nhwc": bn_layers, "normrelu nhwc": relu_bn, "paddle bn nhwc": bn_layers}
    assert checked == {k: v for k, v in expect.items() if v}


def fusion_cases(layer, nxt, mode: str) -> list[tuple]:
    """(lever, fused fn, reference fn, params) for one layer of G or D and the layer after it: each fusion that
    applies there, on NCHW and on NHWC tensors."""
    act = onednn_conv.act_of(nxt)
    cases = []
    if isinstance(layer, (network.Conv2D, network.Conv2DTranspose)) and act:
        # the reference: the same oneDNN convolution (tested against Paddle's above), then Paddle's activation
        # kernel; against Paddle's convolution a pre-activation within rounding of 0 can take the other side of
        # LeakyReLU's kink, and its gradient jumps there by design
        ref = lambda x, layer=layer, nxt=nxt: nxt(layer(x))  # noqa: E731
        fused = lambda x, layer=layer, act=act, **kw: layer(x, act=act, **kw)  # noqa: E731
        cases += [("postop", fused, ref, [layer.weight])]
        cases += [("postop nhwc", nhwc(lambda x, f=fused: f(x, nhwc=True)), ref, [layer.weight])]
    if isinstance(layer, network.BatchNorm2D):
        ref = lambda x, layer=layer, nxt=nxt: nxt(paddle.nn.BatchNorm2D.forward(layer, x))  # noqa: E731
        params = [layer.weight, layer.bias]
        fused = lambda x, layer=layer, act=act, **kw: layer(x, act=act, **kw)  # noqa: E731
        cases += [("bn", fused, ref, params), ("bn nhwc", nhwc(lambda x, f=fused: f(x, nhwc=True)), ref, params)]
        own = lambda x, layer=layer, nxt=nxt: nxt(layer.paddle_forward(x, nhwc=True))  # noqa: E731
        cases += [("paddle bn nhwc", nhwc(own), ref, params)]
        if act == (1, 0.0) and mode == "train":
            fnr = lambda x, layer=layer, **kw: layer(x, act=(1, 0.0), fnr=True, **kw)  # noqa: E731
            cases += [("normrelu", fnr, ref, params)]
            cases += [("normrelu nhwc", nhwc(lambda x, f=fnr: f(x, nhwc=True)), ref, params)]
    own = onednn_conv.act_of(layer)
    if own:
        cases.append(("act", lambda x, own=own: onednn_conv.activation(x, own), layer, []))
    return cases


@needs_onednn
def test_running_statistics_follow_paddles_formula():
    """Training mode: running = 0.5 * running + 0.5 * batch statistic, with the biased variance (Paddle 3.3.1's CPU
    kernel: N*H*W in the denominator, for the normalisation too), eps 1e-5."""
    bn = network._bn(6)
    assert isinstance(bn, network.BatchNorm2D) and bn._momentum == 0.5 and bn._epsilon == 1e-5
    x0 = np.random.default_rng(0).standard_normal((4, 6, 5, 5)).astype("float32") * 2 + 1
    m0, v0 = bn._mean.numpy().copy(), bn._variance.numpy().copy()
    y = onednn_conv.batch_norm(paddle.to_tensor(x0), bn).numpy()
    x = x0.astype(np.float64)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))  # biased
    np.testing.assert_allclose(bn._mean.numpy(), 0.5 * m0 + 0.5 * mean, rtol=0, atol=2e-6)
    np.testing.assert_allclose(bn._variance.numpy(), 0.5 * v0 + 0.5 * var, rtol=0, atol=4e-6)
    w, b = bn.weight.numpy()[:, None, None], bn.bias.numpy()[:, None, None]
    expect = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * w + b
    np.testing.assert_allclose(y, expect, rtol=0, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize(
    "fuse",
    "none postop bn act bn,act postop,bn,act,normrelu nhwc nhwc,gemm nhwc,act nhwc,bn,act all".split(),
)
def test_whole_networks_match_with_each_fusion(fuse):
    """G and D end to end, training mode, each fusion alone and all: outputs, every parameter gradient and the
    running statistics agree with Paddle's kernels (DCGAN_ONEDNN=0)."""
    import os

    results = []
    for env in ({"DCGAN_ONEDNN": "1", onednn_conv.FUSE_ENV: fuse}, {"DCGAN_ONEDNN": "0"}):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            paddle.seed(5)
            G, D = Generator(nz=16, ngf=8), Discriminator(ndf=8)
            z = paddle.to_tensor(np.random.default_rng(2).standard_normal((4, 16, 1, 1)).astype("float32"))
            out = D(G(z))
            out.sum().backward()
            results.append(
                {"out": out.numpy()}
                | {f"{n}.{k}": v.numpy() for n, net in (("G", G), ("D", D)) for k, v in net.state_dict().items()}
                | {
                    f"{n}.{k}.grad": p.grad.numpy()
                    for n, net in (("G", G), ("D", D))
                    for k, p in net.named_parameters()
                    if not p.stop_gradient
                }
            )
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    fused, ref = results
    assert fused.keys() == ref.keys()
    for k in ref:
        assert close(fused[k], ref[k]) < 1e-4, f"{k} differs by {close(fused[k], ref[k]):.2e}"


# (n, input channels, output channels, kernel, stride, padding, side) of transposed convolutions that gemm runs as a
# matmul: few output channels (G's last layer at ngf 64 and 8, then other kernels, strides, paddings and odd sides)
# or a 1x1 input (G's first layer at ngf 64 and 8; D's last layer's input gradient at ngf 64)
AS_MATMUL = [(3, 64, 3, 4, 2, 1, 32), (2, 8, 3, 4, 2, 1, 32), (3, 5, 1, 3, 1, 1, 7), (1, 8, 4, 4, 1, 0, 1),
             (2, 6, 2, 3, 2, 0, 5), (2, 7, 4, 5, 3, 2, 6),
             (4, 100, 512, 4, 1, 0, 1), (2, 100, 64, 4, 1, 0, 1), (3, 1, 512, 4, 1, 0, 1)]  # fmt: skip


@needs_onednn
@pytest.mark.parametrize("n, cin, cout, k, s, p, side", AS_MATMUL)
def test_gemm_matches_paddle(n, cin, cout, k, s, p, side):
    """gemm: the transposed convolution's output and the convolution's input gradient with <= 4 channels or from a
    1x1 map, as a matmul + col2im, within 1e-5 of Paddle's kernels, and the same bits on every call."""
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    x0 = rng.standard_normal((n, cin, side, side)).astype("float32")
    w = paddle.to_tensor(rng.standard_normal((cin, cout, k, k)).astype("float32"))
    ref = paddle.nn.functional.conv2d_transpose(paddle.to_tensor(x0), w, stride=s, padding=p).numpy()
    up = nhwc(lambda t: onednn_conv.conv2d_transpose(t, w, s, p, nhwc=True, gemm=True))
    runs = [up(paddle.to_tensor(x0)).numpy() for _ in range(2)]
    assert runs[0].shape == ref.shape and close(runs[0], ref) < 1e-5
    assert runs[0].tobytes() == runs[1].tobytes()
    # the same matmul as the input gradient of the convolution [cout <- cin] that this one is the adjoint of
    y0 = paddle.to_tensor(ref, stop_gradient=False)
    dy = paddle.to_tensor(x0)
    want = paddle.grad(paddle.nn.functional.conv2d(y0, w, stride=s, padding=p), y0, dy)[0].numpy()
    y1 = paddle.to_tensor(ref, stop_gradient=False)
    got = paddle.grad(nhwc(lambda t: onednn_conv.conv2d(t, w, s, p, nhwc=True, gemm=True))(y1), y1, dy)[0].numpy()
    assert close(got, want) < 1e-5


# (n, input channels, output channels, kernel, stride, padding, side) of convolutions whose weight gradient taps
# computes (output maps of at most 4x4): D's 4th layer at ngf 64, 32 and 8 (G's 2nd is its transpose), G's first
# layer (as the convolution it is the transpose of: 100 output channels, a 1x1 map) and D's last (1 channel) at ngf
# 64 and 8, then other kernels, strides, paddings and odd sides, and taps that only ever read padding (side 2)
PER_TAP = [(4, 256, 512, 4, 2, 1, 8), (3, 128, 256, 4, 2, 1, 8), (3, 32, 64, 4, 2, 1, 8), (3, 512, 100, 4, 1, 0, 4),
           (2, 64, 100, 4, 1, 0, 4), (3, 512, 1, 4, 1, 0, 4), (2, 64, 1, 4, 1, 0, 4), (2, 32, 13, 3, 1, 1, 4),
           (2, 64, 8, 5, 3, 2, 9), (2, 32, 8, 4, 2, 1, 2)]  # fmt: skip


@needs_onednn
@pytest.mark.parametrize("n, cin, cout, k, s, p, side", PER_TAP)
def test_taps_matches_paddle(n, cin, cout, k, s, p, side):
    """taps: the weight gradient as one matrix product per kernel tap (forced: the AVX-512 tile where the CPU has
    it, and the portable tile) within 1e-5 of Paddle's kernel and the same bits on every call; through conv2d as
    network.py calls it (taps on: the products where the CPU has AVX-512, oneDNN's kernel elsewhere) within 1e-5
    too."""
    rng = np.random.default_rng(k * 1000 + s * 100 + p * 10 + side)
    x0 = rng.standard_normal((n, cin, side, side)).astype("float32")
    w = paddle.to_tensor(rng.standard_normal((cout, cin, k, k)).astype("float32"), stop_gradient=False)
    y = paddle.nn.functional.conv2d(paddle.to_tensor(x0), w, stride=s, padding=p)
    dy0 = rng.standard_normal(y.shape).astype("float32")
    want = paddle.grad(y, w, paddle.to_tensor(dy0))[0].numpy()
    x_h, dy_h = (paddle.to_tensor(a.transpose(0, 2, 3, 1)) for a in (x0, dy0))
    for taps in (2, 3):  # the AVX-512 tile where the CPU has it, and the portable one
        runs = [onednn_conv._ops.dnnl_conv_bwd_weights(x_h, dy_h, s, p, k, 1, taps).numpy() for _ in range(2)]
        assert runs[0].shape == want.shape and close(runs[0], want) < 1e-5
        assert runs[0].tobytes() == runs[1].tobytes()
    y = nhwc(lambda t: onednn_conv.conv2d(t, w, s, p, nhwc=True, taps=True))(paddle.to_tensor(x0))
    assert close(paddle.grad(y, w, paddle.to_tensor(dy0))[0].numpy(), want) < 1e-5


def verbose_execs(script: str) -> list[tuple[str, list[str]]]:
    """Run `script` with oneDNN's log on (ONEDNN_VERBOSE); per block it opens with a line "@@ <head>", the head and
    the log lines of the primitives executed in it."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    blocks = []
    for block in out.stdout.split("@@ ")[1:]:
        head, *lines = block.splitlines()
        blocks.append((head, [line for line in lines if ",exec," in line]))
    return blocks


_TAPS_VERBOSE = """
import numpy as np, paddle, onednn_conv
assert onednn_conv.available(), onednn_conv.status()
for cin, side, taps, layout in ((32, 8, 2, 1), (32, 8, 3, 1), (32, 8, 0, 1), (16, 8, 2, 1), (32, 16, 2, 1),
                                (32, 8, 2, 0)):
    print("@@", cin, side, taps, layout, flush=True)
    o = side // 2
    x = paddle.to_tensor(np.ones((2, side, side, cin) if layout else (2, cin, side, side), "float32"))
    dy = paddle.to_tensor(np.ones((2, o, o, 8) if layout else (2, 8, o, o), "float32"))
    onednn_conv._ops.dnnl_conv_bwd_weights(x, dy, 2, 1, 4, layout, taps).numpy()
"""


@needs_onednn
def test_taps_runs_no_weight_gradient_primitive():
    """oneDNN's own log: with taps, a weight gradient on NHWC with 32 input channels and a 4x4 map runs no
    convolution primitive; without taps, with 16 input channels, an 8x8 map or on NCHW, oneDNN's kernel."""
    ran = {head: sum(",convolution," in line for line in execs) for head, execs in verbose_execs(_TAPS_VERBOSE)}
    assert ran == {"32 8 2 1": 0, "32 8 3 1": 0, "32 8 0 1": 1, "16 8 2 1": 1, "32 16 2 1": 1, "32 8 2 0": 1}


_VERBOSE = """
import numpy as np, paddle, onednn_conv
assert onednn_conv.available(), onednn_conv.status()
for cout, gemm, side, s, p in ((3, 1, 8, 2, 1), (3, 0, 8, 2, 1), (4, 1, 8, 2, 1), (5, 1, 8, 2, 1), (32, 1, 1, 1, 0),
                              (32, 0, 1, 1, 0), (32, 1, 2, 1, 0)):
    print("@@", cout, gemm, side, flush=True)
    x = paddle.to_tensor(np.ones((2, side, side, 16), "float32"))  # [n, h, w, c]
    w = paddle.to_tensor(np.ones((16, cout, 4, 4), "float32"))
    onednn_conv.conv2d_transpose(x, w, s, p, nhwc=True, gemm=bool(gemm)).numpy()
    onednn_conv.conv2d_transpose(x.transpose([0, 3, 1, 2]), w, s, p, gemm=bool(gemm)).numpy()  # NCHW: never
"""


@needs_onednn
def test_gemm_runs_a_matmul_for_few_channels_or_a_1x1_input():
    """oneDNN's own log (ONEDNN_VERBOSE): with gemm, a transposed convolution on NHWC with <= 4 output channels or a
    1x1 input runs a matmul and no convolution primitive; without gemm, with 5 channels, a 2x2 input with 32
    channels, or on NCHW, the convolution kernel."""
    ran = {}
    for head, execs in verbose_execs(_VERBOSE):
        kinds = [line.split(",")[5] for line in execs]
        ran[head] = (kinds.count("matmul"), kinds.count("convolution"))
    assert ran == {"3 1 8": (1, 1), "3 0 8": (0, 2), "4 1 8": (1, 1), "5 1 8": (0, 2), "32 1 1": (1, 1),
                   "32 0 1": (0, 2), "32 1 2": (0, 2)}  # fmt: skip


@needs_onednn
def test_fused_ops_do_run(monkeypatch):
    calls = []
    for op in onednn_conv.OPS:
        orig = getattr(onednn_conv._ops, op)
        act = slice(NHWC_AT.get(op, -1) - 2, NHWC_AT.get(op, -1))  # (act, alpha) just before nhwc
        monkeypatch.setattr(onednn_conv._ops, op, lambda *a, o=orig, op=op, i=act: calls.append((op, a[i])) or o(*a))
    monkeypatch.setenv(onednn_conv.FUSE_ENV, "postop,bn,act")
    G, D = Generator(nz=16, ngf=8), Discriminator(ndf=8)
    D(G(paddle.randn([2, 16, 1, 1]))).sum().backward()
    names = [c[0] for c in calls]
    assert names.count("dnnl_bn_fwd") == 7 and names.count("dnnl_bn_bwd") == 7  # every BN, with its activation
    assert "dnnl_eltwise_fwd" not in names  # all activations fused: post-ops or inside the BN op
    assert names.count("dnnl_eltwise_bwd") == 3  # the post-op activations' gradients (D first/last, G last)
    fused_fwd = [c[1] for c in calls if c[0] == "dnnl_conv_fwd" and c[1][0] != 0]
    assert sorted(fused_fwd) == [(1, pytest.approx(0.2)), (3, 0.0)]  # D's LeakyReLU and sigmoid as post-ops
    assert [c[1] for c in calls if c[0] == "dnnl_conv_bwd_data" and c[1][0] != 0] == [(2, 0.0)]  # G's tanh


def test_fallback_is_paddles_own_layers(monkeypatch):
    """DCGAN_ONEDNN=0: no oneDNN op at all; G and D run the plain nn.Sequential of Paddle's layers."""
    monkeypatch.setenv("DCGAN_ONEDNN", "0")

    def boom(*a):
        raise AssertionError("oneDNN op called with DCGAN_ONEDNN=0")

    for cls in ("_Conv2D", "_Conv2DTranspose", "_BatchNorm", "_Eltwise"):
        monkeypatch.setattr(getattr(onednn_conv, cls), "apply", boom)
    G, D = Generator(nz=16, ngf=8), Discriminator(ndf=8)
    D(G(paddle.randn([2, 16, 1, 1]))).sum().backward()
    assert all(isinstance(m, paddle.nn.BatchNorm2D) for m in G.main if "BatchNorm" in type(m).__name__)


@needs_onednn
def test_nhwc_chain_runs_every_op_on_nhwc_and_keeps_nchw_outside(monkeypatch):
    """DCGAN_ONEDNN_FUSE=nhwc: every convolution and BatchNorm op of G and D, forward and backward, runs on [n, h, w,
    c] tensors; G's image, D's input and D's output keep their shapes."""
    calls = []
    ops = ("dnnl_conv_fwd", "dnnl_conv_bwd_data", "dnnl_conv_bwd_weights", "dnnl_bn_fwd", "dnnl_bn_bwd")
    for op in ops:
        orig = getattr(onednn_conv._ops, op)
        i = NHWC_AT[op]
        monkeypatch.setattr(onednn_conv._ops, op, lambda *a, o=orig, op=op, i=i: calls.append((op, a[i])) or o(*a))
    monkeypatch.setenv(onednn_conv.FUSE_ENV, "nhwc,bn")
    G, D = Generator(nz=16, ngf=8), Discriminator(ndf=8)
    img = G(paddle.randn([2, 16, 1, 1]))
    assert img.shape == [2, 3, 64, 64]
    out = D(img)
    assert out.shape == [2]
    out.sum().backward()
    assert {op for op, _ in calls} == set(ops)
    assert all(flag == 1 for _, flag in calls)


def test_fusions_reads_its_variable(monkeypatch):
    """DCGAN_ONEDNN_FUSE: unset or 'default' gives the default set ('default,x' adds to it), 'all' every fusion,
    'none' (or only unknown names) none, else the names given."""
    monkeypatch.delenv(onednn_conv.FUSE_ENV, raising=False)
    assert onednn_conv.fusions() == set(onednn_conv.DEFAULT_FUSIONS)
    for raw, want in [("default", set(onednn_conv.DEFAULT_FUSIONS)), ("Default, normrelu",
                      {*onednn_conv.DEFAULT_FUSIONS, "normrelu"}), ("all", set(onednn_conv.FUSIONS)), ("none", set()),
                      ("bogus", set()), ("nhwc, taps", {"nhwc", "taps"})]:  # fmt: skip
        monkeypatch.setenv(onednn_conv.FUSE_ENV, raw)
        assert onednn_conv.fusions() == want, raw


@needs_onednn
def test_a_layer_of_someone_elses_in_the_chain_keeps_it_nchw(monkeypatch):
    """A layer network.py does not know (here: a pass-through that records what it sees) turns the NHWC path off for
    its chain: it gets [n, c, h, w], as on a GPU; the outputs still match Paddle's kernels."""
    seen = []

    class Look(paddle.nn.Layer):
        def forward(self, x):
            seen.append(x.shape)
            return x

    monkeypatch.delenv(onednn_conv.FUSE_ENV, raising=False)
    assert "nhwc" in onednn_conv.fusions()  # the default
    G = Generator(nz=16, ngf=8)
    G.main = paddle.nn.Sequential(*list(G.main)[:3], Look(), *list(G.main)[3:])
    z = paddle.randn([2, 16, 1, 1])
    y = G(z)
    assert seen == [[2, 64, 4, 4]]  # ngf * 8 channels, NCHW
    with _env("DCGAN_ONEDNN", "0"):
        assert close(y.numpy(), G(z).numpy()) < 1e-5
    assert network._runs_nhwc(G.main[0]) and not network._runs_nhwc(Look())
    assert not network._runs_nhwc(paddle.nn.BatchNorm2D(4))  # Paddle's own class: not ours


def frozen_pair():
    """G and D (width 8) in eval mode with every parameter frozen, and a z that takes gradients (a z search)."""
    G, D = Generator(nz=16, ngf=8), Discriminator(ndf=8)
    for m in (G, D):
        m.eval()
        for p in m.parameters():
            p.stop_gradient = True
    z = paddle.randn([2, 16, 1, 1])
    z.stop_gradient = False
    return G, D, z


def search_passes(G, D, z, passes: int = 3) -> list[np.ndarray]:
    out = []
    for _ in range(passes):
        x = G(z)
        prob = D(x)
        (dz,) = paddle.grad((x.abs().sum() + prob.sum(),), [z])
        out += [x.numpy(), prob.numpy(), dz.numpy()]
    return out


@needs_onednn
@pytest.mark.parametrize("fuse", ["default", "none"])
def test_frozen_weights_give_the_same_bits(monkeypatch, fuse):
    """Inside onednn_conv.frozen_weights() (complete.py's z search) G's and D's outputs and the gradient in z are the
    ones outside it, bit for bit, on the default path and on the NCHW one."""
    if fuse == "none":
        monkeypatch.setenv(onednn_conv.FUSE_ENV, "none")
    G, D, z = frozen_pair()
    outside = search_passes(G, D, z)
    with network.frozen_weights():
        inside = search_passes(G, D, z)
    assert all(np.array_equal(a, b) for a, b in zip(outside, inside, strict=True))


@needs_onednn
def test_frozen_weights_are_reordered_once_per_scope_and_only_frozen_ones():
    """The scope's promise broken on purpose shows the reuse: a frozen weight changed inside the scope is not seen
    there (the reorder from the first pass is reused), and is seen after it and in the next scope; a parameter that
    takes gradients (training) is reordered at every call, in a scope or not."""
    G, _, z = frozen_pair()
    w = G.main[3].weight  # G's second transposed convolution
    with paddle.no_grad():
        before = G(z).numpy()
    with onednn_conv.frozen_weights(), paddle.no_grad():
        assert np.array_equal(G(z).numpy(), before)
        w.set_value(w.numpy() * 0.5)
        assert np.array_equal(G(z).numpy(), before)  # the weights reordered at the scope's first pass
    with paddle.no_grad():
        after = G(z).numpy()
    assert not np.allclose(after, before)
    with onednn_conv.frozen_weights(), paddle.no_grad():
        assert np.array_equal(G(z).numpy(), after)
    w.stop_gradient = False
    with onednn_conv.frozen_weights():
        G(z)
        w.set_value(w.numpy() * 2.0)
        assert np.array_equal(G(z).numpy(), before)  # not frozen: reordered again, the change is seen


@needs_onednn
def test_frozen_weights_scope_is_per_thread_and_complete_uses_it():
    import complete

    G, D, _ = frozen_pair()
    w, seen = G.main[0].weight, []
    with complete.frozen(G, D):
        assert onednn_conv._scope_of(w) != 0
        t = threading.Thread(target=lambda: seen.append(onednn_conv._scope_of(w)))
        t.start(), t.join()
    assert seen == [0] and onednn_conv._scope_of(w) == 0
    with onednn_conv.frozen_weights():
        outer = onednn_conv._scope_of(w)
        with onednn_conv.frozen_weights():
            assert onednn_conv._scope_of(w) not in (0, outer)  # a new scope: nothing reused from the outer one
        assert onednn_conv._scope_of(w) == outer


@needs_onednn
def test_a_backward_after_its_frozen_scope_reorders_the_weights_again():
    """A graph built in a scope and differentiated after it, once the weights have changed, gets what it would get
    with no scope at all (the weights as they are then), not the scope's kept reorder."""

    def late_gradient(scope) -> np.ndarray:
        paddle.seed(0)
        G, _, z = frozen_pair()
        with scope():
            paddle.grad((G(z).sum(),), [z])  # the backward direction's reorder, made in the scope
            x = G(z)
        w = G.main[3].weight
        w.set_value(w.numpy() * 0.5)
        return paddle.grad((x.sum(),), [z])[0].numpy()

    scoped, plain = late_gradient(onednn_conv.frozen_weights), late_gradient(contextlib.nullcontext)
    assert np.array_equal(scoped, plain)
