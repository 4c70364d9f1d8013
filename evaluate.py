"""Score generated faces against real ones with two metrics that need no download.

    python evaluate.py --ckpt output/generator.safetensors --data data/celeba64.npy --num 2000
    python evaluate.py --images output/faces --data data/celeba64.npy --json output/eval.json

- Face rate: the share of images in which scikit-image's bundled LBP frontal-face cascade finds a
  face. Real CelebA crops score high, noise and non-faces 0; a generator is as good as it gets close
  to the real rate.
- SWD: the sliced Wasserstein distance of Karras et al. 2018 (ProGAN) between the distributions of
  7x7 patches of a Laplacian pyramid (64, 32 and 16 px levels), x1e3. Lower is better; the 64 px level
  measures fine detail, the 16 px level the coarse layout and colours.

- FID and KID (with --fid-weights): pytorch-fid's numbers, from its Inception weights, which the user supplies
  (see fid.py). KID: mean and std over 100 subsets of min(1000, n) images, x1e3 in the table.

Real images are `--num` random rows of the packed .npy that pretreat.py writes; generated ones come
from generator.generate(), or from a folder of images with --images (cropped as
pretreat.py does; 64x64 images are used as they are). Both sets get the
same size. `--json PATH` also writes the numbers. Same --seed, same images, same patches, same number.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import utils  # first: sets CPU thread defaults before anything loads paddle
from utils import UserError

import numpy as np
from scipy.ndimage import convolve1d

import fid as fidlib  # numpy only at import: paddle loads when the Inception is built
from faces import SIZE, cores, read_folder, sample_packed
from fid import frechet_distance, kid  # noqa: F401  (part of evaluate's API)
from modelfile import CHECKPOINT_FILE, GENERATOR_FILE

SWD_AUTO_MAX = 20_000  # images per set above which --swd auto skips SWD: 50k images' patches take several GB
SHEETS = {"grid.png", "interpolation.png"}  # what generator.py writes beside the faces: not faces, skipped


@dataclass
class EvaluateConfig:
    ckpt: str = field(
        default=f"output/{GENERATOR_FILE}", metadata={"help": f"generator file (or train.py's {CHECKPOINT_FILE})"}
    )
    allow_pickle: bool = field(
        default=False, metadata={"help": "also read an old pickled .pdparams (only your own: unpickling can run code)"}
    )
    data: str = field(
        default="data/celeba64.npy", metadata={"help": "packed real images, uint8 (N, 64, 64, 3), from pretreat.py"}
    )
    num: int = field(default=2000, metadata={"help": "images per set (real and generated)"})
    seed: int = field(
        default=0, metadata={"help": "picks the real rows, the latent vectors, the SWD patches and projections"}
    )
    json: str | None = field(
        default=None, metadata={"help": "also write the results to this JSON file", "metavar": "PATH"}
    )
    fid_weights: str = field(
        default="",
        metadata={
            "help": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or its .safetensors): adds FID and KID",
            "metavar": "PATH",
        },
    )
    fid_stats: str = field(
        default="",
        metadata={
            "help": "cache of the real images' Inception statistics, reused while the real images and "
            "weights are the same",
            "metavar": "PATH.npz",
        },
    )
    fid_batch: int = field(default=0, metadata={"help": "images per Inception batch (0: 200 on a GPU, 25 on the CPU)"})
    images: str | None = field(
        default=None, metadata={"help": "score this folder of images, not --ckpt's", "metavar": "DIR"}
    )
    workers: int = field(default=0, metadata={"help": "threads for face detection (0: all usable cores)"})
    swd: str = field(
        default="auto",
        metadata={
            "help": f"the sliced Wasserstein distance: auto = on up to {SWD_AUTO_MAX} images (above, its patches take "
            "GBs), on, off",
            "choices": ["auto", "on", "off"],
        },
    )


# ---------------------------------------------------------------------------------------------
# face-detection rate
#
# Tuned on skimage.data.lfw_subset() upscaled to 64x64 (faces that fill the frame): faces 0.87 and
# their mirrors 0.87 (image or mirror, see _detect_block), the 100 non-faces 0.01, uniform noise 0.
# scale_factor 1.1 with step_ratio 1 (every position) is the usual exhaustive search; the cascade's own window
# is 24 px, so min_size 20 means "from the smallest window up", and max_size is the whole image.
# min_neighbor_number 4 and intersection_score_threshold 0.5 are scikit-image's defaults: with 3 neighbours
# LFW's non-faces start to pass (0.01), with 5 real faces drop (0.82).
FACE_PARAMS = dict(
    scale_factor=1.1, step_ratio=1.0, min_size=(20, 20), min_neighbor_number=4, intersection_score_threshold=0.5
)
_GRAY = np.float32([0.2125, 0.7154, 0.0721]) / 255  # skimage.color.rgb2gray's weights, uint8 -> [0, 1]
_local = threading.local()


def _cascade():
    # one cascade per thread: detect_multi_scale releases the GIL (2 threads: 1.7-2x), but sharing
    # one object between threads is not documented as safe; loading one takes ~4 ms
    if not hasattr(_local, "cascade"):
        import skimage.data
        import skimage.feature

        _local.cascade = skimage.feature.Cascade(skimage.data.lbp_frontal_face_cascade_filename())
    return _local.cascade


def _detect_block(gray: np.ndarray) -> np.ndarray:
    cascade, h, w = _cascade(), gray.shape[1], gray.shape[2]

    def found(g: np.ndarray) -> bool:
        return len(cascade.detect_multi_scale(g, max_size=(h, w), **FACE_PARAMS)) > 0

    # the cascade is not mirror-symmetric (LFW faces 0.86, the same faces mirrored 0.58): a face counts
    # when it is found in the image or in its mirror image, so the rate does not depend on which way it looks
    return np.array([found(g) or found(np.ascontiguousarray(g[:, ::-1])) for g in gray], dtype=bool)


def detect_faces(images: np.ndarray, workers: int = 0) -> np.ndarray:
    """One bool per image: does the LBP frontal-face cascade find a face in it?
    images: uint8 (N, H, W, 3) RGB or (N, H, W) gray."""
    images = np.asarray(images)
    if images.ndim == 4:
        gray = images.astype(np.float32) @ _GRAY
    elif images.ndim == 3:
        gray = images.astype(np.float32) / 255
    else:
        raise ValueError(f"expected images (N, H, W, 3) or (N, H, W), got shape {images.shape}")
    gray = np.ascontiguousarray(gray)
    blocks = [gray[i : i + 32] for i in range(0, len(gray), 32)]
    with ThreadPoolExecutor(workers or cores()) as pool:
        return np.concatenate([np.zeros(0, bool), *pool.map(_detect_block, blocks)])


def face_rate(images: np.ndarray, workers: int = 0) -> float:
    """Share of images (uint8 NHWC) in which a face is detected."""
    if len(images) == 0:
        raise ValueError("face_rate of no images")
    return float(detect_faces(images, workers).mean())


# ---------------------------------------------------------------------------------------------
# sliced Wasserstein distance (Karras et al. 2018; metrics/sliced_wasserstein.py of
# tkarras/progressive_growing_of_gans, vectorised; the same random draws in the same order)

SWD_PATCH = 7  # nhood_size
SWD_PATCHES_PER_IMAGE = 128  # nhoods_per_image
SWD_DIR_REPEATS = 4
SWD_DIRS_PER_REPEAT = 128
SWD_MIN_RES = 16
_BINOMIAL = np.float32([1, 4, 6, 4, 1]) / 16  # the 5x5 Gaussian of cv2.pyrDown is its outer product


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    # separable, so two 1-D passes equal the reference's 5x5 convolution; "mirror" = cv2's BORDER_REFLECT_101
    return convolve1d(convolve1d(x, kernel, axis=2, mode="mirror"), kernel, axis=3, mode="mirror")


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """uint8 NHWC -> float32 NCHW levels, finest first; the last one is the blurred residual."""
    pyramid = [np.transpose(images, (0, 3, 1, 2)).astype(np.float32)]
    for _ in range(1, levels):
        down = _blur(pyramid[-1], _BINOMIAL)[:, :, ::2, ::2]
        up = np.zeros_like(pyramid[-1])
        up[:, :, ::2, ::2] = down
        pyramid[-1] -= _blur(up, 2 * _BINOMIAL)  # 2*2 = the reference's 4x gain for the zero-filled samples
        pyramid.append(down)
    return pyramid


def _canonical(images: np.ndarray) -> np.ndarray:
    # patch positions are drawn per image in this (byte) order, so the distance depends on the set
    # of images and the seed only, not on the order they were listed in
    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return images[np.argsort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(), kind="stable")]


def _draw_positions(rng: np.random.Generator, pyramid: list[np.ndarray], per_image: int, half: int) -> list[tuple]:
    # as get_descriptors_for_minibatch: patch centres x, then y, uniform over the valid ones, per level
    out = []
    for level in pyramid:
        n, _, h, w = level.shape
        x = rng.integers(half, w - half, size=n * per_image)
        y = rng.integers(half, h - half, size=n * per_image)
        out.append((x, y))
    return out


def _descriptors(level: np.ndarray, x: np.ndarray, y: np.ndarray, per_image: int, patch: int) -> np.ndarray:
    """The patches as columns, (C*patch*patch, N*per_image) in the reference's (c, y, x) component
    order, each channel normalised by its mean and std over the whole set (finalize_descriptors)."""
    windows = np.lib.stride_tricks.sliding_window_view(level, (patch, patch), axis=(2, 3))  # (n, c, h', w', p, p)
    img = np.arange(len(x)) // per_image
    x0, y0 = x - patch // 2, y - patch // 2
    desc = np.empty((level.shape[1] * patch * patch, len(x)), np.float32)
    for i in range(0, len(x), 8192):  # gather and transpose in cache-sized blocks (2x faster than one big .T copy)
        s = slice(i, i + 8192)
        desc[:, s] = windows[img[s], :, y0[s], x0[s]].reshape(-1, desc.shape[0]).T
    # float64 statistics: the reference's float32 np.std over 2000 images' patches is ~1% off
    for ch in np.split(desc, level.shape[1]):  # one contiguous block of rows per channel
        ch -= ch.mean(dtype=np.float64)
        ch /= ch.std(dtype=np.float64)
    return desc


def _sliced_wasserstein(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, repeats: int, per_repeat: int, pool: ThreadPoolExecutor
) -> float:
    """a, b: descriptors as columns (components, patches). Mean over repeats, directions and patches of
    |sorted projection of a - sorted projection of b|, as the reference's sliced_wasserstein."""
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[0], per_repeat))
        dirs = (dirs / np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))).astype(np.float32)
        dirs_t = np.ascontiguousarray(dirs.T)
        proj_a = dirs_t @ a  # (direction, patch): each direction sorts over contiguous memory
        sorted_a = pool.submit(proj_a.sort, axis=1)  # sort releases the GIL: overlaps the next matmul
        proj_b = dirs_t @ b
        proj_b.sort(axis=1)
        sorted_a.result()
        np.subtract(proj_a, proj_b, out=proj_a)
        results.append(np.mean(np.abs(proj_a, out=proj_a), dtype=np.float64))
    return float(np.mean(results))


