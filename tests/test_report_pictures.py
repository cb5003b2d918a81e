"""The report's pictures drawn ahead in a process of their own (PictureDrawer): the
same pictures, byte for byte, as the report draws itself; only the series the report
shows in the end; and a report that still has every picture when no process can be
started or a drawing fails."""

from __future__ import annotations

import re
import sys

import pytest
from fixtures.report_data import fleet_report

from cricket.report import anomalous, render_html
from cricket.report_pictures import PictureDrawer, series_pictures


def _strip(doc: str) -> str:
    return re.sub(r"generated [^<]*", "", doc)


def test_pictures_drawn_in_a_process_while_batches_arrive_are_those_drawn_here() -> None:
    report = fleet_report(n_series=12, every=2)
    results = report.results
    hits = anomalous(results)
    assert len(hits) >= 6
    limit = 3
    final = hits[:limit]
    with PictureDrawer(limit) as drawer:
        assert drawer.active
        # three "batches", the most severe series arriving last: the first batches'
        # candidates fall out of the top three on the way
        for part in (results[:4], results[4:9], results[9:]):
            drawer.offer(part)
        pictures = drawer.ahead(final, timeout=300).result()
    assert list(pictures) == [r.key for r in final]  # only the series shown, in order
    assert pictures == {r.key: series_pictures(r) for r in final}  # the same PNG bytes
    assert all(p.count("<img ") == 3 for p in pictures.values())
    drawn_here = _strip(render_html(report, max_plotted=limit))
    report.pictures = pictures
    assert _strip(render_html(report, max_plotted=limit)) == drawn_here


def test_without_a_process_nothing_is_drawn_ahead_and_the_report_draws_every_picture(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = fleet_report(n_series=4)
    hits = anomalous(report.results)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # no process starts
    with PictureDrawer() as drawer:
        assert not drawer.active
        drawer.offer(report.results)
        assert drawer.ahead(hits).result() == {}
    doc = render_html(report)
    assert doc.count('<img class="plot"') >= len(hits)


def test_a_drawing_process_that_dies_leaves_the_pictures_to_the_report() -> None:
    """A process that is gone (killed, out of memory) fails its futures: they are left
    out, and the report draws those series itself."""
    report = fleet_report(n_series=6)
    hits = anomalous(report.results)
    with PictureDrawer(len(hits)) as drawer:
        drawer.offer(report.results[:1])
        process = drawer._process
        assert process is not None
        process._proc.kill()  # the drawing process, killed
        process._proc.wait()
        drawer.offer(report.results[1:])
        got = drawer.ahead(hits).result()
    assert set(got) <= {r.key for r in hits}
    assert all(got[k] == series_pictures(r) for r in hits if (k := r.key) in got)
    strip = _strip(render_html(report))
    report.pictures = got
    assert _strip(render_html(report)) == strip


def test_pictures_not_drawn_in_time_are_left_to_the_report() -> None:
    """The report waits a bounded time for the process (which runs below the flow's
    priority); what is late is drawn by the report itself, the same pictures."""
    report = fleet_report(n_series=8)
    hits = anomalous(report.results)
    with PictureDrawer(len(hits)) as drawer:
        got = drawer.ahead(hits, timeout=0.0).result()  # no time to wait at all
    assert set(got) <= {r.key for r in hits}
    assert all(got[r.key] == series_pictures(r) for r in hits if r.key in got)
    drawn_here = _strip(render_html(report))
    report.pictures = got
    assert _strip(render_html(report)) == drawn_here
