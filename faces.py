"""The pixel convention and image reading: the one owner of how a face is stored, converted, read and shown.

    64 px faces. On disk and in pretreat.py's packed .npy: uint8 HWC, (N, 64, 64, 3). In the networks: float32 CHW
    in [-1, 1], [N, 3, 64, 64]. to_float and to_uint8 are the only two conversions between them.

API:
    to_float(uint8 [N, 64, 64, 3]) -> float32 [N, 3, 64, 64]    # x / 127.5 - 1 (numpy array or paddle tensor)
    to_uint8(x) -> uint8, same layout; to_images(float [N, 3, H, W]) -> uint8 [N, H, W, 3]
    make_grid(images, nrow), save_png(image, path)             # a contact sheet; an atomic PNG write
    load_face(bytes) -> uint8 (64, 64, 3)                      # upright, RGB, scaled, the tutorial's crop box
    ImageSource(path)                                          # the image files of a folder (recursive) or a zip
    read_folder(path, num, offset, exclude) -> (images, names, skipped)   # skipped: [(name, reason)]
    open_packed(path) -> memmap; sample_packed(path, num, seed)           # pretreat.py's .npy
    cores(), processor()                                       # usable cores; the CPU's vendor, model, flags

Importing this module loads numpy and Pillow only: a tensor given to to_float/to_uint8 brings its own paddle.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import platform
import stat
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from utils import UserError, atomic_path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SIZE = 64
BOX = (0, 10, 64, 74)  # the tutorial's crop of the 64x78 scaled image
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# 40 MP passes any camera photo up to ~7700x5200 but bounds a worker's full-size decode (PNG/BMP/WebP have
# no reduced-scale decoding) to ~160 MB; CelebA's images are 0.04 MP. Pillow's own hard limit is 179 MP.
MAX_PIXELS = 40_000_000
# Pillow warns from 89 MP at Image.open (a stray stderr line, in a thread pool too); the readers here check every
# image's pixels against MAX_PIXELS (or --max-pixels) before decoding it, so its warning says nothing more
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MAX_FILE_BYTES = 256 << 20  # one image file (or zip member) over this is not a photo of a face: never read
RESAMPLE = Image.Resampling.BILINEAR  # antialiased (the triangle widens with the downscale), like torchvision's Resize
PACK_HINT = "run python pretreat.py first (CelebA), or python pretreat.py --demo for the bundled demo set"


def cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Processor(NamedTuple):
    vendor: str  # "GenuineIntel", "AuthenticAMD", or "" where unknown
    name: str  # the model name
    flags: frozenset[str]  # the instruction-set extensions (Linux; empty elsewhere)


def parse_cpuinfo(lines: Iterable[str], other: str = "") -> Processor:
    """The first processor of /proc/cpuinfo's `lines`; `other` (platform.processor()) where it names none."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            break  # the first processor's block ends
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    vendor = fields.get("vendor_id") or next((v for v in ("AuthenticAMD", "GenuineIntel") if v in other), "")
    name = fields.get("model name") or other or platform.machine()
    return Processor(vendor, name, frozenset(fields.get("flags", "").split()))


