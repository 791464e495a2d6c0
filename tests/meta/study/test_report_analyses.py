"""The report's sections on the further analyses and the architecture study
(meta.study.report_analyses, figures_analyses, findings_architecture): every new figure is written
as a PNG and is legible, every new section is in report.html with a caption naming its error
bars, the architecture verdict follows the numbers across the rule's thresholds, and no internal
identifier reaches a reader."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_reproduction import FakeSpec, fake_tables, write_fake_reproduction
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread

from meta.study.figures_analyses import ANALYSIS_FIGURES
from meta.study.findings_architecture import ADAPTS, REUSED, architecture_verdicts
from meta.study.report import write_paper_outputs
from meta.study.report_analyses import ANALYSIS_SECTIONS
from meta.study.verdicts import NOT_MEASURED, RULES, Rules

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Code, CSV vocabulary and notes on how the paper was read: never shown to a reader.
LEAKS = re.compile(
    r"\w\(\)|paper_table\(|table2_rl|MISSING|_rows\b|std_seeds|ci95|wall_seconds|maml_seconds|"
    r"paper_speedup|regime_a|figure_\w+|table_\w+|nan\b|None\b"
)


class _Sections(HTMLParser):
    """Visible text per section id, and the text of each ``<figcaption>`` per section id."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.captions: dict[str, list[str]] = {}
        self._id, self._hidden, self._caption = "", 0, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._id = dict(attrs).get("id") or ""
        self._hidden += tag in ("style", "title")
        if tag == "figcaption":
            self._caption = True
            self.captions.setdefault(self._id, []).append("")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("style", "title")
        self._caption = self._caption and tag != "figcaption"

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.text[self._id] = self.text.get(self._id, "") + " " + data
        if self._caption:
            self.captions[self._id][-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, _Sections]:
    """A report of a fake folder: one seed, reuse holds for the reference conv4 and not for the
    miniImageNet conv4 (the default :class:`FakeSpec`)."""
    out = write_fake_reproduction(tmp_path_factory.mktemp("analyses"), (FakeSpec(n_seeds=1),))
    text = write_paper_outputs(out).read_text(encoding="utf-8")
    page = _Sections()
    page.feed(text)
    return out, text, page


@pytest.mark.parametrize("name", list(ANALYSIS_FIGURES))
def test_every_new_figure_is_written_as_a_valid_png(report, name):
    out, *_ = report
    path = out / "figures" / f"{name}.png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    height, width = imread(path).shape[:2]
    assert height > 200 and width > 400


@pytest.mark.parametrize("section", ANALYSIS_SECTIONS, ids=lambda s: s.name)
def test_every_new_section_is_in_the_report_with_its_error_bars_named(report, section):
    _, html_text, page = report
    assert f'<section id="{section.name}">' in html_text and f'<a href="#{section.name}">' in html_text
    assert "Our numbers" in page.text[section.name] and "Not measured" not in page.text[section.name]
    captions = page.captions.get(section.name, [])
    assert len(captions) == (section.name in ANALYSIS_FIGURES)
    for caption in captions:
        bars = caption.split("Error bars: ")[1]
        assert bars.startswith(("95% confidence interval over 100 test tasks", "none"))


def test_speed_is_set_beside_the_papers_numbers(report):
    *_, page = report
    text = page.text["table_speed"]
    assert "1.50× per training iteration (the paper: 1.7×)" in text
    assert "3.20× per test-time adaptation (the paper: 4.1×)" in text


def test_no_internal_identifiers_reach_the_new_sections(report):
    _, html_text, page = report
    for section in ANALYSIS_SECTIONS:
        assert not LEAKS.findall(page.text[section.name]), section.name
    assert "paper_table(" not in html_text and "MISSING" not in html_text


