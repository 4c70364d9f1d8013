"""faces.py: the pixel convention (uint8 HWC <-> float CHW), grids, PNG writes, reading folders, the packed .npy."""

import os
import subprocess
import sys
from pathlib import Path

from utils import UserError

import numpy as np
import pytest
from PIL import Image

import faces

ROOT = Path(__file__).resolve().parent.parent


def every_value() -> np.ndarray:
    """uint8 (2, 64, 64, 3) holding all 256 values in every channel; no two of (row, column, channel) alike."""
    a = (np.arange(2 * 64 * 64 * 3).reshape(2, 64, 64, 3) * 7) % 256
    return a.astype(np.uint8)


def test_round_trip_uint8_float_uint8_is_exact():
    x = every_value()
    f = faces.to_float(x)
    assert f.dtype == np.float32 and f.shape == (2, 3, 64, 64) and f.min() == -1.0 and f.max() == 1.0
    assert np.array_equal(faces.to_images(f), x)
    assert np.array_equal(faces.to_uint8(f), np.transpose(x, (0, 3, 1, 2)))


def test_to_float_is_nchw_not_ncwh():
    x = np.zeros((1, 64, 64, 3), np.uint8)
    x[0, 5, 40, 1] = 255  # row 5, column 40, green
    f = faces.to_float(x)
    assert f[0, 1, 5, 40] == 1.0 and f[0, 1, 40, 5] == -1.0 and (f == 1.0).sum() == 1
    assert faces.to_float(x[:, :, :, :])[0, 1, 5, 40] == np.float32(255) / np.float32(127.5) - np.float32(1)


def test_to_float_writes_into_out_and_a_tensor_gives_the_same_bits():
    import paddle

    x = every_value()
    out = np.full((2, 3, 64, 64), 9, np.float32)
    assert faces.to_float(x, out) is out and np.array_equal(out, faces.to_float(x))
    t = faces.to_float(paddle.to_tensor(x))
    assert isinstance(t, paddle.Tensor) and t.dtype == paddle.float32 and list(t.shape) == [2, 3, 64, 64]
    assert t.numpy().tobytes() == out.tobytes()


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 64, 64, 3), np.float32), np.zeros((2, 3, 64, 64), np.uint8), np.zeros((0, 64, 64, 3), np.uint8)],
)
def test_to_float_refuses_other_arrays_in_one_line(bad):
    with pytest.raises(UserError, match=r"images must be uint8 \[N, 64, 64, 3\] with N > 0") as e:
        faces.to_float(bad)
    assert "\n" not in str(e.value)


def test_to_uint8_maps_tanh_range_to_full_byte_range():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -2.0], np.float32)
    np.testing.assert_array_equal(faces.to_uint8(x), [0, 64, 128, 191, 255, 255, 0])


def test_make_grid_places_images_row_major_with_border():
    imgs = np.stack([np.full((4, 5, 3), i * 10, np.uint8) for i in range(5)])
    grid = faces.make_grid(imgs, nrow=3, padding=1, pad_value=255)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert (
        grid[1, 1, 0] == 0
        and grid[1, 7, 0] == 10
        and grid[1, 13, 0] == 20
        and grid[6, 1, 0] == 30
        and grid[6, 7, 0] == 40
    )
    assert grid[6, 13, 0] == 255 and grid[0, 0, 0] == 255  # empty cell and border
    assert faces.make_grid(np.zeros((64, 8, 8, 3), np.uint8), padding=2).shape == (8 * 10 + 2, 8 * 10 + 2, 3)


def test_save_png_round_trips_and_is_atomic(tmp_path):
    img = every_value()[0]
    path = tmp_path / "sub" / "a.png"
    faces.save_png(img, path)
    assert np.array_equal(np.asarray(Image.open(path)), img)
    faces.save_png(img[..., :1], tmp_path / "gray.png")  # (H, W, 1) is written as gray
    assert np.asarray(Image.open(tmp_path / "gray.png")).shape == (64, 64)
    with pytest.raises(TypeError):
        faces.save_png(np.zeros((4, 4, 3), np.float64), path)  # Pillow refuses: the old file stays, no temp left
    assert np.array_equal(np.asarray(Image.open(path)), img)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]


