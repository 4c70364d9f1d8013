"""Crop CelebA's aligned faces into one packed uint8 array of 64x64 RGB images.

Usage:
    python pretreat.py                           # img_align_celeba/ (else img_align_celeba.zip) -> data/celeba64.npy
    python pretreat.py --src ~/img_align_celeba.zip --workers 2 --limit 1000
    python pretreat.py --images data/crops       # also write every crop as a PNG
    python pretreat.py --demo                    # data/demo64.npy: 200 faces bundled with scikit-image, no download

CelebA's "Align&Cropped Images" (img_align_celeba.zip, 202,599 JPEGs of 178x218) come from
http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html or AI Studio dataset 39207. A zip is read in place.

Per image: upright (EXIF orientation), RGB, shorter side scaled to 64, antialiased bilinear (178x218 -> 64x78), then
the tutorial's crop box (left 0, top 10, right 64, bottom 74) of that scaled image; an image whose scaled
size cannot hold the box is center-cropped. Output, beside --out (default data/celeba64.npy):
    celeba64.npy          uint8 (N, 64, 64, 3), rows in sorted source-name order
    celeba64.names.txt    the source name of each row
    celeba64.skipped.txt  name<TAB>reason for every image file that could not be used
Bad files never stop the run. Grayscale, CMYK, palette, 16-bit and alpha images are converted (alpha over
white); truncated, empty, unreadable files and images over --max-pixels (decompression bombs) are
skipped and listed. Files without an image extension (.txt, .csv: CelebA's annotation lists) and hidden
files (.DS_Store, ._x.jpg) are ignored, only counted; subfolders are read, hidden ones and __MACOSX/ are
not. The .npy appears only when complete: Ctrl-C or kill leaves no partial output and no temporary file.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import utils
from utils import UserError

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from faces import BOX, EXTENSIONS, MAX_PIXELS, SIZE, ImageSource, cores, load_face, save_png, unreadable_reason

DEFAULT_SOURCES = ("img_align_celeba", "img_align_celeba.zip")
CHUNK = 32  # images per thread task: amortises the executor's per-task cost, keeps Ctrl-C prompt
GET_CELEBA = (
    "get CelebA's aligned images (img_align_celeba.zip) from http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
    "or AI Studio dataset 39207, or run python pretreat.py --demo for the small bundled face set"
)


@dataclass
class PretreatConfig:
    src: str = field(
        default="", metadata={"help": "folder or .zip of images; default img_align_celeba/, else img_align_celeba.zip"}
    )
    out: str = field(
        default="", metadata={"help": "output .npy; default data/celeba64.npy (data/demo64.npy with --demo)"}
    )
    box: tuple[int, int, int, int] = field(
        default=BOX, metadata={"help": "64x64 crop box in the scaled image", "metavar": ("L", "T", "R", "B")}
    )
    workers: int = field(default=0, metadata={"help": "threads; 0 = all usable cores"})
    limit: int = field(default=0, metadata={"help": "use only the first N images in name order; 0 = all"})
    images: str = field(default="", metadata={"help": "also write each crop as a PNG under this folder"})
    max_pixels: int = field(
        default=MAX_PIXELS, metadata={"help": "skip images with more pixels than this (decompression bombs)"}
    )
    demo: bool = field(
        default=False, metadata={"help": "build data/demo64.npy from scikit-image's bundled faces instead"}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


@dataclass
class PretreatSummary:
    out: str
    processed: int
    skipped: int
    ignored: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.processed / max(self.seconds, 1e-9)

    def __str__(self) -> str:
        listed = f" (listed in {sidecar(Path(self.out), 'skipped')})" if self.skipped else ""
        return (
            f"pretreat: {self.processed} images -> {self.out}, {self.skipped} skipped{listed}, "
            f"{self.ignored} non-image files ignored, "
            f"{self.seconds:.1f} s, {self.images_per_s:.0f} img/s"
        )


# ---------------------------------------------------------------------------------------------
# the source: a folder or a zip, read in place (faces.ImageSource)


def find_source(src: str) -> Path:
    if src:
        p = Path(src)
        if not p.exists():
            raise UserError(f"{src}: no such folder or zip file; {GET_CELEBA}")
        if not (p.is_dir() or zipfile.is_zipfile(p)):
            raise UserError(f"{src}: not a folder or a .zip file of images")
        return p
    for name in DEFAULT_SOURCES:
        if Path(name).exists():
            return Path(name)
    raise UserError(f"no img_align_celeba/ or img_align_celeba.zip in {os.getcwd()}: {GET_CELEBA} (or pass --src)")


# ---------------------------------------------------------------------------------------------
# the run


def _check_box(box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    if left < 0 or top < 0 or right - left != SIZE or bottom - top != SIZE:
        example = " ".join(map(str, BOX))
        raise UserError(
            f"--box {left} {top} {right} {bottom}: must be a {SIZE}x{SIZE} box with left, top >= 0 (e.g. {example})"
        )


def sidecar(out: Path, kind: str) -> Path:
    """data/celeba64.npy -> data/celeba64.<kind>.txt"""
    return out.with_name(f"{out.stem}.{kind}.txt")


def pretreat(cfg: PretreatConfig) -> PretreatSummary:
    """Crop every image of the source into --out (see the module docstring); returns the counts and time."""
    if cfg.demo:
        return make_demo(Path(cfg.out or "data/demo64.npy"))
    _check_box(cfg.box)
    if cfg.workers < 0 or cfg.limit < 0 or cfg.max_pixels < 1:
        raise UserError("--workers and --limit must be >= 0, --max-pixels >= 1")
    t0 = time.perf_counter()
    out = Path(cfg.out or "data/celeba64.npy")
    if out.suffix != ".npy":
        raise UserError(f"{out}: --out must end in .npy")
    source = ImageSource(find_source(cfg.src))
    try:
        names = source.names[: cfg.limit] if cfg.limit else source.names
        if not names:
            raise UserError(f"{source.path}: no {'/'.join(EXTENSIONS)} images found")
        workers = cfg.workers or cores()
        with utils.atomic_path(out) as tmp:
            failed = _crop_all(source, len(names), tmp, cfg, workers)
            skipped = [(names[i], failed[i]) for i in sorted(failed)]
            utils.atomic_write_text(sidecar(out, "skipped"), "".join(f"{n}\t{r}\n" for n, r in skipped))
            kept = [n for i, n in enumerate(names) if i not in failed]
            if not kept:
                raise UserError(
                    f"{source.path}: none of the {len(names)} images could be read; reasons in "
                    f"{sidecar(out, 'skipped')}"
                )
            _shrink_npy(tmp, len(kept))
            utils.atomic_write_text(sidecar(out, "names"), "".join(f"{n}\n" for n in kept))
    finally:
        source.close()
    return PretreatSummary(str(out), len(kept), len(skipped), source.ignored, time.perf_counter() - t0)


def _crop_all(source: ImageSource, n: int, tmp: str, cfg: PretreatConfig, workers: int) -> dict[int, str]:
    """Crop images 0..n-1 into a (n, 64, 64, 3) .npy at `tmp` with a thread pool, then move the good rows
    to the front; returns {index: reason} of the failed ones."""
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, SIZE, SIZE, 3))
    images = Path(cfg.images) if cfg.images else None
    targets = crop_paths(source.names[:n], images) if images else {}
    for parent in {t.parent for t in targets.values()}:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{parent}: cannot make this folder for --images ({e.strerror})") from None

    def work(rows: range) -> dict[int, str]:
        failed = {}
        for i in rows:
            try:
                arr[i] = face = load_face(source.read(i), cfg.box, cfg.max_pixels)
            except Exception as e:  # anything a bad file can make Pillow raise; KeyboardInterrupt passes
                failed[i] = unreadable_reason(e, source.size(i))
                continue
            if images:
                save_png(face, targets[i])
        return failed

    failed: dict[int, str] = {}
    chunks = [range(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # over --max-pixels is skipped anyway
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=n, unit="img", disable=not cfg.progress, smoothing=0.1) as bar,
        ):
            for rows, fails in zip(
                chunks, pool.map(work, chunks), strict=True
            ):  # on an exception map() cancels the rest
                failed.update(fails)
                bar.update(len(rows))
    if failed:  # compact: rows only move towards the front, and each chunk is gathered before it is written
        good = np.array([i for i in range(n) if i not in failed], dtype=np.int64)
        for j in range(0, len(good), 4096):
            rows = good[j : j + 4096]
            arr[j : j + len(rows)] = arr[rows]
    arr.flush()
    return failed


def crop_paths(names: list[str], images: Path) -> dict[int, Path]:
    """Where --images writes each crop: NAME with a .png suffix, under `images`. A name that would collide with
    another crop or with a folder (a.jpg beside a.png/), or is too long for the file system, is renamed
    (stem.N.png, N its index, the stem shortened to fit), with one line saying how many and the first."""
    limit = 255
    with contextlib.suppress(OSError, ValueError):
        limit = os.pathconf(images if images.is_dir() else images.parent, "PC_NAME_MAX")
    wanted = [Path(name).with_suffix(".png") for name in names]
    folders = {p for w in wanted for p in w.parents}
    taken: set[Path] = set()
    paths, renamed = {}, []
    for i, w in enumerate(wanted):
        if w in taken or w in folders or len(w.name.encode()) > limit or (images / w).is_dir():
            stem = w.stem.encode()[: limit - 20].decode(errors="ignore")
            new = w.with_name(f"{stem}.{i}.png")
            renamed.append((names[i], new))
            w = new
        if w in taken or w in folders:
            raise UserError(f"{images / w}: two crops would get this name under --images; rename one of the sources")
        taken.add(w)
        paths[i] = images / w
    if renamed:
        first, to = renamed[0]
        print(f"pretreat.py: {len(renamed)} crops renamed under {images} (their names collide or are too long; "
              f"first: {first} -> {to})")  # fmt: skip
    return paths


def _shrink_npy(path: str, rows: int) -> None:
    """Rewrite the .npy header for the first `rows` rows and cut the file there. numpy pads the header so
    that a shorter first dimension keeps its length, so the data offset does not move."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        if shape[0] == rows:
            return
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])},
        )
        if header.tell() != offset:
            raise RuntimeError(f"{path}: .npy header length changed ({offset} -> {header.tell()})")
        f.seek(0)
        f.write(header.getvalue())
        f.truncate(offset + rows * int(np.prod(shape[1:])) * dtype.itemsize)


