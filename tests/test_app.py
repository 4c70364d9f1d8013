"""app.py: the callbacks as plain functions on a tiny trained model, finding the model, and the running app
through gradio_client (every endpoint, a bad upload, a completion and a generation at the same time)."""

import io
import os
import pickle

import utils
from utils import UserError

import numpy as np
import pytest
from PIL import Image

import complete
import generator
import pretreat
from conftest import celeba_like, need
from faces import load_face, make_grid

app = pytest.importorskip("app")  # (imports no gradio: that comes with the page)

WARN = "⚠️"


@pytest.fixture(scope="module")
def ckpt(tiny_run) -> str:
    return str(tiny_run / "checkpoint.safetensors")


@pytest.fixture(scope="module")
def models(ckpt):
    return app.Models(*app.load_models(ckpt))


@pytest.fixture(scope="module")
def g_only(tiny_run):
    return app.Models(*app.load_models(str(tiny_run / "generator.safetensors")))


def encode(arr: np.ndarray, fmt: str = "PNG", mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def upload(tmp_path, data: bytes, name: str = "photo.png") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def brush(box: tuple[int, int, int, int]) -> dict:
    """An editor value whose one layer paints rows top:bottom, columns left:right of the 64x64 crop."""
    s = app.EDIT_SCALE
    layer = np.zeros((64 * s, 64 * s, 4), np.uint8)
    top, bottom, left, right = box
    layer[top * s : bottom * s, left * s : right * s] = (255, 0, 255, 255)
    return {"background": None, "layers": [layer], "composite": None}


# ---------------------------------------------------------------------------------------------
# Generate, Interpolate, Face arithmetic


def test_generate_gives_generator_py_faces(models, ckpt, tmp_path):
    grid, gallery, msg = app.generate_cb(models, 5, 10)
    assert len(gallery) == 10 and WARN not in msg
    faces = np.stack([f for f, _ in gallery])
    assert faces.shape == (10, 64, 64, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(grid, make_grid(faces))
    generator.main(["--ckpt", ckpt, "--num", "10", "--seed", "5", "--out", str(tmp_path)])
    for i in (0, 3, 9):  # the same seed: the same faces as the command line's
        np.testing.assert_array_equal(faces[i], np.asarray(Image.open(tmp_path / f"face_{i:04d}.png")))
    assert not np.array_equal(app.generate_cb(models, 6, 10)[1][0][0], faces[0])


def test_generate_caps_and_refuses(models):
    _, gallery, msg = app.generate_cb(models, 0, 10_000)
    assert len(gallery) == app.MAX_FACES and "capped" in msg
    for seed in (-1, 2**31, 1.5, "abc", None, float("nan")):
        grid, gallery, msg = app.generate_cb(models, seed, 4)
        assert grid is None and gallery == [] and msg.startswith(WARN) and "seed" in msg, seed
    assert app.generate_cb(models, 0, 0)[2].startswith(WARN)


def test_interpolate_strip_and_gif(models):
    strip, gif, msg = app.interpolate_cb(models, 3, 8, 6)
    assert WARN not in msg and strip.shape == (64 + 4, 6 * 66 + 2, 3)
    with Image.open(gif) as im:
        assert im.n_frames == 2 * 6 - 2  # there and back
    ends = np.stack([app.generate_cb(models, s, 1)[1][0][0] for s in (3, 8)])
    np.testing.assert_array_equal(strip[2:66, 2:66], ends[0])  # face 0 of seed A ...
    np.testing.assert_array_equal(strip[2:66, 5 * 66 + 2 : 6 * 66], ends[1])  # ... to face 0 of seed B
    for frames in (1, app.MAX_FRAMES + 1):
        assert app.interpolate_cb(models, 0, 1, frames)[2].startswith(WARN)
    assert app.interpolate_cb(models, 0, -5, 4)[0] is None


def test_generator_gif_cli(ckpt, tmp_path):
    generator.main(
        ["--ckpt", ckpt, "--num", "0", "--interpolate", "4", "--pairs", "2", "--gif", "--out", str(tmp_path)]
    )
    with Image.open(tmp_path / "interpolation.gif") as im:
        assert im.n_frames == 6 and im.size == (2 * 66 + 2, 68)
    with pytest.raises(UserError, match="--interpolate"):
        generator.run(generator.GeneratorConfig(ckpt=ckpt, gif=True, out=str(tmp_path)))


def test_arithmetic(models):
    grid, msg = app.arithmetic_cb(models, 2, "0, 1, 2", "3 4", "5")
    assert WARN not in msg and grid.ndim == 3 and grid.shape[0] == 4 * 66 + 2  # rows A, B, C, result
    expected = complete.arithmetic(models.G, [0, 1, 2], [3, 4], [5], seed=2).grid
    np.testing.assert_array_equal(grid, expected)
    pool, _ = app.pool_cb(models, 2)
    assert len(pool) == app.ARITH_POOL and pool[5][1] == "5"
    for groups in (("", "1", "2"), ("1,,x", "1", "2"), ("64", "1", "2"), (" ".join(["1"] * 17), "1", "2")):
        grid, msg = app.arithmetic_cb(models, 0, *groups)
        assert grid is None and msg.startswith(WARN), groups
    assert app.arithmetic_cb(models, -1, "1", "2", "3")[1].startswith(WARN)


# ---------------------------------------------------------------------------------------------
# Complete a photo: the upload, the mask, the completion


def test_photo_is_cropped_as_pretreat_does(tmp_path):
    data = encode(celeba_like(4), "JPEG", quality=95)
    editor, face, msg = app.photo_cb(upload(tmp_path, data, "me.jpg"))
    assert WARN not in msg and "178x218" in msg
    np.testing.assert_array_equal(face, load_face(data))
    assert editor["background"].shape == (256, 256, 3)
    np.testing.assert_array_equal(editor["background"][::4, ::4], face)


@pytest.mark.parametrize(
    "kind",
    ["gray", "cmyk", "rgba", "16bit", "palette"],
)
def test_photo_modes_are_converted(tmp_path, kind):
    rgb = celeba_like(1, 100, 120)
    if kind == "16bit":
        data = encode((rgb[..., 0].astype(np.uint16) * 257), "PNG")  # I;16
    else:
        mode, fmt = {"gray": ("L", "PNG"), "cmyk": ("CMYK", "JPEG"), "rgba": ("RGBA", "PNG"), "palette": ("P", "PNG")}[
            kind
        ]
        data = encode(rgb, fmt, mode)
    _, face, msg = app.photo_cb(upload(tmp_path, data))
    assert WARN not in msg and face.shape == (64, 64, 3) and face.dtype == np.uint8, msg


def test_bad_photos_get_a_message(tmp_path):
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 MP in a few kB: over the 40 MP cap
    assert len(bomb.getvalue()) < 100_000
    cases = {
        "notes.txt": (b"hello, not an image", "not an image"),
        "empty.png": (b"", "empty"),
        "tiny.png": (encode(np.zeros((1, 1, 3), np.uint8)), "too small"),
        "bomb.png": (bomb.getvalue(), "too large"),
        "cut.jpg": (encode(celeba_like(2), "JPEG")[:300], "corrupt"),
    }
    for name, (data, why) in cases.items():
        editor, face, msg = app.photo_cb(upload(tmp_path, data, name))
        assert editor is None and face is None and msg.startswith(WARN), name
        assert name in msg and why in msg, msg
    assert app.photo_cb(None)[2].startswith(WARN)


def test_demo_faces():
    editor, face, msg = app.demo_face_cb(3)
    np.testing.assert_array_equal(face, pretreat.demo_faces()[3])
    assert app.demo_face_cb(200)[2].startswith(WARN)


def test_make_mask_regions():
    for kind in ("eyes", "mouth"):
        m = complete.make_mask(kind)
        top, bottom, left, right = complete.REGIONS[kind]
        assert m.sum() == (bottom - top) * (right - left) and m[top:bottom, left:right].all()


def test_painted_mask():
    m = app.painted_mask(brush((10, 20, 30, 40)))
    assert m.sum() == 100 and m[10:20, 30:40].all()
    one = brush((0, 0, 0, 0))
    one["layers"][0][0, 0, 3] = 255  # one screen pixel: 1/16 of a crop pixel, under the quarter
    assert not app.painted_mask(one).any()
    with pytest.raises(UserError, match="load the photo again"):
        app.painted_mask({"layers": [np.zeros((64, 64, 4), np.uint8)]})


def test_complete_runs_complete_py(models):
    face = pretreat.demo_faces()[0]
    box = (20, 40, 16, 48)
    masked, generated, completed, biharmonic, msg = app.complete_cb(models, face, brush(box), "brush", 12, 2, 0)
    assert WARN not in msg and app.prior_text(True) in msg and "640 pixels" in msg
    for out in (masked, generated, completed, biharmonic):
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    mask = np.zeros((64, 64), bool)
    mask[20:40, 16:48] = True
    np.testing.assert_array_equal(completed[~mask], face[~mask])  # known pixels kept exactly
    assert (masked[mask] == 255).all()
    c = complete.complete(
        (models.G, models.D), face[None], mask, iters=12, lam=app.LAM, restarts=2, seed=0, lr=app.FAST_LR,
        schedule=app.FAST["schedule"],
    )  # fmt: skip
    np.testing.assert_array_equal(completed, c.completed[0])  # one implementation: complete.py's
    np.testing.assert_array_equal(biharmonic, complete.inpaint_biharmonic(face[None], mask)[0])


@pytest.mark.parametrize("preset", ["center", "left", "eyes", "mouth", "random"])
def test_complete_presets(models, preset):
    face = pretreat.demo_faces()[1]
    masked, _, completed, _, msg = app.complete_cb(models, face, None, preset, 2, 1, 0)
    mask = complete.make_mask(preset, num=1).reshape(64, 64)
    assert WARN not in msg and f"{int(mask.sum())} pixels" in msg
    np.testing.assert_array_equal(completed[~mask], face[~mask])


def test_complete_refuses_bad_input(models):
    face = pretreat.demo_faces()[0]
    full = brush((0, 64, 0, 64))
    cases = [
        ((None, brush((1, 9, 1, 9)), "brush", 5, 1, 0), "upload a photo"),
        ((face, brush((0, 0, 0, 0)), "brush", 5, 1, 0), "nothing to fill"),
        ((face, None, "brush", 5, 1, 0), "nothing to fill"),
        ((face, full, "brush", 5, 1, 0), "everything is masked"),
        ((face, None, "nose", 5, 1, 0), "mask"),
        ((face, None, "center", 0, 1, 0), "iterations"),
        ((face, None, "center", app.MAX_ITERS + 1, 1, 0), "iterations"),
        ((face, None, "center", 5, 9, 0), "restarts"),
        ((face, None, "center", 5, 1, -3), "seed"),
        ((face[:32], None, "center", 5, 1, 0), "load the photo again"),
    ]
    for args, why in cases:
        *outs, msg = app.complete_cb(models, *args)
        assert outs == [None] * 4 and msg.startswith(WARN) and why in msg, (why, msg)


def test_generator_file_completes_without_prior(g_only):
    assert g_only.D is None
    msg = app.complete_cb(g_only, pretreat.demo_faces()[0], None, "center", 3, 1, 0)[-1]
    assert WARN not in msg and app.prior_text(False) in msg
    assert "no prior term" in app.model_text(g_only) and "generator file" in app.model_text(g_only)


def test_prior_text_follows_the_fast_setting(monkeypatch):
    assert app.LAM == 0.0 and "no prior term" in app.prior_text(True) == app.prior_text(False)
    monkeypatch.setattr(app, "LAM", 0.003)  # a fast setting with the prior: D's, when the file holds one
    assert app.prior_text(True) == "with D's prior" and "holds no D" in app.prior_text(False)


def test_model_text(models):
    text = app.model_text(models)
    assert "**nz**: 16" in text and "**ngf**: 8" in text and "**ndf**: 8" in text
    assert "5 iterations" in text and "no prior term (lam = 0): the fast setting" in text  # the shared tiny_run


# ---------------------------------------------------------------------------------------------
# finding the model, never a pickle


def test_find_model(tmp_path, tiny_run, monkeypatch):
    with pytest.raises(UserError, match="make demo"):
        app.find_model("", tmp_path)
    demo = tmp_path / "output" / "demo"
    demo.mkdir(parents=True)
    (demo / "generator.safetensors").write_bytes(b"x")
    assert app.find_model("", tmp_path) == str(demo / "generator.safetensors")
    for name in ("generator.safetensors", "checkpoint.safetensors"):
        (tmp_path / "output" / name).write_bytes(b"x")
    assert app.find_model("", tmp_path) == str(tmp_path / "output" / "checkpoint.safetensors")  # it holds D
    with pytest.raises(UserError, match="no such model file"):
        app.find_model(str(tmp_path / "nope.safetensors"))
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert app.port_of(app.AppConfig()) == 7999 and app.port_of(app.AppConfig(port=8001)) == 8001
    monkeypatch.delenv("GRADIO_SERVER_PORT")
    assert app.port_of(app.AppConfig()) == 7860


def test_no_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert utils.run_cli(app.main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make demo" in err


def test_a_pickle_is_refused(tmp_path):
    path = tmp_path / "generator.pdparams"
    path.write_bytes(pickle.dumps({"format": "x"}, protocol=2))
    with pytest.raises(UserError, match="pickle"):
        app.load_models(str(path))
    assert "allow_pickle" not in app.AppConfig.__dataclass_fields__


# ---------------------------------------------------------------------------------------------
# the running app, through gradio_client

ENDPOINTS = {"/generate", "/dice", "/interpolate", "/faces_to_pick", "/arithmetic", "/photo", "/complete"}


@pytest.fixture
def client(app_server):
    gradio_client = need("gradio_client", "the app's API tests")
    return gradio_client.Client(app_server, verbose=False)


def test_every_endpoint(client, tmp_path):
    from gradio_client import handle_file

    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ENDPOINTS
    grid, gallery, msg = client.predict(4, 9, api_name="/generate")
    assert len(gallery) == 9 and np.asarray(Image.open(grid)).shape == (3 * 66 + 2, 3 * 66 + 2, 3)
    assert 0 <= client.predict(api_name="/dice") < 2**31
    strip, gif, msg = client.predict(0, 1, 5, api_name="/interpolate")
    assert Image.open(gif).n_frames == 8 and WARN not in msg
    pool, _ = client.predict(1, api_name="/faces_to_pick")
    assert len(pool) == 64
    grid, msg = client.predict(1, "1, 2", "3", "4, 5", api_name="/arithmetic")
    assert WARN not in msg and np.asarray(Image.open(grid)).shape[0] == 4 * 66 + 2
    photo = upload(tmp_path, encode(celeba_like(7), "JPEG"), "face.jpg")
    editor, crop, msg = client.predict(handle_file(photo), api_name="/photo")
    assert WARN not in msg and np.asarray(Image.open(crop)).shape == (64, 64, 3)
    blank = {"background": handle_file(photo), "layers": [], "composite": None}
    *outs, msg = client.predict(blank, "mouth", 5, 1, 0, api_name="/complete")
    assert WARN not in msg and all(np.asarray(Image.open(o)).shape == (64, 64, 3) for o in outs)
    assert client.predict(blank, "brush", 5, 1, 0, api_name="/complete")[-1].startswith(WARN)  # nothing painted


def test_bad_upload_and_the_server_keeps_serving(client, tmp_path):
    from gradio_client import handle_file

    editor, crop, msg = client.predict(handle_file(upload(tmp_path, b"%PDF-1.4 nope", "cv.png")), api_name="/photo")
    assert editor is None and crop is None and msg.startswith(WARN) and "cv.png" in msg
    *outs, msg = client.predict(None, "center", 5, 1, 0, api_name="/complete")  # no photo in this session
    assert msg.startswith(WARN) and "upload a photo" in msg
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 64 MP in a few kB, sent where Gradio decodes it itself
    with pytest.raises(Exception, match="(?i)decompression bomb|exceeds limit"):
        client.predict({"background": handle_file(str(bomb)), "layers": [], "composite": None}, "center", 5, 1, 0,
                       api_name="/complete")  # fmt: skip
    assert len(client.predict(0, 2, api_name="/generate")[1]) == 2


def test_generation_answers_while_a_completion_runs(client, app_server, tmp_path, models):
    """The longest completion a visitor may ask for holds the completion slot; a generation from another visitor
    comes back before it ends, with the faces it gives alone (the two share G in two threads)."""
    import time

    from gradio_client import Client, handle_file

    client.predict(handle_file(upload(tmp_path, encode(celeba_like(3), "JPEG"), "a.jpg")), api_name="/photo")
    long = client.submit(None, "center", app.MAX_ITERS, app.MAX_RESTARTS, 0, api_name="/complete")
    other = Client(app_server, verbose=False)
    deadline = time.monotonic() + 60
    while long.status().code.name in ("STARTING", "JOINING_QUEUE", "QUEUE") and time.monotonic() < deadline:
        time.sleep(0.02)
    _, gallery, msg = other.submit(1, 16, api_name="/generate").result(timeout=120)
    assert len(gallery) == 16 and not long.done(), "generation waited for the completion"
    alone = app.generate_cb(models, 1, 16)[1]
    for i in (0, 15):
        np.testing.assert_array_equal(np.asarray(Image.open(gallery[i]["image"]).convert("RGB")), alone[i][0])
    assert WARN not in long.result(timeout=300)[-1]


def test_needs_no_gradio_to_import():
    assert "gradio" not in app.__dict__ and os.path.isfile(app.__file__)


def test_ai_studio_entry_without_a_model_says_how_to_get_one(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT, free_port

    env = {**os.environ, "GRADIO_SERVER_PORT": str(free_port())}
    r = subprocess.run(
        [sys.executable, str(ROOT / "app.gradio.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "make demo" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_app_completes_with_complete_pys_fast_setting():
    import app

    assert app.FAST == complete.FAST  # one setting: app.py keeps a copy only so that it imports without paddle
