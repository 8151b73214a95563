"""Analysis: turns a study's run directories into tables and findings. No torch.

Everything here reads what training left on disk (study.yaml, each run's config.json,
metrics.jsonl, summary.json and samples.json), never live objects, so ``lmablate report``
rebuilds a package from the files alone.

Definitions a reader of the report needs:
- Rankings use the **final validation loss** on held-out documents (the same target tokens
  for every run), averaged over the seeds of a variant; training loss is shown beside it.
- **Efficiency** is the training compute (FLOPs per token as ``FLOPS_CONVENTION`` states) a
  configuration needed to reach the **ranking target**: the highest of a few target losses
  (the common target, which every configuration reaches, and levels below it) that every
  configuration reaching it reaches late in its own run; read off the seed-mean evaluation
  curve, interpolated in log compute, with the seeds' interval, and "most efficient" stated
  only beyond that uncertainty (``efficiency`` states the rule). Loss at equal compute is
  reported beside it (see ``validity.equal_budgets``). Steps per second are reported but never
  used to rank: they ignore how much each step learns.
- **Convergence**: ``total_improvement`` is the relative drop of validation loss from step 0
  to the end; ``early_phase_loss`` / ``late_phase_loss`` are mean logged training losses over
  the first / last 10% of logged steps; the **late slope** is the least-squares slope of the
  logged training loss against tokens over the last fifth of training (loss per million
  tokens, with a 95% interval from the scatter about the line), read as *still falling* (the
  interval lies below zero), *flat within noise* or *rising*. ``converged`` is true only when
  that interval excludes a meaningful decline: its lower end lies above the slope that would
  lower the loss by ``CONVERGED_TOLERANCE`` nats over the window (and the loss is not rising);
  false when still falling or rising, None (*undetermined*) when the interval is too wide to
  tell.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from lmablate.analysis.domains import per_domain, tokenizer_threat
from lmablate.analysis.efficiency import compute_to_reach
from lmablate.analysis.efficiency import efficiency as efficiency_targets
from lmablate.analysis.metrics import (
    AGGREGATED,
    converged,
    convergence,
    finite,
    mean_curve,
    mean_of,
    mean_train_curve,
    run_metrics,
)
from lmablate.analysis.references import study_references
from lmablate.analysis.rundata import StudyData, eval_curve
from lmablate.analysis.scale import scale_analysis
from lmablate.analysis.scaling import compute_multipliers
from lmablate.analysis.stats import (
    Comparison,
    compare,
    document_bootstrap,
    late_slope,
    noise_floor,
    summarize,
    with_verdicts,
)
from lmablate.analysis.tuning import lr_sensitivity, sweep_edges, tuned_comparison
from lmablate.analysis.validity import (
    confounds,
    correlations,
    equal_budgets,
    leakage,
    overfitting,
    provenance,
    study_threats,
)

INTERVAL_METRICS = ("eval_loss", "val_bpb", "accuracy")
FLOPS_CONVENTION = (
    "training FLOPs per token = 6N + 12·d·L·T (Chowdhery et al. 2022, appendix B): N is "
    "the non-embedding weights (norm gains included) plus the output head's vocabulary × d "
    "(counted also when tied to the embedding; vocabulary padded to a multiple of 64), with "
    "the embedding lookups free; 6N is forward plus backward; 12·d·T is each of the L layers' "
    "attention scores and weighted values over the full T×T square of the context length T "
    "(causal masking not discounted); a sliding window is applied as a mask over that square, "
    "so a windowed layer is counted as the full layer it computes; evaluation and sampling are "
    "not counted"
)


@dataclass
class Analysis:
    per_run: list[dict[str, Any]]
    per_variant: dict[str, dict[str, Any]]  # means over complete seeds, plus n and stds
    target_loss: float | None
    target_source: str
    ranking: list[tuple[str, float]]  # (variant, mean final val loss), best first
    efficiency_ranking: list[tuple[str, float | None]]  # (variant, FLOPs to target), best first
    findings: dict[str, Any]
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> metric -> CI
    comparisons: list[Comparison] = field(default_factory=list)  # each variant vs the baseline
    noise_floor: float | None = None
    equal_budgets: dict[str, Any] = field(default_factory=dict)
    overfitting: dict[str, Any] = field(default_factory=dict)
    confounds: dict[str, Any] = field(default_factory=dict)
    study_threats: list[str] = field(default_factory=list)  # about the study as a whole
    budget: dict[str, Any] = field(default_factory=dict)  # study.yaml's budget: matched or not
    scaling: dict[str, Any] = field(default_factory=dict)  # budget ladder fit, multipliers
    tuning: dict[str, Any] = field(default_factory=dict)  # each configuration at its best value
    sensitivity: dict[str, Any] = field(default_factory=dict)  # loss against learning rate
    sweep_edges: list[dict[str, Any]] = field(default_factory=list)  # best value at an edge
    # variant -> its difference from the baseline with a bootstrap interval over documents
    document_intervals: dict[str, dict[str, Any]] = field(default_factory=dict)
    leakage: dict[str, Any] = field(default_factory=dict)
    references: dict[str, Any] = field(default_factory=dict)  # count models on the same targets
    efficiency: dict[str, Any] = field(default_factory=dict)  # target levels, intervals, margin
    correlations: dict[str, Any] = field(default_factory=dict)  # over configurations, with n
    provenance: list[dict[str, Any]] = field(default_factory=list)
    domains: dict[str, Any] = field(default_factory=dict)  # per evaluation set, in bpb
    scale: dict[str, Any] = field(default_factory=dict)  # every configuration at every size


def _usable(record: dict[str, Any] | None) -> bool:
    """An eval_documents.json record of the expected shape: [[targets, nats], ...]."""
    documents = (record or {}).get("documents")
    return isinstance(documents, list) and all(
        isinstance(d, list)
        and len(d) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in d)
        for d in documents
    )


def _mean_nats(records: list[dict[str, Any]]) -> list[float]:
    """Per document, the summed nats averaged over the runs' eval_documents.json records."""
    columns = zip(*([d[1] for d in r["documents"]] for r in records), strict=True)
    return [sum(column) / len(records) for column in columns]


