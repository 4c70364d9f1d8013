"""fid.py and evaluate.py's FID / KID: features equal pytorch-fid's (golden values from bench/fid_reference.py, which
ran pytorch-fid 0.3.0 with seeded random weights), the Frechet distance and KID against closed forms and a literal
transcription, the torch-free .pth reader (tensors, dtypes, views; a malicious pickle refused), the key/shape check,
and the CLI with a statistics cache. No torch needed; random-weight networks, a handful of images."""

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

from utils import UserError

import numpy as np
import pytest

import evaluate
import fid
from bench.fid_reference import (
    FEATURE_STRIDE,
    golden_images,
    golden_statistics,
    images_sha256,
    seeded_state_dict,
    tiny_tensors,
)

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = np.load(DATA / "fid_golden.npz")
not_pytorch_fid = pytest.mark.filterwarnings("ignore:.*SHA-256")  # random weights are not the published file


@pytest.fixture(scope="module")
def seeded():
    model = fid.FIDInceptionV3()
    sd = seeded_state_dict(fid.expected_shapes(model), int(GOLDEN["seed"]))
    fid.set_weights(model, sd)
    return model, sd


@pytest.fixture(scope="module")
def weights_file(seeded, tmp_path_factory):
    from safetensors.numpy import save_file

    path = tmp_path_factory.mktemp("w") / "random_inception.safetensors"
    save_file(seeded[1], str(path))
    return path


# ---------------------------------------------------------------------------------------------
# equality with pytorch-fid


def test_features_equal_pytorch_fid(seeded):
    images = golden_images()
    assert images_sha256(images) == str(GOLDEN["images_sha256"])  # the same inputs as the reference run
    pair = np.concatenate(images[:2])  # the two 64x64 images in one batch (the reference ran one at a time)
    feats = np.concatenate(
        [evaluate.inception_features(pair, seeded[0], batch_size=2, progress=False)]
        + [fid.inception_features(im, seeded[0], progress=False) for im in images[2:]]
    )
    assert feats.dtype == np.float64 and feats.shape == (4, 2048)
    ref = GOLDEN["features"].astype(np.float64)
    # measured 7.7e-7 of the largest feature (3.8e-5 absolute on features up to 117); sums 8e-7 relative
    np.testing.assert_allclose(feats[:, ::FEATURE_STRIDE], ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(feats.sum(1), GOLDEN["feature_sums"], rtol=1e-5)
    assert (feats > 0).mean() > 0.5  # the random net is not degenerate: the comparison means something


def test_features_reject_other_inputs(seeded):
    with pytest.raises(ValueError, match="uint8"):
        fid.inception_features(np.zeros((1, 8, 8, 3), np.float32), seeded[0])
    with pytest.raises(ValueError, match="uint8"):
        fid.inception_features(np.zeros((1, 8, 8), np.uint8), seeded[0])


def test_a_second_instance_is_independent(seeded):
    other = fid.FIDInceptionV3()  # no fixed parameter names: a second net in one process
    own = seeded[0].state_dict()
    assert set(other.state_dict()) == set(own)
    k = "Mixed_7c.branch_pool.conv.weight"
    assert not np.allclose(other.state_dict()[k].numpy(), own[k].numpy())


# ---------------------------------------------------------------------------------------------
# Frechet distance and KID


def test_frechet_distance_equals_pytorch_fid_golden():
    assert fid.frechet_distance(*golden_statistics()) == pytest.approx(float(GOLDEN["frechet"]), rel=1e-10)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 8))
    sigma = np.cov(a, rowvar=False)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    assert evaluate.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)
    assert evaluate.frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0, abs=1e-8)
    d1, d2 = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)  # diagonal: sum (sqrt d1 - sqrt d2)^2
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expect, rel=1e-10)
    singular = np.diag([1.0, 0.0, 2.0])  # rank-deficient: finite, as pytorch-fid (eps offset when needed)
    assert np.isfinite(fid.frechet_distance(np.zeros(3), singular, np.ones(3), singular))
    with pytest.raises(ValueError, match="mismatched"):
        fid.frechet_distance(mu1, sigma, mu2[:4], sigma[:4, :4])


def test_fid_of_features_is_the_distance_of_their_statistics():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 6)), rng.standard_normal((40, 6)) + 0.5
    expect = fid.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert evaluate.fid(a, b) == pytest.approx(expect, rel=1e-12)


def _mmd2_literal(x, y):
    # Binkowski et al. 2018, eq. for the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as loops
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_equals_the_literal_unbiased_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) * 1.3 + 0.2
    mean, std = evaluate.kid(x, y, subsets=3, subset_size=1000)  # min(1000, n) = all rows: every subset is the set
    assert mean == pytest.approx(_mmd2_literal(x, y), rel=1e-10) and std == pytest.approx(0, abs=1e-12)


