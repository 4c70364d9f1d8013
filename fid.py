"""FID and KID as pytorch-fid computes them: its FID Inception-v3 in Paddle (inception.py), its weights (read by
pthfile.py, which needs no torch), the features, the Frechet distance and the kernel inception distance.

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

import dataclasses
import hashlib
import json
import os
import sys
import warnings
from dataclasses import field

import utils  # noqa: F401  (CPU thread defaults before paddle loads)
from utils import UserError

import numpy as np

import modelfile
import pthfile
from pthfile import read_pth  # noqa: F401  (fid.read_pth: part of this module's API)

WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch hub naming: the file name ends in the first 8 hex digits of its SHA-256
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # fc (unused for features) of the ported TensorFlow graph: 1008 outputs
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


# ---------------------------------------------------------------------------------------------
# the network is inception.py's, imported only here: the reader and the statistics need numpy alone


def FIDInceptionV3():  # noqa: N802  (imports inception.py, and so paddle, on first use: `import fid` loads neither)
    """A new FID Inception (random weights) in eval mode; no fixed parameter names, so instances coexist."""
    import inception

    model = inception.FIDInceptionV3()
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


def _check_weights(sd: dict, where: str, required: dict[str, tuple[int, ...]]) -> None:
    """One UserError line naming the first key that is missing, unknown or of the wrong shape: modelfile's
    check_tensors (any dtype: set_weights casts to float32), worded for pytorch-fid's file."""
    optional = {k: (shape, None) for k, shape in _optional_shapes(required).items()}
    try:
        modelfile.check_tensors(where, sd, {k: (s, None) for k, s in required.items()}, "FID Inception", "", optional)
    except modelfile.TensorMismatch as e:
        not_fid = "not pytorch-fid's FID Inception weights"
        if e.problem == "missing":
            raise UserError(
                f"{where}: no {e.name} ({e.count} of {e.total} network weights missing); {not_fid}"
            ) from None
        if e.problem == "unknown":
            raise UserError(f"{where}: unexpected key {e.name}; {not_fid}") from None
        if e.problem == "shape":
            raise UserError(f"{where}: {e.name} has shape {e.found}, the FID Inception needs {e.expected}") from None
        raise


def set_weights(model, sd: dict[str, np.ndarray], where: str = "weights") -> None:
    """Copy a torchvision-named state dict into the model, after checking every key and shape (Paddle's
    set_state_dict only warns about a missing key and keeps the random value)."""
    own = model.state_dict()
    _check_weights(sd, where, {_torch_name(k): tuple(v.shape) for k, v in own.items()})
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
    if modelfile.file_kind(path) != "safetensors":
        return pthfile.read(path, shapes)
    _, sd = modelfile.read_safetensors(path, shapes, "not pytorch-fid's FID Inception weights")
    return sd, sha256(path)


def _warn_unless_published(path, digest: str) -> None:
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        own = (
            " (a converted .safetensors has its own: use the .pth to check it)"
            if modelfile.file_kind(path) == "safetensors"
            else ""
        )
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
    _check_weights(sd, str(src), required)
    _warn_unless_published(src, digest)
    with utils.atomic_path(dst) as tmp:
        save_file(
            {k: v.copy(order="C") for k, v in sd.items()},
            tmp,
            metadata={"format": "pytorch-fid-inception", "source_sha256": digest},
        )
    return digest


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
    import device

    model = load_inception(weights) if isinstance(weights, (str, os.PathLike)) else weights
    model.eval()
    bs = batch_size or default_batch_size()
    out = np.empty((len(images), FEATURE_DIM), np.float64)
    with (
        device.strict_float32(paddle.device.get_device().split(":")[0]),  # no TF32 on Ampere+: see compute_key
        paddle.no_grad(),
        tqdm(total=len(images), desc="Inception features", unit="img", disable=not progress, leave=False) as bar,
    ):
        for i in range(0, len(images), bs):
            x = paddle.to_tensor(np.ascontiguousarray(images[i : i + bs].transpose(0, 3, 1, 2)))
            out[i : i + bs] = model(x.astype("float32") / 255).numpy()  # as ToTensor: uint8 / 255
            bar.update(len(out[i : i + bs]))
    return out


def compute_key() -> str:
    """What inception_features computes on, as the statistics cache records it: 'cpu float32', or 'gpu NAME float32'
    (strict float32: cuDNN's TF32, on by default in Paddle for Ampere and later, is off for the features). Features
    from another device differ in their last bits (other kernels), so a cache written on one is not used on another."""
    import paddle

    where = paddle.device.get_device()
    if not where.startswith("gpu"):
        return "cpu float32"
    return f"gpu {paddle.device.cuda.get_device_name()} float32"


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
