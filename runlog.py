"""The run log of train.py: log.csv, the progress bar, VisualDL records, loss.png, and the one check for divergence.

    log = RunLog(out, history, per_epoch=..., total=..., every=...)   # out=None on the ranks that write nothing
    with log.watch():                      # a kernel error meaning "diverged" or a device trap: TrainingDiverged
        log.record(stats, images)          # stats: the step's [d_loss, g_loss, D(x), D(G(z))], still on the device
    log.flush()                            # before a checkpoint or a grid: every recorded iteration checked
    log.close()

The statistics stay on the device until `flush` brings the pending iterations over in one transfer, every `every`
iterations (and before anything is saved), checks them for NaN/inf, and logs one row per iteration.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import struct
import time
from pathlib import Path

import utils
from utils import UserError

import numpy as np
import paddle

import faces

CSV_FIELDS = ["epoch", "iteration", "d_loss", "g_loss", "d_real", "d_fake", "img_s"]
HISTORY_KEYS = ["d_loss", "g_loss", "d_real", "d_fake"]
# What a diverged run's kernels say on a CPU: Paddle's BCE kernel refuses a NaN probability at once.
DIVERGENCE_MARKS = ("Illegal input", "Input is expected to be within the interval")
# What a GPU says when a kernel stopped it (a NaN reaching a kernel that checks its input in device code, an
# out-of-range index, a fault): the CUDA context is dead, and the error surfaces at the next checked CUDA call --
# inside the step (fp16: the GradScaler's found_inf read; float32: a cuDNN call of the same iteration's backward) or
# at the next fetch. Paddle's wording: "CUDA error(719), unspecified launch failure", "CUDA error(700), an illegal
# memory access was encountered", CUDNN_STATUS_EXECUTION_FAILED, "device-side assert triggered" (710), ...
DEVICE_TRAP_MARKS = (
    "CUDA error(700)",
    "CUDA error(710)",
    "CUDA error(715)",
    "CUDA error(716)",
    "CUDA error(719)",
    "illegal memory access",
    "unspecified launch failure",
    "device-side assert",
    "illegal instruction",
    "misaligned address",
    "CUDNN_STATUS_EXECUTION_FAILED",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "cudaErrorIllegalAddress",
    "cudaErrorLaunchFailure",
    "cudaErrorAssert",
)


class TrainingDiverged(UserError):
    """A loss became NaN or inf, or the device stopped on a kernel's error."""


def device_trap(error: BaseException) -> str | None:
    """The mark of DEVICE_TRAP_MARKS that `error` carries (the GPU stopped), or None."""
    text = str(error)
    return next((m for m in DEVICE_TRAP_MARKS if m.lower() in text.lower()), None)


def is_divergence(error: BaseException) -> bool:
    """Whether a kernel error means the run cannot go on: a NaN refused by a kernel, or a device trap."""
    text = str(error)
    return (
        any(m in text for m in DIVERGENCE_MARKS)
        or bool(re.search(r"\bnan\b", text.lower()))
        or bool(device_trap(error))
    )


def log_interval(log_every: int, device: str) -> int:
    """--log-every, or by device: on a CPU a fetch costs nothing; on a GPU each one waits for the GPU to go idle."""
    return log_every or (20 if device == "gpu" else 1)


def to_host(stats: list[paddle.Tensor]) -> np.ndarray:
    """The pending iterations' statistics, [n, 4], in one device-to-host transfer."""
    return paddle.stack(stats).numpy()


# loss.png takes ~0.3 s to draw: at most this often (the demo's 200-face epochs last 1.3 s; CelebA's, minutes)
PLOT_EVERY_S = 10.0


