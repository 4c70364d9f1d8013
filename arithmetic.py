"""Face arithmetic (Radford et al. 2015, Fig. 7): G(mean z(A) - mean z(B) + mean z(C)) and its neighbours.

    python complete.py --ckpt output/generator.safetensors --arithmetic "3,5,9-1,2+4,8" --out output/arithmetic

A group is a list of indices of generator.generate(G, seed=seed) faces, or (from Python) uint8 [k, 64, 64, 3] real
faces, which are first projected into z with complete.invert. Writes OUT/arithmetic.png: a row per group (its faces,
then the face of its mean z), then the result and its neighbours at z + 0.25 * N(0, I), as in the paper's figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from utils import UserError

import numpy as np

import faces
from generator import latent, sample
from modelfile import generator_of
from network import Generator


@dataclass
class Arithmetic:
    faces: np.ndarray  # uint8 [1 + neighbours, 64, 64, 3]: G(mean(A) - mean(B) + mean(C)), then its neighbours
    z: np.ndarray  # float32 [nz, 1, 1]: mean(A) - mean(B) + mean(C)
    grid: np.ndarray  # uint8 image: a row per group (its faces, then G of its mean z), then the result row


def group_latents(G: Generator, name: str, group, seed: int, iters: int, restarts: int) -> np.ndarray:
    """The z [k, nz, 1, 1] of one group: generated faces by index, or real uint8 faces projected into z."""
    if isinstance(group, np.ndarray) and group.dtype == np.uint8:
        from complete import invert  # (complete imports this module)

        return invert(G, group, iters=iters, seed=seed, restarts=restarts)
    idx = np.asarray(list(group), dtype=np.int64)
    if idx.ndim != 1 or not len(idx) or idx.min() < 0:
        raise UserError(f"group {name}: needs face indices >= 0 or uint8 [k, 64, 64, 3] images, got {group!r}")
    return latent(int(idx.max()) + 1, G.nz, seed)[idx]


def arithmetic(
    ckpt,
    a,
    b,
    c,
    seed: int = 0,
    neighbours: int = 8,
    noise: float = 0.25,
    iters: int = 1500,
    restarts: int = 8,
    use_ema: bool = True,
    allow_pickle: bool = False,
) -> Arithmetic:
    """G(mean(A) - mean(B) + mean(C)) and `neighbours` faces at z + noise * N(0, I) (the paper's 0.25).
    ckpt: a Generator or a model file. The means are not rescaled: the paper averages its z as is."""
    G = generator_of(ckpt, use_ema, allow_pickle)
    groups = [group_latents(G, n, g, seed, iters, restarts) for n, g in (("A", a), ("B", b), ("C", c))]
    means = [z.mean(axis=0) for z in groups]
    z = (means[0] - means[1] + means[2]).astype(np.float32)
    jitter = noise * np.random.default_rng([seed, 7]).standard_normal((neighbours, *z.shape)).astype(np.float32)
    result = sample(G, np.concatenate([z[None], z[None] + jitter]))
    ncol = max(max(len(g) for g in groups) + 1, len(result))
    blank = np.full((faces.SIZE, faces.SIZE, 3), 255, np.uint8)
    cells = []
    for g, m in zip(groups, means, strict=True):
        row = list(sample(G, np.concatenate([g, m[None]])))
        cells += row[:-1] + [blank] * (ncol - len(row)) + row[-1:]
    cells += list(result) + [blank] * (ncol - len(result))
    return Arithmetic(result, z, faces.make_grid(np.stack(cells), nrow=ncol))


def parse_arithmetic(text: str) -> tuple[list[int], list[int], list[int]]:
    """ "3,5,9-1,2+4,8" -> ([3, 5, 9], [1, 2], [4, 8])"""
    m = re.fullmatch(r"\s*([\d,\s]+)-([\d,\s]+)\+([\d,\s]+)", text)
    groups = [[int(v) for v in g.replace(",", " ").split()] for g in m.groups()] if m else []
    if not m or not all(groups):
        raise UserError(f"--arithmetic {text!r}: expected A-B+C with comma-separated face indices, e.g. 3,5,9-1,2+4,8")
    return groups[0], groups[1], groups[2]


def run(ckpt: str, expression: str, out: str, seed: int = 0, use_ema: bool = True, allow_pickle: bool = False) -> Path:
    """complete.py --arithmetic A-B+C: the grid of generate(seed) faces' arithmetic as OUT/arithmetic.png."""
    a, b, c = parse_arithmetic(expression)
    result = arithmetic(generator_of(ckpt, use_ema, allow_pickle), a, b, c, seed=seed)
    path = Path(out) / "arithmetic.png"
    faces.save_png(result.grid, path)
    print(f"G(mean {a} - mean {b} + mean {c}) of generate(seed={seed}) faces, and 8 neighbours -> {path}")
    return path
