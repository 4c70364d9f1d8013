"""pytorch-fid as the reference for fid.py: golden files for the tests, and a live side-by-side comparison.

Usage (needs torch, torchvision and pytorch-fid; `make fid-reference` makes such a venv):
    python bench/fid_reference.py --golden       # rewrite tests/data/fid_golden.npz and the small .pth files
    python bench/fid_reference.py --live         # + fid.py on the same images when paddle imports too
    python bench/fid_reference.py --live --num 8

Golden files (tests/data/, a few KB each; tests/test_fid.py reads them without torch):
- fid_golden.npz: the SHA-256 of golden_images() (the test rebuilds them), their pytorch-fid features (every 4th
  of the 2048, plus each image's sum over all 2048) under seeded_state_dict(shapes, GOLDEN_SEED), and pytorch-fid's
  calculate_frechet_distance on the fixed statistics of golden_statistics().
- fid_tiny.pth / fid_tiny_legacy.pth: torch.save (zip / legacy format) of tiny_tensors(), for the .pth reader.
- fid_malicious.pth: a torch.save zip whose pickle calls os.system("touch fid_pwned"): the reader must refuse it.

Seeded weights (seeded_state_dict): the FID Inception's conv and BatchNorm tensors, keys in sorted order (torchvision
names), each drawn in turn from one numpy Generator(seed): conv.weight ~ N(0, 1) * sqrt(2 / fan_in) (He), bn.weight
~ U(0.5, 1.5), bn.bias ~ N(0, 0.1), bn.running_mean ~ N(0, 0.1), bn.running_var ~ U(0.5, 1.5); float32. The .pth
of --live also holds fc (N(0, 0.01), zero bias) and num_batches_tracked (0), as pytorch-fid's file does.
Only this module's top level is imported by the tests: torch and pytorch-fid are imported inside the functions.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
GOLDEN_SEED = 15
FEATURE_STRIDE = 4  # golden features kept: every 4th (all four branches of Mixed_7c), 8 KB instead of 32


def seeded_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = GOLDEN_SEED) -> dict[str, np.ndarray]:
    """Random FID Inception weights from shapes {torchvision name: shape}; keys other than conv/bn ones are ignored."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        if k.endswith("conv.weight"):
            out[k] = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif k.endswith("bn.weight") or k.endswith("bn.running_var"):
            out[k] = rng.uniform(0.5, 1.5, shape)
        elif k.endswith("bn.bias") or k.endswith("bn.running_mean"):
            out[k] = rng.normal(0.0, 0.1, shape)
        else:
            continue
        out[k] = out[k].astype(np.float32)
    return out


def golden_images() -> list[np.ndarray]:
    """Four uint8 image batches of different sizes: a smooth 64x64 picture, 64x64 noise, a 50x70 gradient, and a
    299x299 picture (resized all the same: pytorch-fid interpolates always)."""
    rng = np.random.default_rng(GOLDEN_SEED)

    def smooth(h: int, w: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        ch = [
            127.5 + 120 * np.sin(rng.uniform(2, 9) * xx + rng.uniform(2, 9) * yy + rng.uniform(0, 6)) for _ in range(3)
        ]
        return np.clip(np.stack(ch, axis=2), 0, 255).astype(np.uint8)

    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 70)[None, :, None], (50, 70, 3)).astype(np.uint8)
    return [smooth(64, 64)[None], noise[None], ramp[None].copy(), smooth(299, 299)[None]]


def images_sha256(images: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for im in images:
        h.update(str(im.shape).encode())
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()


def golden_statistics() -> tuple[np.ndarray, ...]:
    """Two well-conditioned 16-d Gaussians' sample statistics (mu1, sigma1, mu2, sigma2) for the Frechet distance."""
    rng = np.random.default_rng(GOLDEN_SEED + 1)
    a = rng.standard_normal((300, 16))
    b = rng.standard_normal((300, 16)) @ rng.uniform(0.5, 1.5, (16, 16)) / 4 + 0.3
    return a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)


def tiny_tensors() -> dict[str, np.ndarray]:
    """What fid_tiny*.pth hold: dtypes, a 0-d tensor, and (in the file) views with an offset and strides."""
    base = (np.arange(24, dtype=np.float32) / 7).reshape(4, 6)
    return {
        "w": base,
        "w_t": base.T,  # saved as a transposed view of w's storage
        "row": base[2, 1:5],  # a view with a storage offset
        "steps": np.array(7, np.int64),
        "half": np.float16([0.5, -2.0, 3.25]),
        "bf16": np.float32([1.0, -0.5, 256.0]),  # saved as bfloat16 (exact in it)
        "flags": np.array([True, False, True]),
    }


# ---------------------------------------------------------------------------------------------
# the torch side


def _torch_tiny():
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    return {
        "w": base,
        "w_t": base.t(),
        "row": base[2, 1:5],
        "steps": torch.tensor(7),
        "half": torch.tensor([0.5, -2.0, 3.25], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -0.5, 256.0], dtype=torch.bfloat16),
        "flags": torch.tensor([True, False, True]),
    }


class _Evil:
    def __reduce__(self):
        return os.system, ("touch fid_pwned",)


