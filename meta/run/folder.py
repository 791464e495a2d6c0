"""A training run folder: where each file is (docs/formats.md, "Training run folder"), reading
its ``config.json`` and loading its weights into the model its spec names.

Imports: :mod:`repsim` (weights, JSON) only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from repsim.io import read_json, stale_temporaries
from repsim.weights import load_model

RUN_FORMAT = "meta-run"
RUN_VERSION = 2
#: What a version-1 run folder (written before these settings were recorded) computed with:
#: validation and test queries as at training, no meta-gradient clipping, symmetric padding.
VERSION_1_SETTINGS = {"grad_clip": 0.0, "padding": "symmetric"}


class RunFolder:
    """File names of a training run folder (docs/formats.md, "Training run folder")."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.checkpoint = self.root / "checkpoint.safetensors"
        self.previous_checkpoint = self.root / "checkpoint.prev.safetensors"
        self.checkpoint_info = self.root / "checkpoint.json"
        self.best = self.root / "best.safetensors"
        self.final = self.root / "final.safetensors"
        self.metrics_csv = self.root / "metrics.csv"
        self.metrics_json = self.root / "metrics.json"
        self.eval_dir = self.root / "eval"

    def saved_at(self, iteration: int) -> Path:
        """The kept copy of the weights after ``iteration`` (``--save-at``)."""
        return self.root / "checkpoints" / f"iter_{iteration:06d}.safetensors"

    def weights(self, which: str) -> Path:
        """``"final"``, ``"best"``, ``"iter_XXXXXX"``/an iteration number, or a path."""
        if which in ("final", "best"):
            path = self.final if which == "final" else self.best
        elif which.isdigit() or (which.startswith("iter_") and which[5:].isdigit()):
            path = self.saved_at(int(which.removeprefix("iter_")))
        else:
            path = Path(which)
        if not path.is_file():
            raise ValueError(f"weights {which!r} of run {str(self.root)!r}: {str(path)!r} does not exist")
        return path

    def read_config(self) -> dict[str, Any]:
        """``config.json`` (ValueError if the folder is not a training run)."""
        if not self.config.is_file():
            raise ValueError(f"{str(self.root)!r} is not a training run folder: it has no config.json")
        info = read_json(self.config)
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise ValueError(f"{str(self.config)!r} is not a {RUN_FORMAT} config (format {info.get('format')!r})")
        if info.get("version") == 1 and isinstance(info.get("config"), dict):
            legacy = {**VERSION_1_SETTINGS, "test_queries": info["config"].get("queries")}
            info["config"] = {**legacy, **info["config"]}
        return info


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes interrupted by a crash leave in ``folder``
    (``.NAME.<pid>.<random>.tmp``, the names :func:`repsim.io.atomic_write_bytes` gives them)
    whose writer is gone (:func:`repsim.io.stale_temporaries`); a living writer's are kept.
    Returns what was removed. Nothing ever reads them, so they are litter, not a risk."""
    stale = stale_temporaries(folder)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


#: The model factories of the toolkit, trusted when a run folder names them (also declared to
#: repsim in the ``repsim.model_factories`` entry points, setup.cfg).
MODEL_FACTORY = "meta.core.models:conv4"
MODEL_FACTORIES: tuple[str, ...] = (MODEL_FACTORY,)


def load_weights(
    spec: Mapping[str, Any],
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    source: str | Path,
    trusted: Iterable[str] = (),
) -> torch.nn.Module:
    """Build the model of ``spec`` (``{"factory", "kwargs"}``, read from the file ``source``) and
    load the state_dict in ``path`` into it strictly; the model is returned on ``device``. The
    factory must be one of the toolkit's (:data:`MODEL_FACTORIES`), on repsim's allowlist, or in
    ``trusted`` (the command line's ``--model``): nothing else is imported."""
    if not isinstance(spec, Mapping) or "factory" not in spec:
        raise ValueError(f"{str(source)!r}: 'model' must be an object with a 'factory'")
    model = load_model(
        spec["factory"], spec.get("kwargs", {}), path, source=source, trusted=(*MODEL_FACTORIES, *trusted)
    )
    return model.to(device)
