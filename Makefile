VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: setup browser mcp-inspector demo test bench lint clean vendor-dashboard

setup: $(STAMP)

# Re-install only when the declared dependencies change; `make setup` is idempotent.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[dev,mlx]"
	touch $(STAMP)

# tests/test_dashboard.py drives a real Chromium; a missing browser is installed (Debian/Ubuntu) or
# reported, never skipped. `apt-get update` runs only when the install fails: it is slow and needs network.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		exit 0; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "The dashboard test needs Chromium: install it so that 'chromium' is on PATH, then run make test again." >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "The dashboard test needs Chromium: run 'apt-get install chromium' as root, then make test again." >&2; exit 1; fi; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"; \
	echo "Installing Chromium for the dashboard test: $$install"; \
	$$install || { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && $$install; } || exit 1; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ echo "apt-get installed chromium but it is not on PATH; add it to PATH, then make test again." >&2; exit 1; }

# tests/test_mcp_transports.py drives the official MCP Inspector CLI. It is installed here once, from npm, into
# .cache/npm-tools (ignored by git), so the suite itself needs no network; Node.js and npm come from Debian when
# missing.
INSPECTOR_VERSION := 0.15.0
INSPECTOR := .cache/npm-tools/node_modules/.bin/mcp-inspector

mcp-inspector: $(INSPECTOR)

$(INSPECTOR):
	@if ! command -v npm >/dev/null 2>&1; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "The MCP Inspector test needs Node.js and npm: install them, then run make test again." >&2; exit 1; \
		fi; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
		echo "Installing Node.js and npm for the MCP Inspector test"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm || \
			{ $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && \
			  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; } || exit 1; \
	fi
	mkdir -p .cache/npm-tools
	npm install --silent --no-audit --no-fund --prefix .cache/npm-tools @modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	test -x $(INSPECTOR)

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
test: setup browser mcp-inspector
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
	$(PY) bench/api_overhead.py
	$(PY) bench/completion_latency.py

lint: setup
	$(VENV)/bin/ruff check swarm_lsp tests bench
	$(VENV)/bin/ruff format --check swarm_lsp tests bench
	$(VENV)/bin/lint-imports --no-cache

# The dashboard's one library (htm + Preact as an ES module) is committed, so the page works offline and
# needs no build step; this re-fetches it from npm. Not part of setup or test.
HTM_VERSION ?= 3.1.1
DASHBOARD_VENDOR := swarm_lsp/api/static/vendor
vendor-dashboard:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	(cd "$$tmp" && npm pack --silent htm@$(HTM_VERSION) >/dev/null && tar xzf htm-$(HTM_VERSION).tgz) && \
	cp "$$tmp/package/preact/standalone.module.js" $(DASHBOARD_VENDOR)/htm-preact-standalone.mjs && \
	cp "$$tmp/package/LICENSE" $(DASHBOARD_VENDOR)/LICENSE-htm.txt && \
	sha256sum $(DASHBOARD_VENDOR)/htm-preact-standalone.mjs && \
	echo "Vendored htm@$(HTM_VERSION); update the version and checksum in $(DASHBOARD_VENDOR)/README.md."

clean:
	rm -rf $(VENV)
