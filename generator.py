"""Generate faces with a trained generator: one 64x64 PNG per face, a grid, interpolations, an inference model.

    python generator.py                                      # 64 faces: output/generator.safetensors -> output/faces/
    python generator.py --num 16 --seed 7 --out my_faces     # other faces, elsewhere
    python generator.py --interpolate 10 --pairs 4           # + output/faces/interpolation.png: 4 rows of 10 steps
    python generator.py --interpolate 16 --pairs 4 --gif     # + interpolation.gif: the 4 walks side by side, animated
    python generator.py --num 0 --export output/inference    # only a Paddle Inference model (paddle.jit.save), verified
    python generator.py --ckpt output/checkpoint.safetensors --no-ema  # train.py's full checkpoint, plain G (not EMA)
    python generator.py --ckpt old/generator.pdparams --allow-pickle   # your file from an earlier version (a pickle)

It needs only the file train.py wrote. Noise: z ~ N(0, 1), shape [B, nz, 1, 1], drawn with
numpy.random.default_rng(seed), so a seed gives the same faces whatever else used the global RNGs (and, with
--bn running, face i is the same for any --num > i). Row i of the interpolation is a spherical path (slerp)
from face 2i to face 2i+1 of the same seed, both ends included.

--bn running normalises with the statistics G kept during training (G.eval()); --bn batch with those of each
batch of up to 128 faces, as G ran in training (a face then depends on the others in its batch; an exported
model in this mode normalises each batch it is given). Neither mode changes the loaded weights or statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import field
from pathlib import Path

import utils  # before paddle: CPU thread defaults

import numpy as np
import paddle
import paddle.nn as nn

from faces import make_grid, save_gif, save_png, to_images
from modelfile import CHECKPOINT_FILE, GENERATOR_FILE, generator_of, load_generator
from network import Generator

BN_MODES = ("running", "batch")
# running: face rate (evaluate.face_rate, 500 faces x 5 seeds) as high as batch's or higher on demo-set generators
# (ngf 16 @600 it: 0.302 vs 0.270; ngf 32 @450 it: 0.618 vs 0.605), and a face does not depend on its batchmates
BN_DEFAULT = "running"
CHUNK = 128  # faces per forward pass; in --bn batch also the set whose statistics normalise them (= training's batch)
EXPORT_ATOL = 1e-5


@dataclasses.dataclass
class GeneratorConfig:
    ckpt: str = field(
        default=f"output/{GENERATOR_FILE}", metadata={"help": f"{GENERATOR_FILE}, or train.py's {CHECKPOINT_FILE}"}
    )
    allow_pickle: bool = field(
        default=False, metadata={"help": "also read an old pickled .pdparams (only your own: unpickling can run code)"}
    )
    num: int = field(default=64, metadata={"help": "faces to write (0: none)"})
    seed: int = field(default=0, metadata={"help": "noise seed; the same seed gives the same faces"})
    out: str = field(
        default="output/faces", metadata={"help": "folder for face_0000.png..., grid.png, interpolation.png"}
    )
    bn: str = field(
        default=BN_DEFAULT,
        metadata={"help": "BatchNorm statistics: saved running ones, or the batch's", "choices": BN_MODES},
    )
    ema: bool = field(default=True, metadata={"help": f"with a {CHECKPOINT_FILE}, use its EMA weights if it has them"})
    interpolate: int = field(
        default=0, metadata={"help": "steps per interpolation row, ends included (0: none)", "metavar": "K"}
    )
    pairs: int = field(default=8, metadata={"help": "interpolation rows: row i goes from face 2i to face 2i+1"})
    gif: bool = field(
        default=False, metadata={"help": "with --interpolate, also interpolation.gif: all rows walking at once"}
    )
    export: str = field(
        default="", metadata={"help": "also save a Paddle Inference model in this folder", "metavar": "DIR"}
    )


# ---------------------------------------------------------------------------------------------
# sampling


def latent(num: int, nz: int = 100, seed: int = 0) -> np.ndarray:
    """z ~ N(0, 1) as float32 [num, nz, 1, 1], from a generator of its own (not paddle's or numpy's global one)."""
    return np.random.default_rng(seed).standard_normal((num, nz, 1, 1)).astype(np.float32)


def slerp(z0: np.ndarray, z1: np.ndarray, steps: int) -> np.ndarray:
    """`steps` points on the great-circle arc from z0 to z1, both included, shape [steps, *z0.shape].

    Not a straight line: Gaussian latents lie near a sphere of radius sqrt(nz), and a line's midpoint is a
    shorter vector than G ever saw in training (White 2016, "Sampling generative networks")."""
    a, b = z0.ravel().astype(np.float64), z1.ravel().astype(np.float64)
    omega = np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if np.sin(omega) < 1e-6:  # (anti)parallel: the arc is not unique, take the line
        path = (1 - t) * a + t * b
    else:
        path = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    path = path.astype(np.float32).reshape((steps, *z0.shape))
    path[0], path[-1] = z0, z1  # exactly: a row starts and ends on the faces of z0 and z1
    return path


class BatchStatNorm(nn.Layer):
    """BatchNorm2D with the batch's own mean and biased variance, as BN computes them in training, but without
    writing the running statistics: Paddle's BN in train mode updates them in place, even under no_grad."""

    def __init__(self, bn: nn.BatchNorm2D):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, float(bn._epsilon)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        mean = x.mean(axis=[0, 2, 3], keepdim=True)
        var = (x - mean).square().mean(axis=[0, 2, 3], keepdim=True)
        scale = self.weight.reshape([1, -1, 1, 1]) * paddle.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.reshape([1, -1, 1, 1])


