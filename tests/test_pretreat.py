"""pretreat.py: crop geometry, folder/zip sources, bad files, atomic output, --demo and the CLI."""

import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

from utils import UserError

import numpy as np
import pytest
from PIL import Image, ImageDraw

import faces
import pretreat
from pretreat import PretreatConfig, sidecar

ROOT = Path(__file__).resolve().parent.parent
W, H = 178, 218  # CelebA's aligned images
BOX = (0, 10, 64, 74)  # the tutorial's crop of the 64x78 scaled image (written out: faces.BOX is under test)
# solid blocks (x0, y0, x1, y1) in a 178x218 picture, half-open; each survives the scale to 64x78
MARKS = {(255, 0, 0): (10, 40, 40, 70), (0, 160, 0): (120, 60, 165, 90), (0, 0, 255): (60, 150, 110, 195)}
# blocks the tutorial's crop cuts away: above scaled row 10 and below scaled row 74 (beyond the filter's reach)
CUT = {(255, 0, 255): (60, 0, 120, 18), (0, 255, 255): (40, 215, 140, 218)}


def marked(w: int = W, h: int = H, marks: dict = MARKS) -> Image.Image:
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    for colour, (x0, y0, x1, y1) in marks.items():
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    return img


def centroid(face: np.ndarray, colour, tol: float = 0.5):
    """(x, y) centre of a block of `colour` on white, in continuous coordinates (pixel i spans [i, i+1)).

    Each pixel is read as a blend of white and `colour`; its weight is the colour's share, so blended edge
    pixels count by their share and the centre is sub-pixel exact. Pixels off that blend line (other
    marks) weigh nothing. None when no pixel holds more than `tol` of the colour.
    """
    d = 255.0 - np.array(colour, dtype=float)
    v = 255.0 - face.astype(float)
    share = v @ d / (d @ d)
    off_line = np.linalg.norm(v - share[..., None] * d, axis=2)
    weight = np.where((off_line < 40) & (share > 0.1), np.clip(share, 0, 1), 0.0)
    if weight.max() <= tol:
        return None
    ys, xs = np.mgrid[0 : face.shape[0], 0 : face.shape[1]] + 0.5
    return (xs * weight).sum() / weight.sum(), (ys * weight).sum() / weight.sum()


def expected_centre(block, size, box):
    """Where the scale-then-crop arithmetic puts a block's centre: scale by (tw/w, th/h), shift by the box."""
    (x0, y0, x1, y1), (w, h) = block, size
    k = 64 / min(w, h)  # the shorter side becomes 64 (178x218 -> 64x78)
    tw, th = round(w * k), round(h * k)
    return (x0 + x1) / 2 * tw / w - box[0], (y0 + y1) / 2 * th / h - box[1]


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **{"quality": 95, **kw})
    return buf.getvalue()


def run(src, out, **kw):
    """pretreat() into `out`; returns (summary, array, names, {skipped name: reason})."""
    summary = pretreat.pretreat(PretreatConfig(src=str(src), out=str(out), progress=False, **kw))
    names = sidecar(Path(out), "names").read_text().splitlines()
    skipped = dict(line.split("\t", 1) for line in sidecar(Path(out), "skipped").read_text().splitlines())
    return summary, np.load(out), names, skipped


# ---------------------------------------------------------------------------------------------
# geometry


