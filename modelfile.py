"""The model files: the safetensors container, kind sniffing, the pickle refusal, the generator file, the one
tensor validator, and the one "a path or a model" resolver.

    G = load_generator("output/generator.safetensors")      # or train.py's checkpoint.safetensors (its EMA G)
    D = load_discriminator("output/checkpoint.safetensors")
    save_generator("g.safetensors", G)
    G, D = models_of(path_or_G_or_pair, need_D=True)       # what functions taking "a checkpoint" call

A state is a tree of dicts whose leaves are arrays/tensors or JSON values. In the file each array is a tensor named
by its path ("G/main.0.weight", "fixed_noise"); each top-level entry that is not an array becomes one metadata key
holding its JSON, with the arrays taken out of it (so "G" is "{}", "epoch" is "3"). Never a pickle unless the user
trusts it (allow_pickle). Importing this module loads no paddle (evaluate.py --images stays paddle-free): the
layers come from network.py when a model is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import TYPE_CHECKING

import utils
from utils import UserError

import numpy as np

if TYPE_CHECKING:
    from network import Discriminator, Generator

GENERATOR_FILE = "generator.safetensors"  # G's weights (EMA when on) + format, version, nz, ngf
CHECKPOINT_FILE = "checkpoint.safetensors"  # everything train.py --resume needs
GENERATOR_FORMAT = "dcgan-faces-paddle/generator"
CHECKPOINT_FORMAT = "dcgan-faces-paddle/checkpoint"
FORMAT_VERSION = 1
PICKLE_PROTOCOLS = range(2, 6)  # a pickle of protocol >= 2 starts with PROTO (0x80) and its number; Paddle writes 2-4
MAX_HEADER = 1 << 27  # a safetensors JSON header claiming more (128 MiB) is not one: no model file has such a header
MAX_METADATA = 1 << 20  # our metadata (config, counters, skeletons) is a few KB; the loss history is a tensor
MAX_DEPTH = 8  # JSON nesting in our metadata: 3 (optimizer state in a checkpoint's skeleton)
FREE_BUILD = 64 << 20  # a model up to this size is built whatever the file holds (its errors are then the exact ones)
MAX_NZ, MAX_WIDTH = 4096, 1024  # bounds on nz and ngf/ndf from a file: ngf=1024 is already a 3.4 GB generator


# ---------------------------------------------------------------------------------------------
# the container: safetensors (tensors + JSON metadata in its header)


def file_kind(path: str | os.PathLike) -> str:
    """'safetensors', 'pickle', 'zip', 'empty' or 'unknown', from the first bytes (nothing is parsed or run)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    # u64 little-endian header size, then the JSON header
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < MAX_HEADER:
        return "safetensors"
    if head[0] == 0x80 and len(head) > 1 and head[1] in PICKLE_PROTOCOLS:
        return "pickle"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    return "unknown"


def _pack(tree: dict, prefix: str, tensors: dict) -> dict:
    """The JSON skeleton of `tree`; its arrays go to `tensors` under their paths."""
    skeleton = {}
    for k, v in tree.items():
        if not isinstance(k, str) or "/" in k:
            raise ValueError(f"state key {k!r}: keys must be strings without '/'")
        name = prefix + k
        if hasattr(v, "numpy") and callable(v.numpy):  # a paddle.Tensor
            if "bfloat16" in str(v.dtype):
                raise ValueError(f"{name}: bfloat16 tensors are not supported (numpy has no bfloat16)")
            v = v.numpy()
        if isinstance(v, np.ndarray):
            tensors[name] = v if v.flags.c_contiguous else v.copy(order="C")  # (ascontiguousarray makes 0-D 1-D)
        elif isinstance(v, dict):
            skeleton[k] = _pack(v, name + "/", tensors)
        else:
            skeleton[k] = v.item() if isinstance(v, np.generic) else v
    return skeleton


