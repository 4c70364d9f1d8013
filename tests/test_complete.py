"""complete.py: masks, importance weights, Poisson blending, the z search (in-range recovery, known pixels,
seeding, batch independence), invert, face arithmetic, metrics, CLI outputs and bad input.
Tiny ngf = ndf = 8 models from a 2-iteration train.train() run on data made here."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from utils import UserError

import numpy as np
import paddle
import pytest
from PIL import Image

import complete
import modelfile
from complete import CompleteConfig, importance_weights, make_mask, poisson_blend
from conftest import ROOT, celeba_like
from generator import latent, sample
from modelfile import CHECKPOINT_FILE, GENERATOR_FILE, load_discriminator, load_generator
from network import Generator


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """The shared tiny run's folder: out/ (checkpoint with D, generator-only file) and its data, faces.npy."""
    return tiny_run.parent


@pytest.fixture(scope="module")
def ckpt(run_dir) -> str:
    return str(run_dir / "out" / CHECKPOINT_FILE)


@pytest.fixture(scope="module")
def models(ckpt):
    """(G, D) with G's output layer scaled up: a barely trained G draws nearly flat images; this one draws
    textured ones (std ~ 12 grey levels), so the in-range test is not won by any smooth fill."""
    G, D = load_generator(ckpt), load_discriminator(ckpt)
    with paddle.no_grad():
        last = G.main[-2]
        last.weight.set_value(last.weight * 3.0)
    return G, D


# ---------------------------------------------------------------------------------------------
# masks and weights


def test_mask_kinds(tmp_path):
    c = make_mask("center")
    assert c.shape == (64, 64) and c.dtype == bool and c.sum() == 32 * 32 and c[16:48, 16:48].all()
    left = make_mask("left")
    assert left.sum() == 64 * 32 and left[:, 31].all() and not left[:, 32].any()
    g = make_mask("grid")
    assert (~g).sum() == 16 * 16 and not g[0, 0] and not g[4, 8] and g[1, 0] and g[3, 3]
    r = make_mask("random", num=3, missing=0.8, seed=5)
    assert r.shape == (3, 64, 64) and (r.sum(axis=(1, 2)) == round(0.8 * 4096)).all()
    assert not np.array_equal(r[0], r[1])
    assert np.array_equal(r, make_mask("random", num=3, missing=0.8, seed=5))
    assert np.array_equal(r[:2], make_mask("random", num=2, missing=0.8, seed=5))  # image i's mask: from (seed, i)
    assert not np.array_equal(r, make_mask("random", num=3, missing=0.8, seed=6))
    big = np.zeros((128, 128), np.uint8)
    big[0:64, 64:128] = 255  # white = missing: the top-right quarter
    Image.fromarray(big).save(tmp_path / "m.png")
    f = make_mask(f"file:{tmp_path / 'm.png'}")
    expected = np.zeros((64, 64), bool)
    expected[:32, 32:] = True
    assert np.array_equal(f, expected)


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "empty"),
        (b"not a png", "not an image"),
        ("white", "every pixel is missing"),
        ("black", "no pixel is missing"),
    ],
)
def test_mask_file_errors(tmp_path, content, why):
    p = tmp_path / "mask.png"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        Image.fromarray(np.full((64, 64), 255 if content == "white" else 0, np.uint8)).save(p)
    with pytest.raises(UserError, match=why) as e:
        make_mask(f"file:{p}")
    assert "\n" not in str(e.value)


def test_mask_flag_errors():
    for kind, kw in (
        ("square", {}),
        ("random", {"missing": 1.0}),
        ("random", {"missing": 0.0}),
        ("file:/nonexistent.png", {}),
    ):
        with pytest.raises(UserError):
            make_mask(kind, **kw)


