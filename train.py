"""Train the tutorial's DCGAN on 64x64 faces.

    python train.py                                   # data/celeba64.npy -> output/, 8 epochs, batch 128
    python train.py --data data/demo64.npy --out output/demo --ngf 32 --ndf 32 --batch-size 32 --max-iters 600
    python train.py --resume                          # continue output/checkpoint.safetensors where it stopped
    python -m paddle.distributed.launch --gpus 0,1 train.py ...   # data-parallel (batch size is per GPU)
                                                      # (several machines: docs/distributed.md)
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
import sys
from dataclasses import dataclass
from pathlib import Path

import utils
from utils import UserError, flag, parse_config, run_cli

import numpy as np
import paddle
import paddle.distributed as dist

import device
import faces
import modelfile
import ranks
import runlog
from dataReader import make_loader, on_device
from generator import sample
from modelfile import CHECKPOINT_FILE, GENERATOR_FILE
from network import Discriminator, Generator, bce_logits_loss, bce_loss, conv_backend
from runlog import TrainingDiverged  # noqa: F401  (train.TrainingDiverged: what a diverged run raises)

# changing these between a run and its --resume would silently train something else
RESUME_MUST_MATCH = ["data", "batch_size", "nz", "ngf", "ndf", "g_steps", "d_steps", "seed", "ema"]


@dataclass
class TrainConfig:
    data: str = flag("data/celeba64.npy", "packed .npy from pretreat.py, or a folder of images")
    out: str = flag("output", "folder for checkpoints, samples, loss.png, log.csv")
    epochs: int = flag(8, "passes over the data")
    batch_size: int = flag(128, "images per batch (per GPU under paddle.distributed.launch)")
    lr: float = flag(2e-4, "Adam learning rate, G and D")
    beta1: float = flag(0.5, "Adam beta1")
    beta2: float = flag(0.999, "Adam beta2")
    nz: int = flag(100, "size of the latent vector z")
    ngf: int = flag(64, "generator width")
    ndf: int = flag(64, "discriminator width")
    g_steps: int = flag(2, "G optimizer steps per iteration")
    d_steps: int = flag(1, "D optimizer steps per iteration (same real batch, fresh fakes)")
    seed: int = flag(1, "seeds weights, data order and noise")
    device: str = flag("auto", "auto: GPU when Paddle has CUDA and sees one", choices=["auto", "cpu", "gpu"])
    amp: str = flag("off", "mixed precision on a GPU: fp16 (also the flag alone) or bf16; CPU runs stay float32",
                    choices=["off", "fp16", "bf16"], const="fp16")  # fmt: skip
    log_every: int = flag(0, "fetch the losses from the device every N iterations, in one transfer (0: 1 on CPU, 20 "
                          "on GPU); log.csv keeps a row per iteration")  # fmt: skip
    data_on_device: str = flag("auto", "upload the packed set once and gather each batch on the device (auto: on a "
                               "GPU when it fits)", choices=["auto", "on", "off"])  # fmt: skip
    check: bool = flag(False, "print Paddle's build, the device, GPU and AMP support, run a few iterations of a small "
                       "model, and exit")  # fmt: skip
    ema: float = flag(0.0, "decay of an exponential moving average of G's weights, sampled from when > 0 (e.g. "
                      "0.999); 0 = off")  # fmt: skip
    resume: bool = flag(False, f"continue from OUT/{CHECKPOINT_FILE}")
    allow_pickle: bool = flag(False, "with --resume, also read an old pickled OUT/checkpoint.pdparams (only your "
                              "own: it can run code)")  # fmt: skip
    overwrite: bool = flag(False, f"start afresh even if OUT/{CHECKPOINT_FILE} exists")
    save_every: int = flag(0, "also checkpoint every N iterations (0: only each epoch)")
    sample_every: int = flag(0, "also write a sample grid every N iterations (0: only each epoch)")
    epoch_grids: bool = flag(True, "a sample grid at each epoch's end (--no-epoch-grids: --sample-every's, the last)")
    num_workers: int = flag(0, "DataLoader worker processes")
    max_iters: int = flag(0, "stop when the iteration count (across resumes) reaches N; 0: no limit")
    progress: bool = flag(True, "show a progress bar")
    deterministic: bool = flag(True, "on a GPU, deterministic cuDNN algorithms: the same bits run to run and across "
                               "--resume and --log-every (--no-deterministic: cuDNN's fastest pick; see "
                               "docs/performance.md)")  # fmt: skip
    visualdl: bool = flag(False, "also log scalars and sample grids to OUT/vdl for VisualDL (pip install visualdl)")
    peer_timeout: float = flag(25.0, "under paddle.distributed.launch, stop the job with a message when no iteration "
                               "ends for this many seconds (another process died or hangs; gloo itself aborts after "
                               "30 s without one)")  # fmt: skip


class Trainer:
    """Models, optimizers and one training iteration; `train()` drives it. Notebooks can use it directly."""

    def __init__(self, cfg: TrainConfig, where: str = "cpu", world_size: int = 1, rank: int = 0):
        self.cfg, self.device, self.world_size, self.rank = cfg, where, world_size, rank
        paddle.seed(cfg.seed)
        self.G, self.D = Generator(cfg.nz, cfg.ngf), Discriminator(cfg.ndf)
        self.G_ema = copy.deepcopy(self.G) if cfg.ema > 0 else None  # the average of G's weights, sampled from
        if self.G_ema is not None:
            self.G_ema.eval()
        if world_size > 1:  # under the launcher: rank 0's weights, gradients averaged in _update (ranks.py)
            ranks.broadcast_weights(self.G, self.D)
        self.D_trainable = modelfile.trainable(self.D)
        self.optG = paddle.optimizer.Adam(cfg.lr, cfg.beta1, cfg.beta2, parameters=self.G.parameters())
        self.optD = paddle.optimizer.Adam(cfg.lr, cfg.beta1, cfg.beta2, parameters=self.D.parameters())
        self.amp = device.amp_settings(cfg.amp, where)  # auto_cast's arguments, None for float32
        scaled = device.uses_grad_scaler(self.amp)
        self.scalerG, self.scalerD = device.GradScaler(enable=scaled), device.GradScaler(enable=scaled)
        # On a GPU the loss is computed from D's logits (binary_cross_entropy_with_logits): Paddle's GPU BCE kernel
        # checks its probabilities in device code, so a NaN from D would stop the device, and the error would surface
        # as a CUDA error somewhere later; from logits a NaN flows into the statistics, which every rank receives
        # (all_reduce) and checks at the same fetch. The CPU keeps BCE on probabilities: same values within float
        # rounding (tested), but not the same bits, and CPU runs are bit-reproducible (tests/test_golden.py).
        self.from_logits = where != "cpu"
        self.fixed_noise = np.random.default_rng([cfg.seed, 2**31]).standard_normal((64, cfg.nz, 1, 1), np.float32)
        self.iteration = self.saved_iteration = 0  # saved_iteration: the checkpoint's, when one was written or read
        self.history: dict[str, list[float]] = {k: [] for k in runlog.HISTORY_KEYS}

    def noise(self, n: int, first: int | None = None, count: int = 1) -> paddle.Tensor:
        """The noise of iterations first, ..., first + count - 1 (default: this one), one tensor
        [count, d_steps + g_steps, n, nz, 1, 1]. A pure function of (seed, rank, iteration): a resumed run, on any
        rank, draws what the uninterrupted run would have. One host-to-device copy for a whole log window: on a GPU
        each copy waits in line behind the kernels queued before it."""
        first = self.iteration if first is None else first
        shape = (self.cfg.d_steps + self.cfg.g_steps, n, self.cfg.nz, 1, 1)
        draws = [np.random.default_rng([self.cfg.seed, self.rank, i]).standard_normal(shape, np.float32) for i in
                 range(first, first + count)]  # fmt: skip
        return paddle.to_tensor(np.stack(draws))

    def step(self, real: paddle.Tensor, noise: paddle.Tensor | None = None) -> paddle.Tensor:
        """One iteration on a real batch [B, 3, 64, 64] and its noise [d_steps + g_steps, B, nz, 1, 1] (default:
        this iteration's); returns [d_loss, g_loss, mean D(x), mean D(G(z))], still on the device."""
        cfg = self.cfg
        z = self.noise(real.shape[0])[0] if noise is None else noise
        for i in range(cfg.d_steps):
            with self._autocast():
                # no autograd graph through G for D's loss. (Were G put under paddle.jit.to_static, this would
                # have to be .detach(): a program traced under no_grad drops G's BN gradients in later calls.)
                with paddle.no_grad():
                    fake = self.G(z[i])
                p_real, p_fake = self._D(real), self._D(fake)
                loss_d = self._loss(p_real, 1.0) + self._loss(p_fake, 0.0)
            self._update(loss_d, self.optD, self.scalerD)
        # D frozen in the G steps: no weight gradients for D (optD would clear them unused)
        g_losses = []
        self._freeze_D(True)
        try:
            for i in range(cfg.d_steps, cfg.d_steps + cfg.g_steps):
                with self._autocast():
                    loss_g = self._loss(self._D(self.G(z[i])), 1.0)
                self._update(loss_g, self.optG, self.scalerG)
                g_losses.append(loss_g)
        finally:
            self._freeze_D(False)
        if self.G_ema is not None:
            self.update_ema()
        g_loss = paddle.add_n(g_losses) / len(g_losses) if g_losses else paddle.zeros([])
        stats = paddle.stack([loss_d, g_loss, self._mean_prob(p_real), self._mean_prob(p_fake)])
        if self.world_size > 1:  # log the mean over ranks; every rank then sees the same NaN and stops together
            dist.all_reduce(stats)
            stats = stats / self.world_size
        return stats

    def _D(self, x: paddle.Tensor) -> paddle.Tensor:
        """D's output [B]: logits on a GPU, probabilities on a CPU (see from_logits)."""
        return self.D(x, logits=True) if self.from_logits else self.D(x)

    def _loss(self, out: paddle.Tensor, label: float) -> paddle.Tensor:
        return bce_logits_loss(out, label) if self.from_logits else bce_loss(out, label)

    def _mean_prob(self, out: paddle.Tensor) -> paddle.Tensor:
        """Mean D output as a probability (the log's D(x), D(G(z)))."""
        out = out.astype("float32")
        return (paddle.nn.functional.sigmoid(out) if self.from_logits else out).mean()

    def _autocast(self):
        return paddle.amp.auto_cast(**self.amp) if self.amp else contextlib.nullcontext()

    def _update(self, loss: paddle.Tensor, opt, scaler) -> None:
        opt.clear_grad(set_to_zero=False)
        scaler.scale(loss).backward()
        if self.world_size > 1:
            ranks.average_grads((self.G if opt is self.optG else self.D).parameters(), self.world_size)
        scaler.step(opt)
        scaler.update()

    def _freeze_D(self, frozen: bool) -> None:
        for p in self.D_trainable:  # (a Paddle parameter's `trainable` is `not stop_gradient`: kept from __init__)
            p.stop_gradient = frozen

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

    @property
    def G_sampled(self) -> Generator:
        """The generator the grids and generator.safetensors show: the average when --ema is on."""
        return self.G_ema if self.G_ema is not None else self.G


def resume_state(cfg: TrainConfig, ckpt_path: Path) -> tuple[dict | None, Path]:
    """The checkpoint to resume from (None for a fresh run) and its file; UserError when --resume and the folder
    disagree."""
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
        ckpt_path = old_path  # refused unless --allow-pickle
    if not ckpt_path.exists():
        raise UserError(f"{ckpt_path}: no checkpoint to resume from (train without --resume first)")
    ckpt = modelfile.read_checkpoint(ckpt_path, allow_pickle=cfg.allow_pickle)
    for k in RESUME_MUST_MATCH:
        saved = ckpt["config"].get(k)
        if saved != getattr(cfg, k):
            flag = "--" + k.replace("_", "-")
            raise UserError(
                f"{ckpt_path}: it was trained with {flag} {saved}, not {getattr(cfg, k)}; resume with the same {flag}"
            )
    return ckpt, ckpt_path


def validate(cfg: TrainConfig) -> None:
    for name in ["epochs", "batch_size", "nz", "ngf", "ndf"]:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.g_steps < 0 or cfg.d_steps < 0 or cfg.save_every < 0 or cfg.sample_every < 0 or cfg.max_iters < 0:
        raise UserError("--g-steps, --d-steps, --save-every, --sample-every and --max-iters must not be negative")
    if not 0 <= cfg.ema < 1:
        raise UserError("--ema must be in [0, 1)")
    if not cfg.peer_timeout > 0:
        raise UserError(f"--peer-timeout must be a positive number of seconds, got {cfg.peer_timeout}")
    if cfg.log_every < 0:
        raise UserError("--log-every must not be negative (0: chosen by device)")
    if cfg.num_workers < 0:
        raise UserError(f"--num-workers must not be negative, got {cfg.num_workers}")
    utils.check_out_path(cfg.out, "--out", folder=True)
    device.amp_mode(cfg.amp)


def setup(cfg: TrainConfig) -> tuple[str, int, int, str]:
    """Check the flags, pick the device, join the launcher's process group with the backend of that device, set the
    device's flags: (device, rank, world size, what the start line says about the device's settings)."""
    validate(cfg)
    where, rank, world_size, note = device.start(cfg.device, cfg.amp, cfg.deterministic)
    if cfg.visualdl and rank == 0:
        runlog.require_visualdl()  # before any work
    return where, rank, world_size, note


def remove_stale_temps(out: Path) -> None:
    """Temporary files of writes a killed run left behind (utils.atomic_path's names only), before this run writes."""
    removed = [f"{d / name}" for d in (out, out / "samples", out / "vdl") for name in utils.remove_stale_temps(d)]
    if removed:
        print(f"train.py: removed {len(removed)} temporary file(s) of an interrupted run: {', '.join(removed)}")


def save(trainer: Trainer, log: runlog.RunLog, out: Path, per_epoch: int) -> None:
    """The checkpoint and the generator file (rank 0), after every pending iteration was checked."""
    log.flush()
    if trainer.rank == 0:
        log.sync_vdl()
        modelfile.save_checkpoint(out / CHECKPOINT_FILE, trainer, trainer.iteration // per_epoch)
        modelfile.save_generator(out / GENERATOR_FILE, trainer.G_sampled)
    trainer.saved_iteration = trainer.iteration


def grid(trainer: Trainer, log: runlog.RunLog, name: str) -> None:
    """A sample grid of the fixed noise (rank 0), after every pending iteration was checked."""
    log.flush()
    if trainer.rank == 0:
        log.grid(faces.make_grid(sample(trainer.G_sampled, trainer.fixed_noise), nrow=8), name, trainer.iteration)


def loop(cfg: TrainConfig, trainer: Trainer, loader, log: runlog.RunLog, out: Path, total: int, every: int,
         watch: ranks.PeerWatch | None) -> None:  # fmt: skip
    """Iterations until `total`, with the grids, plots and checkpoints on their schedule."""
    per_epoch, world_size = len(loader), trainer.world_size
    batches = None
    while trainer.iteration < total:
        it = trainer.iteration
        if batches is None:  # an epoch starts (or the run resumes inside one)
            loader.set_epoch(it // per_epoch)
            batches = loader.iter_from(it % per_epoch)
        # the one place a diverged run or a stopped GPU is recognised, wherever it surfaces: in the step, at a
        # fetch, or in a grid or checkpoint
        with log.watch():
            real = next(batches)
            if not log.pending:  # a log window starts: its noise in one copy
                noise, window_start = trainer.noise(real.shape[0], it, min(every, total - it)), it
            log.record(trainer.step(real, noise[it - window_start]), real.shape[0] * world_size)
            trainer.iteration = it = it + 1
            if watch:
                watch.beat()
            if (cfg.sample_every and it % cfg.sample_every == 0) or (it == total and not cfg.epoch_grids):
                grid(trainer, log, f"iter_{it:06d}.png")
            if it % per_epoch == 0:  # a whole epoch: its grid, plot and checkpoint
                batches = None
                if cfg.epoch_grids:
                    grid(trainer, log, f"epoch_{it // per_epoch:03d}.png")
                log.plot(force=it == total)
                save(trainer, log, out, per_epoch)
            elif it == total or (cfg.save_every and it % cfg.save_every == 0):
                save(trainer, log, out, per_epoch)
        if watch:  # the time rank 0 took to write files is not an iteration's
            watch.beat(iteration_ended=False)
    if trainer.iteration % per_epoch and log.done:  # stopped mid-epoch (--max-iters): a picture of where it got
        if cfg.epoch_grids:  # (without them the loop drew the last iteration's)
            grid(trainer, log, f"iter_{trainer.iteration:06d}.png")
        log.plot(force=True)


def start_line(
    cfg: TrainConfig, trainer: Trainer, loader, data_note: str, every: int, total: int, settings: str = ""
) -> str:
    """train.py's first line; `settings`: what setup() set on the device (cuDNN determinism, TF32)."""
    where, n = trainer.device, trainer.world_size
    return (
        f"train.py: device {where}{device.amp_note(cfg.amp, trainer.amp)}{settings}, convolutions on "
        f"{conv_backend(where)}, "
        f"{f'{n} processes, ' if n > 1 else ''}{len(loader.dataset)} images in {cfg.data} ({data_note}), "
        f"{len(loader)} iterations per epoch, losses fetched every {every}; "
        f"{f'resuming at iteration {trainer.iteration}' if trainer.iteration else 'starting'}; "
        f"{total} iterations in all -> {cfg.out}/"
    )


def train(cfg: TrainConfig) -> dict[str, list[float]]:
    """Train as the config says; returns the loss history {d_loss, g_loss, d_real, d_fake: [per iteration]}."""
    where, rank, world_size, settings = setup(cfg)
    out = Path(cfg.out)
    ckpt, source = resume_state(cfg, out / CHECKPOINT_FILE)
    if rank == 0:
        remove_stale_temps(out)
    loader = make_loader(cfg.data, cfg.batch_size, seed=cfg.seed, drop_last=True, num_workers=cfg.num_workers)
    loader, data_note = on_device(loader, cfg.data_on_device, where)
    per_epoch = len(loader)
    trainer = Trainer(cfg, where, world_size, rank)
    if ckpt is not None:
        modelfile.load_checkpoint(source, ckpt, trainer)
        trainer.saved_iteration = trainer.iteration
    total = min(cfg.epochs * per_epoch, cfg.max_iters or cfg.epochs * per_epoch)
    every = runlog.log_interval(cfg.log_every, where)
    if rank == 0:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        print(start_line(cfg, trainer, loader, data_note, every, total, settings), flush=True)
    log = runlog.RunLog(out if rank == 0 else None, trainer.history, per_epoch, total, every, cfg.progress,
                        cfg.visualdl, out / CHECKPOINT_FILE)  # fmt: skip
    watch = ranks.PeerWatch(trainer, out, cfg.peer_timeout) if world_size > 1 else None
    try:
        with log, watch or contextlib.nullcontext():
            loop(cfg, trainer, loader, log, out, total, every, watch)
    except RuntimeError as e:  # a collective failed: another process of the job is gone
        if world_size == 1 or not ranks.peer_error(e):
            raise
        raise UserError(
            ranks.peer_lost(trainer, out, f"lost contact with another process of the job ({ranks.detail(e)})")
        ) from None
    if rank == 0:
        h = trainer.history
        last = f"; last D loss {h['d_loss'][-1]:.3f}, G loss {h['g_loss'][-1]:.3f}" if h["d_loss"] else ""
        lowered = trainer.scalerD.lowered + trainer.scalerG.lowered
        if lowered:  # Paddle prints each of these; device.GradScaler counts them instead
            last += f"; fp16 loss scale lowered {lowered} times after an overflow (those steps skipped)"
        print(
            f"train.py: done, {trainer.iteration} iterations{last}. "
            f"Faces: python generator.py --ckpt {out / GENERATOR_FILE}"
        )
    return trainer.history


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TrainConfig, argv, description=__doc__)
    if cfg.check:
        validate(cfg)  # the flags as a normal run takes them
        if not device.check(cfg):
            raise UserError(
                "--check: the losses of the small model were not finite (paste the lines above into a bug report)"
            )
        return
    train(cfg)


if __name__ == "__main__":
    sys.exit(run_cli(main))
