"""What an event looks like, in words an on-call engineer reads at 3 a.m.: from the view
that fired (the event's ``scale``: ``shape N``, ``range 1``, ``noise N``, ``structure N``)
and the event's actual against typical mean. Pure: no I/O.

    looks_like("noise 32")                           # too regular, as if stuck or frozen ...
    looks_like("range 1", actual=0.0, typical=41.5)  # below every value seen in training
    looks_like("shape 154", 0.0, 41.5, step_s=10)    # a 25m 40s stretch unlike ..., lower ...
"""

from __future__ import annotations

import math

__all__ = ["fmt_duration", "looks_like"]

#: actual and typical means further apart than this share of the larger one read as a
#: level that moved ("higher"/"lower"), closer as the same level with another shape
LEVEL_CHANGE = 0.1


def fmt_duration(seconds: object) -> str:
    """``5400`` -> ``1h 30m``; ``42`` -> ``42s``."""
    try:
        s = int(round(float(seconds)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    if s < 0:
        return "—"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{h}h"] if h else []
    if m:
        parts.append(f"{m}m")
    if sec or not parts:
        parts.append(f"{sec}s")
    return " ".join(parts)


def _finite(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _level(actual: float | None, typical: float | None) -> str:
    """"higher than typical" / "lower than typical" / "at the typical level" / ""."""
    if actual is None or typical is None:
        return ""
    scale = max(abs(actual), abs(typical))
    if scale == 0 or abs(actual - typical) <= LEVEL_CHANGE * scale:
        return "at the typical level"
    return "higher than typical" if actual > typical else "lower than typical"


def looks_like(scale: object, actual: object = None, typical: object = None,
               step_s: object = None) -> str:
    """One phrase for what the event looks like; "" when the view is not known.
    ``step_s``: the series' step in seconds, to say a shape's or period's length in time."""
    if not isinstance(scale, str) or not scale.strip():
        return ""
    view, _, size = scale.strip().partition(" ")
    a, t, step = _finite(actual), _finite(typical), _finite(step_s)
    n = int(size) if size.isdigit() else None
    span = fmt_duration(n * step) if n and step and step > 0 else ""
    level = _level(a, t)
    if view == "range":
        if a is not None and t is not None and a < t:
            return "below every value seen in training"
        if a is not None and t is not None and a > t:
            return "above every value seen in training"
        return "outside the range of values seen in training"
    if view == "noise":
        return "too regular, as if stuck or frozen: the usual noise is gone"
    if view == "structure":
        every = f" every {span}" if span else ""
        return f"the pattern that usually repeats{every} is missing"
    if view == "shape":
        what = f"a {span} stretch" if span else "a stretch"
        return f"{what} unlike every normal shape" + (f", {level}" if level else "")
    return ""
