"""report/paper/: the tables (results, tuned comparison, compute multipliers, per-domain) as LaTeX
(booktabs, siunitx), the methods paragraph, and ``paper.tex`` that sets them with the figures'
vector PDFs; compiled to ``paper.pdf`` when a LaTeX engine is installed.

Formatting only, from ``analysis.Analysis``; the figure PDFs are written by ``figures``. No
torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.report.domains import domain_table
from lmablate.report.format import represented, setting
from lmablate.report.tex import (
    count,
    delta,
    header,
    interval,
    label,
    number,
    plain_tex,
    signed,
    table,
    tex,
)

ENGINES = ("pdflatex", "lualatex", "xelatex")
ENGINE_VARIABLE = "LMABLATE_LATEX"  # an engine's name or path, or "none" to write only .tex
COMPILE_TIMEOUT_S = 180


def _in_bytes(analysis: Analysis) -> bool:
    return analysis.findings.get("metric") == "val_bpb"  # the tokenizers differ


def results_table(analysis: Analysis, study_name: str, n_seeds: int) -> str:
    """Configuration, tokens, training FLOPs, validation loss and bpb, the difference to the
    baseline with its interval, and (with several seeds) Holm-adjusted p and verdict; a column
    that would be "--" on every row is left out, and the caption says what the intervals are."""
    comparisons = {c.variant: c for c in analysis.comparisons}
    per_variant = analysis.per_variant
    rows = []
    for variant, _ in analysis.ranking:
        intervals = analysis.intervals[variant]
        c = comparisons.get(variant)
        documents = analysis.document_intervals.get(variant) or {}
        change, p, verdict = "--", "--", "--"
        if c is not None and c.ci_low is not None:
            change = delta(c.difference, c.ci_low, c.ci_high)
        elif "ci_low" in documents and n_seeds == 1:  # the caption says which interval
            change = delta(documents["difference"], documents["ci_low"], documents["ci_high"])
        elif c is not None:
            change = signed(c.difference)
        if c is not None and n_seeds > 1:
            p = "--" if c.p_holm is None else tex(f"{c.p_holm:.3g}")
            verdict = c.verdict
        rows.append(
            [
                tex(variant),
                count(per_variant[variant]["tokens_seen"]),
                count(per_variant[variant]["total_flops"]),
                interval(intervals["eval_loss"]),
                interval(intervals["val_bpb"]),
                change,
                p,
                verdict,
            ]
        )
    if n_seeds > 1:
        spread = (
            f"mean [95\\% CI] over {n_seeds} seeds; $\\Delta$: difference to the baseline "
            "with its 95\\% CI from the per-seed differences, Holm-adjusted $p$ and verdict"
        )
    else:
        spread = (
            "one seed, so no seed intervals or tests; $\\Delta$: difference to the baseline "
            "with a 95\\% paired bootstrap interval over validation documents (the "
            "evaluation-sample uncertainty, not seed variance)"
        )
    units = (
        "; the tokenizers differ, so the loss is each configuration's nats per token of its own "
        "tokenizer (not comparable across them) and the ranking, $\\Delta$ and tests are in "
        "bits per byte of the same bytes"
        if _in_bytes(analysis)
        else ""
    )
    return header(study_name, "Results") + table(
        "Final validation loss (nats per token) and bits per byte on held-out documents after "
        f"the training tokens and FLOPs shown{units}; {spread}.",
        label(study_name, "results"),
        [
            "Configuration",
            "Tokens",
            "FLOPs",
            r"Val.\ loss",
            r"Val.\ bpb",
            r"$\Delta$ vs.\ baseline",
            r"$p_{\mathrm{Holm}}$",
            "Verdict",
        ],
        rows,
    )


def tuned_table(analysis: Analysis, study_name: str) -> str | None:
    """Each configuration at its tuned values: the choice, its validation loss, its test loss
    and the test-split difference to the baseline's choice; None without a tune section."""
    tuning = analysis.tuning
    if not tuning:
        return None
    measure = "bpb" if _in_bytes(analysis) else "loss"
    comparisons = {c["variant"]: c for c in tuning["comparisons"]}
    rows = []
    for config, row in tuning["configurations"].items():
        if row["chosen"] is None:
            rows.append([tex(config), "no candidate completed", *["--"] * 5])
            continue
        c = comparisons.get(config)
        rows.append(
            [
                tex(config),
                ", ".join(f"{tex(f)} {tex(setting(v))}" for f, v in row["values"].items()),
                number(row["validation_loss"][row["chosen"]]),
                interval(row["test_interval"]) if row["test_interval"] else "--",
                "--" if c is None else delta(c["difference"], c["ci_low"], c["ci_high"]),
                "--" if c is None or c["p_holm"] is None else tex(f"{c['p_holm']:.3g}"),
                "--" if c is None else c["verdict"],
            ]
        )
    grid = "; ".join(
        f"{tex(f)} $\\in$ \\{{{', '.join(tex(setting(v)) for v in values)}\\}}"
        for f, values in tuning["fields"].items()
    )
    return header(study_name, "Tuned comparison") + table(
        f"Each configuration at the value of its grid ({grid}) with the lowest mean validation "
        f"{measure}, reported on test documents that neither training nor the choice saw: test "
        f"{measure} mean [95\\% CI] over seeds; $\\Delta$: difference to the baseline's choice "
        "on test with its 95\\% CI, Holm-adjusted $p$ and verdict.",
        label(study_name, "tuned"),
        [
            "Configuration",
            "Chosen",
            rf"Val.\ {measure}",
            rf"Test {measure}",
            r"$\Delta$ test",
            r"$p_{\mathrm{Holm}}$",
            "Verdict",
        ],
        rows,
    )


