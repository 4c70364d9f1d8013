"""FID and KID as pytorch-fid computes them: its FID Inception-v3 in Paddle, a .pth reader that needs no torch, the
features, the Frechet distance and the kernel inception distance.

    python fid.py --weights pt_inception-2015-12-05-6726825d.pth --out fid_inception.safetensors   # convert once

evaluate.py --fid-weights PATH uses this module; the functions below are its Python API as well:

    model = load_inception("pt_inception-2015-12-05-6726825d.pth")   # .pth or the converted .safetensors
    feats = inception_features(images_uint8, model)                  # (N, H, W, 3) uint8 -> float64 (N, 2048)
    frechet_distance(*statistics(feats_a), *statistics(feats_b)); kid(feats_a, feats_b)

The network is pytorch-fid's (src/pytorch_fid/inception.py, fid_inception_v3): torchvision's Inception-v3 with
1008 classes and no aux logits, whose Mixed_5b-5d (FIDInceptionA), 6b-6e (FIDInceptionC) and 7b (FIDInceptionE_1)
average-pool their pool branch without counting the padding, and whose Mixed_7c (FIDInceptionE_2) max-pools it.
Every conv has no bias and a BatchNorm with eps 1e-3, then ReLU. Input: uint8 -> [0, 1] -> bilinear 299 x 299
(align_corners=False, also at 299) -> 2x - 1. Feature: the 2048-d output of the final global average pool.
The weights are the user's file (no download here): pytorch-fid's release asset
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
"""

from __future__ import annotations

import utils  # noqa: F401  (CPU thread defaults before paddle loads)

import collections
import dataclasses
import hashlib
import io
import json
import os
import pickle
import sys
import warnings
import zipfile
from dataclasses import field

import numpy as np

from utils import UserError

WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch hub naming: the file name ends in the first 8 hex digits of its SHA-256
FEATURE_DIM = 2048
RESIZE = 299
NUM_CLASSES = 1008  # fc (unused for features) of the ported TensorFlow graph: 1008 outputs
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


# ---------------------------------------------------------------------------------------------
# the network (paddle is imported here only: the reader and the statistics need numpy alone)


