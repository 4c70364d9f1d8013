"""FID and KID as pytorch-fid computes them: its FID Inception-v3 in Paddle, its weights (read by pthfile.py, which
needs no torch), the features, the Frechet distance and the kernel inception distance.

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

import dataclasses
import hashlib
import json
import os
import sys
import warnings
from dataclasses import field

import numpy as np

import pthfile
from pthfile import read_pth  # noqa: F401  (fid.read_pth: part of this module's API)
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


def weight_shapes(model=None) -> dict[str, tuple[int, ...]]:
    """Every key a weight file may hold and its shape: the network's (expected_shapes) and the optional ones."""
    required = expected_shapes(model)
    return {**required, **_optional_shapes(required)}


def read_weights(
    path: str | os.PathLike, shapes: dict[str, tuple[int, ...]] | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """The state dict of a .pth (pthfile.read) or a .safetensors, and the SHA-256 of the bytes read. shapes: the
    keys and shapes allowed (default weight_shapes()), checked before any tensor is read. A `source_sha256` in a
    converted file's metadata is a claim anyone can write: it is not used."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file; get pytorch-fid's weights from {WEIGHTS_URL}")
    shapes = shapes if shapes is not None else weight_shapes()
    if not _is_safetensors(path):
        return pthfile.read(path, shapes)
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            for k in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                if k not in shapes or tuple(f.get_slice(k).get_shape()) != shapes[k]:
                    got = f"shape {tuple(f.get_slice(k).get_shape())}" if k in shapes else "an unexpected key"
                    raise UserError(f"{path}: {k[:80]} has {got}; not pytorch-fid's FID Inception weights")
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except UserError:
        raise
    except Exception as e:  # safetensors raises SafetensorError / OSError on a broken header
        raise UserError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())[:160]})") from None
    return sd, sha256(path)


def _warn_unless_published(path, digest: str) -> None:
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        own = " (a converted .safetensors has its own: use the .pth to check it)" if _is_safetensors(path) else ""
        warnings.warn(
            f"{path}: SHA-256 {digest[:8]} is not {WEIGHTS_SHA256_PREFIX} (pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth){own}: FID from these weights is not comparable to published "
            "numbers",
            stacklevel=3,  # the caller of load_inception / convert
        )


def load_inception(path: str | os.PathLike):
    """The FID Inception with the user's weights (.pth or converted .safetensors), in eval mode."""
    model = FIDInceptionV3()
    sd, digest = read_weights(path, weight_shapes(model))
    set_weights(model, sd, str(path))
    _warn_unless_published(path, digest)  # after the key check: a wrong file fails with one line, no warning
    model.sha256 = digest
    return model


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Write the .pth's tensors (checked) as a .safetensors file that needs no unpickling to read; returns the
    SHA-256 of the source, written into the metadata for people (readers never believe it: they hash what they read)."""
    from safetensors.numpy import save_file

    required = expected_shapes()
    sd, digest = read_weights(src, {**required, **_optional_shapes(required)})
    check_state_dict(sd, str(src), required)
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
