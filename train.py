"""Train the tutorial's DCGAN on 64x64 faces.

    python train.py                                   # data/celeba64.npy -> output/, 8 epochs, batch 128
    python train.py --data data/demo64.npy --out output/demo --ngf 32 --ndf 32 --batch-size 32 --max-iters 600
    python train.py --resume                          # continue output/checkpoint.safetensors where it stopped
    python -m paddle.distributed.launch --gpus 0,1 train.py ...   # data-parallel (batch size is per GPU)
    python train.py --check                           # Paddle's build, the device, GPU, AMP support; a short run
    python train.py --amp bf16                        # mixed precision on a GPU (--amp alone: fp16)

Each iteration: one D step (a real batch labelled 1 and a detached fake batch labelled 0, one optimizer
step on the summed loss), then --g-steps (2) G steps, each on fresh noise labelled 1.

Writes under --out: checkpoint.safetensors (everything needed to resume, written atomically every epoch and
every --save-every iterations), generator.safetensors (what generator.py needs), samples/epoch_NNN.png
(an 8x8 grid from fixed noise), loss.png, log.csv; with --visualdl also vdl/ for `visualdl --logdir OUT/vdl`.
From a notebook: `train(TrainConfig(...))`.
A checkpoint.pdparams of an earlier version resumes only with --allow-pickle (a pickle can run code).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import math
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import utils  # noqa: F401  (sets CPU thread defaults before paddle loads)
import numpy as np
import paddle
import paddle.distributed as dist

from dataReader import make_loader, on_device
import network
from faces import make_grid, save_png, to_images
from network import CHECKPOINT_FILE, GENERATOR_FILE, Discriminator, Generator, bce_loss, generator_payload
from utils import UserError

CSV_FIELDS = ["epoch", "iteration", "d_loss", "g_loss", "d_real", "d_fake", "img_s"]
HISTORY_KEYS = ["d_loss", "g_loss", "d_real", "d_fake"]
# changing these between a run and its --resume would silently train something else
RESUME_MUST_MATCH = ["data", "batch_size", "nz", "ngf", "ndf", "g_steps", "d_steps", "seed", "ema"]


@dataclass
class TrainConfig:
    data: str = field(
        default="data/celeba64.npy", metadata={"help": "packed .npy from pretreat.py, or a folder of images"}
    )
    out: str = field(default="output", metadata={"help": "folder for checkpoints, samples, loss.png, log.csv"})
    epochs: int = field(default=8, metadata={"help": "passes over the data"})
    batch_size: int = field(
        default=128, metadata={"help": "images per batch (per GPU under paddle.distributed.launch)"}
    )
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate, G and D"})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    nz: int = field(default=100, metadata={"help": "size of the latent vector z"})
    ngf: int = field(default=64, metadata={"help": "generator width"})
    ndf: int = field(default=64, metadata={"help": "discriminator width"})
    g_steps: int = field(default=2, metadata={"help": "G optimizer steps per iteration"})
    d_steps: int = field(default=1, metadata={"help": "D optimizer steps per iteration (same real batch, fresh fakes)"})
    seed: int = field(default=1, metadata={"help": "seeds weights, data order and noise"})
    device: str = field(
        default="auto",
        metadata={"help": "auto: GPU when Paddle has CUDA and sees one", "choices": ["auto", "cpu", "gpu"]},
    )
    amp: str = field(
        default="off",
        metadata={
            "help": "mixed precision on a GPU: fp16 (also the flag alone) or bf16; CPU runs stay float32",
            "choices": ["off", "fp16", "bf16"],
            "const": "fp16",
        },
    )
    log_every: int = field(
        default=0,
        metadata={
            "help": "fetch the losses from the device every N iterations, in "
            "one transfer (0: 1 on CPU, 20 on GPU); log.csv keeps a row "
            "per iteration"
        },
    )
    data_on_device: str = field(
        default="auto",
        metadata={
            "help": "upload the packed set once and gather each batch on the device (auto: on a GPU when it fits)",
            "choices": ["auto", "on", "off"],
        },
    )
    check: bool = field(
        default=False,
        metadata={
            "help": "print Paddle's build, the device, GPU and AMP support, run a "
            "few iterations of a small model, and exit"
        },
    )
    ema: float = field(
        default=0.0,
        metadata={
            "help": "decay of an exponential moving average of G's weights, sampled from when > 0 (e.g. 0.999); 0 = off"
        },
    )
    resume: bool = field(default=False, metadata={"help": f"continue from OUT/{CHECKPOINT_FILE}"})
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "with --resume, also read an old pickled OUT/checkpoint.pdparams (only your own: it can run code)"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": f"start afresh even if OUT/{CHECKPOINT_FILE} exists"})
    save_every: int = field(default=0, metadata={"help": "also checkpoint every N iterations (0: only each epoch)"})
    sample_every: int = field(
        default=0, metadata={"help": "also write a sample grid every N iterations (0: only each epoch)"}
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    max_iters: int = field(
        default=0, metadata={"help": "stop when the iteration count (across resumes) reaches N; 0: no limit"}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    visualdl: bool = field(
        default=False,
        metadata={"help": "also log scalars and sample grids to OUT/vdl for VisualDL (pip install visualdl)"},
    )


class TrainingDiverged(UserError):
    """A loss became NaN or inf."""


# ---------------------------------------------------------------------------------------------


# -- mixed precision ---------------------------------------------------------------------------

AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
# Level O1 with Paddle's own lists plus conv2d_transpose: the O1 white list (paddle/amp/amp_lists.py) has conv2d
# but not conv2d_transpose, so every layer of G would stay float32. O1 rather than O2 (paddle.amp.decorate): the
# weights, Adam's moments and the checkpoint stay float32 (no master copies); only the listed ops run in low
# precision, and ops on neither list follow their inputs (ReLU, LeakyReLU, tanh).
AMP_WHITE_LIST = ("conv2d", "conv2d_transpose")
# Always float32: BatchNorm (batch statistics), D's sigmoid (probabilities near 0 and 1, which the loss takes the
# log of) and the loss itself (Paddle's BCE has no bfloat16 kernel). Each of these is a real op name (tested).
AMP_BLACK_LIST = ("batch_norm", "sigmoid", "bce_loss")


def amp_mode(amp) -> str:
    """--amp as one of off / fp16 / bf16 (notebooks may still pass amp=True, the old float16 switch)."""
    if amp is True or amp is False:
        return "fp16" if amp else "off"
    if amp not in ("off", "fp16", "bf16"):
        raise UserError(f"--amp must be off, fp16 or bf16, not {amp!r}")
    return amp


def amp_settings(amp, device: str) -> dict | None:
    """The keyword arguments of paddle.amp.auto_cast for --amp on `device`, or None: float32 (off, or a CPU)."""
    mode = amp_mode(amp)
    if mode == "off" or device != "gpu":
        return None
    return {
        "enable": True,
        "dtype": AMP_DTYPES[mode],
        "level": "O1",
        "custom_white_list": list(AMP_WHITE_LIST),
        "custom_black_list": list(AMP_BLACK_LIST),
    }


def uses_grad_scaler(settings: dict | None) -> bool:
    """float16 needs loss scaling (small gradients underflow); bfloat16 has float32's exponent range: no scaler."""
    return settings is not None and settings["dtype"] == "float16"


