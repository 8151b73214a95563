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

from lmablate.analysis.findings import AGGREGATED, Analysis, analyze
from lmablate.analysis.rundata import StudyData, load_study_dir
from lmablate.report.data import json_safe, research_data
from lmablate.report.figures import draw_all
from lmablate.report.latex import write_paper
from lmablate.report.markdown import markdown_report

CSV_COLUMNS = [
    "configuration",
    "seed",
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
    "status",
    "eval_loss_ci_low",
    "eval_loss_ci_high",
    "diff_vs_baseline",
    "diff_ci_low",
    "diff_ci_high",
    "p_holm",
    "verdict",
]


def write_csv(path: Path, analysis: Analysis) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in analysis.per_run:
            writer.writerow(json_safe({**row, "configuration": row["variant"]}))
        comparisons = {c.variant: c for c in analysis.comparisons}
        for variant, row in analysis.per_variant.items():
            statuses = set(row["statuses"])
            interval = analysis.intervals[variant]["eval_loss"] or {}
            comparison = comparisons.get(variant)
            extra = {}
            if comparison is not None:
                extra = {
                    "diff_vs_baseline": comparison.difference,
                    "diff_ci_low": comparison.ci_low,
                    "diff_ci_high": comparison.ci_high,
                    "p_holm": comparison.p_holm,
                    "verdict": comparison.verdict,
                }
            writer.writerow(
                json_safe(
                    {
                        **{k: row[k] for k in AGGREGATED},
                        "configuration": variant,
                        "seed": "mean",
                        "convergence_converged": row["converged"],
                        "status": statuses.pop() if len(statuses) == 1 else "mixed",
                        "eval_loss_ci_low": interval.get("ci_low"),
                        "eval_loss_ci_high": interval.get("ci_high"),
                        **extra,
                    }
                )
            )


def write_samples(study: StudyData, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for variant in study.variants:
        runs = [r for r in study.runs_of(variant) if r.samples]
        if not runs:
            continue
        (out / f"{variant}.json").write_text(
            json.dumps(
                {"variant": variant, "runs": {str(r.seed): r.samples for r in runs}}, indent=2
            )
        )
        lines = [f"# Text samples: {variant}", ""]
        for run in runs:
            settings = run.samples["settings"]
            lines += [
                f"## seed {run.seed}",
                "",
                f"{settings['max_new_tokens']} new tokens, temperature "
                f"{settings['temperature']}, top-k {settings['top_k']}, sampler seed "
                f"{settings['seed']}; weights of step {run.samples['step']}.",
                "",
            ]
            for sample in run.samples["samples"]:
                lines += [f"**{sample['prompt']}** → {sample['generated_only']!r}", ""]
        (out / f"{variant}.md").write_text("\n".join(lines))


def build_report(directory: str | Path) -> Path:
    """Rebuild ``DIR/report/`` from the run directories; returns its path."""
    study = load_study_dir(directory)
    analysis = analyze(study)
    out = study.directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_all(study, analysis, out)
    data = research_data(study, analysis, figures)
    (out / "research_data.json").write_text(json.dumps(data, indent=2))
    write_csv(out / "performance_metrics.csv", analysis)
    write_samples(study, out / "text_samples")
    write_paper(out, analysis, study.study["name"], len(study.study["seeds"]))
    (out / "research_report.md").write_text(markdown_report(study, analysis, data))
    archive = out / "research_package.zip"
    with zipfile.ZipFile(archive.with_suffix(".zip.tmp"), "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.suffix not in (".zip", ".tmp"):
                zf.write(path, path.relative_to(out))
    archive.with_suffix(".zip.tmp").replace(archive)
    return out
