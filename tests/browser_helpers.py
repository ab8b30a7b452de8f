"""Headless Chromium for the report: used by tests/test_browser.py and docs/screenshots.py.

Debian's `chromium` and `chromium-driver` (`make browser` installs them); Selenium drives the
local driver, so Selenium Manager never tries to download one.
"""

from __future__ import annotations

import base64
import shutil
import struct
from pathlib import Path
from typing import Any


def chromium_paths() -> tuple[str, str] | None:
    """Chromium and its driver from PATH, or None when either is missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chrome(browser: str, driver_path: str) -> Any:
    """A headless Chromium at 1400 x 900 that keeps the page's console messages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header: the screenshot really is as wide as the viewport asked for."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def full_page_screenshot(driver: Any, width: int, path: Path) -> tuple[int, int]:
    """The whole page at a given viewport width (a phone below 600 px), saved as PNG; its pixel size."""
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    data = base64.b64decode(shot["data"])
    path.write_bytes(data)
    scroll_width = driver.execute_script("return document.documentElement.scrollWidth")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert scroll_width <= width, f"the page is {scroll_width} px wide at a {width} px viewport: something does not scroll in its box"
    return png_size(data)