def amp_support(device: str) -> dict[str, bool]:
    """Which --amp dtypes this device runs, by the rules paddle.amp.auto_cast itself applies (it silently falls back
    to float32 otherwise): float16 needs compute capability 7.0, bfloat16 8.0 and CUDA 11."""
    if device != "gpu":
        return {"fp16": False, "bf16": False}
    from paddle.amp.auto_cast import _is_gpu_bfloat16_supported, _is_gpu_float16_supported

    return {"fp16": bool(_is_gpu_float16_supported()), "bf16": bool(_is_gpu_bfloat16_supported())}


def check_amp(amp, device: str, support: dict[str, bool] | None = None) -> None:
    """A clear error for --amp fp16/bf16 on a GPU that cannot run it (on a CPU --amp is only noted, not an error)."""
    mode = amp_mode(amp)
    if mode == "off" or device != "gpu":
        return
    support = amp_support(device) if support is None else support
    if not support[mode]:
        cap = ".".join(map(str, paddle.device.cuda.get_device_capability()))
        need = "compute capability 8.0 and CUDA 11" if mode == "bf16" else "compute capability 7.0"
        alt = "; try --amp fp16" if mode == "bf16" and support["fp16"] else ""
        name = paddle.device.cuda.get_device_name()
        raise UserError(f"--amp {mode}: {name} (compute capability {cap}) cannot run it, it needs {need}{alt}")