def test_kid_unbiased_near_zero_for_one_distribution_positive_for_two():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    mean, std = fid.kid(a, b, subsets=20, subset_size=100, seed=1)
    assert abs(mean) < 3 * std + 1e-3  # unbiased: no offset for equal distributions
    shifted, _ = fid.kid(a, b + 0.5, subsets=20, subset_size=100, seed=1)
    assert shifted > 10 * max(abs(mean), std)
    assert fid.kid(a, b, subsets=20, subset_size=100, seed=1) == (mean, std)  # seeded
    with pytest.raises(ValueError, match="at least 2"):
        fid.kid(a[:1], b)


# ---------------------------------------------------------------------------------------------
# the .pth reader


@pytest.mark.parametrize("name", ["fid_tiny.pth", "fid_tiny_legacy.pth"])
def test_read_pth_tensors_dtypes_and_views(name):
    got = fid.read_pth(DATA / name)  # written by torch.save (zip / legacy format)
    want = tiny_tensors()
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert got["half"].dtype == np.float16 and got["steps"].dtype == np.int64 and got["flags"].dtype == np.bool_


def test_read_pth_refuses_the_malicious_file_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"fid_malicious.pth: refused: its pickle calls posix.system"):
        fid.read_pth(DATA / "fid_malicious.pth")  # its pickle: os.system("touch fid_pwned")
    assert not (tmp_path / "fid_pwned").exists()


class _Eval:
    def __reduce__(self):
        return eval, ("open('pwned_here', 'w').close()",)


def test_read_pth_refuses_any_other_global(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zpath = tmp_path / "evil.pth"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": _Eval()}, protocol=2))
    with pytest.raises(UserError, match=r"pickle calls (__builtin__|builtins)\.eval"):
        fid.read_pth(zpath)
    legacy = tmp_path / "evil_legacy.pth"  # the legacy stream: magic, protocol, sys info, then the object
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {}, _Eval()):
        pickle.dump(obj, buf, protocol=2)
    legacy.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=r"pickle calls (__builtin__|builtins)\.eval"):
        fid.read_pth(legacy)
    assert not (tmp_path / "pwned_here").exists()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="junk.pth"):
        fid.read_pth(tmp_path / "junk.pth")


def test_weights_are_checked_key_by_key(seeded):
    model, sd = seeded
    fresh = fid.FIDInceptionV3()
    missing = {k: v for k, v in sd.items() if k != "Mixed_7c.branch_pool.bn.running_var"}
    with pytest.raises(UserError, match=r"w.pth: no Mixed_7c.branch_pool.bn.running_var \(1 of 470"):
        fid.set_weights(fresh, missing, "w.pth")
    wrong = dict(sd, **{"Mixed_6b.branch1x1.conv.weight": np.zeros((192, 768, 3, 3), np.float32)})
    with pytest.raises(UserError, match=r"Mixed_6b.branch1x1.conv.weight has shape \(192, 768, 3, 3\)"):
        fid.set_weights(fresh, wrong, "w.pth")
    with pytest.raises(UserError, match="unexpected key AuxLogits.fc.weight"):
        fid.set_weights(fresh, dict(sd, **{"AuxLogits.fc.weight": np.zeros(3, np.float32)}), "w.pth")
    # what pytorch-fid's file holds besides: the classifier and BatchNorm step counters, accepted and unused
    extra = {
        "fc.weight": np.zeros((1008, 2048), np.float32),
        "fc.bias": np.zeros(1008, np.float32),
        "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0, np.int64),
    }
    fid.set_weights(fresh, dict(sd, **extra), "w.pth")
    k = "Mixed_5b.branch5x5_2.bn._variance"
    np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), model.state_dict()[k].numpy())


