"""The report's result sections: key findings, the performance, efficiency and convergence
tables, runs that did not complete, downstream evaluations and the text samples side by side.
Formatting only; every number comes from ``analysis`` or research_data.json. No torch.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import CONVERGED_TOLERANCE, Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.analysis.validity import INDICATIVE
from lmablate.report.efficiency import (
    efficiency_findings,
    efficiency_rule,
    flops_interval,
    target_levels_table,
)
from lmablate.report.format import (
    ci,
    code_block,
    fmt,
    md_table,
    measure,
    pm,
    prompt_blocks,
    sci,
    seeds_text,
    setting,
    without_empty_columns,
)
from lmablate.report.references import reference_findings, reference_line
from lmablate.report.scale import scale_findings


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
        "*Efficiency* before crediting its recipe, or rerun the study with "
        "`budget: {match: flops}` so every schedule ends at the baseline's compute."
    ]


def _edge_finding(edge: dict[str, Any]) -> str:
    """A one-factor series whose best value lies at its edge: the baseline is likely
    under-tuned in that field, and every comparison with it inherits that."""
    field, points = edge["field"], edge["points"]
    order = " > ".join(f"{p['variant']} ({p['value']:g}): {fmt(p['val_loss'])}" for p in points)
    if edge["edge"] == "lowest":
        order = " < ".join(f"{p['variant']} ({p['value']:g}): {fmt(p['val_loss'])}" for p in points)
    at_baseline = edge["best"] == "baseline"
    consequence = (
        f"the baseline's own {field} is the best tried but sits at the edge, so a value "
        "beyond it may do better still"
        if at_baseline
        else f"the baseline's {field} ({edge['baseline_value']:g}) is likely under-tuned, and "
        "every other variant's comparison with the baseline inherits that"
    )
    return (
        f"- **Edge of a sweep ({field}):** validation loss is monotone in {field} "
        f"({order}), best at the {edge['edge']} value tried ({edge['best']}, "
        f"{edge['best_value']:g}); the best {field} may lie beyond it: {consequence}. Extend "
        f"the values, or tune it for every configuration (tune: {{{field}: [...]}})."
        + (
            " With one seed this order is not tested against seed-to-seed variation; rerun "
            "with --seeds 3 before acting on it."
            if edge.get("noise_floor") is None
            else ""
        )
    )


def key_findings(analysis: Analysis, n_seeds: int) -> list[str]:
    findings, table = analysis.findings, analysis.per_variant
    lowest = findings["lowest_mean_val_loss_config"]
    if lowest is None:
        return ["- No configuration completed; see *Runs that did not complete*."]
    metric = findings.get("metric", "eval_loss")
    unit = findings.get("unit", "nats per token")
    named = measure(analysis, short=True).replace("val ", "validation ")
    interval = analysis.intervals[lowest][metric]
    ci = (
        f", 95% CI [{fmt(interval['ci_low'])}, {fmt(interval['ci_high'])}]"
        if interval and interval["ci_low"] is not None
        else ""
    )
    best = findings["best_performing_config"]
    floor = findings["noise_floor"]
    out = _tuned_findings(analysis)
    if best.startswith("tied: "):
        out.append(
            f"- **Best Performing Configuration:** {best} — their mean {named} "
            f"values lie within the noise floor ({floor:.4f}) of the lowest, "
            f"{lowest} ({fmt(table[lowest][metric])}{ci})"
        )
    else:
        gap = findings["runner_up_gap"]
        beyond = (
            f"; {fmt(gap)} below the runner-up, beyond the noise floor {floor:.4f}"
            if floor is not None and gap is not None
            else ""
        )
        out.append(
            f"- **Best Performing Configuration:** {best} ({named} "
            f"{fmt(table[best][metric])}{ci}{beyond})"
        )
    worst = findings["worst_performing_config"]
    out += [
        f"- **Worst Performing Configuration:** {worst} ({named} "
        f"{pm(table[worst][metric], table[worst][f'{metric}_std'])}); gap "
        f"{fmt(findings['performance_gap'])} {unit}",
    ]
    out += efficiency_findings(analysis)
    if findings["not_reaching_target"]:
        out.append(
            "- **Not placed on efficiency:** "
            f"{', '.join(findings['not_reaching_target'])} (its seed-mean curve never gets "
            f"down to the ranking target {fmt(analysis.target_loss)})"
        )
    if analysis.efficiency.get("at_start"):
        out.append(
            "- **Not placed on efficiency:** "
            f"{', '.join(analysis.efficiency['at_start'])} (its step-0 evaluation is already at "
            "the ranking target: training never took it below its initial loss)"
        )
    if findings["best_at_equal_compute"]:
        out.append(
            f"- **Best at equal compute:** {findings['best_at_equal_compute']} (lowest "
            f"{measure(analysis)} at the FLOPs every configuration reached; "
            f"{_equal_reading(analysis)}, see Equal-Budget Comparison)"
        )
    out += reference_findings(analysis)
    out += scale_findings(analysis)
    out += _budget_caveat(lowest, table)
    out += [_edge_finding(edge) for edge in analysis.sweep_edges]
    verdicts = [f"{c.variant} {c.verdict} ({c.difference:+.4f})" for c in analysis.comparisons]
    if n_seeds >= 2 and verdicts:
        out.append(f"- **Against the baseline:** {'; '.join(verdicts)}")
    efficiency = (
        f"efficiency is {findings['efficiency_measure']}, target {fmt(findings['target_val_loss'])}"
    )
    out.append(f"- **Measures:** performance is the {findings['ranking_metric']}; {efficiency}.")
    if n_seeds < 2:
        out.append(
            "- **Caution:** one seed per configuration. Differences smaller than the "
            "seed-to-seed variation cannot be told from noise; rerun with `--seeds 3` "
            "before claiming a small difference."
        )
    return out


def _equal_reading(analysis: Analysis) -> str:
    reading = (analysis.equal_budgets.get("flops") or {}).get("reading", INDICATIVE)
    if reading != INDICATIVE:
        if analysis.budget.get("match") == "flops":
            return f"{reading}: budgets matched on FLOPs"
        return f"{reading}: every compared run ends at these FLOPs"
    return "mid-schedule for the longer runs, so indicative"


def results_tables(analysis: Analysis) -> list[str]:
    """Performance (ranked by validation loss), efficiency, convergence, unfinished runs."""
    table_rows = analysis.per_variant
    out: list[str] = []
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
        row = table_rows[variant]
        rows.append(
            [
                str(rank),
                f"**{variant}**",
                pm(row["eval_loss"], row["eval_loss_std"]),
                fmt(row["val_bpb"]),
                fmt(row["train_loss"]),
                fmt(row["accuracy"], ".3f"),
                fmt(row["top5_accuracy"], ".3f"),
                fmt(row["perplexity"], ".1f"),
                f"{row['tokens_seen']:,.0f}",
                fmt(row["epochs"], ".2f"),
                f"{row['params'] / 1e6:.2f}M",
            ]
        )
    out += md_table(
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
    out += reference_line(analysis)

    equal = analysis.equal_budgets.get("flops") or {}
    matched = equal.get("matched_budget")
    out += [
        "### Efficiency",
        f"Compute and training time to reach the ranking target {measure(analysis)} "
        f"{fmt(analysis.target_loss)}. {efficiency_rule()} Beside it, the {measure(analysis)} at "
        "the largest training compute every configuration reached "
        f"({sci(matched) if matched else 'n/a'} FLOPs; {_equal_reading(analysis)}). "
        "Throughput and MFU are measured with the device synchronized. Steps per second are "
        "shown for completeness only: they ignore how much each step learns and are never used "
        "to rank.",
        "",
    ]
    placed = analysis.efficiency.get("configurations") or {}
    rows = []
    for variant, _ in analysis.efficiency_ranking:
        row = table_rows[variant]
        share = (placed.get(variant) or {}).get("share_of_run")
        rows.append(
            [
                variant,
                flops_interval(placed.get(variant)),
                fmt(share, ".0%"),
                fmt(row["time_to_target"], ".1f"),
                fmt((equal.get("val_loss") or {}).get(variant)),
                sci(row["total_flops"]),
                f"{fmt(row['tokens_per_s'], ',.0f')}",
                fmt(row["mfu"], ".1%") if row["mfu"] is not None else "n/a",
                fmt(row["wall_time"], ".1f"),
                fmt(row["efficiency_steps_per_second"], ".2f"),
            ]
        )
    out += md_table(
        *without_empty_columns(
            [
                "configuration",
                "FLOPs to target [95% CI]",
                "reached at (share of run)",
                "train s to target",
                f"{measure(analysis, short=True)} at equal FLOPs"
                + (
                    " (indicative)"
                    if equal.get("reading", INDICATIVE) == INDICATIVE
                    else " (end of schedule)"
                ),
                "total FLOPs",
                "tokens/s",
                "MFU",
                "wall s",
                "steps/s",
            ],
            rows,
        )
    )
    out += target_levels_table(analysis)

    out += [
        "### Convergence",
        "Relative validation-loss improvement from step 0 to the end; mean training loss in "
        "the first and last 10% of logged steps; the late slope: a least-squares line through "
        "the (seed-mean) logged training loss over the last fifth of the tokens, in loss per "
        "million tokens with its 95% interval from the scatter about the line, and the drop "
        "it amounts to over that fifth. *Still falling* means the interval lies below zero: "
        "more training would have lowered the loss further, and a ranking at this budget may "
        "not hold at a longer one. *Converged* is stated only when the interval excludes a "
        "meaningful decline: its lower end lies above the slope that would lower the loss by "
        f"{CONVERGED_TOLERANCE} nats over that last fifth (and the loss is not rising); a run "
        "whose interval includes such a decline is *still falling* (the interval lies below "
        "zero) or *undetermined* (it does not), never converged.",
        "",
    ]

    def slope_cells(row: dict[str, Any]) -> list[str]:
        slope = row["late_slope"]
        if slope is None:
            return ["n/a", "n/a", "n/a", row["convergence"]]
        interval = (
            f" [{slope['ci_low']:+.3g}, {slope['ci_high']:+.3g}]"
            if slope["ci_low"] is not None
            else ""
        )
        return [
            f"{slope['slope']:+.3g}{interval}",
            fmt(slope["drop"]),
            slope["reading"],
            row["convergence"],
        ]

    out += md_table(
        [
            "configuration",
            "improvement",
            "early loss",
            "late loss",
            "late slope (per M tokens)",
            "drop over last fifth",
            "reading",
            f"converged (tolerance {CONVERGED_TOLERANCE} nats)",
        ],
        [
            [
                v,
                fmt(table_rows[v]["convergence_total_improvement"], ".1%"),
                fmt(table_rows[v]["convergence_early_phase_loss"]),
                fmt(table_rows[v]["convergence_late_phase_loss"]),
                *slope_cells(table_rows[v]),
            ]
            for v, _ in analysis.ranking
        ],
    )

    unfinished = [m for m in analysis.per_run if m["status"] != "complete"]
    if unfinished:
        out += ["### Runs that did not complete", ""]
        out += md_table(
            ["configuration", "seed", "status", "reason"],
            [[m["variant"], str(m["seed"]), m["status"], m["message"] or "—"] for m in unfinished],
        )

    return out


def downstream_section(results: dict[str, Any]) -> list[str]:
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
                else fmt(value, ".4f")
                + (f" ± {fmt(stderr, '.4f')}" if isinstance(stderr, float) else "")
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
        *md_table(header, rows),
    ]


def text_generation_section(
    study: StudyData, analysis: Analysis, data: dict[str, Any]
) -> list[str]:
    """The continuations' quality measures, one example, and where the rest are."""
    out: list[str] = ["## Text Generation", ""]
    samples = data["text_samples"]
    prompts = next((s for s in samples.values() if s), {})
    if not prompts:
        return [*out, "No text samples (no run completed, or samples were switched off).", ""]
    quality = next(
        q
        for q in data["results_summary"]["text_generation_quality"].values()
        if q["generation_success"]
    )
    settings = quality["settings"]
    held_out = sum("reference" in p for p in prompts.values())
    out += [
        f"Every configuration continued {len(prompts)} prompt(s)"
        + (
            f", {held_out} of them the opening tokens of held-out validation documents (up to "
            f"{settings.get('prompt_tokens')}, fewer where the study's shortest context needs "
            "the room for the continuation; the documents' own continuations are shown beside "
            "them)"
            if held_out
            else ""
        )
        + f": {settings['max_new_tokens']} new tokens, temperature {settings['temperature']}, "
        f"{seeds_text(settings)}, the same for every configuration, from its first seed's "
        "final weights. All continuations, side by side: "
        "[`text_samples/appendix.md`](text_samples/appendix.md).",
        "",
    ]
    out += _quality_table(data, analysis)
    example = next(iter(prompts.values()))
    out += prompt_blocks(example, f"**Example** ({example.get('source', 'fixed prompt')}). Prompt:")
    drawn = " (first draw)" if settings.get("draws", 1) > 1 else ""
    for variant in study.compared:
        same = [s for s in samples.get(variant, {}).values() if s["prompt"] == example["prompt"]]
        if same:  # matched by prompt: a stale samples.json may hold other prompts
            out += [f"{variant}{drawn}:", "", *code_block(same[0]["generated_only"])]
    return out


