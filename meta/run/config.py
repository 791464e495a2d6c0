"""Run configuration: one dataclass of every hyperparameter, the paper defaults filled in,
config files and command-line overrides.

Precedence, lowest first: the paper defaults of the setting
(:data:`meta.run.paper_defaults.PAPER_DEFAULTS`) and the field defaults below < the run's stored
``config.json`` (when resuming) < a config file (``--config FILE``, JSON or TOML, keys as the
field names with ``_`` or ``-``) < the command line. ``glyphs`` and ``synthetic`` take the
Omniglot defaults; a setting the paper does not have (e.g. 3-way) takes those of the nearest
setting of its data set (``config.json`` records which, under ``"paper_defaults"``).

Imports: :mod:`meta.core` and :mod:`meta.data` (and :mod:`meta.run.paper_defaults`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from meta.core.models import BATCH_NORM_MODES, HEAD_INITS, PADDINGS, VARIANTS
from meta.core.names import LAYERS, META_LEARNERS, REGIMES
from meta.core.paths import DEFAULT_CHUNK, PATHS, default_path
from meta.data import DATASETS, FewShotSplit, load_split
from meta.run.paper_defaults import PaperDefaults, nearest_paper_defaults
from repsim.devices import check_device

ALGORITHMS: tuple[str, ...] = REGIMES


#: Fields that a rerun on an existing run folder may change: length, evaluation, logging,
#: where the data lives, and how the machine computes (``device``, ``threads``, ``path``,
#: ``chunk``: recorded per segment, :mod:`meta.run.recipe`). Everything else must match.
MUTABLE_FIELDS: frozenset[str] = frozenset(
    {
        "iterations",
        "test_queries",
        "test_inner_lr",
        "test_inner_steps",
        "val_every",
        "val_tasks",
        "checkpoint_every",
        "save_at",
        "log_every",
        "progress",
        "device",
        "threads",
        "path",
        "chunk",
        "data_root",
        "cache_dir",
    }
)


def _option(help_text: str, default: Any = None, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class RunConfig:
    """Every hyperparameter of a training run (``None``: the paper preset's value)."""

    algorithm: str = _option(f"training regime, one of {', '.join(ALGORITHMS)}", "maml")
    dataset: str = _option(f"data set, one of {', '.join(DATASETS)} (synthetic: for tests only)", "glyphs")
    ways: int = _option("N classes per task", 5)
    shots: int = _option("K support examples per class", 1)
    iterations: int | None = _option("meta-training iterations (preset: the reference runs')")
    seed: int = _option("seed of the initial weights and of the training tasks", 0)
    queries: int | None = _option("query examples per class at training (preset: K Omniglot, 15 miniImageNet)")
    test_queries: int | None = _option("query examples per class at validation and test (preset: K)")
    meta_batch_size: int | None = _option("tasks per meta-update (preset)")
    batch_size: int = _option("images per minibatch (multiclass only)", 128)
    meta_lr: float | None = _option("outer Adam learning rate (preset: 1e-3)")
    grad_clip: float | None = _option(
        "clip each meta-gradient entry to [-v, v] before Adam, 0: no clipping (preset: 10 miniImageNet, 0 Omniglot)"
    )
    inner_lr: float | None = _option("inner learning rate at training (preset)")
    inner_steps: int | None = _option("inner steps at training (preset)")
    test_inner_lr: float | None = _option("inner learning rate at validation/test (preset)")
    test_inner_steps: int | None = _option("inner steps at validation/test (preset)")
    freeze_inner: tuple[str, ...] = _option("layers frozen in the inner loop at training, e.g. conv1,conv2", ())
    adapt_norm: bool = _option(
        "batch-norm shifts adapt in the inner loop too (the reference MAML code: outer loop only)", False
    )
    variant: str | None = _option(f"conv4 variant, one of {', '.join(VARIANTS)} (default: by data set)")
    filters: int | None = _option("conv4 filters (default: the variant's)")
    padding: str | None = _option(
        f"conv4 padding, one of {', '.join(PADDINGS)} (preset: same, TensorFlow's, as the reference)"
    )
    head_init: str | None = _option(
        f"initial head weights, one of {', '.join(HEAD_INITS)} (default: the variant's, normal for Omniglot's"
        " conv4 and xavier for miniImageNet's, as the reference)"
    )
    batch_norm: str = _option(f"batch-norm mode, one of {', '.join(BATCH_NORM_MODES)}", "batch")
    path: str | None = _option(
        f"meta-gradient execution path, one of {', '.join(PATHS)} (default: hybrid; loop for miniImageNet)"
    )
    chunk: int = _option("tasks computed together by the grouped and hybrid paths", DEFAULT_CHUNK)
    data_root: str | None = _option("folder of the data set's files (omniglot, miniimagenet)")
    protocol: str | None = _option("class split protocol of the data set (default: its first)")
    image_size: int | None = _option("image side (default: the data set's)")
    cache_dir: str | None = _option("decoded-image cache folder")
    device: str = _option("torch device, e.g. cpu or cuda", "cpu")
    threads: int | None = _option("torch intra-op threads on the CPU (0: leave torch's choice)", 1)
    val_every: int = _option("validate every this many iterations (and at the end)", 500)
    val_tasks: int = _option("fixed validation tasks", 100)
    checkpoint_every: int = _option("write a resumable checkpoint every this many iterations", 100)
    save_at: tuple[int, ...] = _option("keep copies of the weights at these iterations, e.g. 1000,5000", ())
    log_every: int = _option("metrics row every this many iterations (means over them)", 10)
    progress: bool = _option("show a progress bar", True)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))


