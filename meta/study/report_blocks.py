"""The pieces a section of ``report.html`` is made of, and their HTML: a paragraph
(:class:`Text`), a table of display strings (:class:`Table`, a two-row header for two-level
columns), a figure with its caption (:class:`Picture`), a bulleted list (:class:`Bullets`) and a
folded part (:class:`Details`). :func:`to_html` renders any of them; every text is escaped.

A section's content is a list of blocks (:mod:`meta.study.report_sections`), so that a new
analysis adds a function returning blocks and never writes HTML.

Imports: pandas and the standard library; nothing of :mod:`meta`.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: A cell that reads as a number (``90.17``, ``+0.34``, ``0.939 ± 0.010``, ``> 0.9``) is right-aligned.
_NUMERIC = re.compile(r"^[<>≥≤]?\s*[+−-]?\d")
#: The column whose cells are verdicts (coloured).
VERDICT = "verdict"


@dataclass(frozen=True)
class Text:
    """A paragraph; ``css`` its class (``note``, ``missing``); ``link`` a (label, address) shown
    after the text (an address inside the reproduction folder, e.g. ``preset.json``)."""

    text: str
    css: str = ""
    link: tuple[str, str] | None = None


@dataclass(frozen=True)
class Table:
    """A table of display strings (two-level columns give a two-row header) with a caption."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Picture:
    """A PNG figure, inlined, with its caption (what is drawn, which measure, what the error bars are)."""

    png: bytes
    alt: str
    caption: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Details:
    """Blocks folded under a one-line summary (numbers a reader may want, shown on request)."""

    summary: str
    blocks: tuple[Block, ...]


Block = Text | Table | Picture | Bullets | Details


def esc(value: Any) -> str:
    """``value`` as text escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def verdict_html(verdict: str) -> str:
    """The verdict as a ``<span>`` whose class colours it (``holds``, ``does-not-hold``...)."""
    return f'<span class="verdict {verdict.replace(" ", "-")}">{esc(verdict)}</span>'


def _cell(column: Any, value: Any) -> str:
    """One ``<td>``: verdicts coloured, numbers right-aligned."""
    name = column[0] if isinstance(column, tuple) else column
    if name == VERDICT and value:
        return f"<td>{verdict_html(str(value))}</td>"
    numeric = ' class="num"' if _NUMERIC.match(str(value)) else ""
    return f"<td{numeric}>{esc(value)}</td>"


def _header(columns: pd.Index) -> str:
    """The ``<thead>``: one row, or two for two-level columns (equal neighbours of the first level
    merged; a column without a second level spans both rows)."""
    if columns.nlevels == 1:
        return "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr></thead>"
    groups: list[list[Any]] = []  # [first level, span, has a second level]
    for first, second in columns:
        if groups and groups[-1][0] == first and second and groups[-1][2]:
            groups[-1][1] += 1
        else:
            groups.append([first, 1, bool(second)])
    upper = "".join(
        f'<th colspan="{span}">{esc(first)}</th>' if nested else f'<th rowspan="2">{esc(first)}</th>'
        for first, span, nested in groups
    )
    lower = "".join(f"<th>{esc(second)}</th>" for _, second in columns if second)
    return f"<thead><tr>{upper}</tr><tr>{lower}</tr></thead>"


def table_html(frame: pd.DataFrame, caption: str = "") -> str:
    """``frame`` (display strings) as an HTML table, every cell escaped; columns named by
    (group, name) pairs get a two-row header."""
    if frame.empty:
        return '<p class="note">Nothing to show.</p>'
    if frame.columns.nlevels == 1 and any(isinstance(c, tuple) for c in frame.columns):
        frame = frame.set_axis(
            pd.MultiIndex.from_tuples([c if isinstance(c, tuple) else (c, "") for c in frame.columns]), axis=1
        )
    head = f'<p class="caption">{esc(caption)}</p>' if caption else ""
    body = "".join(
        "<tr>" + "".join(_cell(c, v) for c, v in zip(frame.columns, row)) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"{head}<table>{_header(frame.columns)}<tbody>{body}</tbody></table>"


def to_html(block: Block) -> str:
    """``block`` as HTML."""
    if isinstance(block, Text):
        link = f' <a href="{esc(block.link[1])}">{esc(block.link[0])}</a>' if block.link else ""
        css = f' class="{block.css}"' if block.css else ""
        return f"<p{css}>{esc(block.text)}{link}</p>"
    if isinstance(block, Table):
        return table_html(block.frame, block.caption)
    if isinstance(block, Picture):
        data = base64.b64encode(block.png).decode("ascii")
        return (
            f'<figure><img alt="{esc(block.alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(block.caption)}</figcaption></figure>"
        )
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
    return f"<details><summary>{esc(block.summary)}</summary>{blocks_html(block.blocks)}</details>"


def blocks_html(blocks: Sequence[Block]) -> str:
    """Every block of ``blocks`` as HTML, in order."""
    return "".join(to_html(block) for block in blocks)
