"""Convolutions on oneDNN for Paddle's CPU eager mode (optional; network.py falls back to Paddle's kernels).

Paddle 3.x's eager CPU convolutions are im2col + GEMM per image; the oneDNN that Paddle's wheel ships
(paddle/libs/libdnnl.so.3) has JIT convolution kernels that use the processor's widest vector unit (AVX-512 where
there is one). This package compiles a small Paddle custom operator library against it (onednn_conv.cc) with
paddle.utils.cpp_extension, once per environment, into Paddle's extension cache (PADDLE_EXTENSION_DIR, default
~/.cache/paddle_extensions; a folder dcgan_onednn_conv-<key> per Paddle build, compiler, headers and source), and
wires its three ops into autograd for Conv2D and Conv2DTranspose.

    import onednn_conv
    onednn_conv.available()            # builds or loads the library; False (one warning line) if it cannot
    y = onednn_conv.conv2d(x, w, stride=2, padding=1)            # = paddle.nn.functional.conv2d, bias-free
    y = onednn_conv.conv2d_transpose(x, w, stride=2, padding=1)  # = paddle.nn.functional.conv2d_transpose
    y = onednn_conv.conv2d(x, w, 2, 1, act=onednn_conv.act_of(nn.LeakyReLU(0.2)))  # + the activation, fused
    y = onednn_conv.batch_norm(x, bn_layer, act=(1, 0.0))  # = bn_layer(x) then ReLU, running statistics updated
    y = onednn_conv.activation(x, (2, 0.0))                # = tanh(x)
    y = onednn_conv.conv2d(x_nhwc, w, 2, 1, nhwc=True)     # x and y [n, h, w, c] (w as ever [out, in, k, k])
    y = onednn_conv.conv2d_transpose(x_nhwc, w3, 2, 1, nhwc=True, gemm=True)  # 3 channels out: a matmul + col2im
    with onednn_conv.frozen_weights():  # many passes through a model whose weights do not change (complete.py):
        ...                             # frozen parameters' weights are reordered once, not at every call

Activations are (kind, alpha): 1 ReLU with negative slope alpha (LeakyReLU), 2 tanh, 3 sigmoid (act_of(layer)
makes one from a paddle.nn activation layer). Which fusions network.py uses: fusions() (DCGAN_ONEDNN_FUSE, for
benchmarks).

Needs: a C++ compiler (g++), the oneDNN headers (`pip install --no-deps onednn-devel-cpu-iomp==2023.2.0`, which
`make install` does), and a Paddle CPU wheel that ships libdnnl.so.3. DCGAN_ONEDNN=0 turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import sysconfig
import threading
from pathlib import Path

import paddle

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "onednn_conv.cc"
NAME = "dcgan_onednn_conv"
ENV = "DCGAN_ONEDNN"
HEADERS_PKG = "onednn-devel-cpu-iomp==2023.2.0"

OPS = ("dnnl_conv_fwd", "dnnl_conv_bwd_data", "dnnl_conv_bwd_weights", "dnnl_eltwise_fwd", "dnnl_eltwise_bwd")
OPS += ("dnnl_bn_fwd", "dnnl_bn_bwd")
MULTI_OUTPUT = ("dnnl_bn_fwd", "dnnl_bn_bwd")
_ops = None  # the loaded op module
_status = ""  # why not, when it is not available ("" before the first try)


def enabled() -> bool:
    """False when the user turned the backend off (DCGAN_ONEDNN=0, off, false, no)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def include_dir() -> str | None:
    """Where oneapi/dnnl/dnnl.hpp is: this environment's include/ (where pip puts the headers package)."""
    for base in (sysconfig.get_paths().get("data", sys.prefix), sys.prefix, sys.base_prefix):
        inc = Path(base) / "include"
        if (inc / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
            return str(inc)
    return None


def build_dir() -> Path:
    from paddle.utils.cpp_extension.extension_utils import get_build_directory

    return Path(get_build_directory())


@contextlib.contextmanager
def _quiet(log_path: Path):
    """The compiler's and Paddle's build chatter go to `log_path` (file descriptors 1 and 2, subprocesses too)."""
    import logging
    import warnings

    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    loggers = [logging.getLogger(n) for n in ("", "paddle", "paddle.utils.cpp_extension.extension_utils")]
    levels = [lg.level for lg in loggers]
    with open(log_path, "w") as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
            for lg, lv in zip(loggers, levels, strict=True):
                lg.setLevel(lv)


def cache_key(source: Path = SOURCE) -> dict:
    """What the built library depends on: the Paddle build (version, commit, its libs folder, which the library's
    rpath names), the compiler, the oneDNN headers, the source and the flags. Each key gets its own cache folder,
    so environments sharing PADDLE_EXTENSION_DIR (two venvs, two Paddle builds) never evict each other."""
    libs = Path(paddle.__file__).parent / "libs"
    inc = include_dir()
    headers = [Path(inc) / "oneapi" / "dnnl" / h for h in ("dnnl_version.h", "dnnl_config.h")] if inc else []
    return {
        "paddle": [paddle.__version__, getattr(paddle.version, "commit", ""), str(libs)],
        "compiler": _compiler_id(),
        "headers": [inc or "", *(hashlib.sha256(h.read_bytes()).hexdigest() for h in headers if h.is_file())],
        "source": hashlib.sha256(Path(source).read_bytes()).hexdigest(),
        "cflags": ["-O2", "-std=c++17", "-fopenmp"],
        "ldflags": [f"-L{libs}", *_openmp(libs), "-l:libdnnl.so.3", f"-Wl,-rpath,{libs}"],
    }


def _openmp(libs: Path) -> list[str]:
    """The OpenMP runtime for col2im's loop: the one oneDNN runs on, Paddle's libiomp5 (which also answers the GNU
    OpenMP calls g++ emits), so both share one thread pool; libgomp (-fopenmp) for a Paddle without it."""
    return ["-l:libiomp5.so"] if (libs / "libiomp5.so").is_file() else ["-fopenmp"]


def _compiler_id() -> list[str]:
    """The C++ compiler Paddle's build will run (CXX, else c++), resolved, and the first line of its --version."""
    import shutil
    import subprocess

    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        return ["none"]
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return [os.path.realpath(cxx), (out.splitlines() or [""])[0]]


def cache_folder(directory: Path, name: str, key: dict) -> Path:
    """directory/<name>-<16 hex digits of the key>: a complete build, installed by one atomic rename."""
    return directory / f"{name}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}"


STAMP = "dcgan_stamp.json"  # the key of a complete build folder, written before it is renamed into place


def _installed(folder: Path, name: str, key: dict) -> bool:
    stamp = folder / STAMP
    return stamp.is_file() and stamp.read_text() == json.dumps(key, sort_keys=True) and (folder / name).is_dir()


def build(source: Path = SOURCE, directory: Path | None = None, name: str = NAME):
    """Compile (or, when this environment's build is cached, just load) the op library; returns its module.
    Each build runs in a temporary folder renamed into place when complete, under a file lock: processes started
    together (a distributed launch, two shells) build once, and a loader only ever sees complete folders.
    Raises RuntimeError with a one-line reason on any failure; the full compiler log is named in it."""
    import fcntl
    import shutil
    import tempfile

    inc = include_dir()
    if inc is None:
        raise RuntimeError(f"no oneDNN headers (pip install --no-deps {HEADERS_PKG})")
    libs = Path(paddle.__file__).parent / "libs"
    if not (libs / "libdnnl.so.3").is_file():
        raise RuntimeError(f"this Paddle build ships no oneDNN ({libs}/libdnnl.so.3)")
    directory = Path(directory or build_dir())
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(source)
    final = cache_folder(directory, name, key)
    if _installed(final, name, key):  # the common case: no lock, no compiler
        with contextlib.suppress(Exception):  # a damaged folder: rebuilt below
            return _load_built(final / name, name)
    with open(directory / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        if _installed(final, name, key):  # another process built it while this one waited
            with contextlib.suppress(Exception):
                return _load_built(final / name, name)
        for stale in [*directory.glob(f".{final.name}.*.tmp"), *([final] if final.exists() else [])]:
            shutil.rmtree(stale, ignore_errors=True)  # killed builds, a damaged folder: no one else uses them now
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=directory))
        ops = _compile(source, tmp, name, inc, key, final)
        (tmp / STAMP).write_text(json.dumps(key, sort_keys=True))
        os.replace(tmp, final)  # atomic: loaders see no folder or a complete one
        return ops