def document_intervals(study: StudyData) -> dict[str, dict[str, Any]]:
    """Each compared configuration's difference from the baseline with its paired bootstrap
    interval over validation documents, on the seeds both completed (their per-document losses
    averaged); a note instead where the runs did not score the same targets."""
    base = {r.seed: r.documents for r in study.runs_of("baseline", True) if _usable(r.documents)}
    out: dict[str, dict[str, Any]] = {}
    for variant in study.compared:
        mine = {r.seed: r.documents for r in study.runs_of(variant, True) if _usable(r.documents)}
        shared = sorted(set(base) & set(mine))
        if variant == "baseline" or not shared:
            continue
        records = [mine[s] for s in shared] + [base[s] for s in shared]
        layouts = {(r.get("targets_digest"), tuple(d[0] for d in r["documents"])) for r in records}
        if len(layouts) > 1:
            out[variant] = {"note": "its runs and the baseline's scored different targets"}
            continue
        interval = document_bootstrap(
            _mean_nats([mine[s] for s in shared]),
            _mean_nats([base[s] for s in shared]),
            [d[0] for d in records[0]["documents"]],
            seeds=len(shared),
        )
        if interval is not None:
            out[variant] = interval.as_dict()
    return out


def _all_complete(entry: dict[str, Any]) -> bool:
    return bool(entry["n_complete"]) and entry["n_complete"] == entry["n_seeds"]


