"""Headless Chromium from Debian's packages, driven by Selenium, and screenshots of its pages.

The browser and its driver are Debian's ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them), named by path so Selenium never downloads a driver. Screenshots go to the
test's directory; ``KAPELL_CONSOLE_SCREENSHOTS=DIR`` (``make console-screenshots``) also copies
them into DIR, e.g. ``docs/img``.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1360, 1000)
MIN_HEIGHT = 480  # a short page is shot short, not padded to the window

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists() and importlib.util.find_spec("selenium")),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run does) and selenium (the dev extra)",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """``check()``'s first truthy answer; its last exception explains a timeout."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except Exception as exc:  # the page may be mid-swap: try again
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from last


def screenshot(driver: Any, directory: Path, name: str) -> Path:
    """Save the whole page as ``console-NAME.png`` (through the DevTools protocol: a headless
    window is no taller than its virtual screen), and copy it where asked."""
    bottom = "return document.querySelector('main').getBoundingClientRect().bottom + scrollY"
    height = int(driver.execute_script(bottom)) + 16
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True,
         "clip": {"x": 0, "y": 0, "width": WINDOW[0], "height": min(max(MIN_HEIGHT, height), 2400),
                  "scale": 1}},
    )  # fmt: skip
    path = directory / f"console-{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    copy_to = os.environ.get("KAPELL_CONSOLE_SCREENSHOTS")
    if copy_to:
        Path(copy_to).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(copy_to) / path.name)
    return path
