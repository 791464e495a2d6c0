"""Few-shot test accuracy of trained runs: mean with a 95% confidence interval over a fixed set
of test tasks, the layer-freezing ablation, NIL-testing, and mean/std over seeds.

Test procedures (:class:`meta.core.procedures.Procedure`):

- ``inner``: adapt a copy of the meta-learned weights to each task's support set with the
  test-time inner loop (the run's ``test_inner_steps`` and ``test_inner_lr``), the layers outside
  ``adapt`` frozen, and score the query set (:func:`meta.core.procedures.evaluate_task`). The
  default for MAML, first-order MAML and ANIL; by default the layers that adapted at training
  adapt at test time (ANIL: the head).
- ``nil``: NIL-testing (Raghu et al. 2020, section 5): no head and no inner loop, queries
  classified by cosine similarity of penultimate features to the support set
  (:func:`meta.core.nil.nil_accuracy`). The default for the body-training baselines (multiclass,
  multitask, random features, NIL training), as in the paper's Table 5.

Accuracies are means over test tasks with a 95% interval, and over seeds with their standard
deviation (:mod:`meta.run.results`, where the formulas are).

The test tasks are the fixed tasks of the split (:func:`meta.data.fixed_tasks`, 600 by
default): the same tasks for every algorithm and every seed of a setting.

The freezing ablation (the paper's Table 1) freezes ``conv1``, ``conv1-2``, ``conv1-3``,
``conv1-4`` (or nothing) in the **test-time** inner loop; every other layer adapts
(:data:`meta.core.names.FREEZING_ROWS`).

Results are typed (:mod:`meta.run.results`): ``Evaluation`` (one run; one ``ProcedureResult`` per procedure, one
per frozen set for the ablation) and ``SeedEvaluation`` (several runs, with
``SeedSummary`` rows). ``Evaluation.as_json()`` is the file ``RUN_DIR/eval/<name>.json``
(docs/formats.md, "Evaluation result") and ``Evaluation.from_json`` reads it back.

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.run` and :mod:`repsim` (io, progress).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meta.core.inner import InnerLoop
from meta.core.names import FREEZING_ROWS, LAYERS, META_LEARNERS
from meta.core.procedures import Procedure, check_head, task_accuracy
from meta.core.reduction import ALONE, Reducer, gather_in_order, share
from meta.data import Episode, FewShotSplit, fixed_tasks
from meta.data.episode_files import EpisodeFile, read_episode_file
from meta.run.config import RunConfig, adapted_layers, from_mapping, load_run_split, parse_layers
from meta.run.distributed import ranks_for
from meta.run.folder import RunFolder, load_weights
from meta.run.results import (
    AccuracySummary,
    Evaluation,
    ProcedureResult,
    SeedEvaluation,
    SeedSummary,
)
from repsim.io import write_json
from repsim.progress import progress_bar

DEFAULT_TASKS = 600
ABLATIONS = ("freezing",)


# --------------------------------------------------------------------------- procedures


def task_accuracies(
    model: nn.Module,
    episodes: Sequence[Episode],
    procedure: Procedure,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "test tasks",
    ranks: Reducer = ALONE,
) -> np.ndarray:
    """Query accuracy (fraction) of each task, ``(T,)`` float64, with a progress bar. With
    ``ranks``, each rank tests its block of tasks (:func:`meta.core.reduction.share`) and every
    rank returns every task's accuracy, in task order."""
    if len(episodes):
        check_head(model, episodes[0].ways, procedure.inner)
    mine = share(len(episodes), ranks.rank, ranks.world)
    out = torch.empty(len(mine), dtype=torch.float64)
    for i in progress_bar(range(len(mine)), desc=desc, unit="task", enabled=progress and ranks.rank == 0, leave=False):
        out[i] = task_accuracy(model, episodes[mine[i]].to(device), procedure)
    return gather_in_order(ranks, out, len(episodes)).numpy()


