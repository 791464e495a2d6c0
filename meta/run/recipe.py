"""What a training run is made of, as recorded in its ``config.json``: the model spec, the
regime, the record itself with its compute segments, and the rules for a rerun.

Compute segments. The settings that change a run's numbers only in their rounding (``device``,
``threads``, ``path``, ``chunk``) or not at all (``world_size``, the number of torchrun ranks,
:mod:`meta.run.distributed`): :data:`COMPUTE_FIELDS`, may change when a run is resumed. Each
stretch of iterations computed with one set of them is a *segment* in ``config.json``
(``"segments": [{"from_iteration", "device", "threads", "path", "chunk", "world_size",
"software", "cpu"}]``; a segment written before ``world_size`` was recorded ran with 1);
a resume with other compute settings adds a segment, and a rerun that computes nothing (a
finished run) leaves ``config.json`` as it is. A resumed run equals an uninterrupted one bit for
bit when all its segments have the same compute settings. Every other setting outside
:data:`meta.run.config.MUTABLE_FIELDS` must match the stored run, or the rerun is refused with
the differences listed.

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.run`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from meta.core.inner import InnerLoop
from meta.core.names import LAYERS
from meta.core.regimes import MetaLearning, make_regime
from meta.data import FewShotSplit
from meta.run.config import (
    META_LEARNERS,
    MUTABLE_FIELDS,
    RunConfig,
    adapted_layers,
    from_mapping,
    incompatible_changes,
)
from meta.run.evaluate import run_procedure
from meta.run.folder import MODEL_FACTORY, RUN_FORMAT, RUN_VERSION, RunFolder
from meta.run.paper_defaults import PaperDefaults

__all__ = [
    "COMPUTE_FIELDS",
    "IncompatibleRunError",
    "MODEL_FACTORY",
    "changed_compute",
    "check_rerun",
    "compute_segment",
    "make_run_regime",
    "model_spec",
    "run_info",
    "segments_after",
]

BATCH_NORM_SEMANTICS = {
    "batch": "batch statistics of the batch given, in the inner loop and at test time (original MAML code);"
    " a task's support set and query set are separate forward passes",
    "none": "no normalisation",
}
#: Settings that change a run's numbers only in their rounding (or, ``world_size``, not at all):
#: recorded per segment.
COMPUTE_FIELDS: tuple[str, ...] = ("device", "threads", "path", "chunk", "world_size")
#: What a segment recorded before a compute setting existed ran with.
_COMPUTE_BEFORE = {"world_size": 1}


class IncompatibleRunError(ValueError):
    """A rerun whose configuration differs from the stored run in more than what may change."""


def model_spec(config: RunConfig, train_split: FewShotSplit) -> dict[str, Any]:
    """The factory spec of the run's conv4 (docs/formats.md); multiclass heads cover every
    training class."""
    channels, size, _ = train_split.image_shape
    kwargs: dict[str, Any] = {
        "ways": train_split.n_classes if config.algorithm == "multiclass" else config.ways,
        "in_channels": channels,
        "variant": config.variant,
        "image_size": size,
        "batch_norm": config.batch_norm,
        "padding": config.padding,
    }
    if config.head_init is not None:
        kwargs["head_init"] = config.head_init
    if config.filters is not None:
        kwargs["filters"] = config.filters
    return {"factory": MODEL_FACTORY, "kwargs": kwargs}


def make_run_regime(config: RunConfig) -> Any:
    """The training regime of a resolved config (``freeze_inner`` removes layers from MAML's and
    first-order MAML's inner loop)."""
    if config.algorithm in META_LEARNERS:
        adapt = adapted_layers(config.algorithm, config.freeze_inner)
        inner = InnerLoop(
            config.inner_steps,
            config.inner_lr,
            adapt=None if adapt == LAYERS else frozenset(adapt),
            first_order=config.algorithm == "fomaml",
            adapt_norm=config.adapt_norm,
        )
        return MetaLearning(inner, config.meta_batch_size, name=config.algorithm, path=config.path, chunk=config.chunk)
    return make_regime(
        config.algorithm,
        meta_batch_size=config.meta_batch_size,
        batch_size=config.batch_size,
        seed=config.seed,
        path=config.path,
    )


def paper_defaults_record(config: RunConfig, defaults: PaperDefaults) -> dict[str, Any]:
    """Which paper setting's defaults filled the run's unset hyperparameters, in words: the run's
    own setting (``exact``), or the nearest one of its data set family and why."""
    setting = f"{defaults.dataset} {defaults.ways}-way {defaults.shots}-shot"
    exact = (defaults.dataset, defaults.ways, defaults.shots) == (config.dataset, config.ways, config.shots)
    if exact:
        source = "the paper's own settings for this data set, ways and shots"
    elif defaults.dataset != config.dataset:
        source = f"{config.dataset} has no paper settings; it is {defaults.dataset}-shaped and takes the nearest ones"
    else:
        source = f"the paper has no {config.ways}-way {config.shots}-shot setting; the nearest one's"
    return {"setting": setting, "exact": exact, "source": source}


def run_info(
    config: RunConfig,
    defaults: PaperDefaults,
    spec: Mapping[str, Any],
    regime: Any,
    splits: Mapping[str, FewShotSplit],
    cpu: Any,
) -> dict[str, Any]:
    """Everything ``config.json`` records (docs/formats.md), but the segments
    (:func:`segments_after`). ``paper_defaults`` names the paper setting whose defaults filled
    the unset hyperparameters, and says whether it is the run's own setting (``exact``) or the
    nearest one (e.g. Omniglot's for ``glyphs``)."""
    procedure = run_procedure(config)
    trained = adapted_layers(config.algorithm, config.freeze_inner) if config.algorithm in META_LEARNERS else ()
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "config": config.as_dict(),
        "paper_defaults": paper_defaults_record(config, defaults),
        "model": dict(spec),
        "layers": list(LAYERS),
        "adapted_layers": list(trained),
        "test_procedure": procedure.describe(),
        "batch_norm": config.batch_norm,
        "batch_norm_semantics": BATCH_NORM_SEMANTICS[config.batch_norm],
        "forward_batch": "whole",
        "regime": regime.config(),
        "data": {
            name: {
                "name": s.name,
                "classes": s.n_classes,
                "per_class": s.n_per_class,
                "image_shape": list(s.image_shape),
            }
            for name, s in splits.items()
        },
        "software": _software(),
        "cpu": cpu.as_dict() if hasattr(cpu, "as_dict") else cpu,
    }