def _compile(source: Path, tmp: Path, name: str, inc: str, key: dict, final: Path):
    """load() in `tmp` (which becomes `final`); on failure `tmp` is removed and its log kept as final.build.log."""
    import shutil

    from paddle.utils.cpp_extension import load

    print(
        f"onednn_conv: compiling the oneDNN convolution ops (once per environment, ~20 s) into {final}",
        file=sys.stderr,
        flush=True,
    )
    log = tmp / "build.log"
    try:
        with _quiet(log):
            return load(
                name=name,
                sources=[str(source)],
                extra_include_paths=[inc],
                build_directory=str(tmp),
                extra_cxx_cflags=key["cflags"],
                extra_ldflags=key["ldflags"],
            )
    except Exception as e:  # the compiler's own message is in the log, kept beside the cache folders
        failed_log = final.with_name(final.name + ".build.log")
        os.replace(log, failed_log)
        shutil.rmtree(tmp, ignore_errors=True)
        errors = [x.strip() for x in failed_log.read_text(errors="replace").splitlines() if "error" in x.lower()]
        why = errors[0] if errors else f"{type(e).__name__}: {str(e)[:200]}"
        raise RuntimeError(f"{why} (log: {failed_log})") from None


def _load_built(own: Path, name: str):
    """The library a previous load() built, without load()'s no-op rebuild (a `setup.py build` subprocess, 1.5-3 s):
    register the ops of the .so and call them as the wrappers paddle generates do (eager mode only)."""
    import types

    from paddle import _C_ops
    from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

    ops = OPS
    registered = load_op_meta_info_and_register_op(str(own / f"{name}.so"))
    if not set(ops) <= set(registered):
        raise RuntimeError(f"{own / name}.so lacks {sorted(set(ops) - set(registered))}")

    def op(name):
        if name in MULTI_OUTPUT:
            return lambda *args: _C_ops._run_custom_op(name, *args)
        return lambda *args: _C_ops._run_custom_op(name, *args)[0]

    return types.SimpleNamespace(**{n: op(n) for n in ops})


