"""Formatting of numbers and Markdown tables, shared by every section of the report.
A missing or non-finite number is "n/a", never "nan"."""

from __future__ import annotations

import math
import re
from typing import Any


def measure(analysis: Any, short: bool = False) -> str:
    """What the study ranks on, in words: validation loss, or validation bits per byte when its
    tokenizers differ (``findings["metric"]``); ``short`` for a table header."""
    in_bytes = analysis.findings.get("metric") == "val_bpb"
    if short:
        return "val bpb" if in_bytes else "val loss"
    return "validation bits per byte" if in_bytes else "validation loss"


def difference_cell(comparison: dict[str, Any] | None, missing: str = "n/a") -> str:
    """A comparison with the baseline as one table cell: +0.1234 [+0.01, +0.23] verdict."""
    if not comparison:
        return missing
    interval = ""
    if comparison.get("ci_low") is not None:
        interval = f" [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]"
    return f"{comparison['difference']:+.4f}{interval} {comparison['verdict']}"


def fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def without_empty_columns(
    header: list[str], rows: list[list[str]], empty: str = "n/a"
) -> tuple[list[str], list[list[str]]]:
    """Leave out the columns whose every row is ``empty`` (MFU on a device of unknown peak)."""
    keep = [i for i in range(len(header)) if not rows or any(r[i] != empty for r in rows)]
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
        for row in rows
    ]
    return [*lines, ""]


def pm(mean: float | None, std: float | None, spec: str = ".4f") -> str:
    return fmt(mean, spec) + (f" ± {fmt(std, spec)}" if std is not None else "")


def setting(value: Any) -> str:
    """A config value as written in a study: 0.001 not 0.0010000, 3e-05 not 3.0000e-05."""
    return format(value, "g") if isinstance(value, float) else str(value)


def sci(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.3g}"


def plain(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits in positional notation, never scientific (a legend or a
    multiplier reads 1234 or 0.000152, not 1.23e+03); +inf is "unbounded"."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "unbounded" if value > 0 else "-unbounded"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def ci(interval: dict[str, Any] | None, spec: str = ".4f") -> str:
    if not interval:
        return "n/a"
    if interval["ci_low"] is None:
        return f"{fmt(interval['mean'], spec)} (one seed)"
    return (
        f"{fmt(interval['mean'], spec)} [{fmt(interval['ci_low'], spec)}, "
        f"{fmt(interval['ci_high'], spec)}]"
    )


INVALID_BYTES = "<?>"


def code_block(text: str) -> list[str]:
    """Text as a Markdown code block, shown as it is (newlines, quotes and all) except that
    bytes which do not decode as UTF-8 (an undertrained byte-level model emits such runs; the
    decoder made each a U+FFFD) show as ``<?>``; the fence is longer than any run of backticks
    inside it."""
    text = text.replace("\ufffd", INVALID_BYTES)

    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence, ""]


def prompt_blocks(sample: dict, heading: str = "Prompt:") -> list[str]:
    """A sample's prompt, and the document's own continuation when the prompt is a held-out
    document's opening, as plain-text blocks."""
    out = [heading, "", *code_block(sample["prompt"])]
    if sample.get("reference") is not None:
        out += ["The document's own continuation:", "", *code_block(sample["reference"])]
    return out


def by_prompt(samples: list[dict]) -> list[list[dict]]:
    """A run's samples grouped by prompt, in prompt order, each group in draw order (files
    written before draws existed hold one sample per prompt)."""
    groups: dict[int, list[dict]] = {}
    for position, sample in enumerate(samples):
        groups.setdefault(sample.get("prompt_index", position), []).append(sample)
    return [sorted(group, key=lambda s: s.get("draw", 0)) for _, group in sorted(groups.items())]


def seeds_text(settings: dict) -> str:
    """'sampler seed 0' or 'sampler seeds 0-2 (3 draws per prompt)'."""
    seed, draws = settings["seed"], settings.get("draws", 1)
    if draws == 1:
        return f"sampler seed {seed}"
    return f"sampler seeds {seed}-{seed + draws - 1} ({draws} draws per prompt)"


def represented(variant: str, run: str | None) -> str:
    """A configuration's name, and the tuned choice that stands for it where that is another
    run: "muon (learning_rate=0.009)" for the run "muon,learning_rate=0.009"."""
    if not run or run == variant:
        return variant
    return f"{variant} ({run.removeprefix(variant + ',')})"