def test_importance_weights_hand_checked():
    one = np.zeros((64, 64), bool)
    one[10, 10] = True
    w = importance_weights(one)
    assert w.dtype == np.float32
    assert w[10, 10] == 0  # a missing pixel weighs nothing
    near = np.zeros((64, 64), bool)
    near[7:14, 7:14] = True  # the known pixels whose 7x7 window holds (10, 10)
    near[10, 10] = False
    np.testing.assert_allclose(w[near], 1 / 49, rtol=1e-6)
    assert (w[~near] == 0).all()
    corner = np.zeros((64, 64), bool)
    corner[0, 0] = True
    w = importance_weights(corner)  # only in-image pixels of a window count
    np.testing.assert_allclose([w[0, 1], w[1, 1], w[3, 3], w[0, 3]], [1 / 20, 1 / 25, 1 / 49, 1 / 28], rtol=1e-6)
    assert w[0, 0] == 0 and w[4, 4] == 0 and w[0, 4] == 0
    c = importance_weights(make_mask("center"))  # hole rows/cols 16..47
    np.testing.assert_allclose(
        [c[32, 15], c[32, 48], c[15, 15], c[13, 30], c[15, 47]], [21 / 49, 21 / 49, 9 / 49, 7 / 49, 12 / 49], rtol=1e-6
    )
    assert c[32, 12] == 0 and c[16:48, 16:48].max() == 0
    stacked = importance_weights(np.stack([one, corner]))
    assert np.array_equal(stacked[1], w)


# ---------------------------------------------------------------------------------------------
# Poisson blending


def test_poisson_known_answers():
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, (64, 64, 3))
    mask = make_mask("random", missing=0.6, seed=1)[0]  # touches the image border too
    x = poisson_blend(y, y + 0.3, mask)  # same gradients as y: the answer is y itself
    np.testing.assert_allclose(x, y, atol=1e-9)
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = np.repeat((0.01 * xx - 0.02 * yy + 0.1)[..., None], 3, axis=2)  # linear: discrete-harmonic
    known = np.where(make_mask("center")[..., None], 5.0, ramp)  # the hole's values are not used
    x = poisson_blend(known, np.zeros_like(ramp), make_mask("center"))  # flat source: harmonic fill of the border
    np.testing.assert_allclose(x, ramp, atol=1e-9)
    x = poisson_blend(y, rng.uniform(-1, 1, y.shape), mask)
    assert np.array_equal(x[~mask], y[~mask])


# ---------------------------------------------------------------------------------------------
# the search


def test_in_range_center_beats_biharmonic(models):
    """Targets drawn by G itself: the search must find them, far better than biharmonic on the same hole.
    Measured (2 images, 100 iterations, 2 starts, lr 0.05): hole PSNR 38-44 dB vs biharmonic's ~15 dB."""
    G, D = models
    x = sample(G, latent(2, G.nz, seed=123))
    mask = make_mask("center")
    assert x.std() > 8
    c = complete.complete((G, D), x, mask, iters=150, restarts=2, lr=0.05)
    assert c.completed.shape == c.generated.shape == x.shape and c.completed.dtype == np.uint8
    assert c.z.shape == (2, G.nz, 1, 1) and c.loss.shape == (2,) and c.restart_losses.shape == (2, 2)
    np.testing.assert_allclose(np.linalg.norm(c.z.reshape(2, -1), axis=1), np.sqrt(G.nz), rtol=1e-4)  # on the sphere
    assert np.array_equal(c.loss, c.restart_losses.min(axis=1))
    assert np.array_equal(c.completed[:, ~mask], x[:, ~mask])  # known pixels: exactly the input's
    ours = complete.quality(x, c.completed, mask)["psnr_hole"]
    base = complete.quality(x, complete.inpaint_biharmonic(x, mask), mask)["psnr_hole"]
    assert ours > base + 10, (ours, base)


def test_same_seed_same_result_and_batch_independence(models, ckpt):
    G, D = models
    x = sample(G, latent(3, G.nz, seed=9))
    mask = make_mask("random", num=3, missing=0.8, seed=2)
    a = complete.complete((G, D), x, mask, iters=5, restarts=2)
    b = complete.complete((G, D), x, mask, iters=5, restarts=2)
    assert np.array_equal(a.completed, b.completed) and np.array_equal(a.z, b.z)
    assert not np.array_equal(a.z, complete.complete((G, D), x, mask, iters=5, restarts=2, seed=1).z)
    alone = complete.complete((G, D), x[:1], mask[:1], iters=5, restarts=2)  # eval-mode BN: no batch-mates' influence
    np.testing.assert_allclose(alone.z, a.z[:1], atol=1e-4)
    none = complete.complete((G, D), x, mask, iters=5, restarts=2, blend="none")
    assert np.array_equal(none.completed[mask], none.generated[mask]) and np.array_equal(
        none.completed[~mask], x[~mask]
    )
    from_file = complete.complete(ckpt, x, mask, iters=0, restarts=1, lam=0.0)
    assert np.array_equal(from_file.completed[~mask], x[~mask])