def save_state(path: str | os.PathLike, tree: dict) -> None:
    """Write a state tree as one safetensors file, atomically (temp file, fsync, rename)."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    skeleton = _pack(tree, "", tensors)
    metadata = {k: json.dumps(v) for k, v in skeleton.items()}
    with utils.atomic_path(path) as tmp:  # looked up on use: tests/dist_worker.py records every write through it
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def _pickle_refused(path) -> str:
    return (
        f"{path}: this is a pickle (an old-style .pdparams?), and loading a pickle can run any code it holds; "
        "if you trust it (your own file from an earlier version) pass --allow-pickle "
        f"(allow_pickle=True in Python), or convert it once: python network.py --convert {path} NEW.safetensors "
        "--allow-pickle"
    )


def read_safetensors(
    path: str | os.PathLike, shapes: dict[str, tuple[int, ...]] | None = None, hint: str = ""
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata strings, tensors as numpy) of a file that file_kind calls 'safetensors'; UserError, one line,
    when its header or data are broken (safetensors checks every offset against the file size before reading).
    shapes: the only names and shapes allowed, checked from the header before any tensor is read (hint: what the
    error line adds)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            for k in f.keys() if shapes is not None else ():  # noqa: SIM118  (safe_open has no __iter__)
                shape = tuple(f.get_slice(k).get_shape())
                if shapes.get(k) != shape:
                    got = f"shape {shape}" if k in shapes else "an unexpected name"
                    raise UserError(f"{path}: {k[:80]} has {got}" + (f"; {hint}" if hint else ""))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, TypeError) as e:  # bad header, truncated data, unknown dtype
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{path}: corrupt or truncated safetensors file ({reason})") from None
    return metadata, tensors


def read_state(path: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """The state tree of a safetensors file written by save_state (numpy leaves), or, only with allow_pickle,
    of a pickled Paddle file (paddle.load: this runs whatever code the file holds). Raises UserError, one line
    naming the file, for anything else: missing, a folder, empty, a refused pickle, corrupt or truncated."""
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder, not a model file")
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    kind = file_kind(path)
    if kind == "pickle":
        if not allow_pickle:
            raise UserError(_pickle_refused(path))
        return _read_pickle(path)
    if kind == "empty":
        raise UserError(f"{path}: empty file (0 bytes), not a model file")
    if kind == "zip":
        raise UserError(f"{path}: a zip archive (a PyTorch .pt/.pth?), not a safetensors model file")
    if kind != "safetensors":
        raise UserError(f"{path}: not a safetensors model file (nor a Paddle .pdparams)")
    metadata, tensors = read_safetensors(path)
    if sum(len(k) + len(v) for k, v in metadata.items()) > MAX_METADATA:
        raise UserError(f"{path}: its metadata is over {MAX_METADATA >> 20} MiB (not a dcgan-faces-paddle file)")
    tree: dict = {}
    for k, text in metadata.items():
        try:
            tree[k] = json.loads(text)
        except (ValueError, RecursionError):
            raise UserError(f"{path}: metadata {k!r} is not JSON (not a dcgan-faces-paddle file?)") from None
        if _depth(tree[k]) > MAX_DEPTH:
            raise UserError(f"{path}: metadata {k!r} is nested over {MAX_DEPTH} deep (not a dcgan-faces-paddle file)")
    for name, arr in tensors.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{path}: tensor {name} does not fit the metadata (not a dcgan-faces-paddle file?)")
        if leaf in node:  # a tensor named like a metadata entry ("format", "G_ema"): never replaces it
            raise UserError(f"{path}: tensor {name} has the name of a metadata entry (not a dcgan-faces-paddle file)")
        node[leaf] = arr
    return tree


def _depth(value) -> int:
    """How deep JSON lists and dicts nest in `value` (0 for a scalar), level by level (no recursion), up to
    MAX_DEPTH + 1."""
    depth, level = 0, [value]
    while depth <= MAX_DEPTH:
        level = [v for v in level if isinstance(v, (list, dict))]
        if not level:
            break
        depth += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def _read_pickle(path) -> dict:
    import paddle

    try:
        obj = paddle.load(os.fspath(path))
    except Exception as e:  # pickle, EOF, unicode... on a damaged file
        raise UserError(f"{path}: cannot read this pickle ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a dcgan-faces-paddle file (the pickle holds a {type(obj).__name__})")

    def to_numpy(v):
        if isinstance(v, dict):
            return {k: to_numpy(x) for k, x in v.items()}
        return v.numpy() if hasattr(v, "numpy") and callable(v.numpy) else v

    return to_numpy(obj)


# ---------------------------------------------------------------------------------------------
# the one validator: a state dict against the tensors a network needs


class TensorMismatch(UserError):
    """check_tensors' error, with what it found, for a caller that words it its own way (fid.py).

    problem: 'absent' (no state at all), 'missing', 'unknown', 'shape' or 'dtype'; name: the first such tensor;
    count: how many tensors have that problem; total: how many are required; found / expected: shape or dtype."""

    def __init__(
        self, message: str, problem: str, name: str = "", count: int = 0, total: int = 0, found=None, expected=None
    ):
        super().__init__(message)
        self.problem, self.name, self.count, self.total = problem, name, count, total
        self.found, self.expected = found, expected


def check_tensors(
    path,
    state,
    expected: dict[str, tuple[tuple[int, ...], str | None]],
    what: str,
    settings: str = "",
    optional: dict[str, tuple[tuple[int, ...], str | None]] | None = None,
) -> None:
    """TensorMismatch (a UserError, one line naming `path`) unless `state` holds every tensor of `expected`
    ({name: (shape, dtype)}; dtype None: any) with its shape and dtype, and nothing else but tensors of `optional`
    (which must fit too). The first problem is reported: missing, then unknown, then shape or dtype in `expected`'s
    order. `what` names the weights ("generator", "G"); `settings` (" for nz=100, ngf=64") follows a shape error."""
    if not isinstance(state, dict):
        raise TensorMismatch(f"{path}: holds no {what} weights", "absent")
    optional = optional or {}
    missing = [k for k in expected if k not in state]
    if missing:
        n, k = len(missing), missing[0]
        msg = f"{path}: {what} weights are missing {n} tensors (first: {k})"
        raise TensorMismatch(msg, "missing", k, n, len(expected))
    unknown = [k for k in state if k not in expected and k not in optional]
    if unknown:
        n, k = len(unknown), unknown[0]
        msg = f"{path}: {what} weights hold {n} unknown tensors (first: {k})"
        raise TensorMismatch(msg, "unknown", k, n, len(expected))
    for k, (shape, dtype) in [*expected.items(), *((k, v) for k, v in optional.items() if k in state)]:
        found, found_dtype = getattr(state[k], "shape", None), getattr(state[k], "dtype", None)
        if found is None or tuple(found) != tuple(shape):
            text = "no shape" if found is None else f"shape {list(found)}"
            msg = f"{path}: {what} weight {k} has {text}, expected {list(shape)}{settings}"
            raise TensorMismatch(msg, "shape", k, 1, len(expected), found and tuple(found), tuple(shape))
        if dtype is not None and str(found_dtype) != dtype:
            msg = f"{path}: {what} weight {k} is {found_dtype}, expected {dtype}"
            raise TensorMismatch(msg, "dtype", k, 1, len(expected), str(found_dtype), dtype)


def expected_tensors(model) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of a layer's state_dict, as check_tensors takes it."""
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("paddle.")) for k, v in model.state_dict().items()}


