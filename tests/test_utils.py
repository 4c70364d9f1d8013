"""utils.py: atomic writes, the image grid and the tanh-to-uint8 mapping."""

import os
import stat

import utils

import numpy as np
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


def test_to_uint8_maps_tanh_range_to_full_byte_range():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -2.0], np.float32)
    np.testing.assert_array_equal(utils.to_uint8(x), [0, 64, 128, 191, 255, 255, 0])


def test_make_grid_places_images_row_major_with_border():
    imgs = np.stack([np.full((4, 5, 3), i * 10, np.uint8) for i in range(5)])
    grid = utils.make_grid(imgs, nrow=3, padding=1, pad_value=255)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert (
        grid[1, 1, 0] == 0
        and grid[1, 7, 0] == 10
        and grid[1, 13, 0] == 20
        and grid[6, 1, 0] == 30
        and grid[6, 7, 0] == 40
    )
    assert grid[6, 13, 0] == 255 and grid[0, 0, 0] == 255  # empty cell and border
    assert utils.make_grid(np.zeros((64, 8, 8, 3), np.uint8), padding=2).shape == (8 * 10 + 2, 8 * 10 + 2, 3)


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
