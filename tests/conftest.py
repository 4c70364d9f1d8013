"""Shared test set-up: the project root on sys.path (so tests import the flat modules), the tiny network's
configuration, the data the tests make, and one trained run that the suites share."""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils  # noqa: E402,F401  (hides paddle's "No ccache found" warning: first, as in every module)

# ---------------------------------------------------------------------------------------------
# pretreat / dataReader fixtures
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def celeba_like(seed: int, w: int = 178, h: int = 218) -> np.ndarray:
    """A smooth random uint8 (h, w, 3) picture: JPEG-friendly, different for every seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [
        127.5 + 120 * np.sin(rng.uniform(2, 9) * xx + rng.uniform(2, 9) * yy + rng.uniform(0, 6)) for _ in range(3)
    ]
    return np.clip(np.stack(chans, axis=2), 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_celeba_dir(tmp_path):
    """A folder of 10 CelebA-sized (178x218) JPEGs named like CelebA's (000001.jpg ...)."""
    from PIL import Image

    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(celeba_like(i)).save(folder / f"{i + 1:06d}.jpg", quality=95)
    return folder


def make_faces(path: Path, n: int = 48, seed: int = 0) -> Path:
    """Smooth random uint8 images (N, 64, 64, 3): enough structure for D and G to have work."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    imgs = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, 3)
        base = 0.5 + 0.4 * np.sin(3 * a * xx + 3 * b * yy + c)
        col = rng.uniform(0.3, 1.0, 3)
        imgs.append(np.clip(base[..., None] * col * 255, 0, 255))
    arr = np.stack(imgs).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return path


# train.py flags of the tiny network the CLI tests train
TINY_NET = ["--batch-size", "8", "--ngf", "8", "--ndf", "8", "--nz", "16"]


def tiny(tmp_path: Path, data: Path, **kw):
    """train.py's config for the tiny network on `data`, output in tmp_path/out (2 epochs, seed 3, no bar)."""
    from train import TrainConfig

    base = dict(
        data=str(data), out=str(tmp_path / "out"), epochs=2, batch_size=8, ngf=8, ndf=8, nz=16, seed=3, progress=False
    )
    return TrainConfig(**{**base, **kw})


def run_script(script: str, *args, timeout: int = 120):
    """`python SCRIPT ARGS` from the project root, output captured."""
    import subprocess

    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ---------------------------------------------------------------------------------------------
# app.py: one tiny trained model per session, and the optional tools its tests need


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The output folder of one finished tiny run (5 iterations, EMA on) that the suites share: checkpoint.safetensors
    (with D), generator.safetensors, samples/, log.csv; its data is ../faces.npy. Read it, never change it."""
    from train import train

    d = tmp_path_factory.mktemp("tiny_run")
    train(tiny(d, make_faces(d / "faces.npy"), max_iters=5, ema=0.5))
    return d / "out"


def assert_same_state(a, b, path: str = "") -> None:
    """Two state trees equal leaf for leaf, arrays bit for bit; the config differs only by --resume."""
    assert a.keys() == b.keys(), path
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, dict):
            if k == "config":
                ignore = {"resume": None, "out": None, "allow_pickle": None}  # how it was started, not what it trains
                va, vb = {**va, **ignore}, {**vb, **ignore}
                assert va == vb
            else:
                assert_same_state(va, vb, f"{path}{k}/")
        elif isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and np.array_equal(va, vb), f"{path}{k}"
        else:
            assert va == vb, f"{path}{k}"


# A child's ru_maxrss counts the memory it shared at fork (this pytest process, paddle loaded: 670 MB), so a small
# launcher stands between: it sets the limits, forks the case from itself, and writes the case's own peak and status
_LAUNCH = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]),) * 2)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_limited(argv: list[str], cwd: Path, as_cap: int = 3 << 30, time_limit: float = 120) -> tuple[int, str, float]:
    """(exit status, stderr, peak resident MB) of `python argv...` (the hostile-input suites) under an address-space
    cap, killed (its whole process group) after `time_limit` seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", DCGAN_ONEDNN="0")
    report = cwd / ".status"
    with open(cwd / ".stderr", "w+") as err:
        p = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(report), str(as_cap), *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            p.wait(time_limit)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            pytest.fail(f"killed after {time_limit} s")
        err.seek(0)
        status, maxrss_kb = map(int, report.read_text().split())
        return status, err.read(), maxrss_kb / 1024


def assert_one_line(name: str, status: int, err: str, peak_mb: float, names: str, record_property) -> None:
    """A hostile-input case's contract: exit status 2 and one line on stderr, no traceback, the line naming `names`
    (the file or flag). Records and prints the case's peak memory for the report."""
    record_property("peak_mb", round(peak_mb))
    print(f"{name}: exit {status}, peak {peak_mb:.0f} MB: {err.strip()[:300]}")
    lines = err.strip().splitlines()
    assert status == 2, f"exit status {status}: {err[-2000:]}"
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert names in lines[0], lines[0]


def need(module: str, why: str):
    """Import an optional test tool: missing, a skip naming it outside CI, a failure under CI=true (make test
    installs it there)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        msg = f"{module} is not installed ({why}; make test installs it: pip install -r requirements-app.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tiny_run, tmp_path_factory):
    """`python app.py --ckpt <tiny checkpoint> --port N` running on 127.0.0.1 for the session: its URL.
    APP_TEST_CKPT=path serves another model (e.g. the demo's, for the README's screenshot)."""
    import subprocess
    import time
    import urllib.request

    need("gradio", "the app's tests")
    ckpt = os.environ.get("APP_TEST_CKPT") or str(tiny_run / "checkpoint.safetensors")
    port = free_port()
    log = tmp_path_factory.mktemp("app_server") / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--ckpt", ckpt, "--port", str(port), "--complete-slots", "1",
             "--patience", "0"],  # no early stop: a long completion stays long
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):  # paddle + gradio imports, maybe the oneDNN build: up to two minutes
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"app.py did not answer on {url} in 2 minutes:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
