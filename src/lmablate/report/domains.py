"""The per-domain section: every configuration on every evaluation set, in bits per byte
(``analysis/domains.py`` computes it), as a Markdown table, a LaTeX table, a CSV and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmablate.analysis.domains import MACRO
from lmablate.analysis.findings import Analysis
from lmablate.report.format import ci, difference_cell, fmt, md_table
from lmablate.report.tex import delta, header, interval, label, table, tex

DOMAINS_CSV = "per_domain_metrics.csv"
DOMAIN_COLUMNS = [
    "configuration",
    "evaluation_set",
    "split",
    "n",
    "bpb",
    "bpb_ci_low",
    "bpb_ci_high",
    "diff_vs_baseline",
    "diff_ci_low",
    "diff_ci_high",
    "p_holm",
    "verdict",
    "tokens_per_byte",
]


def _difference(row: dict[str, Any]) -> str:
    return difference_cell(row.get("vs_baseline"), missing="—")


def domain_section(analysis: Analysis) -> list[str]:
    domains = analysis.domains
    if not domains:
        return []
    sets = [*domains["sets"], MACRO]
    out = [
        "## Per-Domain Results",
        "",
        f"Every run is scored on every evaluation set ({', '.join(domains['sets'])}): the "
        "held-out documents of each source, the same bytes for every configuration. Values are "
        "bits per byte (bpb), which do not depend on the tokenizer; the macro-average is the "
        "unweighted mean of the sets' bpb. Differences are to the baseline on the same set, "
        "paired by seed with a 95% t-interval; verdicts are Holm-adjusted over the "
        "configurations within each set, with the baseline's seed spread on that set as its "
        "noise floor.",
        "",
    ]
    out += _bpb_table(domains["table"], sets)
    out += ["Difference from the baseline (bpb), per set:", ""]
    rows = []
    for variant in domains["table"][sets[0]]["configurations"]:
        if variant == "baseline":
            continue
        rows.append(
            [variant] + [_difference(domains["table"][n]["configurations"][variant]) for n in sets]
        )
    out += md_table(["configuration", *sets], rows)
    floors = ", ".join(f"{name} {fmt(domains['table'][name]['noise_floor'])}" for name in sets)
    out += [f"Noise floors (bpb): {floors}.", ""]
    per_byte = domains.get("tokens_per_byte") or {}
    if per_byte:
        out += ["Tokens per byte of each configuration's tokenizer on each set:", ""]
        out += md_table(
            ["configuration", *domains["sets"]],
            [
                [variant, *(fmt(values.get(name), ".3f") for name in domains["sets"])]
                for variant, values in per_byte.items()
            ],
        )
    if domains.get("test"):
        out += [
            "On the **test** documents of each set (held out like the validation documents, "
            "and scored once, at the end), bpb [95% CI]:",
            "",
            *_bpb_table(domains["test"], sets),
            "Difference from the baseline on test (bpb), per set:",
            "",
            *md_table(
                ["configuration", *sets],
                [
                    [v, *(_difference(domains["test"][n]["configurations"][v]) for n in sets)]
                    for v in domains["test"][sets[0]]["configurations"]
                    if v != "baseline"
                ],
            ),
        ]
    return out


def _bpb_table(split: dict[str, Any], sets: list[str]) -> list[str]:
    """bpb [95% CI] per configuration (rows) and set (columns)."""
    rows = []
    for variant in split[sets[0]]["configurations"]:
        cells = [variant]
        for name in sets:
            bpb = split[name]["configurations"][variant]["bpb"] or {}
            cells.append(ci(bpb) if bpb else "n/a")
        rows.append(cells)
    return md_table(["configuration", *(f"{name} bpb" for name in sets)], rows)


def domain_table(analysis: Analysis, study_name: str) -> str | None:
    """The per-domain results as a LaTeX table: bpb [95% CI] per configuration and set, and
    each difference from the baseline with its interval and verdict; None with one set."""
    domains = analysis.domains
    if not domains:
        return None
    sets = [*domains["sets"], MACRO]
    rows = []
    for variant in domains["table"][sets[0]]["configurations"]:
        cells = [tex(variant)]
        for name in sets:
            row = domains["table"][name]["configurations"][variant]
            versus = row.get("vs_baseline")
            cell = interval(row["bpb"])
            if versus:
                cell += f" ({delta(versus['difference'], versus['ci_low'], versus['ci_high'])}"
                cell += f", {versus['verdict']})"
            cells.append(cell)
        rows.append(cells)
    return header(study_name, "Per-domain results") + table(
        "Bits per byte on each evaluation set's held-out documents (the same bytes for every "
        "configuration) and their unweighted mean: mean [95\\% CI] over seeds; in brackets the "
        "difference to the baseline on that set with its paired 95\\% CI and the verdict, "
        "Holm-adjusted over the configurations within the set.",
        label(study_name, "domains"),
        ["Configuration", *(tex(name) for name in sets)],
        rows,
    )


def domain_rows(analysis: Analysis) -> list[dict[str, Any]]:
    domains = analysis.domains or {}
    rows = []
    splits = [("validation", domains.get("table") or {}), ("test", domains.get("test") or {})]
    for split, sets in splits:
        rows += _split_rows(domains, split, sets)
    return rows


def _split_rows(domains: dict[str, Any], split: str, sets: dict[str, Any]) -> list[dict]:
    rows = []
    for name, entry in sets.items():
        for variant, row in entry["configurations"].items():
            bpb = row["bpb"] or {}
            versus = row.get("vs_baseline") or {}
            rows.append(
                {
                    "configuration": variant,
                    "evaluation_set": name,
                    "split": split,
                    "n": row["n"],
                    "bpb": bpb.get("mean"),
                    "bpb_ci_low": bpb.get("ci_low"),
                    "bpb_ci_high": bpb.get("ci_high"),
                    "diff_vs_baseline": versus.get("difference"),
                    "diff_ci_low": versus.get("ci_low"),
                    "diff_ci_high": versus.get("ci_high"),
                    "p_holm": versus.get("p_holm"),
                    "verdict": versus.get("verdict"),
                    "tokens_per_byte": (domains.get("tokens_per_byte") or {})
                    .get(variant, {})
                    .get(name),
                }
            )
    return rows


def write_domains_csv(out: Path, analysis: Analysis, write_rows) -> None:
    if analysis.domains:
        write_rows(out / DOMAINS_CSV, DOMAIN_COLUMNS, domain_rows(analysis))


DOMAINS_FIGURE = "per_domain_performance.png"


def draw_domains(analysis: Analysis, out: Path) -> dict[str, dict[str, Any]]:
    """One panel per evaluation set and one for the macro-average: each configuration's bpb
    with its seeds' 95% interval."""
    domains = analysis.domains
    if not domains:
        return {}
    import matplotlib.pyplot as plt

    from lmablate.report import plotting

    sets = [*domains["sets"], MACRO]
    variants = list(domains["table"][sets[0]]["configurations"])
    styles = plotting.variant_styles(variants)
    with plt.rc_context(plotting.STYLE):
        fig, axes = plotting.figure(plotting.TEXT, len(sets))
        for ax, name in zip(axes, sets, strict=True):
            rows = domains["table"][name]["configurations"]
            plotting.dots(
                ax,
                variants,
                [(rows[v]["bpb"] or {}).get("mean") for v in variants],
                [rows[v]["bpb"] for v in variants],
                styles,
            )
            ax.set_title(name)
            ax.set_ylabel("bits per byte" if name == sets[0] else "")
        description = (
            f"Bits per byte of each configuration on each evaluation set "
            f"({', '.join(domains['sets'])}) and their unweighted mean, final evaluation, mean "
            "over seeds with the seeds' 95% interval; the same bytes for every configuration."
        )
        return plotting.finish(fig, out / DOMAINS_FIGURE, description)