def check_weights(path, model, state, what: str, settings: str = "") -> None:
    """UserError unless `state` holds exactly `model`'s tensors, with their shapes and dtypes."""
    check_tensors(path, state, expected_tensors(model), what, settings)


# ---------------------------------------------------------------------------------------------
# the generator file (and reading G and D out of either file)


def generator_payload(G: Generator, state_dict: dict | None = None) -> dict:
    """The state saved as generator.safetensors: G's weights (or `state_dict`, e.g. the EMA weights) under
    their state_dict names, plus the metadata needed to rebuild G. `paddle.load(path, safetensors=True)`
    returns exactly the weights, ready for `Generator(nz, ngf).set_state_dict`."""
    state = state_dict if state_dict is not None else G.state_dict()
    return {"format": GENERATOR_FORMAT, "version": FORMAT_VERSION, "nz": G.nz, "ngf": G.ngf, **state}


def save_generator(path: str | os.PathLike, G: Generator, state_dict: dict | None = None) -> None:
    save_state(path, generator_payload(G, state_dict))


def read_model_file(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[str, dict]:
    """("generator" | "checkpoint", state tree) of a generator or checkpoint file, numpy leaves. With allow_pickle
    also the pickled generator.pdparams / checkpoint.pdparams of earlier versions (read into the same shapes)."""
    if not os.path.exists(path):
        raise UserError(
            f"{path}: no such model file (looked for {os.path.abspath(path)}); train first "
            f"(python train.py writes output/{GENERATOR_FILE})"
        )
    tree = read_state(path, allow_pickle)
    fmt, version = tree.get("format"), tree.get("version", 1)
    if fmt == GENERATOR_FORMAT and isinstance(tree.get("state_dict"), dict):  # an old generator.pdparams
        tree = {**{k: v for k, v in tree.items() if k != "state_dict"}, **tree["state_dict"]}
    elif fmt is None and isinstance(tree.get("config"), dict) and isinstance(tree.get("G"), dict):  # an old checkpoint
        fmt = tree["format"] = CHECKPOINT_FORMAT
    if not isinstance(fmt, (str, type(None))) or fmt not in (GENERATOR_FORMAT, CHECKPOINT_FORMAT):
        what = f"its format is {_short(fmt)}" if fmt is not None else "no 'format' in its metadata"
        keys = ", ".join(list(tree)[:4])
        raise UserError(f"{path}: not a dcgan-faces-paddle generator or checkpoint ({what}; holds {keys})")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: format version {_short(version)} is newer than this code reads ({FORMAT_VERSION}); "
            "update dcgan-faces-paddle"
        )
    return ("generator" if fmt == GENERATOR_FORMAT else "checkpoint"), tree


