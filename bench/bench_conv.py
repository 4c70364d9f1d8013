"""Per-layer convolution speed on CPU: every convolution of network.py's G and D, Paddle against PyTorch eager.

Usage:
    python bench/bench_conv.py                  # batch 64: Paddle NCHW, Paddle NHWC, PyTorch (when installed)
    python bench/bench_conv.py --batch 128 --reps 9
    python bench/bench_conv.py --ngf 32 --batch 32        # the demo's network

"oneDNN" is network.py's own layers, whose forward and backward run on onednn_conv's oneDNN ops (skipped when
those are unavailable, e.g. DCGAN_ONEDNN=0).

Convolutions are ~90% of a training iteration's time (Paddle's profiler), so this is where the gap of
bench_train.py comes from. For each layer (shapes traced from network.py at default widths, not typed in):
forward, and forward + backward (weight gradient, plus the input gradient where the network needs one: all
but G's noise input), median of --reps calls after 2 warm-up calls. "gemm only" times the matrix products
alone, in the per-image shapes Paddle's CPU kernel uses (for a convolution [Cout, Cin*k*k] x [Cin*k*k, Hout*Wout],
for a transposed one [Cout*k*k, Cin] x [Cin, Hin*Win], batched over the images): the rest of a Paddle forward is
its im2col / col2im. NHWC is the same layer with data_format="NHWC" (its input made channels-last beforehand).
Each framework and layout runs in a process of its own with train.py's CPU environment (device.py) or, for
PyTorch, torch.set_num_threads(cores). The CPU runs kernels synchronously, so wall time is the kernels' time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_train import conv_layers, fmt_table, have_torch, median, worker_result  # noqa: E402

from faces import cores, processor  # noqa: E402


def layer_specs(ngf: int = 64) -> list[dict]:
    """network.py's convolutions in order (bench_train.conv_layers), and which need an input gradient."""
    sys.path.insert(0, str(ROOT))
    import utils  # noqa: F401  CPU environment before paddle loads

    from network import Discriminator, Generator

    G = Generator(ngf=ngf)
    specs = conv_layers(G, Discriminator(ndf=ngf), G.nz)
    for s in specs:
        s["input_grad"] = not (s["net"] == "G" and s["hw"] == 1)  # G's noise needs no gradient
        s["fb_flop"] = s["flop"] * (3 if s["input_grad"] else 2)  # backward: 1x (weights) or 2x (+ input) forward
    return specs


def timed(f, reps: int) -> float:
    f(), f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return median(ts)


def measure(layer, x, ones_like, reps: int) -> dict:
    def fwd_bwd():
        y = layer(x)
        y.backward(ones_like(y))

    return {"fwd": timed(lambda: layer(x), reps), "fb": timed(fwd_bwd, reps)}


def worker_paddle(specs: list[dict], batch: int, reps: int, layout: str) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    import utils  # noqa: F401

    import paddle
    import paddle.nn as nn

    import network

    paddle.set_device("cpu")
    if layout == "oneDNN" and not network.onednn_conv.available():
        raise SystemExit(f"oneDNN: {network.onednn_conv.status()}")
    out = []
    for s in specs:
        if layout == "oneDNN":  # network.py's layers: onednn_conv's ops
            cls = network.Conv2DTranspose if s["transpose"] else network.Conv2D
            layer = cls(s["cin"], s["cout"], s["k"], s["stride"], s["padding"])
        else:  # Paddle's own kernels
            cls = nn.Conv2DTranspose if s["transpose"] else nn.Conv2D
            layer = cls(s["cin"], s["cout"], s["k"], s["stride"], s["padding"], bias_attr=False, data_format=layout)
        shape = [batch, s["cin"], s["hw"], s["hw"]] if layout != "NHWC" else [batch, s["hw"], s["hw"], s["cin"]]
        x = paddle.randn(shape)
        x.stop_gradient = not s["input_grad"]
        r = measure(layer, x, paddle.ones_like, reps)
        if layout == "NCHW":  # the matrix products of Paddle's per-image loop, without im2col / col2im
            k2 = s["k"] ** 2
            if s["transpose"]:
                w, cols = paddle.randn([s["cout"] * k2, s["cin"]]), paddle.randn([batch, s["cin"], s["hw"] ** 2])
            else:
                w, cols = (
                    paddle.randn([s["cout"], s["cin"] * k2]),
                    paddle.randn([batch, s["cin"] * k2, s["out_hw"] ** 2]),
                )
            r["gemm"] = timed(functools.partial(paddle.matmul, w, cols), reps)
        out.append(r)
    return out


def worker_torch(specs: list[dict], batch: int, reps: int) -> list[dict]:
    import torch
    import torch.nn as nn

    torch.set_num_threads(cores())
    out = []
    for s in specs:
        cls = nn.ConvTranspose2d if s["transpose"] else nn.Conv2d
        layer = cls(s["cin"], s["cout"], s["k"], s["stride"], s["padding"], bias=False)
        x = torch.randn(batch, s["cin"], s["hw"], s["hw"], requires_grad=s["input_grad"])
        out.append(measure(layer, x, torch.ones_like, reps))
    return out


