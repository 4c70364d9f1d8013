"""Batches of 64x64 faces for training, from pretreat.py's packed .npy (or a folder of images).

Usage:
    python dataReader.py --data data/celeba64.npy          # writes reader_batch.png: one batch as a grid
    python dataReader.py --data data/demo64.npy --batch-size 64 --out reader_batch.png

API (what train.py calls):
    loader = make_loader(path, batch_size=128, shuffle=True, seed=0, drop_last=True, num_workers=0)
    len(loader)                  # batches per epoch (this rank's share when distributed)
    len(loader.dataset)          # images in the file
    loader.set_epoch(epoch)      # the order of epoch e is a pure function of (seed, e): call it every epoch
    for images in loader.iter_from(k):   # batches k, k+1, ... of that epoch; iter(loader) = iter_from(0)
        ...                      # images: paddle.Tensor [B, 3, 64, 64] float32 in [-1, 1] (faces.to_float)
    loader, note = on_device(loader, "auto", device)   # --data-on-device: the same batches, gathered from a copy
                                                       # of the packed set in device memory (DeviceLoader)
`iter_from(k)` skips the first k batches without reading them, so a run resumed at iteration
epoch * len(loader) + k sees exactly the batches it would have seen. Epoch e's order is
np.random.default_rng([seed, e]).permutation(N), padded to a multiple of the world size and dealt out
rank::world; each batch's indices are sorted, so a batch is one forward gather from the memory-mapped file and
one uint8 -> float32 conversion (faces.to_float), in this process (num_workers=0) or in paddle.io.DataLoader's
worker processes (num_workers > 0), or, with DeviceLoader, on the device from its copy of the set. Where the
batches are gathered is chosen once, when the loader is made.
With paddle.distributed world size > 1, the batch sampler (a paddle.io.DistributedBatchSampler) gives each
rank its own shard, all ranks the same number of batches; pass the same seed on every rank.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import utils
from utils import UserError

import numpy as np
import paddle

import faces
from faces import PACK_HINT, SIZE, ImageSource, open_packed, read_faces, to_float


class FaceDataset(paddle.io.Dataset):
    """Faces from a packed .npy (memory-mapped) or a folder of images (cropped as pretreat.py does).

    dataset[i] is float32 (3, 64, 64) in [-1, 1]; dataset[indices] (an int array) is the batch (B, 3, 64, 64).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._array = None  # opened lazily, per process: DataLoader workers must not pickle a memmap
        self._source = None
        if not self.path.exists():
            raise UserError(f"{path}: no such file or folder; {PACK_HINT}")
        if self.path.is_dir():
            self._source = ImageSource(self.path)
            if not self._source.names:
                raise UserError(f"{path}: no .jpg/.jpeg/.png/.bmp/.webp images in this folder")
            self._len = len(self._source.names)
        elif self.path.suffix.lower() != ".npy":
            raise UserError(
                f"{path}: not a .npy file or a folder of images; pack images with python pretreat.py --src {path}"
            )
        else:
            self._len = len(open_packed(self.path))

    @property
    def packed(self) -> bool:
        return self._source is None

    @property
    def images(self) -> np.ndarray:
        """The packed set, uint8 (N, 64, 64, 3), memory-mapped."""
        if self._array is None:
            self._array = open_packed(self.path)
        return self._array

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if np.ndim(index) == 0:
            return self.get_batch([int(index)])[0]
        return self.get_batch(index)

    def get_batch(self, indices, out: np.ndarray | None = None) -> np.ndarray:
        """float32 (B, 3, 64, 64) in [-1, 1] for `indices`, in that order (sorted indices read fastest),
        written into `out` when given."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.packed:
            return to_float(self.images[idx], out)  # one gather, one conversion
        images, _, skipped = read_faces(self._source, idx)
        if skipped:
            name, reason = skipped[0]
            raise UserError(
                f"{self.path / name}: cannot read this image ({reason}); "
                f"pack the folder with python pretreat.py --src {self.path}, which skips bad files"
            )
        return to_float(np.stack(images), out)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


class SeededBatchSampler(paddle.io.DistributedBatchSampler):
    """Batches of sorted indices; epoch e's order is a pure function of (seed, e), sharded rank::world.

    Paddle's own DistributedBatchSampler shuffles with RandomState(epoch), ignoring any seed, and advances
    the epoch by itself; this one does neither, so a resumed run can rebuild any epoch exactly.
    """

    def __init__(
        self, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool, num_replicas: int, rank: int
    ):
        super().__init__(
            range(n), batch_size, num_replicas=num_replicas, rank=rank, shuffle=shuffle, drop_last=drop_last
        )
        self.seed = seed

    def epoch_batches(self) -> list[np.ndarray]:
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        order = np.resize(order, self.total_size)  # pads by repeating from the start: every rank gets num_samples
        mine = order[self.local_rank :: self.nranks]
        full = len(mine) // self.batch_size * self.batch_size
        batches = list(np.sort(mine[:full].reshape(-1, self.batch_size), axis=1))
        if not self.drop_last and full < len(mine):
            batches.append(np.sort(mine[full:]))
        return batches

    def __iter__(self):
        return iter(self.epoch_batches())


class _Batches(paddle.io.Dataset):
    """Item j is the whole batch `batches[j]`: DataLoader workers gather and convert a batch in one call
    (with batch_size=None the DataLoader neither samples nor collates)."""

    def __init__(self, dataset: FaceDataset, batches: list[np.ndarray]):
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int) -> np.ndarray:
        return self.dataset.get_batch(self.batches[j])


class FaceLoader:
    """The batches of a FaceDataset as tensors [B, 3, 64, 64], in a seeded, resumable order (see the module
    docstring): gathered in this process, or by paddle.io.DataLoader worker processes when num_workers > 0."""

    def __init__(self, dataset: FaceDataset, sampler: SeededBatchSampler, num_workers: int = 0):
        self.dataset, self.batch_sampler, self.num_workers = dataset, sampler, num_workers

    @property
    def seed(self) -> int:
        return self.batch_sampler.seed

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch: int):
        """Iterate the current epoch from batch `start_batch` on (0 <= start_batch <= len(self))."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} is outside 0..{len(self)}")
        batches = self.batch_sampler.epoch_batches()[start_batch:]  # fixed now, not when the first batch is asked
        return self._gather(batches) if batches else iter(())

    def _gather(self, batches: list[np.ndarray]):
        if self.num_workers > 0:
            return iter(
                paddle.io.DataLoader(_Batches(self.dataset, batches), batch_size=None, num_workers=self.num_workers)
            )
        return self._in_process(batches)

    def _in_process(self, batches: list[np.ndarray]):
        for idx in batches:
            # a fresh array each batch, which becomes the tensor without a copy (paddle keeps a reference to it):
            # paddle's copy took two thirds of the loader's time; recycling the buffers instead measured the same
            # (glibc reuses the freed block), so there is no pool
            yield paddle.Tensor(value=self.dataset.get_batch(idx), place=paddle.CPUPlace(), zero_copy=True)