def _build():
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F

    class BasicConv2d(nn.Layer):
        def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
            super().__init__()
            self.conv = nn.Conv2D(cin, cout, kernel_size, stride, padding, bias_attr=False)
            self.bn = nn.BatchNorm2D(cout, epsilon=1e-3)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg_pool(x):  # TensorFlow's average pool: the zero padding is not counted (exclusive)
        return F.avg_pool2d(x, 3, stride=1, padding=1, exclusive=True)

    class FIDInceptionA(nn.Layer):  # Mixed_5b/5c/5d: in x 35 x 35 -> (224 + pool_features) x 35 x 35
        def __init__(self, cin: int, pool_features: int):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 64, 1)  # 64
            self.branch5x5_1 = BasicConv2d(cin, 48, 1)
            self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)  # 64
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)  # 96
            self.branch_pool = BasicConv2d(cin, pool_features, 1)  # pool_features

        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return paddle.concat([b1, b5, b3, self.branch_pool(avg_pool(x))], axis=1)

    class InceptionB(nn.Layer):  # Mixed_6a: 288 x 35 x 35 -> 768 x 17 x 17
        def __init__(self, cin: int):
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)  # 384
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)  # 96

        def forward(self, x):
            b3 = self.branch3x3(x)
            bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return paddle.concat([b3, bd, F.max_pool2d(x, 3, stride=2)], axis=1)  # + 288

    class FIDInceptionC(nn.Layer):  # Mixed_6b-6e: 768 x 17 x 17 -> 768 x 17 x 17
        def __init__(self, cin: int, c7: int):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 192, 1)  # 192
            self.branch7x7_1 = BasicConv2d(cin, c7, 1)
            self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))  # 192
            self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))  # 192
            self.branch_pool = BasicConv2d(cin, 192, 1)  # 192

        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = self.branch7x7dbl_1(x)
            bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
            return paddle.concat([b1, b7, bd, self.branch_pool(avg_pool(x))], axis=1)

    class InceptionD(nn.Layer):  # Mixed_7a: 768 x 17 x 17 -> 1280 x 8 x 8
        def __init__(self, cin: int):
            super().__init__()
            self.branch3x3_1 = BasicConv2d(cin, 192, 1)
            self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)  # 320
            self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)  # 192

        def forward(self, x):
            b3 = self.branch3x3_2(self.branch3x3_1(x))
            b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return paddle.concat([b3, b7, F.max_pool2d(x, 3, stride=2)], axis=1)  # + 768

    class FIDInceptionE(nn.Layer):  # Mixed_7b (avg pool), 7c (max pool): in x 8 x 8 -> 2048 x 8 x 8
        def __init__(self, cin: int, max_pool: bool):
            super().__init__()
            self.max_pool = max_pool
            self.branch1x1 = BasicConv2d(cin, 320, 1)  # 320
            self.branch3x3_1 = BasicConv2d(cin, 384, 1)
            self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))  # 384
            self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))  # 384
            self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))  # 384
            self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))  # 384
            self.branch_pool = BasicConv2d(cin, 192, 1)  # 192

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = paddle.concat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = paddle.concat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=1)
            # FIDInceptionE_2 max-pools here (the TF graph's quirk); padded cells never win a max of >= 1 real cell
            pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg_pool(x)
            return paddle.concat([b1, b3, bd, self.branch_pool(pooled)], axis=1)

    class FIDInceptionV3(nn.Layer):
        """pytorch-fid's FID Inception, pool3 features only. Sub-layer names are torchvision's, so parameter
        names map 1:1 to the .pth keys (bn._mean / bn._variance = running_mean / running_var)."""

        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 32 x 149 x 149
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # 32 x 147 x 147
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # 64 x 147 x 147, max pool -> 64 x 73 x 73
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)  # 80 x 73 x 73
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # 192 x 71 x 71, max pool -> 192 x 35 x 35
            self.Mixed_5b = FIDInceptionA(192, 32)  # 256 x 35 x 35
            self.Mixed_5c = FIDInceptionA(256, 64)  # 288 x 35 x 35
            self.Mixed_5d = FIDInceptionA(288, 64)  # 288 x 35 x 35
            self.Mixed_6a = InceptionB(288)  # 768 x 17 x 17
            self.Mixed_6b = FIDInceptionC(768, 128)  # 768 x 17 x 17
            self.Mixed_6c = FIDInceptionC(768, 160)  # 768 x 17 x 17
            self.Mixed_6d = FIDInceptionC(768, 160)  # 768 x 17 x 17
            self.Mixed_6e = FIDInceptionC(768, 192)  # 768 x 17 x 17
            self.Mixed_7a = InceptionD(768)  # 1280 x 8 x 8
            self.Mixed_7b = FIDInceptionE(1280, max_pool=False)  # 2048 x 8 x 8
            self.Mixed_7c = FIDInceptionE(2048, max_pool=True)  # 2048 x 8 x 8
            self.sha256 = ""  # of the weight file loaded (load_inception); "" for random weights

        def forward(self, x):
            """x: float32 [B, 3, H, W] in [0, 1] -> [B, 2048]."""
            x = F.interpolate(x, size=(RESIZE, RESIZE), mode="bilinear", align_corners=False, align_mode=0)
            x = 2 * x - 1  # 3 x 299 x 299 in [-1, 1]
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(x, 3, stride=2)
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
            for block in (
                self.Mixed_5b,
                self.Mixed_5c,
                self.Mixed_5d,
                self.Mixed_6a,
                self.Mixed_6b,
                self.Mixed_6c,
                self.Mixed_6d,
                self.Mixed_6e,
                self.Mixed_7a,
                self.Mixed_7b,
                self.Mixed_7c,
            ):
                x = block(x)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)  # 2048

    return FIDInceptionV3


_CLASS = None


