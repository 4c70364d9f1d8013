"""Fill the missing part of faces with the trained DCGAN (Yeh et al. 2017, "Semantic Image Inpainting with
Deep Generative Models"), and project faces into z; `--arithmetic` runs the DCGAN paper's face arithmetic instead
(arithmetic.py).

    python complete.py --images photos/ --mask center --out output/completions     # a folder, any size
    python complete.py --images data/celeba64.npy --num 16 --mask random --missing 0.8
    python complete.py --mask file:my_mask.png --iters 500 --restarts 4             # white = missing
    python complete.py --images photos/ --fast        # seconds, not minutes, a face on a CPU (complete.FAST)
    python complete.py --ckpt output/generator.safetensors --arithmetic "3,5,9-1,2+4,8" --out output/arithmetic

Method (the paper's): with the mask M (missing pixels) and the image y in [-1, 1], Adam searches z for
    L(z) = || W * (G(z) - y) ||_1 + lam * log(1 - D(G(z)))
W_i = the share of missing pixels in the 7x7 window around a known pixel i (only the in-image pixels of the
window count), 0 on missing pixels: known pixels next to the hole matter most. --restarts random starts per
image; the one with the lowest final loss is kept. The images x restarts go through G and D in chunks of
--batch-size rows (default: all at once on a CPU, as many as half the GPU's free memory holds on a GPU), both in
eval mode (BatchNorm's running statistics: a face does not depend on its batch-mates, so chunks give the one-batch
result; tested). Then Poisson blending
(Eq. 6): inside the hole the output has the gradients of G(z), on its border it meets the known pixels
(--blend none pastes G(z) instead). Known pixels of the output are the input's, exactly.

Our z is N(0, I), not the paper's uniform [-1, 1] (which it clips to the cube after each step). A Gaussian z of
nz = 100 lies, with overwhelming probability, near the sphere of radius sqrt(nz), and G was trained only there;
so every start is scaled onto that sphere and every Adam step is followed by rescaling z back to norm
sqrt(nz): the same role as the paper's clipping, with no drift into latents G never saw.

Writes OUT/completed/NAME.png, OUT/generated/NAME.png (G(z) itself), OUT/masked/NAME.png (missing pixels
white), OUT/grid.png (per 8 images: a row of originals, of masked, of completed) and OUT/metrics.json: PSNR and
SSIM (scikit-image) over the whole image and over the missing pixels only, for this method and, on the same
images and masks, for skimage.restoration.inpaint_biharmonic and for mean-colour fill. SSIM over the hole is
the mean of scikit-image's SSIM map (7x7 uniform window, per channel) over the missing pixels; each number is
the mean over images (PSNR capped at 100 dB).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import utils
from utils import UserError

import numpy as np
import paddle

from arithmetic import Arithmetic, arithmetic, parse_arithmetic  # noqa: F401  (documented as complete.arithmetic)
from arithmetic import run as arithmetic_run
from faces import MAX_PIXELS, SIZE, make_grid, open_packed, read_folder, save_png, to_float, to_images, to_uint8
from modelfile import CHECKPOINT_FILE, models_of
from network import Discriminator, Generator, frozen_weights

WINDOW = 7  # the paper: "We use a window size of 7 in all experiments"
MASKS = ("center", "left", "eyes", "mouth", "random", "grid", "file:PATH")
# (top, bottom, left, right) at 64 px of the eyes and the mouth in pretreat.py's crop of CelebA's aligned faces
# (eye centres near rows 29-31, columns 24 and 40; the mouth near row 46, columns 27-38)
REGIONS = {"eyes": (22, 38, 12, 52), "mouth": (40, 54, 20, 44)}
BLENDS = ("poisson", "none")
PSNR_CAP = 100.0
GRID_COLS = 8
EPS = 1e-6  # keeps log(1 - D) finite when D is sure
# the interactive setting (--fast, the web app's default), chosen by measurement (docs/performance.md, "The fast
# setting"): 2 starts, 1100 steps from a large step size down a cosine to a small one (fast into the basin, then
# precise), no prior term (D's forward and backward would halve the steps that fit in the time: the hole PSNR on real
# faces did not need it), no early stop (the last small steps are the ones that make a face G can draw exact)
FAST = dict(iters=1100, restarts=2, lr=0.1, schedule="cosine", lam=0.0, patience=0)
SCHEDULES = ("constant", "cosine")
COSINE_END = 0.005  # the cosine schedule's last step size, a share of --lr
TOL = 1e-3  # early stopping: an improvement is a drop of more than this share of a start's best loss


@dataclass
class CompleteConfig:
    ckpt: str = field(
        default=f"output/{CHECKPOINT_FILE}", metadata={"help": "train.py's training checkpoint (it holds D too)"}
    )
    images: str = field(
        default="data/celeba64.npy",
        metadata={"help": "a folder of images (cropped as pretreat.py does) or a packed .npy"},
    )
    num: int = field(default=16, metadata={"help": "images to complete (0: all)"})
    offset: int = field(default=0, metadata={"help": "first image to take"})
    mask: str = field(
        default="center",
        metadata={"help": "center | left | eyes | mouth | random | grid | file:PATH (a PNG, white = missing)"},
    )
    missing: float = field(default=0.8, metadata={"help": "share of pixels missing with --mask random"})
    iters: int = field(default=1500, metadata={"help": "Adam steps on z"})
    restarts: int = field(default=8, metadata={"help": "random starts per image; the lowest final loss wins"})
    lam: float = field(default=0.003, metadata={"help": "weight of the prior loss log(1 - D(G(z))); 0: no D needed"})
    lr: float = field(default=0.01, metadata={"help": "Adam learning rate on z"})
    patience: int = field(
        default=0, metadata={"help": "stop once no start's loss improved by 0.1%% for this many steps (0: never)"}
    )
    schedule: str = field(
        default="constant",
        metadata={
            "help": f"Adam's step size: constant, or cosine from --lr to --lr x {COSINE_END}",
            "choices": SCHEDULES,
        },
    )
    fast: bool = field(
        default=False,
        metadata={
            "help": "the interactive setting, seconds a face on a CPU: --iters, --restarts, --lr, --schedule, --lam "
            "and --patience from FAST (1100 x 2, cosine from 0.1, no prior term)"
        },
    )
    blend: str = field(
        default="poisson", metadata={"help": "poisson blending, or none (paste G(z))", "choices": BLENDS}
    )
    seed: int = field(default=0, metadata={"help": "seeds the starts and the random masks"})
    ema: bool = field(default=True, metadata={"help": "use the checkpoint's EMA weights of G when it has them"})
    allow_pickle: bool = field(default=False, metadata={"help": "read a pickled model file (only one you trust)"})
    out: str = field(
        default="output/completions",
        metadata={"help": "folder for completed/, generated/, masked/, grid.png, metrics.json"},
    )
    arithmetic: str = field(
        default="",
        metadata={
            "help": "instead: face arithmetic A-B+C on generate(seed) faces, e.g. 3,5,9-1,2+4,8",
            "metavar": "A-B+C",
        },
    )
    batch_size: int = field(
        default=0,
        metadata={
            "help": "rows (image x start) through G and D at once; 0: by device (all on a CPU, what half the GPU's "
            "free memory holds on a GPU)"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


# ---------------------------------------------------------------------------------------------
# masks and the importance weights


def make_mask(kind: str, num: int = 1, missing: float = 0.8, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """bool [size, size], True = missing; for "random" [num, size, size], one mask per image from `seed`.

    center: the middle half (32x32 at 64); left: the left half; eyes, mouth: a box around them (REGIONS);
    random: `missing` of the pixels, all channels; grid: only one pixel in each 4x4 block known; file:PATH:
    a PNG, white = missing, resized to size x size (nearest) when it is not that size already."""
    m = np.zeros((size, size), bool)
    if kind == "center":
        m[size // 4 : size - size // 4, size // 4 : size - size // 4] = True
    elif kind == "left":
        m[:, : size // 2] = True
    elif kind in REGIONS:
        top, bottom, left, right = (v * size // SIZE for v in REGIONS[kind])
        m[top:bottom, left:right] = True
    elif kind == "grid":
        m[:] = True
        m[::4, ::4] = False
    elif kind == "random":
        if not 0 < missing < 1:
            raise UserError(f"--missing must be in (0, 1), got {missing}")
        k = round(missing * size * size)
        m = np.zeros((num, size * size), bool)
        for i in range(num):
            m[i, np.random.default_rng([seed, i]).permutation(size * size)[:k]] = True
        m = m.reshape(num, size, size)
    elif kind.startswith("file:"):
        m = _mask_file(kind[5:], size)
    else:
        raise UserError(f"--mask {kind!r}: not one of {', '.join(MASKS)}")
    check_mask(m, kind)
    return m


def _mask_file(path: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such mask file")
    if os.path.getsize(path) == 0:
        raise UserError(f"{path}: empty mask file (0 bytes)")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:  # before decoding: a small PNG can claim gigapixels
                raise UserError(f"{path}: a {img.width}x{img.height} mask image, over {MAX_PIXELS} pixels")
            gray = img.convert("L")
            if gray.size != (size, size):
                gray = gray.resize((size, size), Image.Resampling.NEAREST)
            return np.asarray(gray) > 127
    except Image.DecompressionBombError as e:  # Image.open's own check, over twice Pillow's limit
        raise UserError(f"{path}: mask image too large ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: not an image Pillow can read as a mask ({type(e).__name__})") from None


def check_mask(mask: np.ndarray, what: str = "mask") -> None:
    """Every image needs a missing pixel (else nothing to complete) and a known one (else nothing to match)."""
    m = mask.reshape(-1, *mask.shape[-2:])
    if not m.any(axis=(1, 2)).all():
        raise UserError(f"{what}: no pixel is missing (white = missing in a mask file)")
    if m.all(axis=(1, 2)).any():
        raise UserError(f"{what}: every pixel is missing; the completion needs known pixels to match")


def importance_weights(mask: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Eq. 3-4: float32 of mask's shape; a known pixel weighs the share of missing pixels among the in-image
    pixels of the window x window square centred on it (itself included), a missing pixel 0."""
    from scipy.ndimage import correlate

    m = np.asarray(mask, bool)
    flat = m.reshape(-1, *m.shape[-2:])
    box = np.ones((window, window))
    inside = correlate(np.ones(flat.shape[1:]), box, mode="constant")  # pixels of the window inside the image
    w = np.stack([correlate(x.astype(np.float64), box, mode="constant") / inside for x in flat])
    w[flat] = 0.0
    return w.reshape(m.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Poisson blending


def poisson_blend(known: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Eq. 6 for one image: x = argmin ||grad x - grad source||^2 over the missing pixels (mask True), x = known
    elsewhere. known, source: float (H, W, C); mask: bool (H, W). Per channel the normal equations are the
    discrete Poisson equation |N_p| x_p - sum_{q in N_p} x_q = sum_{q in N_p} (s_p - s_q) for each missing p,
    N_p its 4-neighbours inside the image, x_q = known_q for known q: one sparse LU per mask, three solves."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import factorized

    known, source = np.asarray(known, np.float64), np.asarray(source, np.float64)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    n = len(ys)
    index = np.full((h, w), -1)
    index[ys, xs] = np.arange(n)
    diag = np.zeros(n)
    rhs = np.zeros((n, known.shape[2]))
    rows, cols = [], []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
        p, qy, qx = np.nonzero(inside)[0], qy[inside], qx[inside]
        diag[p] += 1
        rhs[p] += source[ys[p], xs[p]] - source[qy, qx]
        hole = mask[qy, qx]
        rows.append(p[hole])
        cols.append(index[qy[hole], qx[hole]])
        np.add.at(rhs, p[~hole], known[qy[~hole], qx[~hole]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    A = sp.csc_matrix(
        (
            np.concatenate([diag, -np.ones(len(r))]),
            (np.concatenate([np.arange(n), r]), np.concatenate([np.arange(n), c])),
        ),
        shape=(n, n),
    )
    solve = factorized(A)
    out = known.copy()
    for ch in range(known.shape[2]):
        out[ys, xs, ch] = solve(rhs[:, ch])
    return out


# ---------------------------------------------------------------------------------------------
# the search over z


@dataclass
class Completion:
    completed: np.ndarray  # uint8 [N, 64, 64, 3]: known pixels from the input, the hole filled
    generated: np.ndarray  # uint8 [N, 64, 64, 3]: G(z) of the chosen start
    z: np.ndarray  # float32 [N, nz, 1, 1], the chosen start's final z
    loss: np.ndarray  # float32 [N]: its final loss (contextual + prior)
    restart_losses: np.ndarray  # float32 [N, restarts]: every start's final loss


NEEDS_D = f"the prior term (lam > 0) needs D: pass the training checkpoint ({CHECKPOINT_FILE}) or --lam 0 (lam=0)"


def _on_sphere(z: np.ndarray | paddle.Tensor, nz: int):
    """Scale each z [B, nz, 1, 1] to norm sqrt(nz)."""
    if isinstance(z, paddle.Tensor):
        return z * (math.sqrt(nz) / z.square().sum(axis=[1, 2, 3], keepdim=True).sqrt())
    return z * (math.sqrt(nz) / np.sqrt(np.square(z).sum(axis=(1, 2, 3), keepdims=True)))


@contextlib.contextmanager
def frozen(*models):
    """The models in eval mode (BatchNorm's running statistics: a face does not depend on its batch-mates) with no
    parameter gradients (the search's gradients are for z only) and, as nothing changes their weights meanwhile,
    oneDNN's reordered weights kept across steps (network.frozen_weights); their modes are restored afterwards."""
    models = [m for m in models if m is not None]
    was = [(m.training, [(p, p.stop_gradient) for p in m.parameters()]) for m in models]
    try:
        for m, (_, params) in zip(models, was, strict=True):
            m.eval()
            for p, _ in params:
                p.stop_gradient = True
        with frozen_weights():
            yield
    finally:
        for m, (training, params) in zip(models, was, strict=True):
            if training:
                m.train()
            for p, stop in params:
                p.stop_gradient = stop


class EarlyStop:
    """patience > 0: stop once no start's loss has dropped by more than TOL of its best for `patience` steps."""

    def __init__(self, patience: int):
        self.patience, self.best, self.stall = patience, None, 0

    def __call__(self, losses: paddle.Tensor) -> bool:
        if not self.patience:
            return False
        v = losses.numpy()
        improved = self.best is None or bool((v < self.best - TOL * np.abs(self.best)).any())
        self.best = v if self.best is None else np.minimum(self.best, v)
        self.stall = 0 if improved else self.stall + 1
        return self.stall >= self.patience


def check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")


def learning_rate(lr: float, it: int, iters: int, schedule: str) -> float:
    """Adam's step size at iteration `it` of `iters`: constant, or cosine from lr down to lr * COSINE_END (a large
    step finds the basin, the small ones at the end settle in it: the fast setting's precision)."""
    if schedule == "constant" or iters <= 1:
        return lr
    end = lr * COSINE_END
    return end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * it / (iters - 1)))


def expected_time(seconds_per_iteration: float, iters: int, n: int, restarts: int) -> str:
    """What a CPU run prints after timing its first iterations."""
    per = seconds_per_iteration
    return (
        f"complete: {per:.2f} s an iteration on the CPU ({n} images x {restarts} starts): about "
        f"{per * iters / 60:.1f} min for {iters} iterations (fewer --iters or --restarts: sooner)"
    )


def starts(n: int, restarts: int, nz: int, seed: int) -> paddle.Tensor:
    """z of every image x start [n * restarts, nz, 1, 1], on the sphere of radius sqrt(nz), as a parameter; start r of
    image i from default_rng([seed, i, r])."""
    z0 = np.stack(
        [np.random.default_rng([seed, i, r]).standard_normal((nz, 1, 1)) for i in range(n) for r in range(restarts)]
    )
    init = paddle.nn.initializer.Assign(_on_sphere(z0, nz).astype(np.float32))
    return paddle.create_parameter([n * restarts, nz, 1, 1], "float32", default_initializer=init)


def search(
    G: Generator,
    D: Discriminator | None,
    y: np.ndarray,
    weights: np.ndarray,
    iters: int,
    lam: float,
    restarts: int,
    lr: float = 0.01,
    seed: int = 0,
    progress: bool = False,
    patience: int = 0,
    batch_size: int = 0,
    schedule: str = "constant",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Adam on z for sum_i ||W_i * (G(z) - y_i)||_1 + lam * log(1 - D(G(z))), all images x restarts at once, through
    G and D in chunks of `batch_size` rows (0: by device, see rows_per_chunk); patience > 0: stop early (EarlyStop);
    schedule: the learning rate over the iterations (learning_rate).
    y: float32 [N, 3, 64, 64]; weights: [N, 64, 64] (broadcast over channels). An image's result does not depend on
    the others in the run (its starts are its own: `starts`).
    Returns the chosen z [N, nz, 1, 1], its G(z) float [N, 3, 64, 64], its loss [N] and all losses [N, R]."""
    from tqdm.auto import tqdm

    if lam > 0 and D is None:
        raise UserError("the prior term (lam > 0) needs D: pass the training checkpoint or lam=0")
    if batch_size < 0:
        raise UserError(f"batch size must be >= 0 (0: by device), not {batch_size}")
    n, nz = len(y), G.nz
    z = starts(n, restarts, nz, seed)
    target = paddle.to_tensor(np.repeat(y, restarts, axis=0))  # row i * R + r: image i, start r
    # [N*R, 3, 64, 64]: the weights spelled out over the channels; broadcast from [N*R, 1, 64, 64], the product and
    # its gradient took 0.35 ms more a step (Paddle's broadcasting kernels; a step is 1.45 ms at ngf 4, ~8 at 64)
    w = paddle.to_tensor(np.repeat(np.broadcast_to(np.asarray(weights, np.float32)[:, None], y.shape), restarts, 0))
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=[z])
    stop = EarlyStop(patience)
    check_schedule(schedule)

    def loss_of(x: paddle.Tensor, rows: slice) -> paddle.Tensor:  # [rows]
        contextual = (_rows(w, rows) * (x - _rows(target, rows)).abs()).sum(axis=[1, 2, 3])
        if lam <= 0:
            return contextual
        return contextual + lam * paddle.log(1.0 - D(x).clip(max=1.0 - EPS))

    with frozen(G, D), tqdm(range(iters), desc="complete", unit="it", disable=not progress) as bar:
        chunk = batch_size or rows_per_chunk(G, D, n * restarts)
        for it in bar:
            opt.clear_grad()
            per_start = through_chunks(G, z, loss_of, chunk)[0]  # the gradients are in z.grad
            if stop(per_start):
                break
            opt.set_lr(learning_rate(lr, it, iters, schedule))
            opt.step()
            with paddle.no_grad():
                z.set_value(_on_sphere(z, nz))
            if it == 0:  # the first step warms up: time the next two
                t0 = time.perf_counter()
            if it == 2 and progress and iters > 3 and z.place.is_cpu_place():
                tqdm.write(expected_time((time.perf_counter() - t0) / 2, iters, n, restarts))
            if progress and it % 20 == 0:
                bar.set_postfix(loss=f"{float(per_start.sum()) / (n * restarts):.3f}")
        with paddle.no_grad():
            losses, x = through_chunks(G, z, loss_of, chunk, grad=False)
            losses = losses.numpy().reshape(n, restarts)
    best = losses.argmin(axis=1)
    rows = np.arange(n) * restarts + best
    return z.numpy()[rows], x[rows], losses[np.arange(n), best], losses


def through_chunks(G: Generator, z: paddle.Tensor, loss_of, chunk: int, grad: bool = True):
    """loss_of(G(z[rows]), rows) for chunks of `chunk` rows of z. With grad: each chunk's backward adds its rows'
    gradients into z.grad (a row's loss depends on its own z only, G and D being in eval mode), so the Adam step after
    it is the one-batch step, and only one chunk's activations are alive at a time. Returns every row's loss [rows]
    (a tensor, detached) and, only without grad, G(z) as float32 [rows, 3, 64, 64]."""
    losses, xs = [], []
    for a in range(0, z.shape[0], chunk):
        rows = slice(a, min(a + chunk, z.shape[0]))
        x = G(_rows(z, rows))
        loss = loss_of(x, rows)
        if grad:
            loss.sum().backward()
        else:
            xs.append(x.numpy())
        losses.append(loss.detach())
    return (losses[0] if len(losses) == 1 else paddle.concat(losses)), (np.concatenate(xs) if xs else None)


def _rows(t: paddle.Tensor, rows: slice) -> paddle.Tensor:
    """t[rows]; t itself when the rows are all of it (one chunk, as on a CPU): no slice op and gradient node in each
    of the search's thousands of steps."""
    return t if (rows.start, rows.stop) == (0, t.shape[0]) else t[rows]


def rows_per_chunk(G: Generator, D: Discriminator | None, rows: int) -> int:
    """--batch-size 0: every row at once on a CPU (host memory); on a GPU as many rows as half its free memory
    holds, at 4 bytes x (G's and D's activations, kept for the backward pass, and their gradients) a row."""
    if not paddle.device.get_device().startswith("gpu"):
        return rows
    from dataReader import device_free_bytes

    ndf = D.ndf if D is not None else 0
    per_row = 4 * 2 * 3 * (1920 * (G.ngf + ndf) + 3 * SIZE * SIZE)  # conv, BN and ReLU outputs per layer, x2: grads
    return max(1, min(rows, int(0.5 * device_free_bytes()) // per_row))


def complete(
    ckpt,
    images_uint8: np.ndarray,
    mask: np.ndarray,
    iters: int = 1500,
    lam: float = 0.003,
    restarts: int = 8,
    blend: str = "poisson",
    seed: int = 0,
    lr: float = 0.01,
    use_ema: bool = True,
    allow_pickle: bool = False,
    progress: bool = False,
    patience: int = 0,
    batch_size: int = 0,
    schedule: str = "constant",
) -> Completion:
    """Complete uint8 faces [N, 64, 64, 3] where `mask` (bool [64, 64] or [N, 64, 64], True = missing) says.
    ckpt: the training checkpoint's path (a generator-only file when lam == 0), or a (G, D) pair of layers."""
    if blend not in BLENDS:
        raise UserError(f"blend must be one of {', '.join(BLENDS)}, not {blend!r}")
    if iters < 0 or restarts < 1 or lam < 0 or not lr > 0:
        raise UserError(f"need iters >= 0, restarts >= 1, lam >= 0, lr > 0 (got {iters}, {restarts}, {lam}, {lr})")
    check_schedule(schedule)
    y = to_float(images_uint8)
    masks = np.broadcast_to(np.asarray(mask, bool), (len(y), SIZE, SIZE))
    check_mask(masks)
    G, D = models_of(ckpt, lam > 0, use_ema, allow_pickle, NEEDS_D)
    w = importance_weights(masks)
    z, x, loss, losses = search(G, D, y, w, iters, lam, restarts, lr, seed, progress, patience, batch_size, schedule)
    generated = to_images(x)
    if blend == "poisson":
        x_hwc, y_hwc = np.transpose(x, (0, 2, 3, 1)), np.transpose(y, (0, 2, 3, 1))
        completed = to_uint8(np.stack([poisson_blend(y_hwc[i], x_hwc[i], m) for i, m in enumerate(masks)]))
    else:
        completed = generated
    completed = np.where(masks[..., None], completed, images_uint8)  # known pixels: the input's, exactly
    return Completion(completed, generated, z, loss, losses)


def invert(
    ckpt,
    images_uint8: np.ndarray,
    iters: int = 1500,
    seed: int = 0,
    restarts: int = 8,
    lr: float = 0.01,
    use_ema: bool = True,
    allow_pickle: bool = False,
    progress: bool = False,
    batch_size: int = 0,
) -> np.ndarray:
    """The z [N, nz, 1, 1] whose G(z) is closest (L1, every pixel weighted 1, no prior) to each uint8 face."""
    y = to_float(images_uint8)
    G, _ = models_of(ckpt, False, use_ema, allow_pickle)
    ones = np.ones((len(y), SIZE, SIZE), np.float32)
    return search(G, None, y, ones, iters, 0.0, restarts, lr, seed, progress, batch_size=batch_size)[0]


# ---------------------------------------------------------------------------------------------
# baselines and metrics


def inpaint_biharmonic(images_uint8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """skimage.restoration.inpaint_biharmonic per image (known pixels kept exactly)."""
    from skimage.restoration import inpaint_biharmonic as biharmonic

    masks = np.broadcast_to(mask, images_uint8.shape[:3])
    out = np.stack(
        [
            biharmonic(im.astype(np.float64) / 255.0, np.array(m), channel_axis=-1)
            for im, m in zip(images_uint8, masks, strict=True)
        ]
    )
    return np.where(masks[..., None], np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), images_uint8)


def mean_fill(images_uint8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The hole filled with the mean colour of each image's known pixels."""
    masks = np.broadcast_to(mask, images_uint8.shape[:3])
    out = images_uint8.copy()
    for im, m in zip(out, masks, strict=True):
        im[m] = np.rint(im[~m].reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    return out


def quality(original: np.ndarray, result: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean over images of PSNR (dB, capped at 100) and SSIM, over the whole image and over the missing pixels.
    SSIM: scikit-image's (7x7 uniform window, data range 255, per channel); over the hole: the mean of its SSIM
    map over the missing pixels."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    masks = np.broadcast_to(mask, original.shape[:3])
    rows = []
    for x, r, m in zip(original, result, masks, strict=True):
        ssim, smap = structural_similarity(x, r, channel_axis=2, data_range=255, full=True)
        psnr = [
            PSNR_CAP if np.array_equal(a, b) else min(PSNR_CAP, peak_signal_noise_ratio(a, b, data_range=255))
            for a, b in ((x, r), (x[m], r[m]))
        ]
        rows.append([psnr[0], ssim, psnr[1], float(smap[m].mean())])
    return dict(zip(["psnr", "ssim", "psnr_hole", "ssim_hole"], np.mean(rows, axis=0).round(4).tolist(), strict=True))


def format_table(metrics: dict) -> str:
    lines = [f"{'':<11}{'PSNR':>8}{'SSIM':>8}{'PSNR hole':>11}{'SSIM hole':>11}"]
    for k in ("dcgan", "biharmonic", "mean_fill"):
        v = metrics[k]
        lines.append(f"{k:<11}{v['psnr']:>8.2f}{v['ssim']:>8.3f}{v['psnr_hole']:>11.2f}{v['ssim_hole']:>11.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


def load_images(path: str, num: int = 0, offset: int = 0) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """uint8 [N, 64, 64, 3], their names and the skipped (name, reason): a packed .npy or a folder of images
    (any size, converted and cropped as pretreat.py does; unreadable files are skipped)."""
    if num < 0 or offset < 0:
        raise UserError(f"--num and --offset must be >= 0 (got {num}, {offset})")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such folder or .npy file")
    if p.is_dir():
        images, names, skipped = read_folder(p, num, offset)
        return images, [Path(name).with_suffix("").as_posix().replace("/", "_") for name in names], skipped
    if p.suffix.lower() != ".npy":
        raise UserError(f"{path}: not a folder of images or a packed .npy")
    arr = open_packed(p)
    if offset >= len(arr):
        raise UserError(f"{path}: --offset {offset} but the file holds {len(arr)} images")
    stop = min(len(arr), offset + num) if num else len(arr)
    return np.array(arr[offset:stop]), [f"{i:06d}" for i in range(offset, stop)], []


def masked_view(images_uint8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(np.broadcast_to(mask, images_uint8.shape[:3])[..., None], np.uint8(255), images_uint8)


def comparison_grid(rows: list[np.ndarray], ncol: int = GRID_COLS) -> np.ndarray:
    """Per block of `ncol` images, one row from each array of `rows` (e.g. originals, masked, completed)."""
    n = len(rows[0])
    blank = np.full((1, *rows[0].shape[1:]), 255, np.uint8)
    cells = []
    for s in range(0, n, ncol):
        for r in rows:
            block = r[s : s + ncol]
            cells += list(block) + list(np.repeat(blank, min(ncol, n) - len(block), axis=0))
    return make_grid(np.stack(cells), nrow=min(ncol, n))


def run(cfg: CompleteConfig) -> dict:
    """complete.py's job: with --arithmetic, face arithmetic (arithmetic.py); otherwise the completion."""
    out = Path(cfg.out)
    utils.check_out_path(out, "--out", folder=True)
    if cfg.arithmetic:
        arithmetic_run(cfg.ckpt, cfg.arithmetic, cfg.out, cfg.seed, cfg.ema, cfg.allow_pickle)
        return {}
    return run_completion(cfg)


def run_completion(cfg: CompleteConfig) -> dict:
    """Complete --images where --mask says; write the outputs and metrics.json; return the metrics."""
    out = Path(cfg.out)
    if cfg.fast:
        cfg = dataclasses.replace(cfg, **FAST)
    if cfg.iters < 0 or cfg.restarts < 1 or cfg.lam < 0 or not cfg.lr > 0 or cfg.patience < 0 or cfg.batch_size < 0:
        raise UserError(
            "need --iters >= 0, --restarts >= 1, --lam >= 0, --lr > 0, --patience >= 0, --batch-size >= 0 "
            f"(got {cfg.iters}, {cfg.restarts}, {cfg.lam}, {cfg.lr}, {cfg.patience}, {cfg.batch_size})"
        )
    images, names, skipped = load_images(cfg.images, cfg.num, cfg.offset)
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    mask = make_mask(cfg.mask, num=len(images), missing=cfg.missing, seed=cfg.seed)
    G, D = models_of(cfg.ckpt, cfg.lam > 0, cfg.ema, cfg.allow_pickle, NEEDS_D)  # every check before the long part
    print(
        f"{cfg.ckpt}: G nz={G.nz} ngf={G.ngf}"
        + (f", D ndf={D.ndf}" if D is not None else ", no prior (--lam 0)")
        + f"; {len(images)} images from {cfg.images}, mask {cfg.mask}, {cfg.iters} iterations x {cfg.restarts} starts"
    )
    t0 = time.perf_counter()
    c = complete(
        (G, D), images, mask, cfg.iters, cfg.lam, cfg.restarts, cfg.blend, cfg.seed, cfg.lr,
        progress=cfg.progress, patience=cfg.patience, batch_size=cfg.batch_size, schedule=cfg.schedule,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    baselines = {"biharmonic": inpaint_biharmonic(images, mask), "mean_fill": mean_fill(images, mask)}
    metrics = {
        "dcgan": quality(images, c.completed, mask),
        **{k: quality(images, v, mask) for k, v in baselines.items()},
        "mask": cfg.mask,
        "missing": float(np.broadcast_to(mask, images.shape[:3]).mean().round(4)),
        "images": len(images),
        "iters": cfg.iters,
        "restarts": cfg.restarts,
        "lam": cfg.lam,
        "lr": cfg.lr,
        "patience": cfg.patience,
        "schedule": cfg.schedule,
        "blend": cfg.blend,
        "seed": cfg.seed,
        "seconds": round(seconds, 2),
        "ckpt": cfg.ckpt,
        "names": names,
    }
    masked = masked_view(images, mask)
    for kind, arr in (("completed", c.completed), ("generated", c.generated), ("masked", masked)):
        for name, im in zip(names, arr, strict=True):
            save_png(im, out / kind / f"{name}.png")
    save_png(comparison_grid([images, masked, c.completed]), out / "grid.png")
    utils.atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(format_table(metrics))
    print(
        f"{len(images)} images in {seconds:.1f} s -> {out}/completed/, generated/, masked/; grid {out / 'grid.png'}; "
        f"metrics {out / 'metrics.json'}"
    )
    return metrics


def main(argv: list[str] | None = None) -> None:
    run(utils.parse_config(CompleteConfig, argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
