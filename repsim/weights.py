"""Safe loading of weights, and models named by a factory spec.

Loading never executes code from a file:

- ``.safetensors`` files (recognised by their header, whatever their name) are read with
  :func:`safetensors.torch.load_file`;
- anything else is read with ``torch.load(path, weights_only=True, map_location="cpu")``, whose
  unpickler only rebuilds tensors and plain containers. A file that would need any other object
  (a pickle with a ``__reduce__`` payload, a pickled ``nn.Module``) is refused with
  :class:`UnsafeCheckpointError` before anything in it runs.

A checkpoint may be a plain ``state_dict`` (a mapping of names to tensors) or a dict holding one
under the key ``"state_dict"`` or ``"model"`` (looked for in that order; the lightning and
common training-script layouts). Key prefixes such as ``module.`` (``DataParallel``,
``DistributedDataParallel``, learn2learn wrappers) are stripped or remapped by
:func:`remap_keys`; after that the keys must equal the model's, else
:class:`CheckpointKeyError` lists the missing and unexpected ones.

A model is named by a factory spec ``"package.module:callable"`` (the callable may be a dotted
attribute path, ``"package.module:Class.build"``) plus keyword arguments; see docs/formats.md.

**Metadata never chooses code.** Building a model imports the factory's module, so a factory
named inside a folder (a run's ``config.json``, a snapshot's ``manifest.json``, anything read
from disk) is imported only if it is on the allowlist (:func:`trusted_factories`): the
factories that installed packages declare in the entry-point group
:data:`FACTORY_ENTRY_POINTS` (``meta`` declares its conv4 there), those registered in Python
with :func:`allow_factory`, and those the caller passes as ``trusted`` (what the user named on
the command line, ``--model``). Anything else is refused with :class:`UntrustedFactoryError`
before any import. Every call of :func:`build_model` and :func:`load_model` says where its
factory came from (``source``: the file that named it, or ``None`` when the caller named it).

Files are read by :mod:`repsim.tensor_files`: a file that would run code is an
:class:`~repsim.tensor_files.UnsafeCheckpointError` naming the global, a damaged one a
:class:`~repsim.tensor_files.DamagedFileError` naming the offset or the field. Weights of an
integer, bool or complex dtype where the model has floating-point ones are refused by name.

Imports: :mod:`repsim.io` and :mod:`repsim.tensor_files` only; never :mod:`meta` (the module a
model spec names is imported by name, with :mod:`importlib`, only when a model is built and only
from the allowlist).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from repsim.io import atomic_write_bytes
from repsim.tensor_files import read_tensor_file

#: Keys under which a checkpoint dict may hold its state_dict, in the order they are tried.
STATE_DICT_KEYS = ("state_dict", "model")


class CheckpointKeyError(ValueError):
    """The (remapped) checkpoint keys differ from the model's ``state_dict`` keys.

    Attributes:
        missing: keys the model has and the checkpoint lacks.
        unexpected: keys the checkpoint has and the model lacks.
    """

    def __init__(self, message: str, *, missing: list[str], unexpected: list[str]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected


class ModelSpecError(ValueError):
    """A factory spec that does not name a callable returning an ``nn.Module``."""


class UntrustedFactoryError(ModelSpecError):
    """A factory named by a file that is not on the allowlist; nothing was imported."""


# --------------------------------------------------------------------------- the allowlist

#: The entry-point group in which installed packages declare their model factories trusted
#: (``name = package.module:callable``, the value being the factory spec).
FACTORY_ENTRY_POINTS = "repsim.model_factories"
_ALLOWED: set[str] = set()


def allow_factory(spec: str) -> None:
    """Trust ``spec`` (``"package.module:callable"``) in this process: files may name it."""
    _check_spec_form(spec)
    _ALLOWED.add(spec)


def trusted_factories(extra: Iterable[str] = ()) -> frozenset[str]:
    """The allowlist: the installed packages' declared factories (:data:`FACTORY_ENTRY_POINTS`),
    those of :func:`allow_factory`, and ``extra``."""
    declared = {entry.value.replace(" ", "") for entry in entry_points(group=FACTORY_ENTRY_POINTS)}
    return frozenset(declared | _ALLOWED | set(extra))


def check_factory_allowed(spec: Any, source: str | Path, trusted: Iterable[str] = ()) -> None:
    """:class:`UntrustedFactoryError` unless the factory ``spec`` that ``source`` names is on the
    allowlist (:func:`trusted_factories` with ``trusted``). Nothing is imported."""
    if spec in trusted_factories(trusted):
        return
    raise UntrustedFactoryError(
        f"{str(source)!r} names the model factory {spec!r}, which is not on the allowlist of trusted"
        f" factories; building it would import and run that code. If you trust it, name it yourself:"
        f" --model {spec} on the command line, or repsim.weights.allow_factory({spec!r}) in Python"
    )


# --------------------------------------------------------------------------- model specs


def _check_spec_form(spec: Any) -> tuple[str, str]:
    """``(module, attribute path)`` of ``"package.module:attr.path"``; ModelSpecError otherwise."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ModelSpecError(
            f"model spec {spec!r} must be 'package.module:callable' (one colon), e.g. 'meta.core.models:conv4'"
        )
    module_name, attr_path = spec.split(":")
    if not module_name or not attr_path:
        raise ModelSpecError(f"model spec {spec!r} has an empty module or callable name")
    return module_name, attr_path


