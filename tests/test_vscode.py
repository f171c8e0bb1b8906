"""The VS Code extension (editors/vscode) inside a real VS Code: code-server with the packaged .vsix
installed, driven through Chromium the way a person uses it.

One workbench for the module, steps in order: the status bar shows indexing; the light bulb's Explain
opens an answer with its agreement and sources; Refactor... asks for an instruction and edits the
buffer; the chat streams two turns, keeps the conversation, and a source link lands on its line; Stop
cancels an answer. Screenshots of every step are kept in the test's tmp folder and checked. The
extension's pure modules are unit-tested with Node's test runner and the whole is type-checked.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import assert_screenshot_not_blank, chromium
from playwright.sync_api import Browser, Frame, Page, expect
from vscode_support import (
    EXTENSION,
    NODE_BIN,
    RECORD_STATUS_BAR,
    Workbench,
    code_server,
    node_env,
    require_built,
)

pytestmark = pytest.mark.slow

VIEWPORT = {"width": 1400, "height": 900}
ANSWER_TIMEOUT_MS = 240_000
"""Two voters of the bundled model on 2 busy cores: seconds normally, far more under a loaded CI box."""

CART = '''"""A shopping cart."""


def total(prices):
    result = 0
    for price in prices:
        result = result + price
    return result


def discount(amount, percent):
    """The amount less `percent` per cent."""
    return amount - amount * percent / 100
'''


def test_the_extension_unit_tests_and_type_check_pass() -> None:
    require_built()
    for script in ("check", "test"):
        done = subprocess.run(
            ["npm", "run", "--silent", script], cwd=EXTENSION, env=node_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, f"npm run {script}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "# fail 0" in done.stdout and "# pass" in done.stdout, done.stdout[-2000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(30_000) as browser:
        yield browser


@pytest.fixture(scope="module")
def workbench(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    base = tmp_path_factory.mktemp("vscode")
    folder = base / "shop"
    (folder / "shop").mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "0.1.0"\n')
    (folder / "shop" / "__init__.py").write_text("")
    (folder / "shop" / "cart.py").write_text(CART)
    (folder / "shop" / "tax.py").write_text('"""Taxes."""\n\n\ndef add_tax(amount, rate):\n')
    # Enough files that indexing lasts long enough for the status bar to show it (a second or two).
    (folder / "shop" / "catalog").mkdir()
    for number in range(400):
        (folder / "shop" / "catalog" / f"item_{number}.py").write_text(
            f'"""Catalog item {number}."""\n\n\ndef price_{number}(quantity):\n'
            f'    """The price of `quantity` units of item {number}."""\n    return quantity * {number + 1}\n'
        )
    settings = {
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "chat.disableAIFeatures": True,
        "extensions.ignoreRecommendations": True,
        "security.workspace.trust.enabled": False,
        # The extension finds the server in the selected Python environment (this test's venv).
        "python.defaultInterpreterPath": str(Path(__import__("sys").executable)),
        "swarm-lsp.model.name": "bundled",
        "swarm-lsp.model.contextLength": 2048,
        "swarm-lsp.swarm.voters": 2,
        "swarm-lsp.swarm.maxTokens": 64,
        "swarm-lsp.index.embedder": "none",
        "swarm-lsp.server.logFile": str(base / "server.log"),
        "swarm-lsp.server.args": ["-v"],
    }
    env = node_env(
        SWARM_LSP_INDEX__LOCATION=str(base / "index"),
        SWARM_LSP_CONFIG_FILE=str(base / "no-user-config.toml"),
    )
    with code_server(base, folder, settings, env) as server:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        server_settings = server.settings_file
        page.add_init_script(f"document.addEventListener('DOMContentLoaded', {RECORD_STATUS_BAR})")
        page.goto(f"{server.url}/?folder={folder}")
        page.locator(".monaco-workbench").wait_for(timeout=60_000)
        bench = Workbench(page)
        bench.folder = folder  # type: ignore[attr-defined]
        bench.settings_file = server_settings  # type: ignore[attr-defined]
        bench.shots = base / "screenshots"  # type: ignore[attr-defined]
        bench.shots.mkdir()  # type: ignore[attr-defined]
        try:
            yield bench
        finally:
            context.close()


@pytest.fixture(autouse=True)
def screenshot_when_failed(request: pytest.FixtureRequest) -> Iterator[None]:
    """The page as it was when a step failed, beside the step's own screenshots."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before and "workbench" in request.fixturenames:
        bench = request.getfixturevalue("workbench")
        bench.page.screenshot(path=bench.shots / f"failed-{request.node.name}.png")


def shot(workbench: Workbench, name: str) -> None:
    assert_screenshot_not_blank(workbench.page, workbench.shots / f"{name}.png", width=VIEWPORT["width"])  # type: ignore[attr-defined]