# ---------------------------------------------------------------------------------------------
# --demo: scikit-image's bundled LFW faces, no download


def demo_faces() -> np.ndarray:
    """The demo set as uint8 (200, 64, 64, 3): the 100 25x25 gray faces of skimage.data.lfw_subset() upscaled to
    64x64 (bicubic, in float, rounded once), gray copied to RGB, then their 100 mirror images: row 100 + i
    mirrors row i."""
    from skimage.data import lfw_subset  # imported here: scikit-image takes ~1 s to import

    faces = lfw_subset()[:100]  # floats in [0, 1]; entries 100-199 are non-faces
    up = np.stack(
        [
            np.asarray(Image.fromarray(f.astype(np.float32), "F").resize((SIZE, SIZE), Image.Resampling.BICUBIC))
            for f in faces
        ]
    )
    gray = np.clip(np.rint(up * 255.0), 0, 255).astype(np.uint8)  # bicubic overshoots [0, 1] a little
    rgb = np.repeat(gray[..., None], 3, axis=3)
    return np.concatenate([rgb, rgb[:, :, ::-1]])


def make_demo(out: Path) -> PretreatSummary:
    """data/demo64.npy (demo_faces) and its names file."""
    t0 = time.perf_counter()
    data = demo_faces()
    with utils.atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, data)
        names = [f"lfw_subset[{i}]" for i in range(100)] + [f"lfw_subset[{i}] mirrored" for i in range(100)]
        utils.atomic_write_text(sidecar(out, "names"), "".join(f"{n}\n" for n in names))
    return PretreatSummary(str(out), len(data), 0, 0, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> PretreatSummary:
    cfg = utils.parse_config(PretreatConfig, argv, description=__doc__)
    summary = pretreat(cfg)
    print(summary)
    return summary


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` cleans up like Ctrl-C: no temporary file left
    sys.exit(utils.run_cli(main))
