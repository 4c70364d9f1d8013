"""Run folders and outputs (issue 23): a full or read-only disk at save time is one line naming the file with the
previous file intact; generator.py never mixes its faces with an earlier run's; evaluate.py's SWD switch."""

from __future__ import annotations

import errno
import os

import utils

import numpy as np
import pytest

import evaluate
import generator
import modelfile
import train
from conftest import TINY_NET, make_faces
from faces import save_png


def test_full_disk_at_checkpoint_time_is_one_line_and_the_previous_checkpoint_stays(tmp_path, monkeypatch):
    data, out = make_faces(tmp_path / "faces.npy", n=16), tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), *TINY_NET, "--epochs", "1", "--save-every", "1",
            "--max-iters", "2", "--no-progress", "--device", "cpu"]  # fmt: skip
    replace, calls = os.replace, []

    def full_disk_at_second_checkpoint(src, dst):
        calls.append(str(dst))
        if str(dst).endswith(modelfile.CHECKPOINT_FILE) and calls.count(str(dst)) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src)
        return replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", full_disk_at_second_checkpoint)
    with pytest.raises(utils.UserError) as e:
        train.main(argv)
    ckpt = out / modelfile.CHECKPOINT_FILE
    assert str(e.value) == f"{ckpt}: cannot write it (No space left on device); the previous file is unchanged"
    assert modelfile.read_state(ckpt)["iteration"] == 1
    assert not [p for p in out.rglob("*.tmp")]


def test_read_only_folder_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(utils.tempfile, "mkstemp", read_only)
    with pytest.raises(utils.UserError, match=r"g\.safetensors: cannot write it \(Read-only file system\)$"):
        modelfile.save_state(tmp_path / "g.safetensors", {"format": "x"})


def test_other_write_errors_pass_through(tmp_path, monkeypatch):
    def broken(*args, **kw):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(utils.os, "replace", broken)
    with pytest.raises(OSError) as e:
        utils.atomic_write_text(tmp_path / "a.txt", "x")
    assert not isinstance(e.value, utils.UserError) and not list(tmp_path.iterdir())


def test_generator_removes_its_own_faces_of_an_earlier_run(tmp_path, capsys):
    from network import Generator

    G_path, out = tmp_path / "g.safetensors", tmp_path / "faces"
    modelfile.save_generator(G_path, Generator(16, 8))
    generator.run(generator.GeneratorConfig(ckpt=str(G_path), num=5, out=str(out)))
    keep = [out / "face_12.png", out / "my_face_0001.png", out / "notes.txt"]  # not generator.py's names
    for p in keep:
        p.write_bytes(b"mine")
    capsys.readouterr()
    generator.run(generator.GeneratorConfig(ckpt=str(G_path), num=2, out=str(out)))
    assert f"removed 5 faces of an earlier run from {out}" in capsys.readouterr().out
    faces = sorted(p.name for p in out.glob("face_*.png"))
    assert faces == ["face_0000.png", "face_0001.png", "face_12.png"]
    assert all(p.read_bytes() == b"mine" for p in keep)


@pytest.fixture
def image_folder(tmp_path):
    imgs = np.load(make_faces(tmp_path / "faces.npy", n=8))
    for i, im in enumerate(imgs):
        save_png(np.concatenate([im, im[:14]]), tmp_path / "imgs" / f"{i}.png")  # 64x78: cropped back to 64x64
    return tmp_path


@pytest.mark.parametrize("swd,limit,computed", [("auto", 20_000, True), ("auto", 4, False), ("on", 4, True),
                                                ("off", 20_000, False)])  # fmt: skip
def test_swd_switch_and_size_limit(image_folder, monkeypatch, swd, limit, computed):
    monkeypatch.setattr(evaluate, "SWD_AUTO_MAX", limit)
    cfg = evaluate.EvaluateConfig(images=str(image_folder / "imgs"), data=str(image_folder / "faces.npy"), num=8,
                                  swd=swd, workers=1)  # fmt: skip
    r = evaluate.evaluate(cfg)
    table = evaluate.format_table(r)
    if computed:
        assert len(r["swd"]) == 3 and r["swd_avg"] >= 0 and "swd_skipped" not in r
    else:
        assert r["swd"] == [] and r["swd_avg"] is None and "SWD skipped" in table
        assert r["swd_skipped"] == f"--swd {swd}" + (", over 4 images" if limit == 4 else "")
