"""Train the tutorial's DCGAN on 64x64 faces.

    python train.py                                   # data/celeba64.npy -> output/, 8 epochs, batch 128
    python train.py --data data/demo64.npy --out output/demo --ngf 32 --ndf 32 --batch-size 32 --max-iters 600
    python train.py --resume                          # continue output/checkpoint.pdparams where it stopped
    python -m paddle.distributed.launch --gpus 0,1 train.py ...   # data-parallel (batch size is per GPU)

Each iteration: one D step (a real batch labelled 1 and a detached fake batch labelled 0, one optimizer
step on the summed loss), then --g-steps (2) G steps, each on fresh noise labelled 1.

Writes under --out: checkpoint.pdparams (everything needed to resume, written atomically every epoch and
every --save-every iterations), generator.pdparams (what generator.py needs), samples/epoch_NNN.png
(an 8x8 grid from fixed noise), loss.png, log.csv. From a notebook: `train(TrainConfig(...))`.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import utils  # noqa: F401  (sets CPU thread defaults before paddle loads)
import numpy as np
import paddle
import paddle.distributed as dist
import network  # conv_backend() for the start line

from dataReader import make_loader
from network import Discriminator, Generator, bce_loss, generator_payload
from utils import UserError

CSV_FIELDS = ["epoch", "iteration", "d_loss", "g_loss", "d_real", "d_fake", "img_s"]
HISTORY_KEYS = ["d_loss", "g_loss", "d_real", "d_fake"]
# changing these between a run and its --resume would silently train something else
RESUME_MUST_MATCH = ["data", "batch_size", "nz", "ngf", "ndf", "g_steps", "d_steps", "seed", "ema"]


@dataclass
class TrainConfig:
    data: str = field(default="data/celeba64.npy", metadata={"help": "packed .npy from pretreat.py, or a folder of images"})
    out: str = field(default="output", metadata={"help": "folder for checkpoints, samples, loss.png, log.csv"})
    epochs: int = field(default=8, metadata={"help": "passes over the data"})
    batch_size: int = field(default=128, metadata={"help": "images per batch (per GPU under paddle.distributed.launch)"})
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate, G and D"})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    nz: int = field(default=100, metadata={"help": "size of the latent vector z"})
    ngf: int = field(default=64, metadata={"help": "generator width"})
    ndf: int = field(default=64, metadata={"help": "discriminator width"})
    g_steps: int = field(default=2, metadata={"help": "G optimizer steps per iteration"})
    d_steps: int = field(default=1, metadata={"help": "D optimizer steps per iteration (same real batch, fresh fakes)"})
    seed: int = field(default=1, metadata={"help": "seeds weights, data order and noise"})
    device: str = field(default="auto", metadata={"help": "auto: GPU when Paddle has CUDA and sees one", "choices": ["auto", "cpu", "gpu"]})
    amp: bool = field(default=False, metadata={"help": "float16 mixed precision (GPU only)"})
    ema: float = field(default=0.0, metadata={"help": "decay of an exponential moving average of G's weights, sampled from "
                                                      "when > 0 (e.g. 0.999); 0 = off"})  # fmt: skip
    resume: bool = field(default=False, metadata={"help": "continue from OUT/checkpoint.pdparams"})
    overwrite: bool = field(default=False, metadata={"help": "start afresh even if OUT/checkpoint.pdparams exists"})
    save_every: int = field(default=0, metadata={"help": "also checkpoint every N iterations (0: only each epoch)"})
    sample_every: int = field(default=0, metadata={"help": "also write a sample grid every N iterations (0: only each epoch)"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    max_iters: int = field(default=0, metadata={"help": "stop when the iteration count (across resumes) reaches N; 0: no limit"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


class TrainingDiverged(UserError):
    """A loss became NaN or inf."""


# ---------------------------------------------------------------------------------------------


def pick_device(choice: str) -> str:
    """'gpu' when asked for (or auto and Paddle has CUDA and sees a GPU), else 'cpu'."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise UserError("--device gpu: this Paddle build has no CUDA or sees no GPU (pip install paddlepaddle-gpu; see README)")
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
        self.amp = cfg.amp and device == "gpu"
        self.scalerG, self.scalerD = paddle.amp.GradScaler(enable=self.amp), paddle.amp.GradScaler(enable=self.amp)
        # noise is a pure function of (seed, rank, iteration): a resumed run, on any rank, draws
        # exactly what the uninterrupted run would have; the iteration count is the RNG state
        self.rng = np.random.default_rng([cfg.seed, rank, 0])
        self.fixed_noise = np.random.default_rng([cfg.seed, 2**31]).standard_normal((64, cfg.nz, 1, 1), dtype=np.float32)
        self.iteration, self.epoch = 0, 0
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}

    def noise(self, n: int) -> paddle.Tensor:
        return paddle.to_tensor(self.rng.standard_normal((n, self.cfg.nz, 1, 1), dtype=np.float32))

    def _autocast(self):
        return paddle.amp.auto_cast(enable=self.amp, level="O1", dtype="float16")

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
        return utils.chw_to_hwc(utils.to_uint8(images))

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "optG": self.optG.state_dict(), "optD": self.optD.state_dict(),
            "scalerG": self.scalerG.state_dict(), "scalerD": self.scalerD.state_dict(),
            "epoch": self.epoch, "iteration": self.iteration,
            "fixed_noise": self.fixed_noise, "rng": {"seed": self.cfg.seed, "iteration": self.iteration},
            "config": dataclasses.asdict(self.cfg), "history": self.history,
        }  # fmt: skip

    def load_state_dict(self, ckpt: dict) -> None:
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