def _short(value, n: int = 40) -> str:
    """repr of a value from a file, cut to n characters (a file can hold megabytes in one metadata entry)."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _size(path, value, name: str, limit: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{path}: {name} is {_short(value)} in the file, not a positive integer")
    if limit is not None and value > limit:
        raise UserError(f"{path}: {name} is {value} in the file, over the {limit} this code builds")
    return value


def generator_numel(nz: int, ngf: int) -> int:
    """Elements of network.Generator(nz, ngf)'s state dict: 5 transposed convolutions (4x4, no bias) and 4
    BatchNorms (weight, bias, mean, variance), computed without building it."""
    return 16 * (8 * nz * ngf + 42 * ngf * ngf + 3 * ngf) + 4 * 15 * ngf


def discriminator_numel(ndf: int) -> int:
    """Elements of network.Discriminator(ndf)'s state dict (5 convolutions, 3 BatchNorms)."""
    return 16 * (42 * ndf * ndf + 11 * ndf) + 4 * 14 * ndf


def _fits(path, state, numel: int, what: str, settings: str) -> None:
    # before building: a model is never much larger than the weights the file holds for it (a 120-byte file
    # claiming nz = 10**9 never asks Paddle for terabytes). Small models are built: check_weights then names the
    # first wrong tensor.
    if not isinstance(state, dict):
        raise TensorMismatch(f"{path}: holds no {what} weights", "absent")
    have = sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))
    if numel * 4 > 2 * have + FREE_BUILD:
        raise UserError(
            f"{path}: a {what}{settings} has {numel * 4 / 2**20:.1f} MiB of weights, the file holds "
            f"{have / 2**20:.1f} MiB for it"
        )


def _first_shape(path, state, key: str, expected: tuple, what: str, settings: str) -> None:
    # before building the model: sizes claimed by the metadata must match the file's own tensors (a model is
    # then never larger than the file)
    shape = getattr(state.get(key) if isinstance(state, dict) else None, "shape", None)
    if shape is not None and tuple(shape) != expected:
        raise UserError(f"{path}: {what} weight {key} has shape {list(shape)}, expected {list(expected)}{settings}")


def _generator_from(path, kind: str, tree: dict, use_ema: bool) -> Generator:
    from network import Generator

    if kind == "generator":
        nz, ngf = tree.get("nz"), tree.get("ngf")
        state = {k: v for k, v in tree.items() if isinstance(v, np.ndarray)}
    else:
        cfg = tree.get("config") if isinstance(tree.get("config"), dict) else {}
        nz, ngf = cfg.get("nz"), cfg.get("ngf")
        ema = tree.get("G_ema")
        state = ema if use_ema and isinstance(ema, dict) and ema else tree.get("G")
    nz, ngf = _size(path, nz, "nz"), _size(path, ngf, "ngf")
    settings = f" for nz={nz}, ngf={ngf}"
    _first_shape(path, state, "main.0.weight", (nz, ngf * 8, 4, 4), "generator", settings)
    _size(path, nz, "nz", MAX_NZ), _size(path, ngf, "ngf", MAX_WIDTH)
    _fits(path, state, generator_numel(nz, ngf), "generator", settings)
    G = Generator(nz=nz, ngf=ngf)
    check_weights(path, G, state, "generator", settings)
    G.set_state_dict(state)
    G.eval()
    return G


