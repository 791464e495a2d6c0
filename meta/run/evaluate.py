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

Confidence interval, in percent, as in the MAML and ANIL code (``ci95 = 1.96 * np.std(acc) /
np.sqrt(n)``, cbfinn/maml ``main.py``)::

    accuracy = 100 * mean(a),   ci95 = 100 * 1.96 * std(a) / sqrt(T)

over the per-task query accuracies ``a`` of ``T`` tasks, ``std`` the population standard
deviation (``ddof=0``, numpy's default). Over seeds (several run folders) the summary is the mean
and the sample standard deviation (``ddof=1``) of the runs' accuracies.

The test tasks are the fixed tasks of the split (:func:`meta.data.fixed_tasks`, 600 by
default): the same tasks for every algorithm and every seed of a setting.

The freezing ablation (the paper's Table 1) freezes ``conv1``, ``conv1-2``, ``conv1-3``,
``conv1-4`` (or nothing) in the **test-time** inner loop; every other layer adapts
(:data:`meta.core.names.FREEZING_ROWS`).

Results are typed: :class:`Evaluation` (one run; one :class:`ProcedureResult` per procedure, one
per frozen set for the ablation) and :class:`SeedEvaluation` (several runs, with
:class:`SeedSummary` rows). ``Evaluation.as_json()`` is the file ``RUN_DIR/eval/<name>.json``
(docs/formats.md, "Evaluation result") and ``Evaluation.from_json`` reads it back.

Imports: :mod:`meta.core`, :mod:`meta.data`, :mod:`meta.run` and :mod:`repsim.io`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from meta.core.inner import InnerLoop
from meta.core.names import FREEZING_ROWS, LAYERS, META_LEARNERS
from meta.core.procedures import Procedure, check_head, task_accuracy
from meta.data import Episode, FewShotSplit, fixed_tasks
from meta.run.config import RunConfig, adapted_layers, from_mapping, load_run_split, parse_layers
from meta.run.folder import RunFolder, load_weights
from repsim.io import read_json, write_json

Z95 = 1.96
DEFAULT_TASKS = 600
ABLATIONS = ("freezing",)
CI95_FORMULA = "1.96 * std / sqrt(tasks), population std (ddof=0), percent, as in the MAML and ANIL code"
STD_FORMULA = "sample standard deviation (ddof=1) of the runs' accuracies, percent"


# --------------------------------------------------------------------------- statistics


def mean_ci95(accuracies: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(mean(a), 1.96 * std(a) / sqrt(T))`` of ``T`` values, population std (``ddof=0``), in
    the values' units (see the module docstring)."""
    a = np.asarray(accuracies, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"need one or more finite accuracies, got {a.size} values")
    return float(a.mean()), float(Z95 * a.std() / math.sqrt(a.size))


@dataclass(frozen=True)
class AccuracySummary:
    """Accuracy over ``tasks`` test tasks, in percent: the mean, the half-width ``ci95`` of its
    95% interval (``1.96 * std / sqrt(tasks)``) and the population ``std``."""

    accuracy: float
    ci95: float
    std: float
    tasks: int

    @classmethod
    def of(cls, accuracies: Sequence[float] | np.ndarray) -> AccuracySummary:
        """From per-task accuracies as fractions (``ValueError`` for none or a non-finite one)."""
        a = 100.0 * np.asarray(accuracies, dtype=np.float64)
        mean, ci95 = mean_ci95(a)
        return cls(mean, ci95, float(a.std()), int(a.size))


@dataclass(frozen=True)
class SeedSummary:
    """Accuracy over runs (seeds), in percent: the mean and the sample standard deviation
    (``ddof=1``; ``None`` for one run). ``frozen`` names the ablation row, if any."""

    accuracy: float
    std_over_seeds: float | None
    seeds: int
    frozen: str | None = None

    @classmethod
    def of(cls, accuracies: Sequence[float], frozen: str | None = None) -> SeedSummary:
        a = np.asarray(accuracies, dtype=np.float64)
        return cls(float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else None, int(a.size), frozen)

    def as_json(self) -> dict[str, Any]:
        row = {"accuracy": self.accuracy, "std_over_seeds": self.std_over_seeds, "seeds": self.seeds}
        return row if self.frozen is None else {"frozen": self.frozen, **row}


# --------------------------------------------------------------------------- procedures


def task_accuracies(
    model: nn.Module,
    episodes: Sequence[Episode],
    procedure: Procedure,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "test tasks",
) -> np.ndarray:
    """Query accuracy (fraction) of each task, ``(T,)`` float64, with a progress bar."""
    if len(episodes):
        check_head(model, episodes[0].ways, procedure.inner)
    out = np.empty(len(episodes), dtype=np.float64)
    for t in tqdm(range(len(episodes)), desc=desc, unit="task", disable=not progress, leave=False):
        out[t] = task_accuracy(model, episodes[t].to(device), procedure)
    return out


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


def evaluation_tasks(config: RunConfig, split: FewShotSplit, n_tasks: int) -> Any:
    """The fixed tasks of ``split`` for the run's setting (ways, shots, queries)."""
    return fixed_tasks(split, config.ways, config.shots, config.queries, n_tasks=n_tasks)


def task_set_info(tasks: Any) -> dict[str, Any]:
    """Identity of a fixed task set: split, seed, count and a SHA-256 of its class and example
    indices (equal digests = the same tasks)."""
    indices = tasks.indices()
    digest = hashlib.sha256(indices.classes.tobytes() + indices.examples.tobytes()).hexdigest()
    return {"split": tasks.sampler.split.name, "seed": tasks.sampler.seed, "count": len(tasks), "sha256": digest}


def _weights_name(weights: str) -> str:
    return weights if weights in ("final", "best") or weights.isdigit() else Path(weights).stem


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ProcedureResult:
    """One procedure on a run's test tasks: its summary, its description (JSON-ready, see
    :meth:`meta.core.procedures.Procedure.describe`), the per-task accuracies (fractions) and,
    in an ablation, the row's label (``frozen``)."""

    summary: AccuracySummary
    procedure: dict[str, Any]
    per_task: tuple[float, ...]
    frozen: str | None = None

    def as_json(self) -> dict[str, Any]:
        s = self.summary
        row = {
            "accuracy": s.accuracy,
            "ci95": s.ci95,
            "std": s.std,
            "tasks": s.tasks,
            "procedure": self.procedure,
            "per_task": list(self.per_task),
        }
        return row if self.frozen is None else {"frozen": self.frozen, **row}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ProcedureResult:
        summary = AccuracySummary(row["accuracy"], row["ci95"], row["std"], row["tasks"])
        return cls(summary, dict(row["procedure"]), tuple(row["per_task"]), row.get("frozen"))


@dataclass(frozen=True)
class Evaluation:
    """One run tested on fixed tasks (:func:`evaluate_run`): the run, the weights, the setting,
    the task set's identity, and one :class:`ProcedureResult` per row (one row, or one per
    frozen set of the ``ablation``)."""

    run_dir: str
    weights: str
    weights_path: str
    algorithm: str
    seed: int
    dataset: str
    ways: int
    shots: int
    queries: int
    task_set: dict[str, Any]
    rows: tuple[ProcedureResult, ...]
    name: str
    ablation: str | None = None
    json: str | None = field(default=None, compare=False)

    @property
    def result(self) -> ProcedureResult:
        """The only row (``ValueError`` for an ablation, which has several)."""
        if self.ablation is not None:
            raise ValueError(f"an evaluation with the {self.ablation} ablation has one row per frozen set; use .row()")
        return self.rows[0]

    @property
    def accuracy(self) -> float:
        """The accuracy (percent) of the only row."""
        return self.result.summary.accuracy

    @property
    def ci95(self) -> float:
        return self.result.summary.ci95

    def row(self, frozen: str) -> ProcedureResult:
        """The ablation row labelled ``frozen`` (``ValueError`` naming the labels otherwise)."""
        for row in self.rows:
            if row.frozen == frozen:
                return row
        raise ValueError(f"no row {frozen!r}; rows are {[r.frozen for r in self.rows]}")

    def _identity(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "weights": self.weights,
            "weights_path": self.weights_path,
            "algorithm": self.algorithm,
            "seed": self.seed,
            "dataset": self.dataset,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "task_set": self.task_set,
            "ci95_formula": CI95_FORMULA,
        }

    def as_json(self) -> dict[str, Any]:
        """The JSON of ``RUN_DIR/eval/<name>.json`` (docs/formats.md, "Evaluation result")."""
        tail = {"name": self.name, **({"json": self.json} if self.json is not None else {})}
        if self.ablation is None:
            return {**self.result.as_json(), **self._identity(), **tail}
        return {**self._identity(), "ablation": self.ablation, "rows": [r.as_json() for r in self.rows], **tail}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        """Inverse of :meth:`as_json`."""
        rows = data["rows"] if data.get("ablation") else [data]
        keys = (
            "run_dir",
            "weights",
            "weights_path",
            "algorithm",
            "seed",
            "dataset",
            "ways",
            "shots",
            "queries",
            "task_set",
            "name",
        )
        return cls(
            **{k: data[k] for k in keys},
            rows=tuple(ProcedureResult.from_json(r) for r in rows),
            ablation=data.get("ablation"),
            json=data.get("json"),
        )

    @classmethod
    def read(cls, path: str | Path) -> Evaluation:
        """An evaluation JSON written by :func:`evaluate_run`."""
        return cls.from_json(read_json(path))


@dataclass(frozen=True)
class SeedEvaluation:
    """Several runs (seeds of one setting) on the same fixed tasks (:func:`evaluate_runs`): each
    run's :class:`Evaluation` and, per row, the :class:`SeedSummary` over runs."""

    runs: tuple[Evaluation, ...]
    rows: tuple[SeedSummary, ...]
    name: str
    ablation: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary JSON of ``python -m meta evaluate RUN_DIR RUN_DIR ...``."""
        runs = [{k: v for k, v in r.as_json().items() if k != "per_task"} for r in self.runs]
        summary = {"rows": [r.as_json() for r in self.rows]} if self.ablation else self.rows[0].as_json()
        return {**summary, "std_formula": STD_FORMULA, "runs": runs, "name": self.name}


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
    progress: bool = True,
    write: bool = True,
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

    Returns:
        The :class:`Evaluation`: one row, or one per frozen set with ``ablation``; its ``json``
        is the file written (``None`` without ``write``).
    """
    run = LoadedRun.open(run_dir, data_root=data_root, cache_dir=cache_dir)
    settings = _settings(run.config, ablation=ablation, freeze=freeze, nil=nil, steps=steps, lr=lr)
    split_data = data if data is not None else load_run_split(run.config, split, progress=progress)
    episodes = evaluation_tasks(run.config, split_data, tasks)
    model = run.model(weights, device)
    rows = []
    for label, procedure in settings:
        accuracies = task_accuracies(
            model, episodes, procedure, device=device, progress=progress, desc=label or "test tasks"
        )
        rows.append(
            ProcedureResult(
                AccuracySummary.of(accuracies),
                procedure.describe(),
                tuple(accuracies.tolist()),
                label if ablation else None,
            )
        )
    name = f"{split}_{_weights_name(weights)}_{tasks}tasks_" + (
        f"ablation-{ablation}" if ablation else settings[0][1].tag()
    )
    result = Evaluation(
        run_dir=str(run.folder.root),
        weights=weights,
        weights_path=str(run.folder.weights(weights)),
        algorithm=run.config.algorithm,
        seed=run.config.seed,
        dataset=split_data.name,
        ways=run.config.ways,
        shots=run.config.shots,
        queries=run.config.queries,
        task_set=task_set_info(episodes),
        rows=tuple(rows),
        name=name,
        ablation=ablation,
    )
    if write:
        result = replace(result, json=str(write_json(run.folder.eval_dir / f"{name}.json", result.as_json())))
    return result


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


# --------------------------------------------------------------------------- text


def format_result(result: Evaluation | SeedEvaluation) -> str:
    """A short human-readable table of :func:`evaluate_run` or :func:`evaluate_runs` output."""
    if isinstance(result, Evaluation):
        return _format_one(result)
    lines = [f"{r.run_dir} (seed {r.seed}): {_format_one(r)}" for r in result.runs]
    if result.ablation:
        lines += [f"  frozen {row.frozen:<8} {_format_seeds(row)}" for row in result.rows]
    else:
        lines.append(f"over {result.rows[0].seeds} seeds: {_format_seeds(result.rows[0])}")
    return "\n".join(lines)


def _format_one(result: Evaluation) -> str:
    if result.ablation:
        head = f"{result.algorithm} {result.ways}-way {result.shots}-shot, frozen at test time:"
        rows = [f"  {row.frozen:<8} {row.summary.accuracy:6.2f} +- {row.summary.ci95:.2f}%" for row in result.rows]
        return "\n".join([head, *rows])
    s = result.result.summary
    return f"{s.accuracy:.2f} +- {s.ci95:.2f}% ({s.tasks} tasks, {result.result.procedure['kind']})"


def _format_seeds(summary: SeedSummary) -> str:
    std = summary.std_over_seeds
    return f"{summary.accuracy:.2f}%" + ("" if std is None else f" +- {std:.2f} (std over {summary.seeds} seeds)")
