"""Training speed: train.py's own iteration (`Trainer.step`) against the same DCGAN in PyTorch eager.

Usage:
    python bench/bench_train.py                        # batch 64 and 128, 3 rounds, a Markdown table at the end
    python bench/bench_train.py --quick                # 1 round, fewer iterations (a minute or two)
    python bench/bench_train.py --levers               # + Paddle's speed levers, each alone against the same baseline
    python bench/bench_train.py --batch-sizes 64 --rounds 5 --wait-idle 300
    python bench/bench_train.py --device cpu           # the CPU also on a machine with a GPU
    python bench/bench_train.py --device gpu --batch-sizes 128 --no-torch   # + the GPU table: fp32 / fp16 / bf16,
                                                       # --log-every 20, --data-on-device, all together
    python bench/bench_train.py --ngf 32 --batch-sizes 32 --rounds 5   # the demo's network (ngf = ndf = 32)
    python bench/bench_train.py --batch-sizes 64 --rounds 5 --no-backend-row --fusions none nhwc nhwc,bn,act all
                                                       # + a row per oneDNN fusion setting (DCGAN_ONEDNN_FUSE)

Convolution backend: Paddle runs with train.py's default, the oneDNN convolutions of onednn_conv/ where they are
available; each round also times Paddle with its own convolution kernels (DCGAN_ONEDNN=0), the "Paddle kernels"
columns (--no-backend-row skips them). --fusions adds workers with DCGAN_ONEDNN_FUSE set to each value given
(onednn_conv.FUSIONS: "none" is the oneDNN convolutions alone on NCHW tensors, "all" every fusion; the default row
is onednn_conv.DEFAULT_FUSIONS), alternating with the others in
each round, and a table of them against "none" and PyTorch.

What is timed: one iteration of train.py (1 D step on a real batch and a detached fake batch, 2 G steps on fresh
noise; Adam 2e-4 (0.5, 0.999); BCE; BatchNorm momentum 0.5), through `Trainer.step(real).numpy()` exactly as
train.py's loop calls it, with train.py's defaults (device.py's CPU environment), after a warm-up.
The reference is the same network, initialisation, schedule and host transfer written in PyTorch eager
(torch is imported only here; `pip install -r requirements-bench.txt` for a CPU build). Each framework runs in a
subprocess of its own (their OpenMP runtimes and thread settings must not meet), both on all usable cores; the
two alternate within a round and the rounds alternate who goes first. Reported: the median iteration time of
each worker, the median over rounds, img/s, the Paddle / PyTorch ratio, and the share of the machine's matmul
peak each reaches. The peak is a 4096x4096 float32 matmul timed by Paddle in the same worker, same environment.

FLOPs are counted from the layer shapes of network.py (traced, not typed in): a Conv2D costs
2*Cin*Cout*k*k*Hout*Wout per image, a Conv2DTranspose 2*Cin*Cout*k*k*Hin*Win; a backward pass counts twice its
forward. One iteration = D step (G forward, D forward + backward on the real and the fake batch) + each G step
(G forward + backward, D forward + backward), per real image in the batch.

Device: where train.py would train (--device auto: the GPU when Paddle has CUDA and sees one, else the CPU), and
PyTorch on the same kind of device (a CUDA build of torch is needed for the GPU; without one the table shows both
speeds but no ratio). The GPU is timed the same way: the `.numpy()` of each iteration waits for its kernels.
On a GPU (or with --gpu-levers) the lever table is the GPU's: fp32 with batches from host memory and a fetch per
iteration (train.py before --log-every and --data-on-device), then --amp fp16 and bf16 where the GPU runs them,
--log-every 20 (timed per whole window of 20), --data-on-device on, and all of them at once.

Other processes on the machine make timings noisy: each worker reports how much of the CPU others used while
it ran ("others"), and --wait-idle N waits up to N seconds for a quiet machine before each worker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from faces import cores, processor  # noqa: E402  numpy and Pillow only: this parent process imports no paddle

DEFAULT_BATCHES = (64, 128)
PEAK_N = 4096


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (0, 0 where there is none)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / hz, sum(v[:8]) / hz


def wait_idle(limit: float, threshold: float = 0.15) -> float:
    """Wait (at most `limit` s) until others use < threshold of the CPUs over 2 s; returns that share."""
    t_end = time.time() + limit
    while True:
        b0, t0 = cpu_busy()
        time.sleep(2)
        b1, t1 = cpu_busy()
        share = (b1 - b0) / max(t1 - t0, 1e-9)
        if share < threshold or time.time() >= t_end:
            return share


# ---------------------------------------------------------------------------------------------
# the workers (each in its own process)


class Meter:
    """Times a loop and how much CPU other processes took meanwhile."""

    def __enter__(self):
        self.t, (self.b, self.tot) = time.perf_counter(), cpu_busy()
        self.own = time.process_time()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.t
        b, tot = cpu_busy()
        own = time.process_time() - self.own
        self.others = max(0.0, (b - self.b) - own) / max(tot - self.tot, 1e-9)  # share of all CPUs used by others


def conv_layers(G, D, nz: int) -> list[dict]:
    """G's and D's convolutions in call order, traced on one image: net, kind, channels, kernel, stride, padding,
    input and output side, and forward FLOPs per image (2*Cin*Cout*k*k*Hout*Wout, transposed 2*Cin*Cout*k*k*Hin*Win)."""
    import paddle
    import paddle.nn as nn

    layers = []

    def hook(name):
        def f(layer, inputs, output):
            x, t = inputs[0], isinstance(layer, nn.Conv2DTranspose)
            cin, cout, k = x.shape[1], output.shape[1], layer.weight.shape[2:]
            hw = (x.shape[2] * x.shape[3]) if t else (output.shape[2] * output.shape[3])
            pad = layer._padding if isinstance(layer._padding, int) else layer._padding[0]
            layers.append(
                {
                    "net": name,
                    "transpose": t,
                    "cin": cin,
                    "cout": cout,
                    "k": k[0],
                    "stride": layer._stride[0],
                    "padding": pad,
                    "hw": x.shape[2],
                    "out_hw": output.shape[2],
                    "flop": 2 * cin * cout * k[0] * k[1] * hw,
                }
            )

        return f

    handles = [
        layer.register_forward_post_hook(hook(name))
        for name, net in (("G", G), ("D", D))
        for layer in net.sublayers()
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose))
    ]
    was, backend = (G.training, D.training), os.environ.get("DCGAN_ONEDNN")
    G.eval(), D.eval()
    os.environ["DCGAN_ONEDNN"] = "0"  # Paddle's layers: NCHW shapes in the hooks, whatever the fusions
    try:
        with paddle.no_grad():
            D(G(paddle.zeros([1, nz, 1, 1])))
    finally:
        for h in handles:
            h.remove()
        G.train(was[0]), D.train(was[1])
        os.environ.pop("DCGAN_ONEDNN") if backend is None else os.environ.__setitem__("DCGAN_ONEDNN", backend)
    return layers


def flops_per_image(G, D, nz: int, g_steps: int, d_steps: int) -> dict:
    """Forward FLOPs of G and D from their conv layers' traced shapes, and one iteration's total per real image."""
    layers = conv_layers(G, D, nz)
    fg, fd = (sum(x["flop"] for x in layers if x["net"] == n) for n in ("G", "D"))
    per_iter = d_steps * (fg + 2 * 3 * fd) + g_steps * (3 * fg + 3 * fd)
    return {"G_fwd": fg, "D_fwd": fd, "iteration": per_iter}


# The step as train.py had it before issue 6 (fake through G with autograd, then detached; D's weight gradients
# computed in the G steps too, through DataParallel): the --levers table's rows without the new step, and the
# reference tests/test_train.py holds the current step to, bit for bit.
def legacy_step(self, real):
    import paddle

    from network import bce_loss

    cfg, b = self.cfg, real.shape[0]
    z = iter(self.noise(b)[0])  # this iteration's noise batches: D's steps, then G's
    for _ in range(cfg.d_steps):
        fake = self.G(next(z)).detach()
        p_real, p_fake = self.D(real), self.D(fake)
        loss_d = bce_loss(p_real, 1.0) + bce_loss(p_fake, 0.0)
        self._update(loss_d, self.optD, self.scalerD)
    g_losses = []
    for _ in range(cfg.g_steps):
        loss_g = bce_loss(self.D(self.G(next(z))), 1.0)
        self._update(loss_g, self.optG, self.scalerG)
        g_losses.append(loss_g)
    if self.G_ema is not None:
        self.update_ema()
    g_loss = paddle.add_n(g_losses) / len(g_losses)
    return paddle.stack([loss_d, g_loss, p_real.mean(), p_fake.mean()])


BENCH_SET = 4096  # images in the packed set the data levers read from (at most; 16 batches at small batch sizes)


def bench_batches(data: str, batch: int):
    """Batches as train.py gets them: "host" from a packed uint8 set through dataReader's loader (converted on the
    host, then copied to the device), "device" from the same set in device memory (--data-on-device); "fixed"
    (None): one batch already on the device, no data cost (the framework comparison)."""
    if data == "fixed":
        return None
    import tempfile

    import numpy as np

    from dataReader import make_loader, on_device

    path = Path(tempfile.mkdtemp()) / "bench64.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (min(BENCH_SET, 16 * batch), 64, 64, 3), dtype=np.uint8))
    loader = make_loader(path, batch_size=batch, shuffle=True, seed=0)
    if data == "device":
        import paddle

        loader = on_device(loader, "on", paddle.device.get_device())[0]
    assert data in ("host", "device"), data

    def forever():  # as train.py passes them on: the host loader's tensors are copied to the device by the first op
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    return forever()


def gpu_table(support: dict[str, bool]) -> list[tuple[str, str, str, dict]]:
    """The GPU levers, each against fp32 (batches from host memory, stats fetched every iteration, as train.py was):
    fp16 and bf16 where the GPU runs them, --log-every 20, --data-on-device, and the best of them together."""
    base = {"data": "host", "log_every": 1}
    rows = [("fp32", "", "float32; batches from host memory; stats fetched every iteration", dict(base))]
    rows += [(m, "fp32", f"--amp {m}", {**base, "amp": m}) for m in ("fp16", "bf16") if support.get(m)]
    rows += [
        ("log-every", "fp32", "--log-every 20 (one transfer per 20 iterations)", {**base, "log_every": 20}),
        ("on-device", "fp32", "--data-on-device on (batches gathered in device memory)", {**base, "data": "device"}),
    ]
    best = "bf16" if support.get("bf16") else "fp16" if support.get("fp16") else None
    both = {"data": "device", "log_every": 20, **({"amp": best} if best else {})}
    amp = f"--amp {best} + " if best else ""
    rows.append(("gpu-all", "fp32", f"{amp}--log-every 20 + --data-on-device on", both))
    return rows


def paddle_peak(paddle, reps: int = 3) -> float:
    a, b = paddle.randn([PEAK_N, PEAK_N]), paddle.randn([PEAK_N, PEAK_N])
    float(paddle.matmul(a, b)[0, 0])
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        float(paddle.matmul(a, b)[0, 0])
        best = max(best, 2 * PEAK_N**3 / (time.perf_counter() - t) / 1e9)
    return best


ENV_SHOWN = ("MKL_NUM_THREADS", "OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "FLAGS_use_onednn")


def time_iterations(one, warmup: int, iters: int, drain=lambda: 0.0) -> tuple[float, list[float], float]:
    """Both workers' timing loop: `one()` runs an iteration and returns its seconds, `drain()` waits for what the
    iterations left pending (Paddle's window of stats) and returns its seconds. The first iteration, the rest of the
    warm-up, then `iters` timed ones; returns (first, times, share of the CPUs others used meanwhile)."""
    first = one()
    for _ in range(warmup - 1):
        one()
    drain()  # the warm-up's last window: the timed iterations start on an idle device
    with Meter() as m:
        times = [one() for _ in range(iters)]
        tail = drain()
        if tail:  # the last (partial) window's fetch waits for the timed iterations' kernels: theirs
            times[-1] += tail
    return first, times, m.others


def timing_result(
    framework: str,
    version: str,
    device: str,
    batch: int,
    first: float,
    times: list[float],
    others: float,
    build: float | None = None,
) -> dict:
    """The fields both workers report (median iteration, img/s, the first iteration's extra time); `build` is the
    Trainer's construction time, where there is one."""
    med = sorted(times)[len(times) // 2]
    res = {
        "framework": framework,
        "version": version,
        "device": device,
        "batch": batch,
        "times": times,
        "median": med,
        "img_s": batch / med,
        "first": first,
    }
    if build is not None:
        res["build"] = build
    return {**res, "startup": first - med, "others": others}


def paddle_env(lever: dict) -> None:
    """train.py's CPU environment (device.py's defaults), less the lever's "unset" variables, before MKL loads (on
    the first computation: removing them after `import paddle` still takes effect)."""
    import device  # noqa: F401  train.py's CPU environment (network.py imports it in train.py)

    for k in lever.get("unset", []):  # defaults device.py just set, removed again before MKL loads
        os.environ.pop(k, None)


def import_train():
    """train.py, imported after paddle_env."""
    try:
        import train
    except ModuleNotFoundError as e:  # a tree without dataReader.py yet: the Trainer does not need it
        if e.name != "dataReader":
            raise
        import types

        sys.modules["dataReader"] = types.SimpleNamespace(make_loader=None)
        import train
    return train


def build_trainer(train, args, lever: dict, device: str):
    """train.py's Trainer as the lever has it (the old step, to_static forwards); returns it and its build time."""
    import paddle

    cfg = train.TrainConfig(batch_size=args.batch, ngf=args.ngf, ndf=args.ngf, amp=lever.get("amp", "off"))
    t0 = time.perf_counter()
    trainer = train.Trainer(cfg, device)
    t_build = time.perf_counter() - t0
    if lever.get("legacy_step"):
        import types

        trainer.step = types.MethodType(legacy_step, trainer)
    if lever.get("to_static"):  # the forwards as static graphs (the legacy step's use of G and D is consistent)
        paddle.jit.to_static(trainer.G, full_graph=True)
        paddle.jit.to_static(trainer.D, full_graph=True)
    return trainer, t_build


def paddle_iteration(trainer, batches, real, every: int):
    """(one, drain) for time_iterations: train.py's loop around `Trainer.step`, its stats fetched every `every`."""
    import numpy as np
    import paddle

    pending = []

    def fetch():
        stats = paddle.stack(pending).numpy()
        pending.clear()
        assert np.all(np.isfinite(stats)), stats

    def one():  # as train.py's loop: the stats of `every` iterations come over in one transfer
        t = time.perf_counter()
        pending.append(trainer.step(next(batches) if batches else real))
        trainer.iteration += 1
        if len(pending) >= every:
            fetch()
        return time.perf_counter() - t

    def drain():
        if not pending:
            return 0.0
        t = time.perf_counter()
        fetch()
        return time.perf_counter() - t

    return one, drain


def worker_paddle(args) -> dict:
    lever = json.loads(args.lever or "{}")  # its "env" is already in this process's environment (run_worker)
    paddle_env(lever)
    import numpy as np
    import paddle

    train = import_train()
    from device import amp_support, pick_device

    device = pick_device(args.device)  # train.py's own choice: the GPU when Paddle has CUDA and sees one
    paddle.set_device(device)
    trainer, t_build = build_trainer(train, args, lever, device)
    cfg = trainer.cfg
    flops = flops_per_image(trainer.G, trainer.D, cfg.nz, cfg.g_steps, cfg.d_steps)
    real = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 64, 64)).astype(np.float32))
    every, data = int(lever.get("log_every", 1)), lever.get("data", "fixed")
    one, drain = paddle_iteration(trainer, bench_batches(data, args.batch), real, every)
    first, times, others = time_iterations(one, args.warmup, args.iters, drain)
    if every > 1:  # a fetch every N iterations: only the mean over the windows means anything
        times = [sum(times) / len(times)] * len(times)
    peak = paddle_peak(paddle)
    res = timing_result("paddle", paddle.__version__, device, args.batch, first, times, others, build=t_build)
    res.update(
        flops=flops,
        peak_gflops=peak,
        amp_support=amp_support(device),
        amp=trainer.amp,
        conv_backend=sys.modules["network"].conv_backend(device),
        env={k: os.environ.get(k) for k in ENV_SHOWN},
    )
    return res


