"""The whole pipeline on CPU in minutes, on the faces bundled with scikit-image (no download).

    make demo                  # creates .venv if needed, installs the requirements, then runs this
    python demo.py             # the same, in the current environment
    python demo.py --iters 100 --out output/quick

Steps: pretreat.py --demo (200 faces, 64x64) -> train.py (a CPU-sized DCGAN: the SPEC's layers at width 32,
batch 32, EMA of G's weights) -> generator.py (64 faces, a grid, an interpolation strip) -> evaluate.py
(face-detection rate and SWD against the demo set) -> OUT/metrics.json. Prints where every output is.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import utils  # noqa: F401  (sets CPU thread defaults before paddle loads)
import numpy as np

import evaluate
import generator
import pretreat
import train


@dataclass
class DemoConfig:
    out: str = field(default="output/demo", metadata={"help": "where the run, faces and metrics go"})
    data: str = field(default="data/demo64.npy", metadata={"help": "the demo set (built when missing)"})
    iters: int = field(default=500, metadata={"help": "training iterations"})
    width: int = field(default=32, metadata={"help": "ngf = ndf"})
    batch_size: int = field(default=32, metadata={"help": "images per batch"})
    ema: float = field(default=0.999, metadata={"help": "EMA decay of G's weights, sampled from"})
    seed: int = field(default=1, metadata={"help": "training seed"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def run(cfg: DemoConfig) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if not Path(cfg.data).is_file():
        print(pretreat.pretreat(pretreat.PretreatConfig(demo=True, out=cfg.data, progress=False)))
    epochs = math.ceil(cfg.iters / (len(np.load(cfg.data, mmap_mode="r", allow_pickle=False)) // cfg.batch_size))
    tcfg = train.TrainConfig(data=cfg.data, out=str(out), epochs=epochs, max_iters=cfg.iters, batch_size=cfg.batch_size,
                             ngf=cfg.width, ndf=cfg.width, ema=cfg.ema, seed=cfg.seed, sample_every=max(1, cfg.iters // 4),
                             overwrite=True, progress=cfg.progress)  # fmt: skip
    train.train(tcfg)
    t_train = time.perf_counter() - t0
    ckpt = str(out / utils.GENERATOR_FILE)
    generator.run(generator.GeneratorConfig(ckpt=ckpt, out=str(out / "faces"), num=64, interpolate=8, pairs=4))
    result = evaluate.evaluate(evaluate.EvaluateConfig(ckpt=ckpt, data=cfg.data, num=200))
    print(evaluate.format_table(result))
    result["train_seconds"] = round(t_train, 1)
    result["demo_seconds"] = round(time.perf_counter() - t0, 1)
    result["config"] = {"iters": cfg.iters, "width": cfg.width, "batch_size": cfg.batch_size, "ema": cfg.ema, "seed": cfg.seed}
    utils.atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    grids = sorted((out / "samples").glob("*.png"))
    print(f"""
demo done in {result['demo_seconds']:.0f} s (training {t_train:.0f} s). Outputs:
  {cfg.data:<34} the demo set: 200 faces, 64x64 (pretreat.py --demo)
  {str(out / 'samples' / grids[-1].name) if grids else '':<34} fixed-noise samples during training ({len(grids)} grids in {out / 'samples'})
  {str(out / 'loss.png'):<34} losses and D outputs per iteration; per-iteration numbers in {out / 'log.csv'}
  {ckpt:<34} the generator (python generator.py --ckpt {ckpt})
  {str(out / 'faces' / 'grid.png'):<34} 64 new faces, one PNG each beside it
  {str(out / 'faces' / 'interpolation.png'):<34} 4 interpolation rows of 8 steps
  {str(out / 'metrics.json'):<34} face rate {result['face_rate_fake']:.2f} (real demo faces: {result['face_rate_real']:.2f}), SWD avg {result['swd_avg']:.1f}""")  # noqa: E501
    return result


def main(argv: list[str] | None = None) -> None:
    run(utils.parse_config(DemoConfig, argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