def available() -> bool:
    """True when the oneDNN ops can run: enabled, and built/loaded (the first call builds or loads them; a failure
    prints one warning line and is remembered for this process)."""
    global _ops, _status
    if not enabled():
        return False
    if _ops is None and not _status:
        try:
            _ops = build()
            _match_threads()
        except Exception as e:  # never an error: Paddle's own kernels run instead
            _status = str(e)
            print(
                f"onednn_conv: warning: oneDNN convolutions unavailable, using Paddle's: {_status}",
                file=sys.stderr,
                flush=True,
            )
    return _ops is not None


def _match_threads() -> None:
    """oneDNN's threads = MKL's (utils.tune_cpu_env: the usable cores per local process). `import paddle` pins
    OpenMP to 1 thread unless OMP_NUM_THREADS was set (and then prints a warning), so oneDNN, which runs on the
    OpenMP runtime Paddle loads (its libiomp5), would use one core; setting the count there after the import
    works (measured: ngf 32, batch 32, fwd + bwd of G and D on 2 cores, 161 -> 104 ms). A user's OMP_NUM_THREADS
    wins: utils leaves MKL_NUM_THREADS unset then, and so does this."""
    import ctypes

    n = os.environ.get("MKL_NUM_THREADS", "")
    iomp = Path(paddle.__file__).parent / "libs" / "libiomp5.so"
    if n.isdigit() and int(n) > 0 and iomp.is_file():
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(str(iomp)).omp_set_num_threads(int(n))


def status() -> str:
    """'oneDNN' when the ops run, else why not ('off (DCGAN_ONEDNN=0)' or the build failure)."""
    if not enabled():
        return f"off ({ENV}={os.environ.get(ENV)})"
    return "oneDNN " + onednn_version() if available() else f"unavailable ({_status})"


def onednn_version() -> str:
    import ctypes

    class Version(ctypes.Structure):
        _fields_ = [
            ("major", ctypes.c_int),
            ("minor", ctypes.c_int),
            ("patch", ctypes.c_int),
            ("hash", ctypes.c_char_p),
        ]

    try:
        lib = ctypes.CDLL(str(Path(paddle.__file__).parent / "libs" / "libdnnl.so.3"))
        lib.dnnl_version.restype = ctypes.POINTER(Version)
        v = lib.dnnl_version().contents
        return f"{v.major}.{v.minor}.{v.patch}"
    except (OSError, AttributeError):
        return "3.x"


