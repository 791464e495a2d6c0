"""The report of a reproduction folder: a Markdown file per table (:func:`table_markdown`), the
figures as PNG, and one self-contained ``report.html`` (:func:`report_html`) with our numbers
beside the paper's and the verdicts on its findings; :func:`write_paper_outputs` writes them all.

Input: the folder written by ``python -m meta reproduce --out DIR`` (docs/formats.md,
"Reproduction output"): ``preset.json``, ``tables/*.csv`` and ``figures/*.csv``. Every number comes
from those CSVs (:mod:`meta.study.comparison`, :mod:`meta.study.findings`,
:mod:`meta.study.figures`). A CSV that is absent is "not measured": its section says so and the
rest of the report is written. The page's style and skeleton are the package files
``report.css`` and ``report_template.html``.

Imports: :mod:`meta.study` (schema, paper, comparison, findings, figures) and :mod:`repsim.io`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from meta.study import paper
from meta.study.comparison import comparison_table, format_frame, paper_display
from meta.study.figures import FIGURES, figure_png
from meta.study.findings import RULES, Finding, Rules, check_findings
from meta.study.schema import FIGURE_NAMES, TABLE_NAMES, folder_of, load_tables
from repsim.io import atomic_write_bytes, atomic_write_text, markdown_table

TITLES: dict[str, str] = {
    "table1_freezing": "Table 1: freezing layers in the test-time inner loop",
    "table2_anil_vs_maml": "Table 2: ANIL vs MAML",
    "table3_cross_model_similarity": "Table 3: similarity of MAML and ANIL representations across models",
    "table4_nil": "Table 4: NIL-testing vs MAML and ANIL",
    "table5_body_regimes": "Table 5: how the body was trained, all tested with NIL",
    "figure2_adaptation_similarity": "Figure 2: similarity of each layer before vs after adaptation",
    "figure3_early_training": "Figure 3: feature reuse early in training",
}


def load_preset(out_dir: str | Path) -> dict[str, Any] | None:
    """``out_dir/preset.json`` as a dict, or None when absent (``ValueError`` if it is not JSON)."""
    path = Path(out_dir) / "preset.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def provenance_lines(name: str) -> list[str]:
    """Where the paper's ``name`` comes from, one line each: citation, claim, setting, meaning of
    ±, note (if any), text version."""
    source = paper.PROVENANCE[name]
    note = [f"Note: {source.note}"] if source.note else []
    return [
        f"{source.label} of {paper.CITATION}",
        f"Claim: {source.caption}",
        f"Setting: {source.setting}",
        f"± in the paper: {source.pm}.",
        *note,
        f"Numbers read from: {source.version}.",
    ]


def table_markdown(name: str, ours: pd.DataFrame) -> str:
    """The text of ``tables/<name>.md``: every row of our CSV, our numbers beside the paper's,
    and the paper's table with its provenance."""
    parts = [
        f"# {TITLES[name]}\n",
        f"Ours: every row of `tables/{name}.csv`. Accuracies in percent; `ci95` is the half-width of a "
        "95% confidence interval over test tasks; `std_seeds` the standard deviation over seeds.\n",
        markdown_table(format_frame(ours)) if not ours.empty else "_No rows: not measured._\n",
        "## Beside the paper\n",
    ]
    beside = comparison_table(name, {name: ours}) if not ours.empty else pd.DataFrame()
    parts.append(markdown_table(beside) if not beside.empty else "_Nothing comparable._\n")
    parts.append(f"## The paper's {paper.PROVENANCE[name].label}\n")
    parts.append(markdown_table(paper_display(name)))
    parts.append("\n".join(f"- {line}" for line in provenance_lines(name)) + "\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def _package_text(name: str) -> str:
    """The text of the file ``name`` shipped in this package (``report.css``, ``report_template.html``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _esc(value: Any) -> str:
    """``value`` as text escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def _html_table(frame: pd.DataFrame) -> str:
    """A DataFrame of display strings as an HTML table (every cell escaped)."""
    if frame.empty:
        return '<p class="note">Nothing to show.</p>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_span(verdict: str) -> str:
    """The verdict as a ``<span>`` whose class colours it."""
    return f'<span class="verdict {verdict.replace(" ", "-")}">{_esc(verdict)}</span>'


def _findings_html(findings: Sequence[Finding]) -> str:
    """The findings as an HTML table: paper, claim, verdict, rule, our numbers."""
    rows = "".join(
        f"<tr><td>{_esc(f.source)}</td><td>{_esc(f.claim)}</td><td>{_verdict_span(f.verdict)}</td>"
        f"<td>{_esc(f.rule)}</td><td><ul>{''.join(f'<li>{_esc(e)}</li>' for e in f.evidence)}</ul></td></tr>"
        for f in findings
    )
    return (
        "<table><thead><tr><th>paper</th><th>claim</th><th>verdict</th><th>rule</th><th>our numbers</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as (dotted key, JSON value) pairs."""
    if isinstance(value, dict) and value:
        return [
            pair for key, item in value.items() for pair in _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        ]
    return [(prefix or "(value)", json.dumps(value))]


def _settings_html(out_dir: Path, preset: dict[str, Any] | None, tables: Mapping[str, pd.DataFrame]) -> str:
    """The folder, the CSVs found and every setting of ``preset.json`` (or a note that it is absent)."""
    measured = ", ".join(tables) if tables else "none"
    parts = [f"<p>Folder: <code>{_esc(out_dir.resolve())}</code>. CSVs found: {_esc(measured)}.</p>"]
    if preset is None:
        parts.append('<p class="note">preset.json not found: the settings of this reproduction are unknown.</p>')
        return "".join(parts)
    if preset.get("description"):
        parts.append(f"<p><b>Preset {_esc(preset.get('preset', ''))}</b>: {_esc(preset['description'])}</p>")
    notes = "".join(f"<li>{_esc(note)}</li>" for note in preset.get("notes", ()))
    if notes:
        parts.append(f"<ul>{notes}</ul>")
    pairs = pd.DataFrame(_flatten(preset), columns=["setting", "value"])
    parts.append(
        "<details><summary>Every setting of every run (<code>preset.json</code>)</summary>"
        f"{_html_table(pairs)}</details>"
    )
    return "".join(parts)


def _png_html(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` inline (base64 data URL)."""
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _section_html(
    name: str, tables: Mapping[str, pd.DataFrame], findings: Sequence[Finding], figures: Mapping[str, bytes]
) -> str:
    """One table or figure as a ``<section>``: its verdicts, ours, beside the paper, the paper's
    numbers and provenance."""
    source = paper.PROVENANCE[name]
    parts = [
        f'<section id="{name}"><h2>{_esc(TITLES[name])}</h2>',
        f'<p class="note">Paper ({_esc(source.label)}): {_esc(source.caption)}</p>',
    ]
    related = [f for f in findings if f.source == source.label]
    parts += [f"<p>Finding: {_verdict_span(f.verdict)} ({_esc(f.rule)}).</p>" for f in related]
    ours = tables.get(name)
    if ours is None or ours.empty:
        parts.append(
            f'<p class="verdict not-measured">Not measured: no {folder_of(name)}/{name}.csv rows in this folder.</p>'
        )
    else:
        if name in figures:
            parts.append(_png_html(figures[name], TITLES[name]))
        parts.append(f"<h3>Ours</h3>{_html_table(format_frame(ours))}")
        beside = comparison_table(name, tables)
        if not beside.empty:
            parts.append(f"<h3>Beside the paper</h3>{_html_table(beside)}")
    if name in paper.FIGURE_FINDINGS:
        parts.append(f"<h3>What the paper shows</h3><p>{_esc(paper.FIGURE_FINDINGS[name])}</p>")
    parts.append(f"<h3>The paper's numbers</h3>{_html_table(paper_display(name))}")
    parts.append('<ul class="note">' + "".join(f"<li>{_esc(line)}</li>" for line in provenance_lines(name)) + "</ul>")
    return "".join(parts) + "</section>"


def report_html(
    out_dir: str | Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    findings: Sequence[Finding],
    figures: Mapping[str, bytes],
    preset: dict[str, Any] | None,
) -> str:
    """The self-contained report as one HTML string: ``report_template.html`` filled in, with
    ``report.css`` inline, figures as base64 PNG, no reference to any other file or URL (links
    only to its own sections)."""
    names = (*TABLE_NAMES, *FIGURE_NAMES)
    return Template(_package_text("report_template.html")).substitute(
        css=_package_text("report.css"),
        citation=_esc(paper.CITATION),
        source_version=_esc(paper.SOURCE_VERSION),
        nav="".join(f'<a href="#{n}">{_esc(paper.PROVENANCE[n].label)}</a>' for n in names),
        findings=_findings_html(findings),
        settings=_settings_html(Path(out_dir), preset, tables),
        sections="\n".join(_section_html(name, tables, findings, figures) for name in names),
        missing="".join(f"<li><b>{_esc(m['what'])}</b>: {_esc(m['why'])}</li>" for m in paper.MISSING),
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
    for name in TABLE_NAMES:
        if name in tables:
            atomic_write_text(out / "tables" / f"{name}.md", table_markdown(name, tables[name]))
    figures = {}
    for name, draw in FIGURES.items():
        if name in tables and not tables[name].empty:
            figures[name] = figure_png(draw(tables[name]))
            atomic_write_bytes(out / "figures" / f"{name}.png", figures[name])
    findings = check_findings(tables, rules=rules)
    return atomic_write_text(
        out / "report.html", report_html(out, tables, findings=findings, figures=figures, preset=preset)
    )
