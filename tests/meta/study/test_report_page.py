"""What report.html and the figures say to a reader (meta.study.report, report_sections,
report_settings, figures): no internal identifiers, a verdict with its rule for every finding,
no empty comparison columns, figures with labelled axes, legends off the data and captions that
say what the error bars are, Markdown that describes only its own columns, a readable Settings
section, and a report for the folders of every preset and for folders with missing CSVs."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_reproduction import FakeSpec, fake_tables, write_fake_reproduction
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from meta.study.figures import FIGURES, accuracy_figure, cross_model_figure, figure2_figure, figure3_figure
from meta.study.figures_analyses import REPORT_FIGURES
from meta.study.findings import FINDINGS
from meta.study.folder import preset_record
from meta.study.plan import make_plan
from meta.study.presets import STUDY_PRESETS
from meta.study.report import studied_sections, write_paper_outputs
from meta.study.schema import ACCURACY_KEYS, RL_NAMES, csv_path, read_table

#: One seed, glyphs, the quick preset's shape (Table 3 without references).
QUICK = FakeSpec(n_seeds=1, iterations=(50, 100, 250, 500, 1000))
#: Text that must never reach a reader: code, internal names, notes on how the paper was read.
#: The findings a few-shot report has a verdict on (the meta-RL one is in the meta-RL report).
FEW_SHOT_FINDINGS = [f for f in FINDINGS if f.table not in RL_NAMES]
INTERNAL = re.compile(r"\w\(\)|\(\)|MISSING|paper_table|_rows\b|std_seeds|ci95|search tools|read through")


class _Page(HTMLParser):
    """The visible text of a page by section id, and its figures' captions."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, list[str]] = {}
        self.captions: list[str] = []
        self._section = ""
        self._skip = 0
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._section = dict(attrs).get("id") or ""
        self._skip += tag in ("style", "title")
        self._in_caption = self._in_caption or tag == "figcaption"

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "title")
        self._in_caption = self._in_caption and tag != "figcaption"

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.setdefault(self._section, []).append(data)
        if self._in_caption:
            self.captions.append(data)

    def section(self, name: str) -> str:
        return " ".join(self.text.get(name, []))


def _page(out: Path) -> tuple[str, _Page]:
    html_text = write_paper_outputs(out).read_text(encoding="utf-8")
    page = _Page()
    page.feed(html_text)
    return html_text, page


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, str, _Page]:
    """A report of a folder shaped like the quick preset's (one seed, glyphs 5-way 1-shot)."""
    out = write_fake_reproduction(tmp_path_factory.mktemp("quick"), (QUICK,))
    return (out, *_page(out))


def test_no_internal_identifiers_or_notes_on_reading_the_paper(quick):
    _, html_text, page = quick
    visible = " ".join(" ".join(parts) for parts in page.text.values())
    assert not INTERNAL.findall(visible)
    assert "(see " not in html_text and "paper_table" not in html_text and "MISSING" not in html_text
    assert visible.count("The paper's numbers are those of the ICLR 2020 submission") == 1


def test_every_finding_has_a_verdict_and_a_rule_in_its_section(quick):
    _, html_text, page = quick
    assert html_text.count('<div class="finding ') == len(FEW_SHOT_FINDINGS)
    assert html_text.count("<b>Rule:</b>") == len(FEW_SHOT_FINDINGS)
    table3, table5 = page.section("table3_cross_model_similarity"), page.section("table5_body_regimes")
    assert "cannot be applied" in table3 and "no MAML-MAML or ANIL-ANIL pair to compare with" in table3
    assert "multitask body below every other body" in table5 and "random features" in table5


def test_what_the_paper_lacks_is_said_once_not_on_every_row(quick):
    _, html_text, page = quick
    table5 = html_text[html_text.index('<section id="table5_body_regimes"') :]
    ours = table5[table5.index("<h3>Our numbers</h3>") : table5.index("<h3>The paper's Table 5</h3>")]
    assert ours.count("the paper has no glyphs numbers for this table") == 1
    assert "<th>paper</th>" not in ours and "<th>ours − paper</th>" not in ours
    assert "Every row: tested with NIL." in page.section("table5_body_regimes")


def test_figures_have_captions_that_name_the_measure_and_the_error_bars(quick):
    _, html_text, page = quick
    few_shot = [name for name in REPORT_FIGURES if name not in RL_NAMES]  # a few-shot preset: no RL figure
    assert html_text.count("<figcaption>") == len(few_shot) == len(page.captions)
    assert all(caption.count("Error bars: ") == 1 for caption in page.captions)
    paper_figures = [FIGURES[name].caption(frame) for name, frame in _paper(quick)]
    assert all(caption in page.captions for caption in paper_figures)
    assert all("95% confidence interval over" in c and "mean CCA (all coefficients)" in c for c in paper_figures)


