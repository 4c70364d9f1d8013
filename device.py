"""The device: CPU thread defaults, CPU or GPU (and the launcher's backend for it), cuDNN determinism and TF32 on a
GPU, mixed-precision settings and the fp16 loss scaler, and `python train.py --check`.

CPU defaults (set when this module is imported; network.py imports it, so every script that builds a network has
them; the user's environment wins):
- MKL_NUM_THREADS = the usable cores (per process under paddle.distributed.launch): Paddle's CPU wheel runs MKL on
  one thread unless told. `import paddle` sets OMP_NUM_THREADS to 1 when it is unset, so an OMP_NUM_THREADS of 1 is
  taken as Paddle's, not the user's: to run on one thread set MKL_NUM_THREADS=1.
- MKL_DEBUG_CPU_TYPE=5 on AMD processors: the MKL bundled with Paddle takes a generic code path there unless told
  (3x slower matmul). Not on Intel, where it would hold MKL to AVX2: with AVX-512, 353 -> 204 GFLOP/s for a 4096^2
  matmul on 2 cores (2026-12-05).
MKL reads both when it loads, which Paddle does on the first computation that needs it, not at `import paddle`: so
they take effect from here whatever was imported first.
- glibc's malloc keeps freed memory for reuse (`keep_freed_memory`): by default it returns every block over its
  mmap threshold to the kernel on free, and the heap's free top beyond a small trim threshold, so each training
  step's activation buffers came back as fresh pages, zeroed by the kernel one page fault at a time: ~50,000 faults
  and 6% of a step at ngf 64 on the oneDNN path (docs/performance.md). Set at run time with mallopt(3); any MALLOC_*
  variable or glibc.malloc tunable of yours wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import warnings

from utils import UserError

import paddle

import faces


def cpu_defaults() -> None:
    """MKL's thread count and AMD code path, Paddle's C++ log level; see the module docstring."""
    if os.environ.get("OMP_NUM_THREADS", "1") == "1":
        local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1)  # set by paddle.distributed.launch
        os.environ.setdefault("MKL_NUM_THREADS", str(max(1, faces.cores() // max(1, local_procs))))
    if faces.processor().vendor == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO/WARNING lines (type promotion, PIR)
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")  # every BN call
    keep_freed_memory()


# mallopt(3) parameters: blocks under 32 MiB (glibc's largest mmap threshold on 64-bit; every activation of a
# DCGAN step at ngf 64, batch 64 is at most 16 MiB) come from the heap, and up to 1 GiB of free heap top is kept
# for the next allocation; a bigger block is still mapped and unmapped on its own
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_MALLOC = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of returning it to the kernel (see the
    module docstring). True when set; False where there is no glibc or where the user set a MALLOC_* variable or a
    glibc.malloc tunable (theirs wins). The process keeps its peak heap (up to 1 GiB free) rather than shrinking."""
    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(param, value) == 1 for param, value in KEEP_MALLOC.items())
    except (OSError, AttributeError):
        return False


cpu_defaults()


def pick_device(choice: str) -> str:
    """'gpu' when asked for (or auto and Paddle has CUDA and sees a GPU), else 'cpu'."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise UserError(
            "--device gpu: this Paddle build has no CUDA or sees no GPU (pip install paddlepaddle-gpu; see README)"
        )
    return "gpu" if choice == "gpu" or (choice == "auto" and has_gpu) else "cpu"


def parallel_backend(where: str) -> str:
    """The collective backend for a run on `where` under paddle.distributed.launch, set (PADDLE_DISTRI_BACKEND, which
    paddle.distributed.init_parallel_env reads) before the process group is made. A CPU run takes gloo: left to
    'auto', a CUDA build of Paddle picks NCCL and a GPU place even for --device cpu, and DataParallel would then
    broadcast CPU tensors over NCCL. A GPU run keeps the user's choice ('auto': NCCL)."""
    if where == "cpu":
        os.environ["PADDLE_DISTRI_BACKEND"] = "gloo"
    return os.environ.get("PADDLE_DISTRI_BACKEND", "auto")


# -- determinism and TF32 on a GPU --------------------------------------------------------------

