"""The output folder of a reproduction and the data it reads: ``preset.json``
(:func:`preset_record`), the check that a folder holds this preset's results or none
(:func:`check_folder`), the check that every data set read from the user's files has a folder
(:func:`check_data`, :func:`parse_data_roots`), and the stage markers (:func:`stage_marker`).

``preset.json`` records the resolved preset; a folder that holds another preset's results (or
this preset's with other settings) is refused unless ``force``, which deletes only what the
pipeline writes (:data:`OWNED`).

Imports: :mod:`meta.data.registry`, :mod:`meta.run.config`, :mod:`repsim.io`, :mod:`meta.study`
(plan, presets, stages).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meta.data.registry import ROOT_ENV
from meta.run.config import MUTABLE_FIELDS
from meta.study.plan import EXTERNAL_DATA, Plan, ReproductionError
from meta.study.presets import StudyPreset
from meta.study.stages import STAGE_LIST
from repsim.io import read_json

FORMAT = "meta-reproduction"
VERSION = 1
#: What the pipeline writes into its output folder (and ``force`` removes).
OWNED: tuple[str, ...] = ("preset.json", "stages", "runs", "snapshots", "tables", "figures", "report.html")
#: Preset fields that may change without invalidating the results already in a folder.
_NOT_IDENTITY = ("description", "notes", "device")
#: How the numbers of the CSVs are computed (written to ``preset.json``).
_STATISTICS = {
    "accuracy": "percent; per seed mean over the fixed test tasks and ci95 = 1.96 * std / sqrt(n_tasks)"
    " (population std); over seeds the mean, the mean ci95 and std_seeds (ddof=1)",
    "similarity": "per task the layer's similarity before vs after the last inner step on the query set;"
    " mean and ci95 = 1.96 * std / sqrt(n_tasks) over tasks, then over seeds as accuracies",
    "table3": "mean over tasks per model pair, then mean and std (ddof=1) over pairs; MAML-ANIL pairs"
    " of different seeds when there are two or more",
    "maml_accuracy": "Tables 2 and 4: row 'none' of MAML's freezing ablation (every layer adapts)",
}


def stage_marker(out: Path, stage: str) -> Path:
    """``out/stages/<stage>.done``: written once the stage's outputs are."""
    return out / "stages" / f"{stage}.done"


# ---------------------------------------------------------------------------------------------
# preset.json
# ---------------------------------------------------------------------------------------------


def _run_record(plan: Plan) -> list[dict[str, Any]]:
    """Every run of the plan: its name, setting, seed, iterations and resolved configuration."""
    return [
        {
            "name": r.name,
            "algorithm": r.algorithm,
            "dataset": r.setting.dataset,
            "ways": r.setting.ways,
            "shots": r.setting.shots,
            "seed": r.seed,
            "iterations": r.config.iterations,
            "save_at": list(r.config.save_at),
            "config": r.config.as_dict(),
        }
        for r in plan.runs
    ]


def preset_record(plan: Plan) -> dict[str, Any]:
    """What ``preset.json`` holds: the preset, every run's resolved configuration and the jobs of
    every stage."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "preset": plan.preset.name,
        "description": plan.preset.description,
        "notes": list(plan.preset.notes),
        "settings": {k: v for k, v in plan.preset.as_dict().items() if k not in ("name", "description", "notes")},
        "device": plan.device,
        "runs": _run_record(plan),
        "stages": {s.name: {"description": s.description, "jobs": [j.key for j in s.jobs(plan)]} for s in STAGE_LIST},
        "statistics": _STATISTICS,
    }


def identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a preset record that decide the results (not texts, device or data paths)."""
    settings = {k: v for k, v in record.get("settings", {}).items() if k not in _NOT_IDENTITY}
    runs = [
        {**run, "config": {k: v for k, v in run.get("config", {}).items() if k not in MUTABLE_FIELDS}}
        for run in record.get("runs", [])
    ]
    return {"preset": record.get("preset"), "settings": settings, "runs": runs}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested records."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [
            d
            for k in sorted(set(old) | set(new), key=str)
            for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _folder_problem(out: Path, record: Mapping[str, Any]) -> str | None:
    """Why ``out`` cannot take the results of ``record`` as it is (None when it can)."""
    path = out / "preset.json"
    if not path.is_file():
        if any((out / name).exists() for name in OWNED):
            found = ", ".join(n for n in OWNED if (out / n).exists())
            return f"{str(out)!r} has reproduction outputs ({found}) but no preset.json"
        return None
    old = read_json(path)
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        return f"{str(path)!r} is not a reproduction record"
    if old.get("preset") != record["preset"]:
        return f"{str(out)!r} holds the results of preset {old.get('preset')!r}, not {record['preset']!r}"
    changed = _differences(identity(old), identity(record))
    if changed:
        return (
            f"{str(out)!r} holds results of preset {record['preset']!r} with other settings"
            f" ({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''})"
        )
    return None


