"""Unit tests of the anomaly report: content, escaping, image counts, file naming,
atomic writes, the markdown summary and the plots."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.report_data import HOSTILE_KEY, HOSTILE_TAG, START, fleet_report, series_result

from cricket import plots
from cricket.report import (
    CSP,
    Report,
    fmt_duration,
    md_escape,
    render_html,
    report_filename,
    write_report,
)
from cricket.report_markdown import event_rows, markdown_summary
from cricket.series import SeriesKey

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Tags(HTMLParser):
    """Collects start tags and their attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(doc: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(doc)
    return p.tags


def test_every_series_listed_and_images_three_per_plotted_series() -> None:
    """Per anomalous series: the series plot, its most severe event explained (actual
    against typical, each view's surprise) and the segment beside the nearest shape."""
    report = fleet_report(n_series=7, every=3)
    doc = render_html(report)
    for r in report.results:
        assert html.escape(r.key) in doc
    hits = report.anomalous()
    assert len(hits) == 4  # hosts 0, 3, 6 + the hostile one
    imgs = [a for t, a in _tags(doc) if t == "img"]
    assert len(imgs) == 3 * len(hits)
    for a in imgs:
        src = a["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC


def test_hostile_text_is_escaped_everywhere() -> None:
    note = "</li><script>alert(3)</script>"
    report = fleet_report(n_series=2, title=f"T {HOSTILE_TAG}", notes=[note])
    report.model_name = '"><svg onload=alert(4)>'
    report.results[0].source = "<b>series</b>"
    doc = render_html(report)
    tags = _tags(doc)
    names = [t for t, _ in tags]
    assert "script" not in names and "svg" not in names
    clean = [t for t, _ in _tags(render_html(fleet_report(n_series=2)))]
    assert names.count("b") == clean.count("b") == 4  # only the report's own summary cards
    # Only the report's own images, none with an event handler or a non-data source.
    for t, a in tags:
        assert not any(k.startswith("on") for k in a), (t, a)
        if t == "img":
            assert (a["src"] or "").startswith("data:image/png;base64,")
    assert html.escape(HOSTILE_KEY) in doc
    assert html.escape(note) in doc
    assert "<script" not in doc.lower()


def test_csp_and_no_external_resources() -> None:
    doc = render_html(fleet_report(n_series=3))
    metas = [a for t, a in _tags(doc) if t == "meta"]
    csp = [a for a in metas if (a.get("http-equiv") or "").lower() == "content-security-policy"]
    assert csp and csp[0]["content"] == CSP
    assert "default-src 'none'" in CSP and "img-src data:" in CSP
    # Nothing refers to another resource: no http(s) or protocol-relative URLs in attributes.
    for t, a in _tags(doc):
        for k, v in a.items():
            if k in {"src", "href", "action", "data"} and v:
                assert v.startswith("data:image/png;base64,"), (t, k, v[:40])
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", doc)


def test_series_without_anomalies_listed_but_not_plotted() -> None:
    report = fleet_report(n_series=4, every=100, hostile=False)  # only host 0 anomalous
    doc = render_html(report)
    assert doc.count('<section class="series"') == 1
    for i in range(4):
        assert f"cricket{i:03d}" in doc


def test_cap_on_plotted_series_says_how_many_left_out() -> None:
    report = fleet_report(n_series=5, every=1, hostile=False)  # all 5 anomalous
    doc = render_html(report, max_plotted=2)
    assert doc.count('<section class="series"') == 2
    assert "3 more anomalous series are left out" in doc
    # The two plotted are the highest peaks (70 + i): hosts 4 and 3.
    sections = doc.split('<section class="series"')[1:]
    assert "cricket004" in sections[0] and "cricket003" in sections[1]
    assert len([t for t, _ in _tags(doc) if t == "img"]) == 6  # 3 per plotted series


def test_series_without_nearest_shapes_gets_no_shape_pair() -> None:
    r = series_result("waveform.value{host=a}", True, shapes=False)
    report = Report("t", "score", START, START + pd.Timedelta(hours=1), "m", 1, [r])
    doc = render_html(report)
    assert len([t for t, _ in _tags(doc) if t == "img"]) == 2  # series plot, event plot


def test_empty_report_renders_notes() -> None:
    report = fleet_report(n_series=0, hostile=False, notes=["no data in this window"])
    doc = render_html(report)
    assert "no data in this window" in doc
    assert "No series were scored" in doc
    assert "<img" not in doc
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")


def test_clean_window_says_no_anomalies() -> None:
    report = fleet_report(n_series=3, every=100, hostile=False)
    for r in report.results:
        r.events = r.events.iloc[0:0]
    doc = render_html(report)
    assert "No anomalies found" in doc
    assert "<img" not in doc


def test_a_window_that_only_settles_an_earlier_event_says_so() -> None:
    """An hour whose alerts are the wake of an event that began the hour before has no
    event of its own; the report names the earlier event it settled instead of saying
    that nothing was found (its scores above the threshold would contradict that)."""
    report = fleet_report(n_series=3, every=100, hostile=False)
    for r in report.results:
        r.events = r.events.iloc[0:0]
    first = report.results[0]
    first.revised = pd.DataFrame({
        "start": [START - pd.Timedelta("46min")], "end": [START - pd.Timedelta("16min")],
        "peak": [98.9], "mean": [97.6], "duration_s": [1800.0], "severity": [269.6]})
    doc = render_html(report)
    assert "No anomalies found" not in doc and "No new events in this window" in doc
    section = doc.split("Earlier events settled by this window", 1)[1]
    assert html.escape(first.key) in section and "98.9" in section and "30m" in section
    md = markdown_summary(report)
    assert "No anomalies found" not in md and "Earlier events settled" in md
    assert md_escape(first.key) in md.split("Earlier events settled", 1)[1]
    for r in report.results:  # without a settled event the window reads as before
        r.revised = None
    assert "No anomalies found" in render_html(report)
    assert "Earlier events settled" not in markdown_summary(report)


def test_file_name_and_atomic_write(tmp_path: Path) -> None:
    report = fleet_report(n_series=2, kind="backfill", version="12")
    path = write_report(report, tmp_path / "reports")
    assert path.name == "backfill-20240501T1000-v12.html"
    assert path.parent == (tmp_path / "reports").absolute()
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # Writing again replaces the file and leaves no temporary files behind.
    write_report(report, tmp_path / "reports")
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [path.name]


def test_file_name_is_safe_for_odd_versions_and_naive_times() -> None:
    report = fleet_report(n_series=1, version="../../etc/x y")
    assert "/" not in report_filename(report)
    assert report_filename(report).endswith(".html")
    report.window_start = pd.Timestamp("2024-05-01T10:00:00").to_pydatetime()  # naive = UTC
    report.model_version = None
    assert report_filename(report) == "score-20240501T1000-vnone.html"


def test_failed_render_leaves_previous_report_intact(tmp_path: Path) -> None:
    report = fleet_report(n_series=1)
    path = write_report(report, tmp_path)
    before = path.read_bytes()
    broken = fleet_report(n_series=1)
    broken.results[0].frame = broken.results[0].frame.drop(columns=["reconstruction"])
    with pytest.raises(KeyError):
        write_report(broken, tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_markdown_summary_escapes_and_counts() -> None:
    report = fleet_report(n_series=3, notes=["a | b\n# heading [x](http://evil)"])
    md = markdown_summary(report, report_path=Path("/tmp/r.html"))
    assert "- events: 2" in md and "- series scored: 4" in md
    assert "<img" not in md and "<script" not in md
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in md
    # The note cannot open a link, a heading or a new table cell.
    assert "](http" not in md
    assert "\n# heading" not in md
    assert "a \\| b \\# heading \\[x\\]\\(http://evil\\)" in md
    # Every table row has exactly the six cell separators (five cells).
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows and all(len(re.findall(r"(?<!\\)\|", line)) == 6 for line in rows)


def test_md_escape_round_trip_characters() -> None:
    assert md_escape("a_b*c`d") == "a\\_b\\*c\\`d"
    assert md_escape("x<y>&z") == "x&lt;y&gt;&amp;z"


def test_event_rows_for_table_artifact() -> None:
    report = fleet_report(n_series=4, every=2)
    rows = event_rows(report)
    assert [r["series"] for r in rows] == [
        HOSTILE_KEY, "waveform.value{host=cricket002}", "waveform.value{host=cricket000}"
    ]
    assert set(rows[0]) == {"series", "start", "end", "peak score", "duration", "severity", "fired",
                            "looks like", "answer with"}
    assert rows[0]["peak score"] == 99.0 and rows[0]["duration"] == "3m 10s"
    assert rows[0]["start"] == "2024-05-01 10:30:50 UTC"
    # the reference `cricket feedback normal|anomaly` takes, to copy from the Prefect UI
    assert rows[0]["answer with"] == f"{HOSTILE_KEY}@2024-05-01T10:30:50Z"


def test_each_series_says_how_to_answer_its_events_with_references_to_copy() -> None:
    from cricket.feedback import parse_event_ref

    report = fleet_report(n_series=4, every=2, hostile=False)
    doc = render_html(report)
    answers = re.findall(r'<p class="muted answer">(.*?)</p>', doc)
    hits = report.anomalous()
    assert len(answers) == len(hits) > 0
    for r, text in zip(hits, answers, strict=True):
        assert "cricket feedback normal|anomaly" in text
        (ref,) = re.findall(r"<code>([^<]*@[^<]*)</code>", text)
        name, start = parse_event_ref(html.unescape(ref))
        assert name == r.key and start == r.events["start"].iloc[0]


@pytest.mark.parametrize(
    "seconds,text", [(0, "0s"), (42, "42s"), (60, "1m"), (5400, "1h 30m"), (3661, "1h 1m 1s")]
)
def test_fmt_duration(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_sink_key_parses_or_uses_the_given_key() -> None:
    r = series_result("waveform.value{host=a}", False)
    assert r.sink_key() == SeriesKey.make("waveform", "value", {"host": "a"})
    odd = SeriesKey.make("waveform", "value", {"host": "a,b=c}"})
    r.series_key = odd
    assert r.sink_key() == odd


def test_plots_return_pngs_and_write_files(tmp_path: Path) -> None:
    r = series_result("k", True)
    for data in (
        plots.plot_series(r.frame, r.threshold, r.events),
        plots.plot_shape_pair(*r.nearest_shapes[0]),
        plots.centroid_gallery(np.random.default_rng(0).normal(size=(70, 32)), tmp_path / "g.png"),
        plots.heldout_plot(
            [("cpu.usage{host=$x$}", r.frame["value"].to_numpy(), r.frame["reconstruction"].to_numpy())],
            tmp_path / "h.png",
        ),
        plots.heldout_plot([]),
    ):
        assert data[:8] == PNG_MAGIC and len(data) > 2000
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "h.png").stat().st_size > 2000


def test_plots_break_lines_at_gaps_instead_of_drawing_across_them():
    """A backfill report joins the anomalous hours of a series: the hours between them
    have no data and must show as a gap, not a straight line."""
    import numpy as np
    import pandas as pd

    from cricket.plots import break_gaps

    first = pd.date_range("2026-11-20T10:00Z", periods=360, freq="10s")
    later = pd.date_range("2026-11-20T14:00Z", periods=360, freq="10s")
    frame = pd.DataFrame(
        {"value": np.arange(720.0), "anomalous": [False] * 720}, index=first.append(later)
    )
    out = break_gaps(frame)
    assert len(out) == 721
    hole = out[(out.index > first[-1]) & (out.index < later[0])]
    assert len(hole) == 1 and hole["value"].isna().all()
    assert break_gaps(frame.iloc[:360]) is not None and len(break_gaps(frame.iloc[:360])) == 360


def test_events_rank_by_severity_and_are_explained_in_the_metric_units() -> None:
    """The most severe event comes first in the series' table, the summary and the
    artifact rows, whatever its 0-100 peak; each row says actual against typical and
    which view fired."""

    report = fleet_report(n_series=4, every=1, hostile=False)
    quiet, loud = report.results[1], report.results[2]
    for r, sev, peak in ((quiet, 4.2, 99.0), (loud, 11.5, 71.0)):
        r.events = r.events.assign(severity=[sev], peak=[peak], scale=["shape 94"],
                                   actual=[0.0], typical=[41.5], views=["shape 32 3.0"])
    # a second, milder event on the loud series, listed after the severe one
    extra = loud.events.assign(start=loud.events["start"] - pd.Timedelta("20min"),
                               end=loud.events["end"] - pd.Timedelta("20min"),
                               severity=[6.0], typical=[7.25])
    loud.events = pd.concat([extra, loud.events], ignore_index=True)
    assert report.anomalous()[0] is loud
    rows = event_rows(report)
    assert [r["severity"] for r in rows[:3]] == [11.5, 6.0, 4.2]
    assert rows[0]["fired"] == "shape 94"
    md = markdown_summary(report)
    lines = [ln for ln in md.splitlines() if ln.startswith("| waveform")]
    assert "cricket002" in lines[0] and "11.5" in lines[0]
    doc = render_html(report)
    section = next(part for part in doc.split('<section class="series"')[1:]
                   if html.escape(loud.key) in part)
    table = section[section.index("<table>"):section.index("</table>")]
    assert table.index("11.5") < table.index(">6<")
    assert "41.5" in table and "shape 94" in table and "actual (mean)" in table


def test_reused_figures_draw_what_a_fresh_figure_draws() -> None:
    """The report's figures are reused within a thread: a picture drawn after other
    series (more lines, other ranges, surprise views the next series lacks) must be
    pixel for pixel what a fresh figure in a new thread draws."""
    import threading

    rich = series_result("waveform.value{host=a}", True, seed=1, n=720, peak=99.0)
    for j, view in enumerate(("shape", "range", "noise")):
        rich.frame[f"surprise:{view}"] = np.linspace(0, 50 * (j + 1), len(rich.frame))
    plain = series_result("waveform.value{host=b}", True, seed=2, peak=75.0)

    def pictures(r) -> list[bytes]:
        return [plots.plot_series(r.frame, r.threshold, r.events),
                plots.plot_event(r.frame, r.events.iloc[0]),
                plots.plot_shape_pair(*r.nearest_shapes[0], step_s=10.0)]

    fresh: list[bytes] = []
    worker = threading.Thread(target=lambda: fresh.extend(pictures(plain)))
    worker.start()
    worker.join()
    pictures(rich)
    assert pictures(plain) == fresh


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_step_of_a_series_is_in_seconds_whatever_the_index_unit(unit: str) -> None:
    """The shape pair's time axis (minutes before the peak) comes from this step."""
    from cricket.report import _step_seconds

    frame = series_result("k", True).frame
    frame.index = frame.index.as_unit(unit)
    assert _step_seconds(frame) == 10.0


def test_each_view_reads_as_a_chance_most_surprising_first() -> None:
    """The events table says how unlikely each view's peak is (p), not a raw -log10 p in
    the hundreds: past 1e-12 it reads "p < 1e-12"; the views are listed most surprising
    first; text that is not "view surprise, ..." is shown as it is."""
    from cricket.report import fmt_views

    assert fmt_views("shape 32 582.3, shape 154 3.1, range 1 4.6, noise 32 0.4") == (
        "shape 32 p < 1e-12, range 1 p = 3e-05, shape 154 p = 0.0008, noise 32 p = 0.40")
    assert fmt_views("range 1 12.0") == "range 1 p < 1e-12"
    assert fmt_views("shape 32 11.6") == "shape 32 p = 3e-12"
    assert fmt_views("hand-written note") == "hand-written note"
    assert fmt_views(float("nan")) == "-"

    report = fleet_report(n_series=4, every=1, hostile=False)
    loud = report.results[2]
    loud.events = loud.events.assign(severity=[9.0], views=["shape 32 582.3, range 1 2.0"])
    doc = render_html(report)
    assert "shape 32 p &lt; 1e-12, range 1 p = 0.01" in doc
    assert "582.3" not in doc


def test_each_event_says_what_it_looks_like_in_the_table_and_the_artifact_rows() -> None:
    """The events table has a "looks like" phrase per event (from the view that fired,
    the level against typical and the series' step), and so do the artifact rows."""

    report = fleet_report(n_series=4, every=1, hostile=False)
    loud = report.results[2]
    loud.events = loud.events.assign(severity=[9.0], scale=["shape 32"], actual=[0.0],
                                     typical=[41.5], views=["shape 32 14.0"])
    step = (loud.frame.index[1] - loud.frame.index[0]).total_seconds()
    want = f"a {fmt_duration(32 * step)} stretch unlike every normal shape, lower than typical"
    doc = render_html(report)
    assert "<th>looks like</th>" in doc and html.escape(want) in doc
    rows = [r for r in event_rows(report) if r["series"] == loud.key]
    assert rows[0]["looks like"] == want


def test_pictures_drawn_ahead_render_the_same_report() -> None:
    """The hourly flow draws the report's pictures while it waits on writes and alerts
    (``Report.pictures``): the report is the same HTML as one that draws them itself,
    and a series without pictures drawn ahead is still drawn."""
    from cricket.report import anomalous
    from cricket.report_pictures import series_pictures

    report = fleet_report(n_series=4)
    strip = lambda doc: re.sub(r"generated [^<]*", "", doc)  # noqa: E731
    drawn_here = strip(render_html(report))
    hits = anomalous(report.results)
    assert len(hits) >= 2
    report.pictures = {r.key: series_pictures(r) for r in hits[1:]}
    assert strip(render_html(report)) == drawn_here
    assert drawn_here.count('<img class="plot"') >= len(hits)  # the pictures are there
