"""Reading tensor files without running code from them: safetensors and ``torch.save`` files,
told apart by their bytes (not their names), and a file that is damaged told apart from one that
carries code.

- A safetensors file starts with an 8-byte little-endian header length and a JSON header;
  :func:`safetensors_header` checks both, and every tensor's byte range, against the file's size
  before anything is read, so a cut or corrupt file is a :class:`DamagedFileError` naming the
  byte offset or the tensor.
- A ``torch.save`` file (a zip archive, or a raw pickle) is read with
  ``torch.load(weights_only=True)``, whose unpickler rebuilds only tensors and plain containers.
  A refusal that names a global (e.g. ``posix.system``), or a raw pickle that names a global
  which is not a tensor's (found by :mod:`pickletools`, which parses opcodes and runs nothing),
  is an :class:`UnsafeCheckpointError` naming it; any other failure is damage.
- Anything else is neither format: damaged.

Imports: nothing of ``repsim`` (a leaf).
"""

from __future__ import annotations

import json
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

__all__ = ["DamagedFileError", "UnsafeCheckpointError", "is_safetensors_file", "read_tensor_file", "safetensors_header"]


class UnsafeCheckpointError(ValueError):
    """A checkpoint that could only be loaded by running code from it; it was not loaded."""


class DamagedFileError(ValueError):
    """A file that is not what it claims to be, or is cut short; the message says where."""


#: The first bytes of the two ``torch.save`` formats: a zip archive, or a pickle (protocol 2+).
_TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")


def safetensors_header(path: str | Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file, checked against the file's size; ``None`` when the
    file does not start like one (an 8-byte little-endian header length, then ``{``).

    Raises:
        DamagedFileError: the header length (bytes 0-7) does not fit in the file, the header
            is not valid JSON (the byte offset is named), or a tensor's data lies beyond the
            end of the file (the tensor is named).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            return None
        length = int.from_bytes(head[:8], "little")
        if length > size - 8:
            raise DamagedFileError(
                f"{str(path)!r} is a damaged safetensors file: bytes 0-7 give a header of {length} bytes,"
                f" but the file has only {size - 8} bytes after them (cut short?)"
            )
        f.seek(8)
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        offset = 8 + getattr(err, "pos", 0)
        raise DamagedFileError(
            f"{str(path)!r} is a damaged safetensors file: its header is not valid JSON at byte {offset} ({err})"
        ) from None
    _check_data_offsets(path, header, size - 8 - length)
    return header


def _check_data_offsets(path: Path, header: Any, data_size: int) -> None:
    """DamagedFileError naming the first tensor whose data lies outside the data section."""
    if not isinstance(header, dict):
        raise DamagedFileError(f"{str(path)!r} is a damaged safetensors file: its header is not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise DamagedFileError(f"{str(path)!r} is a damaged safetensors file: tensor {name!r} has no data_offsets")
        if not 0 <= offsets[0] <= offsets[1] <= data_size:
            raise DamagedFileError(
                f"{str(path)!r} is a damaged safetensors file: tensor {name!r} needs bytes {offsets} of the data"
                f" section, which has {data_size} bytes (cut short?)"
            )


def is_safetensors_file(path: str | Path) -> bool:
    """True when ``path`` starts like a safetensors file (an 8-byte little-endian header size,
    then ``{``); a damaged one raises :class:`DamagedFileError` (:func:`safetensors_header`)."""
    return safetensors_header(path) is not None


def _blocked_global(message: str) -> str | None:
    """The global a weights-only unpickler refused to import (e.g. ``posix.system``), from
    torch's message (both of torch 2.13's wordings), or ``None`` when none is named."""
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) (\S+)", message)
    return found.group(1) if found else None


#: Globals a ``torch.save`` pickle of tensors may name (module prefixes): never "code" here.
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.", "builtins.set")
_MEMO_PUTS = {"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"}
_MEMO_GETS = {"BINGET", "LONG_BINGET", "GET"}


def _pickle_globals(data: bytes) -> list[str]:
    """The globals (``module.name``) a pickle stream names, read with :mod:`pickletools` (which
    parses opcodes and runs nothing). ``STACK_GLOBAL``'s operands are the two strings pushed (or
    fetched from the memo) before it. Stops quietly where the stream is cut."""
    found, recent, memo = [], [], {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and ("UNICODE" in op.name or op.name.endswith("STRING")):
                recent = [*recent[-1:], arg]
            elif op.name in _MEMO_PUTS and recent:
                memo[arg if arg is not None else len(memo)] = recent[-1]
            elif op.name in _MEMO_GETS and arg in memo:
                recent = [*recent[-1:], memo[arg]]
            elif op.name == "GLOBAL":
                found.append(arg.replace(" ", ".").replace("__builtin__.", "builtins."))
            elif op.name == "STACK_GLOBAL" and len(recent) == 2:
                found.append(".".join(recent))
    except ValueError:  # a truncated or corrupt stream: what was read so far is what there is
        pass
    return found


def _code_global(path: Path) -> str | None:
    """The first global a raw pickle file names that is not a tensor's (``None`` for a zip
    archive, whose pickle torch has already read, or a pickle naming none)."""
    data = path.read_bytes()
    if data.startswith(_TORCH_SAVE_MAGIC[0]):
        return None
    return next((g for g in _pickle_globals(data) if not g.startswith(_TENSOR_GLOBALS)), None)


def _torch_load_safely(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of an open file (so torch does not dispatch on the
    file name). A refused global becomes :class:`UnsafeCheckpointError` naming it; anything else
    that cannot be read is a :class:`DamagedFileError`."""
    try:
        with path.open("rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _blocked_global(str(err)) or _code_global(path)
        if blocked is None:
            detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:200]
            raise DamagedFileError(f"{str(path)!r} is a damaged torch.save file: {detail}") from None
        raise UnsafeCheckpointError(
            f"refusing to load {str(path)!r}: loading it would run code from the file (it needs the global"
            f" {blocked}). Convert it to a plain state_dict (safetensors) in a trusted environment."
        ) from None
    except (RuntimeError, KeyError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DamagedFileError(f"{str(path)!r} is a damaged torch.save file: {first}") from None


def read_tensor_file(path: str | Path) -> Any:
    """Read a ``.safetensors`` file (dict of tensors) or a ``torch.save`` file (any weights-only
    object) without executing code. Raises UnsafeCheckpointError, DamagedFileError (a damaged
    file, or one that is neither format) or ValueError (no such file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if safetensors_header(path) is not None:
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except safetensors.SafetensorError as err:
            raise DamagedFileError(f"{str(path)!r} is a damaged safetensors file: {err}") from None
    with path.open("rb") as f:
        start = f.read(4)
    if not start.startswith(_TORCH_SAVE_MAGIC):
        raise DamagedFileError(
            f"{str(path)!r} is neither a safetensors file nor a torch.save file (it starts with bytes {start!r})"
        )
    return _torch_load_safely(path)
