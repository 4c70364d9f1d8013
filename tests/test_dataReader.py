"""dataReader.py: values and layout, seeded and resumable order, sharding, folder == packed, bad data, the CLI."""

import subprocess
import sys
from pathlib import Path

from utils import UserError

import numpy as np
import paddle
import pytest
from PIL import Image

import dataReader
import faces
from dataReader import FaceDataset, make_loader
from pretreat import PretreatConfig, pretreat

ROOT = Path(__file__).resolve().parent.parent


def indexed_faces(n: int) -> np.ndarray:
    """uint8 (n, 64, 64, 3): red = 6 * index (which image), green = 4 * row, blue = 4 * column (which way up)."""
    a = np.zeros((n, 64, 64, 3), np.uint8)
    a[..., 0] = (np.arange(n) * 6)[:, None, None]
    a[..., 1] = (np.arange(64) * 4)[None, :, None]
    a[..., 2] = (np.arange(64) * 4)[None, None, :]
    return a


@pytest.fixture
def faces_npy(tmp_path):
    path = tmp_path / "faces.npy"
    np.save(path, indexed_faces(40))
    return path


def ids(images) -> list[int]:
    """The image indices in a batch [B, 3, 64, 64] of indexed_faces."""
    red = faces.to_uint8(images)[:, 0, 0, 0].astype(int)
    assert (red % 6 == 0).all()
    return list(red // 6)


def epoch_ids(loader, start: int = 0) -> list[list[int]]:
    return [ids(images) for images in loader.iter_from(start)]


def test_items_are_float32_chw_in_minus_one_to_one(faces_npy):
    ds = FaceDataset(faces_npy)
    assert len(ds) == 40
    x = ds[7]
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1  # row 0 / column 0 are 0 -> -1
    assert np.allclose(x[0], 42 / 127.5 - 1, atol=1e-6)  # red: the index
    assert np.allclose(
        x[1], (np.arange(64) * 4 / 127.5 - 1)[:, None] + np.zeros((1, 64)), atol=1e-6
    )  # green: varies down the rows (H)
    assert np.allclose(
        x[2], (np.arange(64) * 4 / 127.5 - 1)[None, :] + np.zeros((64, 1)), atol=1e-6
    )  # blue: along the columns (W)
    assert np.array_equal(
        faces.to_uint8(x[None]), np.transpose(indexed_faces(40)[7:8], (0, 3, 1, 2))
    )  # exact round trip
    batch = ds[np.array([9, 2, 5])]
    assert batch.shape == (3, 3, 64, 64) and ids(batch) == [9, 2, 5]


def test_batches_are_paddle_float32_nchw(faces_npy):
    loader = make_loader(faces_npy, batch_size=16, shuffle=True, seed=0)
    assert len(loader) == 2 and len(loader.dataset) == 40
    batches = list(loader)
    assert len(batches) == 2
    for images in batches:
        assert (
            isinstance(images, paddle.Tensor)
            and images.dtype == paddle.float32
            and list(images.shape) == [16, 3, 64, 64]
        )
        assert float(images.min()) >= -1 and float(images.max()) <= 1
        assert ids(images) == sorted(ids(images))  # each batch is one forward read of the file
    got = sum(epoch_ids(loader), [])
    assert len(set(got)) == 32 and set(got) <= set(range(40))


def test_held_batches_keep_their_own_memory_and_contents(faces_npy):
    loader = make_loader(faces_npy, batch_size=4, seed=8)
    ds, order = loader.dataset, loader.batch_sampler.epoch_batches()
    held = list(loader)  # every tensor of the epoch still alive: no batch's memory may be reused
    assert len({t.data_ptr() for t in held}) == 10
    for images, idx in zip(held, order, strict=True):
        assert np.array_equal(images.numpy(), ds.get_batch(idx))
    again = list(loader)  # a second epoch while the first one's tensors are alive changes none of them
    for images, idx in zip(held, order, strict=True):
        assert np.array_equal(images.numpy(), ds.get_batch(idx))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(held, again, strict=True))


