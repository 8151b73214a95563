"""research_report.md: the report a researcher cites, written from research_data.json's numbers.

It covers every section of the reference report (overview, setup, key findings,
configuration details, results, visualizations, data files, usage for a paper, citation) and
adds what a reviewer asks for: how results were measured, efficiency at equal compute,
convergence, runs that did not finish, and text samples side by side.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.report.sections import (
    _fmt,
    _pm,
    _sci,
    _table,
    equal_budget_section,
    statistics_section,
    validity_section,
)

SMOLLM_CITATION = """\
@misc{benallal2024smollmcorpus,
  title  = {SmolLM-Corpus},
  author = {Ben Allal, Loubna and Lozhkov, Anton and Penedo, Guilherme and Wolf, Thomas
            and von Werra, Leandro},
  year   = {2024},
  url    = {https://huggingface.co/datasets/HuggingFaceTB/smollm-corpus}
}"""


def _budget_caveat(best: str, table: dict[str, dict[str, Any]]) -> list[str]:
    """Flag a winner that simply trained on more: more compute is not a better recipe."""
    base = table.get("baseline", {}).get("total_flops")
    mine = table[best]["total_flops"]
    if best == "baseline" or not base or not mine or mine <= 1.05 * base:
        return []
    return [
        f"- **Note:** {best} used {mine / base:.2f}x the baseline's training compute "
        f"({table[best]['tokens_seen']:,.0f} tokens against "
        f"{table['baseline']['tokens_seen']:,.0f}); compare at equal compute under "
        "*Efficiency* before crediting its recipe."
    ]


def _downstream(results: dict[str, Any]) -> list[str]:
    """lm-evaluation-harness results of the runs that have them (lmablate eval)."""
    if not results:
        return []
    columns = sorted(
        {
            (task, metric)
            for record in results.values()
            for task, metrics in record["results"].items()
            for metric, value in metrics.items()
            if isinstance(value, float) and "stderr" not in metric
        }
    )
    rows = []
    for run, record in results.items():
        cells = []
        for task, metric in columns:
            value = record["results"].get(task, {}).get(metric)
            stderr = record["results"].get(task, {}).get(metric.replace(",", "_stderr,", 1))
            cells.append(
                "—"
                if value is None
                else _fmt(value, ".4f")
                + (f" ± {_fmt(stderr, '.4f')}" if isinstance(stderr, float) else "")
            )
        limit = record.get("limit")
        rows.append([run, *cells, str(limit) if limit else "all"])
    header = ["run", *[f"{task} {metric.split(',')[0]}" for task, metric in columns], "limit"]
    return [
        "## Downstream Evaluation",
        "",
        "lm-evaluation-harness on the exported models (`lmablate eval`); ± is the harness's "
        "standard error.",
        "",
        *_table(header, rows),
    ]


def _quality_table(data: dict[str, Any], analysis: Analysis) -> list[str]:
    quality = data["results_summary"]["text_generation_quality"]
    rows = []
    for variant, q in quality.items():
        if not q["generation_success"]:
            continue
        rows.append(
            [
                variant,
                _fmt(q.get("distinct_1"), ".3f"),
                _fmt(q.get("distinct_2"), ".3f"),
                _fmt(q.get("distinct_3"), ".3f"),
                _fmt(q.get("repetition_rate"), ".3f"),
                _fmt(q.get("mean_new_tokens"), ".1f"),
                _fmt(q.get("mean_baseline_ppl"), ".1f"),
                _fmt(analysis.per_variant[variant]["val_bpb"]),
            ]
        )
    yardstick = next((q.get("yardstick") for q in quality.values() if q.get("yardstick")), None)
    note = (
        f"Perplexity under the baseline: each continuation scored by {yardstick['run']} "
        f"(weights of step {yardstick['step']}); geometric mean over prompts."
        if yardstick
        else "No complete baseline run, so continuations are not scored."
    )
    return [
        "Text quality per configuration: distinct-n = unique n-grams / all n-grams of the "
        "continuations (higher: more varied); repetition = share of 4-grams repeating an "
        "earlier 4-gram of the same continuation; length in tokens. " + note,
        "",
        *_table(
            [
                "configuration",
                "distinct-1",
                "distinct-2",
                "distinct-3",
                "repetition",
                "length",
                "ppl under baseline",
                "val bpb",
            ],
            rows,
        ),
    ]


def _key_findings(analysis: Analysis, n_seeds: int) -> list[str]:
    findings, table = analysis.findings, analysis.per_variant
    lowest = findings["lowest_mean_val_loss_config"]
    if lowest is None:
        return ["- No configuration completed; see *Runs that did not complete*."]
    interval = analysis.intervals[lowest]["eval_loss"]
    ci = (
        f", 95% CI [{_fmt(interval['ci_low'])}, {_fmt(interval['ci_high'])}]"
        if interval and interval["ci_low"] is not None
        else ""
    )
    best = findings["best_performing_config"]
    floor = findings["noise_floor"]
    out = []
    if best.startswith("tied: "):
        out.append(
            f"- **Best Performing Configuration:** {best} — their mean validation "
            f"losses lie within the noise floor ({floor:.4f}) of the lowest, "
            f"{lowest} ({_fmt(table[lowest]['eval_loss'])}{ci})"
        )
    else:
        gap = findings["runner_up_gap"]
        beyond = (
            f"; {_fmt(gap)} below the runner-up, beyond the noise floor {floor:.4f}"
            if floor is not None and gap is not None
            else ""
        )
        out.append(
            f"- **Best Performing Configuration:** {best} (validation loss "
            f"{_fmt(table[best]['eval_loss'])}{ci}{beyond})"
        )
    worst = findings["worst_performing_config"]
    most = findings["most_efficient_config"]
    out += [
        f"- **Worst Performing Configuration:** {worst} (validation loss "
        f"{_pm(table[worst]['eval_loss'], table[worst]['eval_loss_std'])}); gap "
        f"{_fmt(findings['performance_gap'])} nats per token",
        f"- **Most Efficient Configuration:** {most} ({_sci(table[most]['flops_to_target'])} "
        "FLOPs to reach the target)",
        f"- **Least Efficient Configuration:** {findings['least_efficient_config']}",
    ]
    if findings["best_at_equal_compute"]:
        out.append(
            f"- **Best at equal compute:** {findings['best_at_equal_compute']} (lowest "
            "validation loss at the FLOPs every configuration reached)"
        )
    out += _budget_caveat(lowest, table)
    verdicts = [f"{c.variant} {c.verdict} ({c.difference:+.4f})" for c in analysis.comparisons]
    if n_seeds >= 2 and verdicts:
        out.append(f"- **Against the baseline:** {'; '.join(verdicts)}")
    out.append(
        f"- **Measures:** performance is the {findings['ranking_metric']}; efficiency "
        f"is {findings['efficiency_measure']}, target "
        f"{_fmt(findings['target_val_loss'])}."
    )
    if n_seeds < 2:
        out.append(
            "- **Caution:** one seed per configuration. Differences smaller than the "
            "seed-to-seed variation cannot be told from noise; rerun with `--seeds 3` "
            "before claiming a small difference."
        )
    return out


def markdown_report(study: StudyData, analysis: Analysis, data: dict[str, Any]) -> str:
    meta, setup = data["metadata"], data["experimental_setup"]
    table = analysis.per_variant
    seeds = study.study["seeds"]
    env = meta["software"]
    dataset, training = setup["dataset"], setup["training_setup"]
    out = [
        "# Autoregressive Transformer Language Model Ablation Study",
        "",
        f"*Study `{meta['study']}`*: {meta['description']}",
        "",
        "## Experiment Overview",
        "",
        f"**Date:** {meta['training_finished'] or meta['collection_date']} (training finished); "
        f"report built {meta['collection_date']}  ",
        f"**Platform:** {meta['platform']}  ",
        f"**Hardware:** {meta['hardware']}  ",
        f"**Software:** lmablate {env.get('lmablate_version')} (git {env.get('git_sha') or 'n/a'}),"
        f" Python {env.get('python')}, PyTorch {env.get('torch')}"
        f"{', CUDA ' + env['cuda'] if env.get('cuda') else ''}  ",
        f"**Total Configurations:** {meta['total_configurations']} × {len(seeds)} seed(s) "
        f"({', '.join(f'{n} {s}' for s, n in meta['runs'].items())})  ",
        f"**Total training time:** {meta['training_duration_estimate']:,.0f} s of wall-clock time",
        "",
        "## Experimental Setup",
        "",
        "### Dataset",
        f"- **Source:** {dataset['name']}",
        f"- **Size:** {dataset['num_documents'] or 'all'} documents",
        f"- **Tokenizer:** {dataset['tokenizer']}",
        f"- **Preprocessing:** {dataset['preprocessing']}",
    ]
    targets = dataset.get("validation_targets")
    if targets:
        out.append(
            f"- **Validation:** {targets['targets']:,} target tokens ({targets['bytes']:,} "
            "bytes of text) from documents never trained on, the same for every run"
        )
    arch = setup["model_architecture"]
    out += [
        "",
        "### Model Architecture",
        f"- **Type:** {arch['type']}",
        f"- **Attention:** {arch['attention_mechanism']}",
        f"- **Activation:** {arch['activation']}",
        f"- **Normalization:** {arch['normalization']}",
        f"- **Embeddings:** {'tied input and output' if arch['tied_embeddings'] else 'untied'}",
        "",
        "### Training Configuration",
        f"- **Optimizer:** {training['optimizer']}",
        f"- **Scheduler:** {training['scheduler']}",
        f"- **Precision:** {training['mixed_precision']}",
        f"- **Gradient clipping:** global norm {training['gradient_clipping']}",
        f"- **Evaluation:** {training['evaluation_frequency']} and at step 0",
        f"- **Seeds:** {seeds}; replicate k of every configuration uses initialization seed k "
        "and batch order k",
        "",
        "## Key Findings",
        "",
    ]
    out += _key_findings(analysis, len(seeds))
    out += ["", "## Configuration Details", ""]
    for variant, details in setup["configurations"].items():
        out += [
            f"### {variant.replace('_', ' ').title().replace(' ', '_')}",
            f"**Description:** {details.get('description') or '—'}",
            "",
        ]
        shown = {k: v for k, v in details.items() if k != "description"}
        if variant == "baseline":
            keys = (
                "d_model",
                "n_heads",
                "n_layers",
                "d_ff",
                "mlp",
                "batch_size",
                "learning_rate",
                "seq_len",
                "max_steps",
                "warmup_steps",
            )
            shown = {k: details[k] for k in keys if k in details}
        out += [f"- **{k}:** {v}" for k, v in shown.items()] or ["- (same as baseline)"]
        out.append("")

    out += [
        "## Results Summary",
        "",
        "### Performance Metrics",
        "Configurations ranked by final validation loss on held-out documents "
        "(mean ± standard deviation over seeds where there are several), with the final "
        "training loss (mean of the last 10% of logged steps) beside it:",
        "",
    ]
    rows = []
    for rank, (variant, _) in enumerate(analysis.ranking, 1):
        row = table[variant]
        rows.append(
            [
                str(rank),
                f"**{variant}**",
                _pm(row["eval_loss"], row["eval_loss_std"]),
                _fmt(row["val_bpb"]),
                _fmt(row["train_loss"]),
                _fmt(row["accuracy"], ".3f"),
                _fmt(row["top5_accuracy"], ".3f"),
                _fmt(row["perplexity"], ".1f"),
                f"{row['tokens_seen']:,.0f}",
                _fmt(row["epochs"], ".2f"),
                f"{row['params'] / 1e6:.2f}M",
            ]
        )
    out += _table(
        [
            "rank",
            "configuration",
            "val loss",
            "val bpb",
            "train loss",
            "accuracy",
            "top-5",
            "perplexity",
            "tokens",
            "epochs",
            "params",
        ],
        rows,
    )

    out += [
        "### Efficiency",
        f"Compute and time to reach the target validation loss of "
        f"{_fmt(analysis.target_loss)} ({analysis.target_source}), read off each run's "
        "evaluation curve; throughput and MFU are measured with the device synchronized. "
        "Steps per second are shown for completeness only: they ignore how much each step "
        "learns and are never used to rank.",
        "",
    ]
    rows = []
    for variant, _ in analysis.efficiency_ranking:
        row = table[variant]
        rows.append(
            [
                variant,
                _sci(row["flops_to_target"]),
                _fmt(row["time_to_target"], ".1f"),
                _sci(row["total_flops"]),
                f"{_fmt(row['tokens_per_s'], ',.0f')}",
                _fmt(row["mfu"], ".1%") if row["mfu"] is not None else "n/a",
                _fmt(row["wall_time"], ".1f"),
                _fmt(row["efficiency_steps_per_second"], ".2f"),
            ]
        )
    out += _table(
        [
            "configuration",
            "FLOPs to target",
            "train s to target",
            "total FLOPs",
            "tokens/s",
            "MFU",
            "wall s",
            "steps/s",
        ],
        rows,
    )

    out += [
        "### Convergence",
        "Relative validation-loss improvement from step 0 to the end; mean training loss in "
        "the first and last 10% of logged steps; converged = validation loss improved by "
        "less than 1% over the last 20% of training.",
        "",
    ]
    out += _table(
        ["configuration", "improvement", "early loss", "late loss", "converged"],
        [
            [
                v,
                _fmt(table[v]["convergence_total_improvement"], ".1%"),
                _fmt(table[v]["convergence_early_phase_loss"]),
                _fmt(table[v]["convergence_late_phase_loss"]),
                {True: "yes", False: "no", None: "n/a"}[table[v]["converged"]],
            ]
            for v, _ in analysis.ranking
        ],
    )

    unfinished = [m for m in analysis.per_run if m["status"] != "complete"]
    if unfinished:
        out += ["### Runs that did not complete", ""]
        out += _table(
            ["configuration", "seed", "status", "reason"],
            [[m["variant"], str(m["seed"]), m["status"], m["message"] or "—"] for m in unfinished],
        )

    out += statistics_section(analysis, len(seeds))
    out += equal_budget_section(analysis)
    out += validity_section(analysis)
    out += _downstream(data["downstream_evaluation"])
    out += ["## Text Generation", ""]
    samples = data["text_samples"]
    prompts = next((s for s in samples.values() if s), {})
    if prompts:
        quality = next(
            q
            for q in data["results_summary"]["text_generation_quality"].values()
            if q["generation_success"]
        )
        settings = quality["settings"]
        out += [
            f"One continuation per prompt and configuration: {settings['max_new_tokens']} new "
            f"tokens, temperature {settings['temperature']}, sampler seed {settings['seed']} "
            "(the same for every configuration). Full samples: `text_samples/`.",
            "",
        ]
        out += _quality_table(data, analysis)
        for key, first in prompts.items():
            out += [f"**Prompt:** *{first['prompt']}*", ""]
            out += _table(
                ["configuration", "continuation"],
                [
                    [
                        v,
                        repr(samples[v][key]["generated_only"])
                        if key in samples.get(v, {})
                        else "—",
                    ]
                    for v in study.variants
                ],
            )
    else:
        out += ["No text samples (no run completed).", ""]

    out += [
        "## Visualizations",
        "",
        "The following visualizations are included in this research package:",
        "",
    ]
    for i, (name, description) in enumerate(data["visualizations"].items(), 1):
        out += [f"{i}. **{name}** - {description}", "", f"![{description}]({name})", ""]
    out += [
        "## Data Files",
        "",
        "- **research_data.json** - Complete experimental data in JSON format",
        "- **performance_metrics.csv** - Performance metrics in CSV format for statistical "
        "analysis (one row per run, and one `mean` row per configuration)",
        "- **text_samples/** - Generated text samples for each configuration",
        "- **research_package.zip** - Everything above in one archive",
        "",
        "Every number is computed from the run directories under `runs/` "
        "(`lmablate report` rebuilds this package from them).",
        "",
        "## How the numbers were measured",
        "",
        "- Validation loss is the mean next-token cross-entropy (nats) on target tokens from "
        "documents held out from training by a seeded document-level split; every run scores "
        "exactly the same targets whatever its sequence length or batch size.",
        "- Bits per byte divide the total loss in bits by the UTF-8 bytes of the scored text, so "
        "they compare across tokenizers.",
        "- Training FLOPs are 6N + 12·L·d·T per token (N: weights in matrix multiplies, L "
        "layers, d width, T context), so runs compare at equal compute as well as equal tokens.",
        "- Throughput is measured with the device synchronized before each clock read; "
        "evaluation time is excluded.",
        "",
        "## Usage for Research Paper",
        "",
        "This data package contains the information needed to write up the study. The structured "
        "files load directly into analysis tools.",
        "",
        "### Recommended Sections for Paper:",
        "",
        "1. **Introduction** - Use experimental_setup data",
        "2. **Methodology** - Reference model architecture, training configuration and *How the "
        "numbers were measured*",
        "3. **Results** - Use performance_metrics and statistical_analysis",
        "4. **Discussion** - Reference key_findings and text_generation_quality",
        "5. **Conclusion** - Summarize from results_summary",
        "",
        "### Citation Data",
        "",
    ]
    if "smollm-corpus" in dataset["name"]:
        out += ["Please cite the SmolLM corpus:", "", "```bibtex", SMOLLM_CITATION, "```", ""]
    else:
        out += [
            f"Please cite the source of the training data ({dataset['name']}) and any other "
            "referenced materials.",
            "",
        ]
    return "\n".join(out)