def multiplier_table(analysis: Analysis, study_name: str) -> str | None:
    """Each configuration's compute multiplier from the budget ladder's fit, or, when the fit is
    unusable, the baseline compute interpolated between rungs (and the caption says why); None
    without a ladder fit."""
    scaling = analysis.scaling
    fit = (scaling or {}).get("fit")
    if fit is None:
        return None
    measure = "bpb" if _in_bytes(analysis) else "loss"
    rows = []
    for variant, row in scaling["multipliers"].items():
        if fit["usable"]:
            value = "--" if row["multiplier"] is None else plain_tex(row["multiplier"])
            if row["multiplier"] is not None and row["ci_low"] is not None:
                value += f" [{plain_tex(row['ci_low'])}, {plain_tex(row['ci_high'])}]"
            matched = plain_tex(row["baseline_compute_to_match"])
            extra = "yes" if row["extrapolated"] else "no"
        else:
            beyond = row["interpolation"]["beyond_the_ladder"]
            value, extra = "--", "--"
            matched = (
                f"beyond ({tex(beyond)})"
                if beyond
                else plain_tex(row["interpolation"]["baseline_compute_to_match"])
            )
        rows.append(
            [
                tex(represented(variant, row.get("run"))),
                number(row["val_loss"]),
                plain_tex(row["relative_compute"]),
                matched,
                value,
                extra,
            ]
        )
    low, high = scaling["ladder_range"]
    law = (
        f"the baseline's ladder ({fit['points']} runs, {plain_tex(low)}--{plain_tex(high)} $C_0$) "
        r"fitted as $L(C) = E + A (C/C_0)^{-\alpha}$ with "
        f"$E = {fit['E']:.3g}$, $A = {fit['A']:.3g}$, $\\alpha = {fit['alpha']:.3g}$"
    )
    if fit["usable"]:
        caption = (
            f"Compute multipliers from {law}: the baseline compute the fit needs to reach each "
            f"configuration's validation {measure}, in units of the baseline's compute $C_0$, "
            "divided "
            "by the compute the configuration spent, with its 95\\% interval (an unbounded "
            "upper end: parameter draws that never reach the loss)."
        )
    else:
        caption = (
            f"No compute multiplier: the power law does not describe {law} "
            f"({tex('; '.join(fit['problems']))}). Instead, the baseline compute at which the "
            "rungs' mean losses, joined by straight lines in log compute, reach each "
            f"configuration's validation {measure} (an interpolation, not a fit)."
        )
    return header(study_name, "Compute multipliers") + table(
        caption,
        label(study_name, "multipliers"),
        [
            "Configuration",
            rf"Val.\ {measure}",
            r"Compute ($C_0$)",
            r"Baseline compute to match ($C_0$)",
            "Multiplier",
            "Extrapolated",
        ],
        rows,
    )