def test_drop_last(faces_npy):
    keep = make_loader(faces_npy, batch_size=16, shuffle=True, seed=0, drop_last=False)
    assert len(keep) == 3
    sizes = [len(b) for b in epoch_ids(keep)]
    assert sizes == [16, 16, 8] and sorted(sum(epoch_ids(keep), [])) == list(range(40))
    in_order = make_loader(faces_npy, batch_size=16, shuffle=False, drop_last=False)
    assert sum(epoch_ids(in_order), []) == list(range(40))


def test_same_seed_same_order_other_seed_other_order(faces_npy):
    a = epoch_ids(make_loader(faces_npy, batch_size=8, seed=1))
    b = epoch_ids(make_loader(faces_npy, batch_size=8, seed=1))
    c = epoch_ids(make_loader(faces_npy, batch_size=8, seed=2))
    assert a == b and a != c
    assert epoch_ids(make_loader(faces_npy, batch_size=8)) != epoch_ids(
        make_loader(faces_npy, batch_size=8)
    )  # seed=None: drawn
    assert a != [list(range(i, i + 8)) for i in range(0, 40, 8)]  # shuffled at all
    with pytest.raises(UserError, match="seed must be a non-negative integer"):
        make_loader(faces_npy, batch_size=8, seed=-1)


def test_set_epoch_reshuffles_deterministically(faces_npy):
    loader = make_loader(faces_npy, batch_size=8, seed=3)
    e0 = epoch_ids(loader)
    assert epoch_ids(loader) == e0  # no hidden epoch counter
    loader.set_epoch(1)
    e1 = epoch_ids(loader)
    assert e1 != e0 and sorted(sum(e1, [])) == sorted(sum(e0, [])) == list(range(40))
    other = make_loader(faces_npy, batch_size=8, seed=3)
    other.set_epoch(1)
    assert epoch_ids(other) == e1 and loader.epoch == 1
    loader.set_epoch(0)
    assert epoch_ids(loader) == e0
    perm = np.random.default_rng([3, 1]).permutation(40)  # the documented order
    assert [sorted(b) for b in e1] == [sorted(perm[i : i + 8]) for i in range(0, 40, 8)]


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_iter_from_k_gives_the_tail_of_the_full_epoch(faces_npy, k):
    loader = make_loader(faces_npy, batch_size=8, seed=4)
    loader.set_epoch(2)
    full = epoch_ids(loader)
    assert epoch_ids(loader, k) == full[k:]
    assert epoch_ids(loader) == full  # iter_from does not stick
    with pytest.raises(ValueError):
        loader.iter_from(6)


def test_distributed_ranks_get_disjoint_equal_shards(faces_npy):
    ranks = [make_loader(faces_npy, batch_size=4, seed=5, num_replicas=3, rank=r) for r in range(3)]
    assert all(isinstance(r.batch_sampler, paddle.io.DistributedBatchSampler) for r in ranks)
    assert [len(r) for r in ranks] == [3, 3, 3]  # ceil(40 / 3) = 14 each -> 3 full batches of 4
    for loader in ranks:
        loader.set_epoch(1)
    shards = [sum(epoch_ids(r), []) for r in ranks]
    assert all(len(s) == 12 for s in shards) and not (set(shards[0]) & set(shards[1]) | set(shards[0]) & set(shards[2]))
    with pytest.raises(ValueError, match="seed"):
        make_loader(faces_npy, batch_size=4, seed=None, num_replicas=2, rank=0)


def test_num_workers_gives_the_same_batches(faces_npy):
    one = make_loader(faces_npy, batch_size=8, seed=6, num_workers=0)
    two = make_loader(faces_npy, batch_size=8, seed=6, num_workers=2)
    two.set_epoch(1)
    one.set_epoch(1)
    assert epoch_ids(two, 2) == epoch_ids(one, 2)


