"""Debian's Chromium driven by Playwright, for what a person looks at.

Playwright's own browser download is not used: the tests launch the distribution's Chromium
(``apt-get install chromium``; ``.ci/run`` installs it) through ``executable_path``. Where it or
Playwright is absent, ``chromium_or_skip()`` skips the test and says which is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Headless, no sandbox (root in CI), and none of the browser's own network traffic: this machine
# reaches only loopback, and every page a test opens is served there.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".test-artifacts" / "screenshots"

# Airflow's UI keeps two hidden progress bars (``visibility: hidden``) animating on every page,
# which kept the renderer busy with 0.28 of a core while a run's page sat open (0.01 with them
# paused, measured). A context given this init script pauses the progress bars' animation in
# each document, and only theirs (dialogs and accordions animate as they do for a person): no
# test looks at a progress bar, and the browser stops competing with the suite for the CPU.
PAUSE_ANIMATIONS = """
document.addEventListener("DOMContentLoaded", () => {
  const style = document.createElement("style");
  style.textContent = ".chakra-progress__range { animation-play-state: paused !important; }";
  document.head.appendChild(style);
});
"""


def chromium_path() -> str | None:
    return os.environ.get("LOADGATE_CHROMIUM") or shutil.which("chromium")


def chromium_or_skip() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (requirements-dev.txt)")
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def save_screenshot(target: Any, name: str) -> Path:
    """A screenshot of a page or element in ``.test-artifacts/screenshots/`` (kept after the
    run, for a person to look at)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path