def run_procedure(
    config: RunConfig,
    *,
    freeze: Sequence[str] | str | None = None,
    nil: bool = False,
    steps: int | None = None,
    lr: float | None = None,
) -> Procedure:
    """The test procedure of a run: NIL if ``nil`` (or, when no ``freeze`` is given, for a
    body-training baseline); else the test-time inner loop with ``steps``/``lr`` (default: the
    run's) adapting every layer not in ``freeze`` (default: the layers that adapted at
    training)."""
    if nil:
        if freeze is not None:
            raise ValueError("--freeze sets the test-time inner loop; NIL-testing (--nil) has none")
        return Procedure("nil")
    if freeze is None and config.algorithm not in META_LEARNERS:
        return Procedure("nil")
    if freeze is None:
        adapt = adapted_layers(config.algorithm, config.freeze_inner)
    else:
        frozen = parse_layers(freeze, "freeze")
        adapt = tuple(name for name in LAYERS if name not in frozen)
    inner = InnerLoop(
        config.test_inner_steps if steps is None else steps,
        config.test_inner_lr if lr is None else lr,
        adapt=frozenset(adapt),
        adapt_norm=config.adapt_norm,
    )
    return Procedure("inner", inner)


# --------------------------------------------------------------------------- runs


@dataclass
class LoadedRun:
    """A run folder's resolved config (:class:`RunConfig`), its ``config.json`` and its folder."""

    folder: RunFolder
    config: RunConfig
    info: dict[str, Any]

    @classmethod
    def open(cls, run_dir: str | Path, **overrides: Any) -> LoadedRun:
        """Read ``RUN_DIR/config.json``; ``overrides`` (e.g. ``data_root``) replace stored values."""
        folder = RunFolder(Path(run_dir))
        info = folder.read_config()
        if not isinstance(info.get("config"), dict):
            raise ValueError(f"{str(folder.config)!r} has no 'config' object")
        config = from_mapping({**info["config"], **{k: v for k, v in overrides.items() if v is not None}})
        return cls(folder, config, info)

    def model(
        self, weights: str = "final", device: str | torch.device = "cpu", trusted: Sequence[str] = ()
    ) -> nn.Module:
        """The run's model with ``weights`` (``final``, ``best``, an iteration or a path). The
        factory ``config.json`` names is built only if it is the toolkit's, on repsim's
        allowlist, or in ``trusted`` (:func:`meta.run.folder.load_weights`)."""
        return load_weights(
            self.info.get("model"), self.folder.weights(weights), device, source=self.folder.config, trusted=trusted
        )


def evaluation_tasks(config: RunConfig, split: FewShotSplit, n_tasks: int, queries: int | None = None) -> Any:
    """The fixed tasks of ``split`` for the run's setting: ways, shots and ``queries`` query
    examples per class (default: the test-time count ``test_queries``). The same task ids with
    another ``queries`` have the same classes and support sets."""
    count = config.test_queries if queries is None else queries
    return fixed_tasks(split, config.ways, config.shots, count, n_tasks=n_tasks)


def task_set_info(tasks: Any) -> dict[str, Any]:
    """Identity of a fixed task set: split, seed, count and a SHA-256 of its class and example
    indices (equal digests = the same tasks)."""
    indices = tasks.indices()
    digest = hashlib.sha256(indices.classes.tobytes() + indices.examples.tobytes()).hexdigest()
    return {"split": tasks.sampler.split.name, "seed": tasks.sampler.seed, "count": len(tasks), "sha256": digest}


def _weights_name(weights: str) -> str:
    return weights if weights in ("final", "best") or weights.isdigit() else Path(weights).stem


# --------------------------------------------------------------------------- evaluation