def FIDInceptionV3():  # noqa: N802  (a class, built on first use so that importing fid does not import paddle)
    """A new FID Inception (random weights) in eval mode; no fixed parameter names, so instances coexist."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build()
    model = _CLASS()
    model.eval()
    return model


def _torch_name(paddle_name: str) -> str:
    return paddle_name.replace("bn._mean", "bn.running_mean").replace("bn._variance", "bn.running_var")


def expected_shapes(model=None) -> dict[str, tuple[int, ...]]:
    """The .pth keys the network needs (torchvision's names) and their shapes, in the network's order."""
    model = model if model is not None else FIDInceptionV3()
    return {_torch_name(k): tuple(v.shape) for k, v in model.state_dict().items()}


def _optional_shapes(required: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    # in the file but not needed for features: the classifier and BatchNorm's step counters (torch >= 0.4.1)
    extra = {"fc.weight": (NUM_CLASSES, FEATURE_DIM), "fc.bias": (NUM_CLASSES,)}
    extra.update({k.replace("running_var", "num_batches_tracked"): () for k in required if k.endswith(".running_var")})
    return extra


def check_state_dict(sd: dict, where: str, required: dict[str, tuple[int, ...]]) -> None:
    """One UserError line naming the first key that is missing, unknown or of the wrong shape."""
    optional = _optional_shapes(required)
    for k, shape in required.items():
        if k not in sd:
            n = sum(q not in sd for q in required)
            raise UserError(
                f"{where}: no {k} ({n} of {len(required)} network weights missing); "
                "not pytorch-fid's FID Inception weights"
            )
        if tuple(sd[k].shape) != shape:
            raise UserError(f"{where}: {k} has shape {tuple(sd[k].shape)}, the FID Inception needs {shape}")
    for k, v in sd.items():
        if k not in required and k not in optional:
            raise UserError(f"{where}: unexpected key {k}; not pytorch-fid's FID Inception weights")
        if k in optional and tuple(v.shape) != optional[k]:
            raise UserError(f"{where}: {k} has shape {tuple(v.shape)}, the FID Inception needs {optional[k]}")


def set_weights(model, sd: dict[str, np.ndarray], where: str = "weights") -> None:
    """Copy a torchvision-named state dict into the model, after checking every key and shape (Paddle's
    set_state_dict only warns about a missing key and keeps the random value)."""
    own = model.state_dict()
    check_state_dict(sd, where, {_torch_name(k): tuple(v.shape) for k, v in own.items()})
    for k, p in own.items():
        p.set_value(np.ascontiguousarray(sd[_torch_name(k)], dtype=np.float32))


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """The state dict of a .pth (read_pth) or a .safetensors, and the SHA-256 of the original .pth (a file
    converted by fid.py carries it in its metadata; other .safetensors: their own)."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file; get pytorch-fid's weights from {WEIGHTS_URL}")
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="numpy") as f:
                digest = (f.metadata() or {}).get("source_sha256", "")
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
        except Exception as e:  # safetensors raises SafetensorError / OSError on a broken header
            raise UserError(f"{path}: not a readable safetensors file ({e})") from None
        digest = digest or sha256(path)  # not converted by fid.py: the file's own digest (still an identity)
    else:
        sd, digest = read_pth(path), sha256(path)
    return sd, digest


def _warn_unless_published(path, digest: str) -> None:
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        warnings.warn(
            f"{path}: SHA-256 {digest[:8]} is not {WEIGHTS_SHA256_PREFIX} (pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth): FID from these weights is not comparable to published numbers",
            stacklevel=3,  # the caller of load_inception / convert
        )


def load_inception(path: str | os.PathLike):
    """The FID Inception with the user's weights (.pth or converted .safetensors), in eval mode."""
    sd, digest = read_weights(path)
    model = FIDInceptionV3()
    set_weights(model, sd, str(path))
    _warn_unless_published(path, digest)  # after the key check: a wrong file fails with one line, no warning
    model.sha256 = digest
    return model


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Write the .pth's tensors (checked) as a .safetensors file that needs no unpickling to read; returns the
    SHA-256 of the source, kept in the metadata so that the converted file is recognised as pytorch-fid's."""
    from safetensors.numpy import save_file

    sd, digest = read_weights(src)
    check_state_dict(sd, str(src), expected_shapes())
    _warn_unless_published(src, digest)
    with utils.atomic_path(dst) as tmp:
        save_file(
            {k: v.copy(order="C") for k, v in sd.items()},
            tmp,
            metadata={"format": "pytorch-fid-inception", "source_sha256": digest},
        )
    return digest