def _import_factory(spec: str, source: str | Path | None, trusted: Iterable[str]) -> Any:
    """Return the object named by ``"package.module:attr.path"`` (ModelSpecError otherwise),
    after checking the allowlist when a file (``source``) named it. The only place in the
    toolkit that imports a module by a name it was given."""
    module_name, attr_path = _check_spec_form(spec)
    if source is not None:
        check_factory_allowed(spec, source, trusted)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ModelSpecError(
            f"model spec {spec!r}: cannot import module {module_name!r} ({err}); is it on PYTHONPATH?"
        ) from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise ModelSpecError(
                f"model spec {spec!r}: {getattr(obj, '__name__', module_name)!r} has no"
                f" attribute {part!r}; it has: {', '.join(public[:60])}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"model spec {spec!r}: {attr_path!r} is a {type(obj).__name__}, not callable")
    return obj


def build_model(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    source: str | Path | None,
    trusted: Iterable[str] = (),
) -> nn.Module:
    """Build a model from a factory spec: ``import package.module; package.module.callable(**kwargs)``.

    Args:
        factory: ``"package.module:callable"``; the callable may be a dotted path.
        kwargs: keyword arguments for the callable (JSON-like values), ``None`` for none.
        source: the file that named ``factory`` (its ``config.json``, ``manifest.json``...): the
            factory must then be on the allowlist; ``None`` when the caller named it (code, or
            the command line), which trusts it.
        trusted: more factories to trust for this call (e.g. the command line's ``--model``).

    Raises:
        UntrustedFactoryError: a file named a factory that is not on the allowlist (nothing
            imported).
        ModelSpecError: missing colon, module not importable, attribute missing, not callable,
            wrong keyword arguments, the factory failing, or a return value that is not an
            ``nn.Module``.
    """
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ModelSpecError(f"model kwargs must be a JSON object (dict); got {type(kwargs).__name__}")
    fn = _import_factory(factory, source, trusted)
    try:
        model = fn(**kwargs)
    except TypeError as err:
        raise ModelSpecError(f"model spec {factory!r} rejected kwargs {dict(kwargs)!r}: {err}") from None
    except Exception as err:  # whatever the factory raises, it is the factory's failure
        raise ModelSpecError(
            f"model spec {factory!r} failed with kwargs {dict(kwargs)!r}: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model spec {factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def parse_json_object(text: str | None, what: str = "model kwargs") -> dict[str, Any]:
    """Parse JSON text that must be an object (``None`` or empty text gives ``{}``); a
    :class:`ModelSpecError` names ``what`` otherwise (``--model-kwargs`` and the like)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelSpecError(f"{what} are not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise ModelSpecError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Return the state_dict in ``obj``: ``obj`` itself, or ``obj[k]`` for k in STATE_DICT_KEYS."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), Mapping):
            return _find_state_dict(obj[key], path)
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    raise ValueError(
        f"{str(path)!r} is not a plain state_dict: entries {bad[:10]} are not tensors, and it has"
        f" no {' or '.join(repr(k) for k in STATE_DICT_KEYS)} key holding one"
    )


def remap_keys(
    state: Mapping[str, torch.Tensor],
    *,
    strip_prefixes: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename state_dict keys: strip prefixes, then replace leading ``OLD`` by ``NEW``.

    Each key loses every prefix of ``strip_prefixes`` it starts with, tried in order (so
    ``("module.",)`` turns ``module.conv1.weight`` into ``conv1.weight`` and leaves other keys
    alone). Then, for the first ``OLD`` in ``rename`` that the key starts with, that prefix
    becomes ``NEW`` (``{"features.": "body."}``). Two keys that end up equal raise ValueError.
    """
    rename = dict(rename or {})
    prefixes = [p for p in strip_prefixes if p]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for prefix in prefixes:
            if new.startswith(prefix):
                new = new[len(prefix) :]
        for old, replacement in rename.items():
            if new.startswith(old):
                new = replacement + new[len(old) :]
                break
        if new in out:
            raise ValueError(f"after remapping, two checkpoint keys both become {new!r}")
        out[new] = value
    return out


def parse_rename(items: Iterable[str]) -> dict[str, str]:
    """Parse ``OLD=NEW`` strings (``--rename``) into an ordered dict of prefix replacements."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise ValueError(f"--rename expects OLD=NEW with a non-empty OLD prefix; got {item!r}")
        out[old] = new
    return out


def load_state_dict(
    path: str | Path,
    *,
    strip_prefixes: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Load the state_dict in a checkpoint file (see the module docstring) and remap its keys.

    Returns a dict of CPU tensors. Raises UnsafeCheckpointError for files that would run code,
    ValueError for anything else that is not a state_dict.
    """
    path = Path(path)
    state = _find_state_dict(read_tensor_file(path), path)
    return remap_keys(state, strip_prefixes=strip_prefixes, rename=rename)


def _preview(keys: list[str], most: int = 20) -> str:
    """``keys`` as a list literal, cut after ``most`` entries."""
    more = f" ... and {len(keys) - most} more" if len(keys) > most else ""
    return f"{keys[:most]}{more}"


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """Advice for mismatched keys: the exact ``--strip-prefix P`` when the unexpected keys are
    exactly the missing keys with ``P`` in front, else the general remedy."""
    if missing and len(missing) == len(unexpected):
        first, wanted = unexpected[0], set(unexpected)
        for m in missing:
            prefix = first[: len(first) - len(m)]
            if first.endswith(m) and prefix and {prefix + k for k in missing} == wanted:
                return f"The checkpoint's keys are the model's behind {prefix!r}: use --strip-prefix {prefix}"
    return "Strip or remap key prefixes with --strip-prefix PREFIX or --rename OLD=NEW (remap_keys in Python)"


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (a key prefix such as ``module.`` already has one)."""
    return text if text.endswith(".") else text + "."


def apply_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint", advice: str = ""
) -> nn.Module:
    """Load ``state`` into ``model`` strictly; mismatched keys or shapes raise a ValueError that
    names them, followed by ``advice`` (where the model's kwargs came from, what to do).

    Raises:
        CheckpointKeyError: lists the keys the checkpoint lacks and the ones the model lacks
            (with a hint about ``--strip-prefix`` / ``--rename`` when a common prefix explains
            the difference).
        ValueError: tensors whose shapes differ, each as ``key: checkpoint (..) vs model (..)``.
    """
    own = model.state_dict()
    expected = set(own)
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    tail = f" {advice}" if advice else ""
    if missing or unexpected:
        raise CheckpointKeyError(
            f"{source} does not match the model: {len(missing)} missing keys {_preview(missing)};"
            f" {len(unexpected)} unexpected keys {_preview(unexpected)}."
            f" {_sentence(_prefix_hint(missing, unexpected))}{tail}",
            missing=missing,
            unexpected=unexpected,
        )
    shapes = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(tensor.shape)}"
        for key, tensor in own.items()
        if tuple(state[key].shape) != tuple(tensor.shape)
    ]
    if shapes:
        raise ValueError(
            f"{source} does not fit the model: {len(shapes)} tensor(s) differ in shape: {_preview(shapes, 10)}.{tail}"
        )
    _check_dtypes(own, state, source)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source} does not fit the model: {err}{tail}") from None
    return model


def _check_dtypes(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str) -> None:
    """ValueError naming the entries whose dtype cannot stand for the model's: integer, bool or
    complex values where the model holds real floating-point ones (loading would cast them
    silently)."""
    wrong = [
        f"{key} ({str(state[key].dtype).removeprefix('torch.')})"
        for key, tensor in own.items()
        if tensor.is_floating_point() and not state[key].is_floating_point()
    ]
    if wrong:
        raise ValueError(
            f"{source} holds weights of a non-floating-point dtype where the model's are floating point:"
            f" {_preview(wrong, 10)}; refusing to cast them"
        )


def kwargs_advice(factory: str, kwargs: Mapping[str, Any], kwargs_from: str | Path | None) -> str:
    """What to tell a user whose checkpoint does not fit ``factory(**kwargs)``: where the kwargs
    came from (``kwargs_from``: the file that recorded them, or ``None`` when the caller gave them)
    and where the right ones are."""
    if kwargs_from is not None:
        return (
            f"The model was built from the spec in {str(kwargs_from)!r} ({factory} with {dict(kwargs)}), so the"
            " weights were not saved from that run's model: check which weights file belongs to which run folder"
        )
    return (
        f"The model was built as {factory} with kwargs {dict(kwargs)}, and a checkpoint fits only the kwargs its"
        " model was built with. A run of meta records them in its config.json ('model': {'factory', 'kwargs'}):"
        " pass the run folder instead of the weights file (--a RUN_DIR, --b RUN_DIR) to take them from there, or"
        " copy them into --model-kwargs"
    )


def load_model(
    factory: str,
    kwargs: Mapping[str, Any] | None,
    checkpoint: str | Path,
    *,
    source: str | Path | None,
    trusted: Iterable[str] = (),
    strip_prefixes: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
    kwargs_from: str | Path | None = None,
) -> nn.Module:
    """Build ``factory(**kwargs)`` (``source`` and ``trusted`` as in :func:`build_model`) and
    load the (remapped) weights of ``checkpoint`` into it. When they do not fit, the error names
    the keys or shapes and says where the kwargs came from (``kwargs_from``: the file that
    recorded them; ``None``: the caller) and where the right ones are (:func:`kwargs_advice`)."""
    model = build_model(factory, kwargs, source=source, trusted=trusted)
    state = load_state_dict(checkpoint, strip_prefixes=strip_prefixes, rename=rename)
    advice = kwargs_advice(factory, kwargs or {}, kwargs_from)
    return apply_state_dict(model, state, source=f"checkpoint {str(checkpoint)!r}", advice=advice)


def save_state_dict(path: str | Path, state: Mapping[str, torch.Tensor]) -> Path:
    """Write ``state`` (name -> tensor) as a safetensors file, atomically.

    Tensors are copied to contiguous CPU memory first (safetensors refuses shared storage).
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return atomic_write_bytes(Path(path), safetensors.torch.save(tensors))