def evaluate_run(
    run_dir: str | Path,
    *,
    tasks: int = DEFAULT_TASKS,
    split: str = "test",
    weights: str = "final",
    freeze: Sequence[str] | str | None = None,
    nil: bool = False,
    ablation: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    device: str = "cpu",
    data_root: str | None = None,
    cache_dir: str | None = None,
    data: FewShotSplit | None = None,
    trusted: Sequence[str] = (),
    episodes_file: str | Path | None = None,
    progress: bool = True,
    write: bool = True,
    distributed: bool = False,
) -> Evaluation:
    """Test one run and (with ``write``) save the result as ``RUN_DIR/eval/<name>.json``.

    Args:
        run_dir: a training run folder.
        tasks: number of fixed test tasks.
        split: ``"test"`` (or ``"val"``, ``"train"``).
        weights: ``"final"``, ``"best"``, an iteration kept with ``--save-at``, or a path.
        freeze, nil, steps, lr: the procedure (:func:`run_procedure`).
        ablation: ``"freezing"`` for the test-time freezing table (rows
            :data:`meta.core.names.FREEZING_ROWS`).
        data: the split to use instead of loading the run's data set (tests, custom data).
        trusted: model factories to trust if ``config.json`` names one that is neither the
            toolkit's nor on repsim's allowlist (the command line's ``--model``).
        episodes_file: test on the tasks of this file (:mod:`meta.data.episode_files`) instead
            of the split's fixed tasks (``tasks`` and ``split`` then do not apply); every
            procedure works on them, and tasks whose N differs from the head's outputs only with
            NIL. The JSON's ``task_set`` holds the file's digest and each task's label mapping.
        distributed: share the tasks among the ranks of the initialised default
            ``torch.distributed`` group (:mod:`meta.run.distributed`): the same accuracies, and
            rank 0 alone writes.

    Returns:
        The :class:`Evaluation`: one row, or one per frozen set with ``ablation``; its ``json``
        is the file written (``None`` without ``write``).
    """
    ranks = ranks_for(distributed)
    run = LoadedRun.open(run_dir, data_root=data_root, cache_dir=cache_dir)
    settings = _settings(run.config, ablation=ablation, freeze=freeze, nil=nil, steps=steps, lr=lr)
    model = run.model(weights, device, trusted)
    if episodes_file is None:
        split_data = data if data is not None else load_run_split(run.config, split, progress=progress)
        chosen = _fixed_task_set(run.config, split_data, tasks, split)
    else:
        chosen = _file_task_set(run, Path(episodes_file))
        _check_file_heads(model, chosen.episodes, settings)
    rows = [
        _row(
            task_accuracies(
                model,
                chosen.episodes,
                procedure,
                device=device,
                progress=progress,
                desc=label or chosen.desc,
                ranks=ranks,
            ),
            procedure,
            label,
            ablation,
        )
        for label, procedure in settings
    ]
    name = f"{chosen.prefix}_{_weights_name(weights)}_{len(chosen.episodes)}tasks_" + (
        ablation_tag(ablation, steps, run.config) if ablation else settings[0][1].tag()
    )
    result = Evaluation(
        run_dir=str(run.folder.root),
        weights=weights,
        weights_path=str(run.folder.weights(weights)),
        algorithm=run.config.algorithm,
        seed=run.config.seed,
        dataset=chosen.dataset,
        ways=chosen.ways,
        shots=chosen.shots,
        queries=chosen.queries,
        task_set=chosen.identity,
        rows=tuple(rows),
        name=name,
        ablation=ablation,
    )
    if write and ranks.rank == 0:
        result = replace(result, json=str(write_json(run.folder.eval_dir / f"{name}.json", result.as_json())))
    return result


@dataclass(frozen=True)
class _TaskSet:
    """The tasks an evaluation runs on, and how its result names and describes them."""

    episodes: Any  # indexable episodes: FixedTasks or EpisodeFile
    prefix: str  # the result's name starts with it: the split, or file-<stem>
    desc: str  # progress bar label
    dataset: str
    ways: int | None
    shots: int | None
    queries: int | None
    identity: dict[str, Any]