def _discriminator_from(path, kind: str, tree: dict) -> Discriminator:
    from network import Discriminator

    if kind == "generator":
        raise UserError(f"{path}: a generator-only file holds no discriminator; use train.py's {CHECKPOINT_FILE}")
    cfg = tree.get("config") if isinstance(tree.get("config"), dict) else {}
    ndf = _size(path, cfg.get("ndf"), "ndf")
    state = tree.get("D")
    _first_shape(path, state, "main.0.weight", (ndf, 3, 4, 4), "discriminator", f" for ndf={ndf}")
    _size(path, ndf, "ndf", MAX_WIDTH)
    _fits(path, state, discriminator_numel(ndf), "discriminator", f" for ndf={ndf}")
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
# "a model file or the model itself": resolved here, once


def generator_of(path_or_G, use_ema: bool = True, allow_pickle: bool = False) -> Generator:
    """G itself when given a layer, else load_generator(path, use_ema, allow_pickle)."""
    if isinstance(path_or_G, (str, os.PathLike)):
        return load_generator(os.fspath(path_or_G), use_ema=use_ema, allow_pickle=allow_pickle)
    return path_or_G


def models_of(
    path_or_G_or_pair,
    need_D: bool,
    use_ema: bool = True,
    allow_pickle: bool = False,
    why_D: str = f"this needs D (the discriminator): pass the training checkpoint ({CHECKPOINT_FILE})",
) -> tuple[Generator, Discriminator | None]:
    """(G, D) from a (G, D) pair, a Generator (D None) or a model file (D loaded only when need_D). When D is
    needed and there is none, UserError: the file's own reason (if any), then `why_D` (what needs D, the way out)."""
    if isinstance(path_or_G_or_pair, (tuple, list)):
        G, D = path_or_G_or_pair
    elif not isinstance(path_or_G_or_pair, (str, os.PathLike)):
        G, D = path_or_G_or_pair, None
    else:
        path = os.fspath(path_or_G_or_pair)
        G, D = load_generator(path, use_ema=use_ema, allow_pickle=allow_pickle), None
        if need_D:
            try:
                D = load_discriminator(path, allow_pickle=allow_pickle)
            except UserError as e:
                raise UserError(f"{e}; {why_D}") from None
    if need_D and D is None:
        raise UserError(why_D)
    return G, D


# ---------------------------------------------------------------------------------------------
# an old pickled file of your own -> safetensors (python network.py --convert OLD NEW)


