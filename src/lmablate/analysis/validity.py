"""Threats to validity: equal-budget views, overfitting, confounds, leakage, provenance. No torch.

An ablation compares a variant with the baseline, but a variant that also trains on more tokens,
spends more compute or changes two things at once can win for the wrong reason. This module
reads the run directories and states each such threat with its numbers:

- **Equal budgets.** Every variant's validation loss at the largest budget that every variant
  reached (tokens seen, training FLOPs, training seconds), interpolated on its eval curve. The
  budget a study matched (``budget: {match: ...}``) is read at the end of every schedule; any
  other is read mid-schedule for the longer runs and labelled *indicative*.
- **Overfitting.** Epochs over the training data and the generalization gap (final validation
  loss minus final training loss), flagged above ``OVERFIT_GAP`` nats per token whether or not
  validation still falls; and a flag when validation loss rose between two evaluations while
  training loss fell.
- **Correlations.** Spearman's rank correlation of final loss with tokens, FLOPs and
  parameters over configurations (seed means; ladder rungs and tuning candidates left out),
  never over runs: seeds and rungs of one configuration are not independent observations.
- **Confounds.** The factors a variant changes (fields grouped: model size, batch size,
  learning-rate schedule, context length, ...), flagged when more than one changes, and the
  ratio of its tokens and FLOPs to the baseline's, flagged beyond 5%.
- **Leakage.** Validation documents found in training by SHA-256 of their text (must be 0).
- **Provenance.** Per run: config hash, data cache key, seeds, tokens, FLOPs, device, versions.
"""

from __future__ import annotations

import itertools
from typing import Any

from scipy.stats import spearmanr

from lmablate.analysis.rundata import StudyData, eval_curve, loss_at

BUDGETS = {
    "tokens": "tokens seen",
    "flops": "training FLOPs",
    "time_s": "training seconds (evaluation excluded)",
}
FACTORS = {
    "model size": ("d_model", "n_heads", "n_kv_heads", "n_layers", "d_ff", "vocab_size"),
    # one group per component family: a variant that changes two of them changes two factors
    "normalization": ("norm", "norm_placement", "qk_norm", "norm_eps"),
    "MLP": ("mlp",),
    "positions": ("positions", "rotary_fraction", "rope_theta", "max_positions"),
    "attention": ("attention", "sliding_window", "global_every"),
    "output": ("logit_softcap", "tie_embeddings"),
    "biases": ("bias",),
    "block layout": ("parallel_block",),
    "dropout": ("dropout", "attention_dropout"),
    "initialization": ("init", "init_std"),
    # μP: init, per-group learning rates and output scale move together with the base shape
    "parametrization": ("parametrization", "mup_base_width", "mup_base_head_dim"),
    "batch size": ("batch_size", "grad_accum_steps"),
    "learning rate": ("learning_rate",),
    "learning-rate schedule": (
        "min_lr_ratio",
        "warmup_steps",
        "warmup_fraction",
        "schedule",
        "decay_fraction",
        "decay_shape",
    ),
    "training length": ("max_steps",),
    "context length": ("seq_len",),
    "optimizer": ("optimizer",),
    "optimizer hyper-parameters": (
        "adam_beta1",
        "adam_beta2",
        "adam_eps",
        "muon_momentum",
        "muon_nesterov",
        "muon_ns_steps",
        "muon_adjust_lr",
        "lion_beta1",
        "lion_beta2",
        "sgd_momentum",
        "sgd_nesterov",
        "grad_clip",
    ),
    "parameter groups": (
        "weight_decay",
        "embedding_lr_mult",
        "head_lr_mult",
        "matrix_lr_mult",
        "scalar_lr_mult",
        "embedding_weight_decay",
        "head_weight_decay",
        "matrix_weight_decay",
        "scalar_weight_decay",
    ),
    "loss": ("z_loss",),
    "numerics": ("precision", "compile", "device"),
    # the data families a variant may change (its training side; config/data.py)
    "data mixture": ("sources",),
    "data filters": ("filters",),
    "tokenizer": ("tokenizer",),
    "unique data": ("max_train_tokens",),
}
BUDGET_TOLERANCE = 0.05  # tokens or FLOPs beyond ±5% of the baseline's are flagged
# nats per token: final validation minus final training loss above this is flagged (runs on
# held-out documents of the same corpus show a gap near 0 until they start to memorize)
OVERFIT_GAP = 0.1
END_OF_SCHEDULE = "end of schedule (matched budgets)"
INDICATIVE = "indicative"


