"""The research package: research_data.json, CSV, Markdown report, samples, figures, zip.

``build_report`` writes every file of ``DIR/report/``; the content of research_data.json is
``data.py``'s, the report's ``markdown.py``'s, the figures' ``figures.py``'s. Formatting only:
every number comes from ``analysis`` (which reads the run directories), so ``lmablate report
DIR`` rebuilds the same package from disk at any time. No torch.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

from lmablate.analysis.findings import AGGREGATED, Analysis, analyze
from lmablate.analysis.rundata import RunData, StudyData, load_study_dir
from lmablate.report.data import json_safe, research_data
from lmablate.report.domains import draw_domains, write_domains_csv
from lmablate.report.figures import draw_all
from lmablate.report.format import (
    INVALID_BYTES,
    by_prompt,
    code_block,
    prompt_blocks,
    seeds_text,
)
from lmablate.report.latex import write_paper
from lmablate.report.markdown import markdown_report
from lmablate.report.methods import methods_paragraph

# the reference file's columns first, in its order, so scripts written for it keep working
REFERENCE_COLUMNS = [
    "configuration",
    "train_loss",
    "eval_loss",
    "accuracy",
    "perplexity",
    "avg_confidence",
    "top5_accuracy",
    "convergence_total_improvement",
    "convergence_early_phase_loss",
    "convergence_late_phase_loss",
    "convergence_converged",
    "efficiency_avg_step_time",
    "efficiency_steps_per_second",
    "efficiency_step_time_std",
]
MEASURED_COLUMNS = [
    "convergence_late_slope",
    "convergence_late_slope_ci_low",
    "convergence_late_slope_ci_high",
    "convergence_late_reading",
    "val_bpb",
    "tokens_seen",
    "epochs",
    "params",
    "non_embedding_params",
    "total_flops",
    "tokens_per_s",
    "mfu",
    "wall_time",
    "flops_to_target",
    "time_to_target",
]
CONFIG_COLUMNS = [
    *REFERENCE_COLUMNS,
    "n_seeds",
    "n_complete",
    "status",
    *MEASURED_COLUMNS,
    "eval_loss_std",
    "eval_loss_ci_low",
    "eval_loss_ci_high",
    "diff_vs_baseline",
    "diff_ci_low",
    "diff_ci_high",
    "diff_interval",
    "p_holm",
    "verdict",
]
RUN_COLUMNS = [*REFERENCE_COLUMNS[:1], "seed", "status", *REFERENCE_COLUMNS[1:], *MEASURED_COLUMNS]


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(json_safe(row))


def write_csvs(out: Path, analysis: Analysis) -> None:
    """performance_metrics.csv: one row per configuration (seed means; the reference columns
    first); run_metrics.csv: one row per run, with a numeric seed column."""
    _write_rows(
        out / "run_metrics.csv",
        RUN_COLUMNS,
        [{**row, "configuration": row["variant"]} for row in analysis.per_run],
    )
    comparisons = {c.variant: c for c in analysis.comparisons}
    rows = []
    for variant, row in analysis.per_variant.items():
        statuses = set(row["statuses"])
        interval = analysis.intervals[variant]["eval_loss"] or {}
        slope = row["late_slope"] or {}
        comparison = comparisons.get(variant)
        documents = analysis.document_intervals.get(variant) or {}
        extra: dict[str, Any] = {}
        if comparison is not None:
            extra = {
                "diff_vs_baseline": comparison.difference,
                "p_holm": comparison.p_holm,
                "verdict": comparison.verdict,
            }
        if comparison is not None and comparison.ci_low is not None:
            extra |= {
                "diff_ci_low": comparison.ci_low,
                "diff_ci_high": comparison.ci_high,
                "diff_interval": "seeds",
            }
        elif "ci_low" in documents:  # with one seed, the only interval there is
            extra |= {
                "diff_vs_baseline": documents["difference"],
                "diff_ci_low": documents["ci_low"],
                "diff_ci_high": documents["ci_high"],
                "diff_interval": "documents",
            }
        rows.append(
            {
                **{k: row[k] for k in AGGREGATED},
                "configuration": variant,
                "n_seeds": row["n_seeds"],
                "n_complete": row["n_complete"],
                "eval_loss_std": row["eval_loss_std"],
                "convergence_converged": row["converged"],
                "convergence_late_slope": slope.get("slope"),
                "convergence_late_slope_ci_low": slope.get("ci_low"),
                "convergence_late_slope_ci_high": slope.get("ci_high"),
                "convergence_late_reading": slope.get("reading"),
                "status": statuses.pop() if len(statuses) == 1 else "mixed",
                "eval_loss_ci_low": interval.get("ci_low"),
                "eval_loss_ci_high": interval.get("ci_high"),
                **extra,
            }
        )
    _write_rows(out / "performance_metrics.csv", CONFIG_COLUMNS, rows)
    write_domains_csv(out, analysis, _write_rows)


def write_samples(study: StudyData, out: Path) -> None:
    """text_samples/VARIANT.json (everything) and .md (each run's continuations as plain
    text), and appendix.md: per prompt, the true continuation of a held-out document beside
    every configuration's continuation (its first seed's)."""
    out.mkdir(parents=True, exist_ok=True)
    first: dict[str, RunData] = {}
    for variant in study.variants:
        runs = [r for r in study.runs_of(variant) if r.samples]
        if not runs:
            continue
        first[variant] = runs[0]
        (out / f"{variant}.json").write_text(
            json.dumps(
                {"variant": variant, "runs": {str(r.seed): r.samples for r in runs}}, indent=2
            )
        )
        lines = [f"# Text samples: {variant}", ""]
        for run in runs:
            lines += [f"## seed {run.seed}", "", _settings_line(run.samples), ""]
            for draws in by_prompt(run.samples["samples"]):
                lines += prompt_blocks(draws[0])
                lines += _draw_blocks(variant, draws)
        (out / f"{variant}.md").write_text("\n".join(lines))
    if not first:
        return
    reference = next(iter(first.values())).samples
    lines = [
        "# Appendix: text samples",
        "",
        _settings_line(reference),
        "Every configuration samples with the same sampler seeds, from its first seed's final "
        "weights. Prompts from held-out validation documents are shown with the document's "
        f"own continuation. Bytes that do not decode as UTF-8 show as {INVALID_BYTES}.",
        "",
    ]
    grouped = {variant: by_prompt(run.samples["samples"]) for variant, run in first.items()}
    for i, draws in enumerate(by_prompt(reference["samples"])):
        source = draws[0].get("source", "fixed prompt")
        lines += [f"## Prompt {i + 1} ({source})", "", *prompt_blocks(draws[0])]
        for variant, groups in grouped.items():
            # matched by prompt, not position: a stale samples.json may hold other prompts
            same = [g for g in groups if g[0]["prompt"] == draws[0]["prompt"]]
            if same:
                lines += _draw_blocks(variant, same[0])
            else:
                lines += [f"{variant}:", *code_block("(no continuation of this prompt)")]
    (out / "appendix.md").write_text("\n".join(lines))


def _draw_blocks(variant: str, draws: list[dict[str, Any]]) -> list[str]:
    """One configuration's continuations of one prompt, a block per draw."""
    if len(draws) == 1:
        return [f"{variant}:", *code_block(draws[0]["generated_only"])]
    out: list[str] = []
    for sample in draws:
        label = f"{variant}, draw {sample.get('draw', 0) + 1} (seed {sample.get('seed')}):"
        out += [label, *code_block(sample["generated_only"])]
    return out


