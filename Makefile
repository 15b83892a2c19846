# `make demo` and `make test` work on a fresh clone: each creates .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package .venv gets, each pinned with its hashes: written by `make lock` from pyproject.toml (all extras),
# read by uv and by pip alike. tests/test_packaging.py fails when pyproject.toml asks for something it lacks.
LOCK := requirements.lock
# The installer is uv: the one on PATH, else this release, which pip puts into .venv (one wheel, seconds).
UV_SPEC ?= uv==0.13.9
# Prints uv's path, installing it into .venv first when PATH has none; fails when it cannot be had.
FIND_UV = command -v uv || { { test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet $(UV_SPEC) >&2; } && echo $(BIN)/uv; }
# `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest release; plain `make lock` keeps the pins
# that still fit and resolves only what pyproject.toml changed.
LOCK_FLAGS ?=

.PHONY: venv lock test test-fast demo bench clean docs

venv: $(STAMP)

# The lock's packages first (hash-checked), then the project itself, editable and without dependencies.
# Then bytecode, by tools/compile_bytecode.py: with PYTHONDONTWRITEBYTECODE set, as on CI machines, every kernel
# would otherwise compile pandas, scikit-learn and MLflow from source again, about 18 s of CPU each. It leaves out
# what no runner process imports (packages' test suites, the installers, the tests' S3 server): a third of the files,
# 12 s instead of uv's 22 s for all of them on 2 cores.
# Without uv (no PATH entry, and pip could not install it), pip installs the same lock, only slower.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if uv=$$($(FIND_UV)); then \
	    echo "$$uv pip install --require-hashes -r $(LOCK); $$uv pip install --no-deps -e ."; \
	    $$uv pip install --quiet --python $(BIN)/python --require-hashes -r $(LOCK) && \
	    $$uv pip install --quiet --python $(BIN)/python --no-deps -e .; \
	else \
	    echo "uv could not be installed: pip installs $(LOCK)"; \
	    $(BIN)/python -m pip install --quiet --upgrade pip && \
	    $(BIN)/python -m pip install --quiet --no-compile --require-hashes -r $(LOCK) && \
	    $(BIN)/python -m pip install --quiet --no-deps -e .; \
	fi
	$(BIN)/python tools/compile_bytecode.py $$($(BIN)/python -c 'import site; print(*site.getsitepackages())') runner
	touch $(STAMP)

# Resolves pyproject.toml with every extra for every platform (markers where they differ) from Python 3.11 up.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	uv=$$($(FIND_UV)) && $$uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
	    --generate-hashes --custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) --output-file $(LOCK)

# Two workers (pytest-xdist), each taking whole test modules, so a module's shared fixtures start once.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict --site-dir build/docs
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

# The documentation site (mkdocs.yml, docs/) into build/docs; --strict fails on any warning.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/docs

demo: $(STAMP)
	$(BIN)/runner demo --reset

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/scoring.py

.PHONY: bench-monitoring
bench-monitoring: $(STAMP)  # creates bench/.venv-evidently on first use
	$(BIN)/python bench/monitoring.py

clean:
	rm -rf $(VENV) .runner build *.egg-info
