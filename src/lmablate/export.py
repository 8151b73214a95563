"""Hugging Face interop: lmablate weights <-> ``transformers.LlamaForCausalLM`` weights.

The weight-name map is one explicit table (``HF_NAMES``); ``{i}`` stands for the block index.
Only ``mlp: swiglu`` models have a Llama equivalent; a plain-SiLU MLP is refused.
"""

from __future__ import annotations

import torch

from lmablate.config import ModelConfig
from lmablate.errors import ConfigError

HF_NAMES: dict[str, str] = {
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


def check_exportable(cfg: ModelConfig) -> None:
    if cfg.mlp != "swiglu":
        raise ConfigError(
            f"model.mlp is {cfg.mlp!r}: a plain SiLU MLP has no Llama equivalent (Llama's MLP "
            "is gated: down(silu(gate x) * up x)), so this model cannot be exported exactly; "
            "train with mlp: swiglu to get a Hugging Face-compatible model"
        )


def name_pairs(n_layers: int) -> list[tuple[str, str]]:
    """(lmablate name, Hugging Face name) for every weight of an ``n_layers`` model."""
    pairs = []
    for ours, theirs in HF_NAMES.items():
        if "{i}" in ours:
            pairs += [(ours.format(i=i), theirs.format(i=i)) for i in range(n_layers)]
        else:
            pairs.append((ours, theirs))
    return pairs


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmablate ``state_dict`` -> ``LlamaForCausalLM`` ``state_dict`` (same tensors)."""
    check_exportable(cfg)
    return {theirs: state[ours] for ours, theirs in name_pairs(cfg.n_layers)}
