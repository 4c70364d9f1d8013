"""train.py --visualdl: the records read back with VisualDL's own reader, across a resume (CPU, tiny models)."""

import csv
import io
import subprocess
import sys
from pathlib import Path

from utils import UserError

import numpy as np
import pytest
from PIL import Image

import train as train_mod
from conftest import ROOT, make_faces, tiny
from runlog import VisualDLLog
from train import TrainConfig, train

SCALARS = ["d_loss", "g_loss", "d_real", "d_fake", "img_s"]


def tiny_vdl(tmp_path: Path, **kw) -> TrainConfig:
    """The tiny run with --visualdl on its own data (48 faces / batch 8: 6 iterations per epoch)."""
    data = tmp_path / "faces.npy"
    if not data.exists():
        make_faces(data)
    return tiny(tmp_path, data, visualdl=True, **kw)


def read_records(out: Path):
    """{name: [(step, value)]} for the scalars and [(step, HWC uint8)] for the sample grids, via visualdl.LogReader."""
    from visualdl import LogReader

    files = sorted((out / "vdl").glob("vdlrecords*"))
    assert [f.name for f in files] == [VisualDLLog.FILE]
    reader = LogReader(file_path=str(files[0]))
    scalars = {k: [(r.id, r.value) for r in reader.get_data("scalar", f"train/{k}")] for k in SCALARS}
    grids = [
        (r.id, np.asarray(Image.open(io.BytesIO(r.image.encoded_image_string))))
        for r in reader.get_data("image", VisualDLLog.IMAGE_TAG)
    ]
    return scalars, grids


def csv_rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_against_log_csv(out: Path, n_iters: int) -> list:
    scalars, grids = read_records(out)
    rows = csv_rows(out)
    assert len(rows) == n_iters
    for k in SCALARS:
        steps = [s for s, _ in scalars[k]]
        assert steps == list(range(1, n_iters + 1)), k  # global iterations, each once
        logged = np.array([v for _, v in scalars[k]])
        expect = np.array([float(r[k]) for r in rows])
        if k == "img_s":  # a resumed run's log.csv has no speed for the iterations before the checkpoint
            logged, expect = logged[~np.isnan(expect)], expect[~np.isnan(expect)]
        np.testing.assert_allclose(logged, expect, rtol=1e-5 if k != "img_s" else 0.01, atol=1e-6, err_msg=k)
    return grids


def test_scalars_and_grids_match_log_csv_and_samples(tmp_path):
    pytest.importorskip("visualdl", reason="VisualDL is optional (pip install visualdl)")
    cfg = tiny_vdl(tmp_path, sample_every=4)
    train(cfg)
    out = Path(cfg.out)
    grids = check_against_log_csv(out, 12)
    # a grid each time one is written: iterations 4, 8, 12 and the two epoch ends (6, 12)
    names = ["iter_000004.png", "epoch_001.png", "iter_000008.png", "iter_000012.png", "epoch_002.png"]
    assert [step for step, _ in grids] == [4, 6, 8, 12, 12]
    for (_, grid), name in zip(grids, names, strict=True):
        assert grid.shape == (530, 530, 3)  # 8 x 8 faces of 64 px, 2 px borders
        np.testing.assert_array_equal(grid, np.asarray(Image.open(out / "samples" / name)))

    # --overwrite starts the curves afresh
    train(tiny_vdl(tmp_path, overwrite=True, max_iters=3))
    check_against_log_csv(out, 3)


def test_resume_continues_the_same_curves_without_the_redone_iterations(tmp_path):
    pytest.importorskip("visualdl", reason="VisualDL is optional (pip install visualdl)")
    from visualdl import LogReader, LogWriter

    cfg = tiny_vdl(tmp_path, max_iters=5)
    train(cfg)  # checkpoint at iteration 5
    out = Path(cfg.out)
    # what a run killed after the checkpoint leaves: records past it, and half a record at the end
    with LogWriter(logdir=str(out / "vdl"), file_name=VisualDLLog.FILE) as w:
        for step in range(6, 10):
            w.add_scalar("train/d_loss", 99.0, step)
    with open(out / "vdl" / VisualDLLog.FILE, "ab") as f:
        f.write((1000).to_bytes(8, "little") + b"\x0a\x05cut")

    train(tiny_vdl(tmp_path, resume=True))
    grids = check_against_log_csv(out, 12)  # steps 1..12 once each: 6..9 are the resumed run's, not 99
    assert [step for step, _ in grids] == [5, 6, 12]  # the first run's last picture (mid-epoch), then the epoch ends
    reader = LogReader(file_path=str(out / "vdl" / VisualDLLog.FILE))
    metas = reader.get_data("meta_data", "meta_data_tag")
    assert len(metas) == 2  # the first run's (a record file starts with one) and the resumed run's


def test_without_visualdl_the_flag_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "visualdl", None)  # import visualdl -> ImportError
    with pytest.raises(UserError, match="pip install visualdl"):
        train(tiny_vdl(tmp_path))
    assert not (tmp_path / "out").exists()  # refused before any work
    assert train_mod.TrainConfig().visualdl is False  # optional: off by default

    code = (
        "import sys, runpy; sys.modules['visualdl'] = None; sys.argv = ['train.py'] + sys.argv[1:]; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    cfg = tiny_vdl(tmp_path)
    p = subprocess.run(
        [sys.executable, "-c", code, "--data", cfg.data, "--out", cfg.out, "--visualdl"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert p.returncode == 2
    expect = "train.py: error: --visualdl needs VisualDL, which is not installed: pip install visualdl"
    assert p.stderr.strip().splitlines() == [expect]
