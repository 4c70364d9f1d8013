"""Inception feature speed: fid.py (Paddle) against pytorch-fid on the same images and random weights.

Usage:
    python bench/bench_fid.py                                   # fid.py alone: images/s on this device
    python bench/bench_fid.py --ref-python /path/venv/bin/python  # + pytorch-fid run by a python that has it
    python bench/bench_fid.py --num 50 --rounds 3 --batch 25

Each measurement is a worker process of its own (Paddle's and PyTorch's thread pools must not meet), on all
usable cores, after one warm-up batch; in each round the two alternate, and the rounds alternate who goes first.
Reported: images/s per worker (median over rounds), the fid.py / pytorch-fid ratio, and the share of the CPUs
other processes used meanwhile. Images: uint8 64x64 noise, resized to 299 by both, as evaluate.py feeds them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_train import Meter, median, worker_result  # noqa: E402
from faces import processor  # noqa: E402


def worker(kind: str, num: int, batch: int) -> dict:
    import numpy as np

    from bench.fid_reference import seeded_state_dict

    images = np.random.default_rng(0).integers(0, 256, (num + batch, 64, 64, 3), dtype=np.uint8)
    if kind == "paddle":
        import fid

        model = fid.FIDInceptionV3()
        fid.set_weights(model, seeded_state_dict(fid.expected_shapes(model)))

        def run(x):
            return fid.inception_features(x, model, batch_size=batch, progress=False)
    else:
        from bench.fid_reference import reference_features, reference_model

        model, _ = reference_model()

        def run(x):
            return np.concatenate([reference_features(model, x[i : i + batch]) for i in range(0, len(x), batch)])

    run(images[:batch])  # warm-up
    with Meter() as m:
        run(images[batch:])
    return {"kind": kind, "img_s": num / m.elapsed, "others": m.others}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=50, help="images timed per worker")
    p.add_argument("--batch", type=int, default=25, help="images per forward pass (fid.py's CPU default)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ref-python", default="", help="a python with torch, torchvision and pytorch-fid")
    p.add_argument("--worker", choices=["paddle", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.num, args.batch)))
        return 0
    kinds = {"paddle": sys.executable} | ({"torch": args.ref_python} if args.ref_python else {})
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    res: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in list(kinds)[:: 1 if r % 2 == 0 else -1]:
            cmd = [
                kinds[kind],
                str(Path(__file__).resolve()),
                "--worker",
                kind,
                "--num",
                str(args.num),
                "--batch",
                str(args.batch),
            ]
            out, _ = worker_result(cmd, env, f"{kind} worker")
            res[kind].append(out)
            print(f"round {r + 1}: {kind:7s} {out['img_s']:6.2f} img/s (others used {out['others']:.0%} of the CPUs)")
    speed = {k: median([x["img_s"] for x in v]) for k, v in res.items()}
    cpu = processor().name
    print(f"\n{cpu}, {os.cpu_count()} cores; {args.num} images, batch {args.batch}, {args.rounds} rounds (median)")
    print(f"fid.py (Paddle): {speed['paddle']:.2f} img/s")
    if "torch" in speed:
        print(
            f"pytorch-fid:     {speed['torch']:.2f} img/s; fid.py / pytorch-fid = "
            f"{speed['paddle'] / speed['torch']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