# --------------------------------------------------------------------------- values


def _field_kind(name: str) -> str:
    """``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"layers"`` or ``"ints"``."""
    annotation = next(f.type for f in fields(RunConfig) if f.name == name)
    for kind in ("tuple[str", "tuple[int", "bool", "float", "int", "str"):
        if str(annotation).startswith(kind):
            return {"tuple[str": "layers", "tuple[int": "ints"}.get(kind, kind)
    raise AssertionError(f"unhandled annotation {annotation} of {name}")


def parse_layers(value: Any, what: str = "layers") -> tuple[str, ...]:
    """Layer names from ``"conv1,conv2"``, ``"conv1-3"`` (conv1..conv3), ``"none"``/``""`` or a
    list; in forward order; ValueError for unknown names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in (str(i).strip() for i in items):
        if item in ("", "none"):
            continue
        if item.startswith("conv") and "-" in item:
            first, last = item.removeprefix("conv").split("-", 1)
            if not (first.isdigit() and last.isdigit() and int(first) <= int(last)):
                raise ValueError(f"{what}: bad layer range {item!r} (expected e.g. conv1-3)")
            names += [f"conv{i}" for i in range(int(first), int(last) + 1)]
        else:
            names.append(item)
    unknown = sorted(set(names) - set(LAYERS))
    if unknown:
        raise ValueError(f"{what}: unknown layers {unknown}; layers are {', '.join(LAYERS)}")
    return tuple(name for name in LAYERS if name in names)


def _parse_ints(value: Any, what: str) -> tuple[int, ...]:
    items = [i for i in value.split(",") if i.strip()] if isinstance(value, str) else list(value)
    try:
        out = tuple(sorted({int(i) for i in items}))
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected integers separated by commas, got {value!r}") from None
    if any(i < 1 for i in out):
        raise ValueError(f"{what}: iterations must be >= 1, got {value!r}")
    return out


def coerce(name: str, value: Any) -> Any:
    """``value`` (from a file or the command line) as the type of field ``name``."""
    if name not in FIELD_NAMES:
        raise ValueError(f"unknown configuration key {name!r}; known keys: {', '.join(FIELD_NAMES)}")
    kind = _field_kind(name)
    if value is None:
        return None
    if kind == "layers":
        return parse_layers(value, name)
    if kind == "ints":
        return _parse_ints(value, name)
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    caster = {"int": int, "float": float, "str": str}[kind]
    if kind in ("int", "float") and isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        out = caster(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {kind}, got {value!r}") from None
    if kind == "int" and isinstance(value, float) and out != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return out


def from_mapping(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """``base`` (default: :class:`RunConfig` defaults) with the keys of ``values`` (``-`` or
    ``_`` in names) applied; unknown keys raise ValueError."""
    changes = {key.replace("-", "_"): value for key, value in values.items()}
    return (base or RunConfig()).replace(**{k: coerce(k, v) for k, v in changes.items()})


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Keys and values of a JSON (``.json``) or TOML (any other suffix) config file. A run
    folder's ``config.json`` (with its ``"config"`` section) is accepted too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {str(path)!r} is not valid JSON: {err}") from None
    else:
        data = _read_toml(path, text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a table/object of settings")
    return dict(data["config"]) if isinstance(data.get("config"), dict) else data


def _read_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ValueError(f"reading the TOML file {str(path)!r} needs Python >= 3.11; use a .json config") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None


# --------------------------------------------------------------------------- resolution


def resolve(config: RunConfig) -> tuple[RunConfig, PaperDefaults]:
    """``config`` with every ``None`` hyperparameter filled from the preset, checked. Returns the
    resolved config and the preset used. Raises ValueError naming the bad value."""
    check(config)
    p = nearest_paper_defaults(config.dataset, config.ways, config.shots)
    variant = config.variant or ("miniimagenet" if config.dataset == "miniimagenet" else "omniglot")
    defaults = {
        "iterations": p.iterations,
        "queries": p.queries,
        "test_queries": p.test_queries,
        "grad_clip": p.grad_clip,
        "padding": p.padding,
        "meta_batch_size": p.meta_batch_size,
        "meta_lr": p.meta_lr,
        "inner_lr": p.train_inner.lr,
        "inner_steps": p.train_inner.steps,
        "test_inner_lr": p.test_inner.lr,
        "test_inner_steps": p.test_inner.steps,
        "variant": variant,
        "path": default_path(variant),
    }
    resolved = config.replace(**{k: v for k, v in defaults.items() if getattr(config, k) is None})
    check(resolved)
    return resolved, p


def check(config: RunConfig) -> None:
    """ValueError naming the first bad value of ``config`` (``None`` values are allowed)."""
    choices = {
        "algorithm": ALGORITHMS,
        "batch_norm": BATCH_NORM_MODES,
        "path": (*PATHS, None),
        "variant": (*VARIANTS, None),
        "padding": (*PADDINGS, None),
        "head_init": (*HEAD_INITS, None),
    }
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name}={getattr(config, name)!r} is not one of {[a for a in allowed if a]}")
    device = check_device(config.device, here=False)  # whether this machine has it: checked where it runs
    if config.path == "compiled" and device.type != "cpu":
        raise ValueError(
            f"path 'compiled' runs on CPUs only (a package of inductor's CPU code); on {config.device!r} use"
            " --path hybrid, grouped or loop"
        )
    positive = (
        "ways",
        "shots",
        "iterations",
        "queries",
        "test_queries",
        "meta_batch_size",
        "batch_size",
        "chunk",
        "filters",
        "image_size",
        "val_every",
        "val_tasks",
        "checkpoint_every",
        "log_every",
    )
    for name in positive:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name in ("seed", "inner_steps", "test_inner_steps", "threads"):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    for name in ("meta_lr", "inner_lr", "test_inner_lr", "grad_clip"):
        value = getattr(config, name)
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if config.algorithm == "anil" and config.freeze_inner:
        raise ValueError("anil already adapts only the head; --freeze-inner applies to maml and fomaml")
    if set(config.freeze_inner) == set(LAYERS):
        raise ValueError("--freeze-inner freezes every layer: nothing would adapt")
    if config.freeze_inner and config.algorithm not in META_LEARNERS:
        raise ValueError(f"--freeze-inner applies to maml, fomaml and anil, not {config.algorithm}")


def adapted_layers(algorithm: str, frozen: Sequence[str]) -> tuple[str, ...]:
    """Layers that adapt in the inner loop: ANIL the head, otherwise every layer not frozen."""
    if algorithm == "anil":
        return ("head",)
    return tuple(name for name in LAYERS if name not in frozen)


def incompatible_changes(stored: RunConfig, new: RunConfig) -> list[str]:
    """``"name: old -> new"`` for each field outside :data:`MUTABLE_FIELDS` that differs."""
    return [
        f"{name}: {getattr(stored, name)!r} -> {getattr(new, name)!r}"
        for name in FIELD_NAMES
        if name not in MUTABLE_FIELDS and getattr(stored, name) != getattr(new, name)
    ]


# --------------------------------------------------------------------------- command line


def add_config_arguments(
    parser: argparse.ArgumentParser, extra_choices: Mapping[str, Sequence[str]] | None = None
) -> None:
    """One ``--option`` per :class:`RunConfig` field (default: absent, so that a config file or a
    stored config fills it). ``extra_choices`` adds accepted values to an option with choices
    (the command line's ``--algorithm`` also takes the meta-RL algorithms)."""
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_kind(f.name)
        if kind == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=f.metadata["help"]
            )
        else:
            default = f.default if f.default not in (None, ()) else None
            suffix = "" if default is None else f" (default: {default})"
            choices = {"algorithm": ALGORITHMS, "dataset": DATASETS}.get(f.name)
            if choices is not None and extra_choices and f.name in extra_choices:
                choices = (*choices, *extra_choices[f.name])
            parser.add_argument(
                flag,
                default=argparse.SUPPRESS,
                choices=choices,
                metavar=None if choices else f.name.upper(),
                help=f.metadata["help"] + suffix,
            )


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """``base`` < ``args.config`` file < the options given on the command line."""
    config = base or RunConfig()
    if getattr(args, "config", None):
        config = from_mapping(read_config_file(args.config), config)
    given = {name: getattr(args, name) for name in FIELD_NAMES if hasattr(args, name)}
    return from_mapping(given, config)


# --------------------------------------------------------------------------- data


def load_run_split(config: RunConfig, split: str, *, progress: bool = True) -> FewShotSplit:
    """One split of the run's data set (:func:`meta.data.load_split`)."""
    return load_split(
        config.dataset,
        split,
        root=config.data_root,
        protocol=config.protocol,
        image_size=config.image_size,
        cache_dir=config.cache_dir,
        progress=progress,
    )