def test_packed_and_folder_datasets_agree(tmp_path, tiny_celeba_dir):
    pretreat(PretreatConfig(src=str(tiny_celeba_dir), out=str(tmp_path / "faces.npy"), progress=False))
    packed, folder = FaceDataset(tmp_path / "faces.npy"), FaceDataset(tiny_celeba_dir)
    assert len(packed) == len(folder) == 10
    idx = np.arange(10)
    assert np.array_equal(packed[idx], folder[idx])
    a = epoch_ids_any(make_loader(tmp_path / "faces.npy", batch_size=4, seed=7))
    b = epoch_ids_any(make_loader(tiny_celeba_dir, batch_size=4, seed=7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def epoch_ids_any(loader) -> list[np.ndarray]:
    return [images.numpy() for images in loader]


def test_a_bad_image_in_a_folder_names_the_file(tmp_path, tiny_celeba_dir):
    (tiny_celeba_dir / "000003.jpg").write_bytes(b"not a jpeg")
    ds = FaceDataset(tiny_celeba_dir)
    assert ds[0].shape == (3, 64, 64)
    with pytest.raises(UserError, match=r"000003\.jpg: cannot read this image.*pretreat\.py"):
        ds[2]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"nope\.npy: no such file or folder; run python pretreat\.py first.*--demo"),
        ("text", r"faces\.npy: not a readable \.npy file"),
        ("not_npy", r"faces\.txt: not a \.npy file or a folder of images"),
        ("float", r"faces\.npy: holds a float32 array of shape \(4, 64, 64, 3\), expected uint8 \(N, 64, 64, 3\)"),
        ("shape", r"faces\.npy: holds a uint8 array of shape \(4, 3, 64, 64\), expected uint8"),
        ("empty", r"faces\.npy: holds no images"),
        ("object", r"faces\.npy: not a readable \.npy file"),
        ("few", r"faces\.npy: 5 images, fewer than one batch of 8"),
        ("empty_dir", r"empty: no \.jpg/\.jpeg/\.png/\.bmp/\.webp images"),
    ],
)
def test_bad_data_is_one_clear_error_naming_the_file(tmp_path, case, message):
    path = tmp_path / ("faces.txt" if case == "not_npy" else "nope.npy" if case == "missing" else "faces.npy")
    if case == "text":
        path.write_text("hello")
    elif case == "not_npy":
        np.save(tmp_path / "x.npy", indexed_faces(9))
        (tmp_path / "x.npy").rename(path)
    elif case in ("float", "shape", "empty", "few", "object"):
        arrays = {
            "float": np.zeros((4, 64, 64, 3), np.float32),
            "shape": np.zeros((4, 3, 64, 64), np.uint8),
            "empty": np.zeros((0, 64, 64, 3), np.uint8),
            "few": indexed_faces(5),
            "object": np.array([None, 1], dtype=object),
        }
        np.save(path, arrays[case], allow_pickle=True)
    elif case == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    with pytest.raises(UserError, match=message) as err:
        make_loader(path, batch_size=8, seed=0)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_few_images_are_fine_without_drop_last(tmp_path):
    np.save(tmp_path / "faces.npy", indexed_faces(5))
    loader = make_loader(tmp_path / "faces.npy", batch_size=8, seed=0, drop_last=False)
    assert len(loader) == 1 and sorted(epoch_ids(loader)[0]) == [0, 1, 2, 3, 4]


def test_cli_writes_one_batch_the_right_way_up(faces_npy, tmp_path, capsys):
    out = tmp_path / "grid.png"
    dataReader.main(["--data", str(faces_npy), "--out", str(out), "--batch-size", "16"])
    grid = np.asarray(Image.open(out))
    assert grid.shape == (4 * 66 + 2, 4 * 66 + 2, 3)  # 4x4 tiles of 64 with 2-pixel borders
    tile = grid[2:66, 2:66].astype(int)
    assert np.array_equal(tile[:, :, 1], np.repeat((np.arange(64) * 4)[:, None], 64, axis=1))  # green grows downwards
    assert np.array_equal(tile[:, :, 2], np.repeat((np.arange(64) * 4)[None, :], 64, axis=0))  # blue grows rightwards
    assert "16 of 40 images" in capsys.readouterr().out


def test_cli_missing_data_is_one_line(tmp_path):
    args = ["--data", str(tmp_path / "none.npy"), "--out", str(tmp_path / "g.png")]
    r = subprocess.run(
        [sys.executable, str(ROOT / "dataReader.py"), *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("dataReader.py: error: ") and "none.npy" in last and "pretreat.py" in last
    assert not (tmp_path / "g.png").exists()