def pick_device(choice: str) -> str:
    """'gpu' when asked for (or auto and Paddle has CUDA and sees a GPU), else 'cpu'."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise UserError(
            "--device gpu: this Paddle build has no CUDA or sees no GPU (pip install paddlepaddle-gpu; see README)"
        )
    return "gpu" if choice == "gpu" or (choice == "auto" and has_gpu) else "cpu"


class Trainer:
    """Models, optimizers and one training iteration; `train()` drives it. Notebooks can use it directly."""

    def __init__(self, cfg: TrainConfig, device: str = "cpu", world_size: int = 1, rank: int = 0):
        self.cfg, self.device, self.world_size, self.rank = cfg, device, world_size, rank
        paddle.seed(cfg.seed)
        # parameter names (which key the optimizer state) restart from 0, so a checkpoint loads into a
        # Trainer built anywhere, e.g. a notebook that already built other models
        with paddle.utils.unique_name.guard():
            self.G, self.D = Generator(cfg.nz, cfg.ngf), Discriminator(cfg.ndf)
            self.G_ema = copy.deepcopy(self.G) if cfg.ema > 0 else None
        if self.G_ema is not None:
            self.G_ema.eval()
        self.netG, self.netD = self.G, self.D
        self.D_trainable = [p for p in self.D.parameters() if p.trainable]
        if world_size > 1:
            self.netG, self.netD = paddle.DataParallel(self.G), paddle.DataParallel(self.D)
        self.optG = paddle.optimizer.Adam(cfg.lr, cfg.beta1, cfg.beta2, parameters=self.G.parameters())
        self.optD = paddle.optimizer.Adam(cfg.lr, cfg.beta1, cfg.beta2, parameters=self.D.parameters())
        self.amp = amp_settings(cfg.amp, device)  # auto_cast's arguments, None for float32
        scaled = uses_grad_scaler(self.amp)
        self.scalerG, self.scalerD = paddle.amp.GradScaler(enable=scaled), paddle.amp.GradScaler(enable=scaled)
        # noise is a pure function of (seed, rank, iteration): a resumed run, on any rank, draws
        # exactly what the uninterrupted run would have; the iteration count is the RNG state
        self.rng = np.random.default_rng([cfg.seed, rank, 0])
        self.fixed_noise = np.random.default_rng([cfg.seed, 2**31]).standard_normal(
            (64, cfg.nz, 1, 1), dtype=np.float32
        )
        self._noise: dict[int, paddle.Tensor] = {}  # iteration -> its noise batches, on the device (prefetch_noise)
        self._noise_i = 0
        self.iteration, self.epoch = 0, 0
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}

    def noise(self, n: int) -> paddle.Tensor:
        block = self._noise.get(self.iteration)
        if block is not None and block.shape[1] == n and self._noise_i < block.shape[0]:
            self._noise_i += 1
            return block[self._noise_i - 1]
        return paddle.to_tensor(self.rng.standard_normal((n, self.cfg.nz, 1, 1), dtype=np.float32))

    def prefetch_noise(self, iterations: int, n: int) -> None:
        """Draw the noise of the next `iterations` steps exactly as they would (the same generators, the same calls)
        and send it to the device in one copy: on a GPU each host-to-device copy of a step's noise would otherwise
        wait in line with the kernels queued before it."""
        per, nz, first = self.cfg.d_steps + self.cfg.g_steps, self.cfg.nz, self.iteration
        if per == 0 or iterations < 1:
            return
        # one draw of `per` batches is `per` draws of one batch, in order
        rngs = [np.random.default_rng([self.cfg.seed, self.rank, first + i]) for i in range(iterations)]
        draws = [rng.standard_normal((per, n, nz, 1, 1), dtype=np.float32) for rng in rngs]
        blocks = paddle.to_tensor(np.stack(draws))
        self._noise = {first + i: blocks[i] for i in range(iterations)}

    def _autocast(self):
        return paddle.amp.auto_cast(**self.amp) if self.amp else contextlib.nullcontext()

    def _update(self, loss: paddle.Tensor, opt, scaler) -> None:
        opt.clear_grad(set_to_zero=False)
        scaler.scale(loss).backward()
        with paddle.utils.unique_name.guard():  # Adam names its moments at the first step: keep them run-independent
            scaler.step(opt)
        scaler.update()

    def _freeze_D(self, frozen: bool) -> None:
        for p in self.D_trainable:  # (a Paddle parameter's `trainable` is `not stop_gradient`: kept from __init__)
            p.stop_gradient = frozen

    def step(self, real: paddle.Tensor) -> paddle.Tensor:
        """One iteration; returns [d_loss, g_loss, mean D(x), mean D(G(z))] as one tensor (a single
        host transfer for the caller)."""
        cfg, b = self.cfg, real.shape[0]
        self.rng = np.random.default_rng([cfg.seed, self.rank, self.iteration])
        self._noise_i = 0  # the next of this iteration's prefetched noise batches, if any
        for _ in range(cfg.d_steps):
            with self._autocast():
                # no autograd graph through G for D's loss. (Were G put under paddle.jit.to_static, this would
                # have to be .detach(): a program traced under no_grad drops G's BN gradients in later calls.)
                with paddle.no_grad():
                    fake = self.netG(self.noise(b))
                p_real, p_fake = self.netD(real), self.netD(fake)
                loss_d = bce_loss(p_real, 1.0) + bce_loss(p_fake, 0.0)
            self._update(loss_d, self.optD, self.scalerD)
        g_losses = []
        # D frozen in the G steps: no weight gradients for D (optD would clear them unused). The bare D, not
        # its DataParallel wrapper: there are no D gradients to all-reduce.
        self._freeze_D(True)
        try:
            for _ in range(cfg.g_steps):
                with self._autocast():
                    loss_g = bce_loss(self.D(self.netG(self.noise(b))), 1.0)
                self._update(loss_g, self.optG, self.scalerG)
                g_losses.append(loss_g)
        finally:
            self._freeze_D(False)
        if self.G_ema is not None:
            self.update_ema()
        g_loss = paddle.add_n(g_losses) / len(g_losses) if g_losses else paddle.zeros([])
        stats = paddle.stack([loss_d, g_loss, p_real.mean().astype("float32"), p_fake.mean().astype("float32")])
        if self.world_size > 1:  # log the mean over ranks; every rank then sees the same NaN and stops together
            dist.all_reduce(stats)
            stats = stats / self.world_size
        return stats

    @paddle.no_grad()
    def update_ema(self) -> None:
        # warm-up (as TF's ExponentialMovingAverage with num_updates): early on the average follows G
        # closely, so it is not dragged by the untrained start in short runs
        d = min(self.cfg.ema, (1 + self.iteration) / (10 + self.iteration))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            if p.trainable:
                p_ema.set_value(p_ema * d + p * (1.0 - d))
            else:  # BatchNorm running statistics: follow G's
                p_ema.set_value(p)

    @paddle.no_grad()
    def sample(self, z: np.ndarray) -> np.ndarray:
        """uint8 NHWC images from noise, with the sampling generator (EMA when on) in eval mode."""
        G = self.G_ema if self.G_ema is not None else self.G
        was_training = G.training
        G.eval()
        images = G(paddle.to_tensor(z))
        if was_training:
            G.train()
        return to_images(images)

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything --resume needs, as saved in checkpoint.safetensors (utils.save_state: arrays become tensors,
        the rest JSON metadata)."""
        return {
            "format": network.CHECKPOINT_FORMAT,
            "version": network.FORMAT_VERSION,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "optG": self.optG.state_dict(),
            "optD": self.optD.state_dict(),
            "scalerG": self.scalerG.state_dict(),
            "scalerD": self.scalerD.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "fixed_noise": self.fixed_noise,
            "rng": {"seed": self.cfg.seed, "iteration": self.iteration},
            "config": dataclasses.asdict(self.cfg),
            "history": {k: np.asarray(v, np.float64) for k, v in self.history.items()},  # float(float32): exact
        }

    def load_state_dict(self, ckpt: dict, source: str = "checkpoint") -> None:
        """Restore a state_dict() (as read back by network.read_model_file); UserError naming `source` when a part
        is missing or does not fit these models."""
        _check_state(self, ckpt, source)
        self.G.set_state_dict(ckpt["G"])
        self.D.set_state_dict(ckpt["D"])
        if self.G_ema is not None and ckpt.get("G_ema"):
            self.G_ema.set_state_dict(ckpt["G_ema"])
        self.optG.set_state_dict(ckpt["optG"])
        self.optD.set_state_dict(ckpt["optD"])
        if self.amp and ckpt.get("scalerG"):
            self.scalerG.load_state_dict(ckpt["scalerG"])
            self.scalerD.load_state_dict(ckpt["scalerD"])
        self.epoch, self.iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        self.fixed_noise = np.asarray(ckpt["fixed_noise"], dtype=np.float32)
        self.history = {k: list(map(float, ckpt["history"][k])) for k in HISTORY_KEYS}

    def generator_payload(self) -> dict:
        G = self.G_ema if self.G_ema is not None else self.G
        return generator_payload(G)


