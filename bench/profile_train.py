"""Where a training iteration's time goes, per kind of operator, in Paddle (train.py's step) and in PyTorch eager.

Usage:
    python bench/profile_train.py                              # ngf = ndf = 64, batch 64, fusions none and all
    python bench/profile_train.py --ngf 32 --batch 32 --fusions none postop bn act
    python bench/profile_train.py --iters 3 --json profile.json

Each worker (Paddle with DCGAN_ONEDNN_FUSE set to one value of --fusions, then PyTorch) runs in a process of its
own, with bench_train.py's set-up (train.py's Trainer and CPU environment; the same DCGAN in PyTorch), --warmup
untimed iterations, then --iters iterations under the framework's own profiler (paddle.profiler, torch.profiler),
exported as a Chrome trace. The trace's events nest (a layer's forward holds its operators, an autograd node its
kernels); every microsecond of an iteration is charged to the innermost event that names a kind (KINDS: the
convolutions' forward and backward, BatchNorm's, the activations', Adam, the loss), and what no such event holds is
"rest" (Python, autograd bookkeeping, allocation, small ops). Reported: ms per iteration per kind, both frameworks
side by side, and the iteration's wall time under the profiler (which adds a little to every operator call).
Paddle's custom oneDNN operators run inside PyLayers: their forward is charged through the layer's forward event
(Conv2D, BatchNorm2D, ...), their backward through the PyLayer's gradient node.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# (kind, pattern on an event's name, brackets stripped); the first match wins, so backward names come first
KINDS = [
    ("conv backward", r"GradNodePyLayer__Conv|Conv2d.*Backward|ConvolutionBackward|convolution_backward|Conv2dGrad"),
    ("BN backward", r"BatchNorm.*Grad|GradNodePyLayer__BatchNorm|BatchNormBackward|batch_norm_backward"),
    (
        "activation backward",
        r"(Relu|LeakyRelu|Tanh|Sigmoid)GradNode|GradNodePyLayer__Eltwise|"
        r"(Relu|LeakyRelu|Tanh|Sigmoid)Backward|threshold_backward|leaky_relu_backward|tanh_backward|sigmoid_backward",
    ),
    ("loss", r"[Bb]ce|binary_cross_entropy|BinaryCrossEntropy|MeanAll|MeanBackward|mean_all"),
    ("Adam", r"adam|Adam|_foreach_|Optimizer\.step"),
    ("conv forward", r"^Conv2D$|^Conv2DTranspose$|conv2d|aten::convolution$|aten::_convolution$|mkldnn_convolution$"),
    ("BN forward", r"^BatchNorm2D$|batch_norm dygraph|aten::batch_norm$|native_batch_norm$|_batch_norm_impl_index"),
    (
        "activation forward",
        r"^(ReLU|LeakyReLU|Tanh|Sigmoid)$|^(relu|leaky_relu|tanh|sigmoid) dygraph$|"
        r"aten::(relu|leaky_relu|tanh|sigmoid|clamp_min)$",
    ),
]
ORDER = ["activation forward", "BN forward", "conv forward", "conv backward", "BN backward", "activation backward"]
ORDER += ["Adam", "loss", "rest"]  # the table's rows
PATTERNS = [(k, re.compile(p)) for k, p in KINDS]


def kind_of(name: str) -> str | None:
    name = re.sub(r"\[[^\]]*\]$", "", name).strip()
    for kind, pat in PATTERNS:
        if pat.search(name):
            return kind
    return None


def charge(events: list[dict]) -> dict[str, float]:
    """Microseconds per kind: each event's self time (its span less its children's) goes to its innermost named
    ancestor, itself included; the steps' own time that no named event holds is "rest". Events are the trace's
    complete ("X") events of one process, nested by time (threads merged: the Python and C++ threads of Paddle's
    trace are one thread of execution)."""
    evs = sorted((e for e in events if e.get("ph") == "X"), key=lambda e: (float(e["ts"]), -float(e["dur"])))
    out: dict[str, float] = {}
    stack: list[list] = []  # [end, kind of the innermost named event at this depth, child time]

    def close(upto: float) -> None:
        while stack and stack[-1][0] <= upto:
            end, kind, child, start = stack.pop()
            out[kind or "rest"] = out.get(kind or "rest", 0.0) + (end - start) - child
            if stack:
                stack[-1][2] += end - start

    for e in evs:
        ts, dur = float(e["ts"]), float(e["dur"])
        close(ts)
        inherited = stack[-1][1] if stack else None
        stack.append([ts + dur, kind_of(e["name"]) or inherited, 0.0, ts])
    close(float("inf"))
    return out


def steps(events: list[dict]) -> list[dict]:
    """The events inside the profiled iterations (those between the first and the last step mark)."""
    marks = sorted((e for e in events if e.get("name", "").startswith("ProfileStep")), key=lambda e: e["ts"])
    if not marks:
        return events
    lo, hi = float(marks[0]["ts"]), max(float(m["ts"]) + float(m["dur"]) for m in marks)
    return [e for e in events if "ts" in e and lo <= float(e["ts"]) < hi]


def worker_paddle(args, out: str) -> dict:
    import bench_train as bt

    bt.paddle_env({})
    import numpy as np
    import paddle
    import paddle.profiler as profiler

    train = bt.import_train()
    trainer, _ = bt.build_trainer(train, args, {}, "cpu")
    real = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 64, 64)).astype(np.float32))
    for _ in range(args.warmup):
        trainer.step(real).numpy()
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=profiler.export_chrome_tracing(out))
    prof.start()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        trainer.step(real).numpy()
        prof.step()
    wall = time.perf_counter() - t0
    prof.stop()
    (trace,) = glob.glob(os.path.join(out, "*.json"))
    with open(trace) as f:
        events = json.load(f)["traceEvents"]
    return {"framework": "paddle", "version": paddle.__version__, "wall_us": wall * 1e6, "events": steps(events)}


def worker_torch(args, out: str) -> dict:
    import bench_train as bt
    import torch

    step, its, _ = bt.torch_setup(args.ngf, args.batch, "cpu")
    for _ in range(args.warmup):
        step(next(its)).numpy()
    trace = os.path.join(out, "torch.json")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step(next(its)).numpy()
        wall = time.perf_counter() - t0
    prof.export_chrome_trace(trace)
    with open(trace) as f:
        events = json.load(f)["traceEvents"]
    events = [e for e in events if e.get("cat") in ("cpu_op", "python_function", "user_annotation")]
    return {"framework": "torch", "version": torch.__version__, "wall_us": wall * 1e6, "events": events}


def run(args, what: str, fusion: str = "") -> dict:
    """One worker in a subprocess; its kinds in ms per iteration."""
    env = dict(os.environ)
    if fusion:
        env["DCGAN_ONEDNN_FUSE"] = fusion
    cmd = [sys.executable, __file__, "--worker", what, "--ngf", str(args.ngf), "--batch", str(args.batch)]
    cmd += ["--iters", str(args.iters), "--warmup", str(args.warmup)]
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([*cmd, "--out", tmp], env=env, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{what} worker failed:\n{res.stderr[-2000:]}")
        with open(os.path.join(tmp, "result.json")) as f:
            r = json.load(f)
    per = {k: v / 1000 / args.iters for k, v in charge(r.pop("events")).items()}
    name = f"Paddle {r['version']}, fusions {fusion or 'default'}" if what == "paddle" else f"PyTorch {r['version']}"
    return {"name": name, "ms": per, "wall_ms": r["wall_us"] / 1000 / args.iters}


def table(rows: list[dict]) -> str:
    head = "| kind | " + " | ".join(r["name"] for r in rows) + " |"
    lines = [head, "|---|" + "--:|" * len(rows)]
    for k in ORDER:
        lines.append(f"| {k} | " + " | ".join(f"{r['ms'].get(k, 0.0):.1f}" for r in rows) + " |")
    lines.append("| **sum of kinds** | " + " | ".join(f"{sum(r['ms'].values()):.1f}" for r in rows) + " |")
    lines.append("| wall, profiled | " + " | ".join(f"{r['wall_ms']:.1f}" for r in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ngf", type=int, default=64, help="ngf = ndf (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=3, help="profiled iterations per worker")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--fusions", nargs="+", default=["none", "all"], help="DCGAN_ONEDNN_FUSE values, one worker each")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", default="", help="also write the table's numbers here")
    p.add_argument("--worker", choices=["paddle", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        res = (worker_paddle if a.worker == "paddle" else worker_torch)(a, a.out)
        with open(os.path.join(a.out, "result.json"), "w") as f:
            json.dump(res, f)
        return 0
    print(f"ms per iteration, ngf = ndf = {a.ngf}, batch {a.batch}, {a.iters} profiled after {a.warmup}", flush=True)
    rows = [run(a, "paddle", f) for f in a.fusions]
    if not a.no_torch:
        rows.append(run(a, "torch"))
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
