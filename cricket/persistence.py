"""Saved models: JSON for parameters, ``.npz`` for arrays, format checks; never pickles.

Every detector's state is a pair ``(meta, arrays)``: ``meta`` a JSON-safe dict that
names the ``kind`` of detector and its ``format_version``, ``arrays`` a dict of numeric
numpy arrays. One detector saves to one ``.npz`` file (the arrays plus ``meta`` as JSON
text, :func:`save_state`); a model bundle saves to a folder of one JSON file and one
``.npz`` (:mod:`cricket.model`). Both are read with ``allow_pickle=False``: loading a
model never executes code.
"""

from __future__ import annotations

import json
import math
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cricket.errors import CricketValueError, DataNotFoundError

META_KEY = "__meta__"


class ModelFormatError(CricketValueError):
    """A saved model that this version of Cricket cannot (or will not) load."""


class FormatVersionError(ModelFormatError):
    """A saved model was written in a format this version of Cricket does not read."""


def check_state(meta: dict[str, Any], kind: str, version: int) -> None:
    """Raise unless ``meta`` is the state of a ``kind`` at format ``version``:
    :class:`ModelFormatError` for another kind, :class:`FormatVersionError` for
    another version."""
    if not isinstance(meta, dict):
        raise ModelFormatError(f"the saved state of a {kind} is not a JSON object")
    if meta.get("kind") != kind:
        raise ModelFormatError(f"the saved state is a {meta.get('kind')!r}, not a {kind}")
    found = meta.get("format_version")
    if found != version:
        raise FormatVersionError(
            f"this {kind} was saved in format version {found!r}, but this Cricket reads "
            f"format version {version}: retrain the model, or load it with the "
            "Cricket version that wrote it"
        )


def save_state(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` (as JSON text) and ``arrays`` into one ``.npz`` file. Returns the
    path written (``.npz`` added when missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if META_KEY in arrays:
        raise CricketValueError(f"{META_KEY!r} is reserved for the parameters")
    text = json.dumps(meta, allow_nan=True)
    np.savez(path, **{META_KEY: np.array(text)}, **arrays)
    return path


def load_state(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`save_state` with ``allow_pickle=False``."""
    path = Path(path)
    if not path.exists() and path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            if META_KEY not in f.files:
                raise FormatVersionError(
                    f"{path} holds no Cricket parameters: it was not written by Cricket's save()"
                )
            meta = json.loads(str(f[META_KEY]))
            arrays = {k: f[k] for k in f.files if k != META_KEY}
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"no model file at {path}: check the path") from exc
    return meta, arrays


def check_numeric(name: str, array: Any) -> np.ndarray:
    """``array`` as a numpy array, refused when it would need a pickle (dtype object)."""
    arr = np.asarray(array)
    if arr.dtype.hasobject:
        raise TypeError(
            f"detector array {name!r} has dtype object: saved models hold numeric "
            "arrays only (no pickles)"
        )
    return arr


def json_default(value: object) -> object:
    """``json.dumps`` fallback for the numpy scalars, arrays, times and paths in a state."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):  # pragma: no cover - json handles it
        return None
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable in a saved model")


def read_npz(path: Path, what_to_do: str) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` into memory, refusing pickled (object) arrays
    and anything that is not an archive with :class:`ModelFormatError`; ``what_to_do``
    ends each message."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ModelFormatError(f"{path} is a single array, not an .npz archive; {what_to_do}")
        with npz:
            return {name: npz[name] for name in npz.files}
    except ModelFormatError:
        raise
    except ValueError as exc:
        # numpy raises ValueError for object arrays (pickles) when allow_pickle=False,
        # and for files it cannot parse at all (including raw pickles).
        raise ModelFormatError(
            f"refusing to load {path}: {exc} (bundles never hold pickled data); {what_to_do}"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ModelFormatError(
            f"{path} is corrupted or not an .npz archive ({type(exc).__name__}: {exc}); "
            f"{what_to_do}"
        ) from None
