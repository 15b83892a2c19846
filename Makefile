# `make demo` and `make test` work on a fresh clone: each creates .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast demo bench clean docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

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