@pytest.mark.parametrize("fmt, tol", [("png", 0.15), ("jpg", 0.4)])
def test_marks_land_where_scale_then_crop_puts_them(tmp_path, fmt, tol):
    src = tmp_path / "src"
    src.mkdir()
    marked(marks={**MARKS, **CUT}).save(src / f"face.{fmt}", **({"quality": 95} if fmt == "jpg" else {}))
    summary, arr, names, skipped = run(src, tmp_path / "faces.npy")
    assert (summary.processed, summary.skipped, names, skipped) == (1, 0, [f"face.{fmt}"], {})
    assert arr.shape == (1, 64, 64, 3) and arr.dtype == np.uint8
    face = arr[0]
    for colour, block in MARKS.items():
        got, want = centroid(face, colour), expected_centre(block, (W, H), BOX)
        assert got is not None and np.allclose(got, want, atol=tol), (colour, got, want)
    for colour in CUT:
        assert centroid(face, colour, tol=0.25) is None, f"{colour} should be cropped away"
    if fmt == "png":  # lossless: exactly PIL's resize of the whole image to 64x78, then the tutorial's crop
        ref = np.asarray(marked(marks={**MARKS, **CUT}).resize((64, 78), faces.RESAMPLE).crop(BOX))
        assert np.abs(face.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("name", ["face.BMP", "face.webp", "face.JPEG"])
def test_every_listed_format_and_extension_case_is_read(tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    marked().save(src / name, **({"lossless": True} if name.endswith("webp") else {}))
    _, arr, names, _ = run(src, tmp_path / "faces.npy")
    assert names == [name]
    for colour, block in MARKS.items():
        assert np.allclose(centroid(arr[0], colour), expected_centre(block, (W, H), BOX), atol=0.4), colour


def test_folder_and_zip_give_identical_arrays(tmp_path, tiny_celeba_dir):
    zpath = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(tiny_celeba_dir.iterdir(), reverse=True):  # stored out of order: output is by name
            z.write(p, p.name)
    _, a_dir, n_dir, _ = run(tiny_celeba_dir, tmp_path / "dir.npy")
    _, a_zip, n_zip, _ = run(zpath, tmp_path / "zip.npy")
    assert n_dir == n_zip == sorted(p.name for p in tiny_celeba_dir.iterdir())
    assert a_dir.shape == (10, 64, 64, 3) and np.array_equal(a_dir, a_zip)
    assert len({a_dir[i].tobytes() for i in range(10)}) == 10
    assert zpath.exists() and not (tmp_path / "000001.jpg").exists()  # read in place, nothing extracted


def test_box_overrides_the_crop(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    marked().save(src / "face.png")
    _, arr, _, _ = run(src, tmp_path / "faces.npy", box=(0, 0, 64, 64))
    for colour, block in MARKS.items():
        if block[3] * 78 / H <= 64:  # blocks still inside the top 64 rows
            assert np.allclose(centroid(arr[0], colour), expected_centre(block, (W, H), (0, 0)), atol=0.2)
    for bad in [(0, 10, 64, 70), (-1, 10, 63, 74), (0, 10, 65, 74)]:
        with pytest.raises(UserError, match="64x64 box"):
            run(src, tmp_path / "bad.npy", box=bad)


@pytest.mark.parametrize(
    "size, blocks, gone",
    [
        # landscape 300x150 -> 128x64: the box's bottom (74) does not fit, centre crop x 32..96
        (
            (300, 150),
            {(255, 0, 0): (100, 20, 140, 70), (0, 0, 255): (180, 80, 215, 140)},
            {(0, 160, 0): (0, 40, 40, 110)},
        ),
        # square 200x200 -> 64x64: the whole image
        ((200, 200), {(255, 0, 0): (20, 120, 60, 180), (0, 0, 255): (150, 10, 190, 50)}, {}),
    ],
)
def test_center_crop_when_the_box_does_not_fit(tmp_path, size, blocks, gone):
    src = tmp_path / "src"
    src.mkdir()
    marked(*size, marks={**blocks, **gone}).save(src / "wide.png")
    _, arr, _, _ = run(src, tmp_path / "faces.npy")
    k = 64 / min(size)
    centre_box = ((round(size[0] * k) - 64) // 2, (round(size[1] * k) - 64) // 2)
    for colour, block in blocks.items():
        assert np.allclose(centroid(arr[0], colour), expected_centre(block, size, centre_box), atol=0.2), colour
    for colour in gone:
        assert centroid(arr[0], colour, tol=0.25) is None


@pytest.mark.parametrize(
    "size, scaled, box",
    [
        ((178, 218), (64, 78), BOX),
        ((100, 115), (64, 74), BOX),  # exactly tall enough for the box
        ((100, 114), (64, 73), (0, 4, 64, 68)),  # one row short: centre crop
        ((300, 150), (128, 64), (32, 0, 96, 64)),
        ((200, 200), (64, 64), (0, 0, 64, 64)),
        ((40, 50), (64, 80), BOX),  # smaller than 64: scaled up
    ],
)
def test_crop_equals_resizing_the_whole_image_then_cropping(size, scaled, box):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1] // 10 + 1, size[0] // 10 + 1, 3), dtype=np.uint8)).resize(size)
    assert faces.scaled_size(*size) == scaled
    face = faces.crop_face(img.copy())
    ref = np.asarray(img.resize(scaled, faces.RESAMPLE).crop(box))
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    assert np.abs(face.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"optimize": True, "subsampling": 0}, {"quality": 60}])
@pytest.mark.parametrize("size", [(178, 218), (300, 150), (1200, 1500)])
def test_plain_jpeg_fast_path_gives_the_same_pixels_as_image_open(size, options):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    data = jpeg_bytes(img, **options)
    assert faces.plain_jpeg_size(data) == size
    general = faces.crop_face(Image.open(io.BytesIO(data)))  # Image.open, draft mode
    assert np.array_equal(faces.load_face(data), general)


def test_jpegs_with_exif_or_not_ycbcr_take_the_general_path():
    img = marked()
    exif = Image.Exif()
    exif[0x0112] = 1
    assert faces.plain_jpeg_size(jpeg_bytes(img, exif=exif.tobytes())) is None
    assert faces.plain_jpeg_size(jpeg_bytes(img.convert("L"))) is None
    assert faces.plain_jpeg_size(jpeg_bytes(img.convert("CMYK"))) is None
    png = io.BytesIO()
    img.save(png, "PNG")
    assert faces.plain_jpeg_size(png.getvalue()) is None
    data = jpeg_bytes(img)
    assert faces.plain_jpeg_size(data[:20]) is None  # cut before the frame header


def test_images_flag_writes_each_crop_and_limit_takes_the_first(tmp_path, tiny_celeba_dir):
    crops = tmp_path / "crops"
    summary, arr, names, _ = run(tiny_celeba_dir, tmp_path / "faces.npy", images=str(crops), limit=4, workers=1)
    assert summary.processed == 4 and names == [f"{i:06d}.jpg" for i in range(1, 5)]
    assert sorted(p.name for p in crops.iterdir()) == [f"{i:06d}.png" for i in range(1, 5)]
    for i, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(crops / Path(name).with_suffix(".png"))), arr[i])