def swd(
    real: np.ndarray,
    fake: np.ndarray,
    seed: int = 0,
    *,
    patch: int = SWD_PATCH,
    patches_per_image: int = SWD_PATCHES_PER_IMAGE,
    dir_repeats: int = SWD_DIR_REPEATS,
    dirs_per_repeat: int = SWD_DIRS_PER_REPEAT,
) -> list[float]:
    """Sliced Wasserstein distance x1e3 per pyramid level, finest first (64, 32, 16 px for 64x64 images).
    real, fake: uint8 (N, H, W, 3), equally many. Random draws come from numpy's Generator(seed): real
    patch positions (per level: x then y), fake ones, then the projections (per level, per repeat)."""
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 4 or real.shape != fake.shape:
        raise ValueError(
            f"swd needs two uint8 (N, H, W, C) arrays of the same shape, got {real.shape} and {fake.shape}"
        )
    levels = 1
    while real.shape[1] >> levels >= SWD_MIN_RES:
        levels += 1
    rng = np.random.default_rng(seed)
    half = patch // 2
    pyr_real = laplacian_pyramid(_canonical(real), levels)
    pos_real = _draw_positions(rng, pyr_real, patches_per_image, half)
    pyr_fake = laplacian_pyramid(_canonical(fake), levels)
    pos_fake = _draw_positions(rng, pyr_fake, patches_per_image, half)
    dists = []
    with ThreadPoolExecutor(1) as pool:
        for (xr, yr), (xf, yf) in zip(pos_real, pos_fake, strict=True):
            a = _descriptors(pyr_real.pop(0), xr, yr, patches_per_image, patch)  # pop: free each level once used
            b = _descriptors(pyr_fake.pop(0), xf, yf, patches_per_image, patch)
            dists.append(_sliced_wasserstein(a, b, rng, dir_repeats, dirs_per_repeat, pool) * 1e3)
            del a, b
    return dists


