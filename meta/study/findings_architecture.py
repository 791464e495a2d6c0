"""The architecture study's verdicts: for each conv4 variant, does MAML reuse its features or
does its body adapt (rapid learning)? From ``table_architecture_accuracy`` and
``figure_architecture_similarity`` (docs/formats.md, "Reproduction output").

The rule, per setting and variant, on MAML's rows, thresholds from :class:`meta.study.verdicts.Rules`:

- the frozen-body drop ``d = acc(nothing frozen, the run's steps) - max_s acc(conv1-4 frozen, s)``
  over the step counts ``s`` measured (the run's test-time steps and ``head_steps_factor`` times
  as many: a frozen body leaves the head alone to adapt) is at most ``reuse_drop_max`` points;
- conv4's similarity before adaptation vs after the last inner step (mean CCA; linear CKA
  where there is no CCA) is at least ``reuse_conv4_min``.

Both: :data:`REUSED` ("features are reused"); either fails: :data:`ADAPTS` ("the body adapts");
a number missing: :data:`meta.study.verdicts.NOT_MEASURED`. :func:`architecture_verdicts` gives
one :class:`VariantVerdict` each, :func:`verdict_frame` them as a table, :func:`verdict_sentence`
one as a sentence a reader can act on.

Imports: :mod:`meta.study` (labels, schema, verdicts, presets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from meta.study.labels import ARCHITECTURE_LABELS, label, measure_label
from meta.study.presets import ARCHITECTURES
from meta.study.schema import COLUMNS, by_setting, finite, ordered, setting_label
from meta.study.verdicts import NOT_MEASURED, RULES, Rules

#: The two verdicts on a variant.
REUSED, ADAPTS = "features are reused", "the body adapts"
#: Similarity measures the rule may use, preferred first.
_MEASURES = ("cca", "cka")


@dataclass(frozen=True)
class VariantVerdict:
    """The verdict on one conv4 variant in one setting.

    Attributes:
        setting: e.g. ``"glyphs 5-way 1-shot"``.
        architecture: the variant (``reference``, ``miniimagenet-conv4``...).
        verdict: :data:`REUSED`, :data:`ADAPTS` or ``not measured``.
        drop: the frozen-body drop ``d`` in points (None when not measured).
        frozen_steps: the step count of the best conv1-4-frozen accuracy.
        conv4: conv4's similarity after the last inner step (None when not measured).
        measure, step: the measure and the inner step of ``conv4``.
        numbers: the accuracies behind ``drop`` (display text).
        why: what is missing, for a variant not measured.
    """

    setting: str
    architecture: str
    verdict: str
    drop: float | None = None
    frozen_steps: int | None = None
    conv4: float | None = None
    measure: str = ""
    step: int | None = None
    numbers: Mapping[str, str] = field(default_factory=dict)
    why: str = ""


def rule_text(rules: Rules = RULES) -> str:
    """The rule in words, with its thresholds."""
    return (
        "features are reused in a conv4 variant when freezing conv1-4 in MAML's test-time inner loop costs at most "
        f"{rules.reuse_drop_max} accuracy points (the better of the run's inner steps and the longer head-only "
        f"loop) and MAML's conv4 similarity before vs after the last inner step (mean CCA) is at least "
        f"{rules.reuse_conv4_min}; otherwise the body adapts (rapid learning)"
    )


def describe(architecture: str) -> str:
    """``"miniImageNet conv4 (the miniImageNet conv4 on the same images: ...)"``: name and what it is."""
    name = label("architecture", architecture)
    known = ARCHITECTURES.get(architecture)
    return f"{name} ({known.description})" if known else name


def frozen_drop(rows: pd.DataFrame) -> tuple[float | None, int | None, dict[str, str]]:
    """The frozen-body drop of MAML's freezing rows of one variant: (drop, steps of the best
    conv1-4-frozen accuracy, the accuracies used); (None, None, {}) when a row is missing."""
    freezing = rows[(rows["algorithm"] == "maml") & (rows["procedure"] == "freezing")]
    none = freezing[freezing["frozen"] == "none"].sort_values("steps")
    frozen = freezing[freezing["frozen"] == "conv1-4"].groupby("steps")["accuracy"].mean()
    frozen = frozen[frozen.map(finite).astype(bool)]
    if none.empty or frozen.empty or not finite(none["accuracy"].iloc[0]):
        return None, None, {}
    base, steps = float(none["accuracy"].iloc[0]), int(none["steps"].iloc[0])
    best_steps = int(frozen.idxmax())
    numbers = {
        "nothing frozen (%)": f"{base:.2f} ({steps} steps)",
        "conv1-4 frozen, best (%)": f"{frozen.max():.2f} ({best_steps} steps)",
    }
    return base - float(frozen.max()), best_steps, numbers


def conv4_similarity(rows: pd.DataFrame) -> tuple[float | None, str, int | None]:
    """MAML's conv4 similarity after the last inner step of one variant: (value, measure, step),
    mean CCA preferred; (None, "", None) when there is none."""
    conv4 = rows[(rows["algorithm"] == "maml") & (rows["layer"] == "conv4")]
    conv4 = conv4[conv4["value"].map(finite).astype(bool)]
    for measure in [m for m in _MEASURES if m in set(conv4["measure"])]:
        part = conv4[conv4["measure"] == measure]
        last = part[part["step"] == part["step"].max()]
        return float(last["value"].mean()), measure, int(last["step"].iloc[0])
    return None, "", None


def _verdict(setting: str, architecture: str, accuracy: pd.DataFrame, similarity: pd.DataFrame, rules: Rules):
    """The :class:`VariantVerdict` of one variant from its rows of both CSVs."""
    drop, steps, numbers = frozen_drop(accuracy)
    conv4, measure, step = conv4_similarity(similarity)
    missing = [
        what for what, value in (("MAML's freezing rows", drop), ("MAML's conv4 similarity", conv4)) if value is None
    ]
    if missing:
        why = f"no {' and no '.join(missing)}"
        return VariantVerdict(setting, architecture, NOT_MEASURED, drop, steps, conv4, measure, step, numbers, why)
    reused = drop <= rules.reuse_drop_max and conv4 >= rules.reuse_conv4_min
    verdict = REUSED if reused else ADAPTS
    return VariantVerdict(setting, architecture, verdict, drop, steps, conv4, measure, step, numbers)


def architecture_verdicts(tables: Mapping[str, pd.DataFrame], rules: Rules = RULES) -> list[VariantVerdict]:
    """A verdict per setting and conv4 variant of ``table_architecture_accuracy`` (the reference
    first, then the study's variants); empty when that CSV is absent."""
    accuracy = tables.get("table_architecture_accuracy")
    if accuracy is None or accuracy.empty:
        return []
    similarity = tables.get("figure_architecture_similarity")
    verdicts = []
    for key, part in by_setting(accuracy):
        for architecture in ordered(part["architecture"], tuple(ARCHITECTURE_LABELS)):
            mine, theirs = _of(part, key, architecture), _of(similarity, key, architecture)
            verdicts.append(_verdict(setting_label(*key), architecture, mine, theirs, rules))
    return verdicts


def _of(frame: pd.DataFrame | None, key: tuple, architecture: str) -> pd.DataFrame:
    """The rows of ``frame`` (a CSV of the study; None: absent) of one setting and variant."""
    if frame is None:
        return pd.DataFrame(columns=list(COLUMNS["figure_architecture_similarity"]))
    setting = (frame["dataset"] == key[0]) & (frame["ways"] == key[1]) & (frame["shots"] == key[2])
    return frame[setting & (frame["architecture"] == architecture)]


def verdict_sentence(v: VariantVerdict, rules: Rules = RULES) -> str:
    """The verdict on a variant with the numbers beside it, in words."""
    head = f"{describe(v.architecture)}: {v.verdict}"
    if v.drop is None or v.conv4 is None:
        return f"{head} ({v.why})."
    drop_ok = "within" if v.drop <= rules.reuse_drop_max else "more than"
    conv4_ok = "at least" if v.conv4 >= rules.reuse_conv4_min else "below"
    return (
        f"{head}. Freezing conv1-4 at test time costs MAML {v.drop:.2f} points ({drop_ok} the rule's "
        f"{rules.reuse_drop_max}); conv4's {measure_label(v.measure)} before vs after inner step {v.step} is "
        f"{v.conv4:.3f} ({conv4_ok} the rule's {rules.reuse_conv4_min})."
    )


def verdict_frame(verdicts: list[VariantVerdict], rules: Rules = RULES) -> pd.DataFrame:
    """The verdicts as a table of display text: variant, the numbers the rule used, whether each
    part of the rule holds, the verdict (and the setting where there are several)."""
    rows = []
    for v in verdicts:
        similarity = "" if v.conv4 is None else f"{v.conv4:.3f} ({measure_label(v.measure)}, step {v.step})"
        rows.append(
            {
                "setting": v.setting,
                "conv4 variant": label("architecture", v.architecture),
                **v.numbers,
                "drop (points)": "" if v.drop is None else f"{v.drop:.2f}",
                f"drop ≤ {rules.reuse_drop_max}": ""
                if v.drop is None
                else ("yes" if v.drop <= rules.reuse_drop_max else "no"),
                "MAML conv4 similarity": similarity,
                f"≥ {rules.reuse_conv4_min}": ""
                if v.conv4 is None
                else ("yes" if v.conv4 >= rules.reuse_conv4_min else "no"),
                "verdict": v.verdict,
            }
        )
    frame = pd.DataFrame(rows).fillna("")
    return frame.drop(columns="setting") if frame.empty or frame["setting"].nunique() == 1 else frame
