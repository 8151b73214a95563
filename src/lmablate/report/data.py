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
                    "name": _dataset_name(data),
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
                "model_architecture": _architecture(baseline["model"]),
                "training_setup": {
                    "optimizer": _optimizer(baseline["train"]),
                    "parameter_groups": _parameter_groups(study),
                    "scheduler": _scheduler(baseline["train"]),
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
                    "dataset_size": _documents(data),
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


def _dataset_name(data: dict[str, Any]) -> str:
    """The corpus in words: its one source, or each named source with its weight."""
    sources = data.get("sources") or {}
    if not sources:
        return _source_name(data)
    return "; ".join(
        f"{name}: {_source_name(source)} (weight {source['weight']:g}"
        + ("" if source.get("held_out", True) else ", training only")
        + ")"
        for name, source in sources.items()
    )


def _source_name(source: dict[str, Any]) -> str:
    kind = source.get("source", "hf")
    if kind == "hf":
        name = source["dataset"]
        return f"{name} ({source['subset']})" if source.get("subset") else name
    if kind == "builtin":
        return "builtin: CPython documentation topics (pydoc_data)"
    if kind == "builtin_code":
        return "builtin_code: the Python standard library's own source code"
    return f"local: {source['path']}"


def _documents(data: dict[str, Any]) -> str:
    """How many documents were read: in all, or per source."""
    sources = data.get("sources") or {}
    if not sources:
        return f"{data.get('num_documents') or 'all'} documents"
    return (
        ", ".join(
            f"{name} {source.get('num_documents') or 'all'}" for name, source in sources.items()
        )
        + " documents"
    )


def _optimizer(train: dict[str, Any]) -> str:
    """The baseline's optimizer in words (a config from before ``optimizer`` existed: AdamW)."""
    kind = train.get("optimizer", "adamw")
    adamw = f"AdamW (betas {train['adam_beta1']}, {train['adam_beta2']}; eps {train['adam_eps']})"
    if kind == "muon":
        return (
            f"Muon (momentum {train['muon_momentum']}, "
            f"{'Nesterov, ' if train['muon_nesterov'] else ''}{train['muon_ns_steps']} "
            f"Newton-Schulz steps, learning rate scaled {train['muon_adjust_lr']}) on the hidden "
            f"weight matrices; {adamw} on embeddings, LM head and scalars"
        )
    if kind == "lion":
        return f"Lion (betas {train['lion_beta1']}, {train['lion_beta2']})"
    if kind == "sgd":
        return (
            f"SGD with {'Nesterov ' if train['sgd_nesterov'] else ''}momentum "
            f"{train['sgd_momentum']} (weight decay as L2 on the gradient)"
        )
    return adamw


def _parameter_groups(study: StudyData) -> dict[str, Any]:
    """Per configuration, each parameter group's optimizer, peak learning rate and weight
    decay as its runs recorded them (summary.json)."""
    out = {}
    for variant in study.variants:
        run = next((r for r in study.runs_of(variant) if r.summary), None)
        if run is not None and run.summary.get("parameter_groups"):
            out[variant] = run.summary["parameter_groups"]
    return out


def _scheduler(train: dict[str, Any]) -> str:
    """The baseline's schedule in words (a config from before ``schedule`` existed: cosine)."""
    warmup = f"linear warmup over {train['warmup_steps']} steps, then "
    floor = f"{train['min_lr_ratio']} x the peak"
    schedule = train.get("schedule", "cosine")
    if schedule == "constant":
        return warmup + "the peak learning rate throughout"
    if schedule == "wsd":
        return (
            warmup + f"the peak until the last {train['decay_fraction']:.0%} of the steps, then "
            f"{train['decay_shape']} decay to {floor} (warmup-stable-decay)"
        )
    return warmup + f"{schedule} decay to {floor}"


MLP_NAMES = {
    "swiglu": "SwiGLU (gated SiLU)",
    "geglu": "GeGLU (gated GELU)",
    "silu": "SiLU (Swish)",
    "gelu": "GELU",
    "relu2": "ReLU² (squared ReLU)",
}
NORM_NAMES = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}


def _architecture(model: dict[str, Any]) -> dict[str, Any]:
    """The baseline's architecture in words (a run config from before a field existed has that
    field's default)."""
    kv = model.get("n_kv_heads") or model["n_heads"]
    attention = (
        "Multi-head attention"
        if kv == model["n_heads"]
        else f"Grouped-query attention ({kv} key/value heads)"
    )
    positions = model.get("positions", "rope")
    fraction = model.get("rotary_fraction", 1.0)
    encoding = {
        "rope": f"Rotary Position Embedding (RoPE, theta {model['rope_theta']}"
        + (f", {fraction:.0%} of each head's dimensions)" if fraction != 1.0 else ")"),
        "nope": "None (NoPE: causal masking alone)",
        "learned": f"Learned absolute ({model.get('max_positions')} positions)",
    }.get(positions, f"{positions} (registered)")
    attention += {
        "rope": " with RoPE",
        "nope": " without positional encoding",
        "learned": " (learned absolute positions)",
    }.get(positions, f" ({positions} positions)")
    if model.get("attention", "causal") != "causal":
        attention += f", {model['attention']} attention (registered)"
    if model.get("sliding_window"):
        every = model.get("global_every")
        attention += f", {model['sliding_window']}-token sliding window" + (
            f" (one layer in {every} global)" if every else ""
        )
    if model.get("qk_norm"):
        attention += ", QK-norm"
    placement = model.get("norm_placement", "pre")
    norm = model.get("norm", "rmsnorm")
    llama_like = placement == "pre" and norm == "rmsnorm" and not model.get("parallel_block")
    layout = f"{placement}-norm" + (
        ", parallel attention and MLP" if model.get("parallel_block") else ""
    )
    return {
        "type": f"Autoregressive Transformer (decoder-only, {layout}"
        + (", Llama-style)" if llama_like else ")"),
        "attention_mechanism": attention,
        "activation": MLP_NAMES.get(model["mlp"], f"{model['mlp']} (registered)"),
        "normalization": NORM_NAMES.get(norm, f"{norm} (registered)"),
        "positional_encoding": encoding,
        "tied_embeddings": model["tie_embeddings"],
        "logit_softcap": model.get("logit_softcap"),
        "biases": model.get("bias", False),
        "dropout": {
            "residual": model.get("dropout", 0.0),
            "attention": model.get("attention_dropout", 0.0),
        },
        "initialization": f"{model.get('init', 'normal')} (std {model.get('init_std')})",
    }


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