def test_cores_is_the_affinity():
    assert faces.cores() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def test_import_loads_no_paddle():
    code = "import sys, faces; print(sorted(m for m in sys.modules if m.split('.')[0] == 'paddle'))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# -- reading images ------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """Six 64x64 PNGs (two in a subfolder), a broken PNG, an empty JPEG, a text file and a grid.png sheet."""
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    for i, name in enumerate(["a.png", "b.png", "c.png", "e.png", "sub/f.png", "sub/g.png"]):
        Image.fromarray(imgs[i]).save(d / name)
    (d / "bad.png").write_bytes(b"\x89PNG truncated")
    (d / "d.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((130, 130, 3), np.uint8)).save(d / "grid.png")
    return d, imgs


def test_read_folder_keeps_64px_pixels_and_skips_bad_files_with_a_reason(folder):
    d, imgs = folder
    images, names, skipped = faces.read_folder(d, exclude={"grid.png"})
    assert names == ["a.png", "b.png", "c.png", "e.png", "sub/f.png", "sub/g.png"]
    assert images.dtype == np.uint8 and np.array_equal(images, imgs)  # 64x64 in, the same pixels out
    assert skipped == [
        ("bad.png", skipped[0][1]),
        ("d.jpg", "empty file (0 bytes)"),
    ] and skipped[0][1].startswith(("truncated or corrupt", "not an image"))


def test_read_folder_num_offset_and_what_it_refuses(folder, tmp_path):
    d, imgs = folder
    images, names, skipped = faces.read_folder(d, num=3, offset=1, exclude={"grid.png"})  # b.png, bad.png, c.png
    assert names == ["b.png", "c.png"] and np.array_equal(images, imgs[1:3]) and [n for n, _ in skipped] == ["bad.png"]
    big = faces.read_folder(d, num=1, offset=6)[0]  # grid.png (130x130): center-cropped and scaled like pretreat.py
    assert big.shape == (1, 64, 64, 3) and (big == 0).all()
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"nope")
    for path, kw, why in [
        (tmp_path / "nowhere", {}, "nowhere: no such folder"),
        (tmp_path / "empty", {}, r"empty: no \.jpg/\.jpeg/\.png/\.bmp/\.webp images in this folder"),
        (d, {"offset": 99}, r"from --offset 99"),
        (tmp_path / "broken", {}, r"broken: none of the 1 images could be read \(x\.png: not an image"),
    ]:
        with pytest.raises(UserError, match=why) as e:
            faces.read_folder(path, **kw)
        assert "\n" not in str(e.value)


def test_read_folder_reads_a_zip_like_pretreat(folder, tmp_path):
    import zipfile

    d, imgs = folder
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.write(d / "a.png", "a.png")
        z.write(d / "sub" / "f.png", "sub/f.png")
        z.writestr("__MACOSX/._a.png", b"resource fork")
    images, names, skipped = faces.read_folder(tmp_path / "z.zip")
    assert names == ["a.png", "sub/f.png"] and np.array_equal(images, imgs[[0, 4]]) and skipped == []


# -- the packed .npy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, why",
    [
        ("missing", r"no such file; make it with python pretreat\.py \(or pretreat\.py --demo for data/demo64\.npy\)"),
        ("text", r"not a readable \.npy file"),
        ("float", r"holds a float32 array of shape \(4, 64, 64, 3\), expected uint8 \(N, 64, 64, 3\) images"),
        ("gray", r"holds a uint8 array of shape \(4, 64, 64\)"),
        ("empty", r"holds no images"),
        ("pickle", r"not a readable \.npy file"),
    ],
)
def test_open_packed_errors_are_one_line_naming_the_file(tmp_path, case, why):
    path = tmp_path / "faces.npy"
    if case == "text":
        path.write_text("hello")
    elif case != "missing":
        arrays = {
            "float": np.zeros((4, 64, 64, 3), np.float32),
            "gray": np.zeros((4, 64, 64), np.uint8),
            "empty": np.zeros((0, 64, 64, 3), np.uint8),
            "pickle": np.array([None, 1], dtype=object),
        }
        np.save(path, arrays[case], allow_pickle=True)
    for fn in (faces.open_packed, lambda p: faces.sample_packed(p, 2, 0)):
        with pytest.raises(UserError, match=why) as e:
            fn(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_sample_packed_same_rows_for_the_same_seed(tmp_path):
    data = every_value().repeat(5, axis=0)
    data[:, 0, 0, 0] = np.arange(10)  # the row number
    np.save(tmp_path / "f.npy", data)
    a, b, c = (faces.sample_packed(tmp_path / "f.npy", 4, seed) for seed in (3, 3, 4))
    rows = a[:, 0, 0, 0].tolist()
    assert np.array_equal(a, b) and not np.array_equal(a, c) and rows == sorted(rows) and len(set(rows)) == 4
    assert rows == sorted(np.random.default_rng(3).choice(10, 4, replace=False).tolist())  # the documented choice
    assert np.array_equal(a, data[rows]) and not isinstance(a, np.memmap)
    assert np.array_equal(faces.sample_packed(tmp_path / "f.npy", 99, 0), data)  # all when there are fewer
    arr = faces.open_packed(tmp_path / "f.npy")
    assert isinstance(arr, np.memmap) and arr.shape == (10, 64, 64, 3)