@contextlib.contextmanager
def sampling_net(G: Generator, bn: str = BN_DEFAULT) -> Iterator[nn.Layer]:
    """G in BN mode `bn` (eval; for "batch" a network sharing G's weights with BatchStatNorm in place of BN).
    G's train/eval mode is restored afterwards, so a notebook can sample in the middle of training."""
    if bn not in BN_MODES:
        raise utils.UserError(f"bn must be one of {', '.join(BN_MODES)}, not {bn!r}")
    was_training = G.training
    G.eval()
    try:
        yield (
            G
            if bn == "running"
            else nn.Sequential(*[BatchStatNorm(m) if isinstance(m, nn.BatchNorm2D) else m for m in G.main])
        )
    finally:
        if was_training:
            G.train()


@paddle.no_grad()
def sample(G: Generator, z: np.ndarray, bn: str = BN_DEFAULT) -> np.ndarray:
    """The faces of latent points z [B, nz, 1, 1] as uint8 [B, 64, 64, 3] ((x + 1) * 127.5, rounded, clipped)."""
    with sampling_net(G, bn) as net:
        out = [to_images(net(paddle.to_tensor(z[i : i + CHUNK]))) for i in range(0, len(z), CHUNK)]
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


def generate(
    ckpt: str | os.PathLike | nn.Layer,
    num: int = 64,
    seed: int = 0,
    bn: str = BN_DEFAULT,
    use_ema: bool = True,
    allow_pickle: bool = False,
) -> np.ndarray:
    """`num` faces as uint8 [num, 64, 64, 3] from a model file path or a Generator layer."""
    G = generator_of(ckpt, use_ema, allow_pickle)
    return sample(G, latent(num, G.nz, seed), bn)


def interpolate(
    ckpt: str | os.PathLike | nn.Layer,
    steps: int = 8,
    pairs: int = 8,
    seed: int = 0,
    bn: str = BN_DEFAULT,
    use_ema: bool = True,
    allow_pickle: bool = False,
) -> np.ndarray:
    """uint8 [pairs, steps, 64, 64, 3]: row i walks (slerp) from face 2i to face 2i+1 of generate(ckpt, seed=seed)."""
    if steps < 2 or pairs < 1:
        raise utils.UserError(f"interpolation needs at least 2 steps and 1 pair (got {steps} steps, {pairs} pairs)")
    G = generator_of(ckpt, use_ema, allow_pickle)
    z = latent(2 * pairs, G.nz, seed)
    faces = sample(G, np.concatenate([slerp(z[2 * i], z[2 * i + 1], steps) for i in range(pairs)]), bn)
    return faces.reshape(pairs, steps, *faces.shape[1:])


def gif_frames(rows: np.ndarray) -> np.ndarray:
    """The frames of an interpolation GIF from rows uint8 [pairs, steps, 64, 64, 3]: frame t shows step t of every
    row side by side; the walk goes there and back (steps 0..K-1, then K-2..1) so that the loop has no jump."""
    order = list(range(rows.shape[1])) + list(range(rows.shape[1] - 2, 0, -1))
    return np.stack([make_grid(rows[:, t], nrow=len(rows)) for t in order])


# ---------------------------------------------------------------------------------------------
# export for Paddle Inference


class ExportMismatch(RuntimeError):
    """The exported model does not reproduce the eager generator."""


