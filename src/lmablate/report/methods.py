"""What a paper's methods section needs, from the resolved study: a paragraph ready to paste
and a table of the per-configuration settings that differ. Formatting only. No torch.

Every value is read from what the runs recorded (each configuration's first complete run's
config.json and summary.json), so ``auto`` settings appear as what they resolved to.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import FLOPS_CONVENTION, Analysis
from lmablate.analysis.rundata import RunData, StudyData
from lmablate.analysis.validity import NOT_FACTORS
from lmablate.report.format import md_table, setting

# fields that never describe a configuration: bookkeeping, and the per-replicate seeds
NOT_SETTINGS = {*NOT_FACTORS, "data_seed", "seed", "cache_dir"}


def _count(value: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def representative_run(study: StudyData, variant: str) -> RunData | None:
    """The configuration's first complete run: what its settings resolved to. A failed run's
    summary holds no numbers, so it never stands in."""
    runs = study.runs_of(variant, complete_only=True)
    return next((r for r in runs if r.config and r.summary), None)


def resolved_settings(study: StudyData) -> dict[str, dict[str, Any]]:
    """Per compared configuration, what its runs trained with: budget numbers from
    summary.json, every model and train field from config.json."""
    out = {}
    for variant in study.compared:
        run = representative_run(study, variant)
        if run is None:
            continue
        summary, config = run.summary or {}, run.config or {}
        steps = summary.get("step") or 0
        tokens = summary.get("tokens_seen")
        out[variant] = {
            "params": (summary.get("params") or {}).get("total"),
            "tokens_per_step": tokens / steps if tokens and steps else None,
            "steps": steps,
            "tokens": tokens,
            "flops_per_token": summary.get("flops_per_token"),
            "total_flops": summary.get("total_flops"),
            "precision": summary.get("precision"),
            "device": (summary.get("environment") or {}).get("device"),
            "vocab_size": summary.get("vocab_size"),
            "fields": {
                k: v
                for section in ("model", "train")
                for k, v in (config.get(section) or {}).items()
                if k not in NOT_SETTINGS
            },
        }
    return out


def settings_table(study: StudyData) -> list[str]:
    """Tokens per step, learning rate, steps, parameters, FLOPs per token and total FLOPs of
    every configuration, and every other resolved field in which configurations differ."""
    settings = resolved_settings(study)
    if not settings:
        return []
    fields = sorted({k for s in settings.values() for k in s["fields"]})
    differing = [
        f
        for f in fields
        if f != "learning_rate" and len({repr(s["fields"].get(f)) for s in settings.values()}) > 1
    ]
    headers = [
        "configuration",
        "params",
        "tokens/step",
        "steps",
        "learning rate",
        "FLOPs/token",
        "total FLOPs",
        *differing,
    ]
    rows = []
    for variant, s in settings.items():
        rows.append(
            [
                variant,
                _count(s["params"]) if s["params"] else "n/a",
                f"{s['tokens_per_step']:,.0f}" if s["tokens_per_step"] else "n/a",
                f"{s['steps']:,}",
                f"{s['fields'].get('learning_rate', 'n/a'):g}"
                if isinstance(s["fields"].get("learning_rate"), float | int)
                else "n/a",
                _count(s["flops_per_token"]) if s["flops_per_token"] else "n/a",
                f"{s['total_flops']:.3g}" if s["total_flops"] else "n/a",
                *[str(s["fields"].get(f, "—")) for f in differing],
            ]
        )
    return [
        "### Per-configuration settings",
        "",
        "As resolved by the runs (each configuration's first complete run); beyond the budget "
        "columns, only the fields in which configurations differ.",
        "",
        *md_table(headers, rows),
    ]


def _architecture(fields: dict[str, Any]) -> str:
    norm = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}.get(
        str(fields.get("norm")), str(fields.get("norm"))
    )
    positions = {"rope": "rotary position embeddings", "learned": "learned positions"}.get(
        str(fields.get("positions")), f"{fields.get('positions')} positions"
    )
    return (
        f"{fields.get('n_layers')} layers, width {fields.get('d_model')}, "
        f"{fields.get('n_heads')} attention heads, MLP width {fields.get('d_ff')} "
        f"({fields.get('mlp')}), {norm} ({fields.get('norm_placement', 'pre')}-norm), "
        f"{positions}, {'tied' if fields.get('tie_embeddings') else 'untied'} embeddings"
    )


OPTIMIZERS = {  # what each optimizer's sentence names: its label, then (field, wording)
    "adamw": ("AdamW", (("adam_beta1", "β1 {}"), ("adam_beta2", "β2 {}"), ("adam_eps", "ε {}"))),
    "muon": (
        "Muon on the hidden weight matrices (AdamW on embeddings, head, norms and biases)",
        (
            ("muon_momentum", "momentum {}"),
            ("muon_nesterov", "Nesterov {}"),
            ("muon_ns_steps", "{} Newton-Schulz steps"),
            ("muon_adjust_lr", "per-matrix learning-rate scale {}"),
        ),
    ),
    "lion": ("Lion", (("lion_beta1", "β1 {}"), ("lion_beta2", "β2 {}"))),
    "sgd": ("SGD", (("sgd_momentum", "momentum {}"), ("sgd_nesterov", "Nesterov {}"))),
}
MUON_SCALES = {
    "match_rms_adamw": "0.2·sqrt(max(rows, cols)), matching AdamW's update RMS",
    "original": "sqrt(max(1, rows/cols))",
}


def _optimizer_settings(settings: dict[str, dict[str, Any]]) -> str:
    """One clause per optimizer the configurations use: its settings and who uses it."""
    users: dict[str, list[str]] = {}
    for variant, entry in settings.items():
        users.setdefault(entry["fields"].get("optimizer", "adamw"), []).append(variant)
    baseline = settings["baseline"]["fields"].get("optimizer", "adamw")
    if set(users) == {baseline}:
        return ""  # the training sentence names the baseline's optimizer and its settings
    clauses = []
    for name, variants in users.items():
        label, wording = OPTIMIZERS.get(name, (name, ()))
        fields = settings[variants[0]]["fields"]
        values = []
        for key, text in wording:
            if key not in fields:
                continue
            value = fields[key]
            if key == "muon_adjust_lr":
                value = f"{value} ({MUON_SCALES.get(value, value)})"
            values.append(text.format(value))
        if name == "muon":  # its AdamW groups
            values += [f"AdamW β1 {fields.get('adam_beta1')}, β2 {fields.get('adam_beta2')}"]
        differ = any(
            settings[v]["fields"].get(k) != fields.get(k) for v in variants for k, _ in wording
        )
        clauses.append(
            f"{label} ({', '.join(values)}{'; as in the table where they differ' if differ else ''}"
            f"; {', '.join(variants)})"
        )
    return "Optimizers: " + "; ".join(clauses) + "."


def _split_sentences(meta_data: dict[str, Any], analysis: Analysis) -> list[str]:
    """The overlap check and the reference losses: what a held-out score is compared with."""
    out = []
    overlap = (meta_data.get("leakage") or {}).get("overlap")
    if overlap:
        moved = sum((overlap.get("moved_to_training") or {}).values())
        dropped = sum((overlap.get("dropped") or {}).values())
        action = f"{moved} moved to training" if moved or not dropped else ""
        if dropped:
            action = ", ".join(filter(None, [action, f"{dropped} dropped"]))
        out.append(
            f"Before the split is used, {overlap['near_duplicates_removed']} near-duplicate "
            f"documents are removed and every held-out document sharing at least "
            f"{overlap['max_overlap']:.0%} of its distinct {overlap['ngram']}-word n-grams with "
            f"training is taken out of the held-out set ({action})."
        )
    refs = (analysis.references or {}).get("val")
    if refs:
        out.append(
            "As references, count models of the training split score the same validation "
            f"targets: uniform {refs['uniform']['loss']:.3f}, unigram "
            f"{refs['unigram']['loss']:.3f} and bigram {refs['bigram']['loss']:.3f} nats per "
            f"token (the bigram {refs['bigram']['smoothing']})."
        )
    return out


def _design_sentences(study: StudyData, analysis: Analysis, docs: dict[str, Any]) -> list[str]:
    """The tuning grid and test-only reporting, and the budget ladder with its fit."""
    out = []
    tuning = analysis.tuning
    if tuning:
        grid = "; ".join(
            f"{field} ∈ {{{', '.join(map(setting, values))}}}"
            for field, values in tuning["fields"].items()
        )
        out.append(
            f"Every configuration is trained at each value of {grid} and represented by the "
            "value with the lowest mean validation loss; its loss, and its difference to the "
            f"baseline's choice, are reported on the {docs.get('test', 0):,} test documents, "
            "which neither training nor that choice saw."
        )
    scaling = analysis.scaling or {}
    fit = scaling.get("fit")
    if fit:
        rungs = ", ".join(f"{s['relative_compute']:g}" for s in scaling["ladder"])
        verdict = (
            "gives each configuration's compute multiplier: the baseline compute the fit needs "
            "to reach its loss over the compute it spent"
            if fit["usable"]
            else "does not describe the ladder ("
            + "; ".join(fit["problems"])
            + "), so no multiplier is stated and the ladder is interpolated between rungs"
        )
        out.append(
            f"The baseline is also trained at {rungs} times its compute C0 (a budget ladder); "
            f"a power law L(C) = E + A·(C/C0)^(-α) fitted to its {fit['points']} runs {verdict}."
        )
    return out


def methods_paragraph(study: StudyData, analysis: Analysis, data: dict[str, Any]) -> str:
    """The study's methods in prose, from research_data.json and the resolved runs."""
    settings = resolved_settings(study)
    base = settings.get("baseline")
    run = representative_run(study, "baseline")
    if base is None or run is None:
        return "No baseline run completed, so the methods cannot be stated from the runs."
    summary = run.summary or {}
    setup, meta = data["experimental_setup"], data["metadata"]
    fields = base["fields"]
    meta_data = summary.get("data") or {}
    docs, tokens = meta_data.get("documents") or {}, meta_data.get("tokens") or {}
    split = (
        f"{docs.get('train', 0):,} training documents ({tokens.get('train', 0):,} tokens) and "
        f"{docs.get('val', 0):,} validation documents ({tokens.get('val', 0):,} tokens)"
    )
    if docs.get("test"):
        split += f" and {docs['test']:,} test documents ({tokens.get('test', 0):,} tokens)"
    targets = setup["dataset"].get("validation_targets") or {}
    seeds = study.study["seeds"]
    env = (summary.get("environment") or {}) | {"precision": summary.get("precision")}
    memory = env.get("device_memory_bytes")
    hardware = env.get("device") or "an unrecorded device"
    if memory:
        hardware += f" ({memory / 2**30:.0f} GiB memory)"
    if env.get("cpu") and env.get("cpu") not in hardware:
        hardware += f", host CPU {env['cpu']}"
    others = [v for v in settings if v != "baseline"]
    budget = (study.study.get("budget") or {}).get("match")
    sentences = [
        f"We train decoder-only Transformer language models on {setup['dataset']['name']}, "
        f"split by document with a fixed seed into {split}, tokenized with "
        f"{setup['dataset']['tokenizer']} (an embedding of {base['vocab_size']:,} rows).",
        f"The baseline has {_count(base['params'])} parameters ({_architecture(fields)}).",
        f"It trains for {base['steps']:,} steps of {base['tokens_per_step']:,.0f} tokens "
        f"({fields.get('batch_size')} sequences of {fields.get('seq_len')} tokens; "
        f"{base['tokens']:,} tokens, {base['total_flops']:.3g} training FLOPs) with "
        f"{setup['training_setup']['optimizer']}, weight decay {fields.get('weight_decay')}, "
        f"peak learning rate {fields.get('learning_rate'):g} with "
        f"{setup['training_setup']['scheduler']}, gradient clipping at global norm "
        f"{fields.get('grad_clip')}, in {base['precision']} precision.",
    ]
    if others:
        sentences.append(
            f"{len(others)} configuration{'s' if len(others) > 1 else ''} "
            f"({', '.join(others)}) change{'s' if len(others) == 1 else ''} the baseline as "
            "listed in the per-configuration table"
            + (
                f"; every schedule ends at the baseline's {budget} budget"
                if budget
                else "; each keeps its own steps, so budgets differ where tokens per step do"
            )
            + "."
        )
    sentences += filter(None, [_optimizer_settings(settings)])
    sentences += _split_sentences(meta_data, analysis)
    sentences += _design_sentences(study, analysis, docs)
    n_complete = analysis.findings["seeds_per_configuration"]
    sentences += [
        f"Each configuration is trained with {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
        f"({', '.join(map(str, seeds))}); replicate k of every configuration shares its "
        "initialization seed and batch order.",
        "Validation loss is the mean next-token cross-entropy in nats on the same "
        f"{targets.get('targets', 0):,} target tokens ({targets.get('bytes', 0):,} bytes) of "
        "held-out documents for every run, whatever its context length; bits per byte divide "
        "the summed loss by the bytes of that text.",
        f"We count {FLOPS_CONVENTION}.",
        f"Experiments ran on {hardware} with lmablate {meta['software'].get('lmablate_version')}"
        f", Python {env.get('python')} and PyTorch {env.get('torch')}"
        + (f" (CUDA {env['cuda']})" if env.get("cuda") else "")
        + f"; {n_complete} complete seed{'s' if n_complete != 1 else ''} per configuration "
        f"{'enter' if n_complete != 1 else 'enters'} the statistics.",
    ]
    return " ".join(sentences)