def torch_dcgan(nz: int, ngf: int, ndf: int):
    """G and D of network.py in PyTorch, initialised the same way."""
    import torch.nn as nn

    bn = lambda c: nn.BatchNorm2d(c, momentum=0.5)  # noqa: E731  running = 0.5 running + 0.5 batch, as Paddle's 0.5
    G = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        bn(ngf * 8),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        bn(ngf * 4),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        bn(ngf * 2),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        bn(ngf),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    D = nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        bn(ndf * 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        bn(ndf * 4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        bn(ndf * 8),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
        nn.Flatten(0),
    )
    for m in [*G.modules(), *D.modules()]:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return G, D


def torch_step(G, D, real, nz: int, dev, seed: int = 1):
    """train.py's iteration in PyTorch: step(it) runs 1 D step and 2 G steps on iteration `it`'s noise and returns
    the stats (loss_d, loss_g, D(real), D(fake)) on the device."""
    import numpy as np
    import torch
    import torch.nn as nn

    b = real.shape[0]
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()

    def step(it):
        rng = np.random.default_rng([seed, 0, it])
        noise = lambda: torch.from_numpy(rng.standard_normal((b, nz, 1, 1), dtype=np.float32)).to(dev)  # noqa: E731
        fake = G(noise()).detach()
        p_real, p_fake = D(real), D(fake)
        loss_d = bce(p_real, torch.full_like(p_real, 1.0)) + bce(p_fake, torch.full_like(p_fake, 0.0))
        optD.zero_grad()
        loss_d.backward()
        optD.step()
        g_losses = []
        for _ in range(2):
            p = D(G(noise()))
            loss_g = bce(p, torch.full_like(p, 1.0))
            optG.zero_grad()
            loss_g.backward()
            optG.step()
            g_losses.append(loss_g.detach())
        return torch.stack([loss_d.detach(), sum(g_losses) / 2, p_real.detach().mean(), p_fake.detach().mean()])

    return step


def torch_setup(ngf: int, batch: int, device: str):
    """The PyTorch side of a worker: threads, seed, the DCGAN on `device` and train.py's iteration over a fixed
    real batch; returns (step, iteration counter, torch device)."""
    import numpy as np
    import torch

    torch.set_num_threads(cores())
    torch.manual_seed(1)
    if device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--device gpu: this torch build has no CUDA or sees no GPU")
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    G, D = torch_dcgan(100, ngf, ngf)
    G.to(dev), D.to(dev)
    real = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, 64, 64)).astype(np.float32)).to(dev)
    return torch_step(G, D, real, 100, dev), itertools.count(), dev


