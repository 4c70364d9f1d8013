"""Batches of 64x64 faces for training, from pretreat.py's packed .npy (or a folder of images).

Usage:
    python dataReader.py --data data/celeba64.npy          # writes reader_batch.png: one batch as a grid
    python dataReader.py --data data/demo64.npy --batch-size 64 --out reader_batch.png

API (what train.py calls):
    loader = make_loader(path, batch_size=128, shuffle=True, seed=0, drop_last=True, num_workers=0)
    len(loader)                  # batches per epoch (this rank's share when distributed)
    len(loader.dataset)          # images in the file
    loader.set_epoch(epoch)      # the order of epoch e is a pure function of (seed, e): call it every epoch
    for images, in loader.iter_from(k):   # batches k, k+1, ... of that epoch; iter(loader) = iter_from(0)
        ...                      # images: paddle.Tensor [B, 3, 64, 64] float32 in [-1, 1] (x / 127.5 - 1)
    loader, note = on_device(loader, "auto", device)   # --data-on-device: the same batches, gathered from a copy
                                                       # of the packed set in device memory (DeviceLoader)
`iter_from(k)` skips the first k batches without reading them, so a run resumed at iteration
epoch * len(loader) + k sees exactly the batches it would have seen. Each batch is a list whose first
(only) element is the image tensor. Epoch e's order is np.random.default_rng([seed, e]).permutation(N),
padded to a multiple of the world size and dealt out rank::world; each batch's indices are sorted, so a
batch is one forward gather from the memory-mapped file and one uint8 -> float32 conversion, written into
a recycled buffer that becomes the tensor without a copy.
With paddle.distributed world size > 1, the batch sampler (a paddle.io.DistributedBatchSampler) gives each
rank its own shard, all ranks the same number of batches; pass the same seed on every rank.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import utils  # first: it sets CPU thread defaults before paddle loads
from utils import UserError

import numpy as np
import paddle

from pretreat import SIZE, Source, load_face

PACK_HINT = "run python pretreat.py first (CelebA), or python pretreat.py --demo for the bundled demo set"


def to_float_chw(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 (B, 64, 64, 3) -> float32 (B, 3, 64, 64) in [-1, 1]: x / 127.5 - 1, axes moved explicitly."""
    if out is None:
        out = np.empty((len(images), 3, *images.shape[1:3]), np.float32)
    for i in range(0, len(images), 8):  # 8 images (400 KB of float) at a time: the two in-place passes stay in cache
        o = out[i : i + 8]
        np.copyto(o, np.transpose(images[i : i + 8], (0, 3, 1, 2)), casting="unsafe")
        o /= np.float32(127.5)
        o -= np.float32(1.0)
    return out


