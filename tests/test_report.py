"""``study.report``: the HTML opens with the summary, its numbers are the study's own values
(Metrics, history, drift table) in one format, it holds no Python repr, every removed unit is
listed, the glossary has only the terms shown, and the user's notes and comparisons appear."""

from __future__ import annotations

import html
import re

import pytest
import torch
from torch import nn

import xprune_nb as xp
from xprune_nb.core.errors import ConfigError
from xprune_nb.export.report_format import fmt

NUM = re.compile(r"<span class='xprune-num' data-name='([^']*)' data-value='([^']*)'>"
                 r"([^<]*)</span>")
REPR = re.compile(r"Study\(|tensor\(|np\.float|array\(|object at 0x|\{'|\bnan\b|\bNaN\b|"
                  r"\bNone\b|dtype=|Step\(|Metrics\(|\binf\b")


def _text(page: str) -> str:
    page = re.sub(r"data:[a-z/]+;base64,[^'\"]*", "", page)
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    return re.sub(r"\s+", " ", text).replace(" .", ".").replace(" ,", ",").replace(" :", ":")


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory):
    study = xp.Study(xp.zoo.load("digits_cnn"), xp.datasets.load("digits"), seed=0)
    study.score("magnitude")
    study.prune(0.5)
    path = tmp_path_factory.mktemp("report") / "digits.html"
    out = study.report(path, title="Digits, half the channels",
                       notes="Pruned for the demo.\n\n<script>alert(1)</script> stays text.",
                       comparisons={"My saliency check": study.saliency(0, 1, n=2)})
    return study, out.read_text(encoding="utf-8")


def test_summary_comes_first_and_says_everything_in_words(digits_report):
    _, page = digits_report
    body = page.split("<body>", 1)[1]
    sections = re.findall(r"<section id='([^']+)'", body)
    assert sections[0] == "summary"
    assert body.index("<h1>") < body.index("id='summary'") < body.index("<h2>Summary")
    summary = _text(body.split("id='summary'", 1)[1].split("</section>", 1)[0])
    for words in ("What was pruned", "channel units", "Parameters", "MACs", "Measured speed",
                  "Test accuracy", "Classes that lost most", "changed their prediction",
                  "saliency rank correlation", "What to watch"):
        assert words in summary, words
    assert sections[1] == "notes" and {"metrics", "per_class", "forgotten", "explanations",
                                      "why", "comparisons", "history", "glossary"} <= set(
        sections)


def test_summary_numbers_are_the_studys_values_in_one_format(digits_report):
    study, page = digits_report
    summary = page.split("id='summary'", 1)[1].split("</section>", 1)[0]
    shown = {name: (float(value), text) for name, value, text in NUM.findall(summary)}
    for name, value, text in NUM.findall(page):
        assert text == fmt(float(value), name), (name, value, text)   # one format
    before, after = study.history[0], study.history[study.current]
    assert shown["accuracy_before"][0] == before.metrics["accuracy"]
    assert shown["accuracy_after"][0] == after.metrics["accuracy"]
    for key in ("params", "macs", "size_bytes"):
        assert f"{fmt(before.metrics[key], key)}" in _text(summary)
        assert f"{fmt(after.metrics[key], key)}" in _text(summary)
    names = study.data.class_names
    for name, value in shown.items():
        if name.startswith("accuracy_after["):
            c = names.index(name[len("accuracy_after["):-1])
            assert value[0] == after.per_class_accuracy[c]
            assert shown[f"accuracy_before[{names[c]}]"][0] == before.per_class_accuracy[c]
    drift = study.drift().to_frame().loc[study.current]
    for key in ("agreement", "saliency_rank_correlation", "saliency_topk_iou"):
        assert shown[key][0] == pytest.approx(float(drift[key]), abs=0), key
    assert shown["latency_b1_ms"][0] > 0
    forgotten = study.forgotten(0, study.current, saliency=False).summary()
    assert shown["forgotten"][0] == forgotten["forgotten"]
    # the classes that lost most are named, worst first
    per_class = sorted(((a - b, n) for n, b, a in zip(
        names, before.per_class_accuracy, after.per_class_accuracy)))
    assert f"Classes that lost most: {per_class[0][1]} " in _text(summary)


