"""The processes of a job under paddle.distributed.launch: gradients averaged over them, every one starting from
rank 0's weights, and one clear line when another process of the job is gone (it died, its node went down, it hangs).

Gradients are averaged by one all-reduce after each backward (as paddle.DataParallel does: the sum, then / n), not
in DataParallel's backward hooks: a gloo error there (a peer killed) ends in std::terminate and SIGABRT with a C++
traceback, while here it is a RuntimeError that train.py turns into one line (peer_lost). A peer that hangs never
raises: PeerWatch ends the process first, gloo itself aborts after 30 s inside a collective.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import paddle
import paddle.distributed as dist

import modelfile


def broadcast_weights(*models) -> None:
    """Every rank starts from rank 0's weights."""
    for model in models:
        for p in model.parameters():
            dist.broadcast(p, src=0)


def average_grads(params: list, world_size: int) -> None:
    """The mean over the ranks of each parameter's gradient, in one all-reduce (as DataParallel: sum, then / n)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = paddle.concat([g.reshape([-1]) for g in grads])
    dist.all_reduce(flat)
    flat = flat / world_size
    start = 0
    for g in grads:
        n = g.size
        g.set_value(flat[start : start + n].reshape(g.shape))
        start += n


# what Paddle's gloo collectives raise when another process of the job is gone (kill -9: its sockets are reset)
PEER_ERRORS = ("gloo", "Connection reset", "Connection refused", "Broken pipe", "Connection closed", "TIMEOUT")


def peer_lost(trainer, out: Path, what: str) -> str:
    """The one line a process of a launched job prints when the others are gone."""
    saved = trainer.saved_iteration
    resume = (
        f"the last checkpoint, {out / modelfile.CHECKPOINT_FILE} (iteration {saved}), resumes with --resume (on any "
        "number of processes)"
        if saved
        else "no checkpoint was written yet"
    )
    return f"rank {trainer.rank} at iteration {trainer.iteration + 1}: {what}; the job stops; {resume}"


class PeerWatch:
    """Under the launcher, a thread that ends the process with one line when no iteration ends for `timeout`
    seconds (or 2.5 times the slowest one so far): a process of the job stopped answering (a node went down, a
    process hangs). Armed after the first iteration (which waits for every process to start). Without it, gloo
    aborts the process after 30 s inside a collective with a C++ traceback and no word on what to do."""

    def __init__(self, trainer, out: Path, timeout: float):
        self.trainer, self.out, self.timeout = trainer, out, timeout
        self.last, self.slowest, self.armed = time.monotonic(), 0.0, False
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="PeerWatch", daemon=True)

    def beat(self, iteration_ended: bool = True) -> None:
        now = time.monotonic()
        if iteration_ended and self.armed:
            self.slowest = max(self.slowest, now - self.last)
        self.last, self.armed = now, self.armed or iteration_ended

    def _run(self) -> None:
        while not self.stopped.wait(0.5):
            limit = max(self.timeout, 2.5 * self.slowest)
            if self.armed and time.monotonic() - self.last > limit:
                what = f"no iteration ended for {limit:.0f} s (another process of the job died or stopped answering)"
                print(f"train.py: error: {peer_lost(self.trainer, self.out, what)}", file=sys.stderr, flush=True)
                os._exit(2)  # the main thread is blocked inside a collective: nothing else would end it

    def __enter__(self) -> PeerWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()


def peer_error(error: BaseException) -> bool:
    """Whether a collective's error says another process of the job is gone."""
    return any(m in str(error) for m in PEER_ERRORS)


def detail(error: BaseException) -> str:
    """The end of a collective's error message: what gloo said."""
    return " ".join(str(error).split()[-6:])
