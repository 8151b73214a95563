"""The experimental setup in words, for research_data.json and the report: the corpus and its
sources, the optimizer and its parameter groups, the schedule and the architecture. No torch.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.rundata import StudyData


def dataset_name(data: dict[str, Any]) -> str:
    """The corpus in words: its one source, or each named source with its weight."""
    sources = data.get("sources") or {}
    if not sources:
        return source_name(data)
    return "; ".join(
        f"{name}: {source_name(source)} (weight {source['weight']:g}"
        + ("" if source.get("held_out", True) else ", training only")
        + ")"
        for name, source in sources.items()
    )


def source_name(source: dict[str, Any]) -> str:
    kind = source.get("source", "hf")
    if kind == "hf":
        name = source["dataset"]
        return f"{name} ({source['subset']})" if source.get("subset") else name
    if kind == "builtin":
        return "builtin: CPython documentation topics (pydoc_data)"
    if kind == "builtin_code":
        return "builtin_code: the Python standard library's own source code"
    return f"local: {source['path']}"


def documents_read(data: dict[str, Any]) -> str:
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


def optimizer_text(train: dict[str, Any]) -> str:
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


def parameter_groups(study: StudyData) -> dict[str, Any]:
    """Per configuration, each parameter group's optimizer, peak learning rate and weight
    decay as its runs recorded them (summary.json)."""
    out = {}
    for variant in study.variants:
        run = next((r for r in study.runs_of(variant) if r.summary), None)
        if run is not None and run.summary.get("parameter_groups"):
            out[variant] = run.summary["parameter_groups"]
    return out


def scheduler_text(train: dict[str, Any]) -> str:
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


def architecture(model: dict[str, Any]) -> dict[str, Any]:
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
