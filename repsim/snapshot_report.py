"""Reports on adaptation snapshots: how much each layer changes during inner-loop adaptation.

An adaptation snapshot (docs/formats.md) holds a model spec, the meta-learned weights and, for
each evaluation task, the task's inputs and the full weights after each inner step. For each
task, input set (query and/or support) and inner step ``s = 0..S``, :func:`report_snapshot`
compares every layer's representation under the meta-learned weights ("before") with the one
after step ``s`` (step 0 is the meta-learned weights themselves, similarity 1; step ``S`` is the
adapted model, "after"), on that task's inputs passed **as one batch** (the manifest's
``forward_batch: "whole"``), with batch norm on batch statistics when the manifest says
``batch_norm: "batch"`` (eval mode otherwise).

The summary averages over tasks with a t-interval: for the ``k`` tasks with a value,
``mean +- t_{(1+c)/2, k-1} * s / sqrt(k)`` with ``s`` the sample standard deviation
(``ddof=1``) and ``c`` the confidence (0.95); fewer than two tasks give a NaN half-width. Values
a measure cannot compute (CCA with ``d >= n``, a dead layer) are NaN with a reason in the per-task
table, are left out of the mean, and are counted in ``n_undefined``.

This module reads the folder without importing ``meta``; the model is built from the spec in the
manifest (which, for snapshots written by ``meta``, names ``meta.core.models``).

Imports: :mod:`repsim.capture`, :mod:`repsim.compare`, :mod:`repsim.measures.inputs`,
:mod:`repsim.policies`, :mod:`repsim.progress`, :mod:`repsim.tensor_files` and
:mod:`repsim.weights`; never :mod:`meta` (the module a model spec names is imported by
:func:`repsim.weights.build_model`, by name, when a report runs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from repsim.capture import capture_activations
from repsim.compare import check_choice, layer_pairs, pair_rows, resolve_measures, warn_undefined
from repsim.measures.inputs import CONV_POLICIES
from repsim.policies import Policies
from repsim.progress import progress_bar
from repsim.tensor_files import read_tensor_file
from repsim.weights import apply_state_dict, build_model, load_state_dict

SNAPSHOT_FORMAT = "adaptation-snapshot"
SUPPORTED_VERSIONS = (1,)
#: Values of the ``inputs`` argument of :func:`report_snapshot`.
INPUT_CHOICES = ("query", "support", "both")
#: Columns of the per-task table.
PER_TASK_COLUMNS = ("task", "inputs", "step", "layer", "measure", "value", "conv", "n", "d", "reason")
#: Columns of the summary table.
SUMMARY_COLUMNS = (
    "inputs",
    "step",
    "layer",
    "measure",
    "mean",
    "std",
    "n_tasks",
    "n_undefined",
    "ci_low",
    "ci_high",
    "ci_half_width",
    "confidence",
)
_REQUIRED_KEYS = ("format", "version", "model", "meta_weights", "layers", "tasks")


def _inside(root: Path, relative: Any, what: str) -> Path:
    """``root / relative``, required to be a relative path string, to exist and to stay inside
    ``root``."""
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"{what} must be a path inside the snapshot folder, got {relative!r}")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{what} path {relative!r} points outside the snapshot folder {str(root)!r}")
    if not path.is_file():
        raise ValueError(f"{what} file {relative!r} is missing from the snapshot folder {str(root)!r}")
    return path


def read_manifest(snapshot_dir: str | Path) -> dict[str, Any]:
    """Read and check ``SNAPSHOT_DIR/manifest.json`` (format, version, required keys, every file
    it names). Raises ValueError naming what is wrong."""
    root = Path(snapshot_dir)
    path = root / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{str(root)!r} is not an adaptation snapshot: it has no manifest.json")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{str(path)!r} is not a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the keys {missing}")
    if manifest["format"] != SNAPSHOT_FORMAT or manifest["version"] not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{str(path)!r} is format {manifest['format']!r} version {manifest['version']!r};"
            f" this reader knows {SNAPSHOT_FORMAT!r} versions {SUPPORTED_VERSIONS}"
        )
    if manifest.get("forward_batch", "whole") != "whole":
        raise ValueError(f"forward_batch {manifest['forward_batch']!r} is not supported (only 'whole')")
    if not isinstance(manifest["tasks"], list) or not manifest["tasks"]:
        raise ValueError(f"{str(path)!r} lists no tasks")
    _inside(root, manifest["meta_weights"], "meta_weights")
    for number, task in enumerate(manifest["tasks"]):
        _check_task(root, path, number, task)
    return manifest


def _check_task(root: Path, path: Path, number: int, task: Any) -> None:
    """ValueError naming the task (by position and id) and the field that is missing or wrong."""
    where = f"{str(path)!r}, task {number}" + (f" (id {task.get('id')})" if isinstance(task, dict) else "")
    if not isinstance(task, dict):
        raise ValueError(f"{where} is not an object")
    for field in ("inputs", "steps"):
        if field not in task:
            raise ValueError(f"{where} has no {field!r}")
    if not isinstance(task["steps"], list) or not task["steps"]:
        raise ValueError(f"{where} lists no inner steps")
    _inside(root, task["inputs"], f"{where}: inputs")
    for step in task["steps"]:
        _inside(root, step, f"{where}: step")


def snapshot_model(
    snapshot_dir: str | Path, manifest: Mapping[str, Any], trusted: Iterable[str] = ()
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Build the snapshot's model from its spec and load the meta-learned weights; returns the
    model and those weights. The factory the manifest names must be on the allowlist
    (:func:`repsim.weights.trusted_factories`, plus ``trusted``)."""
    root = Path(snapshot_dir)
    spec = manifest["model"]
    if not isinstance(spec, Mapping) or "factory" not in spec:
        raise ValueError(f"{str(root / 'manifest.json')!r}: 'model' must be an object with a 'factory'")
    model = build_model(spec["factory"], spec.get("kwargs", {}), source=root / "manifest.json", trusted=trusted)
    meta_state = load_state_dict(_inside(root, manifest["meta_weights"], "meta_weights"))
    apply_state_dict(model, meta_state, source=f"meta weights of {str(root)!r}")
    return model, meta_state