# Paddle 3.3.1's flags (paddle/common/flags.cc); they exist only in CUDA builds (paddle.set_flags refuses them on a
# CPU build, where nothing needs them: the CPU kernels are deterministic for a fixed thread count).
DETERMINISTIC_FLAGS = {
    "FLAGS_cudnn_deterministic": True,  # cuDNN convolutions (G's transposed ones are backward-data) and pooling
    "FLAGS_cudnn_exhaustive_search": False,  # no choice of algorithm by timing, which may differ run to run
    "FLAGS_cudnn_batchnorm_spatial_persistent": False,  # this BatchNorm mode may use atomic reductions
}
NONDETERMINISTIC_FLAGS = {"FLAGS_cudnn_deterministic": False}  # Paddle's default: cuDNN picks by its heuristics


def configure_gpu(where: str, deterministic: bool = True) -> str:
    """Set the cuDNN flags for `where` ('gpu' only; a CPU needs nothing) and return what the start line says.

    deterministic: cuDNN restricted to deterministic algorithms (FLAGS_cudnn_deterministic), so that a run, a
    resume and any --log-every give the same bits on the same GPU, Paddle, CUDA and cuDNN. TF32: Paddle lets cuDNN
    use TF32 tensor cores for float32 convolutions on Ampere and later (its default; deterministic too, but with a
    10-bit mantissa in the products); training keeps that default and says so; FID's Inception turns it off
    (strict_float32)."""
    if where != "gpu":
        return ""
    paddle.set_flags(DETERMINISTIC_FLAGS if deterministic else NONDETERMINISTIC_FLAGS)
    tf32 = tf32_state()
    return f", cuDNN {'deterministic' if deterministic else 'non-deterministic (--no-deterministic)'}{tf32}"


def tf32_state() -> str:
    """', TF32 convolutions' when cuDNN may use TF32 for float32 (Ampere or later, Paddle's switch on), else ''."""
    from paddle.base import core

    on = core.get_cudnn_switch() if hasattr(core, "get_cudnn_switch") else False
    cap = paddle.device.cuda.get_device_capability()
    return ", TF32 convolutions" if on and cap[0] >= 8 else ""


@contextlib.contextmanager
def strict_float32(where: str):
    """cuDNN without TF32 inside (Paddle's switch, core.set_cudnn_switch; on by default), restored after; a CPU has
    no TF32 and needs nothing."""
    from paddle.base import core

    if where != "gpu" or not hasattr(core, "set_cudnn_switch"):
        yield
        return
    was = core.get_cudnn_switch()
    core.set_cudnn_switch(False)
    try:
        yield
    finally:
        core.set_cudnn_switch(was)


# -- mixed precision ---------------------------------------------------------------------------

AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
# Level O1 with Paddle's own lists plus conv2d_transpose: the O1 white list (paddle/amp/amp_lists.py) has conv2d
# but not conv2d_transpose, so every layer of G would stay float32. O1 rather than O2 (paddle.amp.decorate): the
# weights, Adam's moments and the checkpoint stay float32 (no master copies); only the listed ops run in low
# precision, and ops on neither list follow their inputs (ReLU, LeakyReLU, tanh).
AMP_WHITE_LIST = ("conv2d", "conv2d_transpose")
# Always float32: BatchNorm (batch statistics), D's sigmoid (probabilities near 0 and 1, which the loss takes the
# log of) and the loss itself, on probabilities (CPU) or logits (GPU; Paddle's BCE has no bfloat16 kernel). Each
# of these is a real op name (tested).
AMP_BLACK_LIST = ("batch_norm", "sigmoid", "bce_loss", "sigmoid_cross_entropy_with_logits")


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


