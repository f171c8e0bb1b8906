"""A real VS Code for the extension's tests: code-server (VS Code's workbench and extension host, served
to a browser) with the packaged extension installed, driven through Debian's Chromium by Playwright.

`make test` installs Node 24 and code-server into .cache/vscode-tools and builds
editors/vscode/dist/swarm-lsp.vsix (`make vscode-tools vsix`); when they are missing the tests fail
with that command, they are never skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Frame, Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".cache" / "vscode-tools"
NODE_BIN = TOOLS / "node" / "bin"
CODE_SERVER = TOOLS / "node_modules" / ".bin" / "code-server"
EXTENSION = REPO / "editors" / "vscode"
VSIX = EXTENSION / "dist" / "swarm-lsp.vsix"


def require_built() -> None:
    missing = [
        str(path.relative_to(REPO)) for path in (NODE_BIN / "node", CODE_SERVER, VSIX) if not path.exists()
    ]
    if missing:
        pytest.fail(
            f"the VS Code tests need {', '.join(missing)}: run `make vscode-tools vsix` "
            "(make test runs it; it needs npm and the npm registry once, then works offline)"
        )


def node_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class CodeServer:
    url: str
    folder: Path
    log: Path
    process: subprocess.Popen[bytes]
    settings_file: Path
    """The user's settings.json: code-server applies changes to it at once."""


@contextmanager
def code_server(
    base: Path, folder: Path, settings: dict[str, Any], env: dict[str, str]
) -> Iterator[CodeServer]:
    """code-server on a free loopback port with the extension installed, `settings` as the user's
    settings, and `env` for its processes (the extension host, and the swarm-lsp server it starts)."""
    require_built()
    user = base / "user-data"
    (user / "User").mkdir(parents=True, exist_ok=True)
    (user / "User" / "settings.json").write_text(json.dumps(settings, indent=2))
    config = base / "code-server.yaml"
    config.write_text("")
    common = [str(CODE_SERVER), "--config", str(config), "--user-data-dir", str(user)]
    common += ["--extensions-dir", str(base / "extensions")]
    installed = subprocess.run(
        [*common, "--install-extension", str(VSIX)], env=env, capture_output=True, text=True, timeout=120
    )
    assert "successfully installed" in installed.stdout, installed.stdout + installed.stderr
    port = free_port()
    log = base / "code-server.log"
    process = subprocess.Popen(
        [
            *common,
            "--auth", "none",
            "--bind-addr", f"127.0.0.1:{port}",
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-workspace-trust",
            "--reconnection-grace-time", "5",
            str(folder),
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, f"code-server exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"code-server did not listen:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
        yield CodeServer(url, folder, log, process, user / "User" / "settings.json")
    finally:
        # The extension host and the language server it started are in code-server's session.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


RECORD_STATUS_BAR = """() => {
    window.swarmStatusSeen = [];
    const record = () => {
        const item = document.querySelector('[id="swarm-lsp.swarm-lsp.swarmLsp.status"]')
            || [...document.querySelectorAll('.statusbar-item')].find((node) => node.textContent.includes('swarm-lsp'));
        const text = item ? item.textContent.trim() : '';
        if (text && window.swarmStatusSeen[window.swarmStatusSeen.length - 1] !== text) {
            window.swarmStatusSeen.push(text);
        }
    };
    new MutationObserver(record).observe(document, { subtree: true, childList: true, characterData: true });
}"""
"""Every text the extension's status bar item shows, recorded as it changes (indexing can be quicker
than any polling from the test, but not than the DOM mutations that draw it)."""


class Workbench:
    """What a person does in VS Code, through the page."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def run_command(self, title: str) -> None:
        """Run a command from the palette (F1) by its title."""
        self.page.keyboard.press("F1")
        box = self.page.locator(".quick-input-widget input")
        box.wait_for(state="visible")
        box.fill(f">{title}")
        self.page.locator(".quick-input-list .monaco-list-row", has_text=title).first.click()
        box.wait_for(state="hidden")

    def open_file(self, name: str) -> None:
        self.page.keyboard.press("Control+p")
        box = self.page.locator(".quick-input-widget input")
        box.wait_for(state="visible")
        box.fill(name)
        self.page.locator(".quick-input-list .monaco-list-row", has_text=name).first.click()
        self.page.locator(".editor-group-container.active .tab.active", has_text=name).wait_for()

    def replace_in_user_settings(self, old: str, new: str, settings_file: Path) -> None:
        """Edit the user's settings.json in its editor (find and replace) and save it."""
        self.run_command("Preferences: Open User Settings (JSON)")
        self.page.locator(".monaco-editor.focused", has_text='"workbench.startupEditor"').wait_for()
        self.page.keyboard.press("Control+h")
        find = self.page.locator(".find-widget.visible")
        find.locator("textarea[aria-label='Find']").fill(old)
        find.locator("textarea[aria-label='Replace']").fill(new)
        find.locator("textarea[aria-label='Replace']").press("Control+Alt+Enter")
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while new not in settings_file.read_text() or old in settings_file.read_text():
            assert time.monotonic() < deadline, f"settings.json was not saved:\n{settings_file.read_text()}"
            time.sleep(0.1)
        self.page.keyboard.press("Control+w")
        self.page.locator(".monaco-editor", has_text='"workbench.startupEditor"').wait_for(state="detached")

    def open_code_actions(self, wanted: str) -> Locator:
        """The light bulb menu at the cursor (Ctrl+.), once it lists `wanted`. The server answers
        code actions at once, but the editor may ask before it knows the buffer: then ask again."""
        menu = self.page.locator(".action-widget:not(.action-list-submenu-panel)")
        for _ in range(3):
            self.page.keyboard.press("Control+.")
            try:
                menu.locator(".monaco-list-row", has_text=wanted).first.wait_for(timeout=10_000)
                return menu
            except PlaywrightTimeout:
                self.page.keyboard.press("Escape")
        raise AssertionError(f"the light bulb never offered {wanted!r}")

    def go_to_line(self, line: int) -> None:
        self.page.keyboard.press("Control+g")
        box = self.page.locator(".quick-input-widget input")
        box.wait_for(state="visible")
        box.fill(f":{line}")
        self.page.keyboard.press("Enter")

    def editor_text(self) -> str:
        """The active editor's visible text, line by line (Monaco renders only what is on screen)."""
        lines = self.page.locator(".editor-group-container.active .view-lines .view-line")
        by_top = []
        for index in range(lines.count()):
            line = lines.nth(index)
            top = float(re.sub(r"[^0-9.]", "", line.get_attribute("style").split("top:")[1].split(";")[0]))
            by_top.append((top, line.inner_text().replace("\u00a0", " ")))
        return "\n".join(text for _, text in sorted(by_top))

    def cursor_line(self) -> int:
        text = self.page.locator(".statusbar-item", has_text=re.compile(r"Ln \d+")).first.inner_text()
        return int(re.search(r"Ln (\d+)", text).group(1))

    def status_seen(self) -> list[str]:
        return list(self.page.evaluate("() => window.swarmStatusSeen"))

    def frame_with(self, selector: str, timeout_s: float = 30) -> Frame:
        """The (webview) frame that holds `selector`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for frame in self.page.frames:
                try:
                    if frame.locator(selector).count() > 0:
                        return frame
                except Exception:  # a frame that went away while we looked
                    continue
            time.sleep(0.2)
        raise AssertionError(f"no frame holds {selector!r}")