def test_chunks_give_the_one_batch_result(models, monkeypatch):
    """--batch-size: the images x restarts go through G and D a chunk at a time, with one Adam step on all of z."""
    G, D = models
    x = sample(G, latent(3, G.nz, seed=4))
    mask = make_mask("center", num=3)
    one = complete.complete((G, D), x, mask, iters=6, restarts=3)  # 9 rows, one batch on a CPU
    sizes = []
    hook = G.register_forward_pre_hook(lambda layer, inp: sizes.append(inp[0].shape[0]))
    try:
        chunked = [complete.complete((G, D), x, mask, iters=6, restarts=3, batch_size=b) for b in (4, 1)]
    finally:
        hook.remove()
    assert sizes[:3] == [4, 4, 1] and sizes.count(1) == 7 * 9 + 7 * 1  # 6 steps + the final pass, per run
    for c in chunked:
        np.testing.assert_allclose(c.z, one.z, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c.restart_losses, one.restart_losses, rtol=1e-5)
        assert np.abs(c.completed.astype(int) - one.completed).max() <= 1
    with pytest.raises(UserError, match="batch size"):
        complete.complete((G, D), x, mask, iters=1, restarts=1, batch_size=-1)
    # by device: all rows on a CPU; on a GPU what half its free memory holds
    assert complete.rows_per_chunk(G, D, 5000) == 5000
    per_row = 4 * 2 * 3 * (1920 * (G.ngf + D.ndf) + 3 * 64 * 64)
    monkeypatch.setattr(paddle.device, "get_device", lambda: "gpu:0")
    monkeypatch.setattr("dataReader.device_free_bytes", lambda: 2 * 300 * per_row)
    assert complete.rows_per_chunk(G, D, 5000) == 300 and complete.rows_per_chunk(G, D, 100) == 100
    monkeypatch.setattr("dataReader.device_free_bytes", lambda: 0)
    assert complete.rows_per_chunk(G, D, 5000) == 1


@pytest.mark.parametrize("kind", ["center", "left", "random", "grid"])
def test_each_mask_kind_completes(models, kind):
    G, D = models
    x = sample(G, latent(2, G.nz, seed=1))
    mask = make_mask(kind, num=2, seed=3)
    c = complete.complete((G, D), x, mask, iters=2, restarts=1)
    m = np.broadcast_to(mask, (2, 64, 64))
    assert np.array_equal(c.completed[~m], x[~m]) and not np.array_equal(c.completed, x)


def test_models_restored_and_eval(models):
    G, D = models
    G.train()
    before = [p.stop_gradient for p in G.parameters()]
    seen = []
    hook = G.register_forward_post_hook(lambda layer, inp, out: seen.append(layer.training))
    try:
        complete.complete((G, D), sample(G, latent(1, G.nz)), make_mask("center"), iters=2, restarts=1)
    finally:
        hook.remove()
        restored = G.training
        G.eval()
    assert seen and not any(seen)  # G ran in eval mode
    assert restored and [p.stop_gradient for p in G.parameters()] == before


def test_cpu_search_prints_its_expected_time_first(models, monkeypatch, capsys):
    G, D = models
    ticks = itertools.chain([10.0, 13.0], itertools.repeat(0.0))  # iterations 1 and 2 take 1.5 s each
    monkeypatch.setattr(complete, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))  # complete.py's clock
    y = complete.to_float(sample(G, latent(2, G.nz)))
    w = importance_weights(np.broadcast_to(make_mask("center"), (2, 64, 64)))
    complete.search(G, D, y, w, iters=40, lam=0.003, restarts=3, progress=True)
    out = capsys.readouterr().out
    assert "complete: 1.50 s an iteration on the CPU (2 images x 3 starts): about 1.0 min for 40 iterations" in out
    complete.search(G, D, y, w, iters=40, lam=0.003, restarts=3, progress=False)  # the Python API stays quiet
    assert "an iteration" not in capsys.readouterr().out


