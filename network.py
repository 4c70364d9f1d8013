"""The DCGAN generator and discriminator of the tutorial (Radford et al. 2015), for 64x64 RGB faces.

    G: z [B, nz, 1, 1] -> image [B, 3, 64, 64] in [-1, 1] (tanh)
    D: image [B, 3, 64, 64] -> probability that it is real, [B] in (0, 1) (sigmoid); D(x, logits=True): before it

BatchNorm momentum is 0.5 everywhere (Paddle's convention: running = 0.5 * running + 0.5 * batch) and
LeakyReLU's slope 0.2, as the tutorial says; weights start as weightInit.py says.

On the CPU, in float32 eager mode, the convolutions, BatchNorm and activations run on oneDNN (onednn_conv/, built
once per machine) when it is available, each activation fused into the op before it (`_chain`); elsewhere (GPU,
static graphs, DCGAN_ONEDNN=0, no compiler or headers) on Paddle's own kernels. Same layers, parameters and state
dicts either way; `conv_backend()` says which runs.

Model files are modelfile.py's (load_generator, load_discriminator, GENERATOR_FILE and CHECKPOINT_FILE are importable
from here too); an old pickled .pdparams of your own converts with

    python network.py --convert output/generator.pdparams output/generator.safetensors --allow-pickle
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import utils
from utils import UserError

import paddle
import paddle.nn as nn

import device  # noqa: F401  (CPU thread defaults: set before the first computation, whatever was imported first)
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
    return (
        onednn_conv is not None
        and paddle.in_dynamic_mode()
        and x.dtype == paddle.float32
        and x.place.is_cpu_place()
        and onednn_conv.available()
    )


def conv_backend(place: str | None = None) -> str:
    """Which convolutions G and D run on `place` (default: Paddle's current device), for a start line:
    'oneDNN 3.6.2 (onednn_conv)', or 'Paddle' and why not oneDNN. Builds or loads onednn_conv on first use."""
    place = place or paddle.get_device()
    if not place.startswith("cpu"):
        return f"Paddle ({place.split(':')[0]})"
    if onednn_conv is None:
        return "Paddle (onednn_conv/ not found)"
    if not onednn_conv.available():
        return f"Paddle (oneDNN {onednn_conv.status()})"
    return f"{onednn_conv.status()} (onednn_conv)"


def frozen_weights():
    """A scope in which the frozen parameters (stop_gradient set) of the models run in it keep their values (the
    caller's promise): on oneDNN their weights are reordered into the convolutions' layout once instead of at every
    call (onednn_conv.frozen_weights); a no-op elsewhere. For many passes through fixed models (complete.py)."""
    return onednn_conv.frozen_weights() if onednn_conv is not None else contextlib.nullcontext()


class Conv2D(nn.Conv2D):
    """nn.Conv2D (square kernel, no bias) whose forward runs on oneDNN where `_use_onednn` says so; `act` (from
    `_chain`, oneDNN only): an activation fused in as a post-op."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, **kw):
        super().__init__(cin, cout, kernel, stride, padding, bias_attr=False, **kw)
        self._sp = stride, padding

    def forward(self, x: paddle.Tensor, act: tuple | None = None, nhwc: bool = False) -> paddle.Tensor:
        if _use_onednn(x):
            return onednn_conv.conv2d(x, self.weight, *self._sp, act=act, nhwc=nhwc)
        return super().forward(x)


class Conv2DTranspose(nn.Conv2DTranspose):
    """nn.Conv2DTranspose (square kernel, no bias) whose forward runs on oneDNN where `_use_onednn` says so; `act`
    as Conv2D's."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, **kw):
        super().__init__(cin, cout, kernel, stride, padding, bias_attr=False, **kw)
        self._sp = stride, padding

    def forward(
        self, x: paddle.Tensor, output_size=None, act: tuple | None = None, nhwc: bool = False
    ) -> paddle.Tensor:
        if output_size is None and _use_onednn(x):
            return onednn_conv.conv2d_transpose(x, self.weight, *self._sp, act=act, nhwc=nhwc)
        return super().forward(x, output_size)


class BatchNorm2D(nn.BatchNorm2D):
    """nn.BatchNorm2D whose forward runs on oneDNN where `_use_onednn` says so (NCHW, default use_global_stats):
    the same statistics and running-statistics update as Paddle's kernel; `act` (from `_chain`): an activation
    fused in. Same parameters and buffers as nn.BatchNorm2D."""

    def forward(
        self, x: paddle.Tensor, act: tuple | None = None, fnr: bool = False, nhwc: bool = False
    ) -> paddle.Tensor:
        if self._data_format == "NCHW" and self._use_global_stats is None and _use_onednn(x):
            return onednn_conv.batch_norm(x, self, act, fnr, nhwc)
        return super().forward(x)

    def paddle_forward(self, x: paddle.Tensor, nhwc: bool = False) -> paddle.Tensor:
        """nn.BatchNorm2D's forward on Paddle's kernel, x [n, h, w, c] when nhwc."""
        if not nhwc:
            return nn.BatchNorm2D.forward(self, x)
        return nn.functional.batch_norm(
            x, self._mean, self._variance, self.weight, self.bias, self.training, self._momentum, self._epsilon,
            data_format="NHWC", use_global_stats=self._use_global_stats,
        )  # fmt: skip


def _runs_nhwc(m: nn.Layer) -> bool:
    """Whether `_chain` may hand `m` a [n, h, w, c] tensor: our convolutions, our BatchNorm as _bn makes it, and the
    activations onednn_conv.act_of knows (elementwise)."""
    if isinstance(m, BatchNorm2D):
        return m._data_format == "NCHW" and m._use_global_stats is None
    return isinstance(m, (Conv2D, Conv2DTranspose)) or onednn_conv.act_of(m) is not None


def _chain(layers: nn.Sequential, x: paddle.Tensor) -> paddle.Tensor:
    """`layers(x)`; on oneDNN each activation runs inside the op before it (a convolution's post-op, the BatchNorm
    op) or on oneDNN's eltwise primitive, as onednn_conv.fusions() allows, and with "nhwc" the whole chain runs on
    [n, h, w, c] tensors (transposed once in and once out) when every layer can (`_runs_nhwc`). Each layer is still
    called as a layer (hooks see it, on the chain's layout), the activation layers excepted where they were fused."""
    if not _use_onednn(x):
        return layers(x)
    on, mods, i = onednn_conv.fusions(), list(layers), 0
    # oneDNN's kernels read and write [n, h, w, c] as they are: no reorder around every op; a layer of someone
    # else's in the chain (a test's, a user's) gets the NCHW tensor it expects
    nhwc = "nhwc" in on and all(_runs_nhwc(m) for m in mods)
    if nhwc:
        x = x.transpose([0, 2, 3, 1])
    while i < len(mods):
        m = mods[i]
        act = onednn_conv.act_of(mods[i + 1]) if i + 1 < len(mods) else None
        if act and isinstance(m, (Conv2D, Conv2DTranspose)) and "postop" in on:
            x, i = m(x, act=act, nhwc=nhwc), i + 2
        elif act and isinstance(m, BatchNorm2D) and {"bn", "act"} <= on:
            x, i = m(x, act=act, fnr="normrelu" in on and act == (1, 0.0) and m.training, nhwc=nhwc), i + 2
        elif isinstance(m, BatchNorm2D) and "bn" not in on:
            x, i = m.paddle_forward(x, nhwc), i + 1
        elif onednn_conv.act_of(m) and "act" in on:
            x, i = onednn_conv.activation(x, onednn_conv.act_of(m)), i + 1
        elif isinstance(m, (Conv2D, Conv2DTranspose, BatchNorm2D)):
            x, i = m(x, nhwc=nhwc), i + 1
        else:
            x, i = m(x), i + 1
    return x.transpose([0, 3, 1, 2]) if nhwc else x


def _bn(channels: int) -> nn.BatchNorm2D:
    return BatchNorm2D(channels, momentum=BN_MOMENTUM, weight_attr=bn_weight_attr(), bias_attr=bn_bias_attr())


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
        return _chain(self.main, z)


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

    def forward(self, x: paddle.Tensor, logits: bool = False) -> paddle.Tensor:
        """P(real) [B]; with logits=True the pre-sigmoid scores [B] (the last layer skipped), for
        bce_logits_loss."""
        return _chain(self.main[:-1] if logits else self.main, x).flatten()  # [B]


def bce_loss(prob: paddle.Tensor, label: float) -> paddle.Tensor:
    """Binary cross-entropy of D's probabilities against a constant label, computed in float32
    (under float16 autocast log(1 - p) loses the small probabilities that matter)."""
    prob = prob.astype("float32")
    return nn.functional.binary_cross_entropy(prob, paddle.full_like(prob, label))


def bce_logits_loss(logits: paddle.Tensor, label: float) -> paddle.Tensor:
    """bce_loss(sigmoid(logits), label), computed from the logits in float32 (binary_cross_entropy_with_logits:
    log-sum-exp, finite for every finite logit, and no kernel that checks its input: a NaN stays a NaN)."""
    logits = logits.astype("float32")
    return nn.functional.binary_cross_entropy_with_logits(logits, paddle.full_like(logits, label))


def parameter_count(model: nn.Layer, trainable_only: bool = True) -> int:
    return sum(int(p.size) for p in model.parameters() if (p.trainable or not trainable_only))


# ---------------------------------------------------------------------------------------------
# the model files are modelfile.py's; these names stay importable from network (README documents them)

_FROM_MODELFILE = ("load_generator", "load_discriminator", "GENERATOR_FILE", "CHECKPOINT_FILE")


def __getattr__(name: str):
    if name in _FROM_MODELFILE:  # looked up on use: modelfile imports this module when it builds a model
        import modelfile

        return getattr(modelfile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# python network.py --convert OLD.pdparams NEW.safetensors


@dataclass
class ConvertConfig:
    convert: tuple = field(
        default=("", ""),
        metadata={
            "help": "turn an old pickled generator.pdparams or checkpoint.pdparams (one you trust: it is "
            "unpickled) into "
            "safetensors",
            "metavar": ("OLD", "NEW"),
        },
    )
    allow_pickle: bool = field(
        default=False, metadata={"help": "required: OLD is unpickled, which runs any code it holds (only your own)"}
    )


def main(argv: list[str] | None = None) -> None:
    cfg = utils.parse_config(ConvertConfig, argv, description=__doc__)
    if not all(cfg.convert):
        raise UserError("nothing to do: python network.py --convert OLD.pdparams NEW.safetensors --allow-pickle")
    old, new = cfg.convert
    import modelfile

    if cfg.allow_pickle:
        print(f"network.py: unpickling {old} (trusted as your own file: a pickle can run code)", flush=True)
    kind = modelfile.convert(old, new, cfg.allow_pickle)
    print(f"network.py: {kind} {old} -> {new}")


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