def reference_model(seed: int = GOLDEN_SEED):
    """pytorch-fid's InceptionV3 (pool3 block, FID Inception) with seeded_state_dict weights instead of the download;
    returns (model, full state dict as numpy, with fc and num_batches_tracked, as pytorch-fid's file has)."""
    import torch
    from pytorch_fid import inception

    full: dict[str, np.ndarray] = {}
    load = torch.nn.Module.load_state_dict

    def seeded_load(self, sd, *args, **kwargs):  # fid_inception_v3 loads the downloaded dict: give it ours
        if sd != "seeded":
            return load(self, sd, *args, **kwargs)
        own = self.state_dict()
        weights = seeded_state_dict({k: tuple(v.shape) for k, v in own.items()}, seed)
        for k, v in own.items():
            if k in weights:
                full[k] = weights[k]
            elif k == "fc.weight":
                full[k] = (np.random.default_rng(seed + 2).standard_normal(tuple(v.shape)) * 0.01).astype(np.float32)
            else:  # fc.bias, num_batches_tracked
                full[k] = np.zeros(tuple(v.shape), v.numpy().dtype)
        return load(self, {k: torch.from_numpy(a.copy(order="C")) for k, a in full.items()}, strict=True)

    url_loader = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *a, **k: "seeded"
    torch.nn.Module.load_state_dict = seeded_load
    try:
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        inception.load_state_dict_from_url = url_loader
        torch.nn.Module.load_state_dict = load
    return model, full


def reference_features(model, images: np.ndarray) -> np.ndarray:
    """pytorch-fid's get_activations on uint8 (N, H, W, 3): ToTensor (/255, CHW), model, squeeze; float64."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255
        return model(x)[0].squeeze(3).squeeze(2).numpy().astype(np.float64)


def write_golden() -> None:
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance

    DATA.mkdir(parents=True, exist_ok=True)
    model, _ = reference_model()
    imgs = golden_images()
    feats = np.concatenate([reference_features(model, im) for im in imgs])
    stats = golden_statistics()
    np.savez_compressed(
        DATA / "fid_golden.npz",
        images_sha256=images_sha256(imgs),
        features=feats[:, ::FEATURE_STRIDE].astype(np.float32),
        feature_sums=feats.sum(1),
        seed=GOLDEN_SEED,
        frechet=calculate_frechet_distance(*stats),
        torch_version=torch.__version__,
    )
    torch.save(_torch_tiny(), DATA / "fid_tiny.pth")
    torch.save(_torch_tiny(), DATA / "fid_tiny_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"w": torch.zeros(2), "payload": _Evil()}, DATA / "fid_malicious.pth")
    for p in sorted(DATA.glob("fid_*")):
        print(f"wrote {p.relative_to(ROOT)} ({p.stat().st_size} bytes)")
    frechet = float(calculate_frechet_distance(*stats))
    print(f"feature range {feats.min():.3g}..{feats.max():.3g}, mean {feats.mean():.3g}; frechet {frechet:.6f}")


def live(num: int) -> int:
    """pytorch-fid and fid.py on the same `num` images and the same random weights, saved with torch.save."""
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance

    try:
        sys.path.insert(0, str(ROOT))
        import fid
    except ImportError as e:
        print(f"live comparison skipped: fid.py needs paddle here ({e})")
        return 0
    model, full = reference_model()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (num, 64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    t0 = time.perf_counter()
    ref_a, ref_b = reference_features(model, a), reference_features(model, b)
    t_ref = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / "random_inception.pth"
        torch.save({k: torch.from_numpy(v.copy(order="C")) for k, v in full.items()}, pth)
        ours = fid.load_inception(pth)  # warns: a random file is not pytorch-fid's SHA-256
    t0 = time.perf_counter()
    got_a, got_b = fid.inception_features(a, ours, progress=False), fid.inception_features(b, ours, progress=False)
    t_ours = time.perf_counter() - t0
    rel = max(np.abs(got_a - ref_a).max(), np.abs(got_b - ref_b).max()) / np.abs(ref_a).max()
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (ref_a, ref_b)]
    ref_fid = float(calculate_frechet_distance(*stats[0], *stats[1]))
    our_fid = fid.fid(got_a, got_b)
    print(
        f"{num} + {num} images, random weights via torch.save .pth: largest feature difference {rel:.2e} of the "
        f"largest feature; FID pytorch-fid {ref_fid:.6f}, fid.py {our_fid:.6f} "
        f"(relative {abs(our_fid - ref_fid) / abs(ref_fid):.2e})"
    )
    print(
        f"({2 * num / t_ref:.2f} and {2 * num / t_ours:.2f} img/s in one process: bench/bench_fid.py times them apart)"
    )
    return 0 if rel < 1e-4 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--golden", action="store_true", help="rewrite the golden files under tests/data/")
    p.add_argument("--live", action="store_true", help="compare with fid.py now (needs paddle as well)")
    p.add_argument("--num", type=int, default=10, help="images per set for --live")
    args = p.parse_args(argv)
    try:
        import pytorch_fid.inception  # noqa: F401  (imports torch and torchvision)
    except Exception as e:  # ImportError, or torchvision failing to load beside another torch
        print(f"skipped: the reference needs torch, torchvision and pytorch-fid ({e}); see `make fid-reference`")
        return 0
    if args.golden:
        write_golden()
    return live(args.num) if args.live or not args.golden else 0


if __name__ == "__main__":
    sys.exit(main())
