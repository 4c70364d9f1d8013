"""A web app over a trained generator: new faces, interpolation, face arithmetic, completing a photo (Gradio).

    make app                                          # installs requirements-app.txt, then starts this
    python app.py                                     # http://127.0.0.1:7860 with the model found in output/
    python app.py --ckpt run2/checkpoint.safetensors --host 0.0.0.0 --port 8080 --complete-slots 2

The model: --ckpt, else output/checkpoint.safetensors or output/generator.safetensors, else the same in output/demo/
(make demo). Completion runs complete.py's --fast setting (complete.FAST), which has no prior term (lam = 0): a
generator file is all it needs (were FAST to use the prior, D would come from train.py's checkpoint, and with a
generator file alone the page would say so). Model files are safetensors only: a served app never unpickles.

The port is --port, else GRADIO_SERVER_PORT (AI Studio's app hosting sets it), else 7860. Nothing goes out to the
network: no share tunnel, no analytics, fonts served locally. Requests wait in Gradio's queue; at most
--complete-slots completions run at once, and generating faces does not wait for them. Labels follow the
browser's language (English, 中文). Every button calls the project's own functions (generator.py, complete.py,
pretreat.py's crop); this file holds the page and checks what visitors send.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import utils
from utils import UserError

import numpy as np

# ---------------------------------------------------------------------------------------------
# adapters: the only calls into the project's modules (kept few and small: the modules are being reorganised)

# Completion's preset for a web page: complete.py's --fast setting (complete.FAST, chosen by measurement for seconds
# a face on a CPU) instead of its 1500 iterations x 8 starts
FAST = {
    "iters": 1100,
    "restarts": 2,
    "lr": 0.1,
    "schedule": "cosine",
    "lam": 0.0,
    "patience": 0,
}  # = complete.FAST (a test checks): no paddle import
FAST_ITERS, FAST_RESTARTS, FAST_LR = FAST["iters"], FAST["restarts"], FAST["lr"]
LAM = FAST["lam"]  # the prior term's weight in the fast setting (used when the model file holds D)


def prior_text(has_d: bool) -> str:
    """How a completion on this model treats the prior term log(1 - D(G(z)))."""
    if LAM <= 0:
        return "the known pixels only (complete.py --fast has no prior term)"
    return "with D's prior" if has_d else "without the prior term (the model file holds no D)"


def load_models(path: str):
    """(G, D or None, facts about the file) from a generator file or train.py's checkpoint; never a pickle."""
    import modelfile

    kind, tree = modelfile.read_model_file(path, allow_pickle=False)
    G = modelfile.load_generator(path)
    D = modelfile.load_discriminator(path) if kind == "checkpoint" else None
    cfg = tree.get("config") if isinstance(tree.get("config"), dict) else {}
    info = {"file": path, "kind": kind, "nz": G.nz, "ngf": G.ngf, "ndf": D.ndf if D is not None else None}
    info["iteration"], info["epoch"] = tree.get("iteration"), tree.get("epoch")
    info["ema"] = bool(tree.get("G_ema")) if kind == "checkpoint" else cfg.get("ema")
    for layer in (G, D):  # inference only: no gradients for the weights, whatever runs at the same time
        for p in layer.parameters() if layer is not None else ():
            p.stop_gradient = True
    return G, D, info


def model_file_names() -> tuple[str, str]:
    """(the training checkpoint's file name, the generator file's), looked for in the model folders."""
    import modelfile

    return modelfile.CHECKPOINT_FILE, modelfile.GENERATOR_FILE


def conv_backend() -> str:
    import network

    return network.conv_backend()


def faces_of(G, num: int, seed: int) -> np.ndarray:
    import generator

    return generator.generate(G, num, seed)


def walk(G, seed_a: int, seed_b: int, frames: int) -> np.ndarray:
    """uint8 [frames, 64, 64, 3]: slerp from face 0 of seed_a to face 0 of seed_b."""
    import generator

    z0, z1 = generator.latent(1, G.nz, seed_a)[0], generator.latent(1, G.nz, seed_b)[0]
    return generator.sample(G, generator.slerp(z0, z1, frames))


