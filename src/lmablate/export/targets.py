"""The Hugging Face architectures a model exports to, and how: which fields each one computes
(``TARGETS``, first match), its config fields, its weight names (one explicit table each;
``{i}`` stands for the block index) and the state-dict conversion, with a mup model's
multipliers folded into its weights. No files are written here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lmablate.config.components import REGISTRIES
from lmablate.config.run import ModelConfig
from lmablate.errors import ConfigError

HF_NAMES: dict[str, str] = {  # LlamaForCausalLM; biases (model.bias) follow their weights
    "embed.weight": "model.embed_tokens.weight",
    "blocks.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attn.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attn.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attn.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.gate_proj.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.up_proj.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.down_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
QWEN3_NAMES: dict[str, str] = {
    **HF_NAMES,
    "blocks.{i}.attn.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blocks.{i}.attn.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}
NEOX_NAMES: dict[str, str] = {  # q, k and v go into query_key_value (_neox_qkv)
    "embed.weight": "gpt_neox.embed_in.weight",
    "blocks.{i}.attn_norm.weight": "gpt_neox.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.o_proj.weight": "gpt_neox.layers.{i}.attention.dense.weight",
    "blocks.{i}.mlp_norm.weight": "gpt_neox.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.up_proj.weight": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight",
    "blocks.{i}.mlp.down_proj.weight": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight",
    "norm.weight": "gpt_neox.final_layer_norm.weight",
    "lm_head.weight": "lm_head.weight",
}
GEMMA2_NAMES: dict[str, str] = {  # sandwich norms: a gain g exports as g - 1 (to_hf_state_dict)
    **{ours: theirs for ours, theirs in HF_NAMES.items() if "mlp_norm" not in ours},
    "blocks.{i}.attn_out_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "blocks.{i}.mlp_out_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
}
# GPT-NeoX layers that always carry a bias (a model without biases exports zeros there)
NEOX_ALWAYS_BIASED = ("layernorm", "final_layer_norm", "dense_h_to_4h", "dense_4h_to_h")
GATED_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu"}
PLAIN_ACTIVATIONS = {"gelu": "gelu", "relu2": "relu2", "silu": "silu"}


def _common_problems(cfg: ModelConfig) -> list[str]:
    """What no target computes."""
    problems = []
    if cfg.norm_placement == "post":
        problems.append("norm_placement 'post' (every target normalizes before each branch)")
    if cfg.positions != "rope":
        problems.append(f"positions {cfg.positions!r} (every target uses rope)")
    registered = [
        f"{family} {getattr(cfg, family)!r}"
        for family, registry in REGISTRIES.items()
        if not registry.entries[getattr(cfg, family)].builtin
    ]
    if registered:
        problems.append(f"a registered (custom) component: {', '.join(registered)}")
    return problems


def _pre_norm(cfg: ModelConfig) -> list[str]:
    return (
        [f"norm_placement {cfg.norm_placement!r} (needs pre)"]
        if cfg.norm_placement != "pre"
        else []
    )


def _no_softcap(cfg: ModelConfig) -> list[str]:
    return ["logit_softcap (its logits are not capped)"] if cfg.logit_softcap is not None else []


def _no_window(cfg: ModelConfig) -> list[str]:
    return ["sliding_window (it has no sliding window)"] if cfg.sliding_window is not None else []


def _gated_rms(cfg: ModelConfig) -> list[str]:
    """What Llama's family of blocks needs: RMSNorm, a gated MLP, full rotary, sequential."""
    problems = []
    if cfg.norm != "rmsnorm":
        problems.append(f"norm {cfg.norm!r} (needs rmsnorm)")
    if cfg.mlp not in GATED_ACTIVATIONS:
        problems.append(f"mlp {cfg.mlp!r} (needs a gated MLP: swiglu or geglu)")
    if cfg.rotary_fraction != 1.0:
        problems.append(f"rotary_fraction {cfg.rotary_fraction} (needs 1.0)")
    if cfg.parallel_block:
        problems.append("parallel_block (needs sequential blocks)")
    return problems


def _llama_problems(cfg: ModelConfig) -> list[str]:
    return _pre_norm(cfg) + _gated_rms(cfg) + _no_window(cfg) + _no_softcap(cfg)


def _ministral_problems(cfg: ModelConfig) -> list[str]:
    """Llama with a sliding window on every layer or some (``layer_types``), no biases."""
    problems = _pre_norm(cfg) + _gated_rms(cfg) + _no_softcap(cfg)
    if cfg.sliding_window is None:
        problems.append("sliding_window (needs one; without it the model is Llama)")
    return problems + (["bias (Ministral has none)"] if cfg.bias else [])


def _gemma2_problems(cfg: ModelConfig) -> list[str]:
    """Sandwich norms, soft-capped logits and sliding windows allowed; no biases."""
    problems = _gated_rms(cfg)
    if cfg.norm_placement != "sandwich":
        problems.append(f"norm_placement {cfg.norm_placement!r} (needs sandwich)")
    return problems + (["bias (Gemma 2's MLP has none)"] if cfg.bias else [])