def _is_safetensors(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < 1 << 27 and head[8:9] == b"{"


# ---------------------------------------------------------------------------------------------
# a PyTorch checkpoint without torch and without arbitrary unpickling
#
# torch.save writes a zip (torch >= 1.6): <name>/data.pkl, the pickled object, whose tensors refer by
# persistent id ("storage", <torch.FloatStorage>, key, location, numel) to raw little-endian storages
# <name>/data/<key>; older torch wrote the legacy stream: pickles of a magic number, protocol version and sys
# info, then the object (persistent id (..., view_metadata)), the list of storage keys, and each storage as an
# int64 element count plus its bytes. Both are read here. The unpickler resolves only the globals a tensor state
# dict holds; anything else (os.system, builtins.eval, any class) is refused before it is called.

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, _DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _TensorRef:  # a tensor whose storage may not have been read yet (the legacy format stores data after the pickle)
    def __init__(self, storage: tuple, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size


def _rebuild_tensor(storage, storage_offset, size, stride, *_):  # _rebuild_tensor_v2's requires_grad, hooks, metadata
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, where: str, storages: dict):
        super().__init__(f)
        self.where, self.storages = where, storages

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise UserError(
            f"{self.where}: refused: its pickle calls {module}.{name}, which a tensor state dict "
            "never does (only tensors, storages and OrderedDict are read)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UserError(f"{self.where}: refused: unknown persistent id {str(pid)[:60]}")
        key = str(pid[2])
        self.storages.setdefault(key, (pid[1], int(pid[4])))
        return key


def _load_pickle(data, where: str, storages: dict):
    try:
        return _RestrictedUnpickler(io.BytesIO(data) if isinstance(data, bytes) else data, where, storages).load()
    except UserError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, TypeError from a malformed stream
        raise UserError(f"{where}: not a PyTorch state dict ({type(e).__name__}: {e})") from None


def _as_array(raw: bytes, stype: _StorageType, numel: int, where: str, key: str) -> np.ndarray:
    if len(raw) < numel * stype.itemsize:
        raise UserError(f"{where}: storage {key} is truncated ({len(raw)} bytes, needs {numel * stype.itemsize})")
    if stype.dtype == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32
        return (np.frombuffer(raw, "<u2", numel).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, np.dtype(stype.dtype).newbyteorder("<"), numel)


def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch state dict file (torch.save, zip or legacy) as {name: numpy array}, without torch and without
    unpickling anything but tensors, storages and OrderedDict. Raises UserError with one line otherwise."""
    where = str(path)
    storages: dict[str, tuple[_StorageType, int]] = {}
    arrays: dict[str, np.ndarray] = {}
    if zipfile.is_zipfile(where):
        with zipfile.ZipFile(where) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if not pkl:
                raise UserError(f"{where}: a zip without <name>/data.pkl: not a torch.save file")
            prefix = pkl[0][: -len("data.pkl")]
            names = set(z.namelist())
            if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() != b"little":
                raise UserError(f"{where}: big-endian tensors are not supported")
            obj = _load_pickle(z.read(pkl[0]), where, storages)
            for key, (stype, numel) in storages.items():
                if prefix + f"data/{key}" not in names:
                    raise UserError(f"{where}: storage data/{key} missing from the archive")
                arrays[key] = _as_array(z.read(prefix + f"data/{key}"), stype, numel, where, key)
    else:
        with open(where, "rb") as f:
            if _load_pickle(f, where, {}) != _LEGACY_MAGIC:
                raise UserError(f"{where}: not a PyTorch checkpoint (neither a torch.save zip nor its legacy format)")
            _load_pickle(f, where, {})  # protocol version
            _load_pickle(f, where, {})  # sys info
            obj = _load_pickle(f, where, storages)
            keys = _load_pickle(f, where, {})
            if not isinstance(keys, list):
                raise UserError(f"{where}: malformed storage list")
            for key in keys:
                if key not in storages:
                    raise UserError(f"{where}: unknown storage {key}")
                stype, numel = storages[key]
                count = int.from_bytes(f.read(8), "little")
                arrays[key] = _as_array(f.read(count * stype.itemsize), stype, min(numel, count), where, key)
    if not isinstance(obj, dict):
        raise UserError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    out = {}
    for name, t in obj.items():
        if not isinstance(t, _TensorRef):
            raise UserError(f"{where}: {name} is a {type(t).__name__}, not a tensor")
        out[str(name)] = _materialize(t, arrays, where, str(name))
    return out


def _materialize(t: _TensorRef, arrays: dict, where: str, name: str) -> np.ndarray:
    base = arrays.get(t.storage)
    if base is None:
        raise UserError(f"{where}: {name} refers to a storage that is not in the file")
    if len(t.size) != len(t.stride) or min(t.size, default=1) < 0 or min(t.stride, default=0) < 0 or t.offset < 0:
        raise UserError(f"{where}: {name} has a malformed size {t.size} / stride {t.stride}")
    if 0 in t.size:
        return np.zeros(t.size, base.dtype)
    last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride, strict=True))
    if last >= len(base):
        raise UserError(f"{where}: {name} reaches past the end of its storage")
    if not t.size:  # 0-d (as_strided would keep the storage's shape)
        return np.array(base[t.offset])
    view = np.lib.stride_tricks.as_strided(base[t.offset :], t.size, [st * base.itemsize for st in t.stride])
    return np.array(view)  # a copy: the storage bytes belong to the file buffer


# ---------------------------------------------------------------------------------------------
# features and statistics


def default_batch_size() -> int:
    import paddle

    return 200 if "gpu" in paddle.device.get_device() else 25  # GPU: ~6 GFLOP an image; CPU: memory, not speed


def inception_features(images, weights, batch_size: int = 0, progress: bool = True) -> np.ndarray:
    """pool3 features of uint8 RGB images (N, H, W, 3), any size, as float64 (N, 2048). weights: a model from
    load_inception / FIDInceptionV3, or a weight file path. On paddle's current device, in batches."""
    import paddle
    from tqdm.auto import tqdm

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    model = load_inception(weights) if isinstance(weights, (str, os.PathLike)) else weights
    model.eval()
    bs = batch_size or default_batch_size()
    out = np.empty((len(images), FEATURE_DIM), np.float64)
    with (
        paddle.no_grad(),
        tqdm(total=len(images), desc="Inception features", unit="img", disable=not progress, leave=False) as bar,
    ):
        for i in range(0, len(images), bs):
            x = paddle.to_tensor(np.ascontiguousarray(images[i : i + bs].transpose(0, 3, 1, 2)))
            out[i : i + bs] = model(x.astype("float32") / 255).numpy()  # as ToTensor: uint8 / 255
            bar.update(len(out[i : i + bs]))
    return out


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples), float64, as pytorch-fid's calculate_activation_statistics."""
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"statistics need features (N >= 2, D), got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), as pytorch-fid's calculate_frechet_distance: eps * I added
    to both covariances when the square root of the product is not finite, an error when its diagonal has an
    imaginary part above 1e-3, else its real part."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: {mu1.shape} {sigma1.shape} vs {mu2.shape} {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # "matrix is singular": handled below, as pytorch-fid
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrt(S1 S2)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two sets of Inception features (N, 2048)."""
    return frechet_distance(*statistics(feats_a), *statistics(feats_b))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    # k(a, b) = (a.b / d + 1)^3; U-statistic for the within-set terms (diagonals dropped), all pairs across
    d, m = x.shape[1], len(x)
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kid(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
    (x.y / d + 1)^3, over `subsets` random subsets of min(subset_size, n) rows of each set (drawn without
    replacement, a from then b, numpy Generator(seed)); returns (mean, std) over the subsets."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid needs two feature arrays (N, D) of the same D, got {a.shape} and {b.shape}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"kid needs at least 2 samples in each set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    mmds = []
    for _ in range(subsets):
        ia, ib = rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)
        mmds.append(_mmd2_unbiased(a[ia], b[ib]))
    return float(np.mean(mmds)), float(np.std(mmds))


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ConvertConfig:
    weights: str = field(default="pt_inception-2015-12-05-6726825d.pth", metadata={"help": "pytorch-fid's weight file"})
    out: str = field(default="fid_inception.safetensors", metadata={"help": "the same weights as safetensors"})


def main(argv: list[str] | None = None) -> str:
    cfg = utils.parse_config(ConvertConfig, argv, description=__doc__)
    digest = convert(cfg.weights, cfg.out)
    print(f"wrote {cfg.out} (source SHA-256 {digest[:8]}); use it as evaluate.py --fid-weights {cfg.out}")
    return json.dumps({"out": cfg.out, "sha256": digest})


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