# ---------------------------------------------------------------------------------------------
# outputs


def write_log_csv(path: Path, history: dict, iters_per_epoch: int, img_s: list[float] | None = None) -> None:
    """Rewrite log.csv from the history (after a resume the rows past the checkpoint are redone)."""
    rows = [",".join(CSV_FIELDS)]
    for i in range(len(history["d_loss"])):
        speed = img_s[i] if img_s and i < len(img_s) else float("nan")
        vals = [history[k][i] for k in HISTORY_KEYS]
        rows.append(f"{i // iters_per_epoch + 1},{i + 1}," + ",".join(f"{v:.6g}" for v in vals) + f",{speed:.1f}")
    utils.atomic_write_text(path, "\n".join(rows) + "\n")


def plot_history(history: dict, path: Path, iters_per_epoch: int) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone, needs no display

    it = np.arange(1, len(history["d_loss"]) + 1)
    fig = Figure(figsize=(10, 7))
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
    for ax in (ax1, ax2):
        for e in range(iters_per_epoch, len(it) + 1, iters_per_epoch):
            ax.axvline(e, color="gray", lw=0.5, ls=":")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
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


# ---------------------------------------------------------------------------------------------


# Adam's state per parameter (names fixed by the unique_name guard in _update); None: the parameter's shape
ADAM_STATE = {"moment1_0": None, "moment2_0": None, "beta1_pow_acc_0": [1], "beta2_pow_acc_0": [1]}


