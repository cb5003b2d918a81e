"""What an event looks like, in words an on-call engineer reads at 3 a.m.: from the view
that fired (the event's ``scale``: ``shape N``, ``range 1``, ``noise N``, ``structure N``)
and the event's actual against typical mean. Pure: no I/O.

    looks_like("noise 32")                           # too regular, as if stuck or frozen ...
    looks_like("range 1", actual=0.0, typical=41.5)  # below every value seen in training
    looks_like("shape 32", 0.0, 41.5, 10, views="shape 32 580, range 1 40, noise 32 9")
    # below every value seen in training; too regular, as if stuck or frozen: ...
"""

from __future__ import annotations

import math
import re

from cricket.config import DetectorSpec

__all__ = ["STRONG", "as_finite", "fmt_duration", "looks_like", "parse_views"]

#: a view at or past this surprise (-log10 p) crossed the detector's bar at the default
#: ``threshold_quantile`` (-log10 of 1 - 0.99999, i.e. 5): it is said in the phrase even
#: when another view fired
STRONG = round(-math.log10(1.0 - DetectorSpec().threshold_quantile), 6)
#: the views that say something specific, in the order they are said
SPECIFIC = ("range", "noise", "structure")
_VIEW_SURPRISE = re.compile(r"^(?P<view>.*\S)\s+(?P<surprise>-?[0-9.]+(?:e[+-]?[0-9]+)?|inf)$")

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


def as_finite(x: object) -> float | None:
    """``x`` as a float, or None when it is not a finite number (None, text, NaN, inf)."""
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


def parse_views(views: object) -> list[tuple[str, float]] | None:
    """The stored ``views`` text ("shape 32 582.3, range 1 4.6": each view's peak surprise
    over the event) as ``[(view, surprise)]``; None when it is not in that form."""
    if not isinstance(views, str) or not views.strip():
        return []
    out = []
    for part in views.split(","):
        m = _VIEW_SURPRISE.match(part.strip())
        if m is None:
            return None
        out.append((m["view"], float(m["surprise"])))
    return out


def _phrase(view: str, n: int | None, a: float | None, t: float | None,
            step: float | None) -> str:
    span = fmt_duration(n * step) if n and step and step > 0 else ""
    level = _level(a, t)
    if view == "range":
        if level == "lower than typical":
            return "below every value seen in training"
        if level == "higher than typical":
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


def _split(view: str) -> tuple[str, int | None]:
    kind, _, size = view.strip().partition(" ")
    return kind, (int(size) if size.isdigit() else None)


def looks_like(scale: object, actual: object = None, typical: object = None,
               step_s: object = None, views: object = None) -> str:
    """What the event looks like, in words; "" when the view is not known.

    ``scale``: the view that fired; ``views``: every view's peak surprise (the stored
    text). The specific views that also crossed the detector's bar (surprise
    ``STRONG``) are said first, in the order range, noise, structure; a shape mismatch
    is said when nothing more specific is. ``step_s``: the series' step in seconds, to
    say a shape's or period's length in time."""
    if not isinstance(scale, str) or not scale.strip():
        return ""
    a, t, step = as_finite(actual), as_finite(typical), as_finite(step_s)
    fired, n_fired = _split(scale)
    strong: dict[str, int | None] = {fired: n_fired}
    for view, surprise in parse_views(views) or []:
        kind, n = _split(view)
        if surprise >= STRONG and kind not in strong:
            strong[kind] = n
    said = [_phrase(kind, strong[kind], a, t, step) for kind in SPECIFIC if kind in strong]
    if not said:
        said = [_phrase(fired, n_fired, a, t, step)]
    return "; ".join(p for p in said if p)