def _qwen3_problems(cfg: ModelConfig) -> list[str]:
    """Llama with QK-norm; a sliding window on any layers (``layer_types``); no biases."""
    problems = _pre_norm(cfg) + _gated_rms(cfg) + _no_softcap(cfg)
    return problems + (["bias (Qwen3's MLP has none)"] if cfg.bias else [])


def _neox_problems(cfg: ModelConfig) -> list[str]:
    problems = _pre_norm(cfg) + _no_window(cfg) + _no_softcap(cfg)
    if cfg.norm != "layernorm":
        problems.append(f"norm {cfg.norm!r} (needs layernorm)")
    if cfg.mlp not in PLAIN_ACTIVATIONS:
        problems.append(f"mlp {cfg.mlp!r} (needs a plain MLP: gelu, relu2 or silu)")
    if cfg.qk_norm:
        problems.append("qk_norm (GPT-NeoX has none)")
    if cfg.kv_heads != cfg.n_heads:
        problems.append(f"n_kv_heads {cfg.kv_heads} (GPT-NeoX has one key/value head per head)")
    return problems


def llama_config(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> dict[str, Any]:
    """The LlamaConfig fields that make ``LlamaForCausalLM`` compute exactly this model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": GATED_ACTIVATIONS.get(cfg.mlp, "silu"),
        "max_position_embeddings": context,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "initializer_range": cfg.init_std,
    }


def layer_types(cfg: ModelConfig) -> list[str]:
    """Each block's attention, in the names of transformers' ``layer_types``."""
    return [
        "full_attention" if cfg.window_of(i) is None else "sliding_attention"
        for i in range(cfg.n_layers)
    ]


def _windows(cfg: ModelConfig) -> dict[str, Any]:
    """The sliding-window fields: the same band as ours (a query sees itself and the W - 1
    positions before it), on the layers ``window_of`` slides."""
    return {"sliding_window": cfg.sliding_window, "layer_types": layer_types(cfg)}


def _ministral_config(
    cfg: ModelConfig, vocab_size: int, context: int, eos_id: int
) -> dict[str, Any]:
    fields = llama_config(cfg, vocab_size, context, eos_id)
    for name in ("attention_bias", "mlp_bias"):
        del fields[name]
    return {
        **fields,
        "architectures": ["MinistralForCausalLM"],
        "model_type": "ministral",
        **_windows(cfg),
    }


def _qwen3_config(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> dict[str, Any]:
    fields = llama_config(cfg, vocab_size, context, eos_id)
    del fields["mlp_bias"]
    windowed = cfg.sliding_window is not None
    return {
        **fields,
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "use_sliding_window": windowed,
        **(_windows(cfg) if windowed else {}),
    }


def _gemma2_config(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> dict[str, Any]:
    """Gemma 2 scales its embedding by sqrt(d_model) (undone in the exported table, so the
    head is stored on its own) and its attention by query_pre_attn_scalar^-1/2 (set to
    head_dim, the standard scale); its attention logits are not capped here, as ours are not."""
    fields = llama_config(cfg, vocab_size, context, eos_id)
    for name in ("attention_bias", "mlp_bias", "hidden_act"):
        del fields[name]
    windowed = cfg.sliding_window is not None
    return {
        **fields,
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "hidden_activation": GATED_ACTIVATIONS[cfg.mlp],
        "query_pre_attn_scalar": cfg.head_dim,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": cfg.logit_softcap,
        "tie_word_embeddings": False,
        "pad_token_id": eos_id,
        # without a window every layer is full_attention; the field must still be set
        "sliding_window": cfg.sliding_window if windowed else context,
        "layer_types": layer_types(cfg),
    }


def _neox_config(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> dict[str, Any]:
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "hidden_act": PLAIN_ACTIVATIONS.get(cfg.mlp, "gelu"),
        "rotary_pct": cfg.rotary_fraction,
        "rotary_emb_base": cfg.rope_theta,
        "max_position_embeddings": context,
        "layer_norm_eps": cfg.norm_eps,
        "use_parallel_residual": cfg.parallel_block,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.bias,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "initializer_range": cfg.init_std,
    }


@dataclass(frozen=True)
class Target:
    architecture: str
    names: dict[str, str]
    problems: Callable[[ModelConfig], list[str]]
    config: Callable[[ModelConfig, int, int, int], dict[str, Any]]


TARGETS = (  # the first whose problems are none is the one exported
    Target("LlamaForCausalLM", HF_NAMES, _llama_problems, llama_config),
    Target("MinistralForCausalLM", HF_NAMES, _ministral_problems, _ministral_config),
    Target("Qwen3ForCausalLM", QWEN3_NAMES, _qwen3_problems, _qwen3_config),
    Target("GPTNeoXForCausalLM", NEOX_NAMES, _neox_problems, _neox_config),
    Target("Gemma2ForCausalLM", GEMMA2_NAMES, _gemma2_problems, _gemma2_config),
)


def export_target(cfg: ModelConfig) -> Target:
    """The Hugging Face architecture that computes this model, or a ConfigError naming the
    fields that stand in the way of each."""
    common = _common_problems(cfg)
    candidates = [t for t in TARGETS if (t.architecture == "Qwen3ForCausalLM") == cfg.qk_norm]
    for target in candidates:
        if not common and not target.problems(cfg):
            return target
    reasons = "; ".join(
        f"{target.architecture} needs other values of: {', '.join(common + target.problems(cfg))}"
        for target in candidates
    )
    raise ConfigError(f"no Hugging Face architecture computes this model exactly ({reasons})")


def check_exportable(cfg: ModelConfig) -> None:
    """Raise a ConfigError if no Hugging Face architecture computes ``cfg``'s model."""
    export_target(cfg)


def name_pairs(n_layers: int, names: dict[str, str] = HF_NAMES) -> list[tuple[str, str]]:
    """(lmablate name, Hugging Face name) for every weight of an ``n_layers`` model."""
    pairs = []
    for ours, theirs in names.items():
        if "{i}" in ours:
            pairs += [(ours.format(i=i), theirs.format(i=i)) for i in range(n_layers)]
        else:
            pairs.append((ours, theirs))
    return pairs


def _neox_qkv(state: dict[str, torch.Tensor], i: int, cfg: ModelConfig, kind: str) -> torch.Tensor:
    """GPT-NeoX's query_key_value rows are grouped by head: [q_h, k_h, v_h] for each head h."""
    parts = [state[f"blocks.{i}.attn.{p}_proj.{kind}"] for p in "qkv"]
    per_head = [part.reshape(cfg.n_heads, cfg.head_dim, -1) for part in parts]
    return torch.cat(per_head, dim=1).reshape(3 * cfg.d_model, -1).squeeze(-1)


def fold_mup(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A ``parametrization: mup`` model's multipliers folded into its weights, so that a
    standard architecture computes the same logits: the output multiplier 1 / m into the final
    norm's gain (and bias), which scales the head's input (tied embeddings stay tied); the
    attention scale sqrt(base head_dim) / head_dim, against the standard 1 / sqrt(head_dim),
    into the queries (the q-norm's gain under qk_norm, else q_proj; rotary positions are linear
    in q). Under sp, ``state`` itself."""
    if cfg.parametrization != "mup":
        return state
    out = dict(state)
    m = cfg.width_mult
    for name in ("norm.weight", "norm.bias"):
        if name in out:
            out[name] = out[name] / m
    factor = cfg.attention_scale * math.sqrt(cfg.head_dim)
    for i in range(cfg.n_layers):
        names = (
            [f"blocks.{i}.attn.q_norm.weight"]
            if cfg.qk_norm
            else [f"blocks.{i}.attn.q_proj.weight", f"blocks.{i}.attn.q_proj.bias"]
        )
        for name in names:
            if name in out:
                out[name] = out[name] * factor
    return out


def to_hf_state_dict(
    state: dict[str, torch.Tensor], cfg: ModelConfig, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """lmablate ``state_dict`` -> the export target's ``state_dict`` (the same tensors, with a
    mup model's multipliers folded in: ``fold_mup``); ``dtype``: the one the weights are saved
    in, whose rounding of a constant the target multiplies by (Gemma 2's sqrt(d_model)) is
    undone exactly."""
    target = export_target(cfg)
    state = fold_mup(state, cfg)
    out = {}
    for ours, theirs in name_pairs(cfg.n_layers, target.names):
        out[theirs] = state[ours]
        our_bias, their_bias = ours[: -len("weight")] + "bias", theirs[: -len("weight")] + "bias"
        if our_bias in state:
            out[their_bias] = state[our_bias]
        elif target.names is NEOX_NAMES and any(n in theirs for n in NEOX_ALWAYS_BIASED):
            out[their_bias] = torch.zeros(state[ours].shape[0], dtype=state[ours].dtype)
    if target.names is GEMMA2_NAMES:  # Gemma's RMSNorm multiplies by (1 + gain)
        for name in out:
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                out[name] = out[name] - 1
        # it multiplies the embedding by sqrt(d_model): the table is stored divided by it
        scale = torch.tensor(math.sqrt(cfg.d_model), dtype=dtype).item()  # as Gemma 2 rounds it
        out["model.embed_tokens.weight"] = out["model.embed_tokens.weight"] / scale
        out["lm_head.weight"] = state["lm_head.weight"]  # tied or not: its own copy
    if target.names is NEOX_NAMES:
        if _transformers_major() < 5:  # transformers 4 names GPT-NeoX's head embed_out
            out["embed_out.weight"] = out.pop("lm_head.weight")
        for i in range(cfg.n_layers):
            prefix = f"gpt_neox.layers.{i}.attention.query_key_value"
            out[f"{prefix}.weight"] = _neox_qkv(state, i, cfg, "weight")
            if cfg.bias:
                out[f"{prefix}.bias"] = _neox_qkv(state, i, cfg, "bias")
    return out


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_config(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> dict[str, Any]:
    """The config fields that make the export target compute exactly this model."""
    return export_target(cfg).config(cfg, vocab_size, context, eos_id)