def budget_reading(budget: str, matched: str | None, finals: list[float]) -> str:
    """How a reading at the budget every run reached is taken: at the end of every schedule
    when the study matched budgets on that quantity, or when every run ended at the same count
    of it (tokens and FLOPs are exact counts: runs of one model and token budget end at the same
    FLOPs whatever was matched); mid-schedule (indicative) otherwise. Training seconds never
    come out equal, so a reading at equal time is always indicative."""
    if matched is not None and budget == matched:
        return END_OF_SCHEDULE
    if budget != "time_s" and max(finals) <= min(finals) * (1 + 1e-9):
        return END_OF_SCHEDULE
    return INDICATIVE


def _complete(study: StudyData, variant: str):
    return study.runs_of(variant, complete_only=True)


def equal_budgets(study: StudyData) -> dict[str, Any]:
    """Per budget: the matched value and each variant's mean validation loss there."""
    out: dict[str, Any] = {}
    variants = [v for v in study.compared if _complete(study, v)]
    for budget, label in BUDGETS.items():
        curves = {v: [eval_curve(r) for r in _complete(study, v)] for v in variants}
        finals = [
            c[-1][budget] for cs in curves.values() for c in cs if c and c[-1][budget] is not None
        ]
        if not finals or len(finals) < sum(len(cs) for cs in curves.values()):
            continue
        matched = min(finals)
        losses = {}
        for variant, variant_curves in curves.items():
            values = [loss_at(c, budget, matched) for c in variant_curves]
            values = [v for v in values if v is not None]
            losses[variant] = sum(values) / len(values) if values else None
        ranking = sorted((v for v in losses if losses[v] is not None), key=lambda v: losses[v])
        out[budget] = {
            "label": label,
            "reading": budget_reading(
                budget, (study.study.get("budget") or {}).get("match"), finals
            ),
            "matched_budget": matched,
            "val_loss": losses,
            "ranking": ranking,
        }
    return out


