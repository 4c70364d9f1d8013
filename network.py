"""The DCGAN generator and discriminator of the tutorial (Radford et al. 2015), for 64x64 RGB faces.

    G: z [B, nz, 1, 1] -> image [B, 3, 64, 64] in [-1, 1] (tanh)
    D: image [B, 3, 64, 64] -> probability that it is real, [B] in (0, 1) (sigmoid); D(x, logits=True): before it

BatchNorm momentum is 0.5 everywhere (Paddle's convention: running = 0.5 * running + 0.5 * batch) and
LeakyReLU's slope 0.2, as the tutorial says; weights start as weightInit.py says.

On the CPU, in float32 eager mode, the convolutions run on oneDNN (onednn_conv/, built once per machine) when it
is available; elsewhere (GPU, static graphs, DCGAN_ONEDNN=0, no compiler or headers) on Paddle's own kernels.
Same layers, parameters and state dicts either way; `conv_backend()` says which runs.

Model files are safetensors (load_generator, load_discriminator); an old pickled .pdparams of your own converts with

    python network.py --convert output/generator.pdparams output/generator.safetensors
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import utils
from utils import UserError

import numpy as np
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

    def forward(self, x: paddle.Tensor, logits: bool = False) -> paddle.Tensor:
        """P(real) [B]; with logits=True the pre-sigmoid scores [B] (the last layer skipped), for
        bce_logits_loss."""
        if not logits:
            return self.main(x).flatten()  # [B]
        for layer in list(self.main.children())[:-1]:  # all but the Sigmoid
            x = layer(x)
        return x.flatten()


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
# model files (safetensors; see utils.save_state): what train.py writes, what generator.py and the others read

# the file names (defined in utils.py, which needs no paddle, so that evaluate.py --images stays paddle-free)
GENERATOR_FILE = utils.GENERATOR_FILE  # G's weights (EMA when on) + format, version, nz, ngf
CHECKPOINT_FILE = utils.CHECKPOINT_FILE  # everything train.py --resume needs
GENERATOR_FORMAT = "dcgan-faces-paddle/generator"
CHECKPOINT_FORMAT = "dcgan-faces-paddle/checkpoint"
FORMAT_VERSION = 1


def generator_payload(G: Generator, state_dict: dict | None = None) -> dict:
    """The state saved as generator.safetensors: G's weights (or `state_dict`, e.g. the EMA weights) under
    their state_dict names, plus the metadata needed to rebuild G. `paddle.load(path, safetensors=True)`
    returns exactly the weights, ready for `Generator(nz, ngf).set_state_dict`."""
    state = state_dict if state_dict is not None else G.state_dict()
    return {"format": GENERATOR_FORMAT, "version": FORMAT_VERSION, "nz": G.nz, "ngf": G.ngf, **state}


def save_generator(path: str | os.PathLike, G: Generator, state_dict: dict | None = None) -> None:
    utils.save_state(path, generator_payload(G, state_dict))


def read_model_file(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[str, dict]:
    """("generator" | "checkpoint", state tree) of a generator or checkpoint file, numpy leaves. With allow_pickle
    also the pickled generator.pdparams / checkpoint.pdparams of earlier versions (read into the same shapes)."""
    if not os.path.exists(path):
        raise UserError(
            f"{path}: no such model file (looked for {os.path.abspath(path)}); train first "
            f"(python train.py writes output/{GENERATOR_FILE})"
        )
    tree = utils.read_state(path, allow_pickle)
    fmt, version = tree.get("format"), tree.get("version", 1)
    if fmt == GENERATOR_FORMAT and isinstance(tree.get("state_dict"), dict):  # an old generator.pdparams
        tree = {**{k: v for k, v in tree.items() if k != "state_dict"}, **tree["state_dict"]}
    elif fmt is None and isinstance(tree.get("config"), dict) and isinstance(tree.get("G"), dict):  # an old checkpoint
        fmt = tree["format"] = CHECKPOINT_FORMAT
    if fmt not in (GENERATOR_FORMAT, CHECKPOINT_FORMAT):
        what = f"its format is {fmt!r}" if fmt is not None else "no 'format' in its metadata"
        keys = ", ".join(list(tree)[:4])
        raise UserError(f"{path}: not a dcgan-faces-paddle generator or checkpoint ({what}; holds {keys})")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: format version {version!r} is newer than this code reads ({FORMAT_VERSION}); "
            "update dcgan-faces-paddle"
        )
    return ("generator" if fmt == GENERATOR_FORMAT else "checkpoint"), tree


def check_weights(path, model: nn.Layer, state, what: str, settings: str = "") -> None:
    """UserError unless `state` holds exactly `model`'s tensors, with their shapes and dtypes."""
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no {what} weights")
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        raise UserError(f"{path}: {what} weights are missing {len(missing)} tensors (first: {missing[0]})")
    if extra:
        raise UserError(f"{path}: {what} weights hold {len(extra)} unknown tensors (first: {extra[0]})")
    for k, v in expected.items():
        shape, dtype = getattr(state[k], "shape", None), getattr(state[k], "dtype", None)
        if shape is None or list(shape) != list(v.shape):
            found = "no shape" if shape is None else f"shape {list(shape)}"
            raise UserError(f"{path}: {what} weight {k} has {found}, expected {list(v.shape)}{settings}")
        if str(dtype) != str(v.dtype).removeprefix("paddle."):
            raise UserError(f"{path}: {what} weight {k} is {dtype}, expected {str(v.dtype).removeprefix('paddle.')}")


