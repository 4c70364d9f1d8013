"""evaluate.py: face rate on faces / non-faces / noise, SWD against a literal transcription of the
reference, the CLI's JSON, the --images path, and its error lines. All data is made here."""

import json
import os
import subprocess
import sys
from pathlib import Path

from utils import UserError

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

import evaluate
from faces import sample_packed

ROOT = Path(__file__).resolve().parent.parent


def _lfw_rgb64(gray25: np.ndarray) -> np.ndarray:
    # as pretreat.py --demo: bicubic 25 -> 64 in float, rounded once, gray copied to RGB
    up = np.stack(
        [
            np.asarray(Image.fromarray(g.astype(np.float32), "F").resize((64, 64), Image.Resampling.BICUBIC))
            for g in gray25
        ]
    )
    return np.repeat(np.clip(np.rint(up * 255), 0, 255).astype(np.uint8)[..., None], 3, axis=3)


@pytest.fixture(scope="module")
def lfw():
    from skimage.data import lfw_subset

    x = _lfw_rgb64(lfw_subset())
    faces, nonfaces = x[:100], x[100:]
    demo = np.concatenate([faces, faces[:, :, ::-1]])  # the demo set: faces, then their mirrors
    return faces, nonfaces, demo


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# face rate


def test_face_rate_faces_nonfaces_noise(lfw):
    faces, nonfaces, demo = lfw
    found = evaluate.detect_faces(demo)
    assert found.dtype == bool and found.shape == (200,)
    assert found[:100].mean() >= 0.8  # measured 0.87
    # a face counts in the image or its mirror, so the mirrored faces score the same (the bare cascade: 0.58)
    np.testing.assert_array_equal(found[100:], found[:100])
    assert evaluate.face_rate(demo) >= 0.8
    assert evaluate.face_rate(nonfaces) <= 0.01  # measured 0.01: one of LFW's 100 non-faces, mirrored
    assert evaluate.face_rate(_noise(100)) == 0.0


def test_face_rate_same_with_one_or_more_threads(lfw):
    faces = lfw[0][:40]
    np.testing.assert_array_equal(evaluate.detect_faces(faces, workers=1), evaluate.detect_faces(faces, workers=3))


# ---------------------------------------------------------------------------------------------
# SWD


def test_swd_near_zero_against_itself_far_from_noise(lfw):
    demo = lfw[2]
    shuffled = demo[np.random.default_rng(1).permutation(len(demo))]
    same = evaluate.swd(demo, shuffled, seed=0)
    noise = evaluate.swd(demo, _noise(len(demo)), seed=0)
    assert len(same) == len(noise) == 3  # 64, 32, 16 px
    assert max(same) < 25 and min(noise) > 4 * max(same), (same, noise)  # measured ~[14, 14, 9] vs ~[210, 130, 240]


def test_swd_ignores_image_order_and_follows_the_seed(lfw):
    faces, nonfaces, _ = lfw
    a, b = faces[:24], nonfaces[:24]
    rng = np.random.default_rng(2)
    ref = evaluate.swd(a, b, seed=3)
    assert evaluate.swd(a[rng.permutation(24)], b[rng.permutation(24)], seed=3) == ref
    assert evaluate.swd(a, b, seed=4) != ref


