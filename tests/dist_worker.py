"""Run by tests/test_distributed.py under `paddle.distributed.launch --nproc_per_node 2`.

Records, per rank, which images the loader gave it, the weights after a few Trainer steps, and every
file train() writes, into OUT/rank{R}.npz and OUT/rank{R}.writes.txt.
usage: python -m paddle.distributed.launch --nproc_per_node 2 tests/dist_worker.py DATA OUT
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import utils  # noqa: E402  (before paddle)

import numpy as np  # noqa: E402
import paddle.distributed as dist  # noqa: E402

import train as train_mod  # noqa: E402
from dataReader import make_loader  # noqa: E402


def main(data: str, out: str) -> None:
    dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    out_dir = Path(out)
    loader = make_loader(data, batch_size=4, shuffle=True, seed=0)
    seen = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen[f"ids_epoch{epoch}"] = np.concatenate(
            [np.rint((b[:, 0, 0, 0].numpy() + 1) * 127.5) for b in loader]
        ).astype(int)

    writes = []
    orig_atomic_path = utils.atomic_path  # every file train() writes goes through it (log.csv rows are appended after)

    def record(path):
        writes.append(str(path))
        return orig_atomic_path(path)

    utils.atomic_path = record
    cfg = train_mod.TrainConfig(
        data=data,
        out=str(out_dir / "run"),
        epochs=1,
        batch_size=4,
        ngf=8,
        ndf=8,
        nz=16,
        seed=7,
        progress=False,
        max_iters=3,
        save_every=1,
        ema=0.5,
    )
    train_mod.train(cfg)
    tr = train_mod.Trainer(cfg, "cpu", world, rank)  # a fresh pair of models, stepped by hand: compare weights after
    loader.set_epoch(0)
    for i, batch in enumerate(loader):
        if i == 3:
            break
        tr.step(batch)
    weights = {f"G.{k}": v.numpy() for k, v in tr.G.state_dict().items()} | {
        f"D.{k}": v.numpy() for k, v in tr.D.state_dict().items()
    }
    np.savez(out_dir / f"rank{rank}.npz", world=world, **seen, **weights)
    (out_dir / f"rank{rank}.writes.txt").write_text("\n".join(writes))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