def test_opening_a_file_starts_the_server_and_the_status_bar_shows_indexing(workbench: Workbench) -> None:
    workbench.open_file("cart.py")
    page = workbench.page
    # The server starts (idle), indexes the folder (with its percentage), and is idle again.
    page.wait_for_function(
        "() => window.swarmStatusSeen.some((text) => /swarm-lsp: indexing \\d+%/.test(text))", timeout=120_000
    )
    status = page.locator(".statusbar-item", has_text="swarm-lsp").first
    expect(status).to_have_text("swarm-lsp", timeout=120_000)
    seen = workbench.status_seen()
    assert seen[0] == "swarm-lsp: starting", seen
    shot(workbench, "1-indexed")


def test_explain_from_the_light_bulb_shows_the_answer_with_agreement_and_sources(
    workbench: Workbench,
) -> None:
    page = workbench.page
    workbench.go_to_line(5)
    menu = workbench.open_code_actions("Explain")
    titles = [text.strip() for text in menu.locator(".monaco-list-row").all_inner_texts()]
    shot(workbench, "2-light-bulb")
    assert {"Explain", "Refactor...", "Add docstring", "Ask about this code"} <= set(titles), titles
    menu.locator(".monaco-list-row", has_text="Explain").first.click()
    preview = page.locator(".tab", has_text="Preview")
    expect(preview).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    frame = workbench.frame_with("text=agreement")
    body = frame.locator("body").inner_text()
    assert "Explain shop/cart.py:" in body, body
    assert "Sources:" in body and "shop/cart.py:4-8" in body, body
    shot(workbench, "3-explained")
    # A source link in the preview opens the file at the line.
    link = frame.locator("a", has_text=re.compile(r"\.py:\d+")).last
    path, line = re.fullmatch(r"(.+\.py):(\d+)(?:-\d+)?", link.inner_text().strip()).groups()
    link.click()
    name = path.rsplit("/", 1)[-1]
    expect(page.locator(".editor-group-container.active .tab.active", has_text=name)).to_be_visible()
    expect(page.locator(".statusbar-item", has_text=f"Ln {line},").first).to_be_visible()
    shot(workbench, "3-source-opened")
    workbench.run_command("View: Close All Editor Groups")


def notifications(page: Page) -> list[str]:
    return [
        text.strip()
        for text in page.locator(".notification-toast .notification-list-item-message").all_inner_texts()
    ]


