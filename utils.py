"""Small helpers shared by the scripts: CPU tuning before paddle loads, atomic writes, image grids,
and the one error type that scripts turn into a one-line message.

Importing this module sets default environment variables for Paddle's CPU kernels (see
`tune_cpu_env`); it must therefore be imported before `paddle` in every script.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from collections.abc import Iterator

import numpy as np


class UserError(Exception):
    """A problem with the user's input (a file, a flag): printed as one line, no traceback."""


def tune_cpu_env() -> None:
    """Defaults that make Paddle's CPU wheel use the whole machine; the user's environment wins.

    - MKL_NUM_THREADS = usable cores: Paddle's CPU wheel runs MKL on one thread unless told
      otherwise. (OMP_NUM_THREADS works as well, measured the same speed, but makes `import paddle`
      print a warning; a user-set OMP_NUM_THREADS is left alone and MKL follows it.)
    - MKL_DEBUG_CPU_TYPE=5: the MKL bundled with Paddle takes a generic code path on AMD processors;
      this makes it use AVX2 (3x faster matmul there, no effect on Intel). MKL reads both when it
      loads, so they only help if set before `import paddle`.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1)  # set by paddle.distributed.launch
        os.environ.setdefault("MKL_NUM_THREADS", str(max(1, cores // max(1, local_procs))))
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO/WARNING lines (type promotion, PIR)
    warnings.filterwarnings("ignore", message="No ccache found")  # printed by `import paddle`
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")  # every BN call


tune_cpu_env()


# ---------------------------------------------------------------------------------------------
# atomic writes: a reader (or a crash) never sees a half-written file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# model files: safetensors (tensors + JSON metadata in its header), never a pickle unless the user trusts it
#
# A state is a tree of dicts whose leaves are arrays/tensors or JSON values. In the file each array is a tensor
# named by its path ("G/main.0.weight", "fixed_noise"); each top-level entry that is not an array becomes one
# metadata key holding its JSON, with the arrays taken out of it (so "G" is "{}", "epoch" is "3").

GENERATOR_FILE = "generator.safetensors"  # G's weights (EMA when on) + format, version, nz, ngf (network.py re-exports)
CHECKPOINT_FILE = "checkpoint.safetensors"  # everything train.py --resume needs
PICKLE_PROTOCOLS = range(2, 6)  # a pickle of protocol >= 2 starts with PROTO (0x80) and its number; Paddle writes 2-4


def file_kind(path: str | os.PathLike) -> str:
    """'safetensors', 'pickle', 'zip', 'empty' or 'unknown', from the first bytes (nothing is parsed or run)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if len(head) == 9 and head[8:9] == b"{":  # u64 little-endian header size, then the JSON header
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
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def _pickle_refused(path) -> str:
    return (
        f"{path}: this is a pickle (an old-style .pdparams?), and loading a pickle can run any code it holds; "
        "if you trust it (your own file from an earlier version) pass --allow-pickle "
        f"(allow_pickle=True in Python), or convert it once: python network.py --convert {path} NEW.safetensors"
    )


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
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as e:  # bad header, truncated data, unknown dtype
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{path}: corrupt or truncated safetensors file ({reason})") from None
    tree: dict = {}
    for k, text in metadata.items():
        try:
            tree[k] = json.loads(text)
        except ValueError:
            raise UserError(f"{path}: metadata {k!r} is not JSON (not a dcgan-faces-paddle file?)") from None
    for name, arr in tensors.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{path}: tensor {name} does not fit the metadata (not a dcgan-faces-paddle file?)")
        node[leaf] = arr
    return tree


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
# images


def to_uint8(x) -> np.ndarray:
    """Map tanh-range images in [-1, 1] (a tensor or array) to uint8 [0, 255]: (x + 1) * 127.5."""
    x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return np.clip(np.rint((x.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def chw_to_hwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C); an explicit axis order, never a bare .transpose()."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*H', cols*W', C) image with a border.

    nrow is the number of images per row (default: a square-ish grid, ceil(sqrt(N))).
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncol = nrow or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncol))
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, images.dtype)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 HWC (or HW) image as PNG, atomically."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def save_gif(frames: np.ndarray, path: str | os.PathLike, ms: int = 100) -> None:
    """Write uint8 frames (T, H, W, 3) as an animated GIF that loops forever, `ms` per frame, atomically.
    GIF holds 256 colours a frame: Pillow quantises each one (faces keep their look, gradients band a little)."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T > 0, got {frames.dtype} {list(frames.shape)}")
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)


# ---------------------------------------------------------------------------------------------
# command-line plumbing


def parse_config(cls, argv=None, description: str | None = None, epilog: str | None = None):
    """Build an argparse parser from a config dataclass and return a filled instance.

    Each field becomes `--field-name`; its type comes from the default, its help text from
    `field(metadata={"help": ...})`; bools become `--flag/--no-flag`; `metadata={"choices": [...]}`
    restricts values; `metadata={"const": v}` lets the flag stand alone for v. The CLI holds no logic of its
    own: it only fills the dataclass.
    """
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        kw: dict = {
            "default": default,
            "help": f"{help_} (default: %(default)s)" if help_ else "(default: %(default)s)",
        }
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        ftype = f.metadata.get("type")
        if ftype is None:
            ftype = type(default) if default is not None else str
            if isinstance(default, (list, tuple)):
                ftype, kw["nargs"] = (type(default[0]) if default else int), len(default) or "+"
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        if "const" in f.metadata:  # the flag alone means this value (`--amp` = `--amp fp16`)
            kw["nargs"], kw["const"] = "?", f.metadata["const"]
        parser.add_argument(flag, type=ftype, **kw)
    args = parser.parse_args(argv)
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()}
    return cls(**values)


def run_cli(main, argv=None) -> int:
    """Run `main(argv)`, turning a UserError into `prog: error: message` and exit status 2."""
    try:
        main(argv)
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        return 130
    return 0
