"""The dashboard page in a real Chromium against a real `swarm-lsp api` process: no mocked server.

Debian's Chromium is driven by Playwright (`make test` installs the browser; a missing one fails the
run, it is never skipped). Every test blocks requests to anywhere but the server, so the page is
proven to work offline, and saves a screenshot that must not be blank.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from browser_support import assert_screenshot_not_blank as check_screenshot
from browser_support import chromium
from playwright.sync_api import Browser, Page, Route, expect
from server_processes import api_env, api_server, write_workspace

from swarm_lsp.config import workspace_data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.slow

SECTIONS = ("workers", "requests", "index", "tools", "peers", "settings", "hardware")
VIEWPORT = {"width": 1280, "height": 1000}
ANSWER_TIMEOUT_MS = 120_000
"""Three voters of 48 tokens on 2 busy cores: seconds normally, far more under a loaded CI machine."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(15_000) as browser:
        yield browser


@dataclass
class Dashboard:
    page: Page
    foreign_requests: list[str] = field(default_factory=list)


@contextmanager
def open_dashboard(browser: Browser, url: str) -> Iterator[Dashboard]:
    """The page at `url`, with every request to another origin refused and recorded."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    dashboard = Dashboard(page)

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(url + "/"):
            route.continue_()
        else:
            dashboard.foreign_requests.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(url + "/")
    # The last panel to fill in is the one the server computes slowest: the hardware report.
    expect(page.locator("#hardware dl")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("connection")).to_have_text("live")
    try:
        yield dashboard
    finally:
        context.close()


def assert_screenshot_not_blank(page: Page, path: Path) -> None:
    check_screenshot(page, path, width=VIEWPORT["width"])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return write_workspace(tmp_path / "workspace")


def test_page_loads_offline_with_every_section(browser: Browser, workspace: Path, tmp_path: Path) -> None:
    with api_server(workspace, api_env(tmp_path)) as server, open_dashboard(browser, server.url) as dashboard:
        page = dashboard.page
        for section in SECTIONS:
            expect(page.locator(f"#{section}")).to_be_visible()
            expect(page.get_by_test_id(section)).to_be_visible()
        expect(page.get_by_test_id("status-line")).to_contain_text("voters")
        expect(page.get_by_test_id("index-state")).not_to_be_empty()
        expect(page.get_by_test_id("memory")).to_contain_text("weights")
        expect(page.locator("[data-testid=setting][data-key='swarm.voters']")).to_be_visible()
        assert_screenshot_not_blank(page, tmp_path / "loaded.png")
        assert dashboard.foreign_requests == []


# Every value a worker's progress bar takes, recorded as it changes: the request may run faster than
# any polling from the test, but not faster than the DOM mutations that draw it.
RECORD_PROGRESS = """() => {
    window.progressSeen = [];
    window.sameDocument = true;
    const record = () => document.querySelectorAll('#workers progress')
        .forEach((bar) => window.progressSeen.push(Number(bar.value)));
    new MutationObserver(record).observe(document.getElementById('workers'),
        { subtree: true, childList: true, attributes: true, attributeFilter: ['value'] });
}"""


def test_a_request_made_through_the_api_appears_live(
    browser: Browser, workspace: Path, tmp_path: Path
) -> None:
    with api_server(workspace, api_env(tmp_path)) as server, open_dashboard(browser, server.url) as dashboard:
        page = dashboard.page
        page.evaluate(RECORD_PROGRESS)
        outcome: dict[str, Any] = {}

        def ask() -> None:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=300)
            try:
                outcome["completion"] = client.chat.completions.create(
                    model="swarm", messages=[{"role": "user", "content": "What does greet do?"}]
                )
            except Exception as error:  # reported by the main thread, which owns the assertions
                outcome["error"] = error

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()

        request = page.locator("#requests [data-request-id]")
        expect(request).to_have_count(1, timeout=30_000)
        expect(request).to_contain_text("What does greet do?")
        page.wait_for_function(
            "() => window.progressSeen.some((value) => value > 0 && value < 1)", timeout=ANSWER_TIMEOUT_MS
        )
        assert_screenshot_not_blank(page, tmp_path / "running.png")

        expect(request.get_by_test_id("request-state")).to_have_text("done", timeout=ANSWER_TIMEOUT_MS)
        asker.join(60)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["completion"].choices[0].message.content
        expect(request.get_by_test_id("candidate")).not_to_have_count(0)
        expect(request.get_by_test_id("winner")).to_have_count(1)
        expect(request.get_by_test_id("agreement")).to_contain_text("agreement")
        assert page.evaluate("() => window.sameDocument") is True, "the page reloaded"
        final = page.locator("#workers progress").evaluate_all("(bars) => bars.map((bar) => bar.value)")
        assert final == [1, 1, 1], final
        assert_screenshot_not_blank(page, tmp_path / "answered.png")
        assert dashboard.foreign_requests == []


def audit_entry(
    tool: str, tier: str, *, minutes_ago: float = 1, denied: bool = False, error: str | None = None
) -> dict[str, Any]:
    started = time.time() - minutes_ago * 60
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + f".{int(started % 1 * 1000):03d}Z",
        "client": "test-client",
        "tool": tool,
        "arguments": {"path": "pkg/greeting.py"},
        "tier": tier,
        "decision": "deny" if denied else "allow",
        "decided_by": "policy",
        "rule": f"tools.{tier}",
        "duration_ms": 2.5,
        "result_bytes": 0 if denied or error else 120,
        "cached": False,
        "error": error,
    }


def append_audit(path: Path, *entries: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(entry) + "\n" for entry in entries)


def audit_file(workspace: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    # workspace_data_dir reads the cache folder from the environment, as the server does.
    with monkeypatch.context() as patch:
        patch.setenv("SWARM_LSP_CACHE_DIR", env["SWARM_LSP_CACHE_DIR"])
        return workspace_data_dir(workspace) / "audit.jsonl"


def test_tool_log_filters(
    browser: Browser, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = api_env(tmp_path)
    audit = audit_file(workspace, env, monkeypatch)
    append_audit(
        audit,
        audit_entry("read_file", "read", minutes_ago=2 * 24 * 60),
        audit_entry("read_file", "read", minutes_ago=5),
        audit_entry("run_command", "execute", minutes_ago=4, denied=True),
        audit_entry("write_file", "write", minutes_ago=3, error="pkg/missing.py does not exist"),
    )
    with api_server(workspace, env) as server, open_dashboard(browser, server.url) as dashboard:
        page = dashboard.page
        rows = page.get_by_test_id("tool-row")
        expect(rows).to_have_count(4)
        expect(page.get_by_test_id("tool-name").first).to_have_text("write_file")  # newest first

        page.get_by_test_id("filter-tool").select_option("read_file")
        expect(rows).to_have_count(2)
        expect(page.get_by_test_id("tool-name")).to_have_text(["read_file", "read_file"])

        page.get_by_test_id("filter-since").select_option("3600")
        expect(rows).to_have_count(1)

        page.get_by_test_id("filter-tool").select_option("")
        page.get_by_test_id("filter-outcome").select_option("denied")
        expect(page.get_by_test_id("tool-name")).to_have_text(["run_command"])
        expect(page.get_by_test_id("tool-outcome")).to_have_text(["denied"])

        page.get_by_test_id("filter-outcome").select_option("")
        page.get_by_test_id("filter-tier").select_option("write")
        expect(page.get_by_test_id("tool-name")).to_have_text(["write_file"])
        expect(page.get_by_test_id("tool-outcome")).to_have_text(["error"])

        # The log grows while the page is open: the `tools` event re-fetches it with the same filters.
        append_audit(
            audit,
            audit_entry("write_file", "write", minutes_ago=0),
            audit_entry("read_file", "read", minutes_ago=0),
        )
        expect(page.get_by_test_id("tool-name")).to_have_text(["write_file", "write_file"], timeout=15_000)
        assert_screenshot_not_blank(page, tmp_path / "tools.png")
        assert dashboard.foreign_requests == []


def test_settings_are_validated_then_saved(browser: Browser, workspace: Path, tmp_path: Path) -> None:
    env = api_env(tmp_path)
    del env["SWARM_LSP_SWARM__VOTERS"]  # the environment would override the file and hide the change
    settings_file = workspace / ".swarm-lsp.toml"
    with api_server(workspace, env) as server, open_dashboard(browser, server.url) as dashboard:
        page = dashboard.page
        voters = page.locator("[data-testid=setting][data-key='swarm.voters']")
        value_before = voters.get_by_test_id("setting-value").inner_text()

        voters.locator("input").fill("1000")
        voters.get_by_role("button", name="Save").click()
        error = page.get_by_test_id("settings-error")
        expect(error).to_be_visible()
        expect(error).to_have_attribute("role", "alert")
        expect(error).to_contain_text("swarm.voters")
        expect(page.get_by_test_id("settings-saved")).to_have_count(0)
        expect(voters.get_by_test_id("setting-value")).to_have_text(value_before)
        assert not settings_file.exists(), settings_file.read_text()
        assert_screenshot_not_blank(page, tmp_path / "settings-refused.png")

        voters.locator("input").fill("4")
        voters.get_by_role("button", name="Save").click()
        expect(page.get_by_test_id("settings-saved")).to_contain_text("swarm.voters")
        expect(page.get_by_test_id("settings-error")).to_have_count(0)
        expect(voters.get_by_test_id("setting-value")).to_have_text("4")
        assert tomllib.loads(settings_file.read_text())["swarm"]["voters"] == 4
        assert_screenshot_not_blank(page, tmp_path / "settings-saved.png")
        assert dashboard.foreign_requests == []


def test_peers_are_shown_live_added_and_removed(browser: Browser, workspace: Path, tmp_path: Path) -> None:
    env = api_env(
        tmp_path,
        FEDERATION__ENABLED="true",
        FEDERATION__SECRET="dashboard secret",
        FEDERATION__MDNS="false",
        FEDERATION__BEACON="false",
        FEDERATION__HEALTH_INTERVAL="0.5",
    )
    env["SWARM_LSP_CONFIG_FILE"] = str(tmp_path / "user" / "config.toml")
    with socket.socket() as probe:  # a port nobody listens on: the peer is down
        probe.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with api_server(workspace, env) as server, open_dashboard(browser, server.url) as dashboard:
        page = dashboard.page
        expect(page.get_by_test_id("federation-state")).to_contain_text("federation on")
        form = page.get_by_test_id("peer-form")
        form.locator("input[name=url]").fill(unreachable)
        form.locator("input[name=token]").fill("engine-key-not-shown")
        form.get_by_role("button", name="add peer").click()
        row = page.locator(f"[data-testid=peer][data-url='{unreachable}']")
        expect(row.get_by_test_id("peer-status")).to_contain_text("down")
        expect(row).to_contain_text("unreachable")
        assert "engine-key-not-shown" not in page.content()
        assert json.loads((tmp_path / "user" / "peers.json").read_text())[0]["url"] == unreachable
        assert_screenshot_not_blank(page, tmp_path / "peers.png")
        row.get_by_test_id("peer-remove").click()
        expect(row).to_have_count(0)
        assert json.loads((tmp_path / "user" / "peers.json").read_text()) == []
        assert dashboard.foreign_requests == []
