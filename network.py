"""The DCGAN generator and discriminator of the tutorial (Radford et al. 2015), for 64x64 RGB faces.

    G: z [B, nz, 1, 1] -> image [B, 3, 64, 64] in [-1, 1] (tanh)
    D: image [B, 3, 64, 64] -> probability that it is real, [B] in (0, 1) (sigmoid)

BatchNorm momentum is 0.5 everywhere (Paddle's convention: running = 0.5 * running + 0.5 * batch) and
LeakyReLU's slope 0.2, as the tutorial says; weights start as weightInit.py says.

On the CPU, in float32 eager mode, the convolutions run on oneDNN (onednn_conv/, built once per machine) when it
is available; elsewhere (GPU, static graphs, DCGAN_ONEDNN=0, no compiler or headers) on Paddle's own kernels.
Same layers, parameters and state dicts either way; `conv_backend()` says which runs.
"""

from __future__ import annotations

import utils  # noqa: F401  (sets CPU thread defaults before paddle loads)
import paddle
import paddle.nn as nn

from weightInit import bn_bias_attr, bn_weight_attr, conv_weight_attr

try:
    import onednn_conv
except ImportError:  # network.py copied without its folder: Paddle's kernels
    onednn_conv = None

BN_MOMENTUM = 0.5
LEAKY_SLOPE = 0.2


# ---------------------------------------------------------------------------------------------
# convolution backend: oneDNN on CPU float32 eager tensors when onednn_conv is available, else Paddle's kernels


def _use_onednn(x: paddle.Tensor) -> bool:
    return (onednn_conv is not None and paddle.in_dynamic_mode() and x.dtype == paddle.float32
            and x.place.is_cpu_place() and onednn_conv.available())  # fmt: skip


def conv_backend(device: str | None = None) -> str:
    """Which convolutions G and D run on `device` (default: Paddle's current device), for a start line:
    'oneDNN 3.6.2 (onednn_conv)', or 'Paddle' and why not oneDNN. Builds or loads onednn_conv on first use."""
    device = device or paddle.get_device()
    if not device.startswith("cpu"):
        return f"Paddle ({device.split(':')[0]})"
    if onednn_conv is None:
        return "Paddle (onednn_conv/ not found)"
    if not onednn_conv.available():
        return f"Paddle (oneDNN {onednn_conv.status()})"
    return f"{onednn_conv.status()} (onednn_conv)"


class Conv2D(nn.Conv2D):
    """nn.Conv2D (square kernel, no bias) whose forward runs on oneDNN where `_use_onednn` says so."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, **kw):
        super().__init__(cin, cout, kernel, stride, padding, bias_attr=False, **kw)
        self._sp = stride, padding

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return onednn_conv.conv2d(x, self.weight, *self._sp) if _use_onednn(x) else super().forward(x)


class Conv2DTranspose(nn.Conv2DTranspose):
    """nn.Conv2DTranspose (square kernel, no bias) whose forward runs on oneDNN where `_use_onednn` says so."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, **kw):
        super().__init__(cin, cout, kernel, stride, padding, bias_attr=False, **kw)
        self._sp = stride, padding

    def forward(self, x: paddle.Tensor, output_size=None) -> paddle.Tensor:
        if output_size is None and _use_onednn(x):
            return onednn_conv.conv2d_transpose(x, self.weight, *self._sp)
        return super().forward(x, output_size)


def _bn(channels: int) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(channels, momentum=BN_MOMENTUM, weight_attr=bn_weight_attr(), bias_attr=bn_bias_attr())


def _up(cin: int, cout: int, stride: int = 2, padding: int = 1) -> nn.Conv2DTranspose:
    return Conv2DTranspose(cin, cout, 4, stride, padding, weight_attr=conv_weight_attr())


def _down(cin: int, cout: int, stride: int = 2, padding: int = 1) -> nn.Conv2D:
    return Conv2D(cin, cout, 4, stride, padding, weight_attr=conv_weight_attr())


class Generator(nn.Layer):
    def __init__(self, nz: int = 100, ngf: int = 64):
        super().__init__()
        self.nz, self.ngf = nz, ngf
        self.main = nn.Sequential(
            _up(nz, ngf * 8, stride=1, padding=0), _bn(ngf * 8), nn.ReLU(),  # (ngf*8) x 4 x 4
            _up(ngf * 8, ngf * 4), _bn(ngf * 4), nn.ReLU(),  # (ngf*4) x 8 x 8
            _up(ngf * 4, ngf * 2), _bn(ngf * 2), nn.ReLU(),  # (ngf*2) x 16 x 16
            _up(ngf * 2, ngf), _bn(ngf), nn.ReLU(),  # ngf x 32 x 32
            _up(ngf, 3), nn.Tanh(),  # 3 x 64 x 64
        )  # fmt: skip

    def forward(self, z: paddle.Tensor) -> paddle.Tensor:
        return self.main(z)


