VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: setup browser mcp-inspector vscode-tools vsix demo test bench lint clean vendor-dashboard

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

# npm (with Node.js) from Debian when missing: the MCP Inspector and the VS Code tools come from npm.
define ensure_npm
	@if ! command -v npm >/dev/null 2>&1; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "$(1) needs Node.js and npm: install them, then run make again." >&2; exit 1; \
		fi; \
		if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
		echo "Installing Node.js and npm for $(1)"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm || \
			{ $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && \
			  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; } || exit 1; \
	fi
endef

$(INSPECTOR):
	$(call ensure_npm,The MCP Inspector test)
	mkdir -p .cache/npm-tools
	npm install --silent --no-audit --no-fund --prefix .cache/npm-tools @modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	test -x $(INSPECTOR)

# The VS Code extension (editors/vscode) is built with Node 24 and tested inside code-server (VS Code's workbench
# and extension host served to a browser; tests/test_vscode.py). Both come from the npm registry into
# .cache/vscode-tools once: Node 24 as the registry's binary package, code-server without its packages' build
# scripts (they ship prebuilt; the optional kerberos module would need system headers). `make vsix` builds the
# package for users: editors/vscode/dist/swarm-lsp.vsix.
NODE_MAJOR := 24
CODE_SERVER_VERSION := 4.139.1
VSCODE_TOOLS := .cache/vscode-tools
NODE24 := $(VSCODE_TOOLS)/node/bin/node
CODE_SERVER := $(VSCODE_TOOLS)/node_modules/.bin/code-server
WITH_NODE24 := PATH="$(CURDIR)/$(VSCODE_TOOLS)/node/bin:$$PATH" npm_config_nodedir="$(CURDIR)/$(VSCODE_TOOLS)/node"
NODE_PACKAGE := node-$(shell uname -s | tr A-Z a-z)-$(shell uname -m | sed -e 's/x86_64/x64/' -e 's/aarch64/arm64/')
VSIX := editors/vscode/dist/swarm-lsp.vsix
VSIX_SOURCES := $(wildcard editors/vscode/src/*.ts editors/vscode/media/*) editors/vscode/package.json \
	editors/vscode/package-lock.json editors/vscode/tsconfig.json editors/vscode/README.md

vscode-tools: $(CODE_SERVER)
vsix: $(VSIX)

$(NODE24):
	$(call ensure_npm,Node 24 for the VS Code extension)
	rm -rf $(VSCODE_TOOLS)/node && mkdir -p $(VSCODE_TOOLS)/node
	cd $(VSCODE_TOOLS) && tarball=$$(npm pack --silent $(NODE_PACKAGE)@$(NODE_MAJOR)) && \
		tar xzf "$$tarball" -C node --strip-components=1 && rm -f "$$tarball"
	$(NODE24) --version

$(CODE_SERVER): $(NODE24)
	cd $(VSCODE_TOOLS) && echo '{"private": true}' > package.json && \
		$(WITH_NODE24) npm install --ignore-scripts --silent --no-audit --no-fund code-server@$(CODE_SERVER_VERSION)
	cd $(VSCODE_TOOLS)/node_modules/code-server && \
		$(WITH_NODE24) npm_config_user_agent="npm node/v$(NODE_MAJOR)" npm_config_ignore_scripts=true sh postinstall.sh
	test -x $(CODE_SERVER)

# Type-checked, unit-tested (Node's test runner), bundled with esbuild, packaged with vsce.
$(VSIX): $(NODE24) $(VSIX_SOURCES)
	cd editors/vscode && $(WITH_NODE24) npm ci --silent --no-audit --no-fund
	cd editors/vscode && $(WITH_NODE24) npm run --silent check
	cd editors/vscode && $(WITH_NODE24) npm test
	cd editors/vscode && $(WITH_NODE24) npm run --silent package
	test -f $(VSIX)

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
test: setup browser mcp-inspector vscode-tools vsix
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