def test_the_architecture_verdicts_are_sentences_with_their_numbers(report):
    *_, page = report
    text = " ".join(page.text["table_architecture_accuracy"].split())
    assert (
        "reference conv4 (the reference Omniglot conv4: stride 2, spatial mean, N(0, 1) head): features are reused"
        in text
    )
    assert "miniImageNet conv4 (the miniImageNet conv4 on the same images: max-pooling, flattened features, " in text
    assert "Glorot head): the body adapts. Freezing conv1-4 at test time costs MAML 8.00 points (more than" in text
    assert f"at most {RULES.reuse_drop_max} accuracy points" in text and f"at least {RULES.reuse_conv4_min}" in text


def _verdicts(drop: float, conv4: float, rules: Rules = RULES) -> dict[str, str]:
    """The verdict per variant of a fake study whose ``zero-head`` variant has the given numbers."""
    spec = FakeSpec(architecture_drops=(0.5, 0.5, drop, 0.5), architecture_conv4=(0.97, 0.97, conv4, 0.97))
    return {v.architecture: v.verdict for v in architecture_verdicts(fake_tables((spec,)), rules)}


@pytest.mark.parametrize(
    ("drop", "conv4", "verdict"),
    [
        (RULES.reuse_drop_max - 0.2, RULES.reuse_conv4_min + 0.03, REUSED),
        (RULES.reuse_drop_max + 0.2, RULES.reuse_conv4_min + 0.03, ADAPTS),
        (RULES.reuse_drop_max - 0.2, RULES.reuse_conv4_min - 0.03, ADAPTS),
    ],
)
def test_the_architecture_verdict_flips_where_the_numbers_cross_the_rule(drop, conv4, verdict):
    verdicts = _verdicts(drop, conv4)
    assert verdicts["zero-head"] == verdict
    assert {verdicts[v] for v in ("reference", "glorot-head", "miniimagenet-conv4")} == {REUSED}


def test_the_architecture_verdict_follows_the_rules_thresholds():
    drop = RULES.reuse_drop_max + 1.0
    assert _verdicts(drop, 0.97)["zero-head"] == ADAPTS
    assert _verdicts(drop, 0.97, dataclasses.replace(RULES, reuse_drop_max=drop + 0.5))["zero-head"] == REUSED
    assert _verdicts(0.5, 0.8, dataclasses.replace(RULES, reuse_conv4_min=0.75))["zero-head"] == REUSED


def test_a_study_without_its_similarity_is_not_measured():
    tables = fake_tables()
    del tables["figure_architecture_similarity"]
    verdicts = architecture_verdicts(tables)
    assert verdicts and all(v.verdict == NOT_MEASURED and "conv4 similarity" in v.why for v in verdicts)
    assert architecture_verdicts({}) == []


def test_missing_analyses_say_not_measured_and_draw_nothing(tmp_path):
    names = [s.name for s in ANALYSIS_SECTIONS]
    out = write_fake_reproduction(tmp_path, (FakeSpec(n_seeds=1),), omit=names)
    page = _Sections()
    page.feed(write_paper_outputs(out).read_text(encoding="utf-8"))
    assert all("Not measured: this folder has no" in page.text[name] for name in names)
    assert not any((out / "figures" / f"{name}.png").exists() for name in ANALYSIS_FIGURES)


def _figures():
    """Each new figure drawn from a fake folder of two settings (the study in the first)."""
    tables = fake_tables((FakeSpec(n_seeds=2), dataclasses.replace(FakeSpec(), dataset="omniglot", ways=20, seed=1)))
    return [(name, spec.draw(tables[name])) for name, spec in ANALYSIS_FIGURES.items()]


@pytest.mark.parametrize(("name", "fig"), _figures(), ids=lambda value: value if isinstance(value, str) else "")
def test_new_figures_are_labelled_legible_and_keep_legends_off_the_data(name, fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    panels = [ax for ax in fig.get_axes() if ax.get_label() != "<colorbar>"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in panels), name
    assert fig.get_supxlabel().startswith("Error bars: "), name
    areas = [ax.get_window_extent(renderer) for ax in panels]
    for legend in fig.legends:
        assert not any(legend.get_window_extent(renderer).overlaps(area) for area in areas), name
    for ax in panels:
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert not any(a.overlaps(b) for a, b in zip(ticks, ticks[1:])), f"{name}: x tick labels overlap"