def test_invert_and_arithmetic(models):
    G, _ = models
    z_true = latent(2, G.nz, seed=4)
    x = sample(G, z_true)
    z = complete.invert(G, x, iters=100, restarts=2, lr=0.05)
    assert z.shape == (2, G.nz, 1, 1)
    err = np.abs(sample(G, z).astype(float) - x).mean()
    assert err < 0.25 * np.abs(sample(G, latent(2, G.nz, seed=5)).astype(float) - x).mean()
    r = complete.arithmetic(G, [0, 2], [1], [3, 4, 5], seed=7, neighbours=4)
    zz = latent(6, G.nz, seed=7)
    np.testing.assert_allclose(r.z, zz[[0, 2]].mean(0) - zz[1] + zz[[3, 4, 5]].mean(0), rtol=1e-5, atol=1e-6)
    assert r.faces.shape == (5, 64, 64, 3) and np.array_equal(r.faces[0], sample(G, r.z[None])[0])
    assert r.grid.shape == (4 * 66 + 2, 5 * 66 + 2, 3)  # 4 rows (A, B, C, result) of max(3 + 1, 1 + 4) cells
    real = complete.arithmetic(G, x[:1], [1], x[1:], seed=7, neighbours=2, iters=3, restarts=1)
    assert real.faces.shape == (3, 64, 64, 3)
    assert complete.parse_arithmetic("3,5, 9-1+4,8") == ([3, 5, 9], [1], [4, 8])
    for bad in ("1,2+3", "a-b+c", "1--2+3", "-1+2"):
        with pytest.raises(UserError):
            complete.parse_arithmetic(bad)


