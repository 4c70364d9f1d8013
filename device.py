"""The device: CPU thread defaults, CPU or GPU, mixed-precision settings, and `python train.py --check`.

CPU defaults (set when this module is imported; network.py imports it, so every script that builds a network has
them; the user's environment wins):
- MKL_NUM_THREADS = the usable cores (per process under paddle.distributed.launch): Paddle's CPU wheel runs MKL on
  one thread unless told. `import paddle` sets OMP_NUM_THREADS to 1 when it is unset, so an OMP_NUM_THREADS of 1 is
  taken as Paddle's, not the user's: to run on one thread set MKL_NUM_THREADS=1.
- MKL_DEBUG_CPU_TYPE=5: the MKL bundled with Paddle takes a generic code path on AMD processors unless told (3x
  slower matmul there; no effect on Intel).
MKL reads both when it loads, which Paddle does on the first computation that needs it, not at `import paddle`: so
they take effect from here whatever was imported first.
"""

from __future__ import annotations

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
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO/WARNING lines (type promotion, PIR)
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")  # every BN call


cpu_defaults()


def pick_device(choice: str) -> str:
    """'gpu' when asked for (or auto and Paddle has CUDA and sees a GPU), else 'cpu'."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise UserError(
            "--device gpu: this Paddle build has no CUDA or sees no GPU (pip install paddlepaddle-gpu; see README)"
        )
    return "gpu" if choice == "gpu" or (choice == "auto" and has_gpu) else "cpu"


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
        f"run: {iters} iterations, ngf = ndf = {width}, batch {batch_size}, {precision} on {device}: "
        f"{img_s:.1f} img/s; losses {'finite' if finite else 'NOT FINITE'} "
        f"(last D {values[-1, 0]:.3f}, G {values[-1, 1]:.3f})"
    )
    return finite
