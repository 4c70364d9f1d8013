"""generator.py: PNG output and value mapping, seeding, interpolation, BN modes, export, CLI errors.
Tiny ngf=8 generators made here; no trained model needed."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import utils  # before paddle

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from PIL import Image

import generator
import modelfile
from faces import make_grid
from generator import GeneratorConfig, export, generate, interpolate, latent, run, sample, slerp
from modelfile import generator_payload, load_generator, save_generator
from network import Generator

ROOT = Path(__file__).resolve().parents[1]


def tiny_generator(seed: int = 0) -> Generator:
    """ngf=8 G whose running statistics differ from any one batch's (a few train-mode forwards, as in training)."""
    paddle.seed(seed)
    G = Generator(nz=100, ngf=8)
    G.train()
    with paddle.no_grad():
        for _ in range(3):
            G(paddle.randn([16, 100, 1, 1]) * 2 + 0.5)
    G.eval()
    return G


def state(G: nn.Layer) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in G.state_dict().items()}


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


@pytest.fixture(scope="module")
def ckpt(G, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "generator.safetensors"
    save_generator(path, G)
    return path


# ---------------------------------------------------------------------------------------------
# CLI runs in subprocesses, all started at once by the first test that needs them (each pays `import paddle`,
# ~2 s; two cores run them side by side)


@pytest.fixture(scope="module")
def cli(G, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    d = tmp_path_factory.mktemp("cli")
    save_generator(d / "generator.safetensors", G)
    (d / "notes.txt").write_text("not a checkpoint\n")
    with open(d / "dict.pkl", "wb") as f:
        pickle.dump({"weights": np.zeros(3), "epoch": 1}, f)
    with open(d / "dict_allowed.pkl", "wb") as f:
        pickle.dump({"weights": np.zeros(3), "epoch": 1}, f)
    wrong = generator_payload(G)
    wrong["ngf"] = 16  # ngf=8 weights claimed as ngf=16
    modelfile.save_state(d / "wrong.safetensors", wrong)
    cases = {
        "ok": [
            "--ckpt",
            "generator.safetensors",
            "--num",
            "5",
            "--seed",
            "3",
            "--out",
            "faces",
            "--interpolate",
            "4",
            "--pairs",
            "2",
        ],
        "missing": ["--ckpt", "output/generator.safetensors"],
        "text": ["--ckpt", "notes.txt"],
        "pickle": ["--ckpt", "dict.pkl"],
        "pickle_allowed": ["--ckpt", "dict_allowed.pkl", "--allow-pickle"],
        "shapes": ["--ckpt", "wrong.safetensors"],
    }
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = {
        k: subprocess.Popen([sys.executable, str(ROOT / "generator.py"), *a], cwd=d, **pipes) for k, a in cases.items()
    }
    results = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=120)
        results[k] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    results["dir"] = d  # type: ignore[assignment]
    return results


def test_cli_writes_faces_grid_and_interpolation(cli, G):
    r, d = cli["ok"], cli["dir"]
    assert r.returncode == 0, r.stderr
    faces = d / "faces"
    assert sorted(p.name for p in faces.glob("face_*.png")) == [f"face_{i:04d}.png" for i in range(5)]
    expected = generate(G, 5, seed=3)
    for i in range(5):
        assert np.array_equal(np.asarray(Image.open(faces / f"face_{i:04d}.png")), expected[i])
    assert np.array_equal(np.asarray(Image.open(faces / "grid.png")), make_grid(expected))
    rows = interpolate(G, steps=4, pairs=2, seed=3)
    assert np.array_equal(
        np.asarray(Image.open(faces / "interpolation.png")), make_grid(rows.reshape(8, 64, 64, 3), nrow=4)
    )


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", ["output/generator.safetensors", "train first"]),
        ("text", ["notes.txt", "not a safetensors model file"]),
        ("pickle", ["dict.pkl", "is a pickle", "can run any code", "--allow-pickle"]),
        ("pickle_allowed", ["dict_allowed.pkl", "not a dcgan-faces-paddle generator or checkpoint"]),
        ("shapes", ["wrong.safetensors", "has shape", "ngf=16"]),
    ],
)
def test_cli_errors_are_one_line(cli, case, words):
    r = cli[case]
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("generator.py: error: ")
    for w in words:
        assert w in lines[0]


# ---------------------------------------------------------------------------------------------
# in process