def export(
    ckpt: str | os.PathLike | nn.Layer,
    out_dir: str | os.PathLike,
    bn: str = BN_DEFAULT,
    use_ema: bool = True,
    allow_pickle: bool = False,
) -> tuple[list[Path], float]:
    """Save G (in BN mode `bn`) with paddle.jit.save as out_dir/generator.* with input z [None, nz, 1, 1] float32,
    reload it with paddle.jit.load and compare it with eager G on two batch sizes. Returns the files and the max
    abs difference; raises ExportMismatch (and writes nothing) when it exceeds EXPORT_ATOL."""
    G = generator_of(ckpt, use_ema, allow_pickle)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out_dir))  # files appear in out_dir only once verified
    try:
        with sampling_net(G, bn) as net, paddle.no_grad():
            spec = paddle.static.InputSpec([None, G.nz, 1, 1], "float32", "z")
            paddle.jit.save(net, str(tmp / "generator"), input_spec=[spec])
            loaded = paddle.jit.load(str(tmp / "generator"))
            loaded.eval()
            diff = 0.0
            for n in (8, 3):  # two batch sizes: the batch dimension must have stayed dynamic
                z = paddle.to_tensor(latent(n, G.nz, seed=n))
                diff = max(diff, float((loaded(z) - net(z)).abs().max()))
        if not diff <= EXPORT_ATOL:  # `not <=` so that NaN fails too
            raise ExportMismatch(
                f"exported generator differs from the eager one by {diff:.3g} (> {EXPORT_ATOL:g}); nothing written"
            )
        files = []
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
            files.append(out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files, diff


# ---------------------------------------------------------------------------------------------
# command line


OWN_FACE = re.compile(r"face_\d{4,}\.png")  # the names run() gives the faces it writes


def remove_old_faces(out: Path) -> None:
    """Remove the face_NNNN.png an earlier run wrote to `out` (only files of that name), with one line: a folder
    never mixes the faces of two runs (a new --num 16 over an old --num 64 would leave 48 old ones)."""
    old = [p for p in out.glob("face_*.png") if OWN_FACE.fullmatch(p.name) and p.is_file()] if out.is_dir() else []
    for p in old:
        p.unlink()
    if old:
        print(f"generator.py: removed {len(old)} faces of an earlier run from {out} (face_*.png), so old and new "
              "are not mixed")  # fmt: skip


def run(cfg: GeneratorConfig) -> None:
    if cfg.num < 0:
        raise utils.UserError(f"--num must be >= 0 (got {cfg.num})")
    if cfg.gif and not cfg.interpolate:
        raise utils.UserError("--gif animates the interpolation: add --interpolate K (e.g. --interpolate 16)")
    if cfg.interpolate and (cfg.interpolate < 2 or cfg.pairs < 1):
        raise utils.UserError(f"--interpolate needs K >= 2 steps and --pairs >= 1 (got {cfg.interpolate}, {cfg.pairs})")
    out = Path(cfg.out)
    utils.check_out_path(out, "--out", folder=True)
    if cfg.export:
        utils.check_out_path(cfg.export, "--export", folder=True)
    G = load_generator(cfg.ckpt, use_ema=cfg.ema, allow_pickle=cfg.allow_pickle)
    print(f"{cfg.ckpt}: generator nz={G.nz} ngf={G.ngf}; seed {cfg.seed}, bn {cfg.bn}")
    if cfg.num:
        remove_old_faces(out)
        faces = generate(G, cfg.num, cfg.seed, cfg.bn)
        for i, face in enumerate(faces):
            save_png(face, out / f"face_{i:04d}.png")
        save_png(make_grid(faces), out / "grid.png")
        print(f"{cfg.num} faces -> {out}/face_0000.png ... face_{cfg.num - 1:04d}.png, {out}/grid.png")
    if cfg.interpolate:
        rows = interpolate(G, cfg.interpolate, cfg.pairs, cfg.seed, cfg.bn)
        save_png(make_grid(rows.reshape(-1, *rows.shape[2:]), nrow=cfg.interpolate), out / "interpolation.png")
        print(f"{cfg.pairs} x {cfg.interpolate} interpolation -> {out}/interpolation.png")
        if cfg.gif:
            save_gif(gif_frames(rows), out / "interpolation.gif")
            print(f"animated: {out}/interpolation.gif")
    if cfg.export:
        files, diff = export(G, cfg.export, cfg.bn)
        print(
            f"Paddle Inference model (input z [N, {G.nz}, 1, 1] float32, max diff to eager {diff:.2g}): "
            f"{', '.join(map(str, files))}"
        )


def main(argv: list[str] | None = None) -> None:
    run(utils.parse_config(GeneratorConfig, argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