def walk_gif(strip: np.ndarray, path: Path) -> None:
    import faces
    import generator

    faces.save_gif(generator.gif_frames(strip[None]), path)


def face_arithmetic(G, a: list[int], b: list[int], c: list[int], seed: int) -> np.ndarray:
    import arithmetic

    return arithmetic.arithmetic(G, a, b, c, seed=seed).grid


def crop_photo(data: bytes) -> np.ndarray:
    """uint8 [64, 64, 3], cropped as pretreat.py crops (upright, RGB, shorter side 64, the tutorial's box)."""
    import faces

    try:
        return faces.load_face(data)
    except Exception as e:  # whatever a bad file makes Pillow raise
        raise UserError(faces.unreadable_reason(e, len(data))) from None


def max_pixels() -> int:
    import faces

    return faces.MAX_PIXELS


@functools.cache  # built once from scikit-image's bundled faces (~0.5 s)
def demo_faces() -> np.ndarray:
    import pretreat

    return pretreat.demo_faces()


def preset_mask(kind: str, seed: int) -> np.ndarray:
    import complete

    return complete.make_mask(kind, num=1, seed=seed).reshape(64, 64)


def check_mask(mask: np.ndarray) -> None:
    import complete

    complete.check_mask(mask)


def run_completion(
    G, D, face: np.ndarray, mask: np.ndarray, iters: int, restarts: int, seed: int, progress: bool, patience: int
):
    """(G(z) found, blended result, biharmonic inpainting, masked view), each uint8 [64, 64, 3]."""
    import complete

    c = complete.complete(
        (G, D),
        face[None],
        mask,
        iters=iters,
        lam=LAM if D is not None else 0.0,
        restarts=restarts,
        seed=seed,
        lr=FAST_LR,
        schedule=FAST["schedule"],
        progress=progress,
        patience=patience,
    )
    return (
        c.generated[0],
        c.completed[0],
        complete.inpaint_biharmonic(face[None], mask)[0],
        complete.masked_view(face[None], mask)[0],
    )


def grid(images: np.ndarray, nrow: int | None = None) -> np.ndarray:
    import faces

    return faces.make_grid(images, nrow=nrow)


# ---------------------------------------------------------------------------------------------
# limits on what a visitor can ask for

SEED_MAX = 2**31 - 1  # what a browser's number field and numpy's generator both take exactly
MAX_FACES = 256  # faces per request: 256 at ngf 64 take ~2 s on two cores; the slider stops here too
MAX_FRAMES = 64
MAX_GROUP = 16  # faces per arithmetic group, indices below ARITH_POOL
ARITH_POOL = 64
MAX_ITERS, MAX_RESTARTS = 1500, 8  # complete.py's defaults are the most one request may take
MIN_SIDE = 16  # a photo smaller than this holds no face to crop
EDIT_SCALE = 4  # the brush canvas shows the 64x64 crop at 256x256
MAX_UPLOAD = "20mb"
MASK_PRESETS = ("brush", "center", "left", "eyes", "mouth", "random")


