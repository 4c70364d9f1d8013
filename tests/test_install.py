"""make install: Paddle is installed (the CPU build) only when none is there, so a paddlepaddle-gpu survives;
every pip call goes through constraints.txt. Run against throw-away venvs with a fake pip and stub paddle
packages: nothing is downloaded."""

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

HEADERS = "--no-deps onednn-devel-cpu-iomp==2023.2.0"  # onednn_conv's headers, after Paddle is known to import

FAKE_PIP = """
import sys, pathlib, sysconfig
args = sys.argv[1:]
with open(sys.argv[0] + ".log", "a") as f:
    f.write(" ".join(args) + "\\n")
if "paddlepaddle" in args:  # "install" the CPU build: a stub that imports
    pkg = pathlib.Path(sysconfig.get_paths()["purelib"]) / "paddle"
    pkg.mkdir(parents=True, exist_ok=True)
    stub = "__version__ = '0.0-cpu-stub'\\ndef is_compiled_with_cuda():\\n    return False\\n"
    (pkg / "__init__.py").write_text(stub)
"""


def venv_with(tmp_path, paddle_init: str | None):
    """A venv (no pip: the fake one stands in) whose paddle package is `paddle_init`, or none."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    if paddle_init is not None:
        purelib = subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(purelib) / "paddle").mkdir(parents=True)
        (Path(purelib) / "paddle" / "__init__.py").write_text(paddle_init)
    fake = tmp_path / "fake_pip.py"
    fake.write_text(FAKE_PIP)
    return env_dir, py, fake


def make_install(env_dir, py, fake):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAKEFLAGS", "MFLAGS")}
    env["VIRTUAL_ENV"] = str(env_dir)  # as inside an activated venv: no .venv is made
    r = subprocess.run(
        ["make", "-s", "install", f"PY={py}", f"PIP={py} {fake}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    log = Path(str(fake) + ".log")
    calls = log.read_text().splitlines() if log.exists() else []
    return r, calls


def test_no_paddle_gets_the_cpu_build(tmp_path):
    r, calls = make_install(*venv_with(tmp_path, None))
    assert r.returncode == 0, r.stderr
    assert calls == ["-r requirements.txt", "paddlepaddle", HEADERS]
    assert "installing the CPU build" in r.stdout and "Paddle 0.0-cpu-stub (CPU)" in r.stdout


def test_a_gpu_paddle_is_kept(tmp_path):
    gpu = "__version__ = '3.3.1-gpu-stub'\ndef is_compiled_with_cuda():\n    return True\n"
    r, calls = make_install(*venv_with(tmp_path, gpu))
    assert r.returncode == 0, r.stderr
    assert calls == ["-r requirements.txt", HEADERS]  # no paddlepaddle over it
    assert "Paddle 3.3.1-gpu-stub with CUDA" in r.stdout


def test_a_paddle_that_does_not_import_is_reported_not_replaced(tmp_path):
    r, calls = make_install(
        *venv_with(tmp_path, "raise ImportError('libcudnn.so.9: cannot open shared object file')\n")
    )
    assert r.returncode != 0
    assert calls == ["-r requirements.txt"]
    assert "libcudnn.so.9" in r.stderr and "does not import" in r.stdout


def test_pip_runs_with_the_constraints_and_requirements_hold_no_paddle():
    r = subprocess.run(
        ["make", "-n", "install", "install-dev", "install-app-test", "VIRTUAL_ENV=x", "PY=python"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    pip_lines = [x for x in r.stdout.splitlines() if " -m pip install" in x]
    assert len(pip_lines) >= 3 and all("-c constraints.txt" in x for x in pip_lines), r.stdout
    for req in ("requirements.txt", "requirements-dev.txt", "requirements-app.txt", "requirements-app-test.txt"):
        names = [
            re.split(r"[<>=\[; ]", x.strip())[0].lower()
            for x in (ROOT / req).read_text().splitlines()
            if x.strip() and not x.startswith("#")
        ]
        assert not any(n.startswith("paddle") for n in names), req
        pins = {
            x.split("==")[0].lower().replace("_", "-")
            for x in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in x
        }
        missing = [n for n in names if n.replace("_", "-") not in pins]
        assert not missing, f"constraints.txt does not pin {missing}: run make constraints"
    text = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^paddlepaddle==3\.", text, re.M) and not re.search(r"^(pip|torch)==", text, re.M)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s]+", x) for x in text.splitlines() if x and not x.startswith("#"))


# Outside a venv: the Python that makes .venv is the "system" one. A stand-in for AI Studio's conda (or a system
# install) with paddlepaddle-gpu: the real base interpreter with a stub paddle in a user site-packages of our own
# (PYTHONUSERBASE). A plain .venv does not see user site-packages, exactly as it does not see a system's.


def system_python_with(tmp_path, paddle_init: str | None):
    """(base python, env, repo copy, fake pip): a 'system' Python whose site-packages hold `paddle_init`."""
    base = getattr(sys, "_base_executable", sys.executable)
    drop = ("PYTHONPATH", "PYTHONNOUSERSITE", "MAKEFLAGS", "MFLAGS", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUSERBASE"] = str(tmp_path / "userbase")
    usersite = subprocess.run(
        [base, "-c", "import site; print(site.getusersitepackages())"], capture_output=True, text=True, env=env
    ).stdout.strip()
    if paddle_init is not None:
        (Path(usersite) / "paddle").mkdir(parents=True)
        (Path(usersite) / "paddle" / "__init__.py").write_text(paddle_init)
    repo = tmp_path / "repo"  # make creates .venv in its working folder: a copy, not the real checkout
    repo.mkdir()
    for name in ("Makefile", "requirements.txt", "constraints.txt"):
        (repo / name).write_text((ROOT / name).read_text())
    fake = tmp_path / "fake_pip.py"
    fake.write_text(FAKE_PIP)
    return base, env, repo, fake


def make_install_outside_venv(base, env, repo, fake):
    py = repo / ".venv" / "bin" / "python"
    r = subprocess.run(  # --without-pip: the fake pip stands in, nothing is downloaded
        ["make", "-s", "install", f"PYTHON={base}", "VENV_ARGS=--without-pip", f"PIP={py} {fake}"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    log = Path(str(fake) + ".log")
    calls = log.read_text().splitlines() if log.exists() else []
    return r, calls, (repo / ".venv" / "pyvenv.cfg").read_text()


GPU_STUB = "__version__ = '3.3.1-gpu-stub'\ndef is_compiled_with_cuda():\n    return True\n"


def test_outside_a_venv_the_systems_gpu_paddle_trains_and_no_cpu_build_shadows_it(tmp_path):
    r, calls, cfg = make_install_outside_venv(*system_python_with(tmp_path, GPU_STUB))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "include-system-site-packages = true" in cfg
    assert calls == ["-r requirements.txt", HEADERS]  # no paddlepaddle
    assert "has Paddle 3: .venv uses it" in r.stdout
    assert "Paddle 3.3.1-gpu-stub with CUDA: train.py uses the GPU" in r.stdout
    assert str(tmp_path / "userbase") in r.stdout  # where that Paddle lives
    assert "source .venv/bin/activate" in r.stdout  # how to run the scripts with it


def test_outside_a_venv_the_pip_of_a_system_site_venv_keeps_the_systems_versions(tmp_path):
    base, env, repo, _ = system_python_with(tmp_path, GPU_STUB)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "pyvenv.cfg").write_text("include-system-site-packages = true\n")
    dry = subprocess.run(["make", "-n", "install", f"PYTHON={base}"], cwd=repo, capture_output=True, text=True, env=env)
    pip_lines = [x for x in dry.stdout.splitlines() if " -m pip install" in x]
    assert pip_lines and not any("constraints.txt" in x for x in pip_lines), dry.stdout


def test_outside_a_venv_without_paddle_the_venv_is_plain_and_gets_the_cpu_build(tmp_path):
    r, calls, cfg = make_install_outside_venv(*system_python_with(tmp_path, None))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "include-system-site-packages = false" in cfg
    assert calls == ["-r requirements.txt", "paddlepaddle", HEADERS]
    assert "Paddle 0.0-cpu-stub (CPU): train.py trains on the CPU" in r.stdout


def test_outside_a_venv_a_paddle_2_is_not_used(tmp_path):
    old = "__version__ = '2.6.1'\ndef is_compiled_with_cuda():\n    return True\n"
    r, calls, cfg = make_install_outside_venv(*system_python_with(tmp_path, old))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "include-system-site-packages = false" in cfg and "Paddle is not 3.x" in r.stdout
    assert calls == ["-r requirements.txt", "paddlepaddle", HEADERS]