class GradScaler(paddle.amp.GradScaler):
    """paddle.amp.GradScaler whose dynamic loss scaling runs without Paddle's "Found inf or nan, current scale is ..."
    print. That print comes on every rank at every lowering of the scale, breaking the progress bar during fp16's
    early search for a scale; and it reads the scale, a [1] tensor, with float(), which NumPy 2.4 (our constraint)
    refuses ("only 0-dimensional arrays can be converted"): in Paddle 3.3.1 the first lowering would end an fp16 run
    in a TypeError. The rule is Paddle's (paddle/amp/grad_scaler.py, AmpScaler._update): after
    decr_every_n_nan_or_inf overflows in a row the scale is multiplied by decr_ratio, after incr_every_n_steps clean
    steps by incr_ratio. The lowerings are counted in `lowered`; train.py's last line reports them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lowered = 0

    def _update(self) -> None:
        if not self._enable:
            return
        if self._cache_found_inf:  # (a host read of the step's found_inf, as in Paddle's own)
            self._incr_count, self._decr_count = 0, self._decr_count + 1
            if self._decr_count == self._decr_every_n_nan_or_inf:
                self._scale = self._scale * self._decr_ratio
                self._decr_count = 0
                self.lowered += 1
        else:
            self._decr_count, self._incr_count = 0, self._incr_count + 1
            if self._incr_count == self._incr_every_n_steps:
                self._scale = self._scale * self._incr_ratio
                self._incr_count = 0


def amp_note(amp, settings: dict | None) -> str:
    """What the start line says about --amp."""
    if settings:
        return f" amp={settings['dtype']}"
    mode = amp_mode(amp)
    return f" (--amp {mode} ignored: mixed precision is for GPU)" if mode != "off" else ""


# -- python train.py --check ---------------------------------------------------------------------


def describe(choice: str, amp) -> str:
    """`--check`'s first lines: Paddle's build, the device it picks, the GPU, AMP support. Returns the device."""
    v, cuda = paddle.version, paddle.device.is_compiled_with_cuda()
    build = f"CUDA {v.cuda()}, cuDNN {v.cudnn()}" if cuda else "CPU build"
    print(
        f"paddle: {paddle.__version__} ({build}, commit {v.commit[:10]}); "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    device = pick_device(choice)
    print(f"device: {device} (--device {choice}; GPUs visible: {paddle.device.cuda.device_count() if cuda else 0})")
    paddle.set_device(device)
    if device == "gpu":
        p = paddle.device.cuda.get_device_properties()
        print(f"gpu: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    sup = amp_support(device)
    if device == "gpu":
        print("amp: " + ", ".join(f"{k} {'yes' if ok else 'no'}" for k, ok in sup.items()))
    else:
        print("amp: none on a CPU (--amp is for GPUs; CPU runs are float32)")
    return device


def check(cfg, iters: int = 5, batch_size: int = 16, width: int = 16) -> bool:
    """`python train.py --check`: what a bug report needs, one line each (Paddle's build, the device train.py picks,
    the GPU, AMP support, the data), then `iters` timed iterations of a small model (ngf = ndf = `width`) on that
    device in the chosen precision. Returns whether the losses came out finite."""
    import dataclasses
    import time

    import numpy as np

    from dataReader import FaceDataset, plan_on_device
    from train import Trainer

    device = describe(cfg.device, cfg.amp)
    if os.path.exists(cfg.data):
        try:
            ds = FaceDataset(cfg.data)
            plan = plan_on_device(len(ds), ds.packed, cfg.data_on_device, device)[1]
            print(f"data: {cfg.data}, {len(ds)} images; --data-on-device {cfg.data_on_device}: {plan}")
        except UserError as e:
            print(f"data: {e}")
    else:
        print(f"data: {cfg.data} is not there (python pretreat.py makes it)")
    check_amp(cfg.amp, device)
    settings = configure_gpu(device, getattr(cfg, "deterministic", True))  # as train.py runs: --check compares
    small = dataclasses.replace(cfg, ngf=width, ndf=width, batch_size=batch_size, ema=0.0)
    trainer = Trainer(small, device)
    real = paddle.uniform([batch_size, 3, 64, 64], min=-1.0, max=1.0, seed=cfg.seed)
    trainer.step(real).numpy()  # warm-up: kernel selection, allocator
    t = time.perf_counter()
    values = paddle.stack([trainer.step(real) for _ in range(iters)]).numpy()  # one transfer, as --log-every
    img_s = iters * batch_size / (time.perf_counter() - t)
    finite = bool(np.all(np.isfinite(values)))
    precision = trainer.amp["dtype"] + " autocast" if trainer.amp else "float32"
    print(
        f"run: {iters} iterations, ngf = ndf = {width}, batch {batch_size}, {precision} on {device}{settings}: "
        f"{img_s:.1f} img/s; losses {'finite' if finite else 'NOT FINITE'} "
        f"(last D {values[-1, 0]:.3f}, G {values[-1, 1]:.3f})"
    )
    return finite


def start(choice: str, amp, deterministic: bool = True) -> tuple[str, int, int, str]:
    """A training process's device: picked first (the launcher's process group takes its backend and place from it),
    then the group joined, Paddle's device set, --amp checked, the GPU's flags set. Returns (device, rank, world size,
    what the start line says about the GPU's settings)."""
    import paddle.distributed as dist

    world_size = dist.get_world_size()
    where = pick_device(choice)
    if world_size > 1:
        parallel_backend(where)
        dist.init_parallel_env()
    paddle.set_device(where)
    check_amp(amp, where)
    return where, dist.get_rank(), world_size, configure_gpu(where, deterministic)