def _check_state(trainer: Trainer, ckpt: dict, source) -> None:
    """Every part of a checkpoint that load_state_dict sets, checked before anything is set: Paddle would skip a
    mismatched weight with a warning, or fail deep inside the first optimizer step."""
    for part in ("optG", "optD", "fixed_noise", "history", "epoch", "iteration"):
        if part not in ckpt:
            raise UserError(f"{source}: not a complete train.py checkpoint (no {part!r})")
    cfg = trainer.cfg
    network.check_weights(source, trainer.G, ckpt.get("G"), "G", f" for nz={cfg.nz}, ngf={cfg.ngf}")
    network.check_weights(source, trainer.D, ckpt.get("D"), "D", f" for ndf={cfg.ndf}")
    if trainer.G_ema is not None and ckpt.get("G_ema"):
        network.check_weights(source, trainer.G_ema, ckpt["G_ema"], "G_ema", f" for nz={cfg.nz}, ngf={cfg.ngf}")
    for name, model in (("optG", trainer.G), ("optD", trainer.D)):
        state = ckpt[name]
        if not isinstance(state, dict):
            raise UserError(f"{source}: {name} is not an optimizer state")
        tensors = {k: v for k, v in state.items() if not isinstance(v, dict)}  # not LR_Scheduler, master_weights
        if not tensors:  # that optimizer never stepped (e.g. --g-steps 0)
            continue
        expected = {
            f"{p.name}_{acc}": list(p.shape) if shape is None else shape
            for p in model.parameters()
            if p.trainable
            for acc, shape in ADAM_STATE.items()
        }
        if set(tensors) != set(expected):
            odd = sorted(set(tensors) ^ set(expected))[0]
            raise UserError(f"{source}: {name} does not fit this model's Adam state ({odd} missing or unknown)")
        for k, shape in expected.items():
            found = list(getattr(tensors[k], "shape", [-1]))
            if found != shape:
                raise UserError(f"{source}: {name} tensor {k} has shape {found}, expected {shape}")
    shape = list(np.shape(ckpt["fixed_noise"]))
    if shape != list(trainer.fixed_noise.shape):
        raise UserError(f"{source}: fixed_noise has shape {shape}, expected {list(trainer.fixed_noise.shape)}")
    history, it, epoch = ckpt["history"], ckpt["iteration"], ckpt["epoch"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (it, epoch)):
        raise UserError(f"{source}: its iteration and epoch ({it!r}, {epoch!r}) are not counts")
    if not isinstance(history, dict) or any(
        not isinstance(history.get(k), (list, np.ndarray)) or np.shape(history[k]) != (it,) for k in HISTORY_KEYS
    ):
        raise UserError(f"{source}: its loss history does not have one entry per iteration ({it})")


def _check_resume(cfg: TrainConfig, ckpt_path: Path) -> tuple[dict | None, Path]:
    """The checkpoint to resume from (None for a fresh run) and the file it came from."""
    old_path = ckpt_path.with_suffix(".pdparams")  # an earlier version's pickled checkpoint
    if not cfg.resume:
        for p in (ckpt_path, old_path):
            if p.exists() and not cfg.overwrite:
                raise UserError(
                    f"{p}: a run is already there; pass --resume to continue it, --overwrite to start "
                    "afresh, or choose another --out"
                )
        return None, ckpt_path
    if not ckpt_path.exists() and old_path.exists():
        ckpt_path = old_path  # refused below unless --allow-pickle
    if not ckpt_path.exists():
        raise UserError(f"{ckpt_path}: no checkpoint to resume from (train without --resume first)")
    kind, ckpt = network.read_model_file(ckpt_path, allow_pickle=cfg.allow_pickle)
    if kind != "checkpoint" or not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{ckpt_path}: not a train.py checkpoint (a {kind} file)")
    saved = ckpt["config"]
    for k in RESUME_MUST_MATCH:
        if saved.get(k) != getattr(cfg, k):
            flag = "--" + k.replace("_", "-")
            raise UserError(
                f"{ckpt_path}: it was trained with {flag} {saved.get(k)}, not {getattr(cfg, k)}; "
                f"resume with the same {flag}"
            )
    return ckpt, ckpt_path


