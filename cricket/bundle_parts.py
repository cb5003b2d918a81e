"""A model bundle written and read one detector at a time.

The bundle format (:mod:`cricket.model`) is a folder of ``bundle.json`` and
``arrays.npz``. A retrain of a large fleet must not hold every series' detector to
write it, and comparing a new version with the champion must not hold the champion's:

- :class:`BundleWriter` writes the folder as detectors arrive (each detector's arrays
  go into the ``.npz`` at once; only their small JSON entries wait for the end).
  ``ModelBundle.save`` writes through it too, so both paths write the same format.
- :class:`LazyDetectors` is a read-only mapping ``series key -> detector`` over a saved
  folder: a detector is read from the ``.npz`` (never unpickled) when it is asked for,
  and not kept (``ModelBundle.open``).

Neither changes the format: bundles written before load as they did, and a bundle
written in parts is read by ``ModelBundle.load`` like any other.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cricket.persistence import ModelFormatError, check_numeric, json_default

if TYPE_CHECKING:
    from cricket.detector import WaveformDetector

BUNDLE_JSON = "bundle.json"
ARRAYS_NPZ = "arrays.npz"
EXPECTED_FILES = {BUNDLE_JSON, ARRAYS_NPZ}


class BundleWriter:
    """Write a bundle folder detector by detector: ``add`` each series' detector (any
    order), then ``close`` with the fleet detector and the bundle's fields. The folder
    must be new or empty. Memory: one detector's arrays at a time, plus a small JSON
    entry per detector."""

    def __init__(self, directory: str | Path) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stray = sorted(p.name for p in out.iterdir() if p.name not in EXPECTED_FILES)
        if stray:
            raise FileExistsError(
                f"{out} already holds other files ({', '.join(stray[:5])}): save the bundle "
                "into an empty folder"
            )
        self.directory = out
        self._zip = zipfile.ZipFile(out / ARRAYS_NPZ, "w", compression=zipfile.ZIP_DEFLATED,
                                    allowZip64=True)
        self._entries: list[dict[str, Any]] = []
        self._keys: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, detector: Any) -> None:
        """Write one series' detector (its learned state: arrays and JSON parameters)."""
        key = str(key)
        if key in self._keys:
            raise ValueError(f"the bundle already holds a detector for {key!r}")
        self._keys.add(key)
        self._entries.append(self._write(key, detector))

    def _write(self, key: str | None, detector: Any) -> dict[str, Any]:
        index = len(self._entries)  # the fleet's comes after every series'
        meta, arrays = detector.get_state()
        names = []
        for name, arr in arrays.items():
            # as numpy.savez_compressed writes a member
            with self._zip.open(f"d{index}/{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, check_numeric(name, arr), allow_pickle=False)
            names.append(name)
        # the parameters through JSON now: the entry holds text-sized values, not arrays
        meta = json.loads(json.dumps(meta, allow_nan=True, default=json_default))
        return {"index": index, "key": key, "meta": meta, "arrays": names}

    def close(self, fleet: Any, fields: Mapping[str, Any]) -> Path:
        """Write the fleet detector (or None) and ``bundle.json`` (``fields``: format
        version, spec, selector, training range, extra); returns the folder."""
        try:
            fleet_entry = self._write(None, fleet) if fleet is not None else None
        finally:
            self._zip.close()
        doc = {
            **fields,
            "detectors": sorted(self._entries, key=lambda e: e["key"]),
            "fleet": fleet_entry,
        }
        text = json.dumps(doc, indent=1, sort_keys=True, allow_nan=True, default=json_default)
        (self.directory / BUNDLE_JSON).write_text(text, encoding="utf-8")
        return self.directory

    def abort(self) -> None:
        """Close the archive without writing ``bundle.json`` (an incomplete folder)."""
        self._zip.close()


def build_detector(
    entry: Mapping[str, Any], get_array: Callable[[str], np.ndarray | None], fleet: bool = False
) -> WaveformDetector:
    """The detector of one ``bundle.json`` entry, its arrays read by ``get_array(full
    name)`` (None when missing). Raises ModelFormatError for a missing array."""
    from cricket.detector import WaveformDetector

    index = int(entry["index"])
    arrs = {}
    for name in entry["arrays"]:
        full = f"d{index}/{name}"
        arr = get_array(full)
        if arr is None:
            raise ModelFormatError(f"array {full!r} is missing from {ARRAYS_NPZ}")
        arrs[name] = arr
    meta = dict(entry["meta"])
    if fleet:  # bundles written before the flag: a fleet always scaled per series
        meta["per_series_scaling"] = True
    return WaveformDetector.from_state(meta, arrs)


class LazyDetectors(Mapping[str, "WaveformDetector"]):
    """Series key -> detector over a saved bundle folder, read on access and not kept
    (each access builds a fresh detector). Keys come from ``bundle.json``; a damaged
    detector raises ModelFormatError when it is read. ``check`` (detector -> problem
    or None) is applied to each detector read. Thread-safe."""

    def __init__(self, src: Path, entries: list[Mapping[str, Any]],
                 check: Callable[[Any], str | None], fix: str) -> None:
        self._src = Path(src)
        self._entries = {str(e["key"]): e for e in entries}
        self._check, self._fix = check, fix
        self._npz: Any = None
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> WaveformDetector:
        entry = self._entries[str(key)]
        with self._lock:
            if self._npz is None:
                try:
                    self._npz = np.load(self._src / ARRAYS_NPZ, allow_pickle=False)
                except (OSError, ValueError, zipfile.BadZipFile) as exc:
                    raise ModelFormatError(
                        f"{self._src / ARRAYS_NPZ} is corrupted or not an .npz archive "
                        f"({type(exc).__name__}: {exc}); {self._fix}"
                    ) from None
            npz = self._npz

            def get(name: str) -> np.ndarray | None:
                return npz[name] if name in npz.files else None

            try:
                det = build_detector(entry, get)
            except ModelFormatError as exc:
                raise ModelFormatError(f"{self._src}: {exc}; {self._fix}") from None
            except (KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
                raise ModelFormatError(
                    f"{self._src} holds a damaged or incompatible detector for {key} "
                    f"({type(exc).__name__}: {exc}); {self._fix}"
                ) from exc
        problem = self._check(det)
        if problem is not None:
            raise ModelFormatError(
                f"{self._src} holds a damaged bundle: the detector of {key} {problem}; "
                f"{self._fix}"
            )
        return det

    def __contains__(self, key: object) -> bool:
        return str(key) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        with self._lock:
            if self._npz is not None:
                self._npz.close()
                self._npz = None

    def __reduce__(self) -> Any:
        raise TypeError(
            "a bundle opened from its folder reads detectors on demand and is not shipped: "
            "send a sub-bundle (cricket.tasks.score.sub_bundle) instead"
        )
