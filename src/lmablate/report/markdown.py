"""research_report.md: the report a researcher cites, written from research_data.json's numbers.

It covers every section of the reference report (overview, setup, key findings,
configuration details, results, visualizations, data files, usage for a paper, citation) and
adds what a reviewer asks for: how results were measured, efficiency at equal compute,
convergence, runs that did not finish, and text samples side by side.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import FLOPS_CONVENTION, Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.report.domains import domain_section
from lmablate.report.generations import downstream_section, text_generation_section
from lmablate.report.methods import methods_paragraph, settings_table
from lmablate.report.multipliers import scaling_section
from lmablate.report.results import key_findings, results_tables
from lmablate.report.scale import scale_section
from lmablate.report.sections import equal_budget_section, statistics_section, validity_section
from lmablate.report.tuning import sensitivity_section, tuning_section

SMOLLM_CITATION = """\
@misc{benallal2024smollmcorpus,
  title  = {SmolLM-Corpus},
  author = {Ben Allal, Loubna and Lozhkov, Anton and Penedo, Guilherme and Wolf, Thomas
            and von Werra, Leandro},
  year   = {2024},
  url    = {https://huggingface.co/datasets/HuggingFaceTB/smollm-corpus}
}"""


def markdown_report(study: StudyData, analysis: Analysis, data: dict[str, Any]) -> str:
    """The whole report, section by section in the reference report's order."""
    n_seeds = len(study.study["seeds"])
    out = _overview_and_setup(study, data)
    out += ["## Key Findings", "", *key_findings(analysis, n_seeds), ""]
    out += [
        "## Methods",
        "",
        "Ready to paste (also in `paper/methods.tex`); every value is what the runs recorded.",
        "",
        methods_paragraph(study, analysis, data),
        "",
    ]
    out += _configuration_details(data["experimental_setup"])
    out += settings_table(study)
    out += tuning_section(analysis)
    out += sensitivity_section(analysis)
    out += results_tables(analysis)
    out += domain_section(analysis)
    out += statistics_section(analysis, n_seeds)
    out += equal_budget_section(analysis)
    out += scaling_section(analysis)
    out += scale_section(analysis)
    out += validity_section(analysis)
    out += downstream_section(data.get("downstream_evaluation") or {})
    out += text_generation_section(study, analysis, data)
    out += _package_and_citation(data)
    return "\n".join(out)


def _overview_and_setup(study: StudyData, data: dict[str, Any]) -> list[str]:
    meta, setup = data["metadata"], data["experimental_setup"]
    seeds = study.study["seeds"]
    env = meta["software"]
    dataset, training = setup["dataset"], setup["training_setup"]
    counts = dataset["num_documents"]
    size = (
        ", ".join(f"{name} {n or 'all'}" for name, n in counts.items())
        if isinstance(counts, dict)
        else counts or "all"
    )
    out = [
        "# Autoregressive Transformer Language Model Ablation Study",
        "",
        f"*Study `{meta['study']}`*: {meta['description']}",
        "",
        "## Experiment Overview",
        "",
        f"**Date:** {meta['training_finished'] or meta['collection_date']} (training finished); "
        f"report built {meta['collection_date']}  ",
        f"**Platform:** {meta['platform'] or 'n/a (no run completed)'}  ",
        f"**Hardware:** {meta['hardware'] or 'n/a (no run completed)'}  ",
        f"**Software:** lmablate {env.get('lmablate_version', 'n/a')} "
        f"(git {env.get('git_sha') or 'n/a'}),"
        f" Python {env.get('python', 'n/a')}, PyTorch {env.get('torch', 'n/a')}"
        f"{', CUDA ' + env['cuda'] if env.get('cuda') else ''}  ",
        f"**Total Configurations:** {meta['total_configurations']} × {len(seeds)} seed(s) "
        f"({', '.join(f'{n} {s}' for s, n in meta['runs'].items())})  ",
        f"**Total training time:** {meta['training_duration_estimate']:,.0f} s of wall-clock time",
        "",
        "## Experimental Setup",
        "",
        "### Dataset",
        f"- **Source:** {dataset['name']}",
        f"- **Size:** {size} documents",
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
    ]
    out += _parameter_groups(training.get("parameter_groups") or {})
    return out


def _parameter_groups(groups: dict[str, dict[str, Any]]) -> list[str]:
    """Each group's optimizer, peak learning rate and weight decay: the baseline's, and those
    of every configuration whose groups differ from it."""
    if not groups:
        return []

    def settings(variant: str) -> dict[str, tuple]:
        return {
            g: (row["optimizer"], row["peak_lr"], row["weight_decay"])
            for g, row in groups[variant].items()
        }

    base = next(iter(groups))
    shown = [base] + [v for v in groups if v != base and settings(v) != settings(base)]
    out = [
        "### Parameter Groups",
        "",
        "Embeddings (token and learned positions; the LM head too when tied), an untied LM "
        "head, the hidden weight matrices (attention, MLP) and scalars (norm gains, biases); "
        "peak learning rate = the schedule's peak x the group's multiplier.",
        "",
        "| configuration | group | optimizer | peak LR | weight decay | tensors | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in shown:
        for group, row in groups[variant].items():
            out.append(
                f"| {variant} | {group} | {row['optimizer']} | {row['peak_lr']:.3g} | "
                f"{row['weight_decay']:g} | {row['tensors']} | {row['parameters']:,} |"
            )
    same = [v for v in groups if v not in shown]
    if same:
        out += ["", f"Same groups as {base}: {', '.join(same)}."]
    return [*out, ""]


def _configuration_details(setup: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out += ["", "## Configuration Details", ""]
    for variant, details in setup["configurations"].items():
        out += [
            f"### {variant.replace('_', ' ').title().replace(' ', '_')}",
            f"**Description:** {details.get('description') or '—'}",
            "",
        ]
        shown = {k: v for k, v in details.items() if k not in ("description", "resolved")}
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

    return out


def _paper_line(paper: dict[str, Any]) -> str:
    files = ", ".join(f"`{name}`" for name in paper.get("files", []))
    line = f"- **paper/** - {files}, every figure as vector PDF"
    if paper.get("pdf"):
        return f"{line}, and `paper.pdf` (built with {paper['engine']})"
    return f"{line}; no `paper.pdf`: {paper.get('error') or 'not built'}"


def _package_and_citation(data: dict[str, Any]) -> list[str]:
    """Figures, data files, how the numbers were measured, use in a paper, citation."""
    dataset = data["experimental_setup"]["dataset"]
    out: list[str] = []
    out += [
        "## Visualizations",
        "",
        "The following visualizations are included in this research package:",
        "",
    ]
    for i, (name, figure) in enumerate(data["visualizations"].items(), 1):
        description = figure["description"]
        width, height = figure["size_in"]
        out += [
            f"{i}. **{name}** - {description} ({width:g} × {height:g} in; vector PDF in `paper/`)",
            "",
            f"![{description}]({name})",
            "",
        ]
    out += [
        "## Data Files",
        "",
        "- **research_data.json** - Complete experimental data in JSON format",
        "- **performance_metrics.csv** - Performance metrics in CSV format, one row per "
        "configuration (seed means, the reference columns first)",
        "- **run_metrics.csv** - The same measures per run, with a numeric seed column",
        _paper_line(data.get("paper") or {}),
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
        f"- FLOPs: {FLOPS_CONVENTION}.",
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
    return out