def _settings_line(samples: dict[str, Any]) -> str:
    settings = samples["settings"]
    return (
        f"{settings['max_new_tokens']} new tokens, temperature {settings['temperature']}, "
        f"top-k {settings['top_k']}, {seeds_text(settings)}; weights of step "
        f"{samples['step']}."
    )


def build_report(directory: str | Path) -> Path:
    """Rebuild ``DIR/report/`` from the run directories; returns its path."""
    study = load_study_dir(directory)
    analysis = analyze(study)
    out = study.directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    # what this version draws replaces what any version drew: no stale figure reaches the zip
    for stale in [*out.glob("*.png"), *out.glob("paper/*.pdf")]:
        stale.unlink()
    figures = draw_all(study, analysis, out) | draw_domains(analysis, out)
    data = research_data(study, analysis, figures)
    data["paper"] = write_paper(
        out,
        analysis,
        study.study["name"],
        len(study.study["seeds"]),
        methods_paragraph(study, analysis, data),
        {f"{Path(name).stem}.pdf": figure["description"] for name, figure in figures.items()},
    )
    (out / "research_data.json").write_text(json.dumps(data, indent=2))
    write_csvs(out, analysis)
    write_samples(study, out / "text_samples")
    (out / "research_report.md").write_text(markdown_report(study, analysis, data))
    archive = out / "research_package.zip"
    with zipfile.ZipFile(archive.with_suffix(".zip.tmp"), "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.suffix not in (".zip", ".tmp"):
                zf.write(path, path.relative_to(out))
        # the resolved study: what a reader needs to rerun it
        zf.write(study.directory / "study.yaml", "study.yaml")
    archive.with_suffix(".zip.tmp").replace(archive)
    return out
