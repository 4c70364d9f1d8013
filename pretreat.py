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

import io
import os
import signal
import sys
import threading
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

import utils
from utils import UserError

SIZE = 64
BOX = (0, 10, 64, 74)  # the tutorial's crop of the 64x78 scaled image
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_SOURCES = ("img_align_celeba", "img_align_celeba.zip")
# 40 MP passes any camera photo up to ~7700x5200 but bounds a worker's full-size decode (PNG/BMP/WebP have
# no reduced-scale decoding) to ~160 MB; CelebA's images are 0.04 MP. Pillow's own hard limit is 179 MP.
MAX_PIXELS = 40_000_000
CHUNK = 32  # images per thread task: amortises the executor's per-task cost, keeps Ctrl-C prompt
RESAMPLE = Image.Resampling.BILINEAR  # antialiased (the triangle widens with the downscale), like torchvision's Resize
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
# one image


def scaled_size(w: int, h: int) -> tuple[int, int]:
    """(w, h) with the shorter side scaled to 64, the other rounded half up: 178x218 -> 64x78."""
    if w <= h:
        return SIZE, (h * SIZE + w // 2) // w
    return (w * SIZE + h // 2) // h, SIZE


def crop_face(img: Image.Image, box: tuple[int, int, int, int] = BOX) -> np.ndarray:
    """One face as uint8 (64, 64, 3): upright, RGB, shorter side scaled to 64, `box` cropped from that
    (center crop when the scaled image cannot hold the box).

    Pass a freshly opened image: a JPEG not yet loaded is decoded at the smallest DCT scale that still
    covers the scaled size (draft mode: 178x218 decodes as 89x109, a quarter of the pixels to transform
    and resample). `img` is modified.
    """
    w, h = img.size
    tw, th = scaled_size(w, h)
    drafted = img.draft("RGB", (tw, th))  # None unless a not-yet-loaded JPEG
    ext_w, ext_h = drafted[1][2:] if drafted else (w, h)  # the whole image's extent in the decoded pixel grid
    # A JPEG's markers are all read at open, so without EXIF or XMP there is no orientation tag: skip the
    # lookup. Otherwise exif_transpose loads the image and turns it upright.
    if img.format != "JPEG" or "exif" in img.info or "xmp" in img.info:
        before = img.size
        ImageOps.exif_transpose(img, in_place=True)
        if img.size != before:  # rotated by 90 degrees: the scaled frame turns with it
            tw, th, ext_w, ext_h = th, tw, ext_h, ext_w
    return _scale_crop(_to_rgb(img), ext_w, ext_h, tw, th, box)


def _scale_crop(
    img: Image.Image, ext_w: float, ext_h: float, tw: int, th: int, box: tuple[int, int, int, int]
) -> np.ndarray:
    """Resample the RGB `img` (the whole picture spans ext_w x ext_h of its pixels) as if scaled to tw x th,
    and cut `box` (or the centre 64x64 when the box does not fit) out of that."""
    left, top, right, bottom = box
    if right > tw or bottom > th:
        left, top = (tw - SIZE) // 2, (th - SIZE) // 2
        right, bottom = left + SIZE, top + SIZE
    # Scale-then-crop as one resampling call: the box mapped back to source pixels gives the same filter
    # centres and support as resizing the whole image to (tw, th) and cropping, without the unused rows.
    fx, fy = ext_w / tw, ext_h / th
    out = img.resize((SIZE, SIZE), RESAMPLE, box=(left * fx, top * fy, right * fx, bottom * fy))
    return np.frombuffer(out.tobytes(), np.uint8).reshape(SIZE, SIZE, 3)  # read-only, like np.asarray(out), but cheaper


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I"):  # 16-bit PNG ('I;16', 'I'): Pillow's own conversion clips at 255 instead of scaling
        a = np.asarray(img).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    if "A" in mode or "a" in mode or "transparency" in img.info:  # RGBA, LA, PA, P/L/RGB with a transparent colour
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return img.convert("RGB")  # L, P, CMYK (Adobe-inverted handled by Pillow), 1, YCbCr


# ---------------------------------------------------------------------------------------------
# sources: a folder or a zip, read in place


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    parts = name.split("/")  # no "..": a crafted zip must not make --images write outside its folder
    return (
        base.lower().endswith(EXTENSIONS)
        and not base.startswith(".")
        and parts[0] not in ("__MACOSX", "")
        and ".." not in parts
    )


class Source:
    """The image files of a folder (recursively) or a zip, sorted by name; `read(i)` gives a file's bytes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.zip = None
        if self.path.is_dir():
            all_names = []
            for root, dirs, files in os.walk(self.path):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
                rel = Path(root).relative_to(self.path).as_posix()
                all_names += files if rel == "." else [f"{rel}/{f}" for f in files]
        else:
            try:
                self.zip = zipfile.ZipFile(self.path)  # one for all threads, read under a lock (see read)
            except (zipfile.BadZipFile, OSError) as e:
                raise UserError(f"{self.path}: not a readable zip file ({e})") from None
            infos = {i.filename: i for i in self.zip.infolist() if not i.is_dir()}
            all_names = list(infos)
            self._infos, self._lock = infos, threading.Lock()
        self.names = sorted(n for n in all_names if is_image_name(n))
        self.ignored = len(all_names) - len(self.names)

    def read(self, i: int) -> bytes:
        name = self.names[i]
        if self.zip is None:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        with self._lock:  # ZipFile.open counts its file's users without a lock: concurrent reads can close it
            return self.zip.read(self._infos[name])

    def size(self, i: int) -> int:
        name = self.names[i]
        return os.path.getsize(self.path / name) if self.zip is None else self._infos[name].file_size

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


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


def load_face(data: bytes, box: tuple[int, int, int, int] = BOX, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Crop the image file held in `data` as crop_face does; over `max_pixels` raises DecompressionBombError."""
    size = plain_jpeg_size(data)
    if size is not None and size[0] * size[1] <= max_pixels:
        # CelebA's kind of JPEG: decode it with Pillow's libjpeg decoder directly, at the scale draft mode picks,
        # skipping Image.open's marker parsing in Python (~60 us an image, held under the GIL). Exactly the
        # same pixels (a test checks); anything the decoder refuses goes the general way for its error.
        w, h = size
        tw, th = scaled_size(w, h)
        s = next(s for s in (8, 4, 2, 1) if min(w // tw, h // th) >= s)
        try:
            img = Image.frombytes("RGB", (-(-w // s), -(-h // s)), data, "jpeg", "RGB", "", s, 0)
        except Exception:
            pass
        else:
            return _scale_crop(img, w / s, h / s, tw, th, box)
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > max_pixels:
            raise Image.DecompressionBombError(
                f"{w}x{h} = {w * h} pixels, over the limit of {max_pixels} (--max-pixels)"
            )
        return crop_face(img, box)


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(w, h) of an 8-bit, 3-component (YCbCr), baseline or progressive JPEG with no APP1 (EXIF/XMP: maybe an
    orientation) and no APP14 (Adobe: colour transform) marker; None for anything else."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 10 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xC0, 0xC1, 0xC2):  # start of frame: precision, height, width, components
            w, h = int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            return (w, h) if data[i + 4] == 8 and data[i + 9] == 3 and w and h else None
        if marker in (0xE1, 0xEE) or 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xCC):
            return None  # EXIF/XMP, Adobe, or a lossless/hierarchical/arithmetic-coded frame
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _reason(e: Exception, nbytes: int) -> str:
    if nbytes == 0:
        return "empty file (0 bytes)"
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large: {e}"
    msg = str(e).splitlines()[0] if str(e) else ""
    if "truncated" in msg or isinstance(e, (OSError, SyntaxError, EOFError)):
        return f"truncated or corrupt: {msg or type(e).__name__}"
    return f"{type(e).__name__}: {msg}"


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
    source = Source(find_source(cfg.src))
    try:
        names = source.names[: cfg.limit] if cfg.limit else source.names
        if not names:
            raise UserError(f"{source.path}: no {'/'.join(EXTENSIONS)} images found")
        workers = cfg.workers or (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
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


def _crop_all(source: Source, n: int, tmp: str, cfg: PretreatConfig, workers: int) -> dict[int, str]:
    """Crop images 0..n-1 into a (n, 64, 64, 3) .npy at `tmp` with a thread pool, then move the good rows
    to the front; returns {index: reason} of the failed ones."""
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, SIZE, SIZE, 3))
    images = Path(cfg.images) if cfg.images else None
    if images:
        for parent in {Path(name).parent for name in source.names[:n]}:
            (images / parent).mkdir(parents=True, exist_ok=True)

    def work(rows: range) -> dict[int, str]:
        failed = {}
        for i in rows:
            try:
                arr[i] = face = load_face(source.read(i), cfg.box, cfg.max_pixels)
            except Exception as e:  # anything a bad file can make Pillow raise; KeyboardInterrupt passes
                failed[i] = _reason(e, source.size(i))
                continue
            if images:
                Image.fromarray(face).save(images / Path(source.names[i]).with_suffix(".png"))
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