def worker_torch(args) -> dict:
    import numpy as np
    import torch

    b = args.batch
    step, its, dev = torch_setup(args.ngf, b, args.device)

    def one():
        t = time.perf_counter()
        stats = step(next(its)).cpu().numpy()  # the host sync, as on Paddle's side
        assert np.all(np.isfinite(stats)), stats
        return time.perf_counter() - t

    first, times, others = time_iterations(one, args.warmup, args.iters)
    device = "gpu" if dev.type == "cuda" else "cpu"
    return {
        **timing_result("torch", torch.__version__, device, b, first, times, others),
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# the driver


# glibc keeps freed memory instead of returning it to the OS per tensor (read when a process starts): the lever
# measured on 2026-11-26 (with Paddle's own convolutions; not kept then)
MALLOC_KEEP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
# what device.keep_freed_memory() sets in Paddle's process (device.KEEP_MALLOC, by mallopt) as glibc's environment
# variables, for the PyTorch workers of --torch-malloc (tests/test_bench.py checks that the two agree)
MALLOC_SAME_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
# any MALLOC_* variable makes device.py leave glibc's defaults alone; this one states glibc's own default
MALLOC_DEFAULT = {"MALLOC_ARENA_MAX": str(8 * cores())}


def run_worker(
    kind: str,
    batch: int,
    iters: int,
    warmup: int,
    lever: dict | None = None,
    wait: float = 0.0,
    device: str = "auto",
    ngf: int = 64,
) -> dict:
    if wait:
        wait_idle(wait)
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    if kind == "torch+malloc":
        kind = "torch"
        env.update(MALLOC_SAME_ENV)
    if kind == "paddle+glibc":  # train.py's defaults but glibc's malloc defaults
        kind = "paddle"
        env.update(MALLOC_DEFAULT)
    if kind.startswith("fuse="):  # Paddle + oneDNN with these fusions only
        env["DCGAN_ONEDNN_FUSE"] = kind[5:]
        kind = "paddle"
    if kind == "paddle-kernels":  # Paddle with its own convolution kernels
        kind = "paddle"
        env.update(PADDLE_CONV)
    env.update((lever or {}).get("env", {}))  # there from the start: device.py, glibc and OpenMP read it early
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--batch",
        str(batch),
        "--iters",
        str(iters),
        "--warmup",
        str(warmup),
        "--lever",
        json.dumps(lever or {}),
        "--device",
        device,
        "--ngf",
        str(ngf),
    ]
    res, out = worker_result(cmd, env, f"{kind} worker (batch {batch})")
    if env.get("ONEDNN_VERBOSE"):  # oneDNN logs each primitive it runs: did the flag reach any kernel?
        res["onednn_primitives"] = sum(",primitive,exec," in x for x in out)
    return res