@not_pytorch_fid
def test_load_warns_on_another_sha256_and_converts_to_safetensors(seeded, tmp_path):
    from safetensors.numpy import save_file

    src = tmp_path / "plain.safetensors"
    save_file({k: v for k, v in list(seeded[1].items())}, str(src))
    out = tmp_path / "converted.safetensors"
    with pytest.warns(UserWarning, match="is not 6726825d"):
        digest = json.loads(fid.main(["--weights", str(src), "--out", str(out)]))["sha256"]  # python fid.py ...
    sd, digest2 = fid.read_weights(out)
    assert digest == fid.sha256(src)
    assert digest2 == fid.sha256(out) != digest  # known by its own bytes: the source_sha256 it carries is not believed
    assert set(sd) == set(seeded[1])
    image = golden_images()[2]  # weights given as a path: loaded, and the same network as the seeded one
    with pytest.warns(UserWarning, match="is not 6726825d"):
        by_path = evaluate.inception_features(image, str(out), progress=False)
    np.testing.assert_allclose(by_path, fid.inception_features(image, seeded[0], progress=False), rtol=1e-6)
    with pytest.raises(UserError, match="no such file; get pytorch-fid's weights from https://github.com/mseitzer"):
        fid.load_inception(tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------------
# evaluate.py


def _tiny_sets(tmp_path, n=3):
    from PIL import Image

    rng = np.random.default_rng(5)
    data = tmp_path / "real.npy"
    np.save(data, rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"face_{i:04d}.png")
    return data, folder


@not_pytorch_fid
def test_cli_fid_kid_and_the_statistics_cache(weights_file, tmp_path, capsys, monkeypatch):
    # scipy's sqrtm of a 2048 x 2048 product takes ~1 min on 2 busy cores (twice for a singular one): the CLI's
    # distance is taken on the first 32 features here; the function itself is checked above against pytorch-fid
    calls = []

    def frechet_32(mu1, sigma1, mu2, sigma2):
        calls.append((mu1, sigma1, mu2, sigma2))
        return fid.frechet_distance(mu1[:32], sigma1[:32, :32], mu2[:32], sigma2[:32, :32])

    monkeypatch.setattr(evaluate, "frechet_distance", frechet_32)
    data, folder = _tiny_sets(tmp_path)
    stats, out = tmp_path / "real_stats.npz", tmp_path / "eval.json"
    argv = [
        "--data",
        str(data),
        "--images",
        str(folder),
        "--num",
        "3",
        "--fid-weights",
        str(weights_file),
        "--fid-stats",
        str(stats),
        "--json",
        str(out),
    ]
    first = evaluate.main(argv)
    table = capsys.readouterr().out
    assert "FID" in table and "KID x1e3" in table and "3 real (computed) vs 3 generated" in table
    r = json.loads(out.read_text())
    assert r["fid_num_real"] == r["fid_num_fake"] == 3 and r["kid_subset_size"] == 3 and r["kid_subsets"] == 100
    assert r["fid"] > 0 and np.isfinite(r["kid_mean"]) and r["kid_std"] >= 0 and r["fid_real_stats"] == "computed"
    with np.load(stats) as z:
        assert z["mu"].shape == (2048,) and z["sigma"].shape == (2048, 2048) and z["kid_features"].shape == (3, 2048)
    assert [c[1].shape for c in calls] == [(2048, 2048)] and calls[0][0].dtype == np.float64
    second = evaluate.main(argv)  # the real statistics come from the cache now: same numbers
    assert second["fid_real_stats"] == "cached"
    np.testing.assert_array_equal(calls[1][0], calls[0][0])  # real mu from the cache, bit for bit
    np.testing.assert_array_equal(calls[1][1], calls[0][1])
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-6)
    assert second["kid_mean"] == pytest.approx(first["kid_mean"], rel=1e-5, abs=1e-9)
    third = evaluate.main([*argv[:6], "--seed", "1", *argv[6:]])  # other real rows: the cache is stale
    assert third["fid_real_stats"] == "computed" and "images changed since it was written" in capsys.readouterr().out
    with np.load(stats) as z:
        assert str(z["device"]) == fid.compute_key() == "cpu float32"
    # statistics written on a CPU are refused on a GPU (other kernels: other last bits), and the other way round
    monkeypatch.setattr(fid, "compute_key", lambda: "gpu NVIDIA A100-SXM4-40GB float32")
    fourth = evaluate.main([*argv[:6], "--seed", "1", *argv[6:]])
    assert fourth["fid_real_stats"] == "computed" and "device changed since it was written" in capsys.readouterr().out
    with np.load(stats) as z:
        assert str(z["device"]) == "gpu NVIDIA A100-SXM4-40GB float32"


def test_cli_without_weights_says_how_to_get_fid(tmp_path, capsys):
    data, folder = _tiny_sets(tmp_path)
    result = evaluate.main(["--data", str(data), "--images", str(folder), "--num", "3"])
    assert "fid" not in result
    assert "--fid-weights pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().out


@not_pytorch_fid
def test_cli_rejects_a_foreign_statistics_file(weights_file, tmp_path):
    data, folder = _tiny_sets(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(UserError, match="bad.npz: not a statistics file of evaluate.py"):
        evaluate.main(
            [
                "--data",
                str(data),
                "--images",
                str(folder),
                "--num",
                "3",
                "--fid-weights",
                str(weights_file),
                "--fid-stats",
                str(bad),
            ]
        )
    assert os.path.getsize(bad) > 0  # left alone


# ---------------------------------------------------------------------------------------------
# the benchmark and the reference script (their torch side runs in make fid-reference)


def test_bench_fid_paddle_worker_times_features():
    from bench import bench_fid

    r = bench_fid.worker("paddle", num=1, batch=1)
    assert r["kind"] == "paddle" and r["img_s"] > 0 and 0 <= r["others"] <= 1


def test_reference_script_skips_without_pytorch_fid(capsys):
    import importlib.util

    from bench import fid_reference

    if importlib.util.find_spec("pytorch_fid") is not None:
        pytest.skip("pytorch-fid is installed here: make fid-reference runs the script")
    assert fid_reference.main(["--live"]) == 0
    assert "skipped: the reference needs torch, torchvision and pytorch-fid" in capsys.readouterr().out


def test_importing_fid_and_modelfile_loads_no_paddle():
    """inception.py (and so paddle) loads only when a network is built: evaluate.py --images stays paddle-free."""
    import subprocess
    import sys

    code = "import sys, fid, modelfile; print([m for m in sys.modules if m.split('.')[0] in ('paddle', 'inception')])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