def task_inputs(snapshot_dir: str | Path, task: Mapping[str, Any], which: str) -> torch.Tensor:
    """The ``which`` (``"query"`` or ``"support"``) inputs ``(N, C, H, W)`` of a task."""
    path = _inside(Path(snapshot_dir), task["inputs"], f"task {task.get('id')} inputs")
    tensors = read_tensor_file(path)
    if not isinstance(tensors, dict):
        raise ValueError(f"{str(path)!r} holds a {type(tensors).__name__}, not named input tensors")
    key = f"{which}_x"
    if key not in tensors:
        raise ValueError(f"{str(path)!r} has no {key!r} (it has {sorted(tensors)})")
    return tensors[key]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and t-interval of the finite ``values`` (one per task).

    ``mean +- t_{(1+c)/2, k-1} s / sqrt(k)``, ``s`` the ``ddof=1`` standard deviation of the
    ``k`` finite values; the half-width is NaN for ``k < 2``, everything is NaN for ``k = 0``.
    Returns ``mean, std, n_tasks, n_undefined, ci_low, ci_high, ci_half_width``.
    """
    from scipy import stats  # imported here: scipy.stats is slow to import, and `import repsim` need not pay

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    k = finite.size
    mean = float(finite.mean()) if k else math.nan
    std = float(finite.std(ddof=1)) if k >= 2 else math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, k - 1) * std / math.sqrt(k)) if k >= 2 else math.nan
    return {
        "mean": mean,
        "std": std,
        "n_tasks": k,
        "n_undefined": int(v.size - k),
        "ci_low": mean - half,
        "ci_high": mean + half,
        "ci_half_width": half,
    }


def summarize(per_task: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Average a per-task table over tasks: one row per (inputs, step, layer, measure) in order
    of appearance, with the t-interval of :func:`t_interval` (columns :data:`SUMMARY_COLUMNS`)."""
    keys = ["inputs", "step", "layer", "measure"]
    rows = [
        {**dict(zip(keys, group)), **t_interval(part["value"].to_numpy(), confidence), "confidence": confidence}
        for group, part in per_task.groupby(keys, sort=False)
    ]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _task_rows(
    model: nn.Module,
    meta_state: Mapping[str, torch.Tensor],
    root: Path,
    task: Mapping[str, Any],
    sets: Sequence[str],
    layers: Sequence[str],
    fns: Mapping[str, Any],
    *,
    batch_stats: bool,
    conv: str,
    measure_kwargs: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Per-task rows: every step's activations against the meta weights' (step 0 = meta)."""
    inputs = {which: task_inputs(root, task, which) for which in sets}

    def capture() -> dict[str, dict[str, torch.Tensor]]:
        return {
            which: capture_activations(model, x, layers, batch_size=len(x), batch_stats=batch_stats, progress=False)
            for which, x in inputs.items()
        }

    apply_state_dict(model, meta_state, source="meta weights")
    before = capture()
    pairs = {w: layer_pairs(list(acts), list(acts), "diagonal", by_name=True) for w, acts in before.items()}
    rows = []
    for step, path in enumerate([None, *task["steps"]]):
        if path is not None:
            apply_state_dict(model, load_state_dict(root / path), source=f"{path!r}")
        after = before if path is None else capture()
        for which in sets:
            compared = pair_rows(
                before[which], after[which], pairs[which], fns, policies=Policies(conv), measure_kwargs=measure_kwargs
            )
            for row in compared:
                rows.append(
                    {
                        "task": task.get("id"),
                        "inputs": which,
                        "step": step,
                        "layer": row["layer_a"],
                        "measure": row["measure"],
                        "value": row["value"],
                        "conv": row["conv"],
                        "n": row["n"],
                        "d": row["d_a"],
                        "reason": row["reason"],
                    }
                )
    return rows


def report_snapshot(
    snapshot_dir: str | Path,
    *,
    measures: str | Sequence[str] = ("cca", "cka"),
    inputs: str = "query",
    layers: Sequence[str] | None = None,
    conv: str = "channels",
    confidence: float = 0.95,
    measure_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    trusted: Iterable[str] = (),
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Similarity of each layer before vs after each inner step, for every task of a snapshot.

    Args:
        snapshot_dir: an adaptation-snapshot folder (docs/formats.md).
        measures: names in :data:`repsim.measures.MEASURES`.
        inputs: ``"query"``, ``"support"`` or ``"both"`` (each task's set as one batch).
        layers: module paths or globs; default the manifest's ``layers``.
        conv: policy for conv activations (default ``"channels"``: every position of every image
            is a datapoint, as in the paper, so ``n = N*H*W`` is ample for CCA).
        confidence: level of the t-interval over tasks.
        measure_kwargs: extra keyword arguments per measure.
        trusted: model factories to trust besides the allowlist (the command line's ``--model``).
        progress: progress over tasks (:func:`repsim.progress.progress_bar`).

    Returns:
        ``(per_task, summary)``: per_task has :data:`PER_TASK_COLUMNS`, one row per task, input
        set, step (0..S), layer and measure; summary has :data:`SUMMARY_COLUMNS`.
    """
    root = Path(snapshot_dir)
    check_choice(inputs, INPUT_CHOICES, "inputs")
    check_choice(conv, CONV_POLICIES, "conv")
    fns = resolve_measures(measures, measure_kwargs)
    manifest = read_manifest(root)
    model, meta_state = snapshot_model(root, manifest, trusted)
    chosen = list(manifest["layers"] if layers is None else layers)
    sets = ("query", "support") if inputs == "both" else (inputs,)
    rows = []
    for task in progress_bar(manifest["tasks"], desc="snapshot tasks", unit="task", enabled=progress):
        rows += _task_rows(
            model,
            meta_state,
            root,
            task,
            sets,
            chosen,
            fns,
            batch_stats=manifest.get("batch_norm") == "batch",
            conv=conv,
            measure_kwargs=measure_kwargs or {},
        )
    per_task = pd.DataFrame(rows, columns=list(PER_TASK_COLUMNS))
    warn_undefined(per_task, lambda row: f"{row['measure']} of {row['layer']} in task {row['task']} step {row['step']}")
    return per_task, summarize(per_task, confidence=confidence)
