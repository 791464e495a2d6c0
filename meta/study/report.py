"""The report of a reproduction folder: a Markdown file per table (:func:`table_markdown`), the
figures as PNG, and one self-contained ``report.html`` (:func:`report_html`) with the verdicts on
the paper's findings and our numbers beside the paper's; :func:`write_paper_outputs` writes them
all.

Input: the folder written by ``python -m meta reproduce --out DIR`` (docs/formats.md,
"Reproduction output"): ``preset.json``, ``tables/*.csv`` and ``figures/*.csv``. Every number comes
from those CSVs (:mod:`meta.study.comparison`, :mod:`meta.study.findings`,
:mod:`meta.study.figures`). A CSV that is absent is "not measured": its section says so and the
rest of the report is written. The page is laid out by :mod:`meta.study.report_sections` (one
section per table or figure of the paper) and :mod:`meta.study.report_analyses` (one per further
analysis, after them), :mod:`meta.study.report_settings` (what was run) and
:mod:`meta.study.report_blocks` (the HTML of tables, figures, paragraphs); its style and skeleton
are the package files ``report.css`` and ``report_template.html``. The page links only to its own
sections and to ``preset.json`` beside it; figures are inlined.

Imports: :mod:`meta.study` (schema, paper, comparison, findings, figures, figures_analyses,
labels, report_*) and
:mod:`repsim.io`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from meta.study import paper
from meta.study.comparison import comparison_view, format_frame, paper_display
from meta.study.figures import figure_png
from meta.study.figures_analyses import REPORT_FIGURES
from meta.study.findings import RULES, Finding, Rules, check_findings
from meta.study.labels import column_notes
from meta.study.report_analyses import ANALYSIS_SECTIONS, RL_SECTIONS
from meta.study.report_blocks import blocks_html, esc
from meta.study.report_sections import SECTIONS, Context, Section, provenance_lines, section_html, summary_html
from meta.study.report_settings import settings_blocks
from meta.study.rl_report import rl_table_markdown
from meta.study.schema import RL_NAMES, folder_of, load_tables
from repsim.io import atomic_write_bytes, atomic_write_text, markdown_table

__all__ = [
    "ALL_SECTIONS",
    "load_preset",
    "studied_findings",
    "provenance_lines",
    "report_html",
    "studied_sections",
    "table_markdown",
    "write_paper_outputs",
]

#: The report's sections: the paper's tables and figures, the further analyses, the meta-RL study.
ALL_SECTIONS = SECTIONS + ANALYSIS_SECTIONS + RL_SECTIONS
#: Each section's heading, by CSV stem.
TITLES: dict[str, str] = {section.name: section.title for section in ALL_SECTIONS}


def load_preset(out_dir: str | Path) -> dict[str, Any] | None:
    """``out_dir/preset.json`` as a dict, or None when absent (``ValueError`` if it is not JSON)."""
    path = Path(out_dir) / "preset.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def studied_sections(preset: Mapping[str, Any] | None) -> tuple[Section, ...]:
    """The sections of what the folder's preset studies: the meta-RL study's where its settings
    have ``rl``, the few-shot study's unless it is a meta-RL preset without few-shot settings (or
    where no ``preset.json`` says)."""
    settings = preset.get("settings") if isinstance(preset, Mapping) else None
    settings = settings if isinstance(settings, Mapping) else {}
    rl = bool(settings.get("rl"))
    few_shot = not rl or bool(settings.get("settings"))
    return tuple(s for s in ALL_SECTIONS if (s.name in RL_NAMES and rl) or (s.name not in RL_NAMES and few_shot))


def studied_findings(
    tables: Mapping[str, pd.DataFrame], preset: Mapping[str, Any] | None, *, rules: Rules = RULES
) -> list[Finding]:
    """The verdicts on the findings checked in the sections of what the preset studies
    (:func:`studied_sections`): a meta-RL folder has no verdicts on the few-shot findings, nor a
    few-shot folder on the meta-RL one."""
    names = {section.name for section in studied_sections(preset)}
    return [f for f in check_findings(tables, rules=rules) if f.table in names]


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _paper_markdown(name: str, ours: pd.DataFrame) -> list[str]:
    """The Markdown parts on the paper's ``name``: ours beside it (a sentence per setting), its
    own numbers, where they come from."""
    notes, view = comparison_view(name, {name: ours}) if not ours.empty else ([], pd.DataFrame())
    label = paper.PROVENANCE[name].label
    return [
        "## Beside the paper\n",
        *([" ".join(notes) + "\n"] if notes else []),
        markdown_table(view) if not view.empty else "_Nothing of ours to set beside the paper's numbers._\n",
        f"## The paper's {label}\n",
        markdown_table(paper_display(name)),
        " ".join(provenance_lines(name)) + "\n",
    ]


def table_markdown(name: str, ours: pd.DataFrame) -> str:
    """The text of ``tables/<name>.md``: every row of our CSV with what its columns hold, then,
    for a table of the paper, ours beside the paper's numbers and the paper's table."""
    notes = "\n".join(f"- `{column}`: {note}" for column, note in column_notes(name, ours.columns))
    parts = [
        f"# {TITLES.get(name, name)}\n",
        f"Every row of `{folder_of(name)}/{name}.csv`." + (f" Columns:\n\n{notes}\n" if notes else "\n"),
        markdown_table(format_frame(ours)) if not ours.empty else "_No rows: not measured._\n",
    ]
    if name in paper.PROVENANCE:
        parts += _paper_markdown(name, ours)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def _package_text(name: str) -> str:
    """The text of the file ``name`` shipped in this package (``report.css``, ``report_template.html``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _lead(preset: Mapping[str, Any] | None) -> str:
    """The opening paragraph: what the page holds, which preset, where the paper's numbers come from."""
    which = f" of the preset {esc(preset['preset'])}" if preset and preset.get("preset") else ""
    return (
        f"<p>Our reproduction{which}: a verdict on each of the paper's findings, then every table and figure "
        f"with our numbers beside the paper's. The paper's numbers are those of {esc(paper.SOURCE_VERSION)}: "
        f"{esc(paper.CITATION)}</p>"
    )


def report_html(
    out_dir: str | Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    findings: Sequence[Finding],
    figures: Mapping[str, bytes],
    preset: dict[str, Any] | None,
) -> str:
    """The self-contained report as one HTML string: ``report_template.html`` filled in, with
    ``report.css`` inline and figures as base64 PNG; it links only to its own sections and to
    ``preset.json`` in the folder. ``findings``: the verdicts of :func:`studied_findings`."""
    sections = studied_sections(preset)
    context = Context(tables, figures, findings)
    missing = "".join(f"<li><b>{esc(m['what'])}</b>: {esc(m['why'])}</li>" for m in paper.MISSING)
    return Template(_package_text("report_template.html")).substitute(
        css=_package_text("report.css"),
        lead=_lead(preset),
        nav="".join(f'<a href="#{s.name}">{esc(s.label)}</a>' for s in sections),
        summary=summary_html(findings),
        settings=blocks_html(settings_blocks(Path(out_dir), preset, tables, [s.name for s in sections])),
        sections="\n".join(section_html(section, context) for section in sections),
        missing=missing,
    )


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_paper_outputs(out_dir: str | Path, *, rules: Rules = RULES) -> Path:
    """Write, from the CSVs of the reproduction folder ``out_dir``: ``tables/<name>.md`` for each
    table CSV present, ``figures/<name>.png`` for each figure CSV with rows, and ``report.html``
    (self-contained). Every file is written atomically. Returns the path of ``report.html``."""
    out = Path(out_dir)
    tables = load_tables(out)
    preset = load_preset(out)
    for name, frame in tables.items():
        if folder_of(name) == "tables":
            text = rl_table_markdown(frame) if name in RL_NAMES else table_markdown(name, frame)
            atomic_write_text(out / "tables" / f"{name}.md", text)
    figures = {}
    for name, spec in REPORT_FIGURES.items():
        if name in tables and not tables[name].empty:
            figures[name] = figure_png(spec.draw(tables[name]))
            atomic_write_bytes(out / "figures" / f"{name}.png", figures[name])
    findings = studied_findings(tables, preset, rules=rules)
    return atomic_write_text(
        out / "report.html", report_html(out, tables, findings=findings, figures=figures, preset=preset)
    )