def overfitting(study: StudyData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in study.variants:
        runs = _complete(study, variant)
        if not runs:
            continue
        flags, gaps, epochs = [], [], []
        for run in runs:
            summary = run.summary
            epochs.append(summary["epochs"])
            if summary.get("final_train_loss") is not None:
                gap = summary["final_val_loss"] - summary["final_train_loss"]
                gaps.append(gap)
                if gap > OVERFIT_GAP:
                    flags.append(
                        f"seed {run.seed}: generalization gap {gap:.4f} nats (final validation "
                        f"{summary['final_val_loss']:.4f} − final training "
                        f"{summary['final_train_loss']:.4f}) exceeds {OVERFIT_GAP}"
                    )
            train_at = {r["step"]: r["loss"] for r in run.train_records}
            evals = [r for r in run.eval_records if r["step"] in train_at]
            for before, after in itertools.pairwise(evals):
                if (
                    after["val_loss"] > before["val_loss"]
                    and train_at[after["step"]] < train_at[before["step"]]
                ):
                    flags.append(
                        f"seed {run.seed}: validation loss rose from {before['val_loss']:.4f} "
                        f"(step {before['step']}) to {after['val_loss']:.4f} (step "
                        f"{after['step']}) while training loss fell"
                    )
        out[variant] = {
            "epochs": sum(epochs) / len(epochs),
            "val_minus_train_loss": sum(gaps) / len(gaps) if gaps else None,
            "gap_threshold": OVERFIT_GAP,
            "flags": flags,
        }
    return out


def correlations(
    study: StudyData, per_variant: dict[str, dict[str, Any]], configurations: list[str]
) -> dict[str, Any]:
    """Spearman rank correlation of final validation loss with tokens, FLOPs and parameters
    over ``configurations`` (the ranked ones: compared, every seed complete), each one point at
    its seed means: a strong one says the ranking may be mostly a ranking of how much each
    configuration trained."""
    rows = [per_variant[v] for v in configurations if v in study.compared]
    out: dict[str, Any] = {
        "method": "Spearman rank correlation over configurations (seed means; budget-ladder "
        "rungs and tuning candidates left out)",
        "n_configurations": len(rows),
        "n_runs": sum(r["n_complete"] for r in rows),
    }
    if len(rows) < 3:
        return {**out, "note": "fewer than three configurations"}
    losses = [r["score"] for r in rows]
    for key in ("tokens_seen", "total_flops", "params"):
        values = [r[key] for r in rows]
        if None in values or len(set(values)) < 2:
            out[f"val_loss_vs_{key}"] = None
            continue
        result = spearmanr(values, losses)
        out[f"val_loss_vs_{key}"] = {
            "rho": float(result.statistic),
            "p_value": float(result.pvalue),
            "n": len(rows),
        }
    return out


# what and when a run logs, evaluates and saves: no effect on the weights it trains
NOT_FACTORS = (
    "description",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "logger",
    "wandb_project",
)


def derived_fields(study: StudyData) -> tuple[str, ...]:
    """Fields a variant's changes may hold that follow from the design rather than change a
    factor: with matched budgets, its steps (and a warmup that scales with them) follow from
    its batch shape and model."""
    return ("max_steps", "warmup_steps") if (study.study.get("budget") or {}).get("match") else ()


def factors_changed(changes: dict[str, Any]) -> list[str]:
    fields = [k for k in changes if k not in NOT_FACTORS]
    named = [name for name, group in FACTORS.items() if any(f in group for f in fields)]
    grouped = {f for group in FACTORS.values() for f in group}
    return named + [f for f in fields if f not in grouped]


def confounds(study: StudyData, per_variant: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What each variant changes, and how its budget differs from the baseline's."""
    base = per_variant.get("baseline", {})
    derived = derived_fields(study)
    out: dict[str, Any] = {}
    for variant, changes in (study.study.get("variants") or {}).items():
        if variant not in study.compared:
            continue  # a ladder rung or a tuning candidate: part of the design, not a change
        factors = factors_changed({k: v for k, v in (changes or {}).items() if k not in derived})
        row = per_variant.get(variant, {})
        warnings = []
        if len(factors) > 1:
            remedy = "; split it into one variant per factor"
            if "learning rate" in factors:  # a learning rate that follows the other change
                remedy += (
                    ", or drop its learning rate and tune every configuration's "
                    "(tune: {learning_rate: [...]} with a data.test_fraction)"
                )
            warnings.append(
                f"changes {len(factors)} factors at once ({', '.join(factors)}): a difference "
                f"from the baseline cannot be attributed to any one of them{remedy}"
            )
        ratios = {}
        for key in ("tokens_seen", "total_flops"):
            if row.get(key) and base.get(key):
                ratios[key] = row[key] / base[key]
        tokens, flops = ratios.get("tokens_seen"), ratios.get("total_flops")
        if tokens is not None and abs(tokens - 1) > BUDGET_TOLERANCE:
            direction = "more" if tokens > 1 else "fewer"
            warnings.append(
                f"trains on {tokens:.2f}x the baseline's tokens: its final loss reflects "
                f"{direction} data as well as its own change, which biases the ranking "
                f"{'in its favour' if tokens > 1 else 'against it'}; compare at equal tokens, "
                "or give the study budget: {match: tokens} to end its schedule at the "
                "baseline's token budget"
            )
        if flops is not None and abs(flops - 1) > BUDGET_TOLERANCE:
            warnings.append(
                f"spends {flops:.2f}x the baseline's training FLOPs; compare at equal compute, "
                "or give the study budget: {match: flops}"
                + (
                    " (a budget ladder turns the difference into a compute multiplier)"
                    if not study.ladder
                    else ""
                )
            )
        epochs, base_epochs = row.get("epochs"), base.get("epochs")
        if epochs and base_epochs and epochs / base_epochs > 1 + BUDGET_TOLERANCE:
            warnings.append(
                f"repeats its training data {epochs:.2f} times (the baseline {base_epochs:.2f}): "
                "it sees less distinct data for the same tokens, so its difference mixes its "
                "own change with the cost of repetition (Muennighoff et al. 2023)"
            )
        out[variant] = {
            "changes": {k: v for k, v in (changes or {}).items() if k != "description"},
            "factors": factors,
            "multi_factor": len(factors) > 1,
            "tokens_ratio": tokens,
            "flops_ratio": flops,
            "warnings": warnings,
        }
    return out


def study_threats(study: StudyData) -> list[str]:
    """Threats that concern the study as a whole rather than one variant."""
    out = []
    base_optimizer = (study.study["baseline"].get("train") or {}).get("optimizer", "adamw")
    optimizers = {"baseline": base_optimizer}
    for variant, changes in (study.study.get("variants") or {}).items():
        optimizers[variant] = (changes or {}).get("optimizer", base_optimizer)
    tuned = "learning_rate" in ((study.study.get("tuning") or {}).get("fields") or {})
    if len(set(optimizers.values())) > 1 and not tuned:
        kinds = sorted(set(optimizers.values()))
        out.append(
            f"The configurations train with different optimizers ({', '.join(kinds)}) at "
            "learning rates that were not tuned separately for each: the learning rate that "
            "suits one optimizer does not suit another, so a difference between them may be "
            "the learning rate's rather than the optimizer's. Compare each optimizer at its "
            "own best learning rate before claiming one is better (tune: {learning_rate: "
            "[...]} does so)."
        )
    return out


def leakage(study: StudyData) -> dict[str, Any]:
    """The data's leakage check, as recorded by every run (they share one data cache)."""
    records = [
        r.summary["data"]["leakage"]
        for r in study.runs
        if r.summary and (r.summary.get("data") or {}).get("leakage")
    ]
    if not records:
        return {"checked": False}
    return {
        "checked": True,
        "method": records[0]["method"],
        "val_documents_in_training": max(r["val_documents_in_training"] for r in records),
        "test_documents_in_training_or_validation": max(
            (
                r["test_documents_in_training_or_validation"]
                for r in records
                if "test_documents_in_training_or_validation" in r
            ),
            default=None,
        ),
        "duplicates_removed": records[0]["duplicates_removed"],
        "overlap": records[0].get("overlap"),  # the n-gram check; absent in older runs
        "documents": next(
            r.summary["data"]["documents"]
            for r in study.runs
            if r.summary and r.summary.get("data")
        ),
        "by_configuration": _leakage_by_configuration(study),
    }


def _leakage_by_configuration(study: StudyData) -> dict[str, dict[str, Any]]:
    """Per configuration whose training data is its own (mixture, filters, training-only
    sources): its check against every evaluation set, as its first complete run recorded it."""
    out: dict[str, dict[str, Any]] = {}
    for variant in study.compared:
        for run in study.runs_of(variant, complete_only=True):
            data = (run.summary or {}).get("data") or {}
            record = data.get("leakage") or {}
            if not data.get("sources") and "filtered" not in record:
                continue
            out[variant] = {
                "train_documents": (data.get("documents") or {}).get("train"),
                "val_documents_in_training": record.get("val_documents_in_training"),
                "test_documents_in_training_or_validation": record.get(
                    "test_documents_in_training_or_validation"
                ),
                "training_removed_for_overlap": record.get("training_removed_for_overlap"),
                "filtered": (record.get("filtered") or {}).get("dropped"),
            }
            break
    return out


def provenance(study: StudyData) -> list[dict[str, Any]]:
    rows = []
    for run in study.runs:
        summary = run.summary or {}
        env = summary.get("environment") or {}
        train = (run.config or {}).get("train", {})
        rows.append(
            {
                "variant": run.variant,
                "seed": run.seed,
                "data_seed": train.get("data_seed"),
                "status": run.status,
                "config_hash": summary.get("config_hash"),
                "data_cache_key": summary.get("data_cache_key"),
                "tokens": summary.get("tokens_seen"),
                "flops": summary.get("total_flops"),
                "device": env.get("device"),
                "precision": summary.get("precision"),
                "torch": env.get("torch"),
                "lmablate": env.get("lmablate_version"),
                "git_sha": env.get("git_sha"),
            }
        )
    return rows