def test_png_files_size_mode_and_count(ckpt, tmp_path):
    run(GeneratorConfig(ckpt=str(ckpt), num=7, seed=1, out=str(tmp_path)))
    files = sorted(tmp_path.glob("face_*.png"))
    assert len(files) == 7
    for f in files:
        im = Image.open(f)
        assert (im.size, im.mode, im.format) == ((64, 64), "RGB", "PNG")
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (3 * 66 + 2, 3 * 66 + 2)  # 7 faces -> 3x3 grid with a 2-pixel border


class Constant(nn.Layer):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return paddle.full_like(x, self.value)


@pytest.mark.parametrize("value, pixel", [(-1.0, 0), (1.0, 255), (0.0, 128), (-2.0, 0), (0.5, 191)])
def test_tanh_range_maps_to_full_byte_range(value, pixel):
    G = tiny_generator()
    G.main = nn.Sequential(*list(G.main)[:-1], Constant(value))  # in place of tanh
    faces = generate(G, 3, seed=0)
    assert faces.shape == (3, 64, 64, 3) and faces.dtype == np.uint8
    assert (faces == pixel).all()


def test_zero_last_layer_gives_mid_gray():
    G = tiny_generator()
    G.main[-2].weight.set_value(paddle.zeros_like(G.main[-2].weight))  # tanh(0) = 0 -> 127.5 -> 128
    assert (generate(G, 2, seed=0) == 128).all()


def test_layout_is_hwc_not_transposed():
    """A pattern that varies only along H must come out varying along rows (axis 1), channels last."""
    G = tiny_generator()
    ramp = paddle.linspace(-1, 1, 64).reshape([1, 1, 64, 1])
    chan = paddle.to_tensor([-1.0, 0.0, 1.0]).reshape([1, 3, 1, 1])

    class Pattern(nn.Layer):
        def forward(self, x):
            return paddle.zeros_like(x) + ramp * (chan == 0).astype("float32") + chan * (chan != 0).astype("float32")

    G.main = nn.Sequential(*list(G.main)[:-1], Pattern())
    face = generate(G, 1, seed=0)[0]
    assert (face[..., 0] == 0).all() and (face[..., 2] == 255).all()
    assert face[0, 0, 1] == 0 and face[63, 0, 1] == 255 and (face[:, :, 1] == face[:, :1, 1]).all()


def test_same_seed_same_faces_whatever_the_global_rngs(G):
    a = generate(G, 6, seed=11)
    paddle.seed(123)
    np.random.seed(5)
    paddle.randn([10])
    np.random.rand(10)
    b = generate(G, 6, seed=11)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, generate(G, 6, seed=12))
    assert np.array_equal(generate(G, 3, seed=11), a[:3])  # face i does not depend on --num


def test_latent_is_standard_normal():
    z = latent(400, 100, seed=0)
    assert z.shape == (400, 100, 1, 1) and z.dtype == np.float32
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_generate_from_path_equals_generate_from_layer(G, ckpt):
    assert np.array_equal(generate(ckpt, 4, seed=2), generate(G, 4, seed=2))
    assert np.array_equal(generate(str(ckpt), 4, seed=2), generate(load_generator(str(ckpt)), 4, seed=2))


def test_ema_flag_picks_weights(tmp_path):
    G_plain, G_ema = tiny_generator(1), tiny_generator(2)
    path = tmp_path / "checkpoint.safetensors"
    modelfile.save_state(
        path,
        {
            "format": modelfile.CHECKPOINT_FORMAT,
            "G": G_plain.state_dict(),
            "G_ema": G_ema.state_dict(),
            "config": {"nz": 100, "ngf": 8},
        },
    )
    assert np.array_equal(generate(path, 3, use_ema=True), generate(G_ema, 3))
    assert np.array_equal(generate(path, 3, use_ema=False), generate(G_plain, 3))
    assert utils.parse_config(GeneratorConfig, ["--no-ema"]).ema is False


# ---------------------------------------------------------------------------------------------
# interpolation


def test_slerp_ends_exact_and_stays_on_the_sphere():
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((2, 100, 1, 1)).astype(np.float32)
    z1 = z1 / np.linalg.norm(z1) * np.linalg.norm(z0)  # equal norms: the arc keeps the norm, a line would not
    path = slerp(z0, z1, 9)
    assert path.shape == (9, 100, 1, 1) and path.dtype == np.float32
    assert np.array_equal(path[0], z0) and np.array_equal(path[-1], z1)
    norms = np.linalg.norm(path.reshape(9, -1), axis=1)
    assert np.allclose(norms, np.linalg.norm(z0), rtol=1e-5)
    # equal angular steps
    cos = [float(path[i].ravel() @ path[i + 1].ravel()) / norms[0] ** 2 for i in range(8)]
    assert np.allclose(cos, cos[0], atol=1e-5)