def _literal_swd(real, fake, seed, per_image=128, dir_repeats=4, dirs_per_repeat=128):
    """metrics/sliced_wasserstein.py of tkarras/progressive_growing_of_gans with loops, np.random replaced
    by Generator(seed); images in byte order, as evaluate.swd takes them."""
    rng = np.random.default_rng(seed)
    gaussian = (
        np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]])
        / 256.0
    )

    def pyr_down(mb):
        return scipy.ndimage.convolve(mb, gaussian[np.newaxis, np.newaxis], mode="mirror")[:, :, ::2, ::2]

    def pyr_up(mb):
        res = np.zeros((mb.shape[0], mb.shape[1], mb.shape[2] * 2, mb.shape[3] * 2), mb.dtype)
        res[:, :, ::2, ::2] = mb
        return scipy.ndimage.convolve(res, gaussian[np.newaxis, np.newaxis] * 4.0, mode="mirror")

    def laplacian_pyramid(mb, num_levels):
        pyramid = [np.float32(mb)]
        for _ in range(1, num_levels):
            pyramid.append(pyr_down(pyramid[-1]))
            pyramid[-2] -= pyr_up(pyramid[-1])
        return pyramid

    def descriptors(level):
        n, c, h, w = level.shape
        H = 3
        x = rng.integers(H, w - H, size=(n * per_image, 1, 1, 1))
        y = rng.integers(H, h - H, size=(n * per_image, 1, 1, 1))
        out = np.empty((n * per_image, c, 7, 7), np.float32)
        for i in range(n * per_image):
            cx, cy = int(x[i, 0, 0, 0]), int(y[i, 0, 0, 0])
            out[i] = level[i // per_image, :, cy - H : cy + H + 1, cx - H : cx + H + 1]
        return out

    def finalize(desc):
        desc -= np.mean(desc, axis=(0, 2, 3), keepdims=True)
        desc /= np.std(desc, axis=(0, 2, 3), keepdims=True)
        return desc.reshape(desc.shape[0], -1)

    def sliced_wasserstein(A, B):
        results = []
        for _ in range(dir_repeats):
            dirs = rng.standard_normal((A.shape[1], dirs_per_repeat))
            dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
            dirs = dirs.astype(np.float32)
            dists = [np.mean(np.abs(np.sort(A @ dirs[:, j]) - np.sort(B @ dirs[:, j]))) for j in range(dirs_per_repeat)]
            results.append(np.mean(dists))
        return np.mean(results)

    def minibatch(images):  # NHWC in byte order -> NCHW
        return np.stack(sorted(images, key=lambda im: im.tobytes())).transpose(0, 3, 1, 2)

    desc_real = [finalize(descriptors(level)) for level in laplacian_pyramid(minibatch(real), 3)]
    desc_fake = [finalize(descriptors(level)) for level in laplacian_pyramid(minibatch(fake), 3)]
    return [sliced_wasserstein(a, b) * 1e3 for a, b in zip(desc_real, desc_fake, strict=True)]


def test_swd_matches_literal_reference(lfw):
    faces, nonfaces, _ = lfw
    real = faces[[3, 1, 4]]
    fake = np.concatenate([nonfaces[:2], _noise(1, seed=5) // 2 + 64])
    expected = _literal_swd(real, fake, seed=7)
    np.testing.assert_allclose(evaluate.swd(real, fake, seed=7), expected, rtol=1e-5)
    np.testing.assert_allclose(evaluate.swd(real, real[::-1], seed=8), _literal_swd(real, real, seed=8), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture()
def files(tmp_path, lfw):
    faces = lfw[0]
    data = tmp_path / "real.npy"
    np.save(data, faces[:30])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(11):
        Image.fromarray(faces[50 + i]).save(folder / f"face_{i:04d}.png")
    Image.fromarray(faces[70]).resize((100, 120)).save(folder / "big.JPG", quality=95)  # center-cropped, resized to 64
    Image.fromarray(np.zeros((130, 130, 3), np.uint8)).save(
        folder / "grid.png"
    )  # generator.py's contact sheet: skipped
    (folder / "notes.txt").write_text("not an image")
    return data, folder


def test_cli_json_and_images_folder(files, tmp_path, capsys):
    data, folder = files
    out = tmp_path / "sub" / "eval.json"
    result = evaluate.main(
        ["--data", str(data), "--images", str(folder), "--num", "20", "--json", str(out), "--seed", "1"]
    )
    saved = json.loads(out.read_text())
    assert saved == result
    assert {"face_rate_real", "face_rate_fake", "swd", "swd_avg", "num_real", "num_fake", "seconds"} <= set(saved)
    assert saved["num_real"] == saved["num_fake"] == 12  # 11 PNG + 1 JPEG; grid.png and notes.txt skipped
    assert len(saved["swd"]) == 3 and saved["swd_avg"] == pytest.approx(np.mean(saved["swd"]))
    assert saved["face_rate_real"] >= 0.5 and saved["face_rate_fake"] >= 0.5  # LFW faces on both sides
    printed = capsys.readouterr().out
    assert "face rate" in printed and f"{saved['swd_avg']:.2f}" in printed and str(out) in printed


def test_cli_images_path_does_not_import_paddle(files):
    data, folder = files
    code = f"import sys, evaluate; evaluate.main(['--data', {str(data)!r}, '--images', {str(folder)!r}]); print(sorted(m for m in sys.modules if m.split('.')[0] == 'paddle'))"  # noqa: E501
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_cli_with_checkpoint(files, tmp_path):
    if not (ROOT / "generator.py").exists():
        pytest.skip("generator.py (generator.generate) is not in the tree yet")
    import paddle

    import modelfile
    import network

    paddle.seed(0)
    ckpt = tmp_path / "generator.safetensors"
    modelfile.save_generator(ckpt, network.Generator(ngf=8))
    data, _ = files
    result = evaluate.main(["--ckpt", str(ckpt), "--data", str(data), "--num", "8", "--seed", "2"])
    from generator import generate

    assert result["num_fake"] == result["num_real"] == 8 and result["fake"] == str(ckpt)
    assert result["face_rate_fake"] == evaluate.face_rate(generate(str(ckpt), 8, 2))
    assert result["swd"] == pytest.approx(
        evaluate.swd(sample_packed(str(data), 8, 2), generate(str(ckpt), 8, 2), seed=2), rel=1e-6
    )


@pytest.mark.parametrize("case", ["no data", "bad npy", "not npy", "no folder", "empty folder", "bad image"])
def test_errors_name_the_file(case, files, tmp_path):
    data, folder = files
    args = {"data": str(data), "images": str(folder)}
    if case == "no data":
        args["data"] = bad = str(tmp_path / "missing.npy")
    elif case == "bad npy":
        np.save(tmp_path / "gray.npy", np.zeros((4, 64, 64), np.uint8))
        args["data"] = bad = str(tmp_path / "gray.npy")
    elif case == "not npy":
        (tmp_path / "text.npy").write_text("hello")
        args["data"] = bad = str(tmp_path / "text.npy")
    elif case == "no folder":
        args["images"] = bad = str(tmp_path / "nowhere")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        args["images"] = bad = str(tmp_path / "empty")
    else:
        (folder / "face_0003.png").write_bytes(b"\x89PNG truncated")
        bad = str(folder / "face_0003.png")
    with pytest.raises(UserError, match=bad.replace("\\", "\\\\")):
        evaluate.main([f"--{k}={v}" for k, v in args.items()])


def test_cli_error_is_one_line(tmp_path):
    missing = str(tmp_path / "missing.npy")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--data", missing, "--images", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"evaluate.py: error: {missing}: no such file; make it with python pretreat.py "
        "(or pretreat.py --demo for data/demo64.npy)"
    ]
