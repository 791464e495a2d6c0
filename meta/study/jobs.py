"""The work of the reproduction's stages, one job at a time: load a data set, train a run,
evaluate it, write an adaptation snapshot, measure similarity before vs after adaptation or
between two models.

Every job is a module-level function of plain-data arguments with a plain-data result, so that it
pickles into a worker process (:mod:`meta.study.executor` preloads this module in its
``forkserver``). A job whose output file exists returns it without recomputing (reruns resume).
A worker loads each data set once (:func:`load_split_once`).

Imports: :mod:`meta.core.names`, :mod:`meta.run`, :mod:`repsim` (similarity), :mod:`meta.study.plan`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meta.core.names import LAYERS
from meta.run.config import RunConfig, from_mapping, load_run_split
from meta.run.evaluate import LoadedRun, ablation_tag, evaluation_tasks, run_procedure
from meta.run.folder import RunFolder
from meta.study.plan import EXTERNAL_DATA, ReproductionError

#: The configuration fields that decide which data a run loads.
DATA_FIELDS: tuple[str, ...] = ("dataset", "data_root", "protocol", "image_size", "cache_dir")


@functools.lru_cache(maxsize=8)
def _cached_split(data: tuple[tuple[str, Any], ...], split: str) -> Any:
    """The split of the data set described by ``data`` (:data:`DATA_FIELDS` pairs), cached."""
    return load_run_split(from_mapping(dict(data)), split, progress=False)


def load_split_once(config: RunConfig, split: str) -> Any:
    """A split of the run's data set, loaded once per process."""
    return _cached_split(tuple((k, getattr(config, k)) for k in DATA_FIELDS), split)


def data_job(config: Mapping[str, Any]) -> dict[str, Any]:
    """Load (generate or decode into the cache) every split of a run's data set; returns each
    split's name and number of classes."""
    c = from_mapping(config)
    try:
        splits = {s: load_split_once(c, s) for s in ("train", "val", "test")}
    except (ValueError, OSError) as err:
        hint = f" (pass --data-root DIR for {c.dataset})" if c.dataset in EXTERNAL_DATA else ""
        raise ReproductionError(f"cannot load the {c.dataset} data set: {err}{hint}") from err
    return {name: {"name": s.name, "classes": s.n_classes} for name, s in splits.items()}


def train_job(config: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    """Train (or resume, or find finished) one run; returns its iterations and best validation."""
    from meta.run.train import train

    c = from_mapping(config)
    splits = {s: load_split_once(c, s) for s in ("train", "val")}
    result = train(c, run_dir, splits=splits)
    return {"iterations": result.iterations, "best": result.best}


#: Evaluation kinds: the freezing ablation, NIL-testing, the run's own test procedure, and every
#: layer adapting (the MAML procedure on any body).
EVAL_KINDS: tuple[str, ...] = ("freezing", "nil", "default", "adapt-all")


def eval_path(
    run_dir: str | Path, config: RunConfig, *, kind: str, weights: str, tasks: int, steps: int | None = None
) -> Path:
    """Where :func:`meta.run.evaluate.evaluate_run` writes a result of ``kind``
    (:data:`EVAL_KINDS`) with ``steps`` test-time inner steps (``None``: the run's)."""
    if kind == "freezing":
        procedure = ablation_tag("freezing", steps, config)
    else:
        freeze = "none" if kind == "adapt-all" else None
        procedure = run_procedure(config, nil=kind == "nil", freeze=freeze, steps=steps).tag()
    return RunFolder(Path(run_dir)).eval_dir / f"test_{weights}_{tasks}tasks_{procedure}.json"


def evaluate_job(
    config: Mapping[str, Any],
    run_dir: str,
    kind: str,
    weights: str,
    tasks: int,
    device: str,
    steps: int | None = None,
) -> str:
    """One evaluation of a run on the fixed test tasks (skipped when its JSON exists); returns
    the JSON's path."""
    from meta.run.evaluate import evaluate_run

    c = from_mapping(config)
    path = eval_path(run_dir, c, kind=kind, weights=weights, tasks=tasks, steps=steps)
    if path.is_file():
        return str(path)
    result = evaluate_run(
        run_dir,
        tasks=tasks,
        weights=weights,
        nil=kind == "nil",
        freeze="none" if kind == "adapt-all" else None,
        ablation="freezing" if kind == "freezing" else None,
        steps=steps,
        device=device,
        data=load_split_once(c, "test"),
        progress=False,
    )
    if Path(result.json) != path:
        raise RuntimeError(f"meta.run.evaluate wrote {result.json!r}, expected {str(path)!r}: update eval_path")
    return str(path)


def snapshot_job(
    config: Mapping[str, Any], run_dir: str, out_dir: str, weights: str, tasks: int, queries: int, device: str
) -> str:
    """An adaptation snapshot of a run on the first ``tasks`` fixed test tasks with ``queries``
    query examples per class (skipped when its manifest exists; an incomplete one is replaced);
    returns the snapshot folder."""
    from meta.run.snapshot_writer import snapshot_run

    if not (Path(out_dir) / "manifest.json").is_file():
        snapshot_run(
            run_dir,
            out_dir,
            tasks=tasks,
            queries=queries,
            weights=weights,
            device=device,
            data=load_split_once(from_mapping(config), "test"),
            overwrite=True,
            progress=False,
        )
    return out_dir


def adaptation_similarity_job(snapshot_dir: str, measures: Sequence[str]) -> list[dict[str, Any]]:
    """Per task, inner step, layer and measure (``{"task", "step", "layer", "measure", "value"}``
    rows): similarity of the layer before adaptation vs after each inner step on the task's query
    set (:func:`repsim.snapshot_report.report_snapshot`)."""
    from repsim.snapshot_report import report_snapshot

    per_task, _ = report_snapshot(snapshot_dir, measures=list(measures), inputs="query", progress=False)
    return per_task[["task", "step", "layer", "measure", "value"]].to_dict("records")


def cross_similarity_job(
    config: Mapping[str, Any],
    run_a: str,
    run_b: str,
    tasks: int,
    queries: int,
    measures: Sequence[str],
    device: str,
    layers: Sequence[str] = LAYERS,
) -> list[dict[str, Any]]:
    """Per task, layer and measure (``{"task", "layer", "measure", "value"}`` rows): similarity of
    two runs' final models, ``layers`` each, on the task's query set of ``queries`` examples per
    class (one forward pass per task; :func:`repsim.compare.compare_models`)."""
    from repsim.compare import compare_models

    c = from_mapping(config)
    model_a, model_b = (LoadedRun.open(r).model("final", device) for r in (run_a, run_b))
    episodes = evaluation_tasks(c, load_split_once(c, "test"), tasks, queries)
    rows = []
    for t in range(tasks):
        x = episodes[t].query_x
        frame = compare_models(
            model_a,
            model_b,
            x,
            layers_a=list(layers),
            measures=list(measures),
            batch_size=len(x),
            device=device,
            progress=False,
        )
        rows += [
            {"task": t, "layer": r.layer_a, "measure": r.measure, "value": r.value}
            for r in frame.itertuples(index=False)
        ]
    return rows