def _quality_table(data: dict[str, Any], analysis: Analysis) -> list[str]:
    quality = data["results_summary"]["text_generation_quality"]

    def measures(q: dict[str, Any]) -> list[str]:
        return [
            fmt(q.get("distinct_1"), ".3f"),
            fmt(q.get("distinct_2"), ".3f"),
            fmt(q.get("distinct_3"), ".3f"),
            fmt(q.get("repetition_rate"), ".3f"),
            fmt(q.get("mean_new_tokens"), ".1f"),
            fmt(q.get("mean_bigram_ppl"), ".1f"),
            fmt(q.get("mean_baseline_ppl"), ".1f"),
        ]

    rows = [
        [variant, *measures(q), fmt(analysis.per_variant[variant]["val_bpb"])]
        for variant, q in quality.items()
        if q["generation_success"]
    ]
    scored = [q for q in quality.values() if q["generation_success"]]
    held_out = next((q["held_out_text"] for q in scored if q.get("held_out_text")), None)
    if held_out:
        rows.append(["*documents' own continuations*", *measures(held_out), "-"])
    yardstick = next((q.get("yardstick") for q in scored if q.get("yardstick")), None) or {}
    baseline = yardstick.get("baseline") or (yardstick if "run" in yardstick else None)
    notes = [
        "Bigram ppl: each continuation scored by the training split's bigram count model (the "
        "bigram reference loss's), a yardstick that favours no configuration; lower is more "
        "locally fluent, and very low with high repetition is a loop."
        if yardstick.get("bigram")
        else "Bigram ppl: not scored.",
        f"Ppl under baseline: scored by {baseline['run']} (weights of step {baseline['step']}), "
        "which favours text like the baseline's own."
        if baseline
        else "No complete baseline run, so continuations are not scored under it.",
        "Both are geometric means over prompts and draws"
        + (
            "; the last row scores the held-out documents' true continuations." if held_out else "."
        ),
    ]
    return [
        "Text quality per configuration: distinct-n = unique n-grams / all n-grams of the "
        "continuations (higher: more varied); repetition = share of 4-grams repeating an "
        "earlier 4-gram of the same continuation; length in tokens. " + " ".join(notes),
        "",
        *md_table(
            [
                "configuration",
                "distinct-1",
                "distinct-2",
                "distinct-3",
                "repetition",
                "length",
                "bigram ppl",
                "ppl under baseline",
                "val bpb",
            ],
            rows,
        ),
    ]


