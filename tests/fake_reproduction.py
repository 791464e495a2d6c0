"""A fake reproduction folder: the CSVs of ``python -m meta reproduce`` (docs/formats.md,
"Reproduction output") in exactly the documented schemas (written by :mod:`meta.study.schema`, as
the pipeline's), with plausible synthetic numbers and nothing trained, so that the paper report
and the notebooks can be tested in seconds.

Each :class:`FakeSpec` is one setting (data set, ways, shots); its fields set the quantities the
paper's findings are about exactly (e.g. ``freeze_drop`` is accuracy(none) − accuracy(conv1-4) for
MAML), so a test can build a folder where a finding holds or one where it does not. The other
numbers (intermediate rows, confidence intervals, seed spreads) are drawn from a seeded generator.

Command line (for trying the notebooks by hand): ``python tests/fake_reproduction.py DIR``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

if __name__ == "__main__":  # run as a script, this folder is on sys.path, where its meta/ would shadow the package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from meta.core.names import FROZEN_LABELS, LAYERS
from meta.study.schema import BODY_REGIMES, COLUMNS, write_table
from repsim.io import atomic_write_text

#: Offsets above the lowest conv layer's similarity (conv4 is the lowest: the paper's "slight dip").
_CONV_OFFSETS = (0.02, 0.015, 0.008, 0.0)
#: Accuracy of the body-training regimes (Table 5) relative to MAML's, in points.
_REGIME_OFFSETS = {"maml": 1.0, "multiclass": -8.0, "multitask": -20.0, "random": -14.0, "nil": -9.0}


@dataclass(frozen=True)
class FakeSpec:
    """One setting of a fake reproduction and the numbers its findings depend on.

    Accuracies are percentages, similarities in [0, 1]; "gap" = second − first.
    """

    dataset: str = "glyphs"
    ways: int = 5
    shots: int = 1
    n_seeds: int = 2
    n_tasks: int = 100
    seed: int = 0
    accuracy: float = 92.0  #: MAML, nothing frozen (Tables 1, 2, 4)
    freeze_drop: float = 0.6  #: MAML none − conv1-4 frozen at test time
    anil_gap: float = -0.4  #: ANIL − MAML
    nil_gap: float = 0.3  #: NIL − ANIL
    body_similarity: float = 0.97  #: lowest MAML conv layer's CCA before vs after adaptation
    head_similarity: float = 0.45  #: MAML head's CCA before vs after adaptation
    early_body_similarity: float = 0.95  #: Figure 3: lowest MAML conv layer's CCA, every iteration
    early_head_similarity: float = 0.5
    early_freeze_drop: float = 1.0
    cross_gap: float = 0.0  #: Table 3: MAML-ANIL similarity − the MAML-MAML / ANIL-ANIL references
    iterations: tuple[int, ...] = (100, 200, 300)
    measures: tuple[str, ...] = ("cca", "cka")
    # the further analyses and the architecture study (the latter in the first setting only)
    inner_steps: int = 5  #: inner steps of the weight-movement and architecture-similarity rows
    test_steps: int = 10  #: the runs' test-time inner steps (the architecture study's freezing table)
    head_steps_factor: int = 4  #: ... also computed with this many times as many steps
    speedups: tuple[float, float] = (1.5, 3.2)  #: ANIL over MAML: training iteration, test-time adaptation
    architectures: tuple[str, ...] = ("reference", "glorot-head", "zero-head", "miniimagenet-conv4")
    #: per variant: MAML none − the better conv1-4 frozen accuracy (of the two step counts)
    architecture_drops: tuple[float, ...] = (0.8, 1.2, 1.5, 8.0)
    #: per variant: MAML conv4's mean CCA before vs after the last inner step
    architecture_conv4: tuple[float, ...] = (0.96, 0.95, 0.94, 0.7)


def _shared(spec: FakeSpec) -> dict:
    return {"dataset": spec.dataset, "ways": spec.ways, "shots": spec.shots}


def _spread(rng: np.random.Generator, spec: FakeSpec, low: float = 0.3, high: float = 0.9) -> dict:
    """ci95 over tasks and std over seeds (empty with one seed), both in [low, high]; counts."""
    return {
        "ci95": round(float(rng.uniform(low, high)), 4),
        "std_seeds": round(float(rng.uniform(low, high)), 4) if spec.n_seeds > 1 else np.nan,
        "n_seeds": spec.n_seeds,
        "n_tasks": spec.n_tasks,
    }


def _accuracy_row(rng: np.random.Generator, spec: FakeSpec, accuracy: float, **keys: object) -> dict:
    return {**keys, **_shared(spec), "accuracy": round(accuracy, 4), **_spread(rng, spec)}


def _table1(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    end = spec.accuracy - spec.freeze_drop
    middle = np.linspace(spec.accuracy, end, len(FROZEN_LABELS))[1:-1] + rng.normal(0, 0.1, len(FROZEN_LABELS) - 2)
    accuracies = [spec.accuracy, *middle, end]
    return [_accuracy_row(rng, spec, a, algorithm="maml", frozen=f) for f, a in zip(FROZEN_LABELS, accuracies)]


def _methods(spec: FakeSpec) -> dict[str, float]:
    anil = spec.accuracy + spec.anil_gap
    return {"maml": spec.accuracy, "anil": anil, "nil": anil + spec.nil_gap}


def _table2(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    return [_accuracy_row(rng, spec, a, algorithm=m) for m, a in _methods(spec).items() if m != "nil"]


def _table4(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    return [_accuracy_row(rng, spec, a, method=m) for m, a in _methods(spec).items()]


def _table5(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    accuracies = {"maml": spec.accuracy + _REGIME_OFFSETS["maml"], "anil": _methods(spec)["nil"]}
    accuracies.update({r: spec.accuracy + d for r, d in _REGIME_OFFSETS.items() if r != "maml"})
    return [_accuracy_row(rng, spec, accuracies[r], regime=r, test="nil") for r in BODY_REGIMES]


def _table3(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    pairs = {
        "maml-maml": spec.n_seeds * (spec.n_seeds - 1) // 2,
        "anil-anil": spec.n_seeds * (spec.n_seeds - 1) // 2,
        "maml-anil": spec.n_seeds**2,
    }
    base = {"cca": 0.5, "cka": 0.85}
    rows = []
    for comparison, n_pairs in [(c, n) for c, n in pairs.items() if n]:  # one seed: no MAML-MAML, ANIL-ANIL pair
        gap = spec.cross_gap if comparison == "maml-anil" else 0.0
        for measure in spec.measures:
            for depth, layer in enumerate(LAYERS):
                value = base.get(measure, 0.6) - 0.04 * depth + gap + float(rng.normal(0, 0.01))
                rows.append(
                    {
                        "comparison": comparison,
                        "layer": layer,
                        "measure": measure,
                        "value": round(value, 4),
                        "std": round(float(rng.uniform(0.005, 0.03)), 4),
                        "n_pairs": n_pairs,
                        **_shared(spec),
                    }
                )
    return rows


def _layer_values(body: float, head: float, measure: str) -> dict[str, float]:
    """MAML per-layer similarity: conv layers at ``body`` + offsets (conv4 lowest), the head at
    ``head``; CKA a little closer to 1 than CCA."""
    values = {layer: min(1.0, body + offset) for layer, offset in zip(LAYERS, _CONV_OFFSETS)}
    values["head"] = head
    if measure == "cka":
        values = {layer: v + (1 - v) * 0.3 for layer, v in values.items()}
    return values


def _similarity_row(rng: np.random.Generator, spec: FakeSpec, value: float, **keys: object) -> dict:
    return {**keys, "value": round(value, 5), **_spread(rng, spec, 0.002, 0.02), **_shared(spec)}


def _figure2(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    rows = []
    for measure in spec.measures:
        maml = _layer_values(spec.body_similarity, spec.head_similarity, measure)
        anil = {**dict.fromkeys(LAYERS[:-1], 1.0), "head": min(1.0, maml["head"] + 0.05)}
        for algorithm, values in (("maml", maml), ("anil", anil)):
            rows += [
                _similarity_row(rng, spec, values[layer], algorithm=algorithm, layer=layer, measure=measure)
                for layer in LAYERS
            ]
    return rows


def _figure3(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    rows = []
    for step, iteration in enumerate(spec.iterations):
        for measure in spec.measures:
            values = _layer_values(spec.early_body_similarity, spec.early_head_similarity, measure)
            rows += [
                _similarity_row(
                    rng,
                    spec,
                    values[layer],
                    algorithm="maml",
                    iteration=iteration,
                    kind="similarity",
                    layer=layer,
                    measure=measure,
                )
                for layer in LAYERS
            ]
        accuracy = spec.accuracy - 10 + 3 * step
        accuracies = np.linspace(accuracy, accuracy - spec.early_freeze_drop, len(FROZEN_LABELS))
        rows += [
            _similarity_row(
                rng,
                spec,
                float(a),
                algorithm="maml",
                iteration=iteration,
                kind="freezing",
                layer=frozen,
                measure="accuracy",
            )
            for frozen, a in zip(FROZEN_LABELS, accuracies)
        ]
    return rows


def _learning_curves(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    """Ten logged windows per run: the query loss falls, the validation accuracy (every other
    window) rises to the run's accuracy; ANIL's iterations take 0.6 of MAML's seconds."""
    final, rows = max(spec.iterations), []
    for algorithm, accuracy, seconds in (("maml", spec.accuracy, 0.12), ("anil", _methods(spec)["anil"], 0.072)):
        for seed in range(spec.n_seeds):
            for k in range(1, 11):
                iteration, t = final * k // 10, k / 10
                wall = round(seconds * iteration * float(rng.uniform(0.95, 1.05)), 3)
                loss = 1.4 * np.exp(-3 * t) + 0.2 + float(rng.normal(0, 0.02))
                keys = {"algorithm": algorithm, "seed": seed, "iteration": iteration, "wall_seconds": wall}
                rows.append({**keys, "split": "train", "accuracy": np.nan, "loss": round(loss, 4), **_shared(spec)})
                if k % 2 == 0:
                    value = accuracy - 40 * np.exp(-5 * t) + float(rng.normal(0, 0.3))
                    rows.append({**keys, "split": "val", "accuracy": round(value, 3), "loss": np.nan, **_shared(spec)})
    return rows


