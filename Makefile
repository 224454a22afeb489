# The two commands of the README: `make demo` (the main job on the embedded digits data) and
# `make test` (the default test suite). Both create the virtual environment they need; torch is
# pinned and installed first so that a CPU build is used and no multi-GB CUDA build is pulled.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: env demo demo-fashion test test-all mutate clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,cluster,compare]'
	touch $@

demo: env
	$(VENV)/bin/ddlnl run

demo-fashion: env
	$(VENV)/bin/ddlnl run --dataset fashion-mnist --train-subset 10000 --ipc 1,10

test: env
	$(PY) -m pytest -q

test-all: env
	$(PY) -m pytest -q -m ''

# Mutation testing of the defining functions (benchmarks/mutate.py; long, not part of `make test`).
# `make mutate` re-tests every mutant from scratch (--fresh); `make mutate MODULES="noise dm"` runs
# some modules; MUTATE_ARGS= (empty) keeps earlier results and re-tests only the survivors.
MUTATE_ARGS ?= --fresh
mutate: env
	$(PY) -m pip install --quiet -e '.[mutate]'
	OMP_NUM_THREADS=1 nice -n 10 $(PY) benchmarks/mutate.py $(MUTATE_ARGS) $(MODULES)

clean:
	rm -rf $(VENV) runs .pytest_cache