def _fixed_task_set(config: RunConfig, split_data: FewShotSplit, tasks: int, split: str) -> _TaskSet:
    """The split's first ``tasks`` fixed tasks (:func:`evaluation_tasks`)."""
    episodes = evaluation_tasks(config, split_data, tasks)
    return _TaskSet(
        episodes,
        split,
        "test tasks",
        split_data.name,
        config.ways,
        config.shots,
        config.test_queries,
        task_set_info(episodes),
    )


def _file_task_set(run: LoadedRun, path: Path) -> _TaskSet:
    """The tasks of an episode file, decoded as the run's data set (:mod:`meta.data.episode_files`)."""
    kwargs = run.info["model"]["kwargs"]
    episodes = read_episode_file(
        path, dataset=run.config.dataset, image_size=int(kwargs.get("image_size") or 28), channels=kwargs["in_channels"]
    )
    return _TaskSet(
        episodes,
        f"file-{path.stem}",
        path.name,
        run.config.dataset,
        episodes.uniform("ways"),
        episodes.uniform("shots"),
        episodes.uniform("queries"),
        episodes.identity(),
    )


def _check_file_heads(model: nn.Module, episodes: EpisodeFile, settings: list[tuple[str, Procedure]]) -> None:
    """ValueError naming the first task whose N differs from the head's outputs, where a
    procedure runs the head (NIL works with any N)."""
    outputs = getattr(getattr(model, "head", None), "out_features", None)
    if outputs is None or all(procedure.inner is None for _, procedure in settings):
        return
    for name, episode in zip(episodes.task_names, episodes.episodes):
        if episode.ways != outputs:
            raise ValueError(
                f"task {name!r} of {episodes.path.name} is {episode.ways}-way, but the run's head has {outputs}"
                f" outputs: procedures with an inner loop need {outputs}-way tasks; NIL (--nil) works with any N"
            )


def _row(accuracies: np.ndarray, procedure: Procedure, label: str, ablation: str | None) -> ProcedureResult:
    """One procedure's result row (``label``: the ablation row's frozen set)."""
    return ProcedureResult(
        AccuracySummary.of(accuracies), procedure.describe(), tuple(accuracies.tolist()), label if ablation else None
    )


def ablation_tag(ablation: str, steps: int | None, config: RunConfig) -> str:
    """``ablation-<name>``, with ``-<S>steps`` when the test-time steps are not the run's."""
    other = steps is not None and steps != config.test_inner_steps
    return f"ablation-{ablation}" + (f"-{steps}steps" if other else "")


def _settings(
    config: RunConfig, *, ablation: str | None, freeze: Any, nil: bool, steps: int | None, lr: float | None
) -> list[tuple[str, Procedure]]:
    """(label, procedure) of each row: one row, or the rows of an ablation."""
    if ablation is None:
        return [("", run_procedure(config, freeze=freeze, nil=nil, steps=steps, lr=lr))]
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose from {ABLATIONS}")
    if nil or freeze is not None:
        raise ValueError("the freezing ablation sets the frozen layers itself; drop --nil and --freeze")
    return [(label, run_procedure(config, freeze=frozen, steps=steps, lr=lr)) for label, frozen in FREEZING_ROWS]


def evaluate_runs(run_dirs: Sequence[str | Path], **kwargs: Any) -> SeedEvaluation:
    """:func:`evaluate_run` on each run (e.g. seeds of one setting) plus the mean and standard
    deviation over runs (:class:`SeedSummary`) of the accuracy, per ablation row if any.
    Keyword arguments are those of :func:`evaluate_run`."""
    if not run_dirs:
        raise ValueError("no run folders given")
    runs = tuple(evaluate_run(run_dir, **kwargs) for run_dir in run_dirs)
    if len({r.task_set["sha256"] for r in runs}) > 1:
        raise ValueError(
            "the runs were tested on different task sets (different settings or data); compare like with like"
        )
    rows = tuple(
        SeedSummary.of([r.rows[i].summary.accuracy for r in runs], row.frozen) for i, row in enumerate(runs[0].rows)
    )
    return SeedEvaluation(runs, rows, runs[0].name, runs[0].ablation)
