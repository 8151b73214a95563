"""The plotting primitives every figure of the package shares: paper sizes and the style,
the palette and a marker per configuration, figures with room for a legend below, dots with
the seeds' intervals, bars from zero, and ``finish``, which saves PNG and PDF and records what
each panel plots. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from lmablate.analysis.findings import Analysis

COLUMN, TEXT = 3.3, 6.8  # widths in inches: one column, the text width
PANEL_HEIGHT = 2.3
DPI = 200
STYLE = {
    "font.size": 7,
    "axes.titlesize": 8,
    "axes.labelsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.linewidth": 0.6,
    "pdf.fonttype": 42,  # TrueType: text stays text in the PDF, as publishers ask
    "savefig.dpi": DPI,
}
# Okabe & Ito (2008), "Color Universal Design": black first, for the baseline
PALETTE = ["#000000", "#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
VAL_LOSS = "validation loss (nats/token)"
TRAIN_LOSS = "training loss (nats/token)"
RATE = "loss change (nats/token per M tokens)"
VAL_BPB = "validation bits per byte"
RATE_BPB = "bits per byte change (per M tokens)"


def in_bytes(analysis: Analysis) -> bool:
    """The study's measure is bits per byte (its tokenizers differ); curves plot ``score``."""
    return analysis.findings.get("metric") == "val_bpb"


def value_label(analysis: Analysis) -> str:
    return VAL_BPB if in_bytes(analysis) else VAL_LOSS


def si(value: float, _position: Any = None) -> str:
    """Tick labels in plain text (no superscripts, which would print below 7 pt)."""
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def plain_log(axis) -> None:
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def variant_styles(variants: list[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker and line style per configuration; past eight, the line style changes."""
    return {
        v: {
            "color": PALETTE[i % len(PALETTE)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)],
        }
        for i, v in enumerate(variants)
    }


def legend_columns(width: float) -> int:
    return 4 if width >= TEXT else 2


def figure(width: float, panels: int, legend_entries: int = 0, rows: int = 1):
    """A constrained-layout figure ``width`` inches wide, with room below for a legend of
    ``legend_entries``."""
    legend_rows = -(-legend_entries // legend_columns(width)) if legend_entries else 0
    height = PANEL_HEIGHT * rows + 0.16 * legend_rows + (0.1 if legend_rows else 0)
    fig, axes = plt.subplots(
        rows, panels // rows, figsize=(width, height), layout="constrained", squeeze=False
    )
    return fig, list(axes.flat)


def legend_below(fig, axes: list) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles[label], labels[label] = handle, label
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="outside lower center",
            ncols=legend_columns(fig.get_size_inches()[0]), frameon=False,
        )  # fmt: skip


def dots(
    ax,
    names: list[str],
    values: list[float | None],
    intervals: list[dict[str, Any] | None],
    styles,
    hollow: bool = False,
    offset: float = 0.0,
) -> None:
    """A dot per configuration (no bar: a loss axis need not start at 0), with the seeds' 95%
    interval as an error bar only where there is one."""
    for i, (name, value, interval) in enumerate(zip(names, values, intervals, strict=True)):
        if value is None:
            continue
        style = styles[name]
        spread = interval and interval.get("ci_low") is not None
        ax.errorbar(
            [i + offset],
            [value],
            yerr=[[value - interval["ci_low"]], [interval["ci_high"] - value]] if spread else None,
            color=style["color"],
            marker=style["marker"],
            markersize=4,
            markerfacecolor="white" if hollow else style["color"],
            capsize=2 if spread else 0,
            linestyle="none",
        )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(names) - 0.4)


def bars(
    ax,
    names: list[str],
    values: list[float | None],
    stds: list[float | None],
    styles,
    intervals: list[tuple[float, float] | None] | None = None,
):
    """Bars from 0 for ratio-scale quantities (FLOPs, tokens per second); a missing value is
    drawn as what it is, a hatched outline to the top labelled "not reached", never a 0 bar.
    ``intervals``: (low, high) error bars, where given, instead of ± a standard deviation."""
    intervals = intervals or [None] * len(names)
    shown = [v for v in values if v is not None] + [i[1] for i in intervals if i]
    top = max(shown) * 1.15 if shown else 1.0
    for i, (name, value, std, interval) in enumerate(
        zip(names, values, stds, intervals, strict=True)
    ):
        color = styles[name]["color"]
        if value is None:
            ax.bar(i, top, color="none", edgecolor="0.5", hatch="///", linewidth=0.6)
            ax.text(i, top / 2, "not reached", rotation=90, ha="center", va="center")
            continue
        error = [[value - interval[0]], [interval[1] - value]] if interval else std or None
        ax.bar(i, value, color=color, yerr=error, capsize=2)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, top)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(si))


def panels(fig) -> list[dict[str, Any]]:
    """What each drawn panel plots: its axis labels and the labels of its data series."""
    out = []
    for ax in fig.axes:
        series = [
            artist.get_label()
            for artist in [*ax.lines, *ax.collections, *ax.containers]
            if not str(artist.get_label()).startswith("_")
        ]
        out.append(
            {
                "x": ax.get_xlabel(),
                "y": ax.get_ylabel(),
                "title": ax.get_title(),
                "y_range": [float(v) for v in ax.get_ylim()],
                "series": sorted(set(series)),
            }
        )
    return out


def finish(fig, path: Path, description: str) -> dict[str, dict[str, Any]]:
    """PNG for the report and vector PDF under paper/, both at the figure's own size."""
    width, height = fig.get_size_inches()
    fig.savefig(path)
    (path.parent / "paper").mkdir(exist_ok=True)
    fig.savefig(path.parent / "paper" / path.with_suffix(".pdf").name)
    entry = {
        "description": description,
        "size_in": [round(float(width), 2), round(float(height), 2)],
        "panels": panels(fig),
    }
    plt.close(fig)
    return {path.name: entry}