def worker_result(cmd: list[str], env: dict, what: str):
    """Run a worker process; returns the JSON of its RESULT line and all its stdout lines."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    out = r.stdout.splitlines()
    for line in out:
        if line.startswith("RESULT "):
            return json.loads(line[7:]), out
    raise RuntimeError(f"{what} failed with status {r.returncode}:\n{r.stderr[-3000:]}")


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def have_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# Each lever: what it is, and how a worker switches it (environment set/unset before paddle loads, the old step,
# to_static). MALLOC_DEFAULT (above) states malloc's defaults.
PADDLE_CONV = {"DCGAN_ONEDNN": "0"}  # Paddle's own convolution kernels, as before onednn_conv
BEFORE = {"legacy_step": True}  # train.py's step before issue 6
OLD_ENV = {**MALLOC_DEFAULT, **PADDLE_CONV}  # the rows up to "all" use Paddle's convolution kernels


def lever_table() -> list[tuple[str, str, str, dict]]:
    """The CPU levers: (name, the row it is measured against, what it is, how a worker switches it)."""
    return levers_vs_raw() + levers_vs_tuned() + levers_vs_all()


def levers_vs_raw() -> list[tuple[str, str, str, dict]]:
    """Paddle as pip installs it, and the thread and MKL settings utils.py added before issue 6."""
    n = str(cores())
    return [
        (
            "raw",
            "",
            "Paddle as pip installs it: 1 thread, MKL's generic path on AMD, glibc malloc defaults, old step",
            {"unset": ["MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE"], "env": {"OMP_NUM_THREADS": "1", **OLD_ENV}, **BEFORE},
        ),
        (
            "threads",
            "raw",
            f"MKL_NUM_THREADS={n} (threads = cores)",
            {"unset": ["MKL_DEBUG_CPU_TYPE"], "env": {"MKL_NUM_THREADS": n, **OLD_ENV}, **BEFORE},
        ),
        (
            "mkl-avx2",
            "raw",
            "MKL_DEBUG_CPU_TYPE=5 (MKL's AVX2 path on AMD)",
            {
                "unset": ["MKL_NUM_THREADS"],
                "env": {"OMP_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "5", **OLD_ENV},
                **BEFORE,
            },
        ),
        ("tuned", "raw", "threads + MKL path: utils.py before issue 6", {"env": dict(OLD_ENV), **BEFORE}),
    ]


def levers_vs_tuned() -> list[tuple[str, str, str, dict]]:
    """What came after "tuned": malloc, the new step, to_static, Paddle's oneDNN flag, onednn_conv, all of train.py."""
    return [
        (
            "malloc",
            "tuned",
            "glibc keeps freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2^31-1)",
            {"env": {**MALLOC_KEEP_ENV, **PADDLE_CONV}, **BEFORE},
        ),
        (
            "step",
            "tuned",
            "Trainer.step now: D frozen in the G steps (no weight gradients for D there)",
            {"env": dict(OLD_ENV)},
        ),
        (
            "to_static",
            "tuned",
            "paddle.jit.to_static(G) and (D), full_graph=True",
            {"env": dict(OLD_ENV), **BEFORE, "to_static": True},
        ),
        (
            "onednn",
            "tuned",
            "FLAGS_use_onednn=1",
            {"env": {"FLAGS_use_onednn": "1", "ONEDNN_VERBOSE": "1", **OLD_ENV}, **BEFORE},
        ),
        (
            "conv",
            "tuned",
            "the convolutions on oneDNN (onednn_conv; everything else as tuned)",
            {"env": dict(MALLOC_DEFAULT), **BEFORE},
        ),
        ("all", "tuned", "train.py's defaults now: tuned + step + convolutions on oneDNN + malloc keeps memory", {}),
    ]


