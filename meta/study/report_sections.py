"""The sections of ``report.html``, one per table or figure (:data:`SECTIONS`, in the paper's
order), and how a section is laid out (:func:`section_html`).

A section is a :class:`Section`: the CSV it is about, its label and title, and a function that
turns the CSV's rows into blocks (:mod:`meta.study.report_blocks`: compact tables, the figure
with its caption). :func:`section_html` puts around them what every section has: the verdict on
each finding checked on that CSV (:mod:`meta.study.findings`, with its rule and a table of the
checks), a plain sentence when the CSV is missing, and, for the paper's tables and figures, the
paper's own numbers and where they come from.

To add a section (a new analysis): write ``def _<name>_blocks(frame, context) -> list[Block]``
(use :func:`figure_blocks` for a figure of :data:`meta.study.figures_analyses.REPORT_FIGURES`, :func:`pivot`
for a compact table, :func:`accuracy_blocks` for an accuracy table with the paper's numbers
beside ours) and append ``Section(name, label, title, _<name>_blocks)`` to :data:`SECTIONS` (the
paper's) or to :data:`meta.study.report_analyses.ANALYSIS_SECTIONS` (further analyses, after the
paper's); findings whose ``table`` is ``name`` appear in it by themselves.

Imports: :mod:`meta.study` (paper, schema, comparison, figures_analyses, findings, verdicts,
labels, report_blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from meta.core.names import BODY, LAYERS
from meta.study import paper
from meta.study.comparison import DIFFERENCE, PAPER, body_means, comparison_view, paper_display, pm_text, stated_text
from meta.study.figures_analyses import REPORT_FIGURES
from meta.study.labels import COLUMN_LABELS, interval_text, label, measure_label
from meta.study.report_blocks import Block, Details, Picture, Table, Text, blocks_html, esc, table_html, verdict_html
from meta.study.schema import ORDER, SHARED, by_setting, folder_of, ordered, setting_label, sorted_rows
from meta.study.verdicts import Finding, evidence_frame

#: Display rows added to Table 3's per-layer table.
BODY_MEAN, PAPER_BODY = "mean over conv1-4", "the paper: mean over the body"


@dataclass(frozen=True)
class Context:
    """What a section may draw on: every table of the folder (by CSV stem), the PNG of each
    figure drawn (by CSV stem) and the verdicts on the findings."""

    tables: Mapping[str, pd.DataFrame]
    figures: Mapping[str, bytes]
    findings: Sequence[Finding]


@dataclass(frozen=True)
class Section:
    """One section of the report.

    Attributes:
        name: the CSV stem it is about (:data:`meta.study.schema.COLUMNS`); also its anchor.
        label: short name for the navigation and the findings (``Table 1``).
        title: its heading.
        blocks: our numbers as blocks, from the CSV's rows (never empty) and the context.
    """

    name: str
    label: str
    title: str
    blocks: Callable[[pd.DataFrame, Context], list[Block]]


# ---------------------------------------------------------------------------------------------
# Building blocks of sections
# ---------------------------------------------------------------------------------------------


def pivot(
    frame: pd.DataFrame,
    index: str,
    columns: Sequence[str],
    cell: Callable[[Any], str],
    index_order: Sequence[Any] = (),
) -> pd.DataFrame:
    """A compact table of ``frame``: a row per value of ``index`` (in the order of
    ``index_order``, else the paper's), a column per combination of ``columns`` (a two-row header
    for two; in the paper's order), by display name; the cells are ``cell(row)`` (display
    strings; empty where there is no row)."""
    frame = sorted_rows(frame)
    rank = {c: {v: i for i, v in enumerate(ordered(frame[c], ORDER.get(c, ())))} for c in columns}
    cells: dict[tuple, dict[str, str]] = {}
    for row in frame.itertuples(index=False):
        key = tuple(getattr(row, c) for c in columns)
        cells.setdefault(key, {})[label(index, getattr(row, index))] = cell(row)
    keys = sorted(cells, key=lambda key: tuple(rank[c][v] for c, v in zip(columns, key)))
    names = [tuple(label(c, v) for c, v in zip(columns, key)) for key in keys]
    rows = [label(index, v) for v in ordered(frame[index], index_order or ORDER.get(index, ()))]
    table = pd.DataFrame({name if len(name) > 1 else name[0]: cells[key] for name, key in zip(names, keys)})
    table = table.reindex(rows).fillna("")
    table.index.name = COLUMN_LABELS.get(index, index)
    return table.reset_index()


def figure_blocks(name: str, frame: pd.DataFrame, context: Context) -> list[Block]:
    """The figure ``name`` with its caption (:data:`meta.study.figures_analyses.REPORT_FIGURES`),
    if it was drawn."""
    if name not in context.figures:
        return []
    caption = REPORT_FIGURES[name].caption(frame)
    return [Picture(context.figures[name], caption.split(". ")[0], caption)]


def accuracy_blocks(name: str) -> Callable[[pd.DataFrame, Context], list[Block]]:
    """Blocks of an accuracy table: a sentence per setting on what the paper has for it, then
    ours beside the paper's numbers (:func:`meta.study.comparison.comparison_view`)."""

    def blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
        notes, view = comparison_view(name, context.tables)
        caption = f"Ours: mean accuracy (%) ± {interval_text(frame['n_tasks'], frame['n_seeds'])}."
        if PAPER in view.columns:
            caption += f" Paper: ± as the paper states it ({paper.PROVENANCE[name].pm})."
        if DIFFERENCE in view.columns:
            caption += " Ours − paper: accuracy points, where the setting is the same."
        return [*(Text(note, "note") for note in notes), Table(view, caption)]

    return blocks