@functools.cache
def processor() -> Processor:
    """The CPU this runs on: /proc/cpuinfo on Linux (read up to the end of its first processor: device.py asks at
    every start, and the kernel writes the file out per CPU), platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f, platform.processor())
    except OSError:
        return parse_cpuinfo([], platform.processor())


# ---------------------------------------------------------------------------------------------
# the pixel convention: uint8 HWC <-> float32 CHW in [-1, 1]


def to_float(images, out: np.ndarray | None = None):
    """uint8 [N, 64, 64, 3] -> float32 [N, 3, 64, 64] in [-1, 1]: x / 127.5 - 1, axes moved explicitly.

    A numpy array gives a numpy array (written into `out` when given); a paddle tensor (e.g. gathered on the
    GPU) gives a tensor on its device, computed the same way in float32 (a cast, an IEEE division, a
    subtraction: each correctly rounded), so both give the same bits."""
    if hasattr(images, "place"):  # a paddle.Tensor: stays where it is
        import paddle

        scale, one = _constants(images.place)
        x = images.transpose([0, 3, 1, 2]).astype("float32")
        return paddle.subtract(
            paddle.divide(x, scale), one
        )  # tensors, not scalars: x / 127.5 would multiply by 1/127.5
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3) or not len(images):
        raise UserError(
            f"images must be uint8 [N, {SIZE}, {SIZE}, 3] with N > 0, got {images.dtype} {list(images.shape)}"
        )
    if out is None:
        out = np.empty((len(images), 3, SIZE, SIZE), np.float32)
    for i in range(0, len(images), 8):  # 8 images (400 KB of float) at a time: the two in-place passes stay in cache
        o = out[i : i + 8]
        np.copyto(o, np.transpose(images[i : i + 8], (0, 3, 1, 2)), casting="unsafe")
        o /= np.float32(127.5)
        o -= np.float32(1.0)
    return out


_CONSTANTS: dict = {}


def _constants(place) -> tuple:
    """127.5 and 1 as float32 tensors on `place`, made once per device: no host-to-device copy per batch."""
    key = str(place)
    if key not in _CONSTANTS:
        import paddle

        _CONSTANTS[key] = tuple(paddle.to_tensor(np.float32(v), place=place) for v in (127.5, 1.0))
    return _CONSTANTS[key]


def to_uint8(x) -> np.ndarray:
    """Map images in [-1, 1] (a tensor or array, any layout) to uint8 [0, 255]: (x + 1) * 127.5, rounded, clipped."""
    x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return np.clip(np.rint((x.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def chw_to_hwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C); an explicit axis order, never a bare .transpose()."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def to_images(x) -> np.ndarray:
    """Network output float [N, 3, H, W] in [-1, 1] (a tensor or array) -> uint8 images [N, H, W, 3]."""
    return chw_to_hwc(to_uint8(x))


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*H', cols*W', C) image with a border.

    nrow is the number of images per row (default: a square-ish grid, ceil(sqrt(N))).
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncol = nrow or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncol))
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, images.dtype)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 HWC (or HW) image as PNG, atomically."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


# ---------------------------------------------------------------------------------------------
# one image: upright, RGB, shorter side scaled to 64, the tutorial's crop box


def save_gif(frames: np.ndarray, path: str | os.PathLike, ms: int = 100) -> None:
    """Write uint8 frames (T, H, W, 3) as an animated GIF that loops forever, `ms` per frame, atomically.
    GIF holds 256 colours a frame: Pillow quantises each one (faces keep their look, gradients band a little)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T > 0, got {frames.dtype} {list(frames.shape)}")
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)


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
    # (A 64x64 image with the full box comes back unchanged: Pillow's resize to the same size is a copy.)
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


def unreadable_reason(e: Exception, nbytes: int) -> str:
    """Why an image file could not be used, in a few words, from what reading it raised and its size."""
    if isinstance(e, UnreadableFile):
        return str(e)
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
# many images: a folder or a zip, read in place


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    parts = name.split("/")  # no "..": a crafted zip must not make --images write outside its folder
    return (
        base.lower().endswith(EXTENSIONS)
        and not base.startswith(".")
        and parts[0] not in ("__MACOSX", "")
        and ".." not in parts
    )


class ImageSource:
    """The image files of a folder (recursively) or a zip, sorted by name; `read(i)` gives a file's bytes.

    Hidden files and folders and __MACOSX/ are left out; `ignored` counts the files without an image extension."""

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
        """The file's bytes; UnreadableFile (with the reason) for a broken link, a link loop, a file or zip member
        over MAX_FILE_BYTES (checked before reading: a zip member's declared size too), a damaged zip member."""
        name = self.names[i]
        if self.zip is None:
            path = os.path.join(self.path, name)
            try:  # non-blocking: opening a FIFO must not wait for a writer
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as e:
                raise UnreadableFile(_os_reason(path, e)) from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):  # a FIFO, a device (/dev/zero never ends), a socket
                    raise UnreadableFile("not a regular file (a device, FIFO or socket)")
                _check_file_size(st.st_size)
                return f.read(MAX_FILE_BYTES + 1)
        info = self._infos[name]
        _check_file_size(info.file_size)
        try:
            with self._lock, self.zip.open(info) as f:  # ZipFile.open counts its users without a lock
                data = f.read(MAX_FILE_BYTES + 1)  # a member inflates to its declared size at most (zipfile stops)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, zlib.error) as e:
            raise UnreadableFile(f"damaged zip member: {' '.join(str(e).split())[:100] or type(e).__name__}") from None
        _check_file_size(len(data))
        return data

    def size(self, i: int) -> int:
        """The file's size in bytes (-1 when it cannot be known: a broken link)."""
        name = self.names[i]
        if self.zip is not None:
            return self._infos[name].file_size
        try:
            return os.path.getsize(self.path / name)
        except OSError:
            return -1

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