def _tuned_findings(analysis: Analysis) -> list[str]:
    """The tuned comparison's verdicts first: in a tuned study they are the claim."""
    tuning = analysis.tuning
    if not tuning or not tuning.get("ranking"):
        return []
    fields = ", ".join(tuning["fields"])
    best = tuning["ranking"][0]
    rows = tuning["configurations"]
    verdicts = "; ".join(
        f"{c['variant']} {c['verdict']} ({c['difference']:+.4f})" for c in tuning["comparisons"]
    )
    out = [
        f"- **Tuned comparison** (each configuration at its own best {fields}, chosen on "
        f"validation, reported on the test split): lowest test loss **{best}** "
        f"({fmt(rows[best]['test_loss'])})"
        + (f"; against the baseline: {verdicts}" if verdicts else ""),
    ]
    edges = [c for c, row in rows.items() if row.get("at_edge")]
    if edges:
        out.append(
            f"- **Edge of the tuning grid:** {', '.join(edges)} chose a value at the end of "
            "its grid; its best may lie beyond, so its tuned number is an upper bound"
        )
    out.append(
        "- The rows below compare every configuration at its own (untuned) settings, on validation."
    )
    return out


def tuning_section(analysis: Analysis) -> list[str]:
    """What was tuned, over which values, what each configuration chose, its test numbers and
    the test-split comparisons with the baseline's choice."""
    tuning = analysis.tuning
    if not tuning:
        return []
    fields = tuning["fields"]
    out = [
        "## Tuned Comparison",
        "",
        "Every configuration was trained at every value of "
        + "; ".join(f"{f} ∈ {{{', '.join(map(setting, values))}}}" for f, values in fields.items())
        + f". Each is represented by the value with the lowest mean {measure(analysis)}, and "
        "reported — and compared with the baseline's choice — on the **test** documents, which "
        "neither training nor the choice saw.",
        "",
    ]
    rows = []
    for config, row in tuning["configurations"].items():
        if row["chosen"] is None:
            rows.append([config, "no candidate completed on every seed", "", "", "", ""])
            continue
        values = ", ".join(f"{f}={setting(v)}" for f, v in row["values"].items())
        rows.append(
            [
                config,
                values,
                fmt(row["validation_loss"][row["chosen"]]),
                ci(row["test_interval"]) if row["test_interval"] else fmt(row["test_loss"]),
                ", ".join(row["at_edge"]) or "no",
                row["chosen"],
            ]
        )
    out += md_table(
        [
            "configuration",
            "chosen",
            f"{measure(analysis, short=True)} (choice)",
            f"test {'bpb' if analysis.findings.get('metric') == 'val_bpb' else 'loss'} [95% CI]",
            "at grid edge",
            "run",
        ],
        rows,
    )
    out += reference_line(analysis, "test")
    comparisons = tuning["comparisons"]
    if comparisons:
        out += [
            "**Against the baseline's choice, on test** (difference = configuration − "
            "baseline; negative is better; noise floor "
            f"{fmt(tuning['noise_floor'])}):",
            "",
        ]
        out += md_table(
            ["configuration", "difference", "95% CI", "test", "p (Holm)", "verdict"],
            [
                [
                    c["variant"],
                    f"{c['difference']:+.4f}",
                    "n/a" if c["ci_low"] is None else f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]",
                    c["test"],
                    "n/a" if c["p_holm"] is None else f"{c['p_holm']:.3g}",
                    f"**{c['verdict']}**",
                ]
                for c in comparisons
            ],
        )
    edges = [c for c, row in tuning["configurations"].items() if row.get("at_edge")]
    if edges:
        out += [
            f"A choice at the edge of its grid ({', '.join(edges)}) may be short of that "
            "configuration's best; extend the grid past it before reading its number as tuned.",
            "",
        ]
    return out