def _figure2_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """Figure 2: the figure, then per setting a table of every layer's similarity beside the
    bounds the paper's text states."""
    bounds = paper.paper_table("figure2_adaptation_similarity").set_index("layer")
    bound_column = ("the paper (MAML)", measure_label("cca"))
    blocks = figure_blocks("figure2_adaptation_similarity", frame, context)
    for (dataset, ways, shots), part in by_setting(frame):
        table = pivot(part, "layer", ("algorithm", "measure"), lambda r: pm_text(r.value, r.ci95, 3))
        layers = table[table.columns[0]]
        table[bound_column] = [
            f"{bounds.at[x, 'relation']} {bounds.at[x, 'value']}" if x in bounds.index else "" for x in layers
        ]
        other = "" if dataset == "miniimagenet" else ", a different data set: a reference only"
        caption = (
            f"{setting_label(dataset, ways, shots)}: similarity before vs after adaptation, mean ± "
            f"{interval_text(part['n_tasks'], part['n_seeds'])}. Last column: the bounds the paper's text states "
            f"for MAML on MiniImageNet{other}."
        )
        blocks.append(Table(table, caption))
    return blocks


def _figure3_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """Figure 3: the figure, then (folded) its numbers per setting: similarity per layer and
    accuracy per frozen set at each checkpoint."""
    tables: list[Block] = []
    for key, part in by_setting(frame):
        similarity, freezing = part[part["kind"] == "similarity"], part[part["kind"] == "freezing"]
        for measure in ordered(similarity["measure"]):
            rows = similarity[similarity["measure"] == measure]
            caption = f"{setting_label(*key)}, MAML: {measure_label(measure)} before vs after adaptation, per layer."
            tables.append(Table(pivot(rows, "iteration", ("layer",), lambda r: f"{r.value:.3f}"), caption))
        if not freezing.empty:
            caption = f"{setting_label(*key)}, MAML: accuracy (%) with the named layers frozen at test time."
            tables.append(Table(pivot(freezing, "iteration", ("layer",), lambda r: f"{r.value:.2f}"), caption))
    return [
        *figure_blocks("figure3_early_training", frame, context),
        Details("Our numbers at each checkpoint", tuple(tables)),
    ]


def _table3_rows(part: pd.DataFrame) -> pd.DataFrame:
    """Table 3's rows of one setting with two more "layers": our mean over conv1-4 (where every
    conv layer has a value) and the paper's mean over the body."""
    means = body_means(part)
    means = means[means["n_layers"] == len(BODY)].assign(layer=BODY_MEAN, std=float("nan"))
    measures = set(part["measure"])
    theirs = paper.paper_table("table3_cross_model_similarity")
    theirs = theirs[theirs["measure"].isin(measures)].assign(layer=PAPER_BODY, std=float("nan"))
    added = pd.concat([means, theirs[["comparison", "layer", "measure", "value", "std"]]], ignore_index=True)
    return pd.concat([part, added.assign(**{c: part[c].iloc[0] for c in SHARED})], ignore_index=True)


def _value_and_spread(row: Any) -> str:
    """A Table 3 cell: the similarity, ± its standard deviation over model pairs where there is
    one (the paper's with the decimals it states)."""
    return stated_text(row.value, None) if row.layer == PAPER_BODY else pm_text(row.value, row.std, 3)


def _table3_blocks(frame: pd.DataFrame, context: Context) -> list[Block]:
    """Table 3: per setting, a table of every layer's similarity between two models, per measure
    and pair of models, with our mean over conv1-4 and the paper's."""
    blocks: list[Block] = []
    for key, part in by_setting(frame):
        layers = (*LAYERS, BODY_MEAN, PAPER_BODY)
        table = pivot(_table3_rows(part), "layer", ("measure", "comparison"), _value_and_spread, layers)
        spread = " ± standard deviation over model pairs" if part["std"].notna().any() else " (one pair each)"
        caption = (
            f"{setting_label(*key)}: similarity between the representations two models give of the same test inputs, "
            f"mean over test tasks, then over model pairs{spread}. The paper reports the mean over the body; "
            "its setting is not stated in its main text."
        )
        blocks.append(Table(table, caption))
    return blocks