def _int(value, name: str, low: int, high: int) -> int:
    """An integer in [low, high] from a form field, or UserError naming the field."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}: not a number ({value!r})") from None
    if not np.isfinite(v) or v != int(v):
        raise UserError(f"{name}: must be a whole number, got {value!r}")
    if not low <= v <= high:
        raise UserError(f"{name}: must be between {low} and {high}, got {int(v)}")
    return int(v)


def _indices(text, name: str) -> list[int]:
    parts = str(text or "").replace(",", " ").split()
    if not parts:
        raise UserError(f"group {name}: give at least one face number, e.g. 0, 3, 5")
    if len(parts) > MAX_GROUP:
        raise UserError(f"group {name}: at most {MAX_GROUP} faces, got {len(parts)}")
    return [_int(p, f"group {name}", 0, ARITH_POOL - 1) for p in parts]


def _error(e: Exception) -> str:
    """The message a page shows for a failed request; the server log gets the traceback of a bug."""
    if isinstance(e, UserError):
        return f"⚠️ {e}"
    traceback.print_exc()
    return f"⚠️ internal error ({type(e).__name__}: {e}); the server keeps running"


# ---------------------------------------------------------------------------------------------
# the callbacks: plain functions of the form values (tests call them directly), returning (outputs..., message)


@dataclass
class Models:
    G: object
    D: object
    info: dict
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dcgan-app-")))
    patience: int = FAST["patience"]  # completion's early stop (app.py --patience)


def generate_cb(m: Models, seed, num):
    """(grid, [(face, caption)], message)"""
    try:
        seed = _int(seed, "seed", 0, SEED_MAX)
        n = _int(num, "how many", 1, 10**9)
        note = f" (capped at {MAX_FACES})" if n > MAX_FACES else ""
        faces = faces_of(m.G, min(n, MAX_FACES), seed)
        return grid(faces), [(f, f"{i}") for i, f in enumerate(faces)], f"{len(faces)} faces of seed {seed}{note}"
    except Exception as e:
        return None, [], _error(e)


def interpolate_cb(m: Models, seed_a, seed_b, frames):
    """(strip, GIF path, message)"""
    try:
        a, b = _int(seed_a, "seed A", 0, SEED_MAX), _int(seed_b, "seed B", 0, SEED_MAX)
        k = _int(frames, "frames", 2, MAX_FRAMES)
        strip = walk(m.G, a, b, k)
        for old in m.scratch.glob("*.gif"):  # Gradio has copied earlier ones into its cache
            if time.time() - old.stat().st_mtime > 600:
                old.unlink(missing_ok=True)
        gif = m.scratch / f"walk_{a}_{b}_{k}_{time.time_ns()}.gif"
        walk_gif(strip, gif)
        return grid(strip, nrow=k), str(gif), f"{k} frames from face 0 of seed {a} to face 0 of seed {b}"
    except Exception as e:
        return None, None, _error(e)


def pool_cb(m: Models, seed):
    """(the numbered faces the groups pick from, message)"""
    try:
        s = _int(seed, "seed", 0, SEED_MAX)
        return [(f, f"{i}") for i, f in enumerate(faces_of(m.G, ARITH_POOL, s))], ""
    except Exception as e:
        return [], _error(e)


def arithmetic_cb(m: Models, seed, a, b, c):
    """(grid: a row per group, its faces then G(mean z); the last row G(A - B + C) and neighbours, message)"""
    try:
        s = _int(seed, "seed", 0, SEED_MAX)
        groups = [_indices(t, name) for t, name in ((a, "A"), (b, "B"), (c, "C"))]
        return face_arithmetic(m.G, *groups, s), f"mean(A) - mean(B) + mean(C) of the faces of seed {s}"
    except Exception as e:
        return None, _error(e)


def photo_cb(file):
    """An uploaded file (path or bytes) -> (the editor's value: the crop at 256 px, the crop, message)."""
    from PIL import Image

    try:
        if file is None:
            raise UserError("no file")
        name = "the upload" if isinstance(file, bytes) else Path(file).name
        data = file if isinstance(file, bytes) else Path(file).read_bytes()
        if not data:
            raise UserError(f"{name}: empty file (0 bytes)")
        try:
            import io

            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                w, h = img.size
        except Exception:
            w = h = None  # crop_photo says what is wrong
        if w is not None and min(w, h) < MIN_SIDE:
            raise UserError(f"{name}: {w}x{h} pixels, too small to hold a face (at least {MIN_SIDE} a side)")
        try:
            face = crop_photo(data)
        except UserError as e:
            raise UserError(f"{name}: {e}") from None
        return _editor(face), face, f"cropped to 64x64 as pretreat.py does (from {w}x{h})"
    except Exception as e:
        return None, None, _error(e)


def demo_face_cb(index):
    try:
        face = demo_faces()[_int(index, "demo face", 0, 199)]
        return _editor(face), face, "a face from the demo set (scikit-image's LFW subset)"
    except Exception as e:
        return None, None, _error(e)


def _editor(face: np.ndarray) -> dict:
    big = np.repeat(np.repeat(face, EDIT_SCALE, axis=0), EDIT_SCALE, axis=1)
    return {"background": big, "layers": [], "composite": big}


def painted_mask(editor) -> np.ndarray:
    """bool [64, 64]: the crop pixels a brush stroke covers at least a quarter of (alpha of the editor's layers)."""
    layers = (editor or {}).get("layers") or []
    side = 64 * EDIT_SCALE
    covered = np.zeros((side, side), bool)
    for layer in layers:
        a = np.asarray(layer)
        if a.ndim != 3 or a.shape[:2] != (side, side):
            raise UserError(f"the brush layer is {list(a.shape)}, expected {side}x{side}: load the photo again")
        covered |= a[..., 3] > 0 if a.shape[2] == 4 else a.max(axis=2) > 0
    return covered.reshape(64, EDIT_SCALE, 64, EDIT_SCALE).mean(axis=(1, 3)) >= 0.25


def complete_cb(m: Models, face, editor, preset, iters, restarts, seed, progress: bool = False):
    """(masked input, G(z), blended result, biharmonic inpainting, message)"""
    try:
        if face is None:
            raise UserError("upload a photo or pick a demo face first")
        face = np.asarray(face, np.uint8)
        if face.shape != (64, 64, 3):
            raise UserError(f"the crop is {list(face.shape)}, expected [64, 64, 3]: load the photo again")
        s = _int(seed, "seed", 0, SEED_MAX)
        if preset not in MASK_PRESETS:
            raise UserError(f"mask: one of {', '.join(MASK_PRESETS)}, not {preset!r}")
        mask = painted_mask(editor) if preset == "brush" else preset_mask(preset, s)
        if preset == "brush" and not mask.any():
            raise UserError("nothing to fill: paint over the part to complete (or choose a preset mask)")
        if mask.all():
            raise UserError("everything is masked: leave some of the face for the completion to match")
        check_mask(mask)
        n_it = _int(iters, "iterations", 1, MAX_ITERS)
        n_re = _int(restarts, "restarts", 1, MAX_RESTARTS)
        generated, completed, biharmonic, masked = run_completion(
            m.G, m.D, face, mask, n_it, n_re, s, progress, m.patience
        )
        msg = f"{int(mask.sum())} pixels filled; {n_it} iterations x {n_re} starts, {prior_text(m.D is not None)}"
        return masked, generated, completed, biharmonic, msg
    except Exception as e:
        return None, None, None, None, _error(e)


def model_text(m: Models) -> str:
    i = m.info
    trained = (
        f"{i['iteration']} iterations ({i['epoch']} epochs)"
        if i.get("iteration") is not None
        else "not recorded in a generator file (train.py's checkpoint records it)"
    )
    rows = [
        ("file", f"`{i['file']}` ({'training checkpoint' if i['kind'] == 'checkpoint' else 'generator file'})"),
        ("nz", i["nz"]),
        ("ngf", i["ngf"]),
        ("ndf", i["ndf"] if i["ndf"] is not None else "no discriminator in this file"),
        ("trained", trained),
        ("EMA weights", {True: "yes", False: "no"}.get(i.get("ema"), "not recorded")),
        ("convolutions", conv_backend()),
        (
            "completion",
            f"prior term lam = {LAM}"
            if m.D is not None and LAM > 0
            else f"no prior term (lam = 0): {'the fast setting' if LAM <= 0 else 'a generator file has no D'}",
        ),
    ]
    return "\n".join(f"- **{k}**: {v}" for k, v in rows)


# ---------------------------------------------------------------------------------------------
# finding the model


@dataclass
class AppConfig:
    ckpt: str = field(default="", metadata={"help": "model file; default: found in output/, else output/demo/"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0: every interface)"})
    port: int = field(default=0, metadata={"help": "port; 0: GRADIO_SERVER_PORT, else 7860"})
    complete_slots: int = field(default=1, metadata={"help": "completions running at once (each takes the CPU)"})
    patience: int = field(
        default=FAST["patience"],
        metadata={"help": "a completion stops early once its loss has not improved for this many steps (0: never)"},
    )


MODEL_DIRS = ("output", "output/demo")
NO_MODEL = (
    "no model found (looked for checkpoint.safetensors and generator.safetensors in output/ and output/demo/): "
    "run `make demo` (about 4 minutes on a CPU) or train one with train.py, or pass --ckpt PATH"
)


def find_model(ckpt: str = "", root: str | os.PathLike = ".") -> str:
    if ckpt:
        if not os.path.isfile(ckpt):
            raise UserError(f"{ckpt}: no such model file")
        return ckpt
    for d in MODEL_DIRS:
        for name in model_file_names():  # the checkpoint first: it holds D too
            if (Path(root) / d / name).is_file():
                return str(Path(d) / name) if str(root) == "." else str(Path(root) / d / name)
    raise UserError(NO_MODEL)


def port_of(cfg: AppConfig) -> int:
    if cfg.port:
        return _int(cfg.port, "--port", 1, 65535)
    env = os.environ.get("GRADIO_SERVER_PORT", "")
    return _int(env, "GRADIO_SERVER_PORT", 1, 65535) if env else 7860


# ---------------------------------------------------------------------------------------------
# the page: labels in English and Chinese (Gradio's I18n picks by the browser's language)

EN = {
    "title": "## DCGAN faces: a trained generator to play with",
    "tab_generate": "Generate",
    "tab_interpolate": "Interpolate",
    "tab_arithmetic": "Face arithmetic",
    "tab_complete": "Complete a photo",
    "tab_model": "Model",
    "seed": "Seed",
    "dice": "Random seed",
    "how_many": "How many faces",
    "generate": "Generate",
    "grid": "Grid",
    "faces": "Faces (click one to download it)",
    "seed_a": "Seed A (its face 0)",
    "seed_b": "Seed B (its face 0)",
    "frames": "Frames",
    "interpolate": "Walk from A to B",
    "strip": "Slerp path",
    "gif": "Animated",
    "arith_help": "Pick faces by their numbers below: the result is G(mean(A) − mean(B) + mean(C)), "
    "as in the DCGAN paper (rows: A, B, C, each ending with the face of its mean z; last row: the result "
    "and 8 neighbours).",
    "pool": "Faces of this seed",
    "show_pool": "Show the faces",
    "group_a": "A (e.g. smiling woman)",
    "group_b": "B (e.g. neutral woman)",
    "group_c": "C (e.g. neutral man)",
    "arithmetic": "A − B + C",
    "result": "Result",
    "complete_help": "Upload a photo (or pick a demo face): it is cropped to 64×64 as the training faces were. "
    "Paint over the part to fill in, or choose a preset mask, then Complete.",
    "no_prior": "This model file holds no discriminator: completion matches the known pixels only (no prior "
    "term). Start the app with train.py's checkpoint.safetensors for the full method.",
    "upload": "Photo",
    "demo_faces": "…or a demo face",
    "paint": "Paint the part to fill in",
    "crop": "The 64×64 crop",
    "mask": "Mask",
    "mask_brush": "my brush strokes",
    "mask_center": "center",
    "mask_left": "left half",
    "mask_eyes": "eyes",
    "mask_mouth": "mouth",
    "mask_random": "random pixels (80%)",
    "iters": "Iterations",
    "restarts": "Restarts",
    "complete": "Complete",
    "masked": "Masked input",
    "generated": "G(ẑ)",
    "blended": "Completed (blended)",
    "biharmonic": "Biharmonic inpainting",
}
ZH = {
    "title": "## DCGAN 人脸：来玩训练好的生成器",
    "tab_generate": "生成",
    "tab_interpolate": "插值",
    "tab_arithmetic": "人脸运算",
    "tab_complete": "补全照片",
    "tab_model": "模型",
    "seed": "随机种子",
    "dice": "随机种子",
    "how_many": "人脸数量",
    "generate": "生成",
    "grid": "网格",
    "faces": "人脸（点击可下载）",
    "seed_a": "种子 A（第 0 张脸）",
    "seed_b": "种子 B（第 0 张脸）",
    "frames": "帧数",
    "interpolate": "从 A 走到 B",
    "strip": "球面插值路径",
    "gif": "动图",
    "arith_help": "按下方的编号挑选人脸：结果是 G(mean(A) − mean(B) + mean(C))，与 DCGAN 论文一致（各行依次为 A、B、C，"
    "每行最后是其平均 z 生成的脸；最后一行是结果及其 8 个邻居）。",
    "pool": "该种子的人脸",
    "show_pool": "显示人脸",
    "group_a": "A（例如微笑的女性）",
    "group_b": "B（例如无表情的女性）",
    "group_c": "C（例如无表情的男性）",
    "arithmetic": "A − B + C",
    "result": "结果",
    "complete_help": "上传一张照片（或选一张示例人脸）：它会像训练数据一样被裁剪为 64×64。"
    "涂抹要补全的部分，或选择预设遮罩，然后点击补全。",
    "no_prior": "该模型文件不含判别器：补全只匹配已知像素（没有先验项）。"
    "用 train.py 的 checkpoint.safetensors 启动可使用完整方法。",
    "upload": "照片",
    "demo_faces": "……或一张示例人脸",
    "paint": "涂抹要补全的部分",
    "crop": "64×64 裁剪",
    "mask": "遮罩",
    "mask_brush": "我的笔刷",
    "mask_center": "中间",
    "mask_left": "左半边",
    "mask_eyes": "眼睛",
    "mask_mouth": "嘴巴",
    "mask_random": "随机像素（80%）",
    "iters": "迭代次数",
    "restarts": "重启次数",
    "complete": "补全",
    "masked": "遮罩后的输入",
    "generated": "G(ẑ)",
    "blended": "补全结果（融合）",
    "biharmonic": "双调和修复",
}
# faces are 64 px: shown larger, with their pixels sharp
CSS = (
    "#gen-grid img, #strip img, #arith img, .face img, #editor canvas { image-rendering: pixelated; }"
    " .face img { width: 100%; height: 100%; object-fit: contain; }"
)
DEMO_PICKS = 8  # demo faces offered in the completion tab


def i18n():
    import gradio as gr

    return gr.I18n(en=EN, zh=ZH, **{"zh-CN": ZH})


def build(m: Models, complete_slots: int = 1):
    """The Blocks page over the callbacks above."""
    import gradio as gr

    t = i18n()
    # delete_cache: result files older than an hour go, checked every 30 minutes (a long-running public page)
    with gr.Blocks(title="DCGAN faces", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(t("title"))
        with gr.Tabs():
            _generate_tab(gr, t, m)
            _interpolate_tab(gr, t, m)
            seed, pool, msg = _arithmetic_tab(gr, t, m)
            _complete_tab(gr, t, m, complete_slots)
            with gr.Tab(t("tab_model"), id="model"):
                gr.Markdown(model_text(m), elem_id="model-info")
        demo.load(lambda s: pool_cb(m, s), seed, [pool, msg], api_visibility="private")  # faces to pick from
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def _generate_tab(gr, t, m: Models) -> None:
    with gr.Tab(t("tab_generate"), id="generate"):
        with gr.Row(equal_height=True):
            seed = gr.Number(0, precision=0, label=t("seed"), elem_id="gen-seed")
            dice = gr.Button(t("dice"), elem_id="dice")
            num = gr.Slider(1, MAX_FACES, 64, step=1, label=t("how_many"), elem_id="gen-num")
            go = gr.Button(t("generate"), variant="primary", elem_id="generate-btn")
        msg = gr.Markdown(elem_id="gen-msg")
        with gr.Row():
            image = gr.Image(label=t("grid"), format="png", interactive=False, elem_id="gen-grid", scale=1)
            gallery = gr.Gallery(label=t("faces"), columns=8, format="png", elem_classes="face", scale=1)
        outputs = [image, gallery, msg]
        go.click(lambda s, n: generate_cb(m, s, n), [seed, num], outputs, api_name="generate")
        dice.click(
            lambda: int(np.random.default_rng().integers(0, SEED_MAX)), None, seed, api_name="dice", queue=False
        ).then(lambda s, n: generate_cb(m, s, n), [seed, num], outputs, api_visibility="private")


def _interpolate_tab(gr, t, m: Models) -> None:
    with gr.Tab(t("tab_interpolate"), id="interpolate"):
        with gr.Row(equal_height=True):
            a = gr.Number(0, precision=0, label=t("seed_a"))
            b = gr.Number(1, precision=0, label=t("seed_b"))
            k = gr.Slider(2, MAX_FRAMES, 16, step=1, label=t("frames"))
            go = gr.Button(t("interpolate"), variant="primary", elem_id="interpolate-btn")
        msg = gr.Markdown()
        strip = gr.Image(label=t("strip"), format="png", interactive=False, elem_id="strip")
        gif = gr.Image(
            label=t("gif"), type="filepath", interactive=False, elem_id="gif", elem_classes="face", height=260
        )
        go.click(lambda *v: interpolate_cb(m, *v), [a, b, k], [strip, gif, msg], api_name="interpolate")


def _arithmetic_tab(gr, t, m: Models):
    with gr.Tab(t("tab_arithmetic"), id="arithmetic"):
        gr.Markdown(t("arith_help"))
        with gr.Row(equal_height=True):
            seed = gr.Number(0, precision=0, label=t("seed"))
            show = gr.Button(t("show_pool"))
        pool = gr.Gallery(label=t("pool"), columns=16, format="png", elem_classes="face", height=300)
        with gr.Row(equal_height=True):
            a = gr.Textbox("0, 1, 2", label=t("group_a"))
            b = gr.Textbox("3, 4, 5", label=t("group_b"))
            c = gr.Textbox("6, 7, 8", label=t("group_c"))
            go = gr.Button(t("arithmetic"), variant="primary", elem_id="arithmetic-btn")
        msg = gr.Markdown()
        out = gr.Image(label=t("result"), format="png", interactive=False, elem_id="arith")
        show.click(lambda s: pool_cb(m, s), seed, [pool, msg], api_name="faces_to_pick")
        go.click(lambda *v: arithmetic_cb(m, *v), [seed, a, b, c], [out, msg], api_name="arithmetic")
    return seed, pool, msg


def _complete_inputs(gr, t):
    """The Complete tab's inputs: the photo (upload, demo faces, the crop), the painting, the search's settings."""
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label=t("upload"), type="filepath", elem_id="upload", height=120)
            picks = gr.Gallery(
                [(f, str(i)) for i, f in enumerate(demo_faces()[:DEMO_PICKS])],
                label=t("demo_faces"),
                columns=DEMO_PICKS // 2,
                allow_preview=False,
                elem_classes="face",
                elem_id="demo-faces",
                height=180,
            )
            crop = gr.Image(
                label=t("crop"), format="png", interactive=False, elem_classes="face", elem_id="crop", height=160
            )
        with gr.Column(scale=2):
            editor = gr.ImageMask(
                label=t("paint"),
                sources=[],
                type="numpy",
                image_mode="RGBA",
                format="png",
                canvas_size=(64 * EDIT_SCALE, 64 * EDIT_SCALE),
                fixed_canvas=True,
                transforms=(),
                layers=False,
                brush=gr.Brush(default_size=24, colors=["#ff00ff"], color_mode="fixed"),
                elem_id="editor",
            )
        with gr.Column(scale=1):
            keys = ("brush", "center", "left", "eyes", "mouth", "random")
            preset = gr.Radio([(t(f"mask_{k}"), k) for k in keys], value="brush", label=t("mask"))
            iters = gr.Slider(1, MAX_ITERS, FAST_ITERS, step=1, label=t("iters"))
            restarts = gr.Slider(1, MAX_RESTARTS, FAST_RESTARTS, step=1, label=t("restarts"))
            seed = gr.Number(0, precision=0, label=t("seed"))
            go = gr.Button(t("complete"), variant="primary", elem_id="complete-btn")
    return upload, picks, crop, editor, preset, iters, restarts, seed, go


def _complete_tab(gr, t, m: Models, slots: int) -> None:
    with gr.Tab(t("tab_complete"), id="complete"):
        gr.Markdown(t("complete_help"))
        if m.D is None and LAM > 0:
            gr.Markdown(t("no_prior"), elem_id="no-prior")
        face = gr.State(None)  # the 64x64 crop, kept on the server (a visitor cannot send one of any size)
        upload, picks, crop, editor, preset, iters, restarts, seed, go = _complete_inputs(gr, t)
        msg = gr.Markdown(elem_id="complete-msg")
        with gr.Row():
            outs = [
                gr.Image(
                    label=t(k), format="png", interactive=False, elem_classes="face", elem_id=f"out-{k}", height=240
                )
                for k in ("masked", "generated", "blended", "biharmonic")
            ]

        def loaded(editor_value, crop_value, text):
            return editor_value, crop_value, crop_value, text

        def pick(evt):
            return loaded(*demo_face_cb(evt.index))

        pick.__annotations__["evt"] = gr.SelectData  # Gradio finds the event by this hint (a string here otherwise)

        # Gradio's way: a gr.Progress default makes the page show complete.py's tqdm bar
        def run(f, ed, p, it, re, s, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
            return complete_cb(m, f, ed, p, it, re, s, progress=True)

        upload.upload(lambda f: loaded(*photo_cb(f)), upload, [editor, crop, face, msg], api_name="photo")
        picks.select(pick, None, [editor, crop, face, msg], api_visibility="private")
        go.click(
            run,
            [face, editor, preset, iters, restarts, seed],
            [*outs, msg],
            api_name="complete",
            concurrency_limit=slots,
            concurrency_id="complete",
        )


def serve(cfg: AppConfig, block: bool = True):
    """Load the model, build the page, start the server; returns the Blocks (running) when block is False."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, no version check
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if cfg.complete_slots < 1:
        raise UserError(f"--complete-slots must be >= 1 (got {cfg.complete_slots})")
    path = find_model(cfg.ckpt)
    port = port_of(cfg)
    from PIL import Image

    # Gradio itself decodes the images sent to the editor's API: the same cap as a crop's (Pillow raises its
    # DecompressionBombError at twice MAX_IMAGE_PIXELS)
    Image.MAX_IMAGE_PIXELS = max_pixels() // 2
    G, D, info = load_models(path)
    if cfg.patience < 0:
        raise UserError(f"--patience must be >= 0 (got {cfg.patience})")
    models = Models(G, D, info, patience=cfg.patience)
    print(f"app: {path}: nz={G.nz} ngf={G.ngf}, {'with D' if D is not None else 'no D'}; {conv_backend()}")
    demo = build(models, cfg.complete_slots)
    demo.launch(
        server_name=cfg.host,
        server_port=port,
        share=False,
        show_error=True,  # (only Gradio's own checks raise: a value out of a slider's range, an image over the cap)
        i18n=i18n(),
        css=CSS,
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=[],
        enable_monitoring=False,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
    )
    return demo


def main(argv: list[str] | None = None) -> None:
    serve(utils.parse_config(AppConfig, argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))
