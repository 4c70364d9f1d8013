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

install: $(if $(VENV),$(VENV)/bin/python)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt

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
	$(PY) bench/bench_conv.py
	$(PY) bench/bench_complete.py

clean:
	rm -rf output data/demo64.npy .pytest_cache .ruff_cache
