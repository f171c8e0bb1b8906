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

# The demo indexes this repository (full text; `swarm-lsp index` without --no-embed adds vectors, a few
# minutes on 2 cores) and asks a question answered by a vote of 5 voters on the bundled model.
demo: setup
	$(VENV)/bin/swarm-lsp doctor
	$(VENV)/bin/swarm-lsp index --no-embed
	SWARM_LSP_MODEL__NAME=bundled SWARM_LSP_MODEL__CONTEXT_LENGTH=2048 SWARM_LSP_SWARM__VOTERS=5 \
		SWARM_LSP_SWARM__MAX_TOKENS=160 \
		$(VENV)/bin/swarm-lsp ask "Which file defines the class LlamaCppBackend, and what does it do?" --show-candidates

# The layer contracts first (a broken one fails the run at once), then the suite. pytest exits 5 when
# it collects no tests; that must fail CI, and it does (make fails on non-zero).
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -rs -p no:cacheprovider

# Every benchmark, one after another (about an hour on 2 cores, most of it embedding on the first run).
bench: setup
	$(PY) bench/backend_batch.py
	$(PY) bench/index_pipeline.py
	$(PY) bench/index_nochange.py
	$(PY) bench/index_edit.py
	$(PY) bench/retrieval_quality.py
	$(PY) bench/file_retrieval.py
	$(PY) bench/swarm_cost.py
	$(PY) bench/swarm_quality.py
	$(PY) bench/voting_overhead.py
	$(PY) bench/mcp_latency.py
	$(PY) bench/lsp_latency.py

lint: setup
	$(VENV)/bin/ruff check swarm_lsp tests bench
	$(VENV)/bin/ruff format --check swarm_lsp tests bench
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV)