def sensitivity_section(analysis: Analysis) -> list[str]:
    """Final loss against the learning rate per configuration, and each one's sensitivity."""
    curves = analysis.sensitivity
    if not curves:
        return []
    out = [
        "## Learning-Rate Sensitivity",
        "",
        f"Final {measure(analysis)} at every learning rate a configuration was trained at "
        "(tuned or swept), mean over seeds. **Sensitivity** is the mean over the grid of "
        "min(L(lr), L0) − min L, L0 the loss at initialization, so a run that diverged counts "
        "as L0 (Wortsman et al. 2023, 'Small-scale proxies for large-scale Transformer "
        "training instabilities'): lower means the configuration is easier to tune; it "
        "depends on the grid, so compare it only between configurations on the same grid.",
        "",
    ]
    rows = []
    for config, curve in curves.items():
        grid = ", ".join(
            f"{setting(p['learning_rate'])}: {p['val_loss']:.3f}"
            + (f" ({p['failed_seeds']} failed)" if p["failed_seeds"] else "")
            for p in curve["points"]
        )
        best = curve["best_learning_rate"]
        lrs = [p["learning_rate"] for p in curve["points"]]
        edge = " (grid edge)" if best in (min(lrs), max(lrs)) else ""
        rows.append([config, grid, f"{setting(best)}{edge}", f"{curve['sensitivity']:.4f}"])
    header = ["configuration", f"learning rate: {measure(analysis, short=True)}", "best"]
    out += md_table([*header, "sensitivity"], rows)
    return [*out, "![Learning-rate sensitivity](lr_sensitivity.png)", ""]