class RunLog:
    """The history (in memory), log.csv, the progress bar (one per epoch) and VisualDL of one training run."""

    def __init__(
        self,
        out: Path | None,
        history: dict[str, list[float]],
        per_epoch: int,
        total: int,
        every: int = 1,
        progress: bool = True,
        visualdl: bool = False,
        ckpt_path: Path | str = "the checkpoint",
    ):
        self.out, self.history, self.per_epoch, self.total, self.every = out, history, per_epoch, total, every
        self.progress, self.ckpt_path = progress, ckpt_path
        self.pending: list[paddle.Tensor] = []
        self.images, self.t, self.speed = 0, time.perf_counter(), 0.0
        self.bar, self.csv_file, self.vdl = None, None, None
        self.plotted = -PLOT_EVERY_S  # perf_counter() of the last loss.png
        if out is not None:
            write_log_csv(out / "log.csv", history, per_epoch)  # a resumed run redoes the rows past its checkpoint
            self.csv_file = open(out / "log.csv", "a", encoding="utf-8", newline="")
            self.csv = csv.writer(self.csv_file)
            self.vdl = VisualDLLog(out / "vdl", self.done) if visualdl else None

    @property
    def done(self) -> int:
        """Iterations checked and logged."""
        return len(self.history["d_loss"])

    def record(self, stats: paddle.Tensor, images: int) -> None:
        """One iteration's statistics (on the device); flushed every `every` iterations and at each epoch's end."""
        if self.bar is None:
            self._open_bar()
        self.pending.append(stats)
        self.images += images
        self.bar.update(1)
        it = self.done + len(self.pending)
        if len(self.pending) >= self.every or it % self.per_epoch == 0 or it == self.total:
            self.flush()
        if it % self.per_epoch == 0 or it == self.total:
            self.bar.close()
            self.bar = None

    def flush(self) -> None:
        """Bring the pending statistics over in one transfer, check them, log a row per iteration."""
        if not self.pending:
            return
        first, last = self.done + 1, self.done + len(self.pending)
        try:
            values = to_host(self.pending)  # the one host sync of these iterations
        except (RuntimeError, OSError) as e:  # an error of a kernel queued since the last flush surfaces here
            if not is_divergence(e):
                raise
            raise self._diverged(f"iterations {first}-{last}: {self._cause(e)}") from None
        now = time.perf_counter()
        img_s = self.images / max(now - self.t, 1e-9)  # the window's rate, on every row of it
        self.speed = img_s if self.speed == 0 else 0.9 * self.speed + 0.1 * img_s
        self.t, self.images = now, 0
        self.pending.clear()
        for it, stats in enumerate(values, first):
            if not np.all(np.isfinite(stats[:2])):
                name, value = ("d_loss", stats[0]) if not np.isfinite(stats[0]) else ("g_loss", stats[1])
                raise self._diverged(f"iteration {it}: {name} is {value}; stopped.")
            for k, v in zip(HISTORY_KEYS, stats, strict=True):
                self.history[k].append(float(v))
            if self.csv_file:
                self.csv.writerow([(it - 1) // self.per_epoch + 1, it, *(f"{v:.6g}" for v in stats), f"{img_s:.1f}"])
            if self.vdl:
                self.vdl.add_row(it, [*stats, img_s])
        if self.csv_file:
            self.csv_file.flush()
        if self.bar is not None:
            d, g, dx, dgz = values[-1]
            self.bar.set_postfix_str(
                f"D {d:.3f} G {g:.3f} D(x) {dx:.2f} D(G(z)) {dgz:.2f} {self.speed:.1f} img/s", False
            )

    @contextlib.contextmanager
    def watch(self):
        """The one place a diverged run is recognised: a kernel that refused a NaN, here or at the next flush."""
        try:
            yield
        except (ValueError, RuntimeError, OSError) as e:
            if not is_divergence(e):
                raise
            failed = self.done + len(self.pending) + 1
            if device_trap(e):  # the device is gone: nothing pending can be fetched any more
                raise self._diverged(f"iteration {failed}: {self._cause(e)}") from None
            self.flush()  # the iterations before it: logged, or an earlier NaN named
            raise self._diverged(f"iteration {failed}: D's output became NaN (training diverged); stopped.") from None

    @staticmethod
    def _cause(e: BaseException) -> str:
        mark = device_trap(e)
        if mark is None:
            return "a kernel refused a NaN (training diverged); stopped."
        return (
            f"the GPU stopped on an error ({mark}): a NaN or inf reaching a kernel that checks its input (training "
            "diverged), or a device fault; stopped, nothing after the last checkpoint saved."
        )

    def _diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(f"{what} The last good checkpoint stays in {self.ckpt_path} (try a lower --lr)")

    def _open_bar(self) -> None:
        from tqdm.auto import tqdm

        it = self.done + len(self.pending)
        epoch, first = divmod(it, self.per_epoch)
        epochs = -(-self.total // self.per_epoch)  # the last epoch this run reaches (--max-iters may stop it early)
        self.bar = tqdm(
            total=self.per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="it",
            disable=not (self.out is not None and self.progress),
            dynamic_ncols=True,
            leave=epochs - it // self.per_epoch <= 20,  # many short epochs (a small data set): one bar at a time
        )

    def grid(self, grid: np.ndarray, name: str, iteration: int) -> None:
        """A sample grid: OUT/samples/NAME and VisualDL's image at `iteration`."""
        if self.out is not None:
            faces.save_png(grid, self.out / "samples" / name)
            if self.vdl:
                self.vdl.add_grid(iteration, grid)

    def plot(self, force: bool = False) -> None:
        """loss.png, redrawn at most every PLOT_EVERY_S seconds unless `force` (the run's last one)."""
        if self.out is not None and self.done and (force or time.perf_counter() - self.plotted >= PLOT_EVERY_S):
            plot_history(self.history, self.out / "loss.png", self.per_epoch)
            self.plotted = time.perf_counter()

    def sync_vdl(self) -> None:
        """VisualDL's records up to a checkpoint are on disk with it."""
        if self.vdl:
            self.vdl.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.csv_file:
            self.csv_file.close()
        if self.vdl:
            self.vdl.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# the files


def write_log_csv(path: Path, history: dict, iters_per_epoch: int, img_s: list[float] | None = None) -> None:
    """Rewrite log.csv from the history (after a resume the rows past the checkpoint are redone)."""
    rows = [",".join(CSV_FIELDS)]
    for i in range(len(history["d_loss"])):
        speed = img_s[i] if img_s and i < len(img_s) else float("nan")
        vals = [history[k][i] for k in HISTORY_KEYS]
        rows.append(f"{i // iters_per_epoch + 1},{i + 1}," + ",".join(f"{v:.6g}" for v in vals) + f",{speed:.1f}")
    utils.atomic_write_text(path, "\n".join(rows) + "\n")


def plot_history(history: dict, path: Path, iters_per_epoch: int) -> None:
    """loss.png: D and G loss per iteration above, D(x) and D(G(z)) below, epochs marked."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone, needs no display

    it = np.arange(1, len(history["d_loss"]) + 1)
    fig = Figure(figsize=(10, 7))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.95, hspace=0.08)  # (tight_layout: 0.1 s a plot)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(it, history["d_loss"], label="D loss", lw=0.8)
    ax1.plot(it, history["g_loss"], label="G loss", lw=0.8)
    ax1.set_ylabel("BCE loss")
    ax1.set_title("Generator and discriminator loss during training")
    ax2.plot(it, history["d_real"], label="D(x)", lw=0.8)
    ax2.plot(it, history["d_fake"], label="D(G(z))", lw=0.8)
    ax2.set_ylabel("mean D output")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("iteration")
    ends = np.arange(iters_per_epoch, len(it) + 1, iters_per_epoch)
    for ax in (ax1, ax2):
        # one collection for all epoch marks: a line each took most of the plot's time over many short epochs
        ax.vlines(ends, 0, 1, transform=ax.get_xaxis_transform(), color="gray", lw=0.5, ls=":")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    with utils.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")


class VisualDLLog:
    """log.csv's scalars and the fixed-noise grids as VisualDL records in OUT/vdl/, at global iterations.

    One record file, appended to by every run of the same --out. On start it keeps only the records up
    to the checkpoint's iteration, so a resumed run continues the same curves and the iterations it redoes
    are not drawn twice. Flushed with every checkpoint.
    """

    FILE = "vdlrecords.train.log"  # a fixed name: VisualDL reads only the last-named record file of a folder
    TAGS = [f"train/{k}" for k in CSV_FIELDS[2:]]  # train/d_loss ... train/img_s
    IMAGE_TAG = "samples/fixed_noise"

    def __init__(self, logdir: Path, keep_until: int):
        LogWriter = require_visualdl()
        keep_records(logdir / self.FILE, keep_until)
        with contextlib.redirect_stdout(io.StringIO()):  # VisualDL prints a note when it appends to a file
            self.writer = LogWriter(logdir=str(logdir), file_name=self.FILE, flush_secs=30)

    def add_row(self, step: int, values) -> None:
        """One iteration's d_loss, g_loss, d_real, d_fake, img_s (log.csv's columns), as host floats."""
        for tag, v in zip(self.TAGS, values, strict=True):
            self.writer.add_scalar(tag, float(v), step)

    def add_grid(self, step: int, grid: np.ndarray) -> None:
        self.writer.add_image(self.IMAGE_TAG, grid, step)  # uint8 HWC

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def require_visualdl():
    try:
        from visualdl import LogWriter
    except ImportError:
        raise UserError("--visualdl needs VisualDL, which is not installed: pip install visualdl") from None
    return LogWriter


def keep_records(path: Path, last_step: int) -> None:
    """Cut a VisualDL record file down to its first meta record and the records of steps <= last_step
    (the file is removed when last_step is 0). Each record: a little-endian uint64 length, then a Record proto."""
    if not path.exists():
        return
    if last_step <= 0:
        path.unlink()
        return
    from google.protobuf.message import DecodeError
    from visualdl.proto.record_pb2 import Record

    data, pos, kept = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        if pos + 8 + n > len(data):
            break  # the tail of a killed run
        try:
            value = Record.FromString(data[pos + 8 : pos + 8 + n]).values[0]
        except (DecodeError, IndexError):
            break  # not a record: keep what came before
        meta = value.WhichOneof("one_value") == "meta_data"
        if (meta and not kept) or (not meta and value.id <= last_step):
            kept.append(data[pos : pos + 8 + n])
        pos += 8 + n
    with utils.atomic_path(path) as tmp:
        Path(tmp).write_bytes(b"".join(kept))