def test_refactor_asks_for_the_instruction_and_edits_the_buffer(workbench: Workbench) -> None:
    page = workbench.page
    workbench.open_file("cart.py")
    before = workbench.editor_text()
    workbench.go_to_line(5)
    menu = workbench.open_code_actions("Refactor...")
    menu.locator(".monaco-list-row", has_text="Refactor...").first.click()
    box = page.locator(".quick-input-widget input")
    expect(box).to_be_visible()
    expect(page.locator(".quick-input-widget")).to_contain_text("how should the selection be refactored")
    box.fill("Use the built-in sum function.")
    shot(workbench, "4-refactor-instruction")
    page.keyboard.press("Enter")
    toast = page.locator(".notification-toast", has_text="Refactor")
    expect(toast.first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    messages = notifications(page)
    shot(workbench, "5-refactored")
    after = workbench.editor_text()
    assert any(message.startswith("Refactor: applied") for message in messages), (messages, after)
    assert after != before
    assert "def total(prices):" in after and "def discount(amount, percent):" in after
    # In the buffer, not saved behind the user's back.
    assert (workbench.folder / "shop" / "cart.py").read_text() == CART  # type: ignore[attr-defined]


def test_typing_shows_inline_completion_ghost_text(workbench: Workbench) -> None:
    page = workbench.page
    workbench.open_file("tax.py")
    workbench.go_to_line(5)
    page.keyboard.type('    """Return the amount with the tax rate added."""\n')
    ghost = page.locator(".editor-group-container.active .ghost-text-decoration, .ghost-text")
    expect(ghost.first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    shot(workbench, "5b-inline-completion")
    suggestion = ghost.first.inner_text().strip()
    page.keyboard.press("Tab")
    expect(ghost).to_have_count(0)
    assert suggestion and suggestion in " ".join(workbench.editor_text().split()), (
        suggestion,
        workbench.editor_text(),
    )
    workbench.run_command("File: Revert File")


def chat_frame(workbench: Workbench) -> Frame:
    workbench.run_command("swarm-lsp: Open chat")
    return workbench.frame_with("#input")


def test_chat_streams_two_turns_and_a_source_link_lands_on_its_line(workbench: Workbench) -> None:
    page = workbench.page
    workbench.open_file("cart.py")
    chat = chat_frame(workbench)
    shot(workbench, "6-chat-open")
    texts_seen: list[str] = []
    for turn, question in enumerate(
        ("What does the function total return?", "And what does discount do?"), 1
    ):
        chat.locator("#input").fill(question)
        chat.locator("#send").click()
        expect(chat.locator("#stop")).to_be_enabled()
        # The pending answer grows as the voters write (swarm/chatChunk), before the voted answer lands.
        while chat.locator(".turn.answer:not(.pending)").count() < turn:
            # all_inner_texts does not wait: the pending answer may be replaced at any moment.
            for text in chat.locator(".turn.pending .text").all_inner_texts()[:1]:
                if text and (not texts_seen or texts_seen[-1] != text):
                    texts_seen.append(text)
            time.sleep(0.05)
        shot(workbench, f"7-chat-turn-{turn}")
    assert len(texts_seen) >= 2, texts_seen
    assert any(len(later) > len(earlier) for earlier, later in itertools.pairwise(texts_seen)), texts_seen
    # The conversation is kept: both questions and both answers, each with its agreement.
    expect(chat.locator(".turn.user")).to_have_count(2)
    expect(chat.locator(".turn.answer")).to_have_count(2)
    expect(chat.locator(".turn.answer .agreement").last).to_contain_text(
        re.compile(r"agreement \d\.\d\d", re.I)
    )
    links = chat.locator(".turn.answer").last.locator("a.source")
    expect(links.first).to_be_visible()
    label = links.last.inner_text().strip()
    path, line = re.fullmatch(r"(.+?)(?::(\d+)(?:-\d+)?| \(.*\))", label).groups()
    links.last.click()
    name = path.rsplit("/", 1)[-1]
    expect(page.locator(".editor-group-container.active .tab.active", has_text=name)).to_be_visible()
    expect(page.locator(".statusbar-item", has_text=f"Ln {line or 1},").first).to_be_visible()
    shot(workbench, "8-source-link")


def test_stop_cancels_a_chat_answer(workbench: Workbench) -> None:
    chat = chat_frame(workbench)
    answers = chat.locator(".turn.answer:not(.pending)").count()
    chat.locator("#input").fill("Explain every function in this project in detail.")
    chat.locator("#send").click()
    expect(chat.locator(".turn.pending")).to_be_visible()
    chat.locator("#stop").click()
    expect(chat.locator(".turn.note").last).to_contain_text("Stopped")
    expect(chat.locator("#send")).to_be_enabled()
    assert chat.locator(".turn.answer:not(.pending)").count() == answers
    shot(workbench, "9-stopped")
    # The server is free again: the status bar goes back to idle.
    expect(workbench.page.locator(".statusbar-item", has_text="swarm-lsp").first).to_have_text("swarm-lsp")


def test_a_setting_the_server_refuses_is_shown_and_the_previous_settings_stay(workbench: Workbench) -> None:
    page = workbench.page
    settings_file = workbench.settings_file  # type: ignore[attr-defined]
    workbench.replace_in_user_settings(
        '"swarm-lsp.swarm.voters": 2,', '"swarm-lsp.swarm.voters": 500,', settings_file
    )
    toast = page.locator(".notification-toast", has_text="swarm-lsp settings for")
    expect(toast.first).to_be_visible(timeout=60_000)
    message = toast.first.inner_text()
    assert "keeping the previous settings" in message and "voters" in message, message
    shot(workbench, "10-refused-setting")
    workbench.replace_in_user_settings(
        '"swarm-lsp.swarm.voters": 500,', '"swarm-lsp.swarm.voters": 2,', settings_file
    )
    # The server still answers with the previous settings.
    chat = chat_frame(workbench)
    answers = chat.locator(".turn.answer:not(.pending)").count()
    chat.locator("#input").fill("Where is discount defined?")
    chat.locator("#send").click()
    expect(chat.locator(".turn.answer:not(.pending)")).to_have_count(answers + 1, timeout=ANSWER_TIMEOUT_MS)
    expect(chat.locator(".turn.answer .how").last).to_contain_text("/2 voters")


def test_without_a_server_the_extension_says_how_to_install_it(browser: Browser, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "main.py").write_text("print('hello')\n")
    settings = {
        "workbench.startupEditor": "none",
        "chat.disableAIFeatures": True,
        "security.workspace.trust.enabled": False,
        "python.defaultInterpreterPath": "/nonexistent/bin/python",
    }
    # PATH without this test's virtual environment: no swarm-lsp anywhere.
    env = node_env(PATH=f"{NODE_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin")
    with code_server(tmp_path, folder, settings, env) as server:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(f"{server.url}/?folder={folder}")
        toast = page.locator(".notification-toast", has_text="swarm-lsp server was not found")
        expect(toast).to_be_visible(timeout=60_000)
        assert "/nonexistent/bin/python" in toast.inner_text()
        expect(page.locator(".statusbar-item", has_text="swarm-lsp: not found")).to_be_visible()
        assert_screenshot_not_blank(page, tmp_path / "not-found.png", width=VIEWPORT["width"])
        toast.get_by_role("button", name="Install instructions").click()
        expect(page.locator(".tab", has_text=re.compile("Preview readme.md", re.I))).to_be_visible()
        frame = Workbench(page).frame_with("text=Install the server")
        assert "pip install swarm-lsp" in frame.locator("body").inner_text()
        assert_screenshot_not_blank(page, tmp_path / "install-help.png", width=VIEWPORT["width"])
        context.close()
