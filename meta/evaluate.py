"""Few-shot test accuracy of trained runs: mean with a 95% confidence interval over a fixed set
of test tasks, the layer-freezing ablation, NIL-testing, and mean/std over seeds.

Test procedures (:class:`Procedure`):

- ``inner``: adapt a copy of the meta-learned weights to each task's support set with the
  test-time inner loop (the run's ``test_inner_steps`` and ``test_inner_lr``), the layers outside
  ``adapt`` frozen, and score the query set (:func:`meta.algorithms.evaluate_task`). The
  default for MAML, first-order MAML and ANIL; by default the layers that adapted at training
  adapt at test time (ANIL: the head).
- ``nil``: NIL-testing (Raghu et al. 2020, section 5): no head and no inner loop, queries
  classified by cosine similarity of penultimate features to the support set
  (:func:`meta.nil.nil_accuracy`). The default for the body-training baselines (multiclass,
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
``conv1-4`` (or nothing) in the **test-time** inner loop; every other layer adapts.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from meta.algorithms import evaluate_task
from meta.checkpoint import RunFolder, load_weights, write_json
from meta.config import META_LEARNERS, RunConfig, adapted_layers, from_mapping, load_run_split, parse_layers
from meta.data import Episode, FewShotSplit, fixed_tasks
from meta.inner import InnerLoop
from meta.models import BODY, LAYERS
from meta.nil import nil_accuracy

Z95 = 1.96
DEFAULT_TASKS = 600
#: The freezing ablation of Table 1: rows (label, layers frozen at test time).
FREEZING_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("none", ()),
    *((f"conv1-{i}" if i > 1 else "conv1", BODY[:i]) for i in range(1, 5)),
)
ABLATIONS = ("freezing",)


# --------------------------------------------------------------------------- statistics


def mean_ci95(accuracies: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(mean(a), 1.96 * std(a) / sqrt(T))`` of ``T`` values, population std (``ddof=0``), in
    the values' units (see the module docstring)."""
    a = np.asarray(accuracies, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"need one or more finite accuracies, got {a.size} values")
    return float(a.mean()), float(Z95 * a.std() / math.sqrt(a.size))


def summarize_accuracies(accuracies: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Per-task accuracies (fractions) -> ``accuracy``, ``ci95``, ``std`` (percent), ``tasks``."""
    a = 100.0 * np.asarray(accuracies, dtype=np.float64)
    mean, ci95 = mean_ci95(a)
    return {"accuracy": mean, "ci95": ci95, "std": float(a.std()), "tasks": int(a.size)}


def seed_summary(accuracies: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (``ddof=1``; ``None`` for one run) over runs."""
    a = np.asarray(accuracies, dtype=np.float64)
    return {"accuracy": float(a.mean()), "std_over_seeds": float(a.std(ddof=1)) if a.size > 1 else None,
            "seeds": int(a.size)}


# --------------------------------------------------------------------------- procedures


@dataclass(frozen=True)
class Procedure:
    """How a test task is scored: ``kind`` ``"inner"`` (with ``inner``) or ``"nil"``."""

    kind: str
    inner: InnerLoop | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("inner", "nil") or (self.kind == "inner") != (self.inner is not None):
            raise ValueError(f"a procedure is 'inner' with an InnerLoop or 'nil' without; got {self.kind!r}")

    def describe(self, layers: Sequence[str] = LAYERS) -> dict[str, Any]:
        if self.inner is None:
            return {"kind": "nil"}
        adapted = self.inner.adapted_layers(layers)
        return {"kind": "inner", "steps": self.inner.steps, "lr": self.inner.lr, "adapted_layers": list(adapted),
                "frozen_layers": [name for name in layers if name not in adapted]}

    def tag(self) -> str:
        """Short name for file names, e.g. ``nil`` or ``inner-10steps-frozen-conv1+conv2``."""
        if self.inner is None:
            return "nil"
        frozen = self.describe()["frozen_layers"]
        return f"inner-{self.inner.steps}steps" + (f"-frozen-{'+'.join(frozen)}" if frozen else "")


def task_accuracy(model: nn.Module, episode: Episode, procedure: Procedure) -> float:
    """Query accuracy (fraction) of one task under ``procedure``."""
    if procedure.inner is None:
        return nil_accuracy(model, episode)
    return evaluate_task(model, episode, procedure.inner).accuracy


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


def check_head(model: nn.Module, ways: int, inner: InnerLoop | None) -> None:
    """ValueError if an inner loop would adapt a head whose width is not the tasks' ``ways``."""
    outputs = getattr(getattr(model, "head", None), "out_features", ways)
    if inner is not None and outputs != ways:
        raise ValueError(
            f"the model's head has {outputs} outputs but the tasks are {ways}-way; a head trained over"
            " all training classes (multiclass) can only be tested with NIL (--nil)"
        )


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
        config.test_inner_steps if steps is None else steps, config.test_inner_lr if lr is None else lr,
        adapt=frozenset(adapt), adapt_norm=config.adapt_norm,
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
        config = from_mapping({**info["config"], **{k: v for k, v in overrides.items() if v is not None}})
        return cls(folder, config, info)

    def model(self, weights: str = "final", device: str | torch.device = "cpu") -> nn.Module:
        """The run's model with ``weights`` (``final``, ``best``, an iteration or a path)."""
        return load_weights(self.info["model"], self.folder.weights(weights), device)


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
) -> dict[str, Any]:
    """Test one run and (with ``write``) save the result as ``RUN_DIR/eval/<name>.json``.

    Args:
        run_dir: a training run folder.
        tasks: number of fixed test tasks.
        split: ``"test"`` (or ``"val"``, ``"train"``).
        weights: ``"final"``, ``"best"``, an iteration kept with ``--save-at``, or a path.
        freeze, nil, steps, lr: the procedure (:func:`run_procedure`).
        ablation: ``"freezing"`` for the test-time freezing table (rows :data:`FREEZING_ROWS`).
        data: the split to use instead of loading the run's data set (tests, custom data).

    Returns:
        Without ablation: ``accuracy`` and ``ci95`` (percent), ``std``, ``tasks``, the
        procedure, the task set, ``per_task`` accuracies (fractions) and the run's setting.
        With ablation: ``rows`` (each ``frozen`` with the same keys) and the same details.
    """
    run = LoadedRun.open(run_dir, data_root=data_root, cache_dir=cache_dir)
    settings = _settings(run.config, ablation=ablation, freeze=freeze, nil=nil, steps=steps, lr=lr)
    split_data = data if data is not None else load_run_split(run.config, split, progress=progress)
    episodes = evaluation_tasks(run.config, split_data, tasks)
    model = run.model(weights, device)
    rows = []
    for label, procedure in settings:
        accuracies = task_accuracies(model, episodes, procedure, device=device, progress=progress,
                                     desc=label or "test tasks")
        rows.append({**({"frozen": label} if ablation else {}), **summarize_accuracies(accuracies),
                     "procedure": procedure.describe(), "per_task": accuracies.tolist()})
    result = {
        "run_dir": str(run.folder.root), "weights": weights, "weights_path": str(run.folder.weights(weights)),
        "algorithm": run.config.algorithm, "seed": run.config.seed, "dataset": split_data.name,
        "ways": run.config.ways, "shots": run.config.shots, "queries": run.config.queries,
        "task_set": task_set_info(episodes), "ci95_formula": "1.96 * std / sqrt(tasks), population std (ddof=0),"
        " percent, as in the MAML and ANIL code",
    }
    result = {**result, "ablation": ablation, "rows": rows} if ablation else {**rows[0], **result}
    name = f"{split}_{_weights_name(weights)}_{tasks}tasks_" + (f"ablation-{ablation}" if ablation else settings[0][1].tag())
    result["name"] = name
    if write:
        result["json"] = str(write_json(run.folder.eval_dir / f"{name}.json", result))
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


