"""The point part of a model version, judged for promotion (policy; core, no I/O).

A version that holds a point bundle next to its waveform model is promoted as a whole:
the waveform part by :mod:`cricket.promotion`, the point part here, on the same
held-out tail for challenger and champion:

- **false alarms**: the fraction of judged held-out rows called anomalous (the tail is
  taken as normal, as the waveform promotion takes it);
- **probe recall**: correlation-breaking probes planted in the tail (one field of a row
  replaced by its mirrored value, the value at the opposite quantile of the same
  device's tail, so every field stays inside its own range while the combination is
  broken), the fraction the bundle flags. Only rows where the mirror moves the field by
  at least ``MIN_SHIFT`` of its interquartile range become probes.

The challenger must not raise the false alarms by more than ``POINT_TOLERANCE`` and must
not lose more than ``RECALL_TOLERANCE`` of the champion's probe recall. People's answers
overrule the numbers, as for the waveform part: a challenger that misses a stretch labelled
``anomaly`` on a device (no row of it flagged) is not promoted over a champion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cricket.multifield import PointBundle
from cricket.series import SeriesKey

#: a challenger may raise the held-out false-alarm fraction by at most this much
POINT_TOLERANCE = 0.002
#: ... and lose at most this much of the champion's probe recall
RECALL_TOLERANCE = 0.1
#: a probe moves its field by at least this many interquartile ranges
MIN_SHIFT = 1.5
#: probes per device and field (the rows where the mirror moves the field most)
PROBES_PER_FIELD = 3


@dataclass(frozen=True)
class PointEvaluation:
    """How a point bundle does on a held-out tail."""

    false_alarms: float
    probes: int
    found: int
    labelled: int = 0  # stretches people labelled anomalies, on devices the bundle knows
    labelled_found: int = 0  # ... of which the bundle flags at least one row

    @property
    def recall(self) -> float | None:
        return self.found / self.probes if self.probes else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"false_alarms": self.false_alarms, "probes": self.probes, "found": self.found,
                "recall": self.recall, "labelled": self.labelled,
                "labelled_found": self.labelled_found}


def correlation_probes(frame: pd.DataFrame, fields: list[str],
                       per_field: int = PROBES_PER_FIELD) -> pd.DataFrame:
    """Rows of ``frame`` with one field replaced by its mirrored value (see the module
    docstring); every value stays inside that field's range in ``frame``."""
    x = frame.reindex(columns=fields).dropna()
    if len(x) < 8:
        return x.iloc[:0]
    out = []
    for f in fields:
        v = x[f].to_numpy(dtype=np.float64)
        order = np.argsort(v, kind="stable")
        mirrored = np.empty_like(v)
        mirrored[order] = v[order[::-1]]
        q1, q3 = np.percentile(v, [25, 75])
        iqr = max(q3 - q1, 1e-12)
        shift = np.abs(mirrored - v) / iqr
        pick = [i for i in np.argsort(-shift, kind="stable")[:per_field] if shift[i] >= MIN_SHIFT]
        if pick:
            rows = x.iloc[pick].copy()
            rows[f] = mirrored[pick]
            out.append(rows)
    return pd.concat(out) if out else x.iloc[:0]


def evaluate_points(bundle: PointBundle, holdout: Mapping[SeriesKey, pd.DataFrame],
                    probe_fields: list[str] | None = None,
                    labelled: Sequence[tuple[SeriesKey, pd.DataFrame]] = ()) -> PointEvaluation:
    """False alarms on ``holdout``, recall on correlation probes planted in it, and the
    ``labelled`` anomaly stretches (device, its rows there) found. The probes come from
    the data alone (not from the bundle), so a challenger and a champion are judged on
    the same ones."""
    fields = probe_fields or bundle.selector.fields
    judged = flagged = probes = found = 0
    for key, frame in holdout.items():
        model = bundle.models.get(key)
        if model is None or frame.empty:
            continue
        scored = model.score(frame)
        judged += int(scored["distance"].notna().sum())
        flagged += int(scored["anomalous"].sum())
        planted = correlation_probes(frame, fields)
        if len(planted):
            probes += len(planted)
            found += int(model.score(planted)["anomalous"].sum())
    n_labelled = n_found = 0
    for key, rows in labelled:
        model = bundle.models.get(key)
        if model is None or rows.empty:
            continue
        n_labelled += 1
        n_found += int(bool(model.score(rows)["anomalous"].any()))
    return PointEvaluation(flagged / judged if judged else 0.0, probes, found,
                           n_labelled, n_found)


