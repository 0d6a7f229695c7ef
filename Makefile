# xprune_nb — everything runs from a local virtual environment that `make` creates.
#   make lab    install and open JupyterLab on notebooks/ (extra Jupyter options: ARGS="--port 9999")
#   make demo   headless run of the quick-start notebook and the CLI demo, outputs in build/
#   make test   install with dev extras, run ruff and the whole test suite (notebooks included)
#   make bench  run the benchmarks by hand (results go to docs/benchmarks.md)
#   make docs   build the documentation site strictly (a warning fails) into site/
#   make wheel  build the wheel and the sdist into dist/ (without the teacher solutions)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
# torch==2.13.0 in the constraints is the CPU build; a looser pin would pull CUDA (GBs)
PIN    := -c constraints.txt

.PHONY: lab demo test lint bench docs wheel install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed-lab: $(PY) pyproject.toml constraints.txt requirements-nodeps.txt
	$(PIP) install $(PIN) -e '.[lab]'
	# zennit (LRP) declares torchvision, which has no CPU build for torch 2.13: no deps
	$(PIP) install --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-lab
	$(PIP) install $(PIN) -e '.[dev]'
	touch $@

install: $(VENV)/.installed-lab
install-dev: $(VENV)/.installed-dev

# extra arguments for `jupyter lab`, e.g. make lab ARGS="--port 9999 --no-browser"
ARGS ?=
# Jupyter refuses to start as root (containers, classroom VMs) without --allow-root
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ROOT) $(ARGS)

demo: install
	mkdir -p build/demo
	MPLBACKEND=Agg $(VENV)/bin/jupyter nbconvert --to notebook --execute \
		notebooks/01_quickstart.ipynb --output-dir build/demo --output 01_quickstart.ipynb
	MPLBACKEND=Agg $(VENV)/bin/xprune-nb demo --out build/demo
	@echo "demo outputs are in build/demo/"

lint: install-dev
	$(VENV)/bin/ruff check .

test: install-dev
	$(VENV)/bin/ruff check .
	# tests/test_notebooks_run.py runs the notebooks the docs show (kept for `make docs`);
	# nbmake runs the teacher versions of the exercises
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m pytest -q --nbmake tests notebooks/classroom/solutions

bench: install-dev
	OMP_NUM_THREADS=1 $(PY) benchmarks/run_all.py

# notebooks are shown with their outputs: scripts/docs_hooks.py runs each into build/docs-notebooks
# (reused while unchanged; XPRUNE_DOCS_EXECUTE=0 skips it); any warning fails the build
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# pip install dist/xprune_nb-*.whl (add [classroom] etc. for extras: see docs/classroom.md)
wheel: $(PY)
	$(PIP) install $(PIN) hatchling
	rm -rf dist
	$(PY) -m hatchling build -d dist
	@ls dist

clean:
	rm -rf build .pytest_cache .ruff_cache
