"""The HTML report in a real headless Chromium: it renders, every image loads, nothing
from the data runs as code, and a screenshot is produced (issues 4 and 8)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fixtures.report_data import HOSTILE_KEY, HOSTILE_TAG, fleet_report

from cricket.report import write_report

pytestmark = pytest.mark.browser

NOTE_PAYLOAD = "<script>window.__pwned=2</script><img src=y onerror=alert(2)>"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_renders_escapes_and_screenshots(browser, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    report = fleet_report(
        n_series=6, title=f"Hourly score {HOSTILE_TAG}", notes=[f"note {NOTE_PAYLOAD}"]
    )
    path = write_report(report, tmp_path)
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    # No dialog opened, no script ran.
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018  (touching .text raises when absent)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.scripts.length") == 0

    # Every image came from the report itself and decoded.
    images = browser.find_elements(By.TAG_NAME, "img")
    plotted = len(report.anomalous())
    assert len(images) == 3 * plotted  # series plot, most severe event, shape pair
    for img in images:
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img
        ) > 0

    # The payloads are shown as text: the visible page text holds them verbatim.
    body = browser.find_element(By.TAG_NAME, "body").text
    assert HOSTILE_KEY in body
    assert NOTE_PAYLOAD in body
    assert browser.title == f"Hourly score {HOSTILE_TAG}"
    for i in range(6):
        assert f"cricket{i:03d}" in body

    # A full-page screenshot a person can look at.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 40, 8000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    width, h = _png_size(data)
    assert width >= 800 and h >= 900
    assert len(data) > 50_000, "screenshot looks blank"
    browser.set_window_size(1280, 900)


def test_empty_report_renders_its_notes(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    report = fleet_report(n_series=0, hostile=False, notes=["no data in this window"])
    path = write_report(report, tmp_path)
    browser.get(path.as_uri())
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "no data in this window" in body
    assert "No series were scored" in body
    assert browser.find_elements(By.TAG_NAME, "img") == []
