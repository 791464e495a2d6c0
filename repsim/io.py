"""Files, written atomically: bytes, text, CSV, JSON and Markdown tables; and JSON reading.

Atomic means: the bytes go to a temporary file in the destination folder (``.NAME.*.tmp``),
which is then renamed over the destination with :func:`os.replace`, so a reader sees the old
file or the new one, never half a file. Every writer takes ``(path, content)`` (the destination
first) and returns the path. Nothing here computes anything.

Imports: nothing of ``repsim`` (a leaf; :mod:`meta` uses it too).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary stream whose bytes replace ``path`` atomically when the block ends.

    The stream is a temporary file in the destination folder (missing folders are created);
    on success it is flushed, fsynced and renamed over ``path`` with :func:`os.replace`; on any
    exception it is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`). Returns ``path``."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    """Write ``df`` as CSV without the index (NaN as an empty field), atomically."""
    return atomic_write_text(path, df.to_csv(index=False, float_format="%.17g"))


def _json_value(value: Any) -> Any:
    """A JSON-safe scalar: NaN and infinities become ``null``, numpy scalars become Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    """JSON for the values :func:`json.dumps` does not know: numpy scalars and arrays, paths;
    ``TypeError`` for anything else (nothing is silently turned into a string)."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | Path, obj: pd.DataFrame | Any) -> Path:
    """Write ``obj`` as indented JSON, atomically: a DataFrame as a list of row records (NaN
    and infinities as ``null``, JSON has no NaN), anything else as :func:`json.dumps` writes it
    (floats round-trip exactly; numpy values and paths are converted)."""
    if isinstance(obj, pd.DataFrame):
        obj = [{k: _json_value(v) for k, v in row.items()} for row in obj.to_dict(orient="records")]
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; ``ValueError`` naming the file if it is absent or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None


def markdown_table(df: pd.DataFrame, *, float_format: str = "{:.4f}") -> str:
    """Render ``df`` as a GitHub-flavoured Markdown table (index dropped; floats formatted with
    ``float_format``; NaN shown as ``NaN``; ``|`` in cells escaped)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "NaN" if math.isnan(value) else float_format.format(value)
        return str(value).replace("|", "\\|")

    header = [cell(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
