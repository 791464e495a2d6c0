"""What ``--a`` and ``--b`` name: a training run folder of ``meta`` (or one in a reproduction's
``runs/``), a weights file inside one, or any checkpoint file. Read from the JSON on disk;
nothing of ``meta`` is imported.

A run folder (docs/formats.md, "Training run folder") holds ``config.json`` with
``"format": "meta-run"`` and ``"model": {"factory", "kwargs"}``, and the weights
(``final.safetensors``, ``best.safetensors``, ``checkpoints/iter_NNNNNN.safetensors``). So:

- ``RUN_DIR`` is the model of its ``config.json`` with its ``final.safetensors``;
- a file in ``RUN_DIR`` or ``RUN_DIR/checkpoints/`` (``RUN_DIR/best.safetensors``) is that model
  with that file;
- any other file is just weights: the command line names the model (``--model``).

The factory a ``config.json`` names is built only if it is on the allowlist
(:mod:`repsim.weights`): the file is the ``source`` of the spec. A reproduction folder
(``preset.json``) or an adaptation snapshot (``manifest.json``) given instead of a run is an
error saying what to pass.

The model of each side (:func:`model_spec`): ``--model`` and ``--model-kwargs`` when given (the
command line trusts the factory it names), else the run's spec, else (for B) model A's.

Imports: :mod:`repsim.io` and :mod:`repsim.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repsim.io import read_json
from repsim.weights import parse_json_object

#: The ``format`` of a run's ``config.json``, and the weights a run folder stands for.
RUN_FORMAT = "meta-run"
FINAL_WEIGHTS = "final.safetensors"


@dataclass(frozen=True)
class ModelFiles:
    """The weights named on the command line and, where they belong to a run, its model spec.

    Attributes:
        weights: the checkpoint file.
        config: the run's ``config.json`` (``None`` for a checkpoint outside a run).
        factory, kwargs: the run's model spec (``None`` and ``{}`` outside a run).
        image_shape: ``(C, H, W)`` of the images the run was trained on, where it records them.
    """

    weights: Path
    config: Path | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    image_shape: tuple[int, int, int] | None = None

    @property
    def label(self) -> str:
        """A short name for titles: the run folder's name (``runs/x`` -> ``x``, with the weights
        file when it is not the final one), or the file's name."""
        if self.config is None:
            return self.weights.name
        run = self.config.parent.name
        return run if self.weights.name == FINAL_WEIGHTS else f"{run}/{self.weights.stem}"


def _run_config(folder: Path) -> dict[str, Any] | None:
    """The ``config.json`` of a run folder, or ``None`` if ``folder`` has none of ``meta``'s."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    info = read_json(path)
    return info if isinstance(info, dict) and info.get("format") == RUN_FORMAT else None


def _not_a_run(folder: Path) -> ValueError:
    """The error for a folder that is not a training run, saying what to pass instead."""
    if (folder / "preset.json").is_file() and (folder / "runs").is_dir():
        runs = sorted(str(p) for p in (folder / "runs").iterdir() if (p / "config.json").is_file())
        return ValueError(
            f"{str(folder)!r} is a reproduction folder, not one run: pass two of its runs, e.g. {runs[:4]}"
        )
    if (folder / "manifest.json").is_file():
        return ValueError(
            f"{str(folder)!r} is an adaptation snapshot: report on it with `python -m repsim report {folder}`,"
            " or pass the run folder it was written from"
        )
    return ValueError(
        f"{str(folder)!r} is a folder without a run's config.json: pass a training run folder of meta"
        " (config.json and final.safetensors) or a weights file"
    )


def _spec(config: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    """The ``(factory, kwargs)`` of a run's ``config.json`` (ValueError if it has none)."""
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("factory"), str):
        raise ValueError(f"{str(path)!r} has no model spec ('model': {{'factory': ..., 'kwargs': ...}})")
    kwargs = model.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{str(path)!r}: the model's 'kwargs' must be a JSON object")
    return model["factory"], kwargs


def _image_shape(config: dict[str, Any]) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the run's training images (``data.train.image_shape``), if recorded."""
    shape = config.get("data", {}).get("train", {}).get("image_shape")
    if isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape):
        return tuple(shape)  # type: ignore[return-value]
    return None


