"""Typed results of evaluation: accuracy over test tasks with its 95% interval, over seeds, per
procedure, per run and over runs, and their JSON form (docs/formats.md, "Evaluation result").

Confidence interval, in percent, as in the MAML and ANIL code (``ci95 = 1.96 * np.std(acc) /
np.sqrt(n)``, cbfinn/maml ``main.py``)::

    accuracy = 100 * mean(a),   ci95 = 100 * 1.96 * std(a) / sqrt(T)

over the per-task query accuracies ``a`` of ``T`` tasks, ``std`` the population standard
deviation (``ddof=0``, numpy's default). Over seeds (several run folders) the summary is the mean
and the sample standard deviation (``ddof=1``) of the runs' accuracies.

Imports: :mod:`repsim.io` only (reading JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repsim.io import read_json

__all__ = [
    "AccuracySummary",
    "Evaluation",
    "ProcedureResult",
    "SeedEvaluation",
    "SeedSummary",
    "format_result",
    "mean_ci95",
]

Z95 = 1.96
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