# ---------------------------------------------------------------------------------------------
# inputs


# ---------------------------------------------------------------------------------------------
# FID / KID (fid.py holds the network, the weight reader and the statistics)

KID_REAL_MAX = 10000  # real features kept (and cached) for KID: its subsets take min(1000, n) of them
STATS_VERSION = 1


def inception_features(images: np.ndarray, weights, batch_size: int = 0, progress: bool = True) -> np.ndarray:
    """pytorch-fid's pool3 features of uint8 RGB images (N, H, W, 3) as float64 (N, 2048); weights: a path to
    pt_inception-2015-12-05-6726825d.pth (or its .safetensors conversion) or a model from fid.load_inception."""
    return fidlib.inception_features(images, weights, batch_size, progress)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet inception distance between two feature sets (N, 2048), float64 statistics as pytorch-fid."""
    return fidlib.fid(feats_a, feats_b)


def _images_sha256(images: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(str(images.shape).encode() + np.ascontiguousarray(images).tobytes()).hexdigest()


_STATS = {  # member: (dtype, shape; None: any count up to KID_REAL_MAX)
    "mu": ("<f8", (fidlib.FEATURE_DIM,)),
    "sigma": ("<f8", (fidlib.FEATURE_DIM, fidlib.FEATURE_DIM)),
    "kid_features": ("<f4", (None, fidlib.FEATURE_DIM)),
    "images_sha256": ("<U64", ()),
    "weights_sha256": ("<U64", ()),
    "version": ("<i8", ()),
    "device": ("<U", ()),  # optional: files written before it was part of the identity lack it
}


def _no_header(f):
    raise ValueError("an .npy format version other than 1.0 and 2.0")


def read_stats(path: str) -> dict | None:
    """The arrays of a --fid-stats file (None when there is none yet), each member's header checked (dtype, shape,
    size) before its data is read; UserError, one line, for anything else."""
    import zipfile
    import zlib

    from numpy.lib import format as fmt

    if not path or not os.path.exists(path):
        return None
    msg = f"{path}: not a statistics file of evaluate.py ({{}}); delete it to recompute"
    if not os.path.isfile(path):
        raise UserError(msg.format("a folder"))
    try:
        with zipfile.ZipFile(path) as z:
            for k, (dtype, shape) in _STATS.items():
                if k == "device" and k + ".npy" not in z.namelist():
                    continue
                info = z.getinfo(k + ".npy")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 1:
                    raise ValueError(f"{k} is compressed with method {info.compress_type} or encrypted")
                with z.open(info) as f:
                    header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
                    got, _, dt = header.get(fmt.read_magic(f), _no_header)(f)
                n = got[0] if shape[:1] == (None,) and got else None
                same_type = dt.str == dtype or (dtype[1] == "U" and dt.kind == "U" and dt.itemsize <= 512)
                if not same_type or got != tuple(n if s is None else s for s in shape):
                    raise ValueError(f"{k} is {dt.str} {got}")
                if n is not None and not 2 <= n <= KID_REAL_MAX or info.file_size > 4096 + dt.itemsize * np.prod(got):
                    raise ValueError(f"{k} holds {got[0] if got else 0} rows in {info.file_size} bytes")
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in _STATS if k in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise UserError(msg.format(" ".join(str(e).split())[:120] or type(e).__name__)) from None


def real_statistics(
    real: np.ndarray, model, cfg: EvaluateConfig, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(mu, sigma, features for KID, "cached" | "computed") of the real images; read from / written to --fid-stats,
    whose identity is the SHA-256 of the real images themselves (data file, --num, --seed) and of the weights, and the
    device the features were computed on (fid.compute_key: statistics from a CPU are not reused on a GPU).
    stats: the file's read_stats(), when the caller read it already (before the work)."""
    ident = {
        "images_sha256": _images_sha256(real),
        "weights_sha256": model.sha256,
        "device": fidlib.compute_key(),  # CPU and GPU features differ in their last bits: statistics of one only
        "version": STATS_VERSION,
    }
    path = cfg.fid_stats
    stats = stats if stats is not None else read_stats(path)
    if stats is not None:
        stored = {k: (int(stats[k]) if k == "version" else str(stats[k])) for k in ident if k in stats}
        if stored == ident:
            return stats["mu"], stats["sigma"], stats["kid_features"].astype(np.float64), "cached"
        changed = [k.split("_")[0] for k in ident if stored.get(k) != ident[k]]
        print(f"{path}: {' and '.join(changed)} changed since it was written: recomputing")
    feats = inception_features(real, model, cfg.fid_batch)
    mu, sigma = fidlib.statistics(feats)
    if len(feats) > KID_REAL_MAX:
        feats = feats[np.sort(np.random.default_rng(cfg.seed).choice(len(feats), KID_REAL_MAX, replace=False))]
    if path:
        with utils.atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz
            np.savez(
                f, mu=mu, sigma=sigma, kid_features=feats.astype(np.float32), num=len(real), data=cfg.data, **ident
            )
    return mu, sigma, feats, "computed"