# ---------------------------------------------------------------------------------------------
# bad input: the run completes, bad files are listed with a reason, good ones are all there


def run_with(tmp_path, folder, name, write):
    """Run once on the clean folder, once with `name` added (it sorts into the middle); return both."""
    _, clean, clean_names, _ = run(folder, tmp_path / "clean.npy")
    write(folder / name)
    summary, arr, names, skipped = run(folder, tmp_path / "out.npy")
    return clean, clean_names, summary, arr, names, skipped


def assert_skipped(tmp_path, folder, name, write, reason):
    clean, clean_names, summary, arr, names, skipped = run_with(tmp_path, folder, name, write)
    assert (summary.processed, summary.skipped) == (10, 1) and "1 skipped (listed in " in str(summary)
    assert names == clean_names and np.array_equal(arr, clean)  # later rows moved up over the hole
    assert list(skipped) == [name] and reason in skipped[name], skipped


def converted(tmp_path, folder, name, write):
    """Add a convertible image; return its 64x64 crop after checking the other ten are untouched."""
    clean, clean_names, summary, arr, names, skipped = run_with(tmp_path, folder, name, write)
    assert (summary.processed, summary.skipped, skipped) == (11, 0, {})
    i = names.index(name)
    assert names[:i] + names[i + 1 :] == clean_names and np.array_equal(np.delete(arr, i, axis=0), clean)
    return arr[i].astype(int)


def test_truncated_jpeg_is_skipped(tmp_path, tiny_celeba_dir):
    data = (tiny_celeba_dir / "000001.jpg").read_bytes()
    assert_skipped(
        tmp_path, tiny_celeba_dir, "000005_cut.jpg", lambda p: p.write_bytes(data[: len(data) // 2]), "truncated"
    )


def test_zero_byte_file_is_skipped(tmp_path, tiny_celeba_dir):
    assert_skipped(tmp_path, tiny_celeba_dir, "000005_empty.jpg", lambda p: p.write_bytes(b""), "empty file")


def test_text_file_named_jpg_is_skipped(tmp_path, tiny_celeba_dir):
    assert_skipped(
        tmp_path, tiny_celeba_dir, "000005_text.JPG", lambda p: p.write_text("not a picture\n"), "not an image"
    )


def test_cmyk_jpeg_is_converted(tmp_path, tiny_celeba_dir):
    cmyk = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # red
    face = converted(tmp_path, tiny_celeba_dir, "000005_cmyk.jpg", lambda p: p.write_bytes(jpeg_bytes(cmyk)))
    assert np.abs(face - [255, 0, 0]).max() < 12


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_grayscale_is_converted(tmp_path, tiny_celeba_dir, fmt):
    gray = Image.fromarray(np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1)))  # left dark, right light
    face = converted(tmp_path, tiny_celeba_dir, f"000005_gray.{fmt}", gray.save)
    assert (face[..., 0] == face[..., 1]).all() and (face[..., 1] == face[..., 2]).all()
    assert face[:, :8].mean() < 40 and face[:, -8:].mean() > 215


