"""utils.py: atomic writes and the config CLI (the image grid and the uint8 mapping: test_faces.py)."""

import os
import stat

import utils

import pytest


def test_atomic_path_writes_whole_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    utils.atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_atomic_path_leaves_old_file_and_no_temp_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), utils.atomic_path(target) as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_parse_config_builds_flags_from_dataclass():
    from dataclasses import dataclass, field

    @dataclass
    class Cfg:
        data: str = field(default="x.npy", metadata={"help": "the data"})
        batch_size: int = 4
        lr: float = 0.1
        amp: bool = False
        device: str = field(default="auto", metadata={"choices": ["auto", "cpu"]})

    cfg = utils.parse_config(Cfg, ["--batch-size", "8", "--amp", "--lr", "0.5"])
    assert cfg == Cfg(batch_size=8, amp=True, lr=0.5)
    with pytest.raises(SystemExit):
        utils.parse_config(Cfg, ["--device", "tpu"])