# ---------------------------------------------------------------------------------------------


def _check_resume(cfg: TrainConfig, ckpt_path: Path) -> dict | None:
    if not cfg.resume:
        if ckpt_path.exists() and not cfg.overwrite:
            raise UserError(f"{ckpt_path}: a run is already there; pass --resume to continue it, --overwrite to start "
                            "afresh, or choose another --out")  # fmt: skip
        return None
    if not ckpt_path.exists():
        raise UserError(f"{ckpt_path}: no checkpoint to resume from (train without --resume first)")
    try:
        ckpt = paddle.load(str(ckpt_path))
    except Exception as e:
        raise UserError(f"{ckpt_path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "G" not in ckpt:
        raise UserError(f"{ckpt_path}: not a train.py checkpoint")
    saved = ckpt["config"]
    for k in RESUME_MUST_MATCH:
        if saved.get(k) != getattr(cfg, k):
            flag = "--" + k.replace("_", "-")
            raise UserError(f"{ckpt_path}: it was trained with {flag} {saved.get(k)}, not {getattr(cfg, k)}; "
                            f"resume with the same {flag}")  # fmt: skip
    return ckpt


def _validate(cfg: TrainConfig) -> None:
    for name in ["epochs", "batch_size", "nz", "ngf", "ndf"]:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.g_steps < 0 or cfg.d_steps < 0 or cfg.save_every < 0 or cfg.sample_every < 0 or cfg.max_iters < 0:
        raise UserError("--g-steps, --d-steps, --save-every, --sample-every and --max-iters must not be negative")
    if not 0 <= cfg.ema < 1:
        raise UserError("--ema must be in [0, 1)")


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
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pdparams"
    ckpt = _check_resume(cfg, ckpt_path)

    loader = make_loader(cfg.data, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                         num_workers=cfg.num_workers)  # fmt: skip
    nb = len(loader)
    trainer = Trainer(cfg, device, world_size, rank)
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
    total = cfg.epochs * nb if not cfg.max_iters else min(cfg.epochs * nb, cfg.max_iters)

    if main_proc:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        amp_note = " amp=float16" if trainer.amp else (" (--amp ignored: mixed precision is for GPU)" if cfg.amp else "")
        where = f"{world_size} processes, " if world_size > 1 else ""
        print(f"train.py: device {device}{amp_note}, convolutions on {network.conv_backend(device)}, "
              f"{where}{len(loader.dataset)} images in {cfg.data}, {nb} iterations per epoch; "
              f"{'resuming at iteration ' + str(trainer.iteration) if ckpt else 'starting'}; {total} iterations in all -> {out}/",
              flush=True)  # fmt: skip
        write_log_csv(out / "log.csv", trainer.history, nb)
        log_file = open(out / "log.csv", "a", encoding="utf-8", newline="")
        log = csv.writer(log_file)

    def save() -> None:
        if not main_proc:
            return
        utils.atomic_paddle_save(trainer.state_dict(), ckpt_path)
        utils.atomic_paddle_save(trainer.generator_payload(), out / "generator.pdparams")

    def sample(name: str) -> None:
        if main_proc:
            utils.save_png(utils.make_grid(trainer.sample(trainer.fixed_noise), nrow=8), out / "samples" / name)

    from tqdm.auto import tqdm

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
            bar = tqdm(total=nb, initial=first, desc=f"epoch {epoch + 1}/{last_epoch}", unit="it",
                       disable=not (main_proc and cfg.progress), dynamic_ncols=True, leave=keep_bars)  # fmt: skip
            t_last, speed = time.perf_counter(), 0.0
            for batch in loader.iter_from(first):
                real = batch[0] if isinstance(batch, (list, tuple)) else batch
                try:
                    stats = trainer.step(real).numpy()  # the iteration's one host sync
                except (ValueError, RuntimeError, OSError) as e:  # Paddle's BCE kernel refuses a NaN probability
                    if "Illegal input" not in str(e) and "nan" not in str(e).lower():
                        raise
                    raise TrainingDiverged(f"iteration {trainer.iteration + 1}: D's output became NaN (training diverged); "
                                           f"stopped. The last good checkpoint stays in {ckpt_path} (try a lower --lr)") from None
                now = time.perf_counter()
                img_s = real.shape[0] * world_size / (now - t_last)
                t_last = now
                speed = img_s if speed == 0 else 0.9 * speed + 0.1 * img_s
                if not np.all(np.isfinite(stats[:2])):
                    bad = "d_loss" if not np.isfinite(stats[0]) else "g_loss"
                    raise TrainingDiverged(f"iteration {trainer.iteration + 1}: {bad} is {stats[0] if bad == 'd_loss' else stats[1]}; "
                                           f"stopped. The last good checkpoint stays in {ckpt_path} (try a lower --lr)")  # fmt: skip
                trainer.iteration += 1
                for k, v in zip(HISTORY_KEYS, stats, strict=True):
                    trainer.history[k].append(float(v))
                if main_proc:
                    log.writerow([epoch + 1, trainer.iteration, *(f"{v:.6g}" for v in stats), f"{img_s:.1f}"])
                    log_file.flush()
                    bar.set_postfix_str(f"D {stats[0]:.3f} G {stats[1]:.3f} D(x) {stats[2]:.2f} D(G(z)) {stats[3]:.2f} {speed:.1f} img/s",
                                        refresh=False)  # fmt: skip
                    bar.update(1)
                done = trainer.iteration >= total
                if cfg.sample_every and trainer.iteration % cfg.sample_every == 0:
                    sample(f"iter_{trainer.iteration:06d}.png")
                end_of_epoch = trainer.iteration == (epoch + 1) * nb  # saved below, after the epoch's grid
                if not end_of_epoch and (done or (cfg.save_every and trainer.iteration % cfg.save_every == 0)):
                    save()
                if done:
                    break
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
    if main_proc:
        h = trainer.history
        last = f"; last D loss {h['d_loss'][-1]:.3f}, G loss {h['g_loss'][-1]:.3f}" if h["d_loss"] else ""
        print(f"train.py: done, {trainer.iteration} iterations{last}. Faces: python generator.py --ckpt {out / 'generator.pdparams'}")
    return trainer.history


def main(argv: list[str] | None = None) -> None:
    cfg = utils.parse_config(TrainConfig, argv, description=__doc__)
    train(cfg)


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