def _contig(x: paddle.Tensor) -> paddle.Tensor:
    return x if x.is_contiguous() else x.contiguous()


# ---------------------------------------------------------------------------------------------
# frozen weights: a convolution reorders its weights (OIHW) into the primitive's blocked layout at every call, as it
# must while training changes them (and Paddle's in-place writes, an optimizer's step or set_value, do not all bump
# a tensor's inplace version, so a change cannot be detected). A z search (complete.py) runs G thousands of times on
# the same weights: at a batch of 2 the reorders were a third of the step. Inside frozen_weights() the weights of
# parameters with stop_gradient set are reordered once per scope and kept with the primitive.

_scope = threading.local()  # this thread's frozen-weights scope number (0 or unset: none)
_scopes = iter(range(1, 2**62))  # scope numbers, never reused (next() on it is atomic under the GIL)


@contextlib.contextmanager
def frozen_weights():
    """A scope in which no frozen parameter (stop_gradient set) changes its values: the convolutions reorder such a
    parameter's weights once (per layer and direction) instead of at every call. The caller promises it: no
    set_value, optimizer step or load into those parameters before the scope ends. Nested scopes are new scopes;
    other threads are not affected."""
    was = getattr(_scope, "n", 0)
    _scope.n = next(_scopes)
    try:
        yield
    finally:
        _scope.n = was


def _scope_of(w: paddle.Tensor) -> int:
    """The frozen-weights scope number the ops may cache w's reorder under, 0 for none: only a parameter (it lives
    as long as its layer, so its memory is not reused in the scope) that takes no gradient."""
    n = getattr(_scope, "n", 0)
    return n if n and w.stop_gradient and w.persistable else 0


def _still(scope: int) -> int:
    """A forward's scope number for its backward pass: 0 once that scope has ended (the weights may have changed)."""
    return scope if scope and scope == getattr(_scope, "n", 0) else 0


# ---------------------------------------------------------------------------------------------
# activations and fusions

NO_ACT = (0, 0.0)
FUSE_ENV = "DCGAN_ONEDNN_FUSE"
# postop: the activation as a post-op of the convolution where nothing stands between them (D's first and last
# layer, G's last); bn: BatchNorm on oneDNN, its activation fused into the same op when `act` is on too;
# act: the activations on oneDNN's eltwise primitives (fused into the BN op, or alone after Paddle's BN);
# normrelu: oneDNN's fuse_norm_relu for BN + ReLU (G), in training; nhwc: G's and D's chains run on [n, h, w, c]
# tensors (transposed once in and once out): the convolutions read and write them with no reorder, and oneDNN's
# BatchNorm runs its JIT kernel there (on NCHW its implementation is generic); gemm: on NHWC tensors, a convolution's
# input gradient (and a transposed convolution's output) with at most 4 channels or from a 1x1 map as a matmul +
# col2im (D's first layer's input gradient, G's last layer's forward: oneDNN's kernels for 3 channels use a fifth of
# the vector unit; G's first layer's forward, D's last layer's input gradient: a matrix product); taps: on NHWC
# tensors, the weight gradient of a convolution with an output map of at most 4x4 (D's 4th and 5th layers, G's 1st
# and 2nd) as one matrix product per kernel tap over the positions it reads, padding skipped, on a CPU with AVX-512
FUSIONS = ("postop", "bn", "act", "normrelu", "nhwc", "gemm", "taps")
# Measured on 2026-12-04 (docs/performance.md, "NHWC through the chain"): on NCHW tensors no fusion paid (oneDNN's
# NCHW BatchNorm is generic, and every op reorders in and out); on NHWC the convolutions need no reorder and
# BatchNorm is JIT, and NHWC + post-ops + BatchNorm + activations made train.py's step 1.18x (ngf 64) and 1.33x
# (ngf 32) the convolutions alone. fuse_norm_relu did not add to that: off. DCGAN_ONEDNN_FUSE overrides.
DEFAULT_FUSIONS: tuple[str, ...] = ("nhwc", "postop", "bn", "act", "gemm", "taps")