class DeviceLoader(FaceLoader):
    """The batches of a loader over a packed set, gathered from a copy of the whole uint8 set in device memory.

    Same API and the same batches bit for bit: the index lists come from the loader's own sampler, and the
    conversion is faces.to_float on the gathered uint8 tensor. Per epoch, one upload of the index table; per
    batch, nothing crosses.
    """

    def __init__(self, loader: FaceLoader, place: str | None = None):
        if not loader.dataset.packed:
            raise UserError(
                f"{loader.dataset.path}: --data-on-device needs a packed .npy (python pretreat.py), not a folder"
            )
        super().__init__(loader.dataset, loader.batch_sampler)
        self.images = paddle.to_tensor(np.ascontiguousarray(loader.dataset.images), place=place)  # (N, 64, 64, 3) uint8

    def _gather(self, batches: list[np.ndarray]):
        last = batches[-1] if len(batches[-1]) != len(batches[0]) else None  # drop_last=False: a shorter last batch
        full = batches[:-1] if last is not None else batches
        table = paddle.to_tensor(np.stack(full), place=self.images.place) if full else None
        for i in range(len(full)):
            yield self.batch(table[i])
        if last is not None:
            yield self.batch(paddle.to_tensor(last, place=self.images.place))

    def batch(self, indices: paddle.Tensor) -> paddle.Tensor:
        """float32 (B, 3, 64, 64) in [-1, 1] of the images at `indices` (a device tensor)."""
        return to_float(paddle.gather(self.images, indices))


