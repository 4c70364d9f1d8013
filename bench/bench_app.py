"""The web app's speed on the CPU: how long a visitor waits for 64 faces and for one completion.

Usage:
    python bench/bench_app.py                  # ngf = ndf = 64, 3 rounds
    python bench/bench_app.py --width 32 --rounds 5

Rows, medians over the rounds (the order of the rows alternates between rounds):
  - 64 faces: generator.generate alone (the baseline: the network's work), the Generate tab's callback (+ the grid
    and the gallery list), the served app's answer as a page gets it (queue, PNG encoding of the grid and the 64
    faces into Gradio's cache, their URLs), and the whole round trip with gradio_client downloading the 65 PNGs
    one after the other (a browser fetches them in parallel).
  - one completion with the app's default preset (app.FAST_ITERS iterations x app.FAST_RESTARTS starts, center
    mask, D's prior): the callback, and through the served app.
Untrained networks (speed does not depend on the weights). Other processes on the machine make timings noisy: the
load is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402,F401  (hides paddle's import warning: before paddle, as everywhere)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import app  # noqa: E402
import generator  # noqa: E402
from faces import processor, save_png  # noqa: E402
from network import Discriminator, Generator, conv_backend  # noqa: E402


def machine() -> str:
    cpu = processor()
    avx512 = sorted(f for f in cpu.flags if f.startswith("avx512"))
    name = f"{cpu.name} ({'AVX-512: ' + ' '.join(avx512[:4]) if avx512 else 'no AVX-512'})"
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"{name}, {os.cpu_count()} cores; {load}"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=64, help="ngf = ndf")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--faces", type=int, default=64)
    a = p.parse_args(argv)
    from gradio_client import Client, handle_file

    paddle.seed(0)
    G, D = Generator(ngf=a.width), Discriminator(ndf=a.width)
    G.eval(), D.eval()
    for layer in (G, D):
        for q in layer.parameters():
            q.stop_gradient = True
    info = {"file": "(untrained)", "kind": "checkpoint", "nz": G.nz, "ngf": a.width, "ndf": a.width}
    m = app.Models(G, D, info)
    face = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    preset = (face, None, "center", app.FAST_ITERS, app.FAST_RESTARTS, 0)

    demo = app.build(m)
    with socket.socket() as sock:  # a free port: 7860 may be a running app
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, i18n=app.i18n())
    client = Client(demo.local_url, verbose=False)
    urls = Client(demo.local_url, verbose=False, download_files=False)  # as a page: file URLs, fetched in parallel
    path = m.scratch / "bench_face.png"
    save_png(face, path)
    client.predict(handle_file(str(path)), api_name="/photo")  # the crop stays in this client's session

    def served_completion():
        out = client.predict(None, "center", app.FAST_ITERS, app.FAST_RESTARTS, 0, api_name="/complete")
        assert "pixels filled" in out[-1], out[-1]

    rows = {
        f"{a.faces} faces: generator.generate (baseline)": lambda: generator.generate(G, a.faces, 1),
        f"{a.faces} faces: Generate callback": lambda: app.generate_cb(m, 1, a.faces),
        f"{a.faces} faces: served app, gradio_client round trip": lambda: client.predict(
            1, a.faces, api_name="/generate"
        ),
        f"{a.faces} faces: served app, answer with file URLs": lambda: urls.predict(1, a.faces, api_name="/generate"),
        f"completion ({app.FAST_ITERS} it x {app.FAST_RESTARTS} starts): callback": lambda: app.complete_cb(m, *preset),
        f"completion ({app.FAST_ITERS} it x {app.FAST_RESTARTS} starts): served app": served_completion,
    }
    for fn in rows.values():  # warm-up: first calls build oneDNN primitives, Gradio's caches
        fn()
    times: dict[str, list[float]] = {k: [] for k in rows}
    for r in range(a.rounds):
        for k in list(rows)[:: 1 if r % 2 == 0 else -1]:
            times[k].append(timed(rows[k]))
    demo.close()
    print(f"app.py at ngf = ndf = {a.width}, Paddle {paddle.__version__}, convolutions {conv_backend()}")
    print(f"{machine()}")
    print(f"\n| what (ngf {a.width}) | median s | rounds | vs generate |")
    print("|---|---|---|---|")
    base = statistics.median(times[next(iter(times))])
    for k, v in times.items():
        med = statistics.median(v)
        print(f"| {k} | {med:.3f} | {len(v)} | {med / base:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
