"""Decoded images cached on disk as uint8 arrays, so that a data set is decoded once per machine.

An entry is one uncompressed ``.npz`` file holding ``images`` (any uint8 array) and ``meta`` (a
JSON string with the entry's key, the array's shape and a BLAKE2b digest of its bytes, and the
builder's own JSON metadata, e.g. class names). The key says what the entry was built from: the
source files' identity (resolved path, size, modification time), the decoder's format version
and its parameters (e.g. the image size). An entry is used only if its stored key equals the
key asked for and its bytes match the digest; otherwise (stale source, new format version,
truncated or corrupt file) it is rebuilt and replaced. Entries are written atomically: a
temporary file in the cache folder, then ``os.replace``.

Cache folder: the ``cache_dir`` argument, else ``$FEATURE_REUSE_CACHE``, else
``~/.cache/feature-reuse``.

Also here: :class:`DatasetError`, raised by every reader for missing or damaged files.

Imports: nothing of :mod:`meta`; :mod:`repsim.io` for atomic writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from repsim.io import atomic_open

CACHE_ENV = "FEATURE_REUSE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/feature-reuse")
ENTRY_FORMAT = 1

Builder = Callable[[], "tuple[np.ndarray, dict[str, Any]]"]


class DatasetError(ValueError):
    """A data set's files are missing, incomplete or damaged; the message names what is wrong."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$FEATURE_REUSE_CACHE``, else ``~/.cache/feature-reuse``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


def file_identity(path: Path) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of one file: changes whenever the file is replaced or edited."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def files_identity(root: Path, relative_paths: list[str]) -> dict[str, Any]:
    """Identity of many files under ``root``: their count and a digest of each one's
    ``(relative path, size, mtime_ns)``; any added, removed, resized or touched file changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for rel in relative_paths:
        stat = (root / rel).stat()
        digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"path": str(root.resolve()), "files": len(relative_paths), "digest": digest.hexdigest()}


def array_digest(array: np.ndarray) -> str:
    """BLAKE2b (128-bit) hex digest of an array's bytes in C order."""
    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


def entry_path(name: str, where: dict[str, Any], cache_dir: str | os.PathLike[str] | None) -> Path:
    """Path of the entry called ``name`` for the stable description ``where`` (source paths and
    parameters, not modification times), so that a stale entry is replaced in place."""
    tag = hashlib.blake2b(_canonical(where).encode(), digest_size=6).hexdigest()
    return cache_root(cache_dir) / f"{name}-{tag}.npz"


def cached_array(path: Path, key: dict[str, Any], build: Builder) -> tuple[np.ndarray, dict[str, Any]]:
    """The uint8 array and JSON metadata stored at ``path`` for ``key``, or ``build()``'s result,
    which is then stored there (atomically).

    Args:
        path: the entry's file (see :func:`entry_path`).
        key: JSON-serialisable description of everything the array depends on (source identity,
            format version, parameters).
        build: called only on a miss; returns ``(uint8 array, JSON-serialisable metadata)``.

    Returns:
        ``(array, metadata)`` exactly as ``build`` returned them (metadata after a JSON round trip).
    """
    stored, reason = _read_entry(path, key)
    if stored is not None:
        return stored
    if reason != "missing":
        warnings.warn(f"cache entry {path} is {reason}; rebuilding it", stacklevel=2)
    array, metadata = build()
    if array.dtype != np.uint8:
        raise TypeError(f"cache entries hold uint8 arrays, got {array.dtype}")
    _write_entry(path, key, array, metadata)
    return array, json.loads(json.dumps(metadata))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _read_entry(path: Path, key: dict[str, Any]) -> tuple[tuple[np.ndarray, dict] | None, str]:
    """``((array, metadata), "")`` for a valid entry, else ``(None, why it is not used)``."""
    if not path.exists():
        return None, "missing"
    try:
        with open(path, "rb") as stream, np.load(stream, allow_pickle=False) as entry:
            header = json.loads(str(entry["meta"]))
            if header.get("format") != ENTRY_FORMAT or _canonical(header.get("key")) != _canonical(key):
                return None, "stale (its key differs from the source's)"
            array = entry["images"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        # TypeError/AttributeError: a plain .npy array where an npz was expected
        return None, f"unreadable ({type(error).__name__}: {error})"
    if array.dtype != np.uint8 or list(array.shape) != header.get("shape"):
        return None, "corrupt (shape or dtype differs from its header)"
    if array_digest(array) != header.get("digest"):
        return None, "corrupt (digest mismatch)"
    return (array, header["metadata"]), ""


def _write_entry(path: Path, key: dict[str, Any], array: np.ndarray, metadata: dict[str, Any]) -> None:
    """Write the entry to a temporary file next to ``path``, then rename it over ``path``."""
    header = {
        "format": ENTRY_FORMAT,
        "key": key,
        "shape": list(array.shape),
        "digest": array_digest(array),
        "metadata": metadata,
    }
    with atomic_open(path) as stream:
        np.savez(stream, images=array, meta=np.array(json.dumps(header)))
