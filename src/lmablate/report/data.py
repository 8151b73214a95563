"""research_data.json: every number of the package in one machine-readable file, in the
layout of the reference package (``../shared/reference``) plus what the analysis adds
(statistics, validity checks, per-seed values). No torch.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from lmablate.analysis.findings import FLOPS_CONVENTION, Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.analysis.stats import ALPHA, CONFIDENCE
from lmablate.report.format import by_prompt
from lmablate.report.methods import resolved_settings
from lmablate.report.setup import (
    architecture,
    dataset_name,
    documents_read,
    optimizer_text,
    parameter_groups,
    scheduler_text,
)
from lmablate.version import __version__


def json_safe(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _environment(study: StudyData) -> dict[str, Any]:
    for run in study.runs:
        if run.summary and run.summary.get("environment"):
            return {**run.summary["environment"], "precision": run.summary.get("precision")}
    return {}


def _finished_at(study: StudyData) -> str | None:
    times = [(r.path / "summary.json").stat().st_mtime for r in study.runs if r.summary]
    return dt.datetime.fromtimestamp(max(times)).isoformat(timespec="seconds") if times else None


def _progression(study: StudyData, variant: str, kind: str, key: str) -> dict[str, Any] | None:
    """Mean over complete seeds of one logged series, at the steps every seed logged."""
    runs = study.runs_of(variant, complete_only=True)
    series = [{r["step"]: r[key] for r in run.records if r["kind"] == kind} for run in runs]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    values = [sum(s[step] for s in series) / len(series) for step in steps]
    if not values:
        return None
    return {
        "initial": values[0],
        "final": values[-1],
        "min": min(values),
        "max": max(values),
        "steps": steps,
        "progression": values,
    }


# analyses that apply to some studies only: left out of research_data.json when empty
OPTIONAL = (
    "study_threats",
    "compute_multipliers",
    "tuned_comparison",
    "learning_rate_sensitivity",
    "sweep_edges",
    "downstream_evaluation",
)


def _without_empty(data: dict[str, Any]) -> dict[str, Any]:
    """Drop the optional analyses that did not apply (an empty ``{}`` says nothing)."""
    for section in (data, data["statistical_analysis"]):
        for key in OPTIONAL:
            if key in section and not section[key]:
                del section[key]
    significance = data["statistical_analysis"]["statistical_significance"]
    if not significance.get("document_intervals"):
        significance.pop("document_intervals", None)
        significance.pop("document_interval_definition", None)
    return data


def research_data(study: StudyData, analysis: Analysis, figures: dict[str, dict[str, Any]]) -> dict:
    setup = study.study
    baseline = setup["baseline"]
    env = _environment(study)
    data = setup["data"]
    first = next((r for r in study.runs if r.summary and r.status == "complete"), None)
    table = analysis.per_variant
    configurations = {
        "baseline": {
            "description": baseline.get("description", ""),
            **baseline["model"],
            **baseline["train"],
        }
    }
    configurations.update(setup.get("variants", {}))
    # what "auto" and null became on the machine that trained each configuration
    for variant, resolved in resolved_settings(study).items():
        if variant in configurations:
            configurations[variant] = {
                **(configurations[variant] or {}),
                "resolved": {
                    "device": resolved["device"],
                    "precision": resolved["precision"],
                    "vocab_size": resolved["vocab_size"],
                    "tokens_per_step": resolved["tokens_per_step"],
                    "steps": resolved["steps"],
                },
            }
    package = json_safe(
        {
            "metadata": {
                "collection_date": dt.datetime.now().isoformat(timespec="seconds"),
                "training_finished": _finished_at(study),
                "experiment_type": "Autoregressive Transformer Language Model Ablation Study",
                "study": setup["name"],
                "description": setup.get("description", ""),
                "platform": env.get("platform"),
                "hardware": env.get("device"),
                "framework": f"PyTorch {env.get('torch')}" if env else "PyTorch",
                "software": {
                    k: env.get(k)
                    for k in ("lmablate_version", "git_sha", "python", "torch", "cuda")
                },
                "total_configurations": len(study.variants),
                "seeds": setup["seeds"],
                "runs": {
                    status: sum(r.status == status for r in study.runs)
                    for status in sorted({r.status for r in study.runs})
                },
                "training_duration_estimate": sum(m["wall_time"] or 0 for m in analysis.per_run),
                "training_duration_unit": "seconds of wall-clock time, all runs together",
                "report_generator": f"lmablate {__version__}",
            },
            "experimental_setup": {
                "dataset": {
                    "name": dataset_name(data),
                    "num_documents": data.get("num_documents")
                    if not data.get("sources")
                    else {n: src.get("num_documents") for n, src in data["sources"].items()},
                    "tokenizer": data["tokenizer"]
                    if isinstance(data["tokenizer"], str)
                    else f"byte-level BPE, {data['tokenizer']['train_bpe']['vocab_size']} tokens, "
                    "trained on the training documents",
                    "preprocessing": "documents split into training and validation by document "
                    f"(val_fraction {data['val_fraction']}, seed "
                    f"{data['split_seed']}); each side tokenized with EOS after "
                    "every document; training batches are seeded random windows",
                    "validation_targets": first.summary.get("eval") if first else None,
                },
                "model_architecture": architecture(baseline["model"]),
                "training_setup": {
                    "optimizer": optimizer_text(baseline["train"]),
                    "parameter_groups": parameter_groups(study),
                    "scheduler": scheduler_text(baseline["train"]),
                    "mixed_precision": env.get("precision"),
                    "gradient_clipping": baseline["train"]["grad_clip"],
                    "evaluation_frequency": f"Every {baseline['train']['eval_every']} steps",
                    "training_steps": baseline["train"]["max_steps"],
                },
                "configurations": configurations,
            },
            "results_summary": {
                "experiment_overview": {
                    "total_configurations": len(study.variants),
                    "training_steps_per_config": baseline["train"]["max_steps"],
                    "evaluation_frequency": baseline["train"]["eval_every"],
                    "dataset_size": documents_read(data),
                    "seeds_per_configuration": len(setup["seeds"]),
                },
                "key_findings": analysis.findings,
                "per_domain": analysis.domains or None,
                "scale": analysis.scale or None,
                "performance_metrics": {
                    v: {
                        "final_loss": table[v]["eval_loss"],
                        "final_train_loss": table[v]["train_loss"],
                        "final_accuracy": table[v]["accuracy"],
                        "final_perplexity": table[v]["perplexity"],
                        "final_bpb": table[v]["val_bpb"],
                        "n_complete": table[v]["n_complete"],
                    }
                    for v in study.variants
                },
                "efficiency_metrics": {
                    v: {
                        key: table[v][key]
                        for key in (
                            "flops_to_target",
                            "tokens_to_target",
                            "time_to_target",
                            "total_flops",
                            "tokens_per_s",
                            "mfu",
                            "wall_time",
                            "params",
                            "non_embedding_params",
                        )
                    }
                    for v in study.variants
                },
                "text_generation_quality": {
                    v: _generation_quality(study, v) for v in study.variants
                },
            },
            "detailed_metrics": {v: _detailed(study, analysis, v) for v in study.variants},
            "text_samples": {v: _samples_by_prompt(study, v) for v in study.variants},
            "statistical_analysis": {
                "performance_ranking": {
                    "by_loss": [[v, loss] for v, loss in analysis.ranking],
                    "metric": analysis.findings["ranking_metric"],
                    "best_config": analysis.findings["best_performing_config"],
                    "worst_config": analysis.findings["worst_performing_config"],
                },
                "intervals": analysis.intervals,
                "statistical_significance": {
                    "seeds_per_configuration": len(setup["seeds"]),
                    "alpha": ALPHA,
                    "confidence": CONFIDENCE,
                    "correction": "Holm step-down over the variants compared with the baseline",
                    "comparisons_vs_baseline": [c.as_dict() for c in analysis.comparisons],
                    "noise_floor": analysis.noise_floor,
                    "document_intervals": analysis.document_intervals,
                    "document_interval_definition": "paired percentile bootstrap over "
                    "validation documents of (variant - baseline) nats per target, on the "
                    "seeds both completed (per-document losses averaged over them): the "
                    "evaluation-sample uncertainty, not seed variance",
                    "noise_floor_definition": "t(0.975, n-1) * SD of the baseline's final "
                    "validation loss over seeds * sqrt(2/n): the smallest detectable difference",
                    "note": "one seed per configuration: no difference can be tested against "
                    "seed-to-seed variation (rerun with --seeds 3); document_intervals give "
                    "the evaluation-sample uncertainty"
                    if len(setup["seeds"]) < 2
                    else "paired t-tests over replicates (Welch when seeds differ)",
                },
                "correlation_analysis": analysis.correlations,
                "equal_budget": analysis.equal_budgets,
                "target": {"val_loss": analysis.target_loss, "source": analysis.target_source},
                "overfitting": analysis.overfitting,
                "confounds": analysis.confounds,
                "study_threats": analysis.study_threats,
                "compute_multipliers": analysis.scaling,
                "tuned_comparison": analysis.tuning,
                "learning_rate_sensitivity": analysis.sensitivity,
                "leakage": analysis.leakage,
                "reference_losses": analysis.references,
                "provenance": analysis.provenance,
                "efficiency_analysis": {
                    "ranking": [[v, f] for v, f in analysis.efficiency_ranking],
                    "measure": analysis.findings["efficiency_measure"],
                    "fastest_config": analysis.findings["most_efficient_config"],
                    "fewest_flops_config": analysis.findings["lowest_flops_to_target_config"],
                    "slowest_config": analysis.findings["least_efficient_config"],
                    "not_reaching_target": analysis.findings["not_reaching_target"],
                    "targets": analysis.efficiency,
                    "flops_convention": FLOPS_CONVENTION,
                },
                "sweep_edges": analysis.sweep_edges,
            },
            "downstream_evaluation": {
                f"{r.variant}/seed-{r.seed}": r.downstream for r in study.runs if r.downstream
            },
            "visualizations": figures,
            "runs": analysis.per_run,
        }
    )
    return _without_empty(package)


def _generation_quality(study: StudyData, variant: str) -> dict[str, Any]:
    run = next((r for r in study.runs_of(variant) if r.samples), None)
    if run is None:
        return {"num_samples": 0, "sample_prompts": [], "generation_success": False}
    samples = run.samples["samples"]
    prompts = by_prompt(samples)
    return {
        "num_samples": len(samples),
        "sample_prompts": [f"prompt_{i + 1}" for i in range(len(prompts))],
        "draws_per_prompt": max(map(len, prompts)),
        "generation_success": True,
        **(run.samples.get("quality") or {}),
        "mean_new_tokens": sum(s["new_tokens"] for s in samples) / len(samples),
        "yardstick": run.samples.get("yardstick"),
        "seed": run.seed,
        "settings": run.samples["settings"],
    }


def _samples_by_prompt(study: StudyData, variant: str) -> dict[str, Any]:
    """Per prompt: the first draw's fields, and every draw's continuation under "draws"."""
    run = next((r for r in study.runs_of(variant) if r.samples), None)
    if run is None:
        return {}
    return {
        f"prompt_{i + 1}": {
            k: draws[0][k]
            for k in ("prompt", "generated", "generated_only", "source", "reference")
            if k in draws[0]
        }
        | {"draws": [s["generated_only"] for s in draws]}
        for i, draws in enumerate(by_prompt(run.samples["samples"]))
    }


def _detailed(study: StudyData, analysis: Analysis, variant: str) -> dict[str, Any]:
    row = analysis.per_variant[variant]
    return {
        "training_progression": {
            "train_loss": _progression(study, variant, "train", "loss"),
            "eval_loss": _progression(study, variant, "eval", "val_loss"),
            "eval_bpb": _progression(study, variant, "eval", "val_bpb"),
            "accuracy": _progression(study, variant, "eval", "val_accuracy"),
            "perplexity": _progression(study, variant, "eval", "val_ppl"),
        },
        "final_performance": {
            k: row[v]
            for k, v in (
                ("train_loss", "train_loss"),
                ("eval_loss", "eval_loss"),
                ("accuracy", "accuracy"),
                ("perplexity", "perplexity"),
                ("avg_confidence", "avg_confidence"),
                ("top5_accuracy", "top5_accuracy"),
                ("val_bpb", "val_bpb"),
            )
        },
        "convergence_analysis": {
            "total_improvement": row["convergence_total_improvement"],
            "early_phase_loss": row["convergence_early_phase_loss"],
            "late_phase_loss": row["convergence_late_phase_loss"],
            "converged": row["converged"],
            "convergence": row["convergence"],
            "late_slope": row["late_slope"],
        },
        "efficiency_metrics": {
            "avg_step_time": row["efficiency_avg_step_time"],
            "steps_per_second": row["efficiency_steps_per_second"],
            "step_time_std": row["efficiency_step_time_std"],
            "tokens_per_s": row["tokens_per_s"],
            "flops_to_target": row["flops_to_target"],
        },
        "per_seed": {str(m["seed"]): m for m in analysis.per_run if m["variant"] == variant},
    }