def test_interpolation_ends_are_the_faces_of_the_pair(G):
    rows = interpolate(G, steps=6, pairs=3, seed=4)
    assert rows.shape == (3, 6, 64, 64, 3) and rows.dtype == np.uint8
    faces = generate(G, 6, seed=4)
    assert np.array_equal(rows[:, 0], faces[0::2])
    assert np.array_equal(rows[:, -1], faces[1::2])
    z = latent(6, 100, seed=4)
    assert np.array_equal(rows[1], sample(G, slerp(z[2], z[3], 6)))
    assert not np.array_equal(rows[:, 2], rows[:, 0])


# ---------------------------------------------------------------------------------------------
# BatchNorm modes


def test_bn_modes_differ_and_leave_the_model_alone(G):
    before = state(G)
    G.train()  # a notebook in the middle of training: mode restored afterwards
    running = generate(G, 16, seed=0, bn="running")
    assert G.training
    G.eval()
    batch = generate(G, 16, seed=0, bn="batch")
    assert not G.training
    assert not np.array_equal(running, batch)
    after = state(G)
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    assert np.array_equal(running, generate(G, 16, seed=0, bn="running"))


def test_batch_mode_is_bn_in_train_mode(G):
    """--bn batch computes what G.train() does under no_grad (but without touching the running stats)."""
    z = latent(16, 100, seed=9)
    twin = copy.deepcopy(G)
    twin.train()
    with paddle.no_grad():
        expected = twin(paddle.to_tensor(z)).numpy()
        with generator.sampling_net(G, "batch") as net:
            got = net(paddle.to_tensor(z)).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_bad_bn_mode_is_a_user_error(G):
    with pytest.raises(utils.UserError):
        generate(G, 1, bn="eval")


# ---------------------------------------------------------------------------------------------
# export


@pytest.mark.parametrize("bn", ["running", "batch"])
def test_export_matches_eager(G, tmp_path, bn):
    before = state(G)
    files, diff = export(G, tmp_path / "inference", bn=bn)
    assert diff <= 1e-5
    assert {f.name for f in files} >= {"generator.pdiparams"} and all(f.is_file() for f in files)
    assert sorted(p.name for p in (tmp_path / "inference").iterdir()) == sorted(
        f.name for f in files
    )  # no temp dir left
    loaded = paddle.jit.load(str(tmp_path / "inference" / "generator"))
    loaded.eval()
    z = paddle.to_tensor(latent(5, 100, seed=21))  # a batch size the export check did not use
    with paddle.no_grad(), generator.sampling_net(G, bn) as net:
        out, eager = loaded(z), net(z)
    assert list(out.shape) == [5, 3, 64, 64]
    assert float((out - eager).abs().max()) <= 1e-5
    after = state(G)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_export_mismatch_fails_and_writes_nothing(G, tmp_path, monkeypatch):
    real_load = paddle.jit.load

    class OffByABit(nn.Layer):
        def __init__(self, path):
            super().__init__()
            self.layer = real_load(path)

        def forward(self, z):
            return self.layer(z) + 1e-3

    monkeypatch.setattr(paddle.jit, "load", OffByABit)
    with pytest.raises(generator.ExportMismatch):
        export(G, tmp_path / "inference")
    assert list((tmp_path / "inference").iterdir()) == []


def test_export_runs_in_paddle_inference(G, tmp_path):
    """The README's Paddle Inference snippet, on an exported tiny G."""
    import paddle.inference as paddle_infer

    export(G, tmp_path)
    files = {p.suffix: p for p in tmp_path.glob("generator.*")}
    model = files.get(".json", files.get(".pdmodel"))  # PIR programs are .json, the old format .pdmodel
    config = paddle_infer.Config(str(model), str(tmp_path / "generator.pdiparams"))
    config.disable_gpu()
    predictor = paddle_infer.create_predictor(config)
    z = latent(4, 100, seed=8)
    predictor.get_input_handle("z").copy_from_cpu(z)
    predictor.run()
    out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    with paddle.no_grad():
        eager = G(paddle.to_tensor(z)).numpy()
    assert out.shape == (4, 3, 64, 64)
    assert np.abs(out - eager).max() <= 1e-5
