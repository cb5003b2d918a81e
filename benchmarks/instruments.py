"""What ``fleet.py`` measures a flow run with, apart from the flow: this process's peak
memory per phase (VmHWM, reset between phases), wrappers that sum a function's seconds per
Prefect task or keep its arguments (measurement only: the wrapped function runs
unchanged), and each stage's share of a run's worker capacity."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path


# ---------------------------------------------------------------- memory
def status_kb(field: str, pid: str = "self") -> int:
    """A ``/proc/PID/status`` field in kB (0 when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so each phase reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = status_kb("VmHWM")
    if not kb:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def rss_mb() -> float:
    return round(status_kb("VmRSS") / 1024, 1)


# ---------------------------------------------------------------- stage timing
class Timed:
    """Wraps ``module.attr`` (looked up at call time by its callers) and sums its
    seconds per Prefect task name (``flow`` outside tasks). Measurement only: the
    wrapped function runs unchanged."""

    def __init__(self, module: object, attr: str) -> None:
        self.module, self.attr = module, attr
        self.original = getattr(module, attr)
        self.seconds: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()
        original = self.original

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                name = "flow"
                try:
                    from prefect.context import TaskRunContext

                    ctx = TaskRunContext.get()
                    if ctx is not None:
                        name = ctx.task.name
                except Exception:  # noqa: BLE001
                    pass
                with self.lock:
                    self.seconds[name] += dt

        self.wrapper = timed
        setattr(module, attr, timed)

    def restore(self) -> None:
        """Put the original back (a Dask worker would be sent the wrapper, with its lock)."""
        setattr(self.module, self.attr, self.original)

    def install(self) -> None:
        setattr(self.module, self.attr, self.wrapper)

    def take(self) -> dict[str, float]:
        with self.lock:
            out = dict(self.seconds)
            self.seconds.clear()
        return out


class Captured:
    """Wraps ``module.attr`` and keeps the arguments of every call (measurement only)."""

    def __init__(self, module: object, attr: str) -> None:
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.module, self.attr = module, attr
        self.original = original = getattr(module, attr)

        def captured(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with self.lock:
                self.calls.append(args)
            return original(*args, **kwargs)

        self.wrapper = captured
        setattr(module, attr, captured)

    restore = Timed.restore
    install = Timed.install

    def take(self) -> list[tuple]:
        with self.lock:
            out, self.calls = self.calls, []
        return out


# ---------------------------------------------------------------- shares
def shares(stage_seconds: dict[str, float], wall: float, workers: int) -> dict[str, float]:
    """Each stage's task-seconds over ``workers x wall``; ``orchestration`` is the rest."""
    capacity = max(wall * workers, 1e-9)
    out = {k: round(v / capacity, 4) for k, v in stage_seconds.items()}
    out["orchestration"] = round(max(0.0, 1.0 - sum(out.values())), 4)
    return out