def fid_kid(real: np.ndarray, fake: np.ndarray, cfg: EvaluateConfig, model=None, stats: dict | None = None) -> dict:
    """FID and KID of the generated images against the real ones; the keys they add to evaluate()'s dict.
    model: from fid.load_inception(cfg.fid_weights), loaded here when not given; stats: read_stats(cfg.fid_stats)."""
    model = model if model is not None else fidlib.load_inception(cfg.fid_weights)
    mu_r, sigma_r, kid_real, source = real_statistics(real, model, cfg, stats)
    feats = inception_features(fake, model, cfg.fid_batch)
    if len(feats) < 2:
        raise UserError(f"FID needs at least 2 generated images, got {len(feats)}")
    kid_mean, kid_std = kid(kid_real, feats, seed=cfg.seed)
    return {
        "fid": frechet_distance(mu_r, sigma_r, *fidlib.statistics(feats)),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "fid_num_real": len(real),
        "fid_num_fake": len(feats),
        "kid_subsets": fidlib.KID_SUBSETS,
        "kid_subset_size": min(fidlib.KID_SUBSET_SIZE, len(kid_real), len(feats)),
        "fid_weights": cfg.fid_weights,
        "fid_weights_sha256": model.sha256,
        "fid_real_stats": source,
    }


# ---------------------------------------------------------------------------------------------


