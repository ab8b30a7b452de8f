"""The generated report as a reader sees it: headless Chromium driven by Selenium.

Needs Debian's `chromium` and `chromium-driver` (`make test` installs them when missing). On a
developer machine without them the tests skip; on CI (`CI` set) they fail instead, so the
check can never silently vanish there.
"""

from __future__ import annotations

import base64
import html as html_module
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import chromium_paths, full_page_screenshot, start_chrome

pytestmark = [pytest.mark.workflow, pytest.mark.browser]

# Every image decoded by the browser itself (decode() rejects what it cannot draw).
DECODE_IMAGES = """
const done = arguments[arguments.length - 1];
Promise.all(Array.from(document.images).map(img => img.decode().then(
  () => [img.alt, img.naturalWidth, img.naturalHeight, "", img.src],
  error => [img.alt, img.naturalWidth, img.naturalHeight, String(error), img.src]
))).then(done);
"""

SECTIONS = """
return Array.from(document.querySelectorAll("section")).map(s => [s.id, s.offsetHeight > 0, !!s.querySelector("h2")]);
"""


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    """One headless Chromium for the module; skipped (failed on CI) without chromium and its driver."""
    pytest.importorskip("selenium")
    found = chromium_paths()
    if found is None:
        message = "chromium and chromium-driver are not installed (`make test` installs them: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    driver = start_chrome(*found)
    try:
        yield driver
    finally:
        driver.quit()


def truncated_png(src: str) -> bool:
    """An embedded PNG that stops before its IEND chunk: Chromium draws what it has, part of the figure, and reports no error."""
    prefix = "data:image/png;base64,"
    if not src.startswith(prefix):
        return False
    payload = src[len(prefix) :]
    return not base64.b64decode(payload + "=" * (-len(payload) % 4)).endswith(b"IEND\xaeB`\x82")


def page_problems(driver: Any, page: Path) -> list[str]:
    """What a reader would find broken: severe console messages, images that do not decode, have no size or are cut short."""
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(page.resolve().as_uri())
    problems = []
    for alt, width, height, error, src in driver.execute_async_script(DECODE_IMAGES):
        if error or width == 0 or height == 0:
            problems.append(f"image {alt!r} not drawn ({width}x{height}) {error}".strip())
        elif truncated_png(src):
            problems.append(f"image {alt!r} not drawn whole: its PNG data is truncated")
    problems += [f"console: {entry['message']}" for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return problems


def assert_page_ok(driver: Any, page: Path) -> None:
    """The check both tests share: the good report passes it, the broken copy must fail it."""
    problems = page_problems(driver, page)
    assert not problems, "\n".join(problems)


def expected_sections(config: dict) -> list[str]:
    """The sections the test study must have: from the study's own families, so a new family needs no edit here."""
    from ablation_lab.study import Study

    families = [f"family-{family}" for family in Study.from_config(config).families]
    return ["overview", "findings", *families, "training", "knockout", "compensation", "calibration", "provenance"]


def column(driver: Any, section: str, header: str) -> list[str]:
    """The cells of one column of the first table in a section, top to bottom."""
    return driver.execute_script(
        """
        const table = document.querySelector(`#${arguments[0]} table`);
        const index = Array.from(table.tHead.rows[0].cells).findIndex(th => th.textContent.trim() === arguments[1]);
        return Array.from(table.tBodies[0].rows).map(row => row.cells[index].textContent.trim());
        """,
        section,
        header,
    )


def click_header(driver: Any, section: str, header: str) -> str:
    """Click a column header as a reader would (a real click event); the sort direction it now shows."""
    from selenium.webdriver.common.by import By

    cell = driver.find_element(By.XPATH, f"//section[@id='{section}']//table/thead//th[normalize-space()='{header}']")
    cell.click()
    return cell.get_attribute("aria-sort")


def test_the_report_renders_in_chromium_sorts_its_tables_and_fits_a_phone(chrome, smoke_study, tmp_path):
    workdir, config = smoke_study
    page = workdir / "reports" / config["study"] / "report.html"
    assert_page_ok(chrome, page)
    assert chrome.title == f"Ablation study {config['study']} on {config['dataset']['name']}"

    sections = chrome.execute_script(SECTIONS)
    present = [name for name, _, _ in sections]
    assert set(expected_sections(config)) <= set(present), set(expected_sections(config)) - set(present)
    assert all(shown and titled for _, shown, titled in sections), "every section is drawn, with its title"
    links = chrome.execute_script("return Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))")
    assert links == [f"#{name}" for name in present], "the contents list names every section"

    section, header = "family-noise-x-dropout", "accuracy (mean)"
    before = column(chrome, section, header)
    assert len(set(before)) > 2, "a column with several values, so sorting is visible"
    assert click_header(chrome, section, header) == "ascending"
    ascending = column(chrome, section, header)
    assert ascending == sorted(before, key=float)
    assert click_header(chrome, section, header) == "descending"
    assert column(chrome, section, header) == sorted(before, key=float, reverse=True)
    assert chrome.execute_script(f"return document.querySelectorAll('#{section} th[aria-sort]').length") == 1

    for width in (1400, 400):
        shot = tmp_path / f"report-{width}px.png"
        size = full_page_screenshot(chrome, width, shot)
        assert size[0] == width and size[1] > 2000, f"{shot}: {size}"


def test_the_image_check_fails_on_a_broken_image(chrome, smoke_study, tmp_path):
    """The first test's check is only worth something if it catches figures the browser cannot draw:
    one replaced by bytes that are no PNG (a failed export), one cut short (an interrupted write)."""
    workdir, config = smoke_study
    html = (workdir / "reports" / config["study"] / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]*)" src="(data:image/png;base64,[^"]*)"', html)
    assert len(images) > 2, "the report has embedded PNGs"
    (garbage_alt, garbage_src), (cut_alt, cut_src) = images[0], images[-1]
    broken = html.replace(garbage_src, "data:image/png;base64," + base64.b64encode(b"not a png").decode(), 1)
    broken = broken.replace(cut_src, cut_src[: len("data:image/png;base64,") + 400], 1)
    copy = tmp_path / "broken.html"
    copy.write_text(broken)
    problems = page_problems(chrome, copy)
    assert len(problems) == 2, problems
    assert html_module.unescape(garbage_alt) in problems[0] and "EncodingError" in problems[0]
    assert html_module.unescape(cut_alt) in problems[1] and "truncated" in problems[1]
    with pytest.raises(AssertionError, match="not drawn"):
        assert_page_ok(chrome, copy)
