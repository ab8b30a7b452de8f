"""The README's screenshots of a study's report: `python docs/screenshots.py reports/article/report.html docs/`.

The top of the page (title, contents, overview with its forest plot, the article's claims) at
a desktop (1400 px) and a phone (400 px) width, as palette PNGs small enough to commit. The
whole page at both widths is what tests/test_browser.py checks and saves.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser_helpers import chromium_paths, full_page_screenshot, start_chrome
from PIL import Image

WIDTHS = (1400, 400)
LAST_SECTION = "findings"  # the screenshots end with this section
MAX_HEIGHT = 4000  # px: a phone's long overview is cut here


def bottom_of(driver: Any, width: int, section: str) -> int:
    """Where a section ends on the page at a viewport width (a phone below 600 px), in px."""
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    bottom = driver.execute_script(f"return document.getElementById('{section}').getBoundingClientRect().bottom + window.scrollY")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return int(bottom) + 16


def main(report: Path, out_dir: Path) -> list[Path]:
    found = chromium_paths()
    if found is None:
        raise SystemExit("error: chromium and chromedriver are needed (make browser)")
    driver = start_chrome(*found)
    written = []
    try:
        driver.get(report.resolve().as_uri())
        for width in WIDTHS:
            path = out_dir / f"report-{width}px.png"
            full_page_screenshot(driver, width, path)
            height = min(bottom_of(driver, width, LAST_SECTION), MAX_HEIGHT)
            with Image.open(path) as image:
                top = image.convert("RGB").crop((0, 0, width, min(height, image.height)))
            top.quantize(colors=128).save(path, optimize=True)
            written.append(path)
    finally:
        driver.quit()
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "docs")):
        print(path, f"{path.stat().st_size / 1024:.0f} KiB")
