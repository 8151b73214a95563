"""The report's sections on what the models generate: the text samples side by side with
their quality measures, and downstream evaluations (lm-evaluation-harness). Formatting only.
No torch.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.report.format import (
    code_block,
    fmt,
    md_table,
    prompt_blocks,
    seeds_text,
)


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
