"""Where an anomaly lies, and how bad it is: the settled extent and severity of events.

The score of a point is causal (the error of the segment that *ends* there), so an alert
comes as early as the data allows; but a segment stays anomalous until the anomaly has
left it, and the period scale's segment can span hundreds of samples, so the run of
alerts outlasts the anomaly. Once later data is in, the extent is settled on what the
samples themselves did:

* **Attributed error** (per scale): each sample gets the residual (windowed segment
  minus its nearest shape, unwindowed) of the sliding segment that rebuilds it best
  among those holding it in their central half (:func:`attributed_error`). A normal
  sample next to an anomaly is held by some segment that lies wholly in normal data, so
  its attributed error stays low; a sample inside the anomaly is badly rebuilt by every
  segment. Calibrated on held-out data like the score, it is a per-sample surprise.
* **Lost periodic structure** (with a period scale): ``-log10`` of the spread (std) of
  the values over the trailing dominant period. Every normal window of one period holds
  one whole cycle, so its spread hardly varies; a window whose pulse did not come, that
  froze, or lost its waveform is too quiet. This is a causal view like the scales (its
  surprise joins the score); its extent is where the structure was due: from the first
  flagged window's end to the last flagged window's start. No fitted shape enters it, so
  its tail is calibrated on the training and the held-out windows together (overlapping
  windows hold about one independent value per period: held-out alone is too few).

* **Lost noise**: ``-log10`` of the spread of the second differences over the trailing
  short segment. Real sensors are noisy; a window rebuilt *better* than noisy data (a
  frozen value, a shape drawn without noise) is too smooth, which a reconstruction error
  cannot see (centroids average the noise away). Only for a series whose held-out noise
  is steady (no held-out window more than twice as smooth as the typical one): where
  smooth stretches are normal, the view is left out. Its extent: the flagged windows.

An event is a run of alerts (score >= threshold, runs closer than ``min_gap`` merged);
its extent is the samples within ``[first alert - reach, last alert]`` (``reach``: the
longest segment) whose attributed surprise reaches the alert level (where none does,
e.g. a warp that only the period scale sees as a whole: the segment of the view that
fired, ending at the first alert); events whose extents overlap or lie within
``min_gap`` merge, so one anomaly is one event.

**Severity** (uncapped, for ranking): ``peak surprise + log10(duration in samples)``,
that is ``-log10`` of the peak error's tail probability divided by the event's length:
a one-in-10^8 error ranks above a one-in-10^6 one, and of two equally rare errors the
longer-lasting ranks higher (ten times longer: one point more).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cricket.errors import CricketValueError
from cricket.scoring import mask_runs

EPS = 1e-6  # spread floor (robust-scaled units): a frozen window is very quiet, not -inf
_CHUNK = 4096  # segments per block in the attributed error (memory: _CHUNK x segment)

EVENT_COLUMNS = ["start_idx", "end_idx", "alert_idx", "peak", "mean", "severity"]


def attributed_error(segments: np.ndarray, nearest: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per sample of a contiguous piece: how badly the *best* of the sliding segments
    that hold it in their central half rebuild it, ``min_j |r_j(i)| / w(i - s_j)`` over
    segments ``j`` (start ``s_j``) with ``i - s_j`` in ``[m/4, 3m/4)`` (window >= 1/2).

    A normal sample next to an anomaly is held centrally by some segment that lies wholly
    in normal data (when at least m/4 away) and rebuilds well, so the best one is small
    even where the anomaly makes its neighbours' nearest shapes misfit everything; a
    sample inside an anomaly is rebuilt badly by every segment. (An average over the
    covering segments smeared a long segment's misfit over up to one segment on each
    side.) ``segments`` are the piece's windowed segments at hop 1 (``len(piece) - m + 1``
    rows), ``nearest`` their nearest shapes (same shape). NaN for the first and last
    ``m / 4`` samples of a piece, which no segment holds centrally."""
    s, m = segments.shape
    q0, q1 = m // 4, m - m // 4
    out = np.full(s + m - 1, np.inf)
    for c0 in range(0, s, _CHUNK):
        r = segments[c0 : c0 + _CHUNK] - nearest[c0 : c0 + _CHUNK]
        np.abs(r, out=r)
        rows = r.shape[0]
        for p in range(q0, q1):
            dst = out[c0 + p : c0 + p + rows]
            np.minimum(dst, r[:, p] / w[p], out=dst)
    out[np.isinf(out)] = np.nan
    return out