class UnreadableFile(OSError):
    """An image file that cannot be read at all (its message is the reason, for the skipped list)."""


def _check_file_size(nbytes: int) -> None:
    if nbytes > MAX_FILE_BYTES:
        raise UnreadableFile(f"too large: {nbytes / 2**20:.0f} MiB, over {MAX_FILE_BYTES >> 20} MiB for one image file")


def _os_reason(path: str, e: OSError) -> str:
    if os.path.islink(path) and not os.path.exists(path):  # exists() follows the link: False when it leads nowhere
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "a symbolic link loop"
        return f"a broken symbolic link (to {os.readlink(path)})"
    return f"cannot open: {e.strerror or type(e).__name__}"


def read_faces(source: ImageSource, indices) -> tuple[list[np.ndarray], list[str], list[tuple[str, str]]]:
    """The faces (load_face) of source's images at `indices`, their names, and the (name, reason) of those
    that could not be read: a bad file is skipped, never raised."""
    images, names, skipped = [], [], []
    for i in indices:
        data = b""
        try:
            data = source.read(int(i))
            images.append(load_face(data))
            names.append(source.names[i])
        except Exception as e:  # anything a bad file makes Pillow raise
            skipped.append((source.names[i], unreadable_reason(e, len(data) if data else source.size(int(i)))))
    return images, names, skipped


def read_folder(
    path: str | os.PathLike, num: int = 0, offset: int = 0, exclude=()
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Images `offset` .. `offset + num` (num 0: all) of a folder (recursive) or zip, by name, cropped as
    pretreat.py does: uint8 [N, 64, 64, 3], their names, and the skipped (name, reason). Names in `exclude`
    (e.g. generator.py's grid.png) are left out. UserError when there is nothing to read or none could be read."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such folder")
    source = ImageSource(p)
    try:
        excluded = set(exclude)
        all_names = [n for n in source.names if n not in excluded]
        stop = offset + num if num else None
        wanted = [i for i, n in enumerate(source.names) if n not in excluded][offset:stop]
        if not wanted:
            raise UserError(
                f"{path}: no {'/'.join(EXTENSIONS)} images in this folder"
                + (f" from --offset {offset} (it has {len(all_names)})" if offset else "")
            )
        images, names, skipped = read_faces(source, wanted)
    finally:
        source.close()
    if not images:
        raise UserError(f"{path}: none of the {len(wanted)} images could be read ({skipped[0][0]}: {skipped[0][1]})")
    return np.stack(images), names, skipped


# ---------------------------------------------------------------------------------------------
# pretreat.py's packed .npy


def open_packed(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a pretreat.py .npy and check it is uint8 (N, 64, 64, 3) with N > 0; UserError, one line, if not."""
    if not os.path.exists(path):
        raise UserError(
            f"{path}: no such file; make it with python pretreat.py (or pretreat.py --demo for data/demo64.npy)"
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # (an .npz is a zip)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable .npy file ({why}); {PACK_HINT}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (SIZE, SIZE, 3):
        what = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise UserError(f"{path}: holds a {what}, expected uint8 (N, {SIZE}, {SIZE}, 3) images; {PACK_HINT}")
    if len(arr) == 0:
        raise UserError(f"{path}: holds no images; {PACK_HINT}")
    return arr


def sample_packed(path: str | os.PathLike, num: int, seed: int) -> np.ndarray:
    """`num` random rows (all when there are fewer) of a packed .npy, in file order, as an array in memory;
    the same rows for the same seed."""
    data = open_packed(path)
    if num >= len(data):
        return np.array(data)
    rows = np.sort(np.random.default_rng(seed).choice(len(data), num, replace=False))  # sorted: sequential reads
    return np.array(data[rows])