def fusions() -> frozenset[str]:
    """The fusions network.py uses: DCGAN_ONEDNN_FUSE (comma-separated names of FUSIONS, 'none', 'all', or 'default'
    for DEFAULT_FUSIONS, the ones that paid in docs/performance.md, which the variable unset gives too). A knob for
    benchmarks; unknown names are ignored."""
    raw = os.environ.get(FUSE_ENV)
    if raw is None:
        return frozenset(DEFAULT_FUSIONS)
    names = {x.strip().lower() for x in raw.split(",")}
    if "default" in names:
        names |= set(DEFAULT_FUSIONS)
    return frozenset(FUSIONS) if "all" in names else frozenset(names & set(FUSIONS))


def act_of(layer) -> tuple[int, float] | None:
    """The (kind, alpha) of a paddle.nn activation layer that oneDNN runs (ReLU, LeakyReLU with slope >= 0, Tanh,
    Sigmoid), else None."""
    import paddle.nn as nn

    if type(layer) is nn.ReLU:
        return (1, 0.0)
    if type(layer) is nn.LeakyReLU and layer._negative_slope >= 0:  # the backward reads the output's sign
        return (1, float(layer._negative_slope))
    if type(layer) is nn.Tanh:
        return (2, 0.0)
    if type(layer) is nn.Sigmoid:
        return (3, 0.0)
    return None


def _sides(x: paddle.Tensor, nhwc: int) -> tuple[int, int]:
    """(height, width) of a data tensor, [n, c, h, w] or (nhwc) [n, h, w, c]."""
    return (x.shape[1], x.shape[2]) if nhwc else (x.shape[2], x.shape[3])


class _Conv2D(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, w, stride: int, padding: int, act: tuple[int, float] = NO_ACT, nhwc=0, gemm=0, taps=0):
        scope = _scope_of(w)
        x, w = _contig(x), _contig(w)
        y = _ops.dnnl_conv_fwd(x, w, stride, padding, *act, nhwc, scope)
        ctx.save_for_backward(x, w, y.detach())  # (see _Eltwise)
        ctx.geom = stride, padding, *_sides(x, nhwc), act, nhwc, gemm, taps, scope
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensor()
        s, p, ih, iw, act, nhwc, gemm, taps, scope = ctx.geom
        scope = _still(scope)
        dy = _contig(dy)
        if act[0]:
            dy = _ops.dnnl_eltwise_bwd(dy, y, *act)
        dx = None if x.stop_gradient else _ops.dnnl_conv_bwd_data(dy, w, s, p, ih, iw, *NO_ACT, nhwc, gemm, scope)
        dw = None if w.stop_gradient else _ops.dnnl_conv_bwd_weights(x, dy, s, p, w.shape[2], nhwc, taps)
        return dx, dw


class _Conv2DTranspose(paddle.autograd.PyLayer):
    """The transposed convolution is the convolution's input adjoint: with W [Cin, Cout, k, k] read as a conv's
    [out, in, k, k], y = bwd_data(x, W); dx = conv(dy, W); dW = bwd_weights(src=dy, diff_dst=x)."""

    @staticmethod
    def forward(ctx, x, w, stride: int, padding: int, act: tuple[int, float] = NO_ACT, nhwc=0, gemm=0, taps=0):
        scope = _scope_of(w)
        x, w = _contig(x), _contig(w)
        k, (h, wd) = w.shape[2], _sides(x, nhwc)
        oh, ow = (h - 1) * stride - 2 * padding + k, (wd - 1) * stride - 2 * padding + k
        y = _ops.dnnl_conv_bwd_data(x, w, stride, padding, oh, ow, *act, nhwc, gemm, scope)
        ctx.save_for_backward(x, w, y.detach())  # (see _Eltwise)
        ctx.geom = stride, padding, act, nhwc, taps, scope
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensor()
        s, p, act, nhwc, taps, scope = ctx.geom
        scope = _still(scope)
        dy = _contig(dy)
        if act[0]:
            dy = _ops.dnnl_eltwise_bwd(dy, y, *act)
        dx = None if x.stop_gradient else _ops.dnnl_conv_fwd(dy, w, s, p, *NO_ACT, nhwc, scope)
        dw = None if w.stop_gradient else _ops.dnnl_conv_bwd_weights(dy, x, s, p, w.shape[2], nhwc, taps)
        return dx, dw


class _Eltwise(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, act: tuple[int, float]):
        y = _ops.dnnl_eltwise_fwd(_contig(x), *act)
        # the output itself in ctx would be a cycle (output -> its grad node -> ctx -> output) that outlives a
        # forward never differentiated: a detached alias of the same memory is not
        ctx.save_for_backward(y.detach())
        ctx.act = act
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensor()
        return _ops.dnnl_eltwise_bwd(_contig(dy), y, *ctx.act)