def on_device(loader: FaceLoader, mode: str, device: str) -> tuple[FaceLoader | DeviceLoader, str]:
    """--data-on-device: `loader` itself or a DeviceLoader over the same batches (see plan_on_device), and a note."""
    use, note = plan_on_device(len(loader.dataset), loader.dataset.packed, mode, device)
    return (DeviceLoader(loader) if use else loader), note


def plan_on_device(n_images: int, packed: bool, mode: str, device: str, share: float = 0.5) -> tuple[bool, str]:
    """Whether --data-on-device puts the set in device memory, and a note saying so (printed at start).

    auto: on a GPU, for a packed set taking at most `share` of the device memory Paddle has not reserved yet (the
    rest is for the models and activations). on: always, a CPU included (which is how it is tested). off: never.
    """
    if mode not in ("auto", "on", "off"):
        raise UserError(f"--data-on-device must be auto, on or off, not {mode!r}")
    nbytes = n_images * SIZE * SIZE * 3
    gb = f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"
    if mode == "off" or (mode == "auto" and (device != "gpu" or not packed)):
        return False, "batches from host memory"
    if mode == "auto":
        free = device_free_bytes()
        if nbytes > share * free:
            return False, (
                f"batches from host memory: the set ({gb}) is over {share:.0%} of the GPU's free {free / 1e9:.1f} GB"
            )
    return True, f"the set ({gb}) on the {device}, batches gathered there"


def device_free_bytes() -> int:
    """Bytes of the current GPU that Paddle has not reserved (its allocator grows on demand): total - reserved."""
    dev = paddle.device.get_device()
    props = paddle.device.cuda.get_device_properties(dev)
    return int(props.total_memory) - int(paddle.device.cuda.memory_reserved(dev))


def make_loader(
    path: str | Path,
    batch_size: int = 128,
    shuffle: bool = True,
    seed: int | None = None,
    drop_last: bool = True,
    num_workers: int = 0,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> FaceLoader:
    """A FaceLoader over `path` (.npy from pretreat.py, or a folder of images).

    seed=None draws one (kept in loader.seed). num_replicas and rank default to paddle.distributed's world
    size and rank. Raises UserError, one line naming the file, for missing, malformed or too-small data.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size}")
    world = paddle.distributed.get_world_size() if num_replicas is None else num_replicas
    rank = paddle.distributed.get_rank() if rank is None else rank
    if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    if seed is None:
        if world > 1:
            raise ValueError("make_loader: pass a seed when distributed, or every rank shuffles differently")
        seed = int(np.random.SeedSequence().entropy % 2**63)
    dataset = FaceDataset(path)
    sampler = SeededBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last, world, rank)
    if drop_last and sampler.num_samples < batch_size:
        per = f" per rank ({world} ranks)" if world > 1 else ""
        raise UserError(
            f"{path}: {len(dataset)} images, fewer than one batch of {batch_size}{per}; use a smaller --batch-size"
        )
    return FaceLoader(dataset, sampler, num_workers)


# ---------------------------------------------------------------------------------------------
# python dataReader.py: the tutorial's "test the DataReader" picture


@dataclass
class ReaderConfig:
    data: str = field(
        default="data/celeba64.npy", metadata={"help": "packed .npy from pretreat.py, or a folder of images"}
    )
    out: str = field(default="reader_batch.png", metadata={"help": "where to write the grid"})
    batch_size: int = field(default=64, metadata={"help": "images in the grid"})
    seed: int = field(default=0, metadata={"help": "shuffle seed"})


def main(argv: list[str] | None = None) -> None:
    cfg = utils.parse_config(ReaderConfig, argv, description=__doc__)
    loader = make_loader(cfg.data, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=False)
    images = next(iter(loader))
    faces.save_png(faces.make_grid(faces.to_images(images)), cfg.out)
    print(
        f"dataReader: {images.shape[0]} of {len(loader.dataset)} images from {cfg.data}, "
        f"{list(images.shape)} {images.dtype} in [{float(images.min()):.2f}, {float(images.max()):.2f}] -> {cfg.out}"
    )


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