def _validate(cfg: TrainConfig) -> None:
    for name in ["epochs", "batch_size", "nz", "ngf", "ndf"]:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.g_steps < 0 or cfg.d_steps < 0 or cfg.save_every < 0 or cfg.sample_every < 0 or cfg.max_iters < 0:
        raise UserError("--g-steps, --d-steps, --save-every, --sample-every and --max-iters must not be negative")
    if not 0 <= cfg.ema < 1:
        raise UserError("--ema must be in [0, 1)")
    if cfg.log_every < 0:
        raise UserError("--log-every must not be negative (0: chosen by device)")
    amp_mode(cfg.amp)


# On a GPU, Paddle's BCE kernel checks its input inside the kernel (PADDLE_ENFORCE in device code, then a trap), so a
# NaN probability is reported later, at the next host sync, as one of these CUDA errors.
DEVICE_TRAP_MARKS = (
    "Input is expected to be within the interval",
    "unspecified launch failure",
    "illegal instruction",
    "device-side assert",
)


def to_host(stats: list[paddle.Tensor]) -> np.ndarray:
    """The pending iterations' statistics, [n, 4], in one device-to-host transfer."""
    return paddle.stack(stats).numpy()


def log_interval(cfg: TrainConfig, device: str) -> int:
    """--log-every, or by device: on a CPU a fetch costs nothing; on a GPU each one waits for the GPU to go idle."""
    return cfg.log_every or (20 if device == "gpu" else 1)


