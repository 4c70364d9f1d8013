"""Data-pipeline speed: pretreat.py against the tutorial's own method, and dataReader's batches.

Usage:
    python bench/bench_data.py                  # 5,000 synthetic 178x218 JPEGs, made once under bench/.cache/
    python bench/bench_data.py --images 20000 --workers 2

Prints images/s of
  - the tutorial's pretreat: per file PIL open, bilinear resize by min(w, h) / 64, crop (0, 10, 64, 74),
    save as JPEG, in a ThreadPool of 8 threads (the baseline);
  - pretreat.pretreat() over the same files (draft-mode decode, one bilinear resample, packed .npy);
  - make_loader(batch_size=128) over the packed file, whole shuffled epochs.
Targets on a 2-core machine: pretreat >= 3,000 img/s and >= 2x the baseline; reader >= 50,000 img/s.
The corpus: smooth gradients + ellipses and boxes + noise, JPEG quality 90, ~10 KB each like CelebA's.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from pretreat import PretreatConfig, pretreat  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
W, H = 178, 218


@dataclass
class BenchConfig:
    images: int = field(default=5000, metadata={"help": "corpus size (made once, cached)"})
    workers: int = field(default=0, metadata={"help": "pretreat threads; 0 = all cores"})
    repeat: int = field(default=1, metadata={"help": "time each method this many times, report the best"})


def synth_face(rng: np.random.Generator, noise: np.ndarray) -> Image.Image:
    """A 178x218 RGB picture with CelebA-like JPEG statistics: a colour gradient, blurred shapes, sensor noise."""
    gy, gx = np.mgrid[0 : H // 8 + 1, 0 : W // 8 + 1].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    t = ((gx * np.float32(np.cos(a)) + gy * np.float32(np.sin(a))) / ((W + H) / 8) + 0.5)[..., None]
    img = Image.fromarray((c0 + (c1 - c0) * t).clip(0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 8)):
        x0, y0 = rng.integers(-40, W), rng.integers(-40, H)
        box = (x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 120))
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(
            box, fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    img = img.filter(ImageFilter.BoxBlur(int(rng.integers(1, 3))))
    off = rng.integers(0, len(noise) - H * W * 3)
    return Image.fromarray(
        np.clip(np.asarray(img) + noise[off : off + H * W * 3].reshape(H, W, 3), 0, 255).astype(np.uint8)
    )


def make_corpus(n: int) -> Path:
    folder = CACHE / f"celeba_like_{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    print(f"making {n} synthetic 178x218 JPEGs in {folder} (once) ...", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)

    def make(start: int) -> None:
        rng = np.random.default_rng(start)
        noise = rng.normal(0, 6, 4 * H * W * 3).round().astype(np.int16)
        for i in range(start, min(start + 500, n)):
            synth_face(rng, noise).save(folder / f"{i + 1:06d}.jpg", quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(make, range(0, n, 500)))
    done.touch()
    return folder


def tutorial_pretreat(src: Path, dst: Path) -> int:
    """The tutorial's pretreat.py method: one JPEG out per JPEG in, 8 threads."""
    names = sorted(os.listdir(src))
    names = [n for n in names if n.endswith(".jpg")]

    def crop(name: str) -> None:
        img = Image.open(src / name)
        w, h = img.size
        r = min(w, h) / 64
        img = img.resize((int(w / r), int(h / r)), Image.Resampling.BILINEAR)
        img.crop((0, 10, 64, 74)).save(dst / name)

    with ThreadPool(8) as pool:
        pool.map(crop, names)
    return len(names)


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time, the process CPU time (all threads) of that run, and fn's result."""
    best, cpu, result = float("inf"), 0.0, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        if time.perf_counter() - t0 < best:
            best, cpu = time.perf_counter() - t0, time.process_time() - c0
    return best, cpu, result


def main(argv: list[str] | None = None) -> None:
    cfg = utils.parse_config(BenchConfig, argv, description=__doc__)
    corpus = make_corpus(cfg.images)
    names = sorted(p for p in corpus.iterdir() if p.suffix == ".jpg")
    sizes = [p.stat().st_size for p in names]  # also warms the page cache for both methods
    for p in names:
        p.read_bytes()
    print(
        f"corpus: {len(names)} JPEGs, {W}x{H}, mean {np.mean(sizes) / 1024:.1f} KB; "
        f"{len(os.sched_getaffinity(0))} cores, "
        f"load average {os.getloadavg()[0]:.2f} (other processes share the cores)"
    )

    base_out = CACHE / "baseline_out"

    def baseline() -> int:
        shutil.rmtree(base_out, ignore_errors=True)
        base_out.mkdir(parents=True)
        return tutorial_pretreat(corpus, base_out)

    packed = CACHE / "ours.npy"
    ours_cfg = PretreatConfig(src=str(corpus), out=str(packed), workers=cfg.workers, progress=False)
    t_base, c_base, n_base = timed(baseline, cfg.repeat)
    shutil.rmtree(base_out, ignore_errors=True)
    t_ours, c_ours, summary = timed(lambda: pretreat(ours_cfg), cfg.repeat)
    assert summary.processed == len(names) == n_base, (summary, n_base)
    base_rate, ours_rate = n_base / t_base, summary.processed / t_ours
    # img per CPU-second: the work per image, which other processes on the machine disturb less than wall time
    ours = f"pretreat.py ({ours_cfg.workers or 'all'} workers):"
    print(
        f"{'pretreat, tutorial method (8 threads):':39s} {base_rate:8.0f} img/s   {n_base / c_base:6.0f} img per CPU-s"
    )
    print(
        f"{ours:39s} {ours_rate:8.0f} img/s   {summary.processed / c_ours:6.0f} img per CPU-s   "
        f"{ours_rate / base_rate:.2f}x tutorial"
    )

    from dataReader import make_loader  # imports paddle (~2 s), so after the pretreat timings

    loader = make_loader(str(packed), batch_size=128, shuffle=True, seed=0, drop_last=True)
    for _ in loader:  # warm-up epoch: page cache, paddle's first-call set-up
        pass
    epochs, n, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0 or epochs < 3:
        loader.set_epoch(epochs)
        for images in loader:
            n += images.shape[0]
        epochs += 1
    reader_rate = n / (time.perf_counter() - t0)
    print(f"{f'make_loader, batch 128, {epochs} epochs:':39s} {reader_rate:8.0f} img/s")


if __name__ == "__main__":
    main()