def _size(path, value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{path}: {name} is {value!r} in the file, not a positive integer")
    return value


def _first_shape(path, state, key: str, expected: tuple, what: str, settings: str) -> None:
    # before building the model: sizes claimed by the metadata must match the file's own tensors (a model is
    # then never larger than the file)
    shape = getattr(state.get(key) if isinstance(state, dict) else None, "shape", None)
    if shape is not None and tuple(shape) != expected:
        raise UserError(f"{path}: {what} weight {key} has shape {list(shape)}, expected {list(expected)}{settings}")


def _generator_from(path, kind: str, tree: dict, use_ema: bool) -> Generator:
    if kind == "generator":
        nz, ngf = tree.get("nz"), tree.get("ngf")
        state = {k: v for k, v in tree.items() if isinstance(v, np.ndarray)}
    else:
        cfg = tree.get("config") if isinstance(tree.get("config"), dict) else {}
        nz, ngf = cfg.get("nz"), cfg.get("ngf")
        ema = tree.get("G_ema")
        state = ema if use_ema and ema else tree.get("G")
    nz, ngf = _size(path, nz, "nz"), _size(path, ngf, "ngf")
    settings = f" for nz={nz}, ngf={ngf}"
    _first_shape(path, state, "main.0.weight", (nz, ngf * 8, 4, 4), "generator", settings)
    G = Generator(nz=nz, ngf=ngf)
    check_weights(path, G, state, "generator", settings)
    G.set_state_dict(state)
    G.eval()
    return G


def _discriminator_from(path, kind: str, tree: dict) -> Discriminator:
    if kind == "generator":
        raise UserError(f"{path}: a generator-only file holds no discriminator; use train.py's {CHECKPOINT_FILE}")
    cfg = tree.get("config") if isinstance(tree.get("config"), dict) else {}
    ndf = _size(path, cfg.get("ndf"), "ndf")
    state = tree.get("D")
    _first_shape(path, state, "main.0.weight", (ndf, 3, 4, 4), "discriminator", f" for ndf={ndf}")
    D = Discriminator(ndf=ndf)
    check_weights(path, D, state, "discriminator", f" for ndf={ndf}")
    D.set_state_dict(state)
    D.eval()
    return D


def load_generator(path: str | os.PathLike, use_ema: bool = True, allow_pickle: bool = False) -> Generator:
    """G, in eval mode, from generator.safetensors or from train.py's checkpoint.safetensors (its EMA weights when
    it has them and `use_ema`). allow_pickle: also an old pickled .pdparams of either kind (only a file you
    trust: unpickling runs code). Raises utils.UserError, one line naming the file, on any problem."""
    return _generator_from(path, *read_model_file(path, allow_pickle), use_ema)


def load_discriminator(path: str | os.PathLike, allow_pickle: bool = False) -> Discriminator:
    """D, in eval mode, from train.py's checkpoint.safetensors (or, with allow_pickle, an old checkpoint.pdparams).
    A generator-only file raises utils.UserError, as does any other problem."""
    return _discriminator_from(path, *read_model_file(path, allow_pickle))


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


def convert(old: str | os.PathLike, new: str | os.PathLike) -> str:
    """Rewrite an old pickled model file as safetensors (the same generator or checkpoint); returns its kind.
    This unpickles `old`, which runs any code in it: only for your own files."""
    if os.path.exists(new):
        raise UserError(f"{new}: exists; remove it or choose another name")
    if os.path.isfile(old) and utils.file_kind(old) == "safetensors":
        raise UserError(f"{old}: already a safetensors file; nothing to convert")
    kind, tree = read_model_file(old, allow_pickle=True)
    if kind == "generator":
        save_generator(new, _generator_from(old, kind, tree, use_ema=True))
        return kind
    for use_ema in (False, True):  # G, G_ema and D must load before anything is written
        _generator_from(old, kind, tree, use_ema)
    _discriminator_from(old, kind, tree)
    tree = {**tree, "format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION}
    if isinstance(tree.get("history"), dict):  # lists of floats in the old file; float64 arrays now
        tree["history"] = {k: np.asarray(v, np.float64) for k, v in tree["history"].items()}
    utils.save_state(new, tree)
    return kind


def main(argv: list[str] | None = None) -> None:
    cfg = utils.parse_config(ConvertConfig, argv, description=__doc__)
    if not all(cfg.convert):
        raise UserError("nothing to do: python network.py --convert OLD.pdparams NEW.safetensors")
    old, new = cfg.convert
    print(f"network.py: unpickling {old} (trusted as your own file: a pickle can run code)", flush=True)
    kind = convert(old, new)
    print(f"network.py: {kind} {old} -> {new}")


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