def evaluate_runs(run_dirs: Sequence[str | Path], **kwargs: Any) -> dict[str, Any]:
    """:func:`evaluate_run` on each run (e.g. seeds of one setting) plus the mean and standard
    deviation over runs (:func:`seed_summary`) of the accuracy, per ablation row if any.
    Keyword arguments are those of :func:`evaluate_run`."""
    if not run_dirs:
        raise ValueError("no run folders given")
    runs = [evaluate_run(run_dir, **kwargs) for run_dir in run_dirs]
    if len({r["task_set"]["sha256"] for r in runs}) > 1:
        raise ValueError("the runs were tested on different task sets (different settings or data); compare like with like")
    if "rows" in runs[0]:
        rows = [{"frozen": row["frozen"], **seed_summary([r["rows"][i]["accuracy"] for r in runs])}
                for i, row in enumerate(runs[0]["rows"])]
        summary: dict[str, Any] = {"rows": rows}
    else:
        summary = seed_summary([r["accuracy"] for r in runs])
    summary["std_formula"] = "sample standard deviation (ddof=1) of the runs' accuracies, percent"
    return {**summary, "runs": [{k: v for k, v in r.items() if k != "per_task"} for r in runs], "name": runs[0]["name"]}


# --------------------------------------------------------------------------- text


def format_result(result: dict[str, Any]) -> str:
    """A short human-readable table of :func:`evaluate_run` or :func:`evaluate_runs` output."""
    if "runs" in result:
        lines = [f"{r['run_dir']} (seed {r['seed']}): {_format_one(r)}" for r in result["runs"]]
        if "rows" in result:
            lines += [f"  frozen {row['frozen']:<8} {_format_seeds(row)}" for row in result["rows"]]
        else:
            lines.append(f"over {result['seeds']} seeds: {_format_seeds(result)}")
        return "\n".join(lines)
    return _format_one(result)


def _format_one(result: dict[str, Any]) -> str:
    if "rows" in result:
        head = f"{result['algorithm']} {result['ways']}-way {result['shots']}-shot, frozen at test time:"
        rows = [f"  {row['frozen']:<8} {row['accuracy']:6.2f} +- {row['ci95']:.2f}%" for row in result["rows"]]
        return "\n".join([head, *rows])
    return f"{result['accuracy']:.2f} +- {result['ci95']:.2f}% ({result['tasks']} tasks, {result['procedure']['kind']})"


def _format_seeds(summary: dict[str, Any]) -> str:
    std = summary["std_over_seeds"]
    return f"{summary['accuracy']:.2f}%" + ("" if std is None else f" +- {std:.2f} (std over {summary['seeds']} seeds)")
