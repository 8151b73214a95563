"""report/paper/: LaTeX that typesets what the report says, and a PDF when an engine exists."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_claims import line, write_run, write_study

from lmablate.report.package import build_report
from lmablate.report.tex import tex


@pytest.mark.parametrize(
    ("text", "latex"),
    [
        ("difference −0.3 or -0.25", "difference $-0.3$ or $-0.25$"),
        ("3-5 steps, x-1, [-0.1, 0.2]", "3-5 steps, x-1, [$-0.1$, 0.2]"),
        ("1.74e+12 FLOPs, eps 1e-08", r"\num{1.74e12} FLOPs, eps \num{1e-8}"),
        ("12·d·Σ_l T_l", r"12$\cdot$d$\cdot$$\sum_{l} T_{l}$"),
        ("β1 0.9, β2 0.95", r"$\beta_{1}$ 0.9, $\beta_{2}$ 0.95"),
        (
            "50% of a_b & {c} #1 $5 ~ ^",
            r"50\% of a\_b \& \{c\} \#1 \$5 \textasciitilde{} "
            r"\textasciicircum{}",
        ),
        ("a — b – c ≥ 3 ✓", r"a --- b -- c $\geq$ 3 \texttt{U+2713}"),
        ("budget=0.25x and seed-1", "budget=0.25x and seed-1"),  # names keep their hyphens
    ],
)
def test_report_text_becomes_latex(text, latex):
    assert tex(text) == latex


def _report(tmp_path, monkeypatch, engine: str | None):
    """A small two-seed study with LaTeX specials in its name; its report with ``engine``."""
    write_study(tmp_path, {"b_&%": {"learning_rate": 0.002}}, seeds=2)
    study = yaml.safe_load((tmp_path / "study.yaml").read_text())
    study["name"] = "claims_50% & more"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    for variant, final in (("baseline", 3.0), ("b_&%", 2.9)):
        for seed in range(2):
            write_run(tmp_path, variant, seed, line(8.0, final + 0.01 * seed, 2000))
    if engine is None:
        monkeypatch.delenv("LMABLATE_LATEX", raising=False)
    else:
        monkeypatch.setenv("LMABLATE_LATEX", engine)
    report = build_report(tmp_path)
    return report, json.loads((report / "research_data.json").read_text())["paper"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX engine installed")
def test_the_paper_compiles_when_an_engine_is_installed(tmp_path, monkeypatch):
    report, paper = _report(tmp_path, monkeypatch, engine=None)
    assert paper["error"] is None and paper["pdf"] == "paper.pdf", paper
    assert (report / "paper" / "paper.pdf").read_bytes().startswith(b"%PDF")
    assert not (report / "paper" / "paper.log").exists()  # a clean build leaves no log
    tex = (report / "paper" / "paper.tex").read_text()
    assert r"\input{results_table}" in tex and r"\input{methods}" in tex
    assert r"{training_loss_comparison.pdf}" in tex
    markdown = (report / "research_report.md").read_text()
    assert "and `paper.pdf` (built with pdflatex)" in markdown


def test_a_failed_build_is_reported_and_the_package_is_kept(tmp_path, monkeypatch):
    report, paper = _report(tmp_path, monkeypatch, engine="false")  # exits 1, writes nothing
    assert (
        paper["pdf"] is None
        and paper["error"] == "false failed: exit status 1 (see paper/paper.log)"
    )
    assert (report / "paper" / "paper.tex").is_file()
    assert (report / "research_report.md").is_file() and (report / "research_package.zip").is_file()
    assert "no `paper.pdf`: false failed" in (report / "research_report.md").read_text()


def test_no_engine_writes_the_tex_and_says_why_there_is_no_pdf(tmp_path, monkeypatch):
    report, paper = _report(tmp_path, monkeypatch, engine="none")
    assert paper == {
        "files": ["results_table.tex", "methods.tex", "paper.tex"],
        "pdf": None,
        "engine": None,
        "error": "$LMABLATE_LATEX is none",
    }
    assert not (report / "paper" / "paper.pdf").exists()