def _with_run(weights: Path, folder: Path, config: dict[str, Any]) -> ModelFiles:
    path = folder / "config.json"
    factory, kwargs = _spec(config, path)
    return ModelFiles(weights, path, factory, kwargs, _image_shape(config))


def locate_model(path: str | Path) -> ModelFiles:
    """What ``path`` names: a run folder (its final weights), a weights file inside a run folder
    (or its ``checkpoints/``), or a checkpoint file on its own. ``ValueError`` for a path that
    does not exist, a run without final weights, or a folder that is not a run."""
    path = Path(path)
    if path.is_dir():
        config = _run_config(path)
        if config is None:
            raise _not_a_run(path)
        weights = path / FINAL_WEIGHTS
        if not weights.is_file():
            kept = sorted(str(p) for p in (*path.glob("*.safetensors"), *path.glob("checkpoints/*.safetensors")))
            raise ValueError(
                f"run {str(path)!r} has no {FINAL_WEIGHTS} (is it still training?); pass one of its weights files"
                f" instead: {kept}"
            )
        return _with_run(weights, path, config)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: pass a training run folder or a weights file")
    for folder in (path.parent, path.parent.parent if path.parent.name == "checkpoints" else None):
        config = _run_config(folder) if folder is not None else None
        if config is not None:
            return _with_run(path, folder, config)
    return ModelFiles(path)


@dataclass(frozen=True)
class ModelSpec:
    """A model to build: ``factory(**kwargs)``; ``source`` is the file that named the factory
    (``None``: the command line, which trusts it) and ``kwargs_from`` the file the kwargs came from."""

    factory: str
    kwargs: dict[str, Any]
    source: Path | None = None
    kwargs_from: Path | None = None

    def record(self, files: ModelFiles) -> dict[str, Any]:
        """What ``settings.json`` says of the model."""
        origin = {"kwargs_from": str(self.kwargs_from) if self.kwargs_from else "command line"}
        return {"factory": self.factory, "kwargs": self.kwargs, "checkpoint": str(files.weights), **origin}


def model_spec(
    factory: str | None, kwargs_text: str | None, files: ModelFiles, fallback: ModelSpec | None, side: str
) -> ModelSpec:
    """The model of one side: ``--model`` (trusted) with ``--model-kwargs``, else the run's spec
    (allowlisted), else ``fallback`` (model A's, for B); the kwargs of the command line win."""
    given = parse_json_object(kwargs_text, f"--model{'' if side == 'a' else '-b'}-kwargs") if kwargs_text else None
    if factory is not None:
        if given is not None or files.factory != factory:
            return ModelSpec(factory, given or {})
        return ModelSpec(factory, files.kwargs, kwargs_from=files.config)
    if files.factory is not None:
        return ModelSpec(
            files.factory,
            given if given is not None else files.kwargs,
            files.config,
            None if given is not None else files.config,
        )
    if fallback is not None:
        return fallback if given is None else ModelSpec(fallback.factory, given, fallback.source)
    raise ValueError(
        f"--{side} {str(files.weights)!r} is a weights file outside a run folder, so nothing says which model it"
        f" belongs to: pass the run folder of meta that holds it (--{side} RUN_DIR, whose config.json records the"
        f" model), or name the model with --model PACKAGE.MODULE:FACTORY --model-kwargs JSON"
    )


def input_image_shape(files: ModelFiles, spec: ModelSpec, image_size: int | None) -> tuple[Any, int, int] | None:
    """``(C, H, W)`` of a model's input images: ``image_size`` (``--image-size``; channels from
    the run or the kwargs ``in_channels``, else ``None``), else the run's record, else the kwargs
    ``in_channels`` and ``image_size`` (conv4's names); ``None`` when unknown."""
    kwargs = spec.kwargs
    channels = files.image_shape[0] if files.image_shape else kwargs.get("in_channels")
    if image_size is not None:
        return channels, image_size, image_size
    if files.image_shape:
        return files.image_shape
    size = kwargs.get("image_size")
    return (channels, size, size) if isinstance(channels, int) and isinstance(size, int) else None