def _software() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def compute_segment(config: RunConfig, cpu: Any, from_iteration: int, world_size: int = 1) -> dict[str, Any]:
    """The segment record of iterations computed from ``from_iteration`` with ``config``'s
    compute settings (:data:`COMPUTE_FIELDS`) on this machine, by ``world_size`` ranks."""
    return {
        "from_iteration": from_iteration,
        **{name: getattr(config, name) for name in COMPUTE_FIELDS if name != "world_size"},
        "world_size": world_size,
        "software": _software(),
        "cpu": cpu.as_dict() if hasattr(cpu, "as_dict") else cpu,
    }


def segments_after(stored: Mapping[str, Any] | None, segment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's segments once iterations from ``segment["from_iteration"]`` are computed with
    ``segment``'s settings: the stored ones (``stored`` is the old ``config.json``, ``None`` for a
    new run), plus ``segment`` when its compute settings differ from the last stored segment's.
    A segment that starts where the last one started replaces it (nothing was kept of it)."""
    old = [dict(s) for s in (stored or {}).get("segments", [])]
    if old and all(_setting(old[-1], name) == segment[name] for name in COMPUTE_FIELDS):
        return old
    kept = [s for s in old if s["from_iteration"] < segment["from_iteration"]]
    return [*kept, dict(segment)]


def changed_compute(stored: Mapping[str, Any], segment: Mapping[str, Any]) -> list[str]:
    """``"name: old -> new"`` for each compute setting of ``segment`` that differs from the last
    stored segment's (empty for a new run)."""
    last = (stored.get("segments") or [{}])[-1]
    return [
        f"{n}: {_setting(last, n)!r} -> {segment[n]!r}"
        for n in COMPUTE_FIELDS
        if last and _setting(last, n) != segment[n]
    ]


def _setting(segment: Mapping[str, Any], name: str) -> Any:
    """A compute setting of a stored segment (what it ran with where the segment predates it)."""
    return segment.get(name, _COMPUTE_BEFORE.get(name))


def check_rerun(folder: RunFolder, config: RunConfig) -> None:
    """Refuse a folder that is not a run, or a rerun that changes what may not change."""
    if folder.root.exists() and not folder.root.is_dir():
        raise IncompatibleRunError(f"{str(folder.root)!r} exists and is not a folder")
    if not folder.config.is_file():
        if folder.root.is_dir() and any(not p.name.startswith(".") for p in folder.root.iterdir()):
            raise IncompatibleRunError(
                f"{str(folder.root)!r} is not empty and is not a training run folder (no config.json)"
            )
        return
    stored = from_mapping(folder.read_config()["config"])
    changes = incompatible_changes(stored, config)
    if changes:
        raise IncompatibleRunError(
            f"{str(folder.root)!r} holds a run with a different configuration; only {sorted(MUTABLE_FIELDS)} may"
            f" change on a rerun. Differences: {'; '.join(changes)}. Use another --out."
        )
