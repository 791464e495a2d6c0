"""Files, written atomically: bytes, text, CSV, JSON and Markdown tables; and JSON reading.

Atomic means: the bytes go to a temporary file in the destination folder
(``.NAME.<pid>.<random>.tmp``, the writer's process ID in its name), which is then renamed over
the destination with :func:`os.replace`, so a reader sees the old file or the new one, never
half a file. Every writer takes ``(path, content)`` (the destination first) and returns the path.
:func:`staged_folder` does the same for all the outputs of a command: they appear in the output
folder together when the command succeeds, and not at all when it fails.
:func:`stale_temporaries` finds the temporaries whose writer is gone. Nothing here computes
anything.

Imports: nothing of ``repsim`` (a leaf; :mod:`meta` uses it too).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
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
TEMPORARY_SUFFIX = ".tmp"


def writer_pid(temporary: Path) -> int | None:
    """The process ID in a temporary's name ``.NAME.<pid>.<random>.tmp`` (``None`` if absent)."""
    parts = temporary.name.removesuffix(TEMPORARY_SUFFIX).rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    return True


def stale_temporaries(folder: str | Path) -> list[Path]:
    """The temporaries in ``folder`` (``.*.tmp``) whose writer is gone: no process ID in the
    name (an older writer), or a process that no longer exists. A living writer's are kept."""
    folder = Path(folder)
    found = sorted(folder.glob(f".*{TEMPORARY_SUFFIX}")) if folder.is_dir() else []
    return [p for p in found if (pid := writer_pid(p)) is None or not process_alive(pid)]


def check_output_folder(out: str | Path) -> Path:
    """``out`` as a path, if it can be an output folder (absent, or a folder); ``ValueError``
    otherwise. Commands check this before they compute, :func:`staged_folder` again."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {str(out)!r} exists and is not a folder")
    return out


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A folder for a command's outputs that become ``out``'s only when the block succeeds.

    The outputs are written into a staging folder ``out/.staging.<pid>.<random>``; when the
    block ends without an exception each file is moved into ``out`` (same relative path,
    replacing a file of that name); on an exception (a bad input found late, a full disk) the
    staging folder is removed, and ``out`` too if this call created it, so nothing is left
    behind. ``ValueError`` if ``out`` exists and is not a folder.
    """
    out = check_output_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".staging.{os.getpid()}.", dir=out))
    except BaseException:
        _remove_if_empty(out, created)
        raise
    try:
        yield stage
        for item in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = out / item.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_if_empty(out, created)
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _remove_if_empty(folder: Path, created: bool) -> None:
    """Remove ``folder`` if this process created it and it is empty."""
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary stream whose bytes replace ``path`` atomically when the block ends.

    The stream is a temporary file in the destination folder (missing folders are created);
    on success it is flushed, fsynced and renamed over ``path`` with :func:`os.replace`; on any
    exception it is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
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
