"""A local cache of decoded model bundles, checked: the hourly run loads the same champion
every hour, and most of a load was decoding its ``arrays.npz`` (zlib and a header parse
per array: 2.4 of 2.6 CPU s for 1,000 series; from the cache 0.7 s).

    bundle = load_cached(folder, cache_dir, tag="cricket-waveform-v7")

An entry is the bundle's arrays, decoded, in one raw file (``arrays.bin``) with an index
(``index.json``: name, dtype, shape, offset of each array; the file's size and CRC-32).
It is named by ``tag`` (the model name and version) and the SHA-256 of the bundle's two
files as downloaded, so a version whose files changed (a damaged artifact, say) never
meets the entry of the files it had before. Reading an entry never unpickles: numeric
dtypes only. The bundle is built from an entry exactly as :meth:`ModelBundle.load`
builds it from the ``.npz``, with the same checks of every detector
(:meth:`ModelBundle.from_arrays`), so a damaged champion is refused either way. An entry
that is missing, torn or damaged is a miss (and is removed); a cache that cannot be
written is no cache (the load works as before). The most recently used ``keep`` entries
stay (the setting ``model_cache_versions``, 3 unless set; 0 turns the cache off).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cricket.bundle_parts import ARRAYS_NPZ, BUNDLE_JSON
from cricket.model import _RETRAIN, ModelBundle
from cricket.persistence import read_npz

CACHE_FORMAT = 1
KEEP = 3
INDEX = "index.json"
BLOB = "arrays.bin"
_ALIGN = 64


def bundle_digest(src: str | Path) -> str:
    """SHA-256 of a bundle folder's two files (names and contents)."""
    h = hashlib.sha256()
    for name in (BUNDLE_JSON, ARRAYS_NPZ):
        h.update(name.encode() + b"\0")
        with open(Path(src) / name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def entry_path(cache_dir: str | Path, tag: str, digest: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", tag).strip(".") or "bundle"
    return Path(cache_dir) / f"{safe}-{digest[:40]}"


def load_cached(
    src: str | Path, cache_dir: str | Path | None, tag: str, keep: int = KEEP
) -> ModelBundle:
    """The bundle saved in ``src`` (:meth:`ModelBundle.load`), its decoded arrays read
    from ``cache_dir`` when an entry of these very files is there, and put there after
    a load that found none; the ``keep`` most recently used entries stay (``cache_dir``
    None or ``keep`` 0: no cache, and the entries there are removed)."""
    if cache_dir is None:
        return ModelBundle.load(src)
    if keep < 1:
        prune(Path(cache_dir), keep=0)
        return ModelBundle.load(src)
    try:
        entry = entry_path(cache_dir, tag, bundle_digest(src))
    except OSError:  # a missing file: load says what is wrong
        return ModelBundle.load(src)
    arrays = read_entry(entry)
    if arrays is not None:
        prune(Path(cache_dir), keep=keep)  # a lowered setting frees the disk at once
        return ModelBundle.from_arrays(src, arrays)
    arrays = read_npz(Path(src) / ARRAYS_NPZ, _RETRAIN)
    bundle = ModelBundle.from_arrays(src, arrays)  # a damaged bundle stops here: not cached
    write_entry(entry, arrays)
    prune(Path(cache_dir), keep=keep)
    return bundle


def read_entry(entry: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry (views into one buffer), or None when there is no
    sound entry (a damaged one is removed)."""
    try:
        index = json.loads((entry / INDEX).read_text(encoding="utf-8"))
        blob = np.fromfile(entry / BLOB, dtype=np.uint8)
    except (OSError, ValueError):
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        return None
    try:
        arrays = _arrays(index, blob)
    except (KeyError, TypeError, ValueError):
        shutil.rmtree(entry, ignore_errors=True)
        return None
    try:
        os.utime(entry / INDEX)  # most recently used
    except OSError:
        pass
    return arrays


def _arrays(index: Mapping[str, Any], blob: np.ndarray) -> dict[str, np.ndarray]:
    if index.get("format") != CACHE_FORMAT:
        raise ValueError("another cache format")
    if int(index["size"]) != blob.size or int(index["crc32"]) != zlib.crc32(blob):
        raise ValueError("torn or damaged")
    out: dict[str, np.ndarray] = {}
    for name, dtype_str, shape, order, offset in index["arrays"]:
        dtype = np.dtype(dtype_str)
        if dtype.hasobject or dtype.fields is not None:
            raise ValueError(f"{name}: not a plain numeric dtype")
        shape = tuple(int(n) for n in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset < 0 or offset + nbytes > blob.size or order not in ("C", "F"):
            raise ValueError(f"{name}: outside the file")
        out[str(name)] = np.ndarray(shape, dtype=dtype, buffer=blob, offset=int(offset),
                                    order=order)
    return out


def write_entry(entry: Path, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write ``arrays`` as a cache entry (atomically: a folder renamed into place).
    Returns whether it was written; a failure (disk full, read-only) leaves nothing."""
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.{time.monotonic_ns()}")
    try:
        tmp.mkdir(parents=True)
        specs = []
        offset = 0
        crc = 0
        with open(tmp / BLOB, "wb") as fh:
            for name, arr in arrays.items():
                a = np.asarray(arr)
                order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
                data = np.ravel(np.require(a, requirements=[order]), order=order).view(np.uint8)
                pad = -offset % _ALIGN
                if pad:
                    fh.write(b"\0" * pad)
                    crc = zlib.crc32(b"\0" * pad, crc)
                    offset += pad
                specs.append([name, a.dtype.str, list(a.shape), order, offset])
                fh.write(data)
                crc = zlib.crc32(data, crc)
                offset += data.nbytes
            fh.flush()
            os.fsync(fh.fileno())
        index = {"format": CACHE_FORMAT, "size": offset, "crc32": crc, "arrays": specs}
        (tmp / INDEX).write_text(json.dumps(index), encoding="utf-8")
        os.replace(tmp, entry)
        return True
    except OSError:  # no space, read-only, or another process put the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def prune(cache_dir: Path, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` most recently used entries (and leftovers of writes
    that did not finish, an hour old)."""
    try:
        found = [p for p in cache_dir.iterdir() if p.is_dir()]
    except OSError:
        return
    entries = []
    for p in found:
        try:
            if p.name.startswith("."):
                if time.time() - p.stat().st_mtime > 3600:
                    shutil.rmtree(p, ignore_errors=True)
                continue
            entries.append(((p / INDEX).stat().st_mtime, p))
        except OSError:
            continue
    for _, p in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(p, ignore_errors=True)
