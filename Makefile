VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

# Re-install only when the declared dependencies change; `make setup` is idempotent.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev,mlx]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/swarm-lsp doctor
	SWARM_LSP_MODEL__NAME=bundled $(VENV)/bin/swarm-lsp generate "Write one sentence about why code review matters."

# pytest exits 5 when it collects no tests; that must fail CI, and it does (make fails on non-zero).
test: setup
	$(PY) -m pytest -q -rs -p no:cacheprovider

bench: setup
	$(PY) bench/backend_batch.py

lint: setup
	$(VENV)/bin/ruff check swarm_lsp tests bench
	$(VENV)/bin/ruff format --check swarm_lsp tests bench

clean:
	rm -rf $(VENV)
