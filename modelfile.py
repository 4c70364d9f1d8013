"""TEMPORARY in branch house: stands in for house-modelfile's modelfile.py until the merge; the checkpoint section
below is appended to the real one."""

from __future__ import annotations

import dataclasses
import re

from utils import UserError, read_state, save_state  # noqa: F401

import numpy as np
import paddle

from network import (  # noqa: F401
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    GENERATOR_FILE,
    check_weights,
    generator_payload,
    load_generator,
    read_model_file,
    save_generator,
)

# ---------------------------------------------------------------------------------------------
# the training checkpoint (train.py writes it, --resume reads it): everything a run needs to continue bit for bit
#
#   G, D, G_ema (or none)     state dicts (weights and BatchNorm running statistics)
#   optG, optD                Adam's state by parameter order: "3.moment1" is the first moment of the trainable
#                             parameter 3 of that model (Paddle's own names depend on what else the process built)
#   scalerG, scalerD          GradScaler state (fp16 only)
#   iteration, epoch          iterations done; epoch = iteration // iterations per epoch
#   fixed_noise               [64, nz, 1, 1]: the sample grids' noise
#   rng                       {"seed", "iteration"}: the noise of iteration i is a function of (seed, rank, i)
#   config                    train.py's flags, as a dict
#   history                   {d_loss, g_loss, d_real, d_fake}: float64 [iteration]

ADAM_STATE = ("moment1", "moment2", "beta1_pow_acc", "beta2_pow_acc")  # None below: the parameter's shape
ADAM_SHAPES = {"moment1": None, "moment2": None, "beta1_pow_acc": [1], "beta2_pow_acc": [1]}
HISTORY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")
_ADAM_NAME = re.compile(r"_(moment1|moment2|beta1_pow_acc|beta2_pow_acc)_\d+$")


def trainable(model: paddle.nn.Layer) -> list:
    return [p for p in model.parameters() if p.trainable]


def optimizer_state(opt: paddle.optimizer.Optimizer, params: list) -> dict[str, paddle.Tensor]:
    """Adam's state keyed by parameter order ("0.moment1", ...) instead of Paddle's generated names."""
    index = {p.name: i for i, p in enumerate(params)}
    state = {}
    for name, value in opt.state_dict().items():
        m = _ADAM_NAME.search(name)
        if m and name[: m.start()] in index:
            state[f"{index[name[: m.start()]]}.{m.group(1)}"] = value
    return state


def set_optimizer_state(opt: paddle.optimizer.Optimizer, params: list, state: dict) -> None:
    """Load optimizer_state()'s dict. Adam creates its accumulators at its first step, named after the parameter
    ("<param>_moment1_0": a parameter's name is unique in the process, so the counter is 0), and takes their values
    from what set_state_dict left it under exactly those names."""
    if state:
        opt.set_state_dict({f"{params[int(k.split('.')[0])].name}_{k.split('.')[1]}_0": v for k, v in state.items()})


def legacy_optimizer_state(state: dict, names: list[str]) -> dict:
    """An earlier version's optimizer state ("<param name>_moment1_0", the names a unique_name guard gave) by
    parameter order; `names` are the parameters' names in that guarded build."""
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for key, value in state.items():
        m = _ADAM_NAME.search(key)
        if not m or key[: m.start()] not in index:
            return state  # not the old naming: checked (and refused) as it is
        out[f"{index[key[: m.start()]]}.{m.group(1)}"] = value
    return out


def save_checkpoint(path, trainer, epoch: int) -> None:
    """Write `trainer`'s whole state (train.Trainer: G, D, G_ema, optG, optD, scalerG, scalerD, iteration,
    fixed_noise, history, cfg) as the checkpoint file, atomically."""
    t = trainer
    save_state(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "version": FORMAT_VERSION,
            "G": t.G.state_dict(),
            "D": t.D.state_dict(),
            "G_ema": t.G_ema.state_dict() if t.G_ema is not None else None,
            "optG": optimizer_state(t.optG, trainable(t.G)),
            "optD": optimizer_state(t.optD, trainable(t.D)),
            "scalerG": t.scalerG.state_dict(),
            "scalerD": t.scalerD.state_dict(),
            "epoch": epoch,
            "iteration": t.iteration,
            "fixed_noise": t.fixed_noise,
            "rng": {"seed": t.cfg.seed, "iteration": t.iteration},
            "config": dataclasses.asdict(t.cfg),
            "history": {k: np.asarray(t.history[k], np.float64) for k in HISTORY_KEYS},  # float(float32): exact
        },
    )


def read_checkpoint(path, allow_pickle: bool = False) -> dict:
    """A train.py checkpoint's state tree (see above), its optimizer state by parameter order even when an earlier
    version wrote it; UserError (one line naming the file) for anything else."""
    kind, tree = read_model_file(path, allow_pickle=allow_pickle)
    if kind != "checkpoint" or not isinstance(tree.get("config"), dict):
        raise UserError(f"{path}: not a train.py checkpoint (a {kind} file)")
    cfg = tree["config"]
    if isinstance(tree.get("history"), dict):  # lists of floats in an earlier version's pickled checkpoint
        tree["history"] = {k: np.asarray(v) if isinstance(v, list) else v for k, v in tree["history"].items()}
    names = None
    for part in ("optG", "optD"):
        state = tree.get(part)
        if isinstance(state, dict) and any(_ADAM_NAME.search(k) for k in state):
            names = names or _legacy_names(path, cfg)
            tree[part] = legacy_optimizer_state(state, names[part])
    return tree