def held_out_false_alarms(bundle: PointBundle, frames: Mapping[SeriesKey, pd.DataFrame]) -> float:
    """The fraction of judged held-out rows the bundle calls anomalous."""
    return evaluate_points(bundle, frames).false_alarms


def decide_point_promotion(
    new: PointEvaluation, champion: PointEvaluation | None,
    tolerance: float = POINT_TOLERANCE, recall_tolerance: float = RECALL_TOLERANCE,
) -> tuple[bool, str]:
    """(not worse, why) for the point part of a challenger against the champion's."""
    said = f"point model: held-out false alarms {new.false_alarms:.4f}"
    if new.recall is not None:
        said += f", probe recall {new.recall:.2f} ({new.found}/{new.probes})"
    missed = new.labelled - new.labelled_found
    if missed:
        said += f", misses {missed} of {new.labelled} stretches people labelled anomalies"
        if champion is not None:
            return False, f"{said}: the champion stays"
    if champion is None:
        return True, f"{said}; the champion has no point model to compare with"
    said += f" vs champion {champion.false_alarms:.4f}"
    if champion.recall is not None:
        said += f", {champion.recall:.2f}"
    if new.false_alarms > champion.false_alarms + tolerance:
        return False, f"{said}: more false alarms, the champion stays"
    if (champion.recall is not None and new.recall is not None
            and new.recall < champion.recall - recall_tolerance):
        return False, f"{said}: misses probes the champion finds, the champion stays"
    return True, f"{said}: not worse"


@dataclass(frozen=True)
class PointVerdict:
    """The point part's say in a version's promotion (the waveform part has its own)."""

    ok: bool
    reason: str
    new: PointEvaluation | None  # None: the version holds no point model
    champion: PointEvaluation | None

    def tags(self) -> dict[str, str]:
        """Model-version tags that record it."""
        if self.new is None:
            return {"point_part": "missing"}
        out = {"point_heldout_false_alarms": f"{self.new.false_alarms:.6f}",
               "point_probes": str(self.new.probes)}
        if self.new.recall is not None:
            out["point_probe_recall"] = f"{self.new.recall:.3f}"
        return out


def judge_points(new: PointEvaluation, champion: PointEvaluation | None) -> PointVerdict:
    ok, reason = decide_point_promotion(new, champion)
    return PointVerdict(ok, reason, new, champion)


def missing_point_part(champion_version: str) -> PointVerdict:
    """The verdict on a version trained without a point model while the champion holds
    one: promoting it would silently end point scoring, so it keeps the champion."""
    return PointVerdict(
        False,
        f"point model: this version holds none and the champion (version {champion_version}) "
        "does, so promoting it would stop point scoring: the champion stays (retrain with "
        "the point selector, e.g. `cricket retrain --points FIELD,FIELD`, or promote it on "
        "purpose with `cricket models promote VERSION`)",
        None, None,
    )


def with_points(promote: bool, reason: str, verdict: PointVerdict | None) -> tuple[bool, str]:
    """A version is promoted as a whole: a point part that is worse than the champion's
    keeps the champion, whatever the waveform part says."""
    if verdict is None:
        return promote, reason
    if promote and not verdict.ok:
        return False, f"not promoted: the {verdict.reason}"
    return promote, f"{reason}; {verdict.reason}"