def provisional_from(n: int, m: int) -> int:
    """The first of ``n`` samples whose attributed error at segment length ``m`` is not
    settled yet: the data's last ``3m/4 - 1`` samples (in an hourly window, most of the
    hour for a period-scale segment).

    A sample is cleared of a neighbouring anomaly by a central segment that starts after
    the anomaly; the latest segment that holds sample ``i`` centrally starts at
    ``i - m/4`` and needs the data up to ``i - m/4 + m``. Before that data is in, every
    segment left to judge a sample just after an anomaly holds the anomaly, so a spike
    at half past looked like a quarter of an hour of anomaly in the hour's report. Where
    a sharp view (the base scale where settled, the range, the lost noise) sees an
    anomaly there, the long scale's hot samples in this tail may join its parts but not
    run on past its last hot sample; where none does, the long scale's are kept. The next
    window, whose left context holds these samples with the data after
    (:func:`window_context`), settles the event (``ScoredSeries.carried``)."""
    return max(n - m + m // 4 + 1, 0)


def window_context(longest: int) -> int:
    """Points of left context to score a window with, for a detector whose longest
    segment is ``longest``: two of them. The context's last segment is where the window
    before left its samples provisional (:func:`provisional_from`, a structure run still
    flagged at its end); the segment before it gives every view there what one pass over
    the data would have: the long scale's and the structure view's trailing windows, and
    each sample's central segments for its attributed error. With one segment of context
    those were NaN or partial there, and an event the window before cut at its end
    (missing pulses, warps only the period scale sees) could not be settled as one pass
    settles it."""
    return 2 * int(longest)


def spread(pieces: list[tuple[int, np.ndarray]], n: int, m: int) -> np.ndarray:
    """``-log10(std + EPS)`` of the values over the trailing ``m`` samples at each point
    of ``n`` (NaN where no full window ends); ``pieces`` as ``split_at_gaps`` gives."""
    out = np.full(n, np.nan)
    for start, piece in pieces:
        if len(piece) < m:
            continue
        # Window by window (exact and causal: a window's spread never depends on
        # values outside it, as a running sum's rounding would), in blocks.
        win = np.lib.stride_tricks.sliding_window_view(piece, m)
        sd = np.concatenate([win[c0 : c0 + _CHUNK].std(axis=1)
                             for c0 in range(0, len(win), _CHUNK)])
        out[start + m - 1 : start + len(piece)] = -np.log10(sd + EPS)
    return out


def roughness(pieces: list[tuple[int, np.ndarray]], n: int, m: int) -> np.ndarray:
    """``-log10(std + EPS)`` of the second differences of the values over the trailing
    ``m`` samples at each point of ``n`` (NaN where no full window ends): high where a
    window is too smooth for the series' noise (a frozen value, a shape drawn without
    noise). ``pieces`` as ``split_at_gaps`` gives."""
    out = np.full(n, np.nan)
    for start, piece in pieces:
        if len(piece) < m:
            continue
        d2 = np.diff(piece, n=2)
        win = np.lib.stride_tricks.sliding_window_view(d2, m - 2)
        sd = np.concatenate([win[c0 : c0 + _CHUNK].std(axis=1)
                             for c0 in range(0, len(win), _CHUNK)])
        out[start + m - 1 : start + len(piece)] = -np.log10(sd + EPS)
    return out


def quiet_extent(flag: np.ndarray, m: int) -> np.ndarray:
    """Samples of the flagged trailing windows of ``m`` points (each window is too
    smooth as a whole)."""
    out = np.zeros(len(flag), dtype=bool)
    for i in np.flatnonzero(np.asarray(flag, dtype=bool)).tolist():
        out[max(i - m + 1, 0) : i + 1] = True
    return out


def structure_extent(flag: np.ndarray, m: int) -> np.ndarray:
    """Samples a run of flagged trailing windows of ``m`` points at: from the run's first
    window end to its last window start (when the run is shorter than a window, the
    other way round: the samples every flagged window shares). A run still flagged at
    the data's end has no last window yet: from its first window end to the end
    (provisional, like a long scale's tail: the next window settles it)."""
    n = len(flag)
    out = np.zeros(n, dtype=bool)
    padded = np.r_[False, np.asarray(flag, dtype=bool), False]
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    for a, stop in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
        if stop == n:
            lo, hi = a, n - 1
        else:
            lo, hi = sorted((a, stop - 1 - m + 1))
        out[max(lo, 0) : hi + 1] = True
    return out


def settle_events(
    alert: np.ndarray,
    surprise: np.ndarray,
    score: np.ndarray,
    extent: np.ndarray | None,
    reach: int,
    min_gap: int,
    lead: np.ndarray | None = None,
    fired: np.ndarray | None = None,
    keep_lead: bool = False,
    lead_alert: np.ndarray | None = None,
) -> pd.DataFrame:
    """:func:`settle_columns` as a DataFrame (``EVENT_COLUMNS``)."""
    return pd.DataFrame(settle_columns(alert, surprise, score, extent, reach, min_gap, lead,
                                       fired, keep_lead, lead_alert))


def settle_columns(
    alert: np.ndarray,
    surprise: np.ndarray,
    score: np.ndarray,
    extent: np.ndarray | None,
    reach: int,
    min_gap: int,
    lead: np.ndarray | None = None,
    fired: np.ndarray | None = None,
    keep_lead: bool = False,
    lead_alert: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Events with settled extents, as arrays by column (``EVENT_COLUMNS``; indices
    into ``alert``): ``start_idx``, ``end_idx`` (inclusive), ``alert_idx`` (the first alert), ``peak`` and ``mean`` score and
    ``severity`` over the extent. ``extent`` marks the samples whose attributed
    surprise reaches the alert level (None: the runs of alerts are the events, as the
    causal score has them); ``lead`` is the same mask for the points just before
    ``alert[0]`` (left context): an event whose extent lies wholly there belongs to the
    window before and is dropped. ``lead_alert`` (the alerts over the same points as
    ``lead``): a run of alerts that starts there is one run with the window's alerts it
    reaches (as one pass has it), so it is not a new event at the window's first point;
    one with nothing hot in this window belongs to the window before. ``fired``: per
    point, the segment length of the view that fired there (an event whose extent holds
    no hot sample gets that segment, ending at its first alert; without ``fired``, the
    first alert alone).

    ``keep_lead``: instead, keep where each extent starts in the left context (a negative
    ``start_idx``, down to ``-len(lead)``), also for an extent that lies wholly there:
    what this window's data settles about an event of the window before. With
    ``lead_alert``, an event of the window before is settled here also when this window
    has no alert: that window's end left its last samples provisional
    (:func:`provisional_from`)."""
    alert = np.asarray(alert, dtype=bool)
    if alert.ndim != 1 or np.shape(score) != alert.shape:
        raise CricketValueError(
            f"alert and score must be 1-D of equal length (got {alert.shape} and "
            f"{np.shape(score)})"
        )
    lead = np.zeros(0, dtype=bool) if lead is None else np.asarray(lead, dtype=bool)
    off = len(lead)
    if lead_alert is not None and len(lead_alert) == off:
        run_starts, run_stops = mask_runs(np.r_[np.asarray(lead_alert, dtype=bool), alert],
                                          min_gap)
        run_starts, run_stops = run_starts - off, run_stops - off
    else:
        run_starts, run_stops = mask_runs(alert, min_gap)
    if run_starts.size == 0:
        return event_columns_from([])
    full = None if extent is None else np.r_[lead, np.asarray(extent, dtype=bool)]
    spans: list[list[int]] = []
    for a, b in zip(run_starts.tolist(), (run_stops - 1).tolist(), strict=True):
        if full is None:
            if b >= 0:
                spans.append([max(a, 0), b, max(a, 0), b])
            continue
        lo = max(a - reach, -off)
        hot = np.flatnonzero(full[lo + off : b + off + 1])
        if hot.size == 0:
            if a < 0:
                continue  # alerts in the left context with nothing hot: nothing to settle
            back = 0 if fired is None else max(int(fired[a]) - 1, 0)
            spans.append([max(a - back, 0), a, a, b])
            continue
        s0, s1 = lo + int(hot[0]), lo + int(hot[-1])
        if keep_lead:
            spans.append([s0, s1, a, b])
            continue
        if s1 < 0:
            continue  # the tail of an event of the window before
        spans.append([max(s0, 0), s1, max(a, 0), b])
    spans.sort()
    merged: list[list[int]] = []
    for s0, s1, a, b in spans:
        if merged and s0 <= merged[-1][1] + min_gap:
            last = merged[-1]
            last[1], last[2], last[3] = max(last[1], s1), min(last[2], a), max(last[3], b)
        else:
            merged.append([s0, s1, a, b])
    rows = []
    sc = np.asarray(score, dtype=float)
    su = np.asarray(surprise, dtype=float)
    for s0, s1, a, b in merged:
        # the peak: over the extent (in this window) and the alerts that pointed at it
        lo, hi = max(min(s0, a), 0), max(s1, b)
        part, spart = sc[lo : hi + 1], su[lo : hi + 1]
        peak = float(np.nanmax(part)) if np.isfinite(part).any() else float("nan")
        speak = float(np.nanmax(spart)) if np.isfinite(spart).any() else float("nan")
        inner = sc[max(s0, 0) : max(s1 + 1, 0)]
        mean = float(np.nanmean(inner)) if np.isfinite(inner).any() else peak
        rows.append((s0, s1, a, peak, mean, speak + float(np.log10(s1 - s0 + 1))))
    return event_columns_from(rows)


def event_columns_from(rows: list[tuple]) -> dict[str, np.ndarray]:
    """``EVENT_COLUMNS`` from rows, column by column with their dtypes (int64 indices,
    float64 scores). Arrays, not a DataFrame: the hourly flow reads them straight into
    its events (a DataFrame here cost more than the whole event search on an hour)."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(EVENT_COLUMNS)
    return {
        name: np.array(col, dtype=np.int64 if name.endswith("idx") else np.float64)
        for name, col in zip(EVENT_COLUMNS, cols, strict=True)
    }
