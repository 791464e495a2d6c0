"""A training run's state on disk: safetensors weights, the resumable checkpoint (tensors and JSON
state in one file) and the random number generators.

Everything here is written atomically (a temporary file in the target's folder, then
``os.replace``; :func:`repsim.io.atomic_write_bytes`), so a reader sees either the old file
or the new one, never a half-written one. Loading never executes code: weights are safetensors,
state is JSON.

A training checkpoint is **one** safetensors file: the tensors (model, optimizer, ...) plus the
JSON state (iteration, RNG and sampler state, metric-history length, ...) stored in the file's
metadata under ``"state"``. That single ``os.replace`` is the commit point, so the weights and
the state can never disagree after a crash. ``checkpoint.json`` beside it is a readable copy of
the same state, written after it (informational; :func:`load_checkpoint` reads the metadata).

Nested state (e.g. ``torch.optim.Optimizer.state_dict()``) is split by :func:`pack` into a
JSON-serialisable tree and a flat ``name -> tensor`` dict; :func:`unpack` inverts it exactly,
including dicts with integer keys and tuples.

Imports: :mod:`repsim.io` (atomic writes) and :mod:`repsim.tensor_files` (checking safetensors headers).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from repsim.io import atomic_write_bytes
from repsim.tensor_files import DamagedFileError, safetensors_header

CHECKPOINT_FORMAT = "meta-checkpoint"
CHECKPOINT_VERSION = 1
_TENSOR, _ITEMS, _TUPLE = "__tensor__", "__items__", "__tuple__"


class CheckpointError(ValueError):
    """A checkpoint file that is not one this module wrote, or whose contents are inconsistent."""


# --------------------------------------------------------------------------- files


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``name -> tensor`` as safetensors, atomically. Tensors are moved to the CPU and made
    contiguous (a copy, so tensors that share storage are accepted)."""
    cpu = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    return atomic_write_bytes(path, safetensors.torch.save(cpu, metadata=dict(metadata) if metadata else None))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(name -> CPU tensor, metadata)`` (metadata ``{}`` when absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {str(path)!r}")
    try:
        if safetensors_header(path) is None:
            raise CheckpointError(f"{str(path)!r} is not a safetensors file")
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except DamagedFileError as err:
        raise CheckpointError(str(err)) from None
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"{str(path)!r} is a damaged safetensors file: {err}") from None
    return tensors, metadata


def keep_copy(path: Path, copy: Path) -> Path:
    """Make ``copy`` hold the bytes of ``path`` atomically, as a hard link where the file system
    allows (no bytes copied), else a copy; ``path`` stays in place throughout. Returns ``copy``."""
    temporary = copy.with_name(f".{copy.name}.{os.getpid()}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(path, temporary)
    except OSError:
        shutil.copyfile(path, temporary)
    os.replace(temporary, copy)
    return copy


# --------------------------------------------------------------------------- nested state


def pack(obj: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested state into a JSON tree and tensors named ``prefix.<path>``.

    Tensors become ``{"__tensor__": name}``, dicts with non-string keys ``{"__items__": [[k, v],
    ...]}``, tuples ``{"__tuple__": [...]}``; other leaves must be JSON scalars.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            if path in tensors:
                raise ValueError(f"two tensors of the state would both be stored as {path!r}")
            tensors[path] = value
            return {_TENSOR: path}
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value):
                return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
            return {_ITEMS: [[k, walk(v, f"{path}.{k}")] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path!r} in a checkpoint")

    return walk(obj, prefix), tensors


def unpack(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if set(tree) == {_TENSOR}:
        if tree[_TENSOR] not in tensors:
            raise CheckpointError(f"checkpoint state names the tensor {tree[_TENSOR]!r}, which the file lacks")
        return tensors[tree[_TENSOR]]
    if set(tree) == {_ITEMS}:
        return {k: unpack(v, tensors) for k, v in tree[_ITEMS]}
    if set(tree) == {_TUPLE}:
        return tuple(unpack(v, tensors) for v in tree[_TUPLE])
    return {k: unpack(v, tensors) for k, v in tree.items()}


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write nested ``state`` (tensors anywhere inside) to one safetensors file, atomically; the
    JSON part goes into the file's metadata. Returns ``path``."""
    tree, tensors = pack(dict(state), "state")
    metadata = {"format": CHECKPOINT_FORMAT, "version": str(CHECKPOINT_VERSION), "state": json.dumps(tree)}
    return save_tensors(path, tensors, metadata)


def load_checkpoint(path: str | Path, required: Mapping[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint` (CPU tensors).

    ``required`` maps the state's keys that must be present to their types; a missing key, a
    value of another type, or a state that is not valid JSON raises :class:`CheckpointError`
    naming the file and the field (an edited or damaged checkpoint is reported, not crashed on).
    """
    tensors, metadata = load_tensors(path)
    if metadata.get("format") != CHECKPOINT_FORMAT or metadata.get("version") != str(CHECKPOINT_VERSION):
        raise CheckpointError(
            f"{str(path)!r} is not a {CHECKPOINT_FORMAT} version {CHECKPOINT_VERSION} file"
            f" (format {metadata.get('format')!r}, version {metadata.get('version')!r})"
        )
    try:
        state = unpack(json.loads(metadata.get("state", "")), tensors)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{str(path)!r}: its state is not valid JSON ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r}: its state is a {type(state).__name__}, not a mapping")
    for key, kind in (required or {}).items():
        if key not in state:
            raise CheckpointError(f"{str(path)!r}: the state has no field {key!r}")
        if not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool)):
            raise CheckpointError(f"{str(path)!r}: field {key!r} is {state[key]!r}, not of the expected type")
    return state


def readable_state(state: Any) -> Any:
    """``state`` with every tensor replaced by a short description (for ``checkpoint.json``)."""
    tree, tensors = pack(state, "state")

    def describe(value: Any) -> Any:
        if isinstance(value, list):
            return [describe(v) for v in value]
        if isinstance(value, dict) and set(value) == {_TENSOR}:
            t = tensors[value[_TENSOR]]
            return f"tensor {str(t.dtype).removeprefix('torch.')} {list(t.shape)}"
        if isinstance(value, dict):
            return {k: describe(v) for k, v in value.items()}
        return value

    return describe(tree)


# --------------------------------------------------------------------------- random generators


def capture_rng() -> dict[str, Any]:
    """The state of Python's ``random``, numpy's global generator and torch's CPU generator (and
    every CUDA generator once CUDA is initialised), JSON-serialisable."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _encode_bytes(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_encode_bytes(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore the generators from :func:`capture_rng`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_decode_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode_bytes(s) for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _encode_bytes(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _decode_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
