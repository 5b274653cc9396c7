"""A real headless Chromium driven by Selenium against a real pserve.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``); Selenium is
given both paths, so Selenium Manager never downloads anything.  Without them the browser tests
skip locally, and fail when ``CI`` is set (.ci/run installs them).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("GREENJOBS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GREENJOBS_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1440,1000", "--lang=en-US")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
#: Load the test-only handlers next to the built-in ones; fast stops; one cpu worker for the overview.
APP = {"greenjobs.handlers": "greenjobs.handlers.builtin tests.browser.browser_handlers", "greenjobs.shutdown.grace": 0.5,
       "greenjobs.store.synchronous": "normal", "greenjobs.workers.cpu": 1, "greenjobs.pool.size": 64}


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI is set: .ci/run should have installed chromium and chromium-driver")
    pytest.skip(f"{reason} (apt-get install -y chromium chromium-driver)")


@pytest.fixture
def browser():
    """A fresh headless Chromium (its console log kept, so a test can assert no CSP violation or script error)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            _unavailable(f"no {path}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser, tmp_path, request):
    """``screenshot("overview")``: saves into tmp_path and tests/browser/screenshots/, prints both paths."""
    def take(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        assert browser.save_screenshot(str(path)), f"could not save {path}"
        SCREENSHOTS.mkdir(exist_ok=True)
        copy = SCREENSHOTS / path.name
        shutil.copyfile(path, copy)
        print(f"screenshot {name}: {path} (copied to {copy})")
        return copy
    return take