def check_flags(cfg: EvaluateConfig) -> None:
    """The flags and paths, before any work (an FID run can take an hour before it would write --json)."""
    if cfg.num < 1:
        raise UserError(f"--num must be at least 1, got {cfg.num}")
    if cfg.workers < 0:
        raise UserError(f"--workers must be 0 (all usable cores) or a number of threads, got {cfg.workers}")
    if cfg.fid_batch < 0:
        raise UserError(f"--fid-batch must be 0 (automatic) or a number of images, got {cfg.fid_batch}")
    if cfg.json:
        utils.check_out_path(cfg.json, "--json", folder=False)
    if os.path.isdir(cfg.data) or not cfg.data.endswith(".npy"):
        raise UserError(f"{cfg.data}: --data must be a packed .npy of real images from pretreat.py")


def evaluate(cfg: EvaluateConfig) -> dict:
    """Face rate of real and generated images and their SWD; the dict that --json writes."""
    check_flags(cfg)
    t0 = time.perf_counter()
    stats = read_stats(cfg.fid_stats) if cfg.fid_weights else None  # bad files fail before the work
    inception = fidlib.load_inception(cfg.fid_weights) if cfg.fid_weights else None
    real = sample_packed(cfg.data, cfg.num, cfg.seed)
    if cfg.images:
        fake, _, skipped = read_folder(cfg.images, cfg.num, exclude=SHEETS)
        if skipped:  # an error, not a skip: the scores would silently cover other images than asked
            raise UserError(f"{Path(cfg.images) / skipped[0][0]}: cannot read this image ({skipped[0][1]})")
    else:
        from generator import generate  # imports paddle: only when generating

        fake = np.asarray(generate(cfg.ckpt, min(cfg.num, len(real)), cfg.seed, allow_pickle=cfg.allow_pickle))
    n = min(len(real), len(fake))
    real, fake = real[:n], fake[:n]  # SWD compares equally many patches
    run_swd = cfg.swd == "on" or (cfg.swd == "auto" and n <= SWD_AUTO_MAX)
    dists = swd(real, fake, seed=cfg.seed) if run_swd else []
    scores = fid_kid(real, fake, cfg, inception, stats) if inception is not None else {}
    return {
        "face_rate_real": face_rate(real, cfg.workers),
        "face_rate_fake": face_rate(fake, cfg.workers),
        "swd": dists,
        "swd_avg": float(np.mean(dists)) if run_swd else None,
        "swd_resolutions": [SIZE >> i for i in range(len(dists))],
        **(
            {}
            if run_swd
            else {"swd_skipped": f"--swd {cfg.swd}" + f", over {SWD_AUTO_MAX} images" * (n > SWD_AUTO_MAX)}
        ),
        "num_real": n,
        "num_fake": n,
        "seed": cfg.seed,
        "real": cfg.data,
        "fake": cfg.images or cfg.ckpt,
        **scores,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def format_table(r: dict) -> str:
    rows = [("", "real", "generated"), ("face rate", f"{r['face_rate_real']:.3f}", f"{r['face_rate_fake']:.3f}")]
    rows += [(f"SWD x1e3, {res} px", "", f"{d:.2f}") for res, d in zip(r["swd_resolutions"], r["swd"], strict=True)]
    rows.append(("SWD x1e3, avg", "", f"{r['swd_avg']:.2f}" if r["swd_avg"] is not None else "skipped"))
    if "fid" in r:
        rows.append(("FID", "", f"{r['fid']:.2f}"))
        rows.append(("KID x1e3", "", f"{r['kid_mean'] * 1e3:.2f}"))
        rows.append(("KID x1e3, std", "", f"{r['kid_std'] * 1e3:.2f}"))
        note = (
            f"(FID, KID: pytorch-fid's Inception, {r['fid_num_real']} real ({r['fid_real_stats']}) vs "
            f"{r['fid_num_fake']} generated; FID depends on n: compare equal n only; KID over "
            f"{r['kid_subsets']} subsets of {r['kid_subset_size']}; lower is better)"
        )
    else:
        note = f"(FID and KID: add --fid-weights pt_inception-2015-12-05-6726825d.pth, from {fidlib.WEIGHTS_URL})"
    return "\n".join(
        [
            f"{r['num_real']} real ({r['real']}) vs {r['num_fake']} generated ({r['fake']}), seed "
            f"{r['seed']}, {r['seconds']:.1f} s"
        ]
        + [f"{a:<18}{b:>8}{c:>11}" for a, b, c in rows]
        + [
            "(SWD: distance from the generated images' patches to the real ones; lower is better)"
            if r["swd_avg"] is not None
            else f"(SWD skipped: {r['swd_skipped']}; --swd on computes it)",
            note,
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    cfg = utils.parse_config(EvaluateConfig, argv, description=__doc__)
    result = evaluate(cfg)
    print(format_table(result))
    if cfg.json:
        utils.atomic_write_text(cfg.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {cfg.json}")
    return result


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
