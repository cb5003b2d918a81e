"""The point model's report in headless Chromium: every event's scatter and per-feature
bars load, the fields are named, and a hostile tag value stays text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cricket.multifield import PointBundle, PointSpec, point_events
from cricket.report_points import DeviceResult, write_report
from cricket.series import SeriesKey
from cricket.synth_points import FIELDS, make_point_fleet

pytestmark = pytest.mark.browser
HOSTILE = "<img src=x onerror=window.__pwned=1>"


def test_point_report_renders_the_points_against_their_centroids(browser, tmp_path: Path):
    from selenium.webdriver.common.by import By

    fleet = make_point_fleet(n_devices=3, days=2.0, seed=4)
    split = fleet.end - pd.Timedelta(hours=12)
    spec = PointSpec(n_clusters=6)
    results = []
    frames = {}
    for dev in fleet.devices:
        tags = dev.tag_dict
        frame = pd.DataFrame({f: fleet.series[SeriesKey.make("psu", f, tags)] for f in FIELDS})
        # the device is named by a hostile tag value; the report must show it as text
        frames[SeriesKey.make("psu", dev.field, {"host": tags["host"] + HOSTILE})] = frame
    bundle, _ = PointBundle.train(fleet.selector(), spec,
                                  {k: f[f.index < split] for k, f in frames.items()})
    for key, model in bundle.models.items():
        tail = frames[key][frames[key].index >= split]
        scored = model.score(tail)
        results.append(DeviceResult(key, tail, scored, point_events(scored, spec, fleet.step),
                                    model))
    n_events = sum(len(r.events) for r in results)
    assert n_events == len(fleet.truth) > 0
    first = fleet.truth[0]
    answers = [{"what": "label: anomaly", "series": str(first.key), "from": "t0", "to": "t1",
                "by": "ops", "why": "swapped " + HOSTILE}]
    path = write_report(results, tmp_path, "points.html", "Point anomalies", "1",
                        incidents=[f"anomaly on {first.key} [abc123]"], answers=answers,
                        waveform_report="score-20260107T1200-v1.html")

    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 2 * n_events
    for img in images:
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "<img src" in body and "onerror" in body  # shown as text (the key escapes =)
    for a in fleet.truth:
        assert f"{a.kind} out of line with the other fields" in body
    link = browser.find_element(By.CSS_SELECTOR, ".waveform-link a")
    assert link.get_attribute("href") == (tmp_path / "score-20260107T1200-v1.html").as_uri()
    # the incidents the run opened and people's answers on its devices, as text
    incidents = browser.find_element(By.CLASS_NAME, "incidents").text
    assert f"anomaly on {first.key} [abc123]" in incidents
    answered = browser.find_element(By.CLASS_NAME, "answers").text
    assert "label: anomaly" in answered and "swapped <img src" in answered
    cells = [c.text for c in browser.find_elements(By.CLASS_NAME, "contributor")]
    assert sorted(cells) == sorted(a.kind for a in fleet.truth)