def paper_tex(study_name: str, tables: list[str], figures: dict[str, str]) -> str:
    """The standalone document: the methods, the tables and every figure (``figures``: a PDF's
    file name in paper/ and its caption)."""
    body = [
        r"\documentclass[11pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage[margin=0.8in]{geometry}",
        r"\usepackage{amsmath}",
        r"\usepackage{booktabs}",
        r"\usepackage{siunitx}",
        r"\usepackage{graphicx}",
        f"\\title{{Study {tex(study_name)}}}",
        r"\author{Generated by lmablate}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
        r"\section*{Methods}",
        r"\input{methods}",
        r"\section*{Results}",
        *(f"\\input{{{Path(name).stem}}}" for name in tables),
    ]
    for name, caption in figures.items():
        body += [
            r"\begin{figure}[p]",
            r"\centering",
            f"\\includegraphics[width=\\linewidth,height=0.8\\textheight,keepaspectratio]{{{name}}}",
            f"\\caption{{{tex(caption)}}}",
            r"\end{figure}",
        ]
    return "\n".join([*body, r"\end{document}", ""])


def latex_engine() -> str | None:
    """The engine to compile paper.tex with: ``$LMABLATE_LATEX`` (an engine or "none"), else
    the first of pdflatex, lualatex, xelatex on the PATH; None when there is none."""
    chosen = os.environ.get(ENGINE_VARIABLE, "").strip()
    if chosen.lower() == "none":
        return None
    if chosen:
        return shutil.which(chosen) or chosen  # a missing one is reported by compile_pdf
    return next((found for e in ENGINES if (found := shutil.which(e))), None)


def compile_pdf(paper: Path, engine: str) -> str | None:
    """Compile paper/paper.tex into paper.pdf; None on success, else why not (the log's first
    error). The auxiliary files are removed; paper.log stays when the build fails."""
    command = [engine, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]
    try:
        result = subprocess.run(
            command, cwd=paper, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S
        )
    except FileNotFoundError:
        return f"LaTeX engine {engine!r} not found"
    except subprocess.TimeoutExpired:
        return f"{Path(engine).name} did not finish in {COMPILE_TIMEOUT_S} s"
    finally:
        for stem in ("paper.aux", "paper.out"):
            (paper / stem).unlink(missing_ok=True)
    if result.returncode == 0 and (paper / "paper.pdf").is_file():
        (paper / "paper.log").unlink(missing_ok=True)
        return None
    errors = [line for line in result.stdout.splitlines() if line.startswith("!")]
    reason = errors[0].lstrip("! ") if errors else f"exit status {result.returncode}"
    return f"{Path(engine).name} failed: {reason} (see paper/paper.log)"


def write_paper(
    out: Path,
    analysis: Analysis,
    study_name: str,
    n_seeds: int,
    methods: str,
    figures: dict[str, str],
) -> dict[str, Any]:
    """Write report/paper/: the tables, methods.tex and paper.tex, and compile paper.pdf when a
    LaTeX engine is present. ``figures``: each figure PDF already in paper/ and its caption.
    Returns what was written: the files, the PDF (or None) and why there is none."""
    paper = out / "paper"
    paper.mkdir(parents=True, exist_ok=True)
    for stale in (
        "paper.pdf",
        "paper.log",
        *(f"{t}.tex" for t in ("tuned_table", "multipliers_table", "domains_table")),
    ):
        (paper / stale).unlink(missing_ok=True)
    tables = {
        "results_table.tex": results_table(analysis, study_name, n_seeds),
        "tuned_table.tex": tuned_table(analysis, study_name),
        "multipliers_table.tex": multiplier_table(analysis, study_name),
        "domains_table.tex": domain_table(analysis, study_name),
    }
    written = []
    for name, text in tables.items():
        if text is not None:
            (paper / name).write_text(text)
            written.append(name)
    (paper / "methods.tex").write_text(
        f"% Methods of study {study_name}, generated by lmablate.\n{tex(methods)}\n"
    )
    (paper / "paper.tex").write_text(paper_tex(study_name, written, figures))
    files = [*written, "methods.tex", "paper.tex"]
    engine = latex_engine()
    if engine is None:
        why = (
            f"${ENGINE_VARIABLE} is none"
            if os.environ.get(ENGINE_VARIABLE, "").strip().lower() == "none"
            else "no LaTeX engine (pdflatex, lualatex or xelatex) on the PATH"
        )
        return {"files": files, "pdf": None, "engine": None, "error": why}
    error = compile_pdf(paper, engine)
    return {
        "files": files,
        "pdf": None if error else "paper.pdf",
        "engine": Path(engine).name,
        "error": error,
    }
