"""The tuned comparison's report: each configuration at its best value (chosen on
validation, read on test), its key findings, and the learning-rate sensitivity section.
Formatting only. No torch.
"""

from __future__ import annotations

from lmablate.analysis.findings import Analysis
from lmablate.report.format import (
    ci,
    fmt,
    md_table,
    measure,
    setting,
)
from lmablate.report.references import reference_line


def tuned_findings(analysis: Analysis) -> list[str]:
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
