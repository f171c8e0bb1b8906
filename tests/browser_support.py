"""Debian's Chromium driven by Playwright, for the tests of pages (the dashboard, VS Code as code-server).

`make test` installs Chromium (`make browser`); a missing one fails the test with what to do, it is never
skipped. Screenshots are checked: a PNG of the expected width whose pixels are not one flat colour.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "this test needs Chromium: install the Debian package `chromium` "
            "(apt-get install chromium; `make test` installs it)"
        )
    return path


def assert_screenshot_not_blank(page: Page, path: Path, *, width: int, full_page: bool = True) -> None:
    """A blank page compresses to a few byte values; a rendered one uses most of them."""
    page.screenshot(path=path, full_page=full_page)
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    shot_width, height = struct.unpack(">II", png[16:24])
    assert shot_width == width and height >= 200, (shot_width, height)
    pixels, offset = b"", 8
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset : offset + 8])
        if kind == b"IDAT":
            pixels += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    assert len(set(zlib.decompress(pixels))) > 64, f"{path} looks blank"


@contextmanager
def chromium(expect_timeout_ms: int) -> Iterator[Browser]:
    """Debian's Chromium under Playwright, with `expect` waiting `expect_timeout_ms` (two busy cores
    need more than Playwright's default 5 s)."""
    executable = chromium_path()
    expect.set_options(timeout=expect_timeout_ms)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
