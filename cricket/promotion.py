"""Promotion policy: how a new model version is judged against the champion.

Core logic only (no MLflow): each version scores the same held-out tail of every
series (:func:`evaluate_bundle`); points it flags there are false alarms, and known
anomalies planted in a copy (:func:`inject_probes`) measure recall; the rule
(:func:`decide`) promotes a version that is not worse. ``cricket.registry`` applies
the decision to MLflow's aliases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cricket.config import DetectorSpec
from cricket.feedback import LabelCheck
from cricket.model import ModelBundle, compact
from cricket.series import SeriesKey

DEFAULT_TOLERANCE = 0.002  # absolute: 0.2 percentage points of held-out points flagged
#: a promoted version that flags more than this share of held-out points gets a warning
#: (the calibrated threshold expects about 1e-5): promoted, but a person should look
HIGH_FALSE_ALARMS = 0.01


@dataclass
class EvalSummary:
    """How a model did on a held-out tail, per series.

    ``false_alarms``: fraction of points flagged. The held-out tail is data the pipeline
    believes normal, so every flagged point is a false alarm. ``probe_recall``: fraction
    of the known anomalies planted in a copy of the tail (a flat-lined stretch, a spike)
    that the model flags: a model that rebuilds anything (say, one trained on garbage)
    raises no false alarms but finds nothing either. Only series the model could score
    are present.
    """

    false_alarms: dict[str, float] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)
    probe_recall: dict[str, float] = field(default_factory=dict)

    @property
    def covered(self) -> set[str]:
        return set(self.false_alarms)

    def rate(self, keys: set[str] | None = None) -> float:
        """Mean false-alarm fraction over ``keys`` (default: every covered series)."""
        keys = self.covered if keys is None else keys
        vals = [self.false_alarms[k] for k in keys if k in self.false_alarms]
        return float(np.mean(vals)) if vals else 0.0

    def recall(self, keys: set[str] | None = None) -> float | None:
        """Mean probe recall over ``keys``; None when no probes were planted."""
        keys = set(self.probe_recall) if keys is None else keys
        vals = [self.probe_recall[k] for k in keys if k in self.probe_recall]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "false_alarms": self.false_alarms,
            "points": self.points,
            "probe_recall": self.probe_recall,
        }

    @classmethod
    def merge(cls, parts: Iterable[EvalSummary]) -> EvalSummary:
        """One summary of disjoint parts (e.g. batches of series), in series order, as
        :func:`evaluate_bundle` of them all would give."""
        out = cls()
        parts = list(parts)
        for name in ("false_alarms", "points", "probe_recall"):
            merged = {k: v for p in parts for k, v in getattr(p, name).items()}
            getattr(out, name).update(sorted(merged.items()))
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> EvalSummary:
        return cls(
            dict(doc.get("false_alarms", {})),
            dict(doc.get("points", {})),
            dict(doc.get("probe_recall", {})),
        )


def evaluate_bundle(bundle: ModelBundle, held_out: Mapping[str, Any]) -> EvalSummary:
    """Score each held-out series with ``bundle``: flagged points are false alarms; probes
    planted in a copy measure recall. Each series is scored by the detector's own
    ``score``, as the pipeline scores it (a fleet-served series in its own units)."""
    out = EvalSummary()
    for key in sorted(held_out, key=str):
        if not covers(bundle, key):
            continue
        det, _ = bundle.detector_for(str(key))
        # Score with a copy: the search tables scoring caches on a detector (MBs for a
        # long period-scale library) are freed after each series instead of piling up
        # on every detector of the bundle.
        det = compact(det)
        values = np.asarray(held_out[key], dtype=float)
        frame = det.score(values, context=0)
        scorable = ~np.isnan(np.asarray(frame.score, dtype=float))
        n = int(scorable.sum())
        if n == 0:
            continue
        flagged = np.asarray(frame.anomalous, dtype=bool)[scorable]
        out.false_alarms[str(key)] = float(flagged.mean())
        out.points[str(key)] = n
        probed, probes = inject_probes(values, bundle.spec)
        if probes:
            hits = np.asarray(det.score(probed, context=0).anomalous, dtype=bool)
            slack = bundle.spec.segment_len
            found = sum(bool(hits[a : b + 1 + slack].any()) for a, b in probes)
            out.probe_recall[str(key)] = found / len(probes)
    return out


def covers(bundle: ModelBundle, key: object) -> bool:
    """Whether ``bundle`` is a model of series ``key``: it has the series' own detector,
    or a fleet library trained on the same measurement and field. (A fleet library of
    other data can compute numbers for any series; they mean nothing.)"""
    name = str(key)
    if name in bundle.detectors:
        return True
    if bundle.fleet is None:
        return False
    try:
        parsed = SeriesKey.parse(name)
    except ValueError:  # not a series key (a name a notebook user chose): cannot tell
        return True
    return (parsed.measurement, parsed.field) == (bundle.selector.measurement, bundle.selector.field)


def _some(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")


def refuse_unpromotable(
    version: str, bundle: ModelBundle, champion: ModelBundle | None, held_out: Iterable[object]
) -> str | None:
    """Why ``bundle`` (``version``) must not become champion whatever its numbers, or
    None: it holds no per-series model while there is a champion, or the data it was
    evaluated on holds none of the champion's own series (it models something else)."""
    if champion is None:
        return None
    if not bundle.detectors:
        return (
            f"not promoted: version {version} has 0 per-series models (every series fell "
            "back to the fleet library: too little history or held-out data); retrain "
            "with a longer train window or holdout"
        )
    mine = set(champion.detectors)
    seen = {str(k) for k in held_out}
    if mine and not mine & seen:
        return (
            f"not promoted: version {version} covers none of the champion's {len(mine)} "
            f"series ({_some(mine)}): it was trained on other data; give it its own "
            "model name (CRICKET_MODEL_NAME), or promote it by hand"
        )
    return None


