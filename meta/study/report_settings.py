"""The "Settings" section of ``report.html``: what was run, in a form a reader takes in at a
glance. From ``preset.json`` (written by :func:`meta.study.folder.preset_record`): the preset's
description and notes, a table of the training settings that matter per few-shot setting (from
each setting's resolved MAML run) and per meta-RL environment (from its MAML-TRPO run), a table of
how many test tasks each measurement uses, and a link to ``preset.json`` itself for everything
else. A ``preset.json`` of another shape (older,
hand-written) gives what it has; a folder without one says so.

Imports: :mod:`meta.core.names`, :mod:`meta.study` (schema, labels, report_blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from meta.core.names import META_LEARNERS
from meta.study.labels import join_words, label, measure_label
from meta.study.report_blocks import Block, Bullets, Table, Text
from meta.study.schema import BODY_REGIMES, COLUMNS, RL_NAMES, folder_of, ordered, setting_label

Run = Mapping[str, Any]

#: Training settings per few-shot setting: (row, value of the setting's runs).
_TRAINING: tuple[tuple[str, Callable[[Run, Sequence[Run]], Any]], ...] = (
    ("meta-training iterations", lambda run, runs: run["config"].get("iterations")),
    ("seeds of MAML and ANIL", lambda run, runs: _seeds(runs, ("maml", "anil"))),
    ("filters per conv layer", lambda run, runs: run["config"].get("filters")),
    ("query examples per class", lambda run, runs: run["config"].get("queries")),
    ("tasks per meta-batch", lambda run, runs: run["config"].get("meta_batch_size")),
    ("meta learning rate", lambda run, runs: run["config"].get("meta_lr")),
    ("inner loop in training", lambda run, runs: _steps(run["config"], "inner")),
    ("inner loop at test time", lambda run, runs: _steps(run["config"], "test_inner")),
    ("checkpoints of Figure 3", lambda run, runs: ", ".join(str(i) for i in run.get("save_at", ()))),
    ("Table 5 bodies", lambda run, runs: _baselines(runs)),
)
#: Training settings per meta-RL environment: (row, value of the resolved ``config`` of its first run).
_RL_TRAINING: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("meta-iterations", lambda c: c.get("iterations")),
    ("tasks x trajectories per meta-batch", lambda c: _joined(c, "meta_batch_size", "trajectories", sep=" x ")),
    ("horizon (steps per episode)", lambda c: c.get("horizon")),
    ("inner step in training", lambda c: f"{c.get('inner_lr')}, {'first' if c.get('first_order') else 'second'} order"),
    (
        "inner steps at test time: count, first, later",
        lambda c: _joined(c, "test_inner_steps", "test_inner_lr", "test_later_lr"),
    ),
    ("TRPO: max KL, CG iterations, damping", lambda c: _joined(c, "max_kl", "cg_iters", "cg_damping")),
    ("policy: hidden units, nonlinearity", lambda c: _joined(c, "hidden", "nonlinearity")),
)
#: How many test tasks each meta-RL measurement uses: (row, key of the preset's ``rl`` settings).
_RL_MEASUREMENT: tuple[tuple[str, str], ...] = (
    ("test tasks per return (Table 2 RL)", "eval_tasks"),
    ("test tasks per similarity before vs after adaptation (RL figure)", "similarity_tasks"),
)
#: How many test tasks each measurement uses: (row, key of the preset's settings).
_MEASUREMENT: tuple[tuple[str, str], ...] = (
    ("test tasks per accuracy (Tables 1, 2, 4, 5)", "eval_tasks"),
    ("test tasks per accuracy at a checkpoint (Figure 3)", "early_eval_tasks"),
    ("test tasks per similarity before vs after adaptation (Figures 2, 3)", "snapshot_tasks"),
    ("test tasks per similarity between two models (Table 3)", "similarity_tasks"),
    ("query examples per class of those tasks", "analysis_queries"),
)


def _joined(config: Mapping[str, Any], *keys: str, sep: str = ", ") -> str:
    """The values of ``keys`` in ``config``, joined: ``"0.01, 10, 1e-05"``."""
    return sep.join(str(config.get(key)) for key in keys)


def _seeds(runs: Sequence[Run], algorithms: Sequence[str]) -> str:
    """The seeds of the runs of ``algorithms``, e.g. ``"0, 1, 2"``."""
    return ", ".join(str(s) for s in sorted({r.get("seed") for r in runs if r.get("algorithm") in algorithms}))


def _steps(config: Mapping[str, Any], prefix: str) -> str:
    """``"5 steps of 0.08"`` from ``<prefix>_steps`` and ``<prefix>_lr``."""
    steps, rate = config.get(f"{prefix}_steps"), config.get(f"{prefix}_lr")
    return f"{steps} steps of {rate}" if steps is not None else ""


def _baselines(runs: Sequence[Run]) -> str:
    """The body-training baselines trained in a setting, with their seeds, or that there are none."""
    trained = {r.get("algorithm") for r in runs}
    others = [a for a in ordered(trained, BODY_REGIMES) if a not in META_LEARNERS]
    if not others:
        return "not trained"
    return f"{join_words(label('regime', a) for a in others)}; seeds {_seeds(runs, others)}"


def _training_table(runs: Sequence[Run]) -> pd.DataFrame:
    """A row per training setting of :data:`_TRAINING`, a column per few-shot setting (its first
    MAML run, else its first run)."""
    by_setting: dict[str, list[Run]] = {}
    for run in runs:
        if isinstance(run.get("config"), Mapping):
            key = setting_label(run.get("dataset"), run.get("ways"), run.get("shots"))
            by_setting.setdefault(key, []).append(run)
    columns = {}
    for key, group in by_setting.items():
        first = next((r for r in group if r.get("algorithm") == "maml"), group[0])
        columns[key] = [value(first, group) for _, value in _TRAINING]
    table = pd.DataFrame(columns, index=[row for row, _ in _TRAINING])
    table = table[[bool(any(str(v) for v in values)) for values in table.itertuples(index=False)]]
    return table.rename_axis("setting").reset_index().fillna("")


def _measurement_table(settings: Mapping[str, Any], device: Any, names: Sequence[str]) -> pd.DataFrame:
    """A row per measurement setting present of the studies whose result files ``names`` (CSV
    stems) the report holds: the few-shot study's (:data:`_MEASUREMENT`), the meta-RL study's
    (:data:`_RL_MEASUREMENT`, from the preset's ``rl``); the measures and the device."""
    few_shot = any(name not in RL_NAMES for name in names)
    rows = [(row, settings[key]) for row, key in _MEASUREMENT if few_shot and key in settings]
    rl = settings.get("rl")
    if isinstance(rl, Mapping) and any(name in RL_NAMES for name in names):
        rows += [(row, rl[key]) for row, key in _RL_MEASUREMENT if key in rl]
    if settings.get("measures"):
        rows.append(("similarity measures", join_words(measure_label(m) for m in settings["measures"])))
    if device:
        rows.append(("device", device))
    return pd.DataFrame(rows, columns=["setting", "value"]).astype(str)


def _rl_training_table(runs: Sequence[Run]) -> pd.DataFrame:
    """A row per setting of :data:`_RL_TRAINING`, a column per environment (its first MAML-TRPO
    run, else its first run), with the seeds of each environment's runs."""
    by_env: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        config = run.get("config")
        if isinstance(config, Mapping):
            by_env.setdefault(str(config.get("env")), []).append(config)
    columns = {}
    for env, configs in by_env.items():
        first = next((c for c in configs if c.get("algorithm") == "maml-trpo"), configs[0])
        seeds = ", ".join(str(s) for s in sorted({c.get("seed") for c in configs}))
        columns[env] = [*(value(first) for _, value in _RL_TRAINING), seeds]
    table = pd.DataFrame(columns, index=[*(row for row, _ in _RL_TRAINING), "seeds"], dtype=object)
    return table.rename_axis("setting").reset_index().astype(str)


def _files_text(out_dir: Path, tables: Mapping[str, pd.DataFrame], names: Sequence[str]) -> str:
    """Which of the result files ``names`` (CSV stems) the folder holds."""
    missing = [f"{folder_of(name)}/{name}.csv" for name in names if name not in tables]
    found = f"{len(names) - len(missing)} of the {len(names)} result files found"
    return f"Folder {out_dir.resolve()}: {found}" + (f"; missing: {', '.join(missing)}." if missing else ".")


def settings_blocks(
    out_dir: Path,
    preset: Mapping[str, Any] | None,
    tables: Mapping[str, pd.DataFrame],
    names: Sequence[str] = tuple(COLUMNS),
) -> list[Block]:
    """The Settings section: the folder and which of its result files ``names`` (the CSV stems of
    what its preset studies) it holds, the preset's description, its training and measurement
    settings as two compact tables, its notes, and a link to ``preset.json``."""
    blocks: list[Block] = [Text(_files_text(out_dir, tables, names))]
    if preset is None:
        return [
            *blocks,
            Text("This folder has no preset.json, so the settings of this reproduction are unknown.", "missing"),
        ]
    if preset.get("description"):
        blocks.append(Text(f"Preset {preset.get('preset', '')}: {preset['description']}"))
    runs = [r for r in preset.get("runs", ()) if isinstance(r, Mapping)]
    training = _training_table(runs)
    if not training.empty:
        blocks.append(Table(training, "Training, per few-shot setting (the resolved settings of its MAML run)"))
    rl_runs = [r for r in preset.get("rl_runs", ()) if isinstance(r, Mapping)]
    if rl_runs:
        blocks.append(Table(_rl_training_table(rl_runs), "Meta-RL training, per environment (its MAML-TRPO run)"))
    settings = preset.get("settings")
    if isinstance(settings, Mapping):
        blocks.append(Table(_measurement_table(settings, preset.get("device"), names), "Measurement"))
    if preset.get("notes"):
        blocks.append(Bullets(tuple(str(note) for note in preset["notes"])))
    blocks.append(
        Text("Every setting of every run, as the reproduction resolved it:", "note", ("preset.json", "preset.json"))
    )
    return blocks