class _BatchNorm(paddle.autograd.PyLayer):
    """BatchNorm2D (NCHW) + an activation. `layer` (not a tensor input) holds the running statistics, which the
    forward updates in place in training mode, as Paddle's kernel does."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, act: tuple[int, float], fnr: bool, nhwc: int = 0):
        x = _contig(x)
        training = int(layer.training)
        args = (training, float(layer._momentum), float(layer._epsilon), *act, int(fnr), nhwc)
        y, mean, var, ws = _ops.dnnl_bn_fwd(x, weight, bias, layer._mean, layer._variance, *args)
        ctx.save_for_backward(x, y.detach(), weight, mean, var, ws)  # (see _Eltwise)
        ctx.args = training, float(layer._epsilon), *act, int(fnr), nhwc
        ctx.stops = x.stop_gradient, weight.stop_gradient, bias.stop_gradient
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, weight, mean, var, ws = ctx.saved_tensor()
        dx, dw, db = _ops.dnnl_bn_bwd(x, y, _contig(dy), weight, mean, var, ws, *ctx.args)
        return tuple(None if stop else g for g, stop in zip((dx, dw, db), ctx.stops, strict=True))


def conv2d(
    x: paddle.Tensor,
    w: paddle.Tensor,
    stride: int = 1,
    padding: int = 0,
    act: tuple[int, float] | None = None,
    nhwc: bool = False,
    gemm: bool | None = None,
    taps: bool | None = None,
) -> paddle.Tensor:
    """paddle.nn.functional.conv2d(x, w, stride=stride, padding=padding) on oneDNN (float32 CPU, no bias), then
    the activation `act` (see act_of) as a post-op. nhwc: x and the result are [n, h, w, c] (data_format NHWC).
    gemm: the input gradient as a matmul + col2im where x has few channels or y is 1x1, and nhwc; taps: the weight
    gradient as one matrix product per kernel tap where y is at most 4x4, and nhwc, on a CPU with AVX-512 (None:
    as fusions() says)."""
    flags = int(nhwc), _flag("gemm", gemm), _flag("taps", taps)
    return _Conv2D.apply(x, w, int(stride), int(padding), act or NO_ACT, *flags)


def conv2d_transpose(
    x: paddle.Tensor,
    w: paddle.Tensor,
    stride: int = 1,
    padding: int = 0,
    act: tuple[int, float] | None = None,
    nhwc: bool = False,
    gemm: bool | None = None,
    taps: bool | None = None,
) -> paddle.Tensor:
    """paddle.nn.functional.conv2d_transpose(x, w, stride=stride, padding=padding) on oneDNN (as conv2d), then
    the activation `act` in place on its output. gemm: the output as a matmul + col2im where it has few channels
    or x is 1x1, and nhwc; taps: the weight gradient as one matrix product per kernel tap where x is at most 4x4,
    and nhwc, on a CPU with AVX-512 (None: as fusions() says)."""
    flags = int(nhwc), _flag("gemm", gemm), _flag("taps", taps)
    return _Conv2DTranspose.apply(x, w, int(stride), int(padding), act or NO_ACT, *flags)


def _flag(name: str, on: bool | None) -> int:
    """A fusion's flag for the ops: `on`, or (None) whether fusions() has it."""
    return int(name in fusions() if on is None else on)


def activation(x: paddle.Tensor, act: tuple[int, float]) -> paddle.Tensor:
    """The activation `act` (see act_of) of a float32 CPU tensor on oneDNN's eltwise primitive."""
    return _Eltwise.apply(x, act)


def batch_norm(
    x: paddle.Tensor, layer, act: tuple[int, float] | None = None, fnr: bool = False, nhwc: bool = False
) -> paddle.Tensor:
    """`layer(x)` for a paddle.nn.BatchNorm2D `layer` (default use_global_stats) on oneDNN, then the activation
    `act`: batch statistics (biased variance) and the running-statistics update in training mode, the running
    statistics in eval mode. fnr: ReLU through oneDNN's fuse_norm_relu (act must be ReLU). nhwc: x is
    [n, h, w, c]."""
    return _BatchNorm.apply(x, layer.weight, layer.bias, layer, act or NO_ACT, bool(fnr), int(nhwc))