def train(cfg: TrainConfig) -> dict[str, list[float]]:
    """Train as the config says; returns the loss history {d_loss, g_loss, d_real, d_fake: [per iteration]}."""
    _validate(cfg)
    world_size = dist.get_world_size()
    if world_size > 1:
        dist.init_parallel_env()
    rank = dist.get_rank()
    main_proc = rank == 0
    device = pick_device(cfg.device)
    paddle.set_device(device)
    check_amp(cfg.amp, device)
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT_FILE
    ckpt, ckpt_source = _check_resume(cfg, ckpt_path)
    if cfg.visualdl and main_proc:
        require_visualdl()  # before any work

    loader = make_loader(
        cfg.data, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True, num_workers=cfg.num_workers
    )
    loader, data_note = on_device(loader, cfg.data_on_device, device)
    nb = len(loader)
    trainer = Trainer(cfg, device, world_size, rank)
    if ckpt is not None:
        trainer.load_state_dict(ckpt, ckpt_source)
    total = cfg.epochs * nb if not cfg.max_iters else min(cfg.epochs * nb, cfg.max_iters)

    if main_proc:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        mode = amp_mode(cfg.amp)
        amp_note = f" amp={trainer.amp['dtype']}" if trainer.amp else ""
        if mode != "off" and not trainer.amp:
            amp_note = f" (--amp {mode} ignored: mixed precision is for GPU)"
        where = f"{world_size} processes, " if world_size > 1 else ""
        print(
            f"train.py: device {device}{amp_note}, convolutions on {network.conv_backend(device)}, "
            f"{where}{len(loader.dataset)} images in {cfg.data} ({data_note}), "
            f"{nb} iterations per epoch, losses fetched every {log_interval(cfg, device)}; "
            f"{'resuming at iteration ' + str(trainer.iteration) if ckpt else 'starting'}; {total} "
            f"iterations in all -> {out}/",
            flush=True,
        )
        write_log_csv(out / "log.csv", trainer.history, nb)
        log_file = open(out / "log.csv", "a", encoding="utf-8", newline="")
        log = csv.writer(log_file)
    vdl = VisualDLLog(out / "vdl", trainer.iteration) if cfg.visualdl and main_proc else None

    def save() -> None:
        if not main_proc:
            return
        if vdl:
            vdl.flush()  # the records up to a checkpoint are on disk with it
        utils.save_state(ckpt_path, trainer.state_dict())  # one file each, atomic: no sidecar to keep in step
        utils.save_state(out / GENERATOR_FILE, trainer.generator_payload())

    def sample(name: str) -> None:
        if main_proc:
            grid = make_grid(trainer.sample(trainer.fixed_noise), nrow=8)
            save_png(grid, out / "samples" / name)
            if vdl:
                vdl.add_grid(trainer.iteration, grid)

    from tqdm.auto import tqdm

    # The step's statistics stay on the device; `fetch` brings those of the pending iterations over in one transfer
    # every --log-every iterations (and before any checkpoint or grid), checks them and logs one row per iteration.
    # So a run stops within --log-every iterations of a NaN, and no checkpoint holds an unchecked iteration.
    every = log_interval(cfg, device)
    pending: list[paddle.Tensor] = []
    window = {"t": time.perf_counter(), "images": 0, "speed": 0.0}
    bar = None

    def fetch() -> None:
        if not pending:
            return
        first_it = trainer.iteration - len(pending) + 1
        try:
            values = to_host(pending)  # the one host sync of these iterations
        except (RuntimeError, OSError) as e:  # an error of a kernel queued since the last fetch surfaces here
            if not any(m in str(e) for m in DEVICE_TRAP_MARKS):
                raise
            raise TrainingDiverged(
                f"iterations {first_it}-{trainer.iteration}: the GPU stopped on an error (Paddle's BCE "
                "kernel stops the device when D's output is NaN: training diverged); the last good "
                f"checkpoint stays in {ckpt_path} (try a lower --lr)"
            ) from None
        now = time.perf_counter()
        img_s = window["images"] / max(now - window["t"], 1e-9)  # the window's rate, on every row of it
        window.update(t=now, images=0, speed=img_s if window["speed"] == 0 else 0.9 * window["speed"] + 0.1 * img_s)
        pending.clear()
        for it, stats in enumerate(values, first_it):
            if not np.all(np.isfinite(stats[:2])):
                bad = "d_loss" if not np.isfinite(stats[0]) else "g_loss"
                value = stats[0] if bad == "d_loss" else stats[1]
                raise TrainingDiverged(
                    f"iteration {it}: {bad} is {value}; stopped. The last good checkpoint stays "
                    f"in {ckpt_path} (try a lower --lr)"
                )
            for k, v in zip(HISTORY_KEYS, stats, strict=True):
                trainer.history[k].append(float(v))
            if main_proc:
                log.writerow([(it - 1) // nb + 1, it, *(f"{v:.6g}" for v in stats), f"{img_s:.1f}"])
                if vdl:
                    vdl.add_row(it, [*stats, img_s])
        if main_proc:
            log_file.flush()
            if bar is not None:
                st = values[-1]
                bar.set_postfix_str(
                    f"D {st[0]:.3f} G {st[1]:.3f} D(x) {st[2]:.2f} D(G(z)) {st[3]:.2f} {window['speed']:.1f} img/s",
                    refresh=False,
                )

    start_epoch = trainer.iteration // nb
    last_epoch = math.ceil(total / nb)  # the last epoch this run reaches (--max-iters may stop it early)
    keep_bars = last_epoch - start_epoch <= 20  # many short epochs (a small data set): one bar at a time
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if trainer.iteration >= total:
                break
            trainer.epoch = epoch
            loader.set_epoch(epoch)
            first = trainer.iteration - epoch * nb
            bar = tqdm(
                total=nb,
                initial=first,
                desc=f"epoch {epoch + 1}/{last_epoch}",
                unit="it",
                disable=not (main_proc and cfg.progress),
                dynamic_ncols=True,
                leave=keep_bars,
            )
            window.update(t=time.perf_counter(), images=0)
            for real in loader.iter_from(first):
                if every > 1 and not pending:  # a window starts: its noise in one copy
                    trainer.prefetch_noise(min(every, total - trainer.iteration), real.shape[0])
                try:
                    pending.append(trainer.step(real))
                except (ValueError, RuntimeError, OSError) as e:  # Paddle's BCE kernel refuses a NaN probability
                    if "Illegal input" not in str(e) and "nan" not in str(e).lower():
                        raise
                    fetch()  # the iterations before it: logged, or an earlier NaN named
                    raise TrainingDiverged(
                        f"iteration {trainer.iteration + 1}: D's output became NaN (training diverged); "
                        f"stopped. The last good checkpoint stays in {ckpt_path} (try a lower --lr)"
                    ) from None
                trainer.iteration += 1
                window["images"] += real.shape[0] * world_size
                if len(pending) >= every:
                    fetch()
                if main_proc:
                    bar.update(1)
                done = trainer.iteration >= total
                if cfg.sample_every and trainer.iteration % cfg.sample_every == 0:
                    fetch()
                    sample(f"iter_{trainer.iteration:06d}.png")
                end_of_epoch = trainer.iteration == (epoch + 1) * nb  # saved below, after the epoch's grid
                if not end_of_epoch and (done or (cfg.save_every and trainer.iteration % cfg.save_every == 0)):
                    fetch()  # checked before they go into a checkpoint
                    save()
                if done:
                    break
            fetch()
            bar.close()
            if trainer.iteration == (epoch + 1) * nb:  # a whole epoch: its grid, plot and checkpoint
                trainer.epoch = epoch + 1
                sample(f"epoch_{epoch + 1:03d}.png")
                if main_proc:
                    plot_history(trainer.history, out / "loss.png", nb)
                save()
        if main_proc and trainer.history["d_loss"]:
            if trainer.iteration % nb:  # stopped mid-epoch (--max-iters): still leave a picture of where it got
                sample(f"iter_{trainer.iteration:06d}.png")
            plot_history(trainer.history, out / "loss.png", nb)
    finally:
        if main_proc:
            log_file.close()
        if vdl:
            vdl.close()
    if main_proc:
        h = trainer.history
        last = f"; last D loss {h['d_loss'][-1]:.3f}, G loss {h['g_loss'][-1]:.3f}" if h["d_loss"] else ""
        print(
            f"train.py: done, {trainer.iteration} iterations{last}. "
            f"Faces: python generator.py --ckpt {out / GENERATOR_FILE}"
        )
    return trainer.history


def check(cfg: TrainConfig, iters: int = 5, batch_size: int = 16, width: int = 16) -> bool:
    """`python train.py --check`: what a bug report needs, one line each (Paddle's build, the device train.py picks,
    the GPU, AMP support, the data), then `iters` timed iterations of a small model (ngf = ndf = `width`) on that
    device in the chosen precision. Returns whether the losses came out finite."""
    import platform

    from dataReader import FaceDataset, plan_on_device

    v, cuda = paddle.version, paddle.device.is_compiled_with_cuda()
    build = f"CUDA {v.cuda()}, cuDNN {v.cudnn()}" if cuda else "CPU build"
    print(
        f"paddle: {paddle.__version__} ({build}, commit {v.commit[:10]}); "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    device = pick_device(cfg.device)
    print(f"device: {device} (--device {cfg.device}; GPUs visible: {paddle.device.cuda.device_count() if cuda else 0})")
    paddle.set_device(device)
    if device == "gpu":
        p = paddle.device.cuda.get_device_properties()
        print(f"gpu: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    sup = amp_support(device)
    print(
        "amp: "
        + (
            ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in sup.items())
            if device == "gpu"
            else "none on a CPU (--amp is for GPUs; CPU runs are float32)"
        )
    )
    if Path(cfg.data).exists():
        try:
            ds = FaceDataset(cfg.data)
            print(
                f"data: {cfg.data}, {len(ds)} images; --data-on-device {cfg.data_on_device}: "
                f"{plan_on_device(len(ds), ds.packed, cfg.data_on_device, device)[1]}"
            )
        except UserError as e:
            print(f"data: {e}")
    else:
        print(f"data: {cfg.data} is not there (python pretreat.py makes it)")
    check_amp(cfg.amp, device, sup)
    small = dataclasses.replace(cfg, ngf=width, ndf=width, batch_size=batch_size, ema=0.0)
    trainer = Trainer(small, device)
    real = paddle.uniform([batch_size, 3, 64, 64], min=-1.0, max=1.0, seed=cfg.seed)
    trainer.step(real).numpy()  # warm-up: kernel selection, allocator
    trainer.iteration += 1
    t = time.perf_counter()
    stats = []
    for _ in range(iters):
        stats.append(trainer.step(real))
        trainer.iteration += 1
    values = paddle.stack(stats).numpy()  # one transfer, as train.py's --log-every
    img_s = iters * batch_size / (time.perf_counter() - t)
    finite = bool(np.all(np.isfinite(values)))
    precision = trainer.amp["dtype"] + " autocast" if trainer.amp else "float32"
    print(
        f"run: {iters} iterations, ngf = ndf = {width}, batch {batch_size}, {precision} on {device}: "
        f"{img_s:.1f} img/s; losses {'finite' if finite else 'NOT FINITE'} "
        f"(last D {values[-1, 0]:.3f}, G {values[-1, 1]:.3f})"
    )
    return finite


def main(argv: list[str] | None = None) -> None:
    cfg = utils.parse_config(TrainConfig, argv, description=__doc__)
    if cfg.check:
        if not check(cfg):
            raise UserError(
                "--check: the losses of the small model were not finite (paste the lines above into a bug report)"
            )
        return
    train(cfg)


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