def _weight_movement(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    """MAML's conv layers move a little (deeper ones more), the head most; ANIL's conv layers not at all."""
    norms = {"conv1": 3.0, "conv2": 6.0, "conv3": 6.0, "conv4": 6.0, "head": 2.0}
    rows = []
    for architecture in spec.architectures:
        for algorithm in ("maml", "anil"):
            for step in range(1, spec.inner_steps + 1):
                for depth, layer in enumerate(LAYERS):
                    conv = 0.0 if algorithm == "anil" else 0.02 * step * (1 + 0.4 * depth)
                    movement = 0.3 * np.sqrt(step) if layer == "head" else conv
                    for quantity, value in (("movement", movement), ("relative", movement / norms[layer])):
                        keys = {"algorithm": algorithm, "architecture": architecture, "step": step, "layer": layer}
                        row = _similarity_row(rng, spec, float(value), **keys, quantity=quantity)
                        rows.append(
                            row if value else {**row, "ci95": 0.0, "std_seeds": 0.0 if spec.n_seeds > 1 else np.nan}
                        )
    return rows


def _regime_similarity(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    """MAML and ANIL bodies alike, the baselines' less so; similarity falls with depth."""
    closeness = {"maml": 1.0, "anil": 1.0, "multiclass": 0.8, "multitask": 0.6, "random": 0.4, "nil": 0.75}
    rows = []
    for i, a in enumerate(BODY_REGIMES):
        for b in BODY_REGIMES[i + 1 :]:
            for measure in spec.measures:
                for depth, layer in enumerate(LAYERS[:-1]):
                    value = closeness[a] * closeness[b] * (0.95 - 0.12 * depth) + float(rng.normal(0, 0.01))
                    rows.append(
                        {
                            "regime_a": a,
                            "regime_b": b,
                            "layer": layer,
                            "measure": measure,
                            "value": round(value, 4),
                            "ci95": round(float(rng.uniform(0.005, 0.02)), 4),
                            "n_tasks": spec.n_tasks,
                            **_shared(spec),
                        }
                    )
    return rows


def _test_time_heads(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    """Each body with its own procedure, the other algorithm's and NIL (the pipeline's labels)."""
    methods = _methods(spec)
    cases = (
        ("maml", "own (MAML: every layer adapts)", "all layers", spec.accuracy),
        ("maml", "ANIL's (the head adapts)", "head", spec.accuracy - spec.freeze_drop),
        ("maml", "NIL (no head, no inner loop)", "none", spec.accuracy + _REGIME_OFFSETS["maml"]),
        ("anil", "own (ANIL: the head adapts)", "head", methods["anil"]),
        ("anil", "MAML's (every layer adapts)", "all layers", methods["anil"] - 0.3),
        ("anil", "NIL (no head, no inner loop)", "none", methods["nil"]),
    )
    return [_accuracy_row(rng, spec, a, body=b, procedure=p, adapted=d) for b, p, d, a in cases]


def _speed(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    rows = []
    for (quantity, paper), speedup in zip((("training iteration", 1.7), ("test-time adaptation", 4.1)), spec.speedups):
        anil = float(rng.uniform(0.01, 0.05))
        rows.append(
            {
                "quantity": quantity,
                "maml_seconds": round(anil * speedup, 6),
                "anil_seconds": round(anil, 6),
                "speedup": speedup,
                "paper_speedup": paper,
                "repeats": 20,
                **_shared(spec),
            }
        )
    return rows


def _variants(spec: FakeSpec) -> list[tuple[int, str, float, float]]:
    """(index, variant, MAML's accuracy with nothing frozen, its frozen-body drop) of the study."""
    return [(i, v, spec.accuracy - 0.5 * i, spec.architecture_drops[i]) for i, v in enumerate(spec.architectures)]


def _architecture_accuracy(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    """MAML's freezing table at the run's steps and ``head_steps_factor`` times as many (where the
    frozen body does best: ``architecture_drops`` below nothing frozen), NIL, ANIL's own."""
    rows = []
    for _, variant, accuracy, drop in _variants(spec):
        keys = {"architecture": variant, "algorithm": "maml"}
        for steps, extra in ((spec.test_steps, 0.5), (spec.test_steps * spec.head_steps_factor, 0.0)):
            frozen = np.linspace(accuracy, accuracy - drop - extra, len(FROZEN_LABELS))
            rows += [
                _accuracy_row(rng, spec, float(a), **keys, procedure="freezing", frozen=f, steps=steps)
                for f, a in zip(FROZEN_LABELS, frozen)
            ]
        rows.append(_accuracy_row(rng, spec, accuracy - 1.0, **keys, procedure="nil", frozen=None, steps=0))
        anil = {"architecture": variant, "algorithm": "anil", "frozen": None}
        rows.append(_accuracy_row(rng, spec, accuracy + spec.anil_gap, **anil, procedure="own", steps=spec.test_steps))
        rows.append(_accuracy_row(rng, spec, accuracy + spec.anil_gap - 0.5, **anil, procedure="nil", steps=0))
    return rows


def _architecture_similarity(rng: np.random.Generator, spec: FakeSpec) -> list[dict]:
    """MAML's layers drift from 1 towards their final similarity (conv4's: ``architecture_conv4``)
    step by step; ANIL's conv layers stay at 1."""
    rows = []
    for i, variant, _, _ in _variants(spec):
        final = _layer_values(spec.architecture_conv4[i], spec.head_similarity, "cca")
        for algorithm in ("maml", "anil"):
            for step in range(1, spec.inner_steps + 1):
                t = step / spec.inner_steps
                for measure in spec.measures:
                    last = final if algorithm == "maml" else {**dict.fromkeys(LAYERS[:-1], 1.0), "head": final["head"]}
                    values = {layer: 1 - (1 - v) * t for layer, v in last.items()}
                    if measure == "cka":
                        values = {layer: v + (1 - v) * 0.3 for layer, v in values.items()}
                    keys = {"architecture": variant, "algorithm": algorithm, "step": step, "measure": measure}
                    rows += [_similarity_row(rng, spec, values[layer], **keys, layer=layer) for layer in LAYERS]
    return rows


def _runs(spec: FakeSpec) -> list[dict]:
    """The run records of ``preset.json`` (as :func:`meta.study.folder.preset_record` writes
    them) of one setting: MAML and ANIL for each seed, the Table 5 baselines for seed 0."""
    final = max(spec.iterations)
    config = {
        "iterations": final,
        "filters": 32,
        "queries": 5,
        "meta_batch_size": 8,
        "meta_lr": 0.003,
        "inner_steps": 5,
        "inner_lr": 0.08,
        "test_inner_steps": 10,
        "test_inner_lr": 0.08,
    }
    trained = [(a, seed) for seed in range(spec.n_seeds) for a in ("maml", "anil")]
    trained += [(regime, 0) for regime in BODY_REGIMES if regime not in ("maml", "anil")]
    return [
        {
            "name": f"{algorithm}_{spec.dataset}_{spec.ways}w{spec.shots}s_seed{seed}",
            "algorithm": algorithm,
            **_shared(spec),
            "seed": seed,
            "iterations": final,
            "save_at": [i for i in spec.iterations if i != final] if algorithm == "maml" else [],
            "config": {"algorithm": algorithm, **_shared(spec), "seed": seed, **config},
        }
        for algorithm, seed in trained
    ]


_BUILDERS = {
    "table1_freezing": _table1,
    "table2_anil_vs_maml": _table2,
    "table3_cross_model_similarity": _table3,
    "table4_nil": _table4,
    "table5_body_regimes": _table5,
    "figure2_adaptation_similarity": _figure2,
    "figure3_early_training": _figure3,
    "figure5_learning_curves": _learning_curves,
    "figure_weight_movement": _weight_movement,
    "figure_regime_similarity": _regime_similarity,
    "table_test_time_heads": _test_time_heads,
    "table_speed": _speed,
    "table_architecture_accuracy": _architecture_accuracy,
    "figure_architecture_similarity": _architecture_similarity,
}
#: What the pipeline measures in the first setting only (the speed and the architecture study).
_FIRST_SETTING_ONLY = frozenset({"table_speed", "table_architecture_accuracy", "figure_architecture_similarity"})


def _studied(specs: Sequence[FakeSpec], name: str) -> list[FakeSpec]:
    """The specs whose rows of the CSV ``name`` are written: every setting, or the first where
    the pipeline measures only that one; the conv4 variants only in the first setting."""
    if name in _FIRST_SETTING_ONLY:
        return list(specs[:1])
    return [spec if i == 0 else replace(spec, architectures=spec.architectures[:1]) for i, spec in enumerate(specs)]


def fake_tables(specs: Sequence[FakeSpec] = (FakeSpec(),)) -> dict[str, pd.DataFrame]:
    """The DataFrames of a fake reproduction (every CSV of :data:`COLUMNS`) with one setting per spec."""
    tables = {}
    for name, build in _BUILDERS.items():
        rows = [
            row for spec in _studied(specs, name) for row in build(np.random.default_rng([spec.seed, len(name)]), spec)
        ]
        tables[name] = pd.DataFrame(rows, columns=COLUMNS[name])
    return tables


def write_fake_reproduction(
    out_dir: str | Path, specs: Sequence[FakeSpec] = (FakeSpec(),), *, omit: Iterable[str] = (), preset: bool = True
) -> Path:
    """Write ``preset.json`` and the CSVs of a fake reproduction into ``out_dir`` (created),
    leaving out the CSV stems in ``omit`` (and ``preset.json`` if ``preset`` is false)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped = set(omit)
    for name, frame in fake_tables(specs).items():
        if name not in skipped:
            write_table(out, name, frame.to_dict("records"))
    if preset:
        first = specs[0] if specs else FakeSpec()  # a preset without few-shot settings (the meta-RL study's)
        resolved = {
            "preset": "fake",
            "note": "synthetic numbers from tests/fake_reproduction.py; nothing was trained",
            "description": "Synthetic numbers from tests/fake_reproduction.py: nothing was trained.",
            "notes": ["The numbers are made up; only their shape is real."],
            "settings": [asdict(spec) for spec in specs],
            "runs": [run for spec in specs for run in _runs(spec)],
            "stages": {
                "train": {"algorithms": ["maml", "anil"], "iterations": max(first.iterations)},
                "evaluate": {"tasks": first.n_tasks, "seeds": list(range(first.n_seeds))},
                "similarity": {"measures": list(first.measures)},
            },
        }
        atomic_write_text(out / "preset.json", json.dumps(resolved, indent=2) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/fake_reproduction.py DIR")
    print(write_fake_reproduction(sys.argv[1]))