def test_no_python_repr_and_user_text_is_escaped(digits_report):
    _, page = digits_report
    text = _text(page)
    assert not REPR.search(text), REPR.search(text)
    assert "<script>alert(1)</script>" not in page
    assert "<script>alert(1)</script> stays text." in text
    assert "My saliency check" in text and "Pruned for the demo." in text
    assert page.count("data:image/png;base64,") >= 3      # history, saliency, forgotten...


def test_every_removed_unit_is_listed_and_downloadable(digits_report):
    study, page = digits_report
    why = page.split("<section id='why'>", 1)[1].split("</section>", 1)[0]
    removed = study.why(1).to_frame()
    assert len(removed) > 20
    table = why.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert table.count("<tr") == len(removed)
    assert f"All {len(removed)} removed units" in _text(why)
    assert "download='why_step_1.csv'" in why


def test_glossary_lists_only_terms_shown(digits_report):
    _, page = digits_report
    glossary = _text(page.split("<section id='glossary'>", 1)[1])
    for term in ("MACs", "size", "non-zero parameters", "forgotten example",
                 "saliency rank correlation", "rank", "percentile"):
        assert term in glossary, term
    for absent in ("sliced paths", "early exits", "longest-path MACs", "Shapley rank"):
        assert absent not in glossary, absent


def _tabular_study():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    names = ["alcohol", "malic_acid", "ash", "hue", "proline"]
    return xp.Study(net, train=(x, y), val=(x, y), test=(x, y), feature_names=names,
                    class_names=["cultivar_A", "cultivar_B", "cultivar_C"])


def test_tabular_forgotten_rows_carry_feature_names_and_include_picks_sections(tmp_path):
    study = _tabular_study()
    study.score("taylor", samples=60)
    study.prune(0.7)
    out = study.report(tmp_path, include=["forgotten", "glossary"], latency=False)
    assert out == tmp_path / "report.html"
    page = out.read_text(encoding="utf-8")
    sections = re.findall(r"<section id='([^']+)'", page)
    assert sections == ["summary", "forgotten", "glossary"]
    forgotten = _text(page.split("<section id='forgotten'>", 1)[1].split("</section>", 1)[0])
    assert study.forgotten(0, 1, saliency=False).summary()["forgotten"] > 0
    assert "malic_acid" in forgotten and "was predicted" in forgotten
    assert "Speed was not measured" in _text(page)
    assert not REPR.search(_text(page))


def test_bad_arguments_name_the_parameter(tmp_path):
    study = _tabular_study()
    with pytest.raises(ConfigError, match=r"Study.report\(include=...\): unknown name "
                       r"'pathway'; valid names are"):
        study.report(tmp_path / "r.html", include=["pathway"])
    with pytest.raises(ConfigError, match=r"Study.report\(notes=...\): expected a string"):
        study.report(tmp_path / "r.html", notes=["a"])
    with pytest.raises(ConfigError, match=r"Study.report\(comparisons=...\)"):
        study.report(tmp_path / "r.html", comparisons=[object()], latency=False)
    assert not (tmp_path / "r.html").exists()


def test_sections_can_be_added(tmp_path):
    from xprune_nb.export.report_sections import SECTIONS, register_section

    register_section("extra", "Extra figure", lambda ctx: f"<p>step {ctx.after}</p>",
                     after="why")
    try:
        study = _tabular_study()
        page = study.report(tmp_path / "r.html", include=["extra"], latency=False).read_text()
        assert "<section id='extra'><h2>Extra figure</h2><p>step 0</p>" in page
    finally:
        del SECTIONS["extra"]


def test_pathways_section_shows_where_the_evidence_went(digits_report):
    _study, page = digits_report
    assert "<section id='pathways'><h2>Relevance pathways</h2>" in page
    section = page.split("<section id='pathways'>")[1].split("</section>")[0]
    assert "flowed through units removed by step 1" in section
    assert "<img alt='relevance pathways before and after'" in section
    assert "cut share" in _text(page.split("<section id='glossary'")[-1]).lower()