def test_rgba_png_is_put_over_white(tmp_path, tiny_celeba_dir):
    a = np.zeros((H, W, 4), np.uint8)
    a[:, W // 2 :] = (255, 0, 0, 255)  # right half opaque red, left half fully transparent (black underneath)
    face = converted(tmp_path, tiny_celeba_dir, "000005_rgba.png", Image.fromarray(a, "RGBA").save)
    assert (face[:, :28] == 255).all() and np.abs(face[:, 36:] - [255, 0, 0]).max() <= 1


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png_is_converted(tmp_path, tiny_celeba_dir, transparent):
    img = Image.new("P", (W, H), 0)
    img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)  # 0: blue, 1: red
    ImageDraw.Draw(img).rectangle((W // 2, 0, W - 1, H - 1), fill=1)
    save = (lambda p: img.save(p, transparency=0)) if transparent else img.save
    face = converted(tmp_path, tiny_celeba_dir, "000005_pal.png", save)
    assert np.abs(face[:, :28] - ([255, 255, 255] if transparent else [0, 0, 255])).max() <= 1
    assert np.abs(face[:, 36:] - [255, 0, 0]).max() <= 1


def test_16bit_png_is_scaled_not_clipped(tmp_path, tiny_celeba_dir):
    a = np.full((H, W), 40000, np.uint16)
    a[:, W // 2 :] = 65535

    def write(p):
        Image.fromarray(a).save(p)
        assert Image.open(p).mode.startswith("I")  # really a 16-bit PNG

    face = converted(tmp_path, tiny_celeba_dir, "000005_16bit.png", write)
    assert (face[:, :28] == round(40000 / 257)).all() and (face[:, 36:] == 255).all()


def png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG file that claims to be w x h: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [30000, 10000])  # over Pillow's hard limit (179 MP); between its warning and error
def test_decompression_bomb_is_skipped(tmp_path, tiny_celeba_dir, side, recwarn):
    assert_skipped(
        tmp_path, tiny_celeba_dir, "000005_bomb.png", lambda p: p.write_bytes(png_header_only(side, side)), "too large"
    )
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_image_over_max_pixels_is_skipped(tmp_path, tiny_celeba_dir):
    (tiny_celeba_dir / "000005_big.jpg").write_bytes(jpeg_bytes(marked(400, 300)))
    summary, _, names, skipped = run(tiny_celeba_dir, tmp_path / "out.npy", max_pixels=100_000)
    assert summary.processed == 10 and "000005_big.jpg" not in names
    assert (
        skipped["000005_big.jpg"].startswith("too large: 400x300 = 120000 pixels")
        and "--max-pixels" in skipped["000005_big.jpg"]
    )


def test_exif_rotated_photo_comes_out_upright(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    upright = marked()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the camera stored it turned left
    (src / "a_upright.jpg").write_bytes(jpeg_bytes(upright))
    (src / "b_rotated.jpg").write_bytes(jpeg_bytes(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes()))
    assert Image.open(src / "b_rotated.jpg").size == (H, W)
    _, arr, names, _ = run(src, tmp_path / "faces.npy")
    assert names == ["a_upright.jpg", "b_rotated.jpg"]
    for colour, block in MARKS.items():
        assert np.allclose(centroid(arr[1], colour), expected_centre(block, (W, H), BOX), atol=0.4), colour
    assert np.abs(arr[0].astype(int) - arr[1]).mean() < 3


def test_non_image_files_are_ignored_not_skipped(tmp_path, tiny_celeba_dir):
    (tiny_celeba_dir / "list_attr_celeba.txt").write_text("202599\n")
    (tiny_celeba_dir / "list_bbox_celeba.csv").write_text("image_id,x_1\n")
    (tiny_celeba_dir / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tiny_celeba_dir / "._000001.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    summary, arr, names, skipped = run(tiny_celeba_dir, tmp_path / "out.npy")
    assert (summary.processed, summary.skipped, summary.ignored, skipped) == (10, 0, 4, {})
    assert names == [f"{i:06d}.jpg" for i in range(1, 11)] and arr.shape == (10, 64, 64, 3)


def test_subfolders_are_read_hidden_ones_are_not(tmp_path, tiny_celeba_dir):
    (tiny_celeba_dir / "sub").mkdir()
    (tiny_celeba_dir / ".thumbs").mkdir()
    shutil.move(tiny_celeba_dir / "000010.jpg", tiny_celeba_dir / "sub" / "000010.jpg")
    shutil.copy(tiny_celeba_dir / "000001.jpg", tiny_celeba_dir / ".thumbs" / "000001.jpg")
    crops = tmp_path / "crops"
    _, arr, names, _ = run(tiny_celeba_dir, tmp_path / "out.npy", images=str(crops))
    assert names == [f"{i:06d}.jpg" for i in range(1, 10)] + ["sub/000010.jpg"] and len(arr) == 10
    assert (crops / "sub" / "000010.png").exists() and not (crops / ".thumbs").exists()


def test_no_usable_image_is_an_error_naming_the_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match=r"src: no \.jpg"):
        run(src, tmp_path / "out.npy")
    (src / "a.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="none of the 1 images could be read"):
        run(src, tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()


# ---------------------------------------------------------------------------------------------
# atomic output


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_an_exception_mid_run_leaves_no_output_and_no_temp_file(tmp_path, tiny_celeba_dir, monkeypatch):
    for i in range(11, 81):
        shutil.copy(tiny_celeba_dir / f"{i % 10 + 1:06d}.jpg", tiny_celeba_dir / f"{i:06d}.jpg")
    real, calls, lock = pretreat.load_face, [0], threading.Lock()

    def flaky(*args, **kw):
        with lock:
            calls[0] += 1
            if calls[0] == 45:
                raise KeyboardInterrupt  # not an Exception: a bad image is skipped, this stops the run
        return real(*args, **kw)

    monkeypatch.setattr(pretreat, "load_face", flaky)
    out = tmp_path / "out" / "faces.npy"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_celeba_dir, out, workers=2)
    assert calls[0] >= 45 and leftovers(out.parent) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_killed_run_leaves_no_output_and_no_temp_file(tmp_path, sig, code):
    src = tmp_path / "src"
    src.mkdir()
    y, x = np.mgrid[0:1000, 0:1000]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], 2).astype(np.uint8)).save(src / "0000.png")
    data = (src / "0000.png").read_bytes()  # 5 KB, ~25 ms to decode and shrink: 300 of them take seconds
    for i in range(1, 300):
        (src / f"{i:04d}.png").write_bytes(data)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "pretreat.py"),
            "--src",
            str(src),
            "--out",
            str(out / "faces.npy"),
            "--workers",
            "1",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not any(n.endswith(".tmp") for n in leftovers(out)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert "Traceback" not in err and leftovers(out) == []


# ---------------------------------------------------------------------------------------------
# --demo


def test_demo_builds_200_faces_and_their_mirrors(tmp_path):
    from skimage.data import lfw_subset

    summary = pretreat.pretreat(PretreatConfig(demo=True, out=str(tmp_path / "demo64.npy")))
    arr = np.load(tmp_path / "demo64.npy")
    assert summary.processed == 200 and arr.shape == (200, 64, 64, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[100:], arr[:100, :, ::-1]) and not np.array_equal(arr[:100], arr[100:])
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert arr.min() < 30 and arr.max() > 225  # the full range, not [0, 1] cast to 0 and 1
    small = np.stack([np.asarray(Image.fromarray(a[..., 0]).resize((25, 25), Image.Resampling.BOX)) for a in arr[:100]])
    assert np.abs(small.astype(float) - lfw_subset()[:100] * 255).mean() < 8  # the same faces, upright
    assert sidecar(tmp_path / "demo64.npy", "names").read_text().splitlines()[100] == "lfw_subset[0] mirrored"


# ---------------------------------------------------------------------------------------------
# the command line


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "pretreat.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("args", [(), ("--src", "nowhere.zip")])
def test_missing_source_says_where_to_get_celeba(tmp_path, args):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretreat.py: error: "), r.stderr
    for needle in ["img_align_celeba", "http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html", "39207", "--demo"]:
        assert needle in lines[0]
    assert not os.listdir(tmp_path)


def test_cli_finds_the_default_folder_and_prints_a_summary(tmp_path, tiny_celeba_dir):
    r = cli("--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "10 images -> data/celeba64.npy" in r.stdout and "img/s" in r.stdout
    assert np.load(tmp_path / "data" / "celeba64.npy").shape == (10, 64, 64, 3)
    assert sorted(os.listdir(tmp_path / "data")) == ["celeba64.names.txt", "celeba64.npy", "celeba64.skipped.txt"]
