"""Completion speed on the CPU: seconds per completed image (complete.py's z search), at the demo width and the default.

Usage:
    python bench/bench_complete.py                       # widths 32 (demo) and 64, 8 images x 8 starts, 3 rounds
    python bench/bench_complete.py --quick               # 1 round, fewer steps
    python bench/bench_complete.py --widths 64 --images 16 --restarts 8 --steps 20 --rounds 5
    python bench/bench_complete.py --settings CKPT --real data/demo64.npy --faces 4   # quality and seconds of the
                                                       # paper's setting against complete.FAST (and --try variants)

What is timed: complete.search(), the Adam loop of complete.py (G and D in eval mode, forward and backward to z,
the rescaling of z), for `--steps` steps with all images x starts in one batch, as complete.py runs it. Seconds
per completed image = step time x the default 1500 iterations / images. The baseline, timed in the same round: the
same search run one image at a time (its starts still batched), i.e. what a loop over images would cost; the ratio
loop / batched is what the one-batch design buys. Also reported: skimage's inpaint_biharmonic per image (center
mask), the method complete.py compares against. Untrained networks (speed does not depend on the weights).
Batched and loop alternate within a round, the rounds alternate who goes first. Other processes on the machine
make timings noisy: compare the ratios, measured side by side, rather than the seconds.

--settings CKPT: how complete.FAST (the interactive setting) compares with the paper's 1500 x 8 at lr 0.01, on a
trained checkpoint, same run: hole PSNR (center mask, Poisson blending) on G's own samples (faces G can make: the
in-range case) and on real faces (--real), and the seconds of complete.complete for one face at a time (the
search's own time, as complete.py's metrics.json `seconds`), median over the faces. --try adds settings as
JSON dicts of complete() arguments, e.g. --try '{"iters": 200, "restarts": 2, "lr": 0.05, "patience": 20}'.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402,F401  (hides paddle's import warning: before paddle, as everywhere)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import complete  # noqa: E402
from faces import to_float, to_images  # noqa: E402
from modelfile import models_of  # noqa: E402
from network import Discriminator, Generator  # noqa: E402

DEFAULT_ITERS = 1500


def time_search(G, D, y: np.ndarray, weights: np.ndarray, steps: int, restarts: int) -> float:
    """Seconds per Adam step of complete.search over the images y, all in one batch (after a 2-step warm-up)."""
    complete.search(G, D, y, weights, 2, 0.003, restarts)
    t0 = time.perf_counter()
    complete.search(G, D, y, weights, steps, 0.003, restarts)
    return (time.perf_counter() - t0) / steps


def bench_width(width: int, images: int, restarts: int, steps: int, rounds: int) -> dict:
    paddle.seed(0)
    G, D = Generator(ngf=width), Discriminator(ndf=width)
    G.eval(), D.eval()
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (images, 64, 64, 3), dtype=np.uint8)
    y = to_float(faces)
    mask = complete.make_mask("center")
    w = complete.importance_weights(np.broadcast_to(mask, (images, 64, 64)))
    batched, loop = [], []
    for r in range(rounds):
        for kind in ("batched", "loop") if r % 2 == 0 else ("loop", "batched"):
            if kind == "batched":
                batched.append(time_search(G, D, y, w, steps, restarts))
            else:
                loop.append(sum(time_search(G, D, y[i : i + 1], w[i : i + 1], steps, restarts) for i in range(images)))
    t0 = time.perf_counter()
    complete.inpaint_biharmonic(faces, mask)
    biharmonic = (time.perf_counter() - t0) / images
    b, lo = statistics.median(batched), statistics.median(loop)
    return {
        "width": width,
        "batch": images * restarts,
        "step_batched": b,
        "step_loop": lo,
        "ratio": lo / b,
        "s_per_image": b * DEFAULT_ITERS / images,
        "s_per_image_loop": lo * DEFAULT_ITERS / images,
        "biharmonic": biharmonic,
    }


PAPER = dict(iters=DEFAULT_ITERS, restarts=8, lr=0.01, patience=0, lam=0.003, schedule="constant")  # complete.py's


def compare_settings(ckpt: str, real_path: str, faces: int, settings: dict[str, dict]) -> list[dict]:
    """Per setting: mean hole PSNR on G's samples and on real faces, and median seconds per face (one at a time)."""
    G, D = models_of(ckpt, True)
    with paddle.no_grad():
        z = np.random.default_rng(123).standard_normal((faces, G.nz, 1, 1)).astype(np.float32)
        own = to_images(G(paddle.to_tensor(z)))
    real = np.load(real_path, allow_pickle=False)[:faces]
    mask = complete.make_mask("center")
    rows = []
    for name, kw in settings.items():
        row = {"setting": name, **kw}
        for what, images in (("own", own), ("real", real)):
            seconds, done = [], []
            for i in range(len(images)):
                t0 = time.perf_counter()
                done.append(complete.complete((G, D), images[i : i + 1], mask, seed=i, **kw).completed[0])
                seconds.append(time.perf_counter() - t0)
            row[f"psnr_hole_{what}"] = complete.quality(images, np.stack(done), mask)["psnr_hole"]
            row[f"seconds_{what}"] = statistics.median(seconds)
        print(row, flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--widths", type=int, nargs="+", default=[32, 64], help="ngf = ndf values (32: the demo's, 64: the default)"
    )
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed Adam steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 round of 4 steps")
    p.add_argument("--settings", default="", metavar="CKPT", help="compare complete.FAST with the paper's setting")
    p.add_argument("--real", default="data/demo64.npy", help="real faces for --settings (python pretreat.py --demo)")
    p.add_argument("--faces", type=int, default=4, help="faces of each kind for --settings")
    p.add_argument("--try", dest="extra", action="append", default=[], metavar="JSON", help="another setting")
    a = p.parse_args(argv)
    if a.settings:
        import json

        settings = {"paper": PAPER, "fast": complete.FAST, **{f"try{i}": json.loads(x) for i, x in enumerate(a.extra)}}
        rows = compare_settings(a.settings, a.real, a.faces, settings)
        print(
            "\n| setting | iters x starts, lr, schedule, lam, patience | hole PSNR, G's samples "
            "| hole PSNR, real faces | s per face (median) |\n|---|---|--:|--:|--:|"
        )
        for r in rows:
            print(
                f"| {r['setting']} | {r['iters']} x {r['restarts']}, {r['lr']}, {r.get('schedule', 'constant')}, "
                f"{r.get('lam', 0.003)}, {r.get('patience', 0)} "
                f"| {r['psnr_hole_own']:.2f} | {r['psnr_hole_real']:.2f} "
                f"| {statistics.median([r['seconds_own'], r['seconds_real']]):.1f} |"
            )
        return 0
    if a.quick:
        a.rounds, a.steps = 1, 4
    print(
        f"complete.py z search on {platform.processor() or platform.machine()}, Paddle {paddle.__version__} CPU, "
        f"{a.images} images x {a.restarts} starts, {a.steps} steps x {a.rounds} rounds (medians)",
        flush=True,
    )
    rows = [bench_width(w, a.images, a.restarts, a.steps, a.rounds) for w in a.widths]
    print(
        f"\n| width | batch | s/step, one batch | s/step, image by image | loop / batch "
        f"| s per image ({DEFAULT_ITERS} it) "
        "| biharmonic s per image |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['width']} | {r['batch']} | {r['step_batched']:.3f} | {r['step_loop']:.3f} | {r['ratio']:.2f}x "
            f"| {r['s_per_image']:.1f} (loop: {r['s_per_image_loop']:.1f}) | {r['biharmonic']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