def levers_vs_all() -> list[tuple[str, str, str, dict]]:
    """Against train.py's defaults: Paddle's own convolutions, and the OpenMP settings."""
    n = str(cores())
    return [
        ("paddle-conv", "all", "DCGAN_ONEDNN=0 (Paddle's own convolution kernels)", {"env": dict(PADDLE_CONV)}),
        ("glibc-malloc", "all", "glibc's malloc defaults (keep_freed_memory off)", {"env": dict(MALLOC_DEFAULT)}),
        (
            "omp",
            "all",
            f"OMP_NUM_THREADS={n} as well (Paddle's OpenMP loops and oneDNN's team; a warning at import)",
            {"env": {"OMP_NUM_THREADS": n}},
        ),
        (
            "blocktime0",
            "all",
            "KMP_BLOCKTIME=0 (OpenMP threads sleep at once instead of spinning 200 ms)",
            {"env": {"KMP_BLOCKTIME": "0"}},
        ),
        (
            "omp-passive",
            "all",
            "OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads of oneDNN's libgomp and MKL's libiomp5 sleep)",
            {"env": {"OMP_WAIT_POLICY": "PASSIVE"}},
        ),
        (
            "affinity",
            "all",
            "KMP_AFFINITY=granularity=fine,compact,1,0 (threads pinned to cores)",
            {"env": {"KMP_AFFINITY": "granularity=fine,compact,1,0"}},
        ),
    ]


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "--:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fusion_table(results: list[dict], batches: list[int], fusions: list[str]) -> str:
    """The --fusions rows: img/s (median and range over rounds) of each DCGAN_ONEDNN_FUSE setting, against the
    oneDNN convolutions alone (fuse=none) and PyTorch, same run."""
    rows = []
    for b in batches:
        speed = {}
        for kind in ["paddle", "torch", *(f"fuse={f}" for f in fusions)]:
            xs = [x["img_s"] for x in results if x.get("kind") == kind and x["batch"] == b]
            if xs:
                speed[kind] = (median(xs), min(xs), max(xs))
        base, torch = speed.get("fuse=none"), speed.get("torch")
        for kind, (med, lo, hi) in speed.items():
            name = {"paddle": "default (train.py)", "torch": "PyTorch eager"}.get(kind, kind)
            rows.append(
                [
                    str(b),
                    name,
                    f"{med:.1f}",
                    f"{lo:.1f}-{hi:.1f}",
                    f"{med / base[0]:.2f}x" if base and kind != "torch" else "-",
                    f"**{med / torch[0]:.2f}x**" if torch and kind != "torch" else "-",
                ]
            )
    header = ["batch", "DCGAN_ONEDNN_FUSE", "img/s (median)", "rounds", "vs none (convolutions only)", "vs PyTorch"]
    return fmt_table(rows, header)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCHES), help="(default: %(default)s)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="Paddle/PyTorch alternations per batch size (default: %(default)s)"
    )
    ap.add_argument("--iters", type=int, default=0, help="timed iterations per worker (default: 6, --quick 3)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed iterations first, compile included (default: 2)")
    ap.add_argument("--quick", action="store_true", help="1 round, 3 timed iterations")
    ap.add_argument("--levers", action="store_true", help="also time each Paddle speed lever alone (first batch size)")
    ap.add_argument(
        "--lever-batch",
        type=int,
        default=0,
        help="batch size of the --levers table (default: the first of --batch-sizes)",
    )
    ap.add_argument("--only", nargs="+", default=[], metavar="LEVER", help="with --levers: only these rows")
    ap.add_argument(
        "--gpu-levers",
        action="store_true",
        help="the GPU's lever table (precision, --log-every, "
        "--data-on-device) on any device; on a GPU it is the default",
    )
    ap.add_argument("--no-torch", action="store_true", help="time Paddle only")
    ap.add_argument(
        "--torch-malloc", action="store_true", help="also time PyTorch with the malloc settings Paddle gets"
    )
    ap.add_argument(
        "--glibc-row", action="store_true", help="also time Paddle with glibc's malloc defaults (no keep_freed_memory)"
    )
    ap.add_argument(
        "--wait-idle", type=float, default=0, metavar="S", help="wait up to S s for an idle machine before each worker"
    )
    ap.add_argument(
        "--device", choices=["auto", "cpu", "gpu"], default="auto", help="auto: GPU if any (default: %(default)s)"
    )
    ap.add_argument("--ngf", type=int, default=64, help="G's and D's width, ngf = ndf (default: %(default)s)")
    ap.add_argument("--no-backend-row", action="store_true", help="skip the Paddle-kernels (DCGAN_ONEDNN=0) workers")
    ap.add_argument(
        "--fusions",
        nargs="+",
        default=[],
        metavar="SET",
        help="also time Paddle + oneDNN with DCGAN_ONEDNN_FUSE=SET for each SET (e.g. none postop bn act bn,act all)",
    )
    ap.add_argument("--json", default="", help="also write every worker's result to this file")
    ap.add_argument("--worker", choices=["paddle", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--lever", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run_rounds(args, torch_ok: bool) -> list[dict]:
    """The framework comparison: each kind of worker at each batch size; the rounds alternate who goes first."""
    results: list[dict] = []
    for r in range(args.rounds):
        for b in args.batch_sizes:
            order = ["paddle"] + [f"fuse={f}" for f in args.fusions] + (["paddle+glibc"] if args.glibc_row else [])
            order += [] if args.no_backend_row else ["paddle-kernels"]
            order += (["torch"] + (["torch+malloc"] if args.torch_malloc else [])) if torch_ok else []
            if r % 2:
                order.reverse()
            for kind in order:
                res = run_worker(
                    kind, b, args.iters, args.warmup, wait=args.wait_idle, device=args.device, ngf=args.ngf
                )
                res["round"], res["kind"] = r, kind
                results.append(res)
                print(
                    f"  round {r + 1} batch {b:4d} {kind:14s} ({res['device']}): {res['img_s']:6.2f} img/s "
                    f"(median {res['median']:.3f} s/it, first {res['first']:.2f} s, "
                    f"others used {100 * res['others']:.0f}% of the CPUs)",
                    flush=True,
                )
    return results


def run_levers(args, results: list[dict]) -> list[list[str]]:
    """The lever table's workers (appended to `results`) and its rows; none without --levers, --gpu-levers or a GPU."""
    # on a GPU the CPU levers (MKL, malloc, OpenMP) mean nothing: its table is precision, fetching and data placement
    gpu_levers = args.gpu_levers or any(x["device"] == "gpu" for x in results if x["framework"] == "paddle")
    if not (args.levers or gpu_levers):
        return []
    b = args.lever_batch or args.batch_sizes[0]
    support = next(x["amp_support"] for x in results if x["framework"] == "paddle")
    table = gpu_table(support) if gpu_levers else lever_table()
    levers = [x for x in table if not args.only or x[0] in args.only]
    print(f"levers at batch {b}: {', '.join(x[0] for x in levers)}", flush=True)
    lever_res: dict[str, list[dict]] = {x[0]: [] for x in levers}
    for r in range(args.rounds):
        seq = levers if r % 2 == 0 else levers[::-1]
        for name, _, _, lever in seq:
            res = run_worker(
                "paddle", b, args.iters, args.warmup, lever, wait=args.wait_idle, device=args.device, ngf=args.ngf
            )
            res["round"], res["lever"] = r, name
            lever_res[name].append(res)
            results.append(res)
            print(
                f"  round {r + 1} {name:11s}: {res['img_s']:6.2f} img/s (first {res['first']:.2f} s, "
                f"others {100 * res['others']:.0f}%)",
                flush=True,
            )
    return lever_rows(levers, lever_res)


def lever_rows(levers: list[tuple[str, str, str, dict]], lever_res: dict[str, list[dict]]) -> list[list[str]]:
    """Each lever's median img/s, its gain against the row it names and its first-iteration extra."""
    speed = {n: median([x["img_s"] for x in v]) for n, v in lever_res.items()}
    start = {n: median([x["startup"] for x in v]) for n, v in lever_res.items()}
    rows = []
    for name, ref, what, _ in levers:
        gain = f"**{speed[name] / speed[ref]:.2f}x** vs {ref}" if ref in speed else ""
        ran = [x["onednn_primitives"] for x in lever_res[name] if "onednn_primitives" in x]
        what += f" (oneDNN primitives run: {max(ran)})" if ran else ""
        rows.append([name, (f"{ref} + " if ref else "") + what, f"{speed[name]:.1f}", gain, f"{start[name]:+.1f}"])
    return rows


def package_version(p: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(p)
    except md.PackageNotFoundError:
        return "-"


def of_kind(results: list[dict], kind: str) -> list[dict]:
    return [x for x in results if x.get("kind") == kind]


def print_setting(args, results: list[dict], torch_ok: bool) -> bool:
    """The lines above the table (machine, versions, device, work, matmul peak); whether both ran on one device."""
    pd, pt = of_kind(results, "paddle"), of_kind(results, "torch")
    peak, flops = median([x["peak_gflops"] for x in pd]), pd[0]["flops"]
    print()
    cpu = processor().name
    print(
        f"**Machine** {cpu}, {cores()} cores, {time.strftime('%Y-%m-%d')}; Python {platform.python_version()}, "
        f"paddlepaddle {pd[0]['version']}, torch {package_version('torch') if torch_ok else 'not installed'}, "
        f"numpy {package_version('numpy')}. "
        f"Paddle: {', '.join(f'{k}={v}' for k, v in pd[0]['env'].items() if v)}, PyTorch: "
        f"{pt[0]['threads'] if pt else '-'} threads. **Network** ngf = ndf = {args.ngf}. "
        f"**Convolutions** {pd[0]['conv_backend']}. **Device** Paddle {pd[0]['device']}"
        f"{', PyTorch ' + pt[0]['device'] if pt else ''}.  "
    )
    same_device = not pt or pt[0]["device"] == pd[0]["device"]
    if not same_device:
        print(
            "(Paddle and PyTorch ran on different devices, so no ratio: install a torch build for this device, "
            "or use --device cpu)"
        )
    print(
        f"**Work** {flops['iteration'] / 1e9:.2f} GFLOP per real image per iteration (G forward "
        f"{flops['G_fwd'] / 1e6:.1f} MFLOP, "
        f"D forward {flops['D_fwd'] / 1e6:.1f} MFLOP; 1 D step + 2 G steps, backward = 2x forward). "
        f"**Matmul peak** ({PEAK_N}² float32, Paddle, same environment): {peak:.0f} GFLOP/s.  "
    )
    print(
        f"Medians over {args.rounds} round(s) of {args.iters} timed iterations after {args.warmup} warm-up; each "
        "framework in its own process, "
        f"alternating.\n"
    )
    return same_device


def framework_table(results: list[dict], batches: list[int], same_device: bool) -> str:
    """Paddle against PyTorch per batch size (medians over rounds), with the Paddle-kernels and malloc columns."""
    pd, pk, pt, ptm = (of_kind(results, k) for k in ("paddle", "paddle-kernels", "torch", "torch+malloc"))
    peak, flops = median([x["peak_gflops"] for x in pd]), pd[0]["flops"]
    rows = []
    pct = lambda s: f"{100 * s * flops['iteration'] / 1e9 / peak:.0f}%"  # noqa: E731
    for b in batches:
        p = median([x["img_s"] for x in pd if x["batch"] == b])
        row = [str(b), f"{p:.1f}"]
        t = median([x["img_s"] for x in pt if x["batch"] == b]) if pt else None
        row += [f"{t:.1f}", f"**{p / t:.2f}x**" if same_device else "-"] if t else ["-", "-"]
        row += [pct(p), pct(t) if t and same_device else "-"]  # the peak is measured on Paddle's device
        if pk:
            k = median([x["img_s"] for x in pk if x["batch"] == b])
            row += [f"{k:.1f}", f"{k / t:.2f}x" if t and same_device else "-", f"**{p / k:.2f}x**"]
        if ptm:
            tm = median([x["img_s"] for x in ptm if x["batch"] == b])
            row += [f"{tm:.1f}", f"{p / tm:.2f}x"]
        row += [
            f"{median([x['startup'] for x in pd if x['batch'] == b]):.1f} s",
            f"{100 * max(x['others'] for x in results if x['batch'] == b and 'lever' not in x):.0f}%",
        ]
        rows.append(row)
    header = ["batch", "Paddle img/s", "PyTorch img/s", "Paddle / PyTorch", "Paddle % of peak", "PyTorch % of peak"]
    if pk:
        header += ["Paddle kernels img/s", "Paddle kernels / PyTorch", "oneDNN gain"]
    if ptm:
        header += ["PyTorch + same malloc img/s", "Paddle / that"]
    return fmt_table(rows, header + ["Paddle first-iteration extra", "max CPU used by others"])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        args.iters, args.warmup = args.iters or 6, args.warmup or 2
        res = (worker_paddle if args.worker == "paddle" else worker_torch)(args)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    args.rounds = 1 if args.quick else args.rounds  # the driver's counts, settled once for all its workers
    args.iters = args.iters or (3 if args.quick else 6)
    args.warmup = args.warmup or 2
    torch_ok = not args.no_torch and have_torch()
    if not args.no_torch and not torch_ok:
        print(
            "bench_train.py: PyTorch is not installed, so only Paddle is timed. For the reference: "
            "pip install -r requirements-bench.txt   (a CPU build of torch; not a project dependency)",
            flush=True,
        )
    cpu = processor().name
    print(
        f"bench_train.py: {cpu}, {cores()} usable cores; batch sizes {args.batch_sizes}, {args.rounds} round(s) "
        f"of {args.warmup} warm-up + {args.iters} timed iterations per worker",
        flush=True,
    )
    results = run_rounds(args, torch_ok)
    levers = run_levers(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))

    same_device = print_setting(args, results, torch_ok)
    print(framework_table(results, args.batch_sizes, same_device))
    if args.fusions:
        print(f"\n{fusion_table(results, args.batch_sizes, args.fusions)}")
    if levers:
        print(
            f"\nSpeed levers at batch {args.lever_batch or args.batch_sizes[0]} (Paddle, medians; each "
            "alone against the row named):\n"
        )
        print(fmt_table(levers, ["lever", "what", "img/s", "gain", "first-iteration extra (s)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