def convert(old: str | os.PathLike, new: str | os.PathLike, allow_pickle: bool = False) -> str:
    """Rewrite an old pickled model file as safetensors (the same generator or checkpoint); returns its kind.
    This unpickles `old`, which runs any code in it: only for your own files, and only with allow_pickle."""
    if os.path.exists(new):
        raise UserError(f"{new}: exists; remove it or choose another name")
    if os.path.isfile(old) and file_kind(old) == "safetensors":
        raise UserError(f"{old}: already a safetensors file; nothing to convert")
    kind, tree = read_model_file(old, allow_pickle=allow_pickle)
    if kind == "generator":
        save_generator(new, _generator_from(old, kind, tree, use_ema=True))
        return kind
    for use_ema in (False, True):  # G, G_ema and D must load before anything is written
        _generator_from(old, kind, tree, use_ema)
    _discriminator_from(old, kind, tree)
    tree = _current_checkpoint(old, {**tree, "format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION})
    if isinstance(tree.get("history"), dict):  # float64, as train.py writes it
        tree["history"] = {k: np.asarray(v, np.float64) for k, v in tree["history"].items()}
    save_state(new, tree)
    return kind


# ---------------------------------------------------------------------------------------------
# the training checkpoint (train.py writes it, --resume reads it): everything a run needs to continue bit for bit
#
#   G, D, G_ema (or none)     state dicts (weights and BatchNorm running statistics)
#   optG, optD                Adam's state by parameter order: "3.moment1" is the first moment of the trainable
#                             parameter 3 of that model (Paddle's own names depend on what else the process built)
#   scalerG, scalerD          GradScaler state (fp16 only)
#   iteration, epoch          iterations done; epoch = iteration // iterations per epoch
#   fixed_noise               [64, nz, 1, 1]: the sample grids' noise
#   rng                       {"seed", "iteration"}: the noise of iteration i is a function of (seed, rank, i)
#   config                    train.py's flags, as a dict
#   history                   {d_loss, g_loss, d_real, d_fake}: float64 [iteration]

ADAM_STATE = ("moment1", "moment2", "beta1_pow_acc", "beta2_pow_acc")  # None below: the parameter's shape
ADAM_SHAPES = {"moment1": None, "moment2": None, "beta1_pow_acc": [1], "beta2_pow_acc": [1]}
HISTORY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")
_ADAM_NAME = re.compile(r"_(moment1|moment2|beta1_pow_acc|beta2_pow_acc)_\d+$")


def trainable(model) -> list:
    """A model's trainable parameters, in order (what the optimizer state is keyed by)."""
    return [p for p in model.parameters() if p.trainable]


def optimizer_state(opt, params: list) -> dict:
    """Adam's state keyed by parameter order ("0.moment1", ...) instead of Paddle's generated names."""
    index = {p.name: i for i, p in enumerate(params)}
    state = {}
    for name, value in opt.state_dict().items():
        m = _ADAM_NAME.search(name)
        if m and name[: m.start()] in index:
            state[f"{index[name[: m.start()]]}.{m.group(1)}"] = value
    return state


def set_optimizer_state(opt, params: list, state: dict) -> None:
    """Load optimizer_state()'s dict. Adam creates its accumulators at its first step, named after the parameter
    ("<param>_moment1_0": a parameter's name is unique in the process, so the counter is 0), and takes their values
    from what set_state_dict left it under exactly those names."""
    if state:
        opt.set_state_dict({f"{params[int(k.split('.')[0])].name}_{k.split('.')[1]}_0": v for k, v in state.items()})


def legacy_optimizer_state(state: dict, names: list[str]) -> dict:
    """An earlier version's optimizer state ("<param name>_moment1_0", the names a unique_name guard gave) by
    parameter order; `names` are the parameters' names in that guarded build."""
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for key, value in state.items():
        m = _ADAM_NAME.search(key)
        if not m or key[: m.start()] not in index:
            return state  # not the old naming: checked (and refused) as it is
        out[f"{index[key[: m.start()]]}.{m.group(1)}"] = value
    return out


def save_checkpoint(path, trainer, epoch: int) -> None:
    """Write `trainer`'s whole state (train.Trainer: G, D, G_ema, optG, optD, scalerG, scalerD, iteration,
    fixed_noise, history, cfg) as the checkpoint file, atomically."""
    t = trainer
    save_state(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "version": FORMAT_VERSION,
            "G": t.G.state_dict(),
            "D": t.D.state_dict(),
            "G_ema": t.G_ema.state_dict() if t.G_ema is not None else None,
            "optG": optimizer_state(t.optG, trainable(t.G)),
            "optD": optimizer_state(t.optD, trainable(t.D)),
            "scalerG": t.scalerG.state_dict(),
            "scalerD": t.scalerD.state_dict(),
            "epoch": epoch,
            "iteration": t.iteration,
            "fixed_noise": t.fixed_noise,
            "rng": {"seed": t.cfg.seed, "iteration": t.iteration},
            "config": dataclasses.asdict(t.cfg),
            "history": {k: np.asarray(t.history[k], np.float64) for k in HISTORY_KEYS},  # float(float32): exact
        },
    )


def read_checkpoint(path, allow_pickle: bool = False) -> dict:
    """A train.py checkpoint's state tree (see above), its optimizer state by parameter order even when an earlier
    version wrote it; UserError (one line naming the file) for anything else."""
    kind, tree = read_model_file(path, allow_pickle=allow_pickle)
    if kind != "checkpoint" or not isinstance(tree.get("config"), dict):
        raise UserError(f"{path}: not a train.py checkpoint (a {kind} file)")
    return _current_checkpoint(path, tree)


def _current_checkpoint(path, tree: dict) -> dict:
    """An earlier version's checkpoint tree in today's form: history as float arrays (lists in the pickled files),
    optimizer state by parameter order (Paddle's names before)."""
    if isinstance(tree.get("history"), dict):
        tree["history"] = {k: np.asarray(v) if isinstance(v, list) else v for k, v in tree["history"].items()}
    names = None
    for part in ("optG", "optD"):
        state = tree.get(part)
        if isinstance(state, dict) and any(_ADAM_NAME.search(k) for k in state):
            names = names or _legacy_names(path, tree["config"])
            tree[part] = legacy_optimizer_state(state, names[part])
    return tree


def _legacy_names(path, cfg: dict) -> dict[str, list[str]]:
    """The parameter names an earlier train.py gave G and D (built in a fresh unique_name scope, G first)."""
    import paddle

    from network import Discriminator, Generator

    nz, ngf = _size(path, cfg.get("nz"), "nz", MAX_NZ), _size(path, cfg.get("ngf"), "ngf", MAX_WIDTH)
    ndf = _size(path, cfg.get("ndf"), "ndf", MAX_WIDTH)
    with paddle.utils.unique_name.guard():
        G, D = Generator(nz, ngf), Discriminator(ndf)
    return {"optG": [p.name for p in trainable(G)], "optD": [p.name for p in trainable(D)]}


def check_checkpoint(path, ckpt: dict, trainer) -> None:
    """Every part of a checkpoint that load_checkpoint sets, checked before anything is set: Paddle would skip a
    mismatched weight with a warning, or fail deep inside the first optimizer step."""
    for part in ("optG", "optD", "fixed_noise", "history", "iteration"):
        if part not in ckpt:
            raise UserError(f"{path}: not a complete train.py checkpoint (no {part!r})")
    t, cfg = trainer, trainer.cfg
    check_weights(path, t.G, ckpt.get("G"), "G", f" for nz={cfg.nz}, ngf={cfg.ngf}")
    check_weights(path, t.D, ckpt.get("D"), "D", f" for ndf={cfg.ndf}")
    if t.G_ema is not None and ckpt.get("G_ema"):
        check_weights(path, t.G_ema, ckpt["G_ema"], "G_ema", f" for nz={cfg.nz}, ngf={cfg.ngf}")
    for name, model in (("optG", t.G), ("optD", t.D)):
        state = ckpt[name]
        if not isinstance(state, dict):
            raise UserError(f"{path}: {name} is not an optimizer state")
        tensors = {k: v for k, v in state.items() if not isinstance(v, dict)}  # not LR_Scheduler, master_weights
        if not tensors:  # that optimizer never stepped (e.g. --g-steps 0)
            continue
        expected = {
            f"{i}.{acc}": list(p.shape) if shape is None else shape
            for i, p in enumerate(trainable(model))
            for acc, shape in ADAM_SHAPES.items()
        }
        if set(tensors) != set(expected):
            odd = sorted(set(tensors) ^ set(expected))[0]
            raise UserError(f"{path}: {name} does not fit this model's Adam state ({odd} missing or unknown)")
        for k, shape in expected.items():
            found = list(getattr(tensors[k], "shape", [-1]))
            if found != shape:
                raise UserError(f"{path}: {name} tensor {k} has shape {found}, expected {shape}")
            if getattr(tensors[k], "dtype", None) != np.float32:
                raise UserError(f"{path}: {name} tensor {k} is {getattr(tensors[k], 'dtype', None)}, not float32")
    noise = ckpt["fixed_noise"]
    if not isinstance(noise, np.ndarray) or noise.dtype != np.float32 or list(noise.shape) != [64, cfg.nz, 1, 1]:
        raise UserError(f"{path}: fixed_noise is not float32 [64, {cfg.nz}, 1, 1]")
    history, it = ckpt["history"], ckpt["iteration"]
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise UserError(f"{path}: its iteration ({it!r}) is not a count")
    if not isinstance(history, dict) or any(
        not isinstance(history.get(k), np.ndarray) or history[k].dtype.kind != "f" or history[k].shape != (it,)
        for k in HISTORY_KEYS
    ):
        raise UserError(f"{path}: its loss history does not have one entry per iteration ({it})")


def load_checkpoint(path, ckpt: dict, trainer) -> None:
    """Set a read_checkpoint() tree into `trainer` after check_checkpoint."""
    check_checkpoint(path, ckpt, trainer)
    t = trainer
    t.G.set_state_dict(ckpt["G"])
    t.D.set_state_dict(ckpt["D"])
    if t.G_ema is not None and ckpt.get("G_ema"):
        t.G_ema.set_state_dict(ckpt["G_ema"])
    set_optimizer_state(t.optG, trainable(t.G), ckpt["optG"])
    set_optimizer_state(t.optD, trainable(t.D), ckpt["optD"])
    if t.amp and ckpt.get("scalerG"):
        t.scalerG.load_state_dict(ckpt["scalerG"])
        t.scalerD.load_state_dict(ckpt["scalerD"])
    t.iteration = int(ckpt["iteration"])
    t.fixed_noise = np.asarray(ckpt["fixed_noise"], dtype=np.float32)
    t.history = {k: list(map(float, ckpt["history"][k])) for k in HISTORY_KEYS}
