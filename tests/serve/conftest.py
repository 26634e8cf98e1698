"""One headless Chromium per test process for every page test (tests/serve/*browser*.py).

Each page test opens its own server (its own origin) and loads its page with ``get``; they
share the browser, which is what takes ~0.6 s of each file to start.
"""

from __future__ import annotations

import shutil

import pytest


def _browser_binaries() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("needs Debian's chromium and chromium-driver (scripts/setup_env.sh dev)")
    return chromium, driver


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (selenium) at 1280x900."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
