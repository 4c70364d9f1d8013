"""Run by tests/test_distributed.py under `paddle.distributed.launch --nproc_per_node 2`: train.py whose rank 1
meets a simulated GPU trap (CUDA error 700) in its step at iteration TRAP; rank 0 goes on into the step's all_reduce.
usage: python -m paddle.distributed.launch --nproc_per_node 2 tests/dist_trap_worker.py DATA OUT TRAP
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import utils  # noqa: E402  (before paddle)

import paddle.distributed as dist  # noqa: E402

import train as train_mod  # noqa: E402


def main(argv: list[str]) -> None:
    data, out, trap = argv[0], argv[1], int(argv[2])
    real_step = train_mod.Trainer.step

    def step(self, real, noise=None):
        if dist.get_rank() == 1 and self.iteration + 1 == trap:
            raise OSError("(External) CUDA error(700), an illegal memory access was encountered.")
        return real_step(self, real, noise)

    train_mod.Trainer.step = step
    train_mod.main(["--data", data, "--out", out, "--ngf", "8", "--ndf", "8", "--batch-size", "4", "--epochs", "3",
                    "--no-progress"])  # fmt: skip


if __name__ == "__main__":
    sys.exit(utils.run_cli(main, sys.argv[1:]))