#: a new version may find at most this much less of the planted probes than the champion
RECALL_TOLERANCE = 0.1


def decide_promotion(
    new_eval: EvalSummary, champion_eval: EvalSummary | None, tolerance: float = DEFAULT_TOLERANCE
) -> tuple[bool, str]:
    """Should the new version replace the champion? Returns (promote, reason).

    Promote when there is no champion, or when the new version covers every series the
    champion covers, its false-alarm fraction on those series is at most the champion's
    plus ``tolerance`` (absolute), and it finds the planted probes at least as well as
    the champion, less ``RECALL_TOLERANCE``.
    """
    if not new_eval.covered:
        return False, "not promoted: it could score none of the held-out series"
    if champion_eval is None:
        return True, "first version: there is no champion yet"
    if not champion_eval.covered:
        return True, "the champion could score none of the held-out series"
    missing = sorted(champion_eval.covered - new_eval.covered)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        return False, (
            f"not promoted: covers {len(new_eval.covered)} series but misses "
            f"{len(missing)} the champion covers ({shown})"
        )
    keys = champion_eval.covered or new_eval.covered
    new_rate, old_rate = new_eval.rate(keys), champion_eval.rate(keys)
    numbers = (
        f"held-out false alarms {new_rate:.4%} vs champion {old_rate:.4%} "
        f"(tolerance {tolerance:.4%}) over {len(keys)} series"
    )
    if new_rate > old_rate + tolerance:
        return False, f"not promoted: more false alarms, {numbers}"
    new_recall, old_recall = new_eval.recall(keys), champion_eval.recall(keys)
    if new_recall is not None and old_recall is not None:
        numbers += f"; planted probes found {new_recall:.0%} vs champion {old_recall:.0%}"
        if new_recall < old_recall - RECALL_TOLERANCE:
            return False, f"not promoted: finds fewer planted anomalies, {numbers}"
    return True, f"promoted: not worse, {numbers}"


def decide(
    version: str,
    champion: str | None,
    new_eval: EvalSummary,
    champion_eval: EvalSummary | None,
    champion_unreadable: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    refusal: str | None = None,
) -> tuple[bool, str]:
    """The decision for ``version`` given the ``champion``'s version (None: none yet)
    and both evaluations: already the champion, a champion this Cricket cannot load
    (``champion_unreadable`` says why: it cannot stand in the way of a version that
    works), a ``refusal`` (:func:`refuse_unpromotable`), or :func:`decide_promotion`."""
    if champion == version:
        return True, f"version {version} is already the champion"
    if refusal is not None:
        return False, refusal
    if champion_unreadable is not None:
        return True, (
            f"promoted: the champion (version {champion}) cannot be loaded by this "
            f"Cricket ({champion_unreadable})"
        )
    return decide_promotion(new_eval, champion_eval, tolerance)


@dataclass
class PromotionResult:
    version: str
    promoted: bool
    reason: str
    champion_before: str | None
    new_eval: EvalSummary
    champion_eval: EvalSummary | None
    label_check: LabelCheck | None = None


def inject_probes(values: np.ndarray, spec: DetectorSpec, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Copy ``values`` and plant a few known anomalies (a flat stretch at the minimum and a
    spike) so recall can be measured without labels. Returns the copy and probe ranges."""
    rng = np.random.default_rng(seed)
    x = np.array(values, dtype=float)
    n = len(x)
    n_seg = spec.segment_len
    finite = x[np.isfinite(x)]
    if n < 8 * n_seg or finite.size == 0:
        return x, []
    lo, hi = float(np.min(finite)), float(np.max(finite))
    span = (hi - lo) or 1.0
    probes = []
    slots = np.linspace(2 * n_seg, n - 3 * n_seg, 4).astype(int)
    for i, at in enumerate(slots):
        at = int(at + rng.integers(0, n_seg // 2))
        if i % 2 == 0:
            length = 3 * n_seg
            x[at : at + length] = lo - 0.5 * span
        else:
            length = 2
            x[at : at + length] = hi + 2.0 * span
        probes.append((at, min(at + length, n) - 1))
    return x, probes


def with_answers(
    promote: bool, reason: str, version: str, champion: str | None, check: LabelCheck | None
) -> tuple[bool, str]:
    """People's answers overrule the numbers: a challenger that fires on a
    labelled-normal stretch or misses a labelled anomaly is not promoted. The first
    version is (scoring needs a model), and its reason says what it gets wrong."""
    if check is None or check.ok or champion == version:
        return promote, reason
    if champion is None:
        return promote, f"{reason}; but it {check.reason()}"
    return False, f"not promoted: it {check.reason()}"