def check_folder(out: Path, record: Mapping[str, Any], *, force: bool) -> None:
    """Refuse (:class:`ReproductionError`) a folder that holds another preset's results, or
    results of other settings, unless ``force``, which then deletes them (only the names of
    :data:`OWNED`)."""
    problem = _folder_problem(out, record)
    if problem is None:
        return
    if not force:
        raise ReproductionError(f"{problem}. Use another --out, or --force to delete those results and start over.")
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    print(f"[reproduce] --force: removed the previous results in {out} ({problem})", flush=True)


def _datasets(preset: StudyPreset) -> list[str]:
    """The preset's data sets, each once, in order."""
    return list(dict.fromkeys(s.dataset for s in preset.settings))


def _where_hint(dataset: str) -> str:
    """How to give a data set's folder."""
    return f"pass --data-root DIR (or --data-root {dataset}=DIR) or set ${ROOT_ENV[dataset]}"


def check_data(plan: Plan) -> None:
    """Every data set read from the user's files has a folder: ``--data-root`` or the
    environment variable (:class:`ReproductionError` naming both otherwise)."""
    for dataset in _datasets(plan.preset):
        if dataset not in EXTERNAL_DATA:
            continue
        roots = {r.config.data_root for r in plan.runs if r.setting.dataset == dataset}
        root = next(iter(roots)) or os.environ.get(ROOT_ENV[dataset])
        if not root:
            raise ReproductionError(
                f"the {plan.preset.name!r} preset needs the {dataset} data set: {_where_hint(dataset)}"
            )
        if not Path(root).is_dir():
            raise ReproductionError(f"the {dataset} data folder {root!r} does not exist: {_where_hint(dataset)}")


def parse_data_roots(items: Sequence[str], preset: StudyPreset) -> dict[str, str]:
    """``--data-root`` values as ``{data set: folder}``: ``DATASET=DIR`` for one data set, or a
    bare ``DIR`` for the preset's data set (ValueError when the preset reads several data sets
    from files)."""
    datasets = _datasets(preset)
    roots: dict[str, str] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if sep and name in (*EXTERNAL_DATA, "glyphs", "synthetic"):
            roots[name] = folder
            continue
        external = [d for d in datasets if d in EXTERNAL_DATA]
        if len(external) > 1:
            raise ValueError(
                f"the {preset.name!r} preset reads {' and '.join(external)}: give --data-root as"
                f" DATASET=DIR, e.g. --data-root {external[0]}={item}"
            )
        roots.update(dict.fromkeys(external or datasets, item))
    return roots


def _data_source(plan: Plan, dataset: str) -> str:
    """Where ``dataset`` comes from, or why it cannot be read (for the printed plan)."""
    root = next(r.config.data_root for r in plan.runs if r.setting.dataset == dataset)
    if dataset not in EXTERNAL_DATA:
        return "generated on this machine" + (f" (cache {root})" if root else "")
    root = root or os.environ.get(ROOT_ENV[dataset])
    if root and Path(root).is_dir():
        return root
    hint = f"pass --data-root DIR or set ${ROOT_ENV[dataset]}"
    return f"NOT FOUND ({root!r}); {hint}" if root else f"NOT GIVEN: {hint}"


def data_lines(plan: Plan) -> list[str]:
    """``data: <data set>: <where from>`` for each data set of the plan."""
    return [f"data: {dataset}: {_data_source(plan, dataset)}" for dataset in _datasets(plan.preset)]
