# make test      fast tests (what CI runs)       make test-all   fast + slow (end-to-end demo, notebook)
# make demo      the CPU demo, install included    make bench      speed benchmarks
# make lint      ruff
# Outside a virtual environment, a .venv is created here and used; inside one, that one is used.

PYTHON ?= python3
ifeq ($(VIRTUAL_ENV),)
VENV := .venv
PY := $(VENV)/bin/python
else
VENV :=
PY := python
endif

.PHONY: install install-dev test test-all lint demo bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The oneDNN headers for onednn_conv/ (Paddle's wheel ships the library, not the headers); --no-deps: its runtime
# package is not needed. Optional: without them the convolutions run on Paddle's own kernels.
ONEDNN_HEADERS := onednn-devel-cpu-iomp==2023.2.0

install: $(if $(VENV),$(VENV)/bin/python)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(ONEDNN_HEADERS) \
		|| echo "make install: could not install $(ONEDNN_HEADERS); convolutions will run on Paddle's kernels"

install-dev: install
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt

lint: install-dev
	$(PY) -m ruff check .

test: install-dev lint
	$(PY) -m pytest -m "not slow" -q

test-all: install-dev lint
	$(PY) -m pytest -q

demo: install
	$(PY) demo.py $(DEMO_ARGS)

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_train.py --ngf 32 --batch-sizes 32
	$(PY) bench/bench_conv.py

clean:
	rm -rf output data/demo64.npy .pytest_cache .ruff_cache