def _paper(quick) -> list[tuple[str, object]]:
    """(name, DataFrame) of the paper's figures in the folder of ``quick``."""
    out, *_ = quick
    return [(name, read_table(csv_path(out, name), name)) for name in FIGURES]


def _renderer(fig: Figure):
    """The renderer of ``fig`` drawn on an Agg canvas (where its texts and legends are)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _figures() -> list[tuple[str, Figure]]:
    tables = fake_tables((QUICK, dataclasses.replace(FakeSpec(), dataset="omniglot", ways=20)))
    return [
        ("figure 2", figure2_figure(tables["figure2_adaptation_similarity"])),
        ("figure 3", figure3_figure(tables["figure3_early_training"])),
        ("table 3", cross_model_figure(tables["table3_cross_model_similarity"])),
        *((name, accuracy_figure(name, tables)) for name in ACCURACY_KEYS),
    ]


@pytest.mark.parametrize(("name", "fig"), _figures(), ids=lambda value: value if isinstance(value, str) else "")
def test_figures_are_labelled_legible_and_legends_cover_no_data(name, fig):
    renderer = _renderer(fig)
    axes = fig.get_axes()
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes), name
    assert fig.get_supxlabel().startswith("Error bars: "), name
    legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend())]
    assert legends, name
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(_overlap(box, ax.get_window_extent(renderer)) for ax in axes), name
    for ax in axes:
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert not any(_overlap(a, b) for a, b in zip(ticks, ticks[1:])), f"{name}: x tick labels overlap"


def test_markdown_describes_only_its_own_columns(quick):
    out, *_ = quick
    table3 = (out / "tables" / "table3_cross_model_similarity.md").read_text(encoding="utf-8")
    preamble = table3.split("\n|", 1)[0]
    assert "`std`: standard deviation over model pairs" in preamble and "`n_pairs`" in preamble
    assert "ccuracies" not in preamble and "ci95" not in preamble and "std_seeds" not in preamble
    table1 = (out / "tables" / "table1_freezing.md").read_text(encoding="utf-8")
    assert "`ci95`: half-width of the 95% confidence interval over test tasks" in table1
    table5 = (out / "tables" / "table5_body_regimes.md").read_text(encoding="utf-8")
    assert table5.count("the paper has no glyphs numbers for this table") == 1


def test_settings_are_a_compact_table_with_a_link_to_preset_json(quick):
    _, html_text, page = quick
    settings = html_text[html_text.index('<section id="settings">') : html_text.index('<section id="table1_freezing"')]
    assert '<a href="preset.json">preset.json</a>' in settings
    assert "&quot;" not in settings and "{" not in page.section("settings")
    assert "<th>glyphs 5-way 1-shot</th>" in settings and "<td>meta-training iterations</td>" in settings


@pytest.mark.parametrize("preset", list(STUDY_PRESETS))
def test_a_report_for_the_folder_of_every_preset(tmp_path, preset):
    study = STUDY_PRESETS[preset]
    specs = tuple(
        FakeSpec(
            dataset=s.dataset, ways=s.ways, shots=s.shots, n_seeds=len(study.seeds), seed=i, n_tasks=study.eval_tasks
        )
        for i, s in enumerate(study.settings[:3])
    )
    out = write_fake_reproduction(tmp_path, specs)
    record = preset_record(make_plan(study, out))
    (out / "preset.json").write_text(json.dumps(record), encoding="utf-8")
    html_text, page = _page(out)
    sections = studied_sections(record)  # the few-shot study's, the meta-RL study's, or both
    expected = ({True} if study.rl is not None else set()) | ({False} if study.settings else set())
    assert {s.name in RL_NAMES for s in sections} == expected
    assert html_text.count("<section id=") == len(sections) + 3  # findings, settings, not compared
    assert f"Preset {preset}: " in page.section("settings")
    for spec in specs:
        assert f"<th>{spec.dataset} {spec.ways}-way {spec.shots}-shot</th>" in html_text
    # The preset's own notes (presets.py) are quoted as they are; everything the report writes is checked.
    assert not INTERNAL.findall(" ".join(" ".join(parts) for name, parts in page.text.items() if name != "settings"))


def test_a_csv_without_rows_says_so(tmp_path):
    out = write_fake_reproduction(tmp_path)
    path = out / "tables" / "table5_body_regimes.csv"
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    _, page = _page(out)
    assert "Not measured: this folder's tables/table5_body_regimes.csv has no rows" in page.section(
        "table5_body_regimes"
    )