def open_packed(path: str | Path) -> np.ndarray:
    """Memory-map a pretreat.py .npy and check it is uint8 (N, 64, 64, 3) with N > 0."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable .npy file ({why}); {PACK_HINT}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (SIZE, SIZE, 3):
        what = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise UserError(f"{path}: holds a {what}, expected uint8 (N, {SIZE}, {SIZE}, 3) images; {PACK_HINT}")
    if len(arr) == 0:
        raise UserError(f"{path}: holds no images; {PACK_HINT}")
    return arr


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
            self._source = Source(self.path)
            if not self._source.names:
                raise UserError(f"{path}: no .jpg/.jpeg/.png/.bmp/.webp images in this folder")
            self._len = len(self._source.names)
        elif self.path.suffix.lower() != ".npy":
            raise UserError(
                f"{path}: not a .npy file or a folder of images; pack images with python pretreat.py --src {path}"
            )
        else:
            self._len = len(open_packed(self.path))

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
        if self._source is not None:
            return to_float_chw(np.stack([self._read_image(int(i)) for i in idx]), out)
        if self._array is None:
            self._array = open_packed(self.path)
        return to_float_chw(self._array[idx], out)  # one gather, one conversion

    def _read_image(self, i: int) -> np.ndarray:
        try:
            return load_face(self._source.read(i))
        except Exception as e:  # anything a bad file makes Pillow raise
            raise UserError(
                f"{self.path / self._source.names[i]}: cannot read this image ({type(e).__name__}: {e}); "
                f"pack the folder with python pretreat.py --src {self.path}, which skips bad files"
            ) from None

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


class _WholeBatches:
    """Hands each batch's index array to the DataLoader as a one-item "batch", so its fetcher calls
    dataset[index_array] once per batch instead of dataset[i] per image."""

    def __init__(self, sampler: SeededBatchSampler):
        self.sampler, self.start = sampler, 0

    def __iter__(self):
        return iter([[b] for b in self.sampler.epoch_batches()[self.start :]])  # eager: fixed when iteration starts

    def __len__(self) -> int:
        return len(self.sampler)


class _Pooled:
    """The DataLoader's dataset when it runs in this process: pooled[index_array] is the batch, written into a
    recycled buffer, and it reaches paddle without a copy (_shared): paddle keeps a reference to the array it
    is given, a view of the buffer, until the last tensor using that memory is gone; then the view's finalizer
    returns the buffer. Why: paddle's copy of each batch took two thirds of the loader's time, and a fresh
    6 MB array costs a page-zeroing every batch. (A test checks that held batches keep their contents.)"""

    def __init__(self, dataset: FaceDataset, keep: int = 8):
        self.dataset, self.keep, self._free = dataset, keep, []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices) -> np.ndarray:
        shape = (len(indices), 3, SIZE, SIZE)
        try:
            buf = self._free.pop()  # atomic: finalizers append from other threads
        except IndexError:
            buf = None
        if buf is None or buf.shape != shape:  # (a last, smaller batch's buffer is simply dropped)
            buf = np.empty(shape, np.float32)
        view = self.dataset.get_batch(indices, out=buf)[...]  # [...]: a new array object over the same memory
        weakref.finalize(view, self._give_back, buf)
        return view

    def _give_back(self, buf: np.ndarray) -> None:
        if len(self._free) < self.keep:
            self._free.append(buf)


def _shared(items: list) -> list:
    return [paddle.Tensor(value=items[0], place=paddle.CPUPlace(), zero_copy=True)]


def _first(items: list) -> list:
    return [items[0]]  # worker processes: the DataLoader copies it into shared memory


class FaceLoader:
    """A paddle.io.DataLoader over a FaceDataset with a seeded, resumable batch order (see the module docstring)."""

    def __init__(self, dataset: FaceDataset, sampler: SeededBatchSampler, num_workers: int = 0):
        self.dataset, self.batch_sampler = dataset, sampler
        self._batches = _WholeBatches(sampler)
        if num_workers == 0:
            self.dataloader = paddle.io.DataLoader(_Pooled(dataset), batch_sampler=self._batches, collate_fn=_shared)
        else:
            self.dataloader = paddle.io.DataLoader(
                dataset, batch_sampler=self._batches, collate_fn=_first, num_workers=num_workers
            )

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
        self._batches.start = start_batch
        try:
            return iter(self.dataloader)  # takes the sampler's batch list now
        finally:
            self._batches.start = 0


class DeviceLoader:
    """The batches of a FaceLoader over a packed set, gathered from a copy of the whole uint8 set in device memory.

    Same API as FaceLoader (len, set_epoch, iter_from, dataset) and the same batches bit for bit: the index lists
    come from the loader's own sampler, and the conversion is the same float32 x / 127.5 - 1 (IEEE division,
    correctly rounded on either side). Per epoch, one upload of the index table; per batch, nothing crosses.
    """

    def __init__(self, loader: FaceLoader, place: str | None = None):
        if loader.dataset._array is None and loader.dataset._source is None:
            loader.dataset._array = open_packed(loader.dataset.path)
        if loader.dataset._array is None:
            raise UserError(
                f"{loader.dataset.path}: --data-on-device needs a packed .npy (python pretreat.py), not a folder"
            )
        self.dataset, self.batch_sampler, self._loader = loader.dataset, loader.batch_sampler, loader
        self.images = paddle.to_tensor(np.ascontiguousarray(loader.dataset._array), place=place)  # (N, 64, 64, 3) uint8
        self._scale = paddle.to_tensor(np.float32(127.5), place=self.images.place)
        self._one = paddle.to_tensor(np.float32(1.0), place=self.images.place)

    seed, epoch, set_epoch, __len__ = FaceLoader.seed, FaceLoader.epoch, FaceLoader.set_epoch, FaceLoader.__len__

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch: int):
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} is outside 0..{len(self)}")
        batches = self.batch_sampler.epoch_batches()[start_batch:]
        return self._gather(batches) if batches else iter(())

    def _gather(self, batches: list[np.ndarray]):
        last = batches[-1] if len(batches[-1]) != len(batches[0]) else None  # drop_last=False: a shorter last batch
        full = batches[:-1] if last is not None else batches
        table = paddle.to_tensor(np.stack(full), place=self.images.place) if full else None
        for i in range(len(full)):
            yield [self.batch(table[i])]
        if last is not None:
            yield [self.batch(paddle.to_tensor(last, place=self.images.place))]

    def batch(self, indices: paddle.Tensor) -> paddle.Tensor:
        """float32 (B, 3, 64, 64) in [-1, 1] of the images at `indices` (a device tensor)."""
        x = paddle.gather(self.images, indices).transpose([0, 3, 1, 2]).astype("float32")
        return paddle.subtract(paddle.divide(x, self._scale), self._one)


def on_device(loader: FaceLoader, mode: str, device: str) -> tuple[FaceLoader | DeviceLoader, str]:
    """--data-on-device: `loader` itself or a DeviceLoader over the same batches (see plan_on_device), and a note."""
    use, note = plan_on_device(len(loader.dataset), loader.dataset._source is None, mode, device)
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
    """Free bytes of the current GPU as the driver counts them (cudaMemGetInfo, paddle.cuda.mem_get_info in Paddle
    3.x): other processes (a notebook kernel, a desktop) and the CUDA context are already taken off. The memory Paddle
    reserved but holds no tensor in is added back: its allocator reuses it. Paddle builds without mem_get_info:
    total - reserved (an overestimate: it ignores other processes)."""
    dev = paddle.device.get_device()
    reserved = int(paddle.device.cuda.memory_reserved(dev))
    mem_get_info = getattr(getattr(paddle, "cuda", None), "mem_get_info", None)
    if mem_get_info is not None:
        free, _total = mem_get_info(dev)
        return int(free) + reserved - int(paddle.device.cuda.memory_allocated(dev))
    return int(paddle.device.cuda.get_device_properties(dev).total_memory) - reserved


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
    (images,) = next(iter(loader))
    grid = utils.make_grid(utils.chw_to_hwc(utils.to_uint8(images)))
    utils.save_png(grid, cfg.out)
    print(
        f"dataReader: {images.shape[0]} of {len(loader.dataset)} images from {cfg.data}, "
        f"{list(images.shape)} {images.dtype} in [{float(images.min()):.2f}, {float(images.max()):.2f}] -> {cfg.out}"
    )


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
