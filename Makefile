# make test      fast tests (what CI runs)       make test-all   fast + slow (end-to-end demo, notebook)
# make demo      the CPU demo, install included    make bench      speed benchmarks
# make lint      ruff                             make fid-reference  pytorch-fid vs fid.py (own venv)
# Outside a virtual environment, a .venv is created here and used; inside one, that one is used.

PYTHON ?= python3
ifeq ($(VIRTUAL_ENV),)
VENV := .venv
PY := $(VENV)/bin/python
else
VENV :=
PY := python
endif

.PHONY: install install-dev test test-all lint demo bench fid-reference clean

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
	$(PY) bench/bench_fid.py --num 25
	$(PY) bench/fid_reference.py --live

# pytorch-fid needs torchvision, which does not install beside the bench's torch: a venv of its own, with Paddle
# too, for the live comparison. Rewrites the golden files under tests/data/ (commit them if they change).
FID_VENV ?= .venv-fid
fid-reference:
	test -x $(FID_VENV)/bin/python || $(PYTHON) -m venv $(FID_VENV)
	$(FID_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-fid.txt
	$(FID_VENV)/bin/python bench/fid_reference.py --golden --live
	$(PY) bench/bench_fid.py --num 25 --ref-python $(FID_VENV)/bin/python

clean:
	rm -rf output data/demo64.npy .pytest_cache .ruff_cache
