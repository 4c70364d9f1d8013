"""The whole pipeline on CPU in minutes, on the faces bundled with scikit-image (no download).

    make demo                  # creates .venv if needed, installs the requirements, then runs this
    python demo.py             # the same, in the current environment
    python demo.py --iters 100 --out output/quick

Steps: pretreat.py --demo (200 faces, 64x64) -> train.py (a CPU-sized DCGAN: the SPEC's layers at width 32,
batch 32, EMA of G's weights) -> generator.py (64 faces, a grid, an interpolation strip) -> evaluate.py
(face-detection rate and SWD against the demo set) -> complete.py (the center of a few demo faces filled in,
with fewer iterations than complete.py's default) -> OUT/metrics.json. Prints where every output is.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import utils

import numpy as np

import complete
import evaluate
import generator
import pretreat
import train
from modelfile import CHECKPOINT_FILE, GENERATOR_FILE

# complete.py's defaults are 1500 iterations x 8 starts at lr 0.01; fewer, faster steps fit make demo's 10 minutes
COMPLETE_ITERS, COMPLETE_RESTARTS, COMPLETE_LR = 150, 4, 0.05


@dataclass
class DemoConfig:
    out: str = field(default="output/demo", metadata={"help": "where the run, faces and metrics go"})
    data: str = field(default="data/demo64.npy", metadata={"help": "the demo set (built when missing)"})
    # 650: the time 500 took before the NHWC path (docs/performance.md, "The CPU demo"), and better faces
    iters: int = field(default=650, metadata={"help": "training iterations"})
    width: int = field(default=32, metadata={"help": "ngf = ndf"})
    batch_size: int = field(default=32, metadata={"help": "images per batch"})
    ema: float = field(default=0.999, metadata={"help": "EMA decay of G's weights, sampled from"})
    seed: int = field(default=1, metadata={"help": "training seed"})
    complete: int = field(default=8, metadata={"help": "demo faces to complete (center mask; 0: skip the step)"})
    complete_iters: int = field(default=COMPLETE_ITERS, metadata={"help": "iterations of the completion search"})
    complete_restarts: int = field(default=COMPLETE_RESTARTS, metadata={"help": "random starts per face"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def run(cfg: DemoConfig) -> dict:
    """The whole demo; returns (and writes to OUT/metrics.json) its measurements."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if not Path(cfg.data).is_file():
        print(pretreat.pretreat(pretreat.PretreatConfig(demo=True, out=cfg.data, progress=False)))
    train_demo(cfg)
    t_train = time.perf_counter() - t0
    ckpt = str(out / GENERATOR_FILE)
    generator.run(generator.GeneratorConfig(ckpt=ckpt, out=str(out / "faces"), num=64, interpolate=8, pairs=4))
    result = evaluate.evaluate(evaluate.EvaluateConfig(ckpt=ckpt, data=cfg.data, num=200))
    print(evaluate.format_table(result))
    if cfg.complete:
        t1 = time.perf_counter()
        done = complete_demo(cfg)
        result["completion"] = {k: done[k] for k in ("dcgan", "biharmonic", "mean_fill", "images", "iters", "restarts")}
        result["completion_seconds"] = round(time.perf_counter() - t1, 1)
    result["train_seconds"] = round(t_train, 1)
    result["demo_seconds"] = round(time.perf_counter() - t0, 1)
    result["config"] = {k: getattr(cfg, k) for k in ("iters", "width", "batch_size", "ema", "seed")}
    utils.atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    print(summary(cfg, result))
    return result


def train_demo(cfg: DemoConfig) -> None:
    """train.py on the demo set: --iters iterations (the epochs they need), a grid every quarter of the run (not at
    every one of its short epochs)."""
    epochs = math.ceil(cfg.iters / (len(np.load(cfg.data, mmap_mode="r", allow_pickle=False)) // cfg.batch_size))
    tcfg = train.TrainConfig(
        data=cfg.data,
        out=cfg.out,
        epochs=epochs,
        max_iters=cfg.iters,
        batch_size=cfg.batch_size,
        ngf=cfg.width,
        ndf=cfg.width,
        ema=cfg.ema,
        seed=cfg.seed,
        sample_every=max(1, cfg.iters // 4),
        epoch_grids=False,  # the demo set's epochs are 6 iterations: a grid each was ~10% of the training time
        overwrite=True,
        progress=cfg.progress,
    )
    train.train(tcfg)


def complete_demo(cfg: DemoConfig) -> dict:
    """complete.py on the first --complete demo faces, center mask, the demo's fast search; its metrics."""
    out = Path(cfg.out)
    return complete.run(
        complete.CompleteConfig(
            ckpt=str(out / CHECKPOINT_FILE),
            images=cfg.data,
            num=cfg.complete,
            mask="center",
            iters=cfg.complete_iters,
            restarts=cfg.complete_restarts,
            lr=COMPLETE_LR,
            out=str(out / "completions"),
            progress=cfg.progress,
        )
    )


def summary(cfg: DemoConfig, result: dict) -> str:
    """Where every output is, one line each."""
    out, ckpt = Path(cfg.out), str(Path(cfg.out) / GENERATOR_FILE)
    grids = sorted((out / "samples").glob("*.png"))
    return f"""
demo done in {result["demo_seconds"]:.0f} s (training {result["train_seconds"]:.0f} s). Outputs:
  {cfg.data:<34} the demo set: 200 faces, 64x64 (pretreat.py --demo)
  {str(out / "samples" / grids[-1].name) if grids else "":<34} fixed-noise samples during training ({len(grids)} grids in {out / "samples"})
  {str(out / "loss.png"):<34} losses and D outputs per iteration; per-iteration numbers in {out / "log.csv"}
  {ckpt:<34} the generator (python generator.py --ckpt {ckpt})
  {str(out / "faces" / "grid.png"):<34} 64 new faces, one PNG each beside it
  {str(out / "faces" / "interpolation.png"):<34} 4 interpolation rows of 8 steps
{completion_line(out, result)}  {str(out / "metrics.json"):<34} face rate {result["face_rate_fake"]:.2f} (real demo faces: {result["face_rate_real"]:.2f}), SWD avg {result["swd_avg"]:.1f}"""  # noqa: E501


def completion_line(out: Path, result: dict) -> str:
    if "completion" not in result:
        return ""
    c = result["completion"]
    return (
        f"  {str(out / 'completions' / 'grid.png'):<34} {c['images']} demo faces, center filled in "
        f"(rows: original, masked, completed); hole PSNR {c['dcgan']['psnr_hole']:.1f} dB, biharmonic "
        f"{c['biharmonic']['psnr_hole']:.1f}\n"
    )


def main(argv: list[str] | None = None) -> None:
    run(utils.parse_config(DemoConfig, argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
