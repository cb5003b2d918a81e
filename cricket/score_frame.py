"""ScoreFrame: everything :meth:`cricket.detector.WaveformDetector.score` produces for
one series (per-point arrays), and its events (:mod:`cricket.extent`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cricket.extent import event_columns_from, settle_columns


@dataclass
class ScoreFrame:
    """Per-point results of :meth:`WaveformDetector.score` (equal-length arrays):
    value, reconstruction and error (>= 0) in the series' units, score (0-100, NaN
    where unscorable), anomalous (bool: the causal alert, score >= threshold).

    For the events (:mod:`cricket.extent`): ``surprise`` (the score's uncapped
    ``-log10 p``), ``extent`` (samples whose attributed error reaches the alert level),
    ``lead`` (the same for the ``reach + 1`` points of context before the first one:
    the longest segment),
    ``lead_anomalous`` (the alerts over those points),
    ``reach`` (the longest segment) and ``scales``: each view's surprise by name
    (``shape 32``, ``shape 94``, ``structure 94``, ``range 1``, ``noise 32``), for the
    report's "which scale fired".

    ``extent`` and ``lead`` are computed when first needed (:meth:`settled`, which
    :meth:`events` calls): the causal score alone (NAB, ``decision_function``) never
    pays for the attributed error."""

    value: np.ndarray
    reconstruction: np.ndarray
    error: np.ndarray
    score: np.ndarray
    anomalous: np.ndarray
    surprise: np.ndarray | None = None
    extent: np.ndarray | None = None
    lead: np.ndarray | None = None
    lead_anomalous: np.ndarray | None = None
    reach: int = 0
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    settle: Callable[[], tuple[np.ndarray | None, np.ndarray | None]] | None = field(
        default=None, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.value)

    def settled(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(extent, lead)``, computed on first call when the frame was made lazily."""
        if self.settle is not None:
            self.extent, self.lead = self.settle()
            self.settle = None
        return self.extent, self.lead

    def events(self, min_gap: int = 0, keep_lead: bool = False) -> pd.DataFrame:
        """Events: ``start_idx``, ``end_idx`` (inclusive; the settled extent),
        ``alert_idx`` (first alert), ``peak`` and ``mean`` score, ``severity``
        (uncapped, for ranking); see :func:`cricket.extent.settle_events` (``keep_lead``:
        extents may start, or lie wholly, in the left context: negative indices; an
        event of the window before is settled here even when this window has no
        alert). The alerts in the left context always join the runs they reach."""
        return pd.DataFrame(self.event_columns(min_gap, keep_lead))

    def event_columns(self, min_gap: int = 0, keep_lead: bool = False) -> dict[str, np.ndarray]:
        """:meth:`events` as arrays by column (what the pipeline reads, per series: a
        DataFrame costs more than the search). Without an alert there is no event, and
        the settled extent (the attributed error) is not computed."""
        lead_alert = self.lead_anomalous
        if not np.any(self.anomalous) and not (keep_lead and np.any(lead_alert)):
            return event_columns_from([])
        surprise = self.surprise if self.surprise is not None else np.full(len(self), np.nan)
        extent, lead = self.settled()
        return settle_columns(self.anomalous, surprise, self.score, extent, self.reach,
                              min_gap, lead, self.fired(), keep_lead, lead_alert)

    def fired(self) -> np.ndarray | None:
        """Per point, the segment length of the most surprising view (None: no views)."""
        if not self.scales:
            return None
        names = list(self.scales)
        stack = np.vstack([np.nan_to_num(self.scales[k], nan=-np.inf) for k in names])
        lengths = np.array([int(k.rsplit(" ", 1)[-1]) for k in names])
        return lengths[np.argmax(stack, axis=0)]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "value": self.value,
                "reconstruction": self.reconstruction,
                "error": self.error,
                "score": self.score,
                "anomalous": self.anomalous,
            }
        )
