# make install   the project's packages (+ CPU Paddle if none)   make install-dev   + test and lint tools
# make test      fast tests (what CI runs)       make test-all   fast + slow (end-to-end demo, notebook)
# make demo      the CPU demo, install included    make bench      speed benchmarks
# make lint      ruff                              make constraints   re-pin constraints.txt from a clean venv
# make app       the web app (app.py), install included: make app APP_ARGS="--ckpt PATH --port 8080"
# make fid-reference  pytorch-fid vs fid.py (own venv)
# Outside a virtual environment, a .venv is created here and used; inside one, that one is used. When the Python
# that creates .venv already imports Paddle 3 (AI Studio's conda with paddlepaddle-gpu, a system install), .venv
# sees that Python's packages (--system-site-packages): its Paddle trains, and no CPU build is put over it.

PYTHON ?= python3
ifeq ($(VIRTUAL_ENV),)
VENV := .venv
PY := $(VENV)/bin/python
else
VENV :=
PY := python
endif

# Every install goes through constraints.txt: the versions CI tested (see `make constraints`). Not in a .venv that
# sees the system's packages: there pip adds only what is missing and keeps the versions the system's Paddle came
# with (constraints.txt would put its own numpy and friends in front of them). Expanded when a recipe runs, after
# .venv exists.
SYSTEM_SITE = $(if $(VENV),$(shell grep -qsx 'include-system-site-packages = true' $(VENV)/pyvenv.cfg && echo yes))
PIP = $(PY) -m pip install -q --disable-pip-version-check $(if $(SYSTEM_SITE),,-c constraints.txt)
# The CPU build, installed only when no Paddle is there: paddlepaddle and paddlepaddle-gpu are separate
# distributions writing the same paddle/ package, so installing one over the other replaces it.
PADDLE_CPU := paddlepaddle

.PHONY: install install-dev install-app install-app-test app test test-all lint demo bench fid-reference clean constraints

# A working Paddle is one that imports and is 3.x (or 0.0, a source build).
HAS_PADDLE3 := import paddle, sys; v = paddle.__version__; sys.exit(v.split('.')[0] not in ('0', '3'))
VENV_ARGS ?=
$(VENV)/bin/python:
	@if $(PYTHON) -c "$(HAS_PADDLE3)" >/dev/null 2>&1; then \
		echo "make install: $(PYTHON) has Paddle 3: .venv uses it (--system-site-packages)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV_ARGS) $(VENV); \
	else \
		$(PYTHON) -c "import paddle" >/dev/null 2>&1 && echo "make install: $(PYTHON)'s Paddle is not 3.x: .venv gets its own"; \
		$(PYTHON) -m venv $(VENV_ARGS) $(VENV); \
	fi

# The oneDNN headers for onednn_conv/ (Paddle's wheel ships the library, not the headers); --no-deps: its runtime
# package is not needed. Optional: without them the convolutions run on Paddle's own kernels.
ONEDNN_HEADERS := onednn-devel-cpu-iomp==2023.2.0

# The last line of make install: which Paddle will train, and where it lives.
define WHICH_PADDLE
import os, paddle
cuda = paddle.is_compiled_with_cuda()
how = "with CUDA: train.py uses the GPU when it sees one" if cuda else "(CPU): train.py trains on the CPU"
print("make install: Paddle", paddle.__version__, how, "(" + os.path.dirname(paddle.__file__) + ")")
endef
export WHICH_PADDLE

install: $(if $(VENV),$(VENV)/bin/python)
	$(PIP) -r requirements.txt
	@$(PY) -c "import importlib.util as u, sys; sys.exit(u.find_spec('paddle') is None)" \
		|| { echo "make install: no Paddle here, installing the CPU build ($(PADDLE_CPU))"; $(PIP) $(PADDLE_CPU); }
	@$(PY) -c "$$WHICH_PADDLE" \
		|| { echo "make install: a paddle package is installed but does not import (error above); repair or remove it," \
		          "e.g. pip install --force-reinstall paddlepaddle-gpu==<version> from Paddle's index (docs/troubleshooting.md)"; exit 1; }
	$(PIP) --no-deps $(ONEDNN_HEADERS) \
		|| echo "make install: could not install $(ONEDNN_HEADERS); convolutions will run on Paddle's kernels"
	@$(if $(VENV),echo "make install: done; run the scripts with $(PY) (or source $(VENV)/bin/activate first)",true)

install-dev: install
	$(PIP) -r requirements-dev.txt

# The web app's packages (Gradio), optional for the rest of the project.
install-app: install
	$(PIP) -r requirements-app.txt

# Its tests: gradio_client, Playwright (no browser of its own: `playwright install` downloads one) and Debian's
# chromium, installed here when missing and we are root (CI); elsewhere the browser test says how and is skipped.
install-app-test: install-app
	$(PIP) -r requirements-app-test.txt
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else echo "make: no /usr/bin/chromium (sudo apt-get install chromium): the browser test will be skipped"; fi; }

app: install-app
	$(PY) app.py $(APP_ARGS)

lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: install-dev install-app-test lint
	$(PY) -m pytest -m "not slow" -q

test-all: install-dev install-app-test lint
	$(PY) -m pytest -q

demo: install
	$(PY) demo.py $(DEMO_ARGS)

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_train.py --ngf 32 --batch-sizes 32
	$(PY) bench/bench_conv.py
	$(PY) bench/bench_complete.py
	$(PIP) -r requirements-app.txt -r requirements-app-test.txt
	$(PY) bench/bench_app.py
	$(PY) bench/bench_fid.py --num 25
	$(PY) bench/fid_reference.py --live

# pytorch-fid needs torchvision, which does not install beside the bench's torch: a venv of its own, with Paddle
# too, for the live comparison. Rewrites the golden files under tests/data/ (commit them if they change).
FID_VENV ?= .venv-fid
fid-reference:
	test -x $(FID_VENV)/bin/python || $(PYTHON) -m venv $(FID_VENV)
	$(FID_VENV)/bin/python -m pip install -q --disable-pip-version-check $(PADDLE_CPU) -r requirements.txt -r requirements-fid.txt
	$(FID_VENV)/bin/python bench/fid_reference.py --golden --live
	$(PY) bench/bench_fid.py --num 25 --ref-python $(FID_VENV)/bin/python

# A fresh venv with only what `make install-dev install-app-test` installs (CPU Paddle included), then its versions
# (pip itself excluded) become constraints.txt. Run it after changing a requirements file.
CONSTRAINTS_VENV := .venv-constraints
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install -q --disable-pip-version-check $(PADDLE_CPU) -r requirements.txt -r requirements-dev.txt \
		-r requirements-app.txt -r requirements-app-test.txt
	{ echo "# The versions CI tested: \`make constraints\` wrote this from a clean venv ($$($(CONSTRAINTS_VENV)/bin/python -V))."; \
	  echo "# make install uses it for every pip install. Not a requirements file: it pins, it installs nothing."; \
	  $(CONSTRAINTS_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^pip=='; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

clean:
	rm -rf output data/demo64.npy .pytest_cache .ruff_cache