#: The report's sections, in the paper's order.
SECTIONS: tuple[Section, ...] = (
    Section(
        "table1_freezing",
        "Table 1",
        "Table 1: freezing layers in the test-time inner loop (MAML)",
        accuracy_blocks("table1_freezing"),
    ),
    Section(
        "figure2_adaptation_similarity",
        "Figure 2",
        "Figure 2: how much each layer's representation changes in the inner loop",
        _figure2_blocks,
    ),
    Section("figure3_early_training", "Figure 3", "Figure 3: feature reuse early in training", _figure3_blocks),
    Section("table2_anil_vs_maml", "Table 2", "Table 2: ANIL vs MAML", accuracy_blocks("table2_anil_vs_maml")),
    Section(
        "table3_cross_model_similarity",
        "Table 3",
        "Table 3: similarity of MAML and ANIL representations",
        _table3_blocks,
    ),
    Section("table4_nil", "Table 4", "Table 4: NIL-testing vs MAML and ANIL", accuracy_blocks("table4_nil")),
    Section(
        "table5_body_regimes",
        "Table 5",
        "Table 5: how the body was trained, every body tested with NIL",
        accuracy_blocks("table5_body_regimes"),
    ),
)


# ---------------------------------------------------------------------------------------------
# Layout of a section
# ---------------------------------------------------------------------------------------------


def provenance_lines(name: str) -> list[str]:
    """Where the paper's ``name`` comes from, in plain words: which table or figure of the paper,
    its setting and what its ``±`` means; and a note a reader comparing numbers should know."""
    source = paper.PROVENANCE[name]
    line = f"{source.label} of {paper.SHORT_CITATION}: {source.setting.rstrip('.')}; ± in the paper: {source.pm}."
    return [line, *([source.note] if source.note else [])]


def finding_html(finding: Finding) -> str:
    """A finding as a box: its verdict, the paper's claim, the rule and a table of the checks."""
    evidence = evidence_frame(finding)
    settings = ordered(evidence["setting"])
    caption = f"Checks of the rule: {settings[0]}" if len(settings) == 1 else "Checks of the rule, per setting"
    shown = evidence.drop(columns="setting") if len(settings) == 1 else evidence
    return (
        f'<div class="finding {finding.verdict.replace(" ", "-")}">'
        f"<p>{verdict_html(finding.verdict)} <b>The paper:</b> {esc(finding.claim)}</p>"
        f'<p class="rule"><b>Rule:</b> {esc(finding.rule[0].upper() + finding.rule[1:])}.</p>'
        f"{table_html(shown, caption)}</div>"
    )


def _paper_html(name: str) -> str:
    """The paper's numbers for ``name`` (compact), what its figure shows, and where they come from."""
    source = paper.PROVENANCE[name]
    parts = [f"<h3>The paper's {esc(source.label)}</h3>"]
    if name in paper.FIGURE_FINDINGS:
        parts.append(f"<p>{esc(paper.FIGURE_FINDINGS[name])}</p>")
    parts.append(table_html(paper_display(name)))
    parts.append(f'<p class="source">{esc(" ".join(provenance_lines(name)))}</p>')
    return "".join(parts)


def section_html(section: Section, context: Context) -> str:
    """One section: the verdicts of its findings, our numbers (or why there are none), and the
    paper's numbers where the paper has this table or figure."""
    frame = context.tables.get(section.name)
    parts = [f'<section id="{section.name}"><h2>{esc(section.title)}</h2>']
    parts += [finding_html(f) for f in context.findings if f.table == section.name]
    if frame is None or frame.empty:
        file = f"{folder_of(section.name)}/{section.name}.csv"
        what = "this folder has no" if frame is None else "this folder's"
        tail = "" if frame is None else " has no rows"
        parts.append(
            f'<p class="missing">Not measured: {what} {esc(file)}{tail}, so there are no numbers of ours for '
            f"{esc(section.label)}.</p>"
        )
    else:
        parts.append("<h3>Our numbers</h3>" + blocks_html(section.blocks(frame, context)))
    if section.name in paper.PROVENANCE:
        parts.append(_paper_html(section.name))
    return "".join(parts) + "</section>"


def summary_html(findings: Sequence[Finding]) -> str:
    """The findings at a glance: a row per finding with a link to its section, the claim and the verdict."""
    rows = "".join(
        f'<tr><td><a href="#{esc(f.table)}">{esc(f.source)}</a></td><td>{esc(f.claim)}</td>'
        f"<td>{verdict_html(f.verdict)}</td></tr>"
        for f in findings
    )
    return f"<table><thead><tr><th>paper</th><th>claim</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>"