def run_worker(kind: str, batch: int, reps: int, ngf: int) -> list[dict] | None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--batch",
        str(batch),
        "--reps",
        str(reps),
        "--ngf",
        str(ngf),
    ]
    try:
        return worker_result(cmd, env, f"{kind} worker")[0]
    except RuntimeError as e:
        if kind != "oneDNN":
            raise
        print(f"bench_conv.py: no oneDNN column ({str(e).strip().splitlines()[-1]})", flush=True)
        return None


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="images per call (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per layer and pass (default: %(default)s)")
    ap.add_argument("--ngf", type=int, default=64, help="G's and D's width, ngf = ndf (default: %(default)s)")
    ap.add_argument("--no-torch", action="store_true", help="time Paddle only")
    ap.add_argument("--worker", choices=["NCHW", "NHWC", "oneDNN", "torch"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def ms(t: float) -> str:
    return f"{1000 * t:.0f}"


def layer_row(s: dict, i: int, res: dict[str, list[dict]], batch: int) -> list[str]:
    """One convolution's row: Paddle NCHW (forward, its gemm, fwd+bwd, GFLOP/s), NHWC, oneDNN and PyTorch."""
    p, n = res["NCHW"][i], res["NHWC"][i]
    name = f"{s['net']} {'convT' if s['transpose'] else 'conv'} {s['cin']}->{s['cout']}, {s['hw']}->{s['out_hw']} px"
    row = [
        name,
        ms(p["fwd"]),
        ms(p["gemm"]),
        ms(p["fb"]),
        f"{batch * s['fb_flop'] / p['fb'] / 1e9:.0f}",
        ms(n["fb"]),
        f"{p['fb'] / n['fb']:.2f}x",
    ]
    if "oneDNN" in res:
        d = res["oneDNN"][i]
        gflops = f"{batch * s['fb_flop'] / d['fb'] / 1e9:.0f}"
        row += [ms(d["fwd"]), ms(d["fb"]), gflops, f"{p['fb'] / d['fb']:.2f}x"]
    if "torch" in res:
        t = res["torch"][i]
        row += [
            ms(t["fwd"]),
            ms(t["fb"]),
            f"{batch * s['fb_flop'] / t['fb'] / 1e9:.0f}",
            f"**{t['fb'] / p['fb']:.2f}x**",
        ]
        row += [f"**{t['fb'] / d['fb']:.2f}x**"] if "oneDNN" in res else []
    return row


def total_row(res: dict[str, list[dict]]) -> list[str]:
    """The "all" row: the layers' times added up, and the speed-ups of the sums."""
    tot = {k: [sum(r["fwd"] for r in v), sum(r["fb"] for r in v)] for k, v in res.items()}
    total = [
        "all",
        ms(tot["NCHW"][0]),
        ms(sum(x["gemm"] for x in res["NCHW"])),
        ms(tot["NCHW"][1]),
        "",
        ms(tot["NHWC"][1]),
        f"{tot['NCHW'][1] / tot['NHWC'][1]:.2f}x",
    ]
    if "oneDNN" in res:
        total += [ms(tot["oneDNN"][0]), ms(tot["oneDNN"][1]), "", f"{tot['NCHW'][1] / tot['oneDNN'][1]:.2f}x"]
    if "torch" in res:
        total += [ms(tot["torch"][0]), ms(tot["torch"][1]), "", f"**{tot['torch'][1] / tot['NCHW'][1]:.2f}x**"]
        total += [f"**{tot['torch'][1] / tot['oneDNN'][1]:.2f}x**"] if "oneDNN" in res else []
    return total


def table_header(res: dict[str, list[dict]], ngf: int, batch: int) -> list[str]:
    header = [
        f"layer (ngf {ngf}, batch {batch})",
        "Paddle fwd ms",
        "its gemm only ms",
        "Paddle fwd+bwd ms",
        "GFLOP/s",
        "NHWC fwd+bwd ms",
        "NHWC speed-up",
    ]
    if "oneDNN" in res:
        header += ["oneDNN fwd ms", "oneDNN fwd+bwd ms", "GFLOP/s", "oneDNN speed-up"]
    if "torch" in res:
        header += ["PyTorch fwd ms", "PyTorch fwd+bwd ms", "GFLOP/s", "Paddle / PyTorch speed"]
        header += ["oneDNN / PyTorch speed"] if "oneDNN" in res else []
    return header


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        specs = layer_specs(args.ngf)
        res = (
            worker_torch(specs, args.batch, args.reps)
            if args.worker == "torch"
            else worker_paddle(specs, args.batch, args.reps, args.worker)
        )
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    kinds = ["NCHW", "NHWC", "oneDNN"] + (["torch"] if not args.no_torch and have_torch() else [])
    print(
        f"bench_conv.py: {processor().name}, {cores()} usable cores; ngf = ndf = {args.ngf}, batch {args.batch}, "
        f"{args.reps} timed calls per layer; {', '.join(kinds)}",
        flush=True,
    )
    specs = layer_specs(args.ngf)
    res = {k: run_worker(k, args.batch, args.reps, args.ngf) for k in kinds}
    if res["oneDNN"] is None:
        del res["oneDNN"]
    rows = [layer_row(s, i, res, args.batch) for i, s in enumerate(specs)]
    rows.append(total_row(res))
    print()
    print(fmt_table(rows, table_header(res, args.ngf, args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
