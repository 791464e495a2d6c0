"""The paper's numbers (meta.study.paper) and the report of a reproduction folder (meta.study.schema,
comparison, findings, figures, report; ``python -m meta report``): Markdown tables, figures, a
self-contained report.html, and the verdicts on the paper's findings."""

from __future__ import annotations

import base64
import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_reproduction import FakeSpec, fake_tables, write_fake_reproduction

from meta.cli import main as meta_main
from meta.core.names import FROZEN_LABELS, LAYERS
from meta.study import paper
from meta.study.comparison import comparison_table
from meta.study.figures import FIGURES, accuracy_figure, figure2_figure, figure3_figure
from meta.study.figures_analyses import REPORT_FIGURES
from meta.study.findings import FAILS, FINDINGS, HOLDS, NOT_MEASURED, Rules, check_findings
from meta.study.report import load_preset, studied_sections, write_paper_outputs
from meta.study.schema import (
    ACCURACY_KEYS,
    BODY_REGIMES,
    COLUMNS,
    RL_NAMES,
    TABLE_NAMES,
    MissingTableError,
    load_tables,
    read_table,
)

#: The findings a few-shot report has a verdict on (the meta-RL one is in the meta-RL report).
FEW_SHOT_FINDINGS = [f for f in FINDINGS if f.table not in RL_NAMES]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The tables of the paper (schema.TABLE_NAMES also holds tables of analyses beyond it).
PAPER_TABLES = [name for name in TABLE_NAMES if name in paper.NAMES]
OMNIGLOT = FakeSpec(dataset="omniglot", ways=20, shots=1, accuracy=94.25, seed=1)


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of every table row."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[str] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append(" | ".join(self._row))
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def _parse(html_text: str) -> _Tags:
    parser = _Tags()
    parser.feed(html_text)
    return parser


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A fake reproduction (glyphs 5-way 1-shot and Omniglot 20-way 1-shot) with its outputs."""
    out = write_fake_reproduction(tmp_path_factory.mktemp("reproduction"), (FakeSpec(), OMNIGLOT))
    write_paper_outputs(out)
    return out


@pytest.fixture(scope="module")
def html_tags(written) -> _Tags:
    return _parse((written / "report.html").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# The paper's numbers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_paper_tables_have_the_columns_of_our_csvs(name):
    frame = paper.paper_table(name)
    assert set(COLUMNS[name]) <= set(frame.columns)
    assert not frame.empty and name in paper.PROVENANCE


def test_paper_tables_agree_where_the_paper_repeats_itself():
    table2, table4, table5 = (
        paper.paper_table(n) for n in ("table2_anil_vs_maml", "table4_nil", "table5_body_regimes")
    )
    # Table 4's MAML and ANIL rows are Table 2's.
    repeated = table4[table4["method"] != "nil"].rename(columns={"method": "algorithm"})
    merged = table2.merge(repeated, on=["algorithm", "dataset", "ways", "shots"], suffixes=("_2", "_4"))
    assert len(merged) == len(table2) == 8
    np.testing.assert_array_equal(merged["accuracy_2"], merged["accuracy_4"])
    np.testing.assert_array_equal(merged["pm_2"], merged["pm_4"])
    # Table 5's "ANIL training - NIL head" is Table 4's NIL (NIL-testing of an ANIL-trained body).
    nil = table4[(table4["method"] == "nil") & (table4["dataset"] == "miniimagenet")].set_index("shots")
    anil_body = table5[table5["regime"] == "anil"].set_index("shots")
    np.testing.assert_array_equal(nil.loc[[1, 5], "accuracy"], anil_body.loc[[1, 5], "accuracy"])


def test_paper_tables_are_fresh_copies_and_unknown_names_fail():
    first = paper.paper_table("table2_anil_vs_maml")
    first.loc[0, "accuracy"] = -1.0
    assert paper.paper_table("table2_anil_vs_maml").loc[0, "accuracy"] > 0
    with pytest.raises(ValueError, match="unknown paper table 'table9'"):
        paper.paper_table("table9")


def test_paper_labels_use_our_vocabulary():
    assert list(paper.paper_table("table1_freezing")["frozen"].unique()) == list(FROZEN_LABELS)
    assert set(paper.paper_table("table5_body_regimes")["regime"]) == set(BODY_REGIMES)
    assert set(paper.paper_table("table3_cross_model_similarity")["comparison"]) == {
        "maml-maml",
        "anil-anil",
        "maml-anil",
    }
    assert paper.table2_rl()["algorithm"].tolist().count("anil") == 3


def test_the_paper_satisfies_the_rules_of_its_own_findings():
    names = ("table1_freezing", "table2_anil_vs_maml", "table4_nil", "table5_body_regimes")
    verdicts = {f.key: f.verdict for f in check_findings({name: paper.paper_table(name) for name in names})}
    assert verdicts["freezing"] == verdicts["anil_vs_maml"] == verdicts["nil_vs_anil"] == HOLDS
    assert verdicts["body_regimes"] == HOLDS
    # The paper states only bounds for Figure 2 (no ci95, no per-layer values) and nothing for Figure 3.
    with pytest.raises(ValueError, match="figure2_adaptation_similarity: missing column"):
        check_findings({"figure2_adaptation_similarity": paper.paper_table("figure2_adaptation_similarity")})


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key", "verdict"),
    [
        ({}, "adaptation_similarity", HOLDS),
        ({"body_similarity": 0.85}, "adaptation_similarity", FAILS),
        ({"body_similarity": 0.97, "head_similarity": 0.92}, "adaptation_similarity", FAILS),
        ({"freeze_drop": 2.9}, "freezing", HOLDS),
        ({"freeze_drop": 3.1}, "freezing", FAILS),
        ({"freeze_drop": -1.0}, "freezing", HOLDS),
        ({"anil_gap": -2.5}, "anil_vs_maml", HOLDS),
        ({"anil_gap": -3.5}, "anil_vs_maml", FAILS),
        ({"anil_gap": 3.5}, "anil_vs_maml", FAILS),
        ({"nil_gap": 2.0}, "nil_vs_anil", HOLDS),
        ({"nil_gap": -4.0}, "nil_vs_anil", FAILS),
        ({}, "early_training", HOLDS),
        ({"early_body_similarity": 0.8}, "early_training", FAILS),
        ({"early_freeze_drop": 5.0}, "early_training", FAILS),
    ],
)
def test_verdicts_follow_the_rules(change, key, verdict):
    findings = {f.key: f for f in check_findings(fake_tables((dataclasses.replace(FakeSpec(), **change),)))}
    assert findings[key].verdict == verdict, findings[key].evidence


def test_a_finding_fails_when_it_fails_in_one_setting_and_evidence_names_each_setting():
    specs = (FakeSpec(), dataclasses.replace(OMNIGLOT, freeze_drop=6.0))
    finding = {f.key: f for f in check_findings(fake_tables(specs))}["freezing"]
    assert finding.verdict == FAILS
    assert [c.where for c in finding.evidence] == ["glyphs 5-way 1-shot", "omniglot 20-way 1-shot"]
    assert [c.verdict for c in finding.evidence] == [HOLDS, FAILS]
    assert finding.evidence[1].numbers["drop (points)"] == "6.00"


@pytest.mark.parametrize(
    ("accuracies", "deepest"),
    [
        ((90.0, 90.5, 89.9, 88.0, 40.0), "conv1-3 (88.00)"),  # conv4 adapts, conv1-3 are reused
        ((90.0, 90.5, 85.0, 89.0, 40.0), "conv1 (90.50)"),  # a prefix: stops at the first drop
        ((90.0, 80.0, 80.0, 80.0, 80.0), "none (90.00)"),
    ],
)
def test_freezing_evidence_names_the_deepest_frozen_prefix_within_the_limit(accuracies, deepest):
    tables = fake_tables()
    table = tables["table1_freezing"]
    table["accuracy"] = table["frozen"].map(dict(zip(FROZEN_LABELS, accuracies)))
    finding = {f.key: f for f in check_findings(tables)}["freezing"]
    assert finding.verdict == FAILS
    assert finding.evidence[0].numbers["deepest frozen prefix within 3.0 points"] == deepest


def test_rules_are_parameters_and_are_printed():
    tables = fake_tables((dataclasses.replace(FakeSpec(), freeze_drop=2.0),))
    strict = Rules(freeze_drop_max=1.5)
    finding = {f.key: f for f in check_findings(tables, rules=strict)}["freezing"]
    assert finding.verdict == FAILS and "1.5 points" in finding.rule


def test_similarity_verdict_uses_maml_only():
    tables = fake_tables((dataclasses.replace(FakeSpec(), body_similarity=0.5),))
    tables["figure2_adaptation_similarity"] = tables["figure2_adaptation_similarity"].query("algorithm == 'anil'")
    finding = {f.key: f for f in check_findings(tables)}["adaptation_similarity"]
    assert finding.verdict == NOT_MEASURED
    assert finding.evidence[0].why == "figures/figure2_adaptation_similarity.csv has no MAML rows"


def test_missing_tables_are_not_measured():
    findings = check_findings({})
    assert [f.verdict for f in findings] == [NOT_MEASURED] * len(FINDINGS)
    assert all(f.evidence and f.evidence[0].why.startswith("this folder has no ") for f in findings)


# ---------------------------------------------------------------------------------------------
# Markdown tables
# ---------------------------------------------------------------------------------------------


def _markdown_rows(text: str) -> list[list[str]]:
    """Cells of the first Markdown table in ``text`` (header and separator dropped)."""
    block = text.split("\n\n")
    first = next(b for b in block if b.startswith("|"))
    return [[c.strip() for c in line.strip("|").split("|")] for line in first.splitlines()[2:]]


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_markdown_tables_hold_every_row(written, name):
    csv = pd.read_csv(written / "tables" / f"{name}.csv", keep_default_na=False)
    text = (written / "tables" / f"{name}.md").read_text(encoding="utf-8")
    rows = _markdown_rows(text)
    assert len(rows) == len(csv)
    header = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("|")).strip("|").split("|")]
    assert header == list(csv.columns)
    labels = [
        c for c in csv.columns if c in ("algorithm", "frozen", "method", "regime", "comparison", "layer", "measure")
    ]
    shown = {tuple(row[header.index(c)] for c in ["dataset", *labels]) for row in rows}
    assert shown == {tuple(str(v) for v in r) for r in csv[["dataset", *labels]].itertuples(index=False)}
    assert f"The paper's {paper.PROVENANCE[name].label}" in text


def test_markdown_values_round_the_csv(written):
    csv = read_table(written / "tables" / "table2_anil_vs_maml.csv", "table2_anil_vs_maml")
    rows = _markdown_rows((written / "tables" / "table2_anil_vs_maml.md").read_text(encoding="utf-8"))
    shown = sorted(float(row[4]) for row in rows)
    np.testing.assert_allclose(shown, sorted(csv["accuracy"]), atol=0.005)


# ---------------------------------------------------------------------------------------------
# report.html
# ---------------------------------------------------------------------------------------------


def test_report_is_one_self_contained_file(written, html_tags):
    text = (written / "report.html").read_text(encoding="utf-8")
    sources = [attrs["src"] for _, attrs in html_tags.tags if "src" in attrs]
    links = [attrs["href"] for _, attrs in html_tags.tags if "href" in attrs]
    few_shot = [name for name in REPORT_FIGURES if name not in RL_NAMES]  # the fake folder has no RL study
    assert len(sources) == len(few_shot) and all(s.startswith("data:image/png;base64,") for s in sources)
    inside = [link for link in links if link.startswith("#")]
    assert inside and set(links) - set(inside) == {"preset.json"}  # the one file of the folder it links to
    ids = {attrs["id"] for _, attrs in html_tags.tags if "id" in attrs}
    assert {link[1:] for link in inside} <= ids
    assert not [tag for tag, _ in html_tags.tags if tag in ("link", "script", "iframe", "object")]
    assert 'src="http' not in text and "url(" not in text and "@import" not in text
    for source in sources:
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def test_report_puts_our_number_beside_the_papers_for_a_matching_cell(html_tags):
    maml = [row for row in html_tags.rows if row.startswith("MAML | omniglot 20-way 1-shot | 94.25 ±")]
    assert len(maml) == 2  # Table 2 (algorithm) and Table 4 (test procedure)
    assert all(row.endswith("| 93.7 ± 0.7 | +0.55") for row in maml)


def test_report_marks_omniglot_as_a_reference_for_glyphs(written, html_tags):
    rows = [row for row in html_tags.rows if row.startswith("ANIL | glyphs 5-way 1-shot") and "96.2" in row]
    assert len(rows) == 2  # Table 2 (algorithm) and Table 4 (test procedure)
    for row in rows:
        assert row.endswith("| 96.2 ± 0.5")  # no difference against another data set
    text = (written / "report.html").read_text(encoding="utf-8")
    sentence = (
        "glyphs 5-way 1-shot: beside the paper&#x27;s Omniglot 20-way 1-shot, a different data set: a reference only."
    )
    assert text.count(sentence) == 2


def test_report_shows_the_preset_and_the_verdicts(html_tags):
    assert "meta-training iterations | 300 | 300" in html_tags.rows  # one column per setting
    assert "seeds of MAML and ANIL | 0, 1 | 0, 1" in html_tags.rows
    verdict_rows = [row for row in html_tags.rows if row.split(" | ")[0] in [f.source for f in check_findings({})]]
    assert len(verdict_rows) == len(FEW_SHOT_FINDINGS) and all(row.endswith(" | holds") for row in verdict_rows)


def test_report_says_plainly_when_a_finding_does_not_hold(tmp_path):
    spec = dataclasses.replace(FakeSpec(), freeze_drop=7.5)
    out = write_fake_reproduction(tmp_path, (spec,), omit=["figure2_adaptation_similarity", "figure3_early_training"])
    tags = _parse(write_paper_outputs(out).read_text(encoding="utf-8"))
    assert next(row for row in tags.rows if row.startswith("Table 1 |")).endswith(" | does not hold")
    assert next(row for row in tags.rows if "| 7.50 |" in row).startswith("92.00 | 84.50 | 7.50 | conv1")
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "MAML&#x27;s accuracy with conv1-4 frozen at test time at most 3.0 points below" in text


def test_missing_csvs_and_preset_give_not_measured_sections(tmp_path):
    omitted = ["table1_freezing", "figure3_early_training"]
    out = write_fake_reproduction(tmp_path, omit=omitted, preset=False)
    text = write_paper_outputs(out).read_text(encoding="utf-8")
    assert "Not measured: this folder has no tables/table1_freezing.csv, so there are no numbers of ours" in text
    assert "Not measured: this folder has no figures/figure3_early_training.csv" in text
    assert "This folder has no preset.json, so the settings of this reproduction are unknown." in text
    assert not (out / "tables" / "table1_freezing.md").exists()
    assert not (out / "figures" / "figure3_early_training.png").exists()
    assert (out / "figures" / "figure2_adaptation_similarity.png").read_bytes().startswith(PNG_SIGNATURE)
    verdicts = {row.split(" | ")[0]: row for row in _parse(text).rows}
    assert verdicts["Table 1"].endswith(" | not measured") and verdicts["Figure 3"].endswith(" | not measured")
    with pytest.raises(MissingTableError, match="table1_freezing was not measured"):
        comparison_table("table1_freezing", load_tables(out))


def test_an_empty_folder_gives_a_report_of_nothing_measured(tmp_path):
    text = write_paper_outputs(tmp_path).read_text(encoding="utf-8")
    assert text.count("Not measured") == len(studied_sections(None)) and ": 0 of the " in text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary files left


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tables(tmp_path / "nowhere")
    out = write_fake_reproduction(tmp_path / "run")
    path = out / "tables" / "table2_anil_vs_maml.csv"
    pd.read_csv(path).drop(columns=["ci95"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"table2_anil_vs_maml.csv: missing column\(s\) ci95"):
        write_paper_outputs(out)
    pd.read_csv(path).assign(ci95="wide").to_csv(path, index=False)
    with pytest.raises(ValueError, match="column 'ci95' must be numeric"):
        load_tables(out)
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty file"):
        load_tables(out)
    (out / "preset.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="preset.json: not valid JSON"):
        load_preset(out)


def test_command_line_writes_and_prints_the_verdicts(tmp_path, capsys):
    out = write_fake_reproduction(tmp_path / "reproduction")
    assert meta_main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[holds]") == len(FEW_SHOT_FINDINGS) and "report.html" in printed
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert meta_main(["report", str(tmp_path / "nowhere")]) == 2
    assert "meta report: error: reproduction folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Comparisons and figures draw the CSVs' numbers
# ---------------------------------------------------------------------------------------------


def test_table3_comparison_averages_the_body_layers(written):
    tables = load_tables(written)
    ours = tables["table3_cross_model_similarity"]
    shown = comparison_table("table3_cross_model_similarity", tables)
    row = shown[
        (shown["models compared"] == "MAML-ANIL")
        & (shown["measure"] == "linear CKA")
        & (shown["setting"] == "glyphs 5-way 1-shot")
    ].iloc[0]
    body = ours[
        (ours["comparison"] == "maml-anil")
        & (ours["measure"] == "cka")
        & (ours["dataset"] == "glyphs")
        & ours["layer"].str.startswith("conv")
    ]
    assert row["ours (mean over conv1-4)"] == f"{body['value'].mean():.3f}"
    assert row["paper (mean over the body)"] == "0.83"


def test_figures_are_written_and_not_empty(written):
    for name in FIGURES:
        data = (written / "figures" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_figure2_bars_are_the_csv_values():
    frame = fake_tables()["figure2_adaptation_similarity"]
    fig = figure2_figure(frame)
    axes = fig.get_axes()
    assert [ax.get_ylabel().split("\n")[0] for ax in axes] == ["mean CCA (all coefficients)", "linear CKA"]
    heights = [patch.get_height() for patch in axes[0].patches]
    expected = [
        frame.query("measure == 'cca' and algorithm == @alg and layer == @layer")["value"].item()
        for alg in ("maml", "anil")
        for layer in LAYERS
    ]
    np.testing.assert_allclose(heights, expected)


def test_figure3_lines_are_the_csv_values():
    frame = fake_tables()["figure3_early_training"]
    axes = figure3_figure(frame).get_axes()
    assert len(axes) == 3  # CCA, CKA, freezing accuracy
    frozen = frame.query("kind == 'freezing' and layer == 'conv1-4'").sort_values("iteration")
    line = next(c.lines[0] for c in axes[2].containers if c.get_label() == "conv1-4")
    np.testing.assert_allclose(line.get_xdata(), frozen["iteration"])
    np.testing.assert_allclose(line.get_ydata(), frozen["value"])


@pytest.mark.parametrize("name", list(ACCURACY_KEYS))
def test_accuracy_figures_show_one_panel_per_setting(written, name):
    tables = load_tables(written)
    axes = accuracy_figure(name, tables).get_axes()
    assert len(axes) == 2
    ours = tables[name].query("dataset == 'glyphs'")
    np.testing.assert_allclose(sorted(p.get_height() for p in axes[0].patches), sorted(ours["accuracy"]))


def test_figures_refuse_empty_frames():
    with pytest.raises(ValueError, match="no rows to draw"):
        figure2_figure(fake_tables()["figure2_adaptation_similarity"].iloc[:0])