class Discriminator(nn.Layer):
    def __init__(self, ndf: int = 64):
        super().__init__()
        self.ndf = ndf
        self.main = nn.Sequential(
            _down(3, ndf), nn.LeakyReLU(LEAKY_SLOPE),  # ndf x 32 x 32 (no BN on the input layer)
            _down(ndf, ndf * 2), _bn(ndf * 2), nn.LeakyReLU(LEAKY_SLOPE),  # (ndf*2) x 16 x 16
            _down(ndf * 2, ndf * 4), _bn(ndf * 4), nn.LeakyReLU(LEAKY_SLOPE),  # (ndf*4) x 8 x 8
            _down(ndf * 4, ndf * 8), _bn(ndf * 8), nn.LeakyReLU(LEAKY_SLOPE),  # (ndf*8) x 4 x 4
            _down(ndf * 8, 1, stride=1, padding=0), nn.Sigmoid(),  # 1 x 1 x 1
        )  # fmt: skip

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.main(x).flatten()  # [B]


def bce_loss(prob: paddle.Tensor, label: float) -> paddle.Tensor:
    """Binary cross-entropy of D's probabilities against a constant label, computed in float32
    (under float16 autocast log(1 - p) loses the small probabilities that matter)."""
    prob = prob.astype("float32")
    return nn.functional.binary_cross_entropy(prob, paddle.full_like(prob, label))


def parameter_count(model: nn.Layer, trainable_only: bool = True) -> int:
    return sum(int(p.size) for p in model.parameters() if (p.trainable or not trainable_only))


# ---------------------------------------------------------------------------------------------
# generator.pdparams: everything generator.py needs, without train.py's config or optimizer state

GENERATOR_FORMAT = "dcgan-faces-paddle/generator"


def generator_payload(G: Generator, state_dict: dict | None = None) -> dict:
    """The dict saved as generator.pdparams: G's weights (or `state_dict`, e.g. the EMA weights)
    plus the architecture settings needed to rebuild it."""
    return {"format": GENERATOR_FORMAT, "version": 1, "nz": G.nz, "ngf": G.ngf,
            "state_dict": state_dict if state_dict is not None else G.state_dict()}  # fmt: skip


def load_generator(path: str, use_ema: bool = True) -> Generator:
    """Rebuild G from generator.pdparams, or from train.py's checkpoint.pdparams (its EMA weights when
    it has them and `use_ema`). Raises utils.UserError, one line naming the file, on any problem."""
    import os

    from utils import UserError

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint (looked for {os.path.abspath(path)}); train first "
                        "(python train.py writes output/generator.pdparams)")  # fmt: skip
    try:
        ckpt = paddle.load(path)
    except Exception as e:  # paddle.load raises many types (pickle, EOF, unicode) on foreign files
        raise UserError(f"{path}: not a Paddle checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a dcgan-faces-paddle checkpoint (holds a {type(ckpt).__name__})")
    if ckpt.get("format") == GENERATOR_FORMAT:
        nz, ngf, state = ckpt.get("nz"), ckpt.get("ngf"), ckpt.get("state_dict")
    elif "G" in ckpt and isinstance(ckpt.get("config"), dict):  # train.py's full checkpoint
        nz, ngf = ckpt["config"].get("nz"), ckpt["config"].get("ngf")
        state = ckpt["G_ema"] if use_ema and ckpt.get("G_ema") else ckpt["G"]
    else:
        raise UserError(f"{path}: not a dcgan-faces-paddle generator checkpoint (keys: {', '.join(map(str, list(ckpt)[:6]))})")
    if not isinstance(nz, int) or not isinstance(ngf, int) or not isinstance(state, dict):
        raise UserError(f"{path}: generator checkpoint lacks nz, ngf or its weights")
    G = Generator(nz=nz, ngf=ngf)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise UserError(f"{path}: generator weights are missing {len(missing)} tensors (first: {missing[0]})")
    for k, v in expected.items():
        shape = getattr(state[k], "shape", None)
        if shape is None or list(shape) != list(v.shape):
            found = "no shape" if shape is None else f"shape {list(shape)}"
            raise UserError(f"{path}: weight {k} has {found}, expected {list(v.shape)} for nz={nz}, ngf={ngf}")
    G.set_state_dict(state)
    G.eval()
    return G
