"""Adaptation snapshots: the network before and after each inner step on evaluation tasks.

The folder format is docs/formats.md ("Adaptation snapshot"); ``repsim`` reads it without
importing ``meta``. For each task the test-time inner loop (:func:`meta.core.procedures.evaluate_task`
with ``record_steps=True``) adapts the meta-learned weights on the support set; the full
state_dict after every step is written (frozen layers and buffers keep the meta-learned values),
with the task's support and query tensors. Every file is written atomically and
``manifest.json`` is written last, so a folder with a manifest is complete.

Under ``torchrun`` (``distributed=True``, :mod:`meta.run.distributed`) the tasks are dealt out in
contiguous blocks: each rank adapts its tasks and writes their folders, and rank 0 (which alone
holds the folder's lock and prepares it) writes the meta weights and, once every task's files are
there, the manifest; the folder must then be on a file system every rank reaches.

``query_accuracy_before`` is the query accuracy of the meta-learned weights with no adaptation
(the same head, zero inner steps), ``query_accuracy_after`` the accuracy after the last step
(fractions).

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.run` and :mod:`repsim` (io, progress).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meta.core.inner import InnerLoop
from meta.core.procedures import evaluate_task
from meta.core.reduction import share
from meta.data import Episode
from meta.run.config import load_run_split
from meta.run.distributed import ONE, Single, ranks_for
from meta.run.evaluate import LoadedRun, check_head, evaluation_tasks, run_procedure
from meta.run.lock import FolderLock
from meta.run.state import save_tensors
from repsim.io import write_json
from repsim.progress import progress_bar

SNAPSHOT_FORMAT = "adaptation-snapshot"
SNAPSHOT_VERSION = 1
_TASK_DIR = re.compile(r"task_\d{4,}")


def _prepare_folder(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; an existing non-empty folder needs ``overwrite``, which removes the
    manifest first (the folder is then visibly incomplete) and then the old snapshot's files."""
    if out_dir.exists() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        if not overwrite:
            raise ValueError(
                f"snapshot folder {str(out_dir)!r} is not empty; pass overwrite=True (--overwrite) or another folder"
            )
        _clear_snapshot(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _clear_snapshot(out_dir: Path) -> None:
    """Remove a snapshot's files from ``out_dir``: the manifest first (the folder is then
    visibly incomplete), then the meta weights and the task folders."""
    (out_dir / "manifest.json").unlink(missing_ok=True)
    (out_dir / "meta.safetensors").unlink(missing_ok=True)
    for child in out_dir.iterdir():
        if child.is_dir() and _TASK_DIR.fullmatch(child.name):
            shutil.rmtree(child)


def _task_entry(
    model: nn.Module,
    meta_state: Mapping[str, torch.Tensor],
    episode: Episode,
    inner: InnerLoop,
    out_dir: Path,
    number: int,
) -> dict[str, Any]:
    """Adapt to one task, write its folder, return its manifest entry."""
    folder = f"task_{number:04d}"
    before = evaluate_task(model, episode, replace(inner, steps=0)).accuracy
    result = evaluate_task(model, episode, inner, record_steps=True)
    inputs = {
        "support_x": episode.support_x,
        "support_y": episode.support_y,
        "query_x": episode.query_x,
        "query_y": episode.query_y,
    }
    save_tensors(out_dir / folder / "inputs.safetensors", inputs)
    steps = []
    for s, params in enumerate(result.params_per_step or [], start=1):
        path = f"{folder}/step_{s:02d}.safetensors"
        save_tensors(out_dir / path, {**meta_state, **params})
        steps.append(path)
    return {
        "id": int(episode.index),
        "dir": folder,
        "inputs": f"{folder}/inputs.safetensors",
        "steps": steps,
        "classes": [int(c) for c in episode.classes],
        "query_accuracy_before": before,
        "query_accuracy_after": result.accuracy,
    }


def write_snapshot(
    model: nn.Module,
    spec: Mapping[str, Any],
    episodes: Sequence[Episode],
    inner: InnerLoop,
    out_dir: str | Path,
    *,
    layers: Sequence[str] | None = None,
    algorithm: str | None = None,
    dataset: str | None = None,
    batch_norm: str | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    distributed: bool = False,
) -> dict[str, Any]:
    """Write an adaptation snapshot of ``model`` on ``episodes`` (docs/formats.md).

    Args:
        model: the meta-learned network (a staged model such as :class:`meta.core.models.Conv4`);
            it is not changed.
        spec: its factory spec ``{"factory": "package.module:callable", "kwargs": {...}}``.
        episodes: the tasks (each ``support_x (N*K, C, H, W)``, ``support_y (N*K,)``,
            ``query_x (N*Q, C, H, W)``, ``query_y (N*Q,)``, ``classes (N,)``, ``index``), all
            with the same ways, shots and queries.
        inner: the test-time inner loop (``steps >= 1``; ``adapt`` the adapted layers).
        out_dir: the snapshot folder (created).
        layers: module paths worth comparing, in forward order (default ``model.layers``).
        algorithm, dataset: recorded in the manifest (``dataset`` e.g. ``"omniglot/maml/test"``).
        batch_norm: ``"batch"`` or ``"none"`` (default: the spec's ``batch_norm``, else
            ``"batch"``).
        extra: more keys for the manifest (e.g. where the weights came from).
        overwrite: replace the snapshot in a non-empty ``out_dir``.
        distributed: share the tasks among the ranks of the initialised default
            ``torch.distributed`` group (the module docstring).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).
    """
    if inner.steps < 1:
        raise ValueError(f"a snapshot needs at least one inner step, got steps={inner.steps}")
    if not episodes:
        raise ValueError("a snapshot needs at least one task")
    shapes = {(e.ways, e.shots, e.queries) for e in episodes}
    if len(shapes) != 1:
        raise ValueError(f"the tasks of a snapshot must share ways, shots and queries; got {sorted(shapes)}")
    ((ways, shots, queries),) = shapes
    layer_names = tuple(getattr(model, "layers", ()) if layers is None else layers)
    if not layer_names:
        raise ValueError("pass layers=...: the model has no .layers attribute naming its layers")
    check_head(model, ways, inner)
    device = next(model.parameters()).device
    ranks = ranks_for(distributed)
    return write_snapshot_folder(
        out_dir,
        overwrite,
        lambda out: _write_tasks(
            model,
            spec,
            episodes,
            inner,
            out,
            layer_names,
            (ways, shots, queries),
            device,
            algorithm=algorithm,
            dataset=dataset,
            batch_norm=batch_norm,
            extra=extra,
            progress=progress,
            ranks=ranks,
        ),
        ranks,
    )


def write_snapshot_folder(
    out_dir: str | Path, overwrite: bool, write: Callable[[Path], dict[str, Any]], ranks: Single = ONE
) -> dict[str, Any]:
    """``write(folder)`` (which writes a snapshot's files, the manifest last, and returns the
    manifest) with the folder locked and prepared (a non-empty one needs ``overwrite``). If it
    fails, no half-written snapshot is left behind: the snapshot's files are removed, and the
    folder too if this call created it. Serves :func:`write_snapshot` and the meta-RL snapshots
    (:mod:`meta.run.rl_snapshot`). Of several ``ranks``, rank 0 alone locks, prepares and cleans
    up; the others start writing once it has prepared the folder."""
    out = Path(out_dir)
    if ranks.rank != 0:
        ranks.barrier()
        return write(out)
    created = not out.exists()
    try:
        with FolderLock(out, "snapshot"):
            _prepare_folder(out, overwrite)
            ranks.barrier()
            try:
                return write(out)
            except BaseException:
                _clear_snapshot(out)  # no half-written snapshot is left behind
                raise
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_tasks(
    model: nn.Module,
    spec: Mapping[str, Any],
    episodes: Sequence[Episode],
    inner: InnerLoop,
    out: Path,
    layer_names: Sequence[str],
    shape: tuple[int, int, int],
    device: torch.device,
    *,
    progress: bool,
    ranks: Single,
    **record: Any,
) -> dict[str, Any]:
    """Write the meta weights, each task's folder (this rank's tasks), then the manifest (last: a
    folder with a manifest is complete); returns the manifest."""
    meta_state = {k: v.detach() for k, v in model.state_dict().items()}
    if ranks.rank == 0:
        save_tensors(out / "meta.safetensors", meta_state)
    mine = share(len(episodes), ranks.rank, ranks.world)
    bar = progress_bar(mine, desc="snapshot tasks", unit="task", enabled=progress and ranks.rank == 0)
    tasks = ranks.gather_objects(
        [_task_entry(model, meta_state, episodes[number].to(device), inner, out, number) for number in bar]
    )
    manifest = _manifest(spec, inner, layer_names, shape, tasks, **record)
    if ranks.rank == 0:
        missing = [t["inputs"] for t in tasks if not (out / t["inputs"]).is_file()]
        if missing:
            raise ValueError(
                f"{str(out)!r}: the files other ranks wrote are not here ({', '.join(missing[:3])}, ...): a snapshot"
                " under torchrun needs a folder on a file system every rank reaches"
            )
        write_json(out / "manifest.json", manifest)
    return manifest


def _manifest(
    spec: Mapping[str, Any],
    inner: InnerLoop,
    layer_names: Sequence[str],
    shape: tuple[int, int, int],
    tasks: list[dict[str, Any]],
    *,
    algorithm: str | None,
    dataset: str | None,
    batch_norm: str | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The manifest of a snapshot (docs/formats.md, "Adaptation snapshot")."""
    ways, shots, queries = shape
    return {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "model": {"factory": spec["factory"], "kwargs": dict(spec.get("kwargs", {}))},
        "meta_weights": "meta.safetensors",
        "layers": list(layer_names),
        "batch_norm": batch_norm or spec.get("kwargs", {}).get("batch_norm", "batch"),
        "forward_batch": "whole",
        "algorithm": algorithm,
        "adapted_layers": list(inner.adapted_layers(layer_names)),
        "inner_steps": inner.steps,
        "inner_lr": inner.lr,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "dataset": dataset,
        **dict(extra or {}),
        "tasks": tasks,
    }


def snapshot_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    tasks: int = 8,
    task_ids: Sequence[int] | None = None,
    queries: int | None = None,
    split: str = "test",
    weights: str = "final",
    steps: int | None = None,
    lr: float | None = None,
    freeze: Sequence[str] | str | None = None,
    device: str = "cpu",
    data_root: str | None = None,
    cache_dir: str | None = None,
    data: Any = None,
    overwrite: bool = False,
    trusted: Sequence[str] = (),
    progress: bool = True,
    distributed: bool = False,
) -> dict[str, Any]:
    """Snapshot a training run on the first ``tasks`` fixed evaluation tasks of ``split`` (or
    the fixed tasks numbered ``task_ids``), the same tasks :func:`meta.run.evaluate.evaluate_run`
    uses, with ``queries`` query examples per class (default: the run's ``test_queries``; more
    give the similarity analyses more datapoints, the classes and support sets unchanged). The
    inner loop is the run's test-time one (``steps``/``lr``/``freeze`` override it;
    body-training baselines adapt every layer unless ``freeze`` says otherwise)."""
    run = LoadedRun.open(run_dir, data_root=data_root, cache_dir=cache_dir)
    procedure = run_procedure(run.config, freeze=freeze, steps=steps, lr=lr)
    if procedure.inner is None:
        procedure = run_procedure(run.config, freeze="none", steps=steps, lr=lr)
    split_data = data if data is not None else load_run_split(run.config, split, progress=progress)
    ids = list(range(tasks)) if task_ids is None else [int(i) for i in task_ids]
    if not ids or min(ids) < 0:
        raise ValueError(f"task ids must be non-negative and at least one, got {ids}")
    fixed = evaluation_tasks(run.config, split_data, max(ids) + 1, queries)
    model = run.model(weights, device, trusted)
    source = {
        "run_dir": str(run.folder.root),
        "weights": weights,
        "weights_path": str(run.folder.weights(weights)),
        "seed": run.config.seed,
    }
    return write_snapshot(
        model,
        run.info["model"],
        [fixed[i] for i in ids],
        procedure.inner,
        out_dir,
        layers=run.info["layers"],
        algorithm=run.config.algorithm,
        dataset=split_data.name,
        batch_norm=run.info["batch_norm"],
        extra={"source": source},
        overwrite=overwrite,
        progress=progress,
        distributed=distributed,
    )