def analyze(study: StudyData) -> Analysis:
    curves = {
        v: mean_curve([eval_curve(r) for r in study.runs_of(v, complete_only=True)])
        for v in study.variants
    }
    seeds = {v: (len(study.runs_of(v, True)), len(study.runs_of(v))) for v in study.variants}
    # the budget ladder's rungs measure the baseline at other budgets, not a change: no target.
    # Runs with different tokenizers score different targets: nats per token do not compare,
    # so everything is read in bits per byte of the same bytes (each curve's "score")
    by_bytes = study.in_bytes
    metric = "val_bpb" if by_bytes else "eval_loss"
    efficient = efficiency_targets(
        study,
        {v: curves[v] for v in study.compared if seeds[v][0] and seeds[v][0] == seeds[v][1]},
    )
    target = efficient.get("target")
    source = efficient["rule"] if target is not None else "no complete run"
    per_run = [run_metrics(run, target) for run in study.runs]
    per_variant: dict[str, dict[str, Any]] = {}
    for variant in study.variants:
        rows = [m for m in per_run if m["variant"] == variant and m["status"] == "complete"]
        statuses = [m["status"] for m in per_run if m["variant"] == variant]
        entry: dict[str, Any] = {
            "variant": variant,
            "n_complete": len(rows),
            "n_seeds": len(statuses),
            "statuses": statuses,
        }
        for key in AGGREGATED:
            values = [m[key] for m in rows if finite(m[key])]
            entry[key] = mean_of(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        # budgets to the target are read off the variant's seed-mean curve, as the target is
        curve = curves[variant]
        for budget in ("flops", "tokens", "time_s"):
            key = f"{'time' if budget == 'time_s' else budget}_to_target"
            entry[key] = compute_to_reach(curve, target, budget) if target and curve else None
        slope = late_slope(mean_train_curve(study.runs_of(variant, complete_only=True)))
        entry["late_slope"] = slope.as_dict() if slope else None
        entry["converged"] = converged(slope)
        entry["convergence"] = convergence(slope)
        per_variant[variant] = entry

    # rank only variants whose every seed completed: survivors of a diverging recipe would
    # otherwise flatter it (the incomplete ones are listed under findings["incomplete"])
    complete = {
        v: e
        for v, e in per_variant.items()
        if v in study.compared  # the budget ladder's rungs measure the baseline, not a change
        and _all_complete(e)
        and e[metric]
    }
    ranking = sorted(((v, e[metric]) for v, e in complete.items()), key=lambda x: x[1])
    # a configuration whose lowest loss stays above the ranking target (or whose seeds share
    # no evaluation curve) is listed, never ranked by a tie-break
    at_start = set(efficient.get("at_start", []))  # at the target before training: not placed
    reached = sorted(
        (v for v in complete if complete[v]["flops_to_target"] is not None and v not in at_start),
        key=lambda v: complete[v]["flops_to_target"],
    )
    missed = [v for v in complete if complete[v]["flops_to_target"] is None]
    efficiency = [(v, complete[v]["flops_to_target"]) for v in reached]

    final = {v: {r.seed: r.final_score for r in study.runs_of(v, True)} for v in study.variants}

    def interval(variant: str, key: str) -> dict[str, Any] | None:
        values = [
            m[key]
            for m in per_run
            if m["variant"] == variant and m["status"] == "complete" and finite(m[key])
        ]
        summary = summarize(values)
        return summary.as_dict() if summary else None

    intervals = {v: {key: interval(v, key) for key in INTERVAL_METRICS} for v in study.variants}
    floor = noise_floor(list(final["baseline"].values()))
    comparisons = with_verdicts(
        [
            compare(v, final[v], final["baseline"])
            for v in study.compared
            if v != "baseline" and final[v] and final["baseline"]
        ],
        floor,
    )
    budgets = equal_budgets(study)
    # "best": the lowest mean loss, unless others sit within the noise floor of it (a tie)
    tied = [v for v, loss in ranking if floor is not None and loss - ranking[0][1] <= floor]
    best = (f"tied: {', '.join(tied)}" if len(tied) > 1 else ranking[0][0]) if ranking else None
    equal_compute = budgets.get("flops", {}).get("ranking") or []
    findings: dict[str, Any] = {
        "best_performing_config": best,
        "lowest_mean_val_loss_config": ranking[0][0] if ranking else None,
        "worst_performing_config": ranking[-1][0] if ranking else None,
        "performance_gap": ranking[-1][1] - ranking[0][1] if ranking else None,
        "runner_up_gap": ranking[1][1] - ranking[0][1] if len(ranking) > 1 else None,
        "noise_floor": floor,
        "seeds_per_configuration": max((e["n_complete"] for e in per_variant.values()), default=0),
        # a finding only beyond the seeds' uncertainty, at a target every placed run reaches late
        "most_efficient_config": efficiency[0][0] if efficiency and efficient["finding"] else None,
        "lowest_flops_to_target_config": efficiency[0][0] if efficiency else None,
        "least_efficient_config": efficiency[-1][0] if efficiency else None,
        "efficiency_margin": efficient.get("margin"),
        "best_at_equal_compute": equal_compute[0] if equal_compute else None,
        "ranking_metric": (
            "final validation bits per byte on held-out documents (the same bytes for every "
            "run; the configurations' tokenizers differ), mean over seeds"
            if by_bytes
            else "final validation loss on held-out documents (nats per token), mean over seeds"
        ),
        "metric": metric,
        "unit": "bits per byte" if by_bytes else "nats per token",
        "efficiency_measure": "training FLOPs to reach the target validation "
        f"{'bits per byte' if by_bytes else 'loss'} ({source})",
        "target_val_loss": target,
        "not_reaching_target": missed,
        "verdicts": {c.variant: c.verdict for c in comparisons},
        "incomplete": [v for v, e in per_variant.items() if e["n_complete"] < e["n_seeds"]],
    }
    tuning = tuned_comparison(study)
    choices = {c: row["chosen"] for c, row in tuning.get("configurations", {}).items()}
    return Analysis(
        per_run,
        per_variant,
        target,
        source,
        ranking,
        efficiency,
        findings,
        intervals=intervals,
        comparisons=comparisons,
        noise_floor=floor,
        equal_budgets=budgets,
        overfitting=overfitting(study),
        confounds=confounds(study, per_variant),
        study_threats=[*study_threats(study), *filter(None, [tokenizer_threat(study)])],
        budget=study.study.get("budget") or {},
        scaling=compute_multipliers(
            study, per_run, {c: run for c, run in choices.items() if run is not None}
        ),
        tuning=tuning,
        sensitivity=lr_sensitivity(study),
        sweep_edges=sweep_edges(study, per_variant, floor),
        document_intervals=document_intervals(study),
        leakage=leakage(study),
        references=study_references(study, per_variant, by_bytes),
        efficiency=efficient,
        correlations=correlations(study, per_variant, [v for v, _ in ranking]),
        provenance=provenance(study),
        domains=per_domain(study),
        scale=scale_analysis(study),
    )