def test_quality_and_baselines():
    rng = np.random.default_rng(0)
    x = rng.integers(20, 230, (2, 64, 64, 3), dtype=np.uint8)
    mask = make_mask("center")
    same = complete.quality(x, x, mask)
    assert same == {"psnr": 100.0, "ssim": 1.0, "psnr_hole": 100.0, "ssim_hole": 1.0}
    off = x.copy()
    off[:, mask] += 10
    q = complete.quality(x, off, mask)
    assert q["psnr_hole"] == pytest.approx(20 * np.log10(255 / 10), abs=1e-3)
    assert q["psnr"] == pytest.approx(20 * np.log10(255 / 10) + 10 * np.log10(4), abs=1e-3)  # a quarter of the pixels
    m = complete.mean_fill(x, mask)
    assert np.array_equal(m[:, ~mask], x[:, ~mask])
    assert np.array_equal(m[0, 20, 20], np.rint(x[0][~mask].mean(axis=0)).astype(np.uint8))
    b = complete.inpaint_biharmonic(x, mask)
    assert np.array_equal(b[:, ~mask], x[:, ~mask]) and b.dtype == np.uint8


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_outputs(run_dir, ckpt, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(celeba_like(i)).save(folder / f"p{i}.jpg")  # 178x218: cropped as pretreat.py does
    (folder / "broken.png").write_bytes(b"\x89PNG nope")
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "complete.py",
            "--ckpt",
            ckpt,
            "--images",
            str(folder),
            "--iters",
            "3",
            "--restarts",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped broken.png" in r.stdout and "biharmonic" in r.stdout and str(out / "grid.png") in r.stdout
    for kind in ("completed", "generated", "masked"):
        assert sorted(p.name for p in (out / kind).iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert Image.open(out / "grid.png").size == (3 * 66 + 2, 3 * 66 + 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"dcgan", "biharmonic", "mean_fill", "mask", "images", "iters", "seconds"} <= set(metrics)
    assert set(metrics["dcgan"]) == {"psnr", "ssim", "psnr_hole", "ssim_hole"}
    assert metrics["mask"] == "center" and metrics["images"] == 3 and metrics["iters"] == 3
    masked = np.asarray(Image.open(out / "masked" / "p0.png"))
    assert (masked[16:48, 16:48] == 255).all()
    gen_only = run_dir / "out" / GENERATOR_FILE
    r = subprocess.run(
        [
            sys.executable,
            "complete.py",
            "--ckpt",
            str(gen_only),
            "--images",
            str(run_dir / "faces.npy"),
            "--out",
            str(tmp_path / "never"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--lam 0" in r.stderr, r.stderr
    assert not (tmp_path / "never").exists()


def test_cli_npy_and_lam0_with_generator_file(run_dir, tmp_path):
    out = tmp_path / "o"
    m = complete.run(
        CompleteConfig(
            ckpt=str(run_dir / "out" / GENERATOR_FILE),
            images=str(run_dir / "faces.npy"),
            num=2,
            offset=3,
            mask="random",
            lam=0.0,
            iters=2,
            restarts=1,
            out=str(out),
            progress=False,
        )
    )
    assert m["images"] == 2 and m["names"] == ["000003", "000004"] and m["missing"] == pytest.approx(0.8, abs=1e-3)
    assert (out / "completed" / "000004.png").is_file()
    complete.run(CompleteConfig(ckpt=str(run_dir / "out" / GENERATOR_FILE), arithmetic="0,1-2+3", out=str(out)))
    assert (out / "arithmetic.png").is_file()


def test_cli_fast_needs_only_the_generator_file(run_dir, tmp_path):
    """--fast has no prior term, so a generator file (no D) is enough; metrics.json records the setting it ran."""
    out = tmp_path / "o"
    m = complete.run(
        CompleteConfig(
            ckpt=str(run_dir / "out" / GENERATOR_FILE),
            images=str(run_dir / "faces.npy"),
            num=1,
            fast=True,
            out=str(out),
            progress=False,
        )
    )
    assert {k: m[k] for k in complete.FAST} == complete.FAST
    assert m["lam"] == 0.0 and m["schedule"] == "cosine" and (out / "completed" / "000000.png").is_file()
    assert m["dcgan"]["psnr"] > 0


def test_cli_bad_input(run_dir, ckpt, tmp_path):
    base = {
        "ckpt": ckpt,
        "images": str(run_dir / "faces.npy"),
        "iters": 1,
        "restarts": 1,
        "out": str(tmp_path / "o"),
        "progress": False,
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    cases = [
        ({"images": str(tmp_path / "empty")}, "no .jpg"),
        ({"images": str(tmp_path / "nothing")}, "no such"),
        ({"images": str(tmp_path / "notes.txt")}, "not a folder of images"),
        ({"offset": 99}, "--offset 99"),
        ({"mask": "diamond"}, "not one of"),
        ({"ckpt": str(tmp_path / "missing.safetensors")}, "no such model file"),
        ({"ckpt": str(tmp_path / "notes.txt")}, "notes.txt"),
        ({"restarts": 0}, "restarts"),
        ({"arithmetic": "1+2"}, "expected A-B"),
    ]
    for over, why in cases:
        with pytest.raises(UserError, match=why) as e:
            complete.run(CompleteConfig(**{**base, **over}))
        assert "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()  # nothing written by a failed run


def test_cli_ngf_mismatch(ckpt, tmp_path):
    """A checkpoint whose config does not match its weights: one line, not a shape traceback."""
    state = modelfile.read_state(ckpt)
    state["config"]["ngf"] = 16
    bad = tmp_path / CHECKPOINT_FILE
    modelfile.save_state(bad, state)
    with pytest.raises(UserError, match="ngf=16"):
        complete.run(
            CompleteConfig(
                ckpt=str(bad), images=ckpt.replace(f"out/{CHECKPOINT_FILE}", "faces.npy"), out=str(tmp_path / "o")
            )
        )
    state["config"]["ngf"], state["config"]["ndf"] = 8, 16
    modelfile.save_state(bad, state)
    with pytest.raises(UserError, match="ndf=16"):
        complete.run(
            CompleteConfig(
                ckpt=str(bad), images=ckpt.replace(f"out/{CHECKPOINT_FILE}", "faces.npy"), out=str(tmp_path / "o")
            )
        )


def test_bench_complete_runs(capsys):
    from bench import bench_complete

    assert (
        bench_complete.main(["--widths", "8", "--images", "2", "--restarts", "2", "--steps", "1", "--rounds", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "| 8 | 4 |" in out and "loop / batch" in out


def test_search_stops_early_when_no_start_improves(monkeypatch):
    """patience: the search ends once no start's loss has dropped by more than TOL for `patience` steps; 0 runs
    every step."""
    import complete

    paddle.seed(0)
    G = Generator(nz=16, ngf=8)
    calls = []
    orig = G.forward
    monkeypatch.setattr(G, "forward", lambda z: calls.append(1) or orig(z))
    y = np.zeros((1, 3, 64, 64), np.float32)
    w = complete.importance_weights(complete.make_mask("center")[None])
    complete.search(G, None, y, w, iters=50, lam=0.0, restarts=2, lr=1e-12, patience=3)  # z cannot move
    assert len(calls) == 1 + 3 + 1  # the first step, 3 without improvement (the stop), then the final forward
    calls.clear()
    complete.search(G, None, y, w, iters=5, lam=0.0, restarts=2, lr=1e-12)
    assert len(calls) == 5 + 1


def test_fast_flag_takes_the_fast_setting(monkeypatch, tmp_path):
    import complete

    seen = {}

    def fake_complete(models, images, mask, iters, lam, restarts, blend, seed, lr, progress=False, patience=0, **kw):
        seen.update(iters=iters, restarts=restarts, lr=lr, patience=patience, lam=lam, schedule=kw["schedule"])
        raise SystemExit  # the setting is all this test needs

    monkeypatch.setattr(complete, "complete", fake_complete)
    import types

    monkeypatch.setattr(complete, "models_of", lambda *a: (types.SimpleNamespace(nz=16, ngf=8), None))
    monkeypatch.setattr(complete, "load_images", lambda *a: (np.zeros((1, 64, 64, 3), np.uint8), ["a"], []))
    cfg = complete.CompleteConfig(fast=True, out=str(tmp_path / "o"))
    try:
        complete.run(cfg)
    except SystemExit:
        pass
    assert seen == complete.FAST


def test_cosine_schedule_is_the_step_size_adam_takes(monkeypatch):
    import complete

    lr = 0.1
    assert complete.learning_rate(lr, 5, 10, "constant") == lr
    steps = [complete.learning_rate(lr, i, 10, "cosine") for i in range(10)]
    assert steps[0] == pytest.approx(lr) and steps[-1] == pytest.approx(lr * complete.COSINE_END)
    assert all(a > b for a, b in zip(steps[:-1], steps[1:], strict=True))  # decreasing all the way
    assert steps[4] > lr / 2 > steps[5]  # the cosine's half-way point
    used = []
    orig = paddle.optimizer.Adam.step
    monkeypatch.setattr(paddle.optimizer.Adam, "step", lambda self: used.append(self.get_lr()) or orig(self))
    G = Generator(nz=16, ngf=8)
    y = np.zeros((1, 3, 64, 64), np.float32)
    w = complete.importance_weights(complete.make_mask("center")[None])
    complete.search(G, None, y, w, iters=10, lam=0.0, restarts=1, lr=lr, schedule="cosine")
    assert used == pytest.approx(steps)
    used.clear()
    complete.search(G, None, y, w, iters=3, lam=0.0, restarts=1, lr=lr)
    assert used == [lr] * 3
    with pytest.raises(UserError, match="schedule must be one of constant, cosine"):
        complete.search(G, None, y, w, iters=3, lam=0.0, restarts=1, schedule="linear")


def test_bench_complete_settings_table(run_dir, ckpt, monkeypatch, capsys):
    """--settings: the paper's setting, complete.FAST and a --try, each on G's samples and real faces, one table."""
    from bench import bench_complete

    monkeypatch.setattr(bench_complete, "PAPER", {**bench_complete.PAPER, "iters": 3, "restarts": 2})
    monkeypatch.setattr(complete, "FAST", {**complete.FAST, "iters": 3})
    argv = ["--settings", ckpt, "--real", str(run_dir / "faces.npy"), "--faces", "1"]
    assert bench_complete.main([*argv, "--try", '{"iters": 2, "restarts": 1, "lr": 0.2, "lam": 0.0}']) == 0
    out = capsys.readouterr().out
    assert "| paper | 3 x 2, 0.01, constant, 0.003, 0 |" in out
    fast = complete.FAST
    assert (
        f"| fast | 3 x {fast['restarts']}, {fast['lr']}, {fast['schedule']}, {fast['lam']}, {fast['patience']} |" in out
    )
    assert "| try0 | 2 x 1, 0.2, constant, 0.0, 0 |" in out