def _legacy_names(path, cfg: dict) -> dict[str, list[str]]:
    """The parameter names an earlier train.py gave G and D (built in a fresh unique_name scope, G first)."""
    from network import Discriminator, Generator

    try:
        with paddle.utils.unique_name.guard():
            G, D = Generator(int(cfg["nz"]), int(cfg["ngf"])), Discriminator(int(cfg["ndf"]))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: its config has no usable nz, ngf and ndf") from None
    return {"optG": [p.name for p in trainable(G)], "optD": [p.name for p in trainable(D)]}


def check_checkpoint(path, ckpt: dict, trainer) -> None:
    """Every part of a checkpoint that load_checkpoint sets, checked before anything is set: Paddle would skip a
    mismatched weight with a warning, or fail deep inside the first optimizer step."""
    for part in ("optG", "optD", "fixed_noise", "history", "iteration"):
        if part not in ckpt:
            raise UserError(f"{path}: not a complete train.py checkpoint (no {part!r})")
    t, cfg = trainer, trainer.cfg
    check_weights(path, t.G, ckpt.get("G"), "G", f" for nz={cfg.nz}, ngf={cfg.ngf}")
    check_weights(path, t.D, ckpt.get("D"), "D", f" for ndf={cfg.ndf}")
    if t.G_ema is not None and ckpt.get("G_ema"):
        check_weights(path, t.G_ema, ckpt["G_ema"], "G_ema", f" for nz={cfg.nz}, ngf={cfg.ngf}")
    for name, model in (("optG", t.G), ("optD", t.D)):
        state = ckpt[name]
        if not isinstance(state, dict):
            raise UserError(f"{path}: {name} is not an optimizer state")
        tensors = {k: v for k, v in state.items() if not isinstance(v, dict)}  # not LR_Scheduler, master_weights
        if not tensors:  # that optimizer never stepped (e.g. --g-steps 0)
            continue
        expected = {
            f"{i}.{acc}": list(p.shape) if shape is None else shape
            for i, p in enumerate(trainable(model))
            for acc, shape in ADAM_SHAPES.items()
        }
        if set(tensors) != set(expected):
            odd = sorted(set(tensors) ^ set(expected))[0]
            raise UserError(f"{path}: {name} does not fit this model's Adam state ({odd} missing or unknown)")
        for k, shape in expected.items():
            found = list(getattr(tensors[k], "shape", [-1]))
            if found != shape or getattr(tensors[k], "dtype", None) != np.float32:
                raise UserError(f"{path}: {name} tensor {k} is not float32 of shape {shape}")
    noise = ckpt["fixed_noise"]
    if not isinstance(noise, np.ndarray) or noise.dtype != np.float32 or list(noise.shape) != [64, cfg.nz, 1, 1]:
        raise UserError(f"{path}: fixed_noise is not float32 [64, {cfg.nz}, 1, 1]")
    history, it = ckpt["history"], ckpt["iteration"]
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise UserError(f"{path}: its iteration ({it!r}) is not a count")
    if not isinstance(history, dict) or any(
        not isinstance(history.get(k), np.ndarray) or history[k].dtype.kind != "f" or history[k].shape != (it,)
        for k in HISTORY_KEYS
    ):
        raise UserError(f"{path}: its loss history does not have one number per iteration ({it})")


def load_checkpoint(path, ckpt: dict, trainer) -> None:
    """Set a read_checkpoint() tree into `trainer` after check_checkpoint."""
    check_checkpoint(path, ckpt, trainer)
    t = trainer
    t.G.set_state_dict(ckpt["G"])
    t.D.set_state_dict(ckpt["D"])
    if t.G_ema is not None and ckpt.get("G_ema"):
        t.G_ema.set_state_dict(ckpt["G_ema"])
    set_optimizer_state(t.optG, trainable(t.G), ckpt["optG"])
    set_optimizer_state(t.optD, trainable(t.D), ckpt["optD"])
    if t.amp and ckpt.get("scalerG"):
        t.scalerG.load_state_dict(ckpt["scalerG"])
        t.scalerD.load_state_dict(ckpt["scalerD"])
    t.iteration = int(ckpt["iteration"])
    t.fixed_noise = np.asarray(ckpt["fixed_noise"], dtype=np.float32)
    t.history = {k: list(map(float, ckpt["history"][k])) for k in HISTORY_KEYS}


def generator_of(ckpt, use_ema: bool = True, allow_pickle: bool = False):
    """TEMPORARY (house-modelfile has the real one)."""
    import paddle.nn as nn

    return ckpt if isinstance(ckpt, nn.Layer) else load_generator(str(ckpt), use_ema=use_ema, allow_pickle=allow_pickle)
