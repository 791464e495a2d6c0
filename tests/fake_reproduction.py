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
from dataclasses import asdict, dataclass
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
    iterations: tuple[int, ...] = (100, 200, 300)
    measures: tuple[str, ...] = ("cca", "cka")


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
    for comparison, n_pairs in pairs.items():
        for measure in spec.measures:
            for depth, layer in enumerate(LAYERS):
                value = base.get(measure, 0.6) - 0.04 * depth + float(rng.normal(0, 0.01))
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


_BUILDERS = {
    "table1_freezing": _table1,
    "table2_anil_vs_maml": _table2,
    "table3_cross_model_similarity": _table3,
    "table4_nil": _table4,
    "table5_body_regimes": _table5,
    "figure2_adaptation_similarity": _figure2,
    "figure3_early_training": _figure3,
}


def fake_tables(specs: Sequence[FakeSpec] = (FakeSpec(),)) -> dict[str, pd.DataFrame]:
    """The seven DataFrames of a fake reproduction with one setting per spec."""
    tables = {}
    for name, build in _BUILDERS.items():
        rows = [row for spec in specs for row in build(np.random.default_rng([spec.seed, len(name)]), spec)]
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
        resolved = {
            "preset": "fake",
            "note": "synthetic numbers from tests/fake_reproduction.py; nothing was trained",
            "settings": [asdict(spec) for spec in specs],
            "stages": {
                "train": {"algorithms": ["maml", "anil"], "iterations": max(specs[0].iterations)},
                "evaluate": {"tasks": specs[0].n_tasks, "seeds": list(range(specs[0].n_seeds))},
                "similarity": {"measures": list(specs[0].measures)},
            },
        }
        atomic_write_text(out / "preset.json", json.dumps(resolved, indent=2) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/fake_reproduction.py DIR")
    print(write_fake_reproduction(sys.argv[1]))
