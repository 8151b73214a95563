"""Parameter and FLOP counts from the config alone, and the size of the embedding for a
tokenizer. Built-in components are counted by formula (no model is built; no torch); a
component registered from Python is built once on the meta device and its parameters counted."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lmablate.config.components import ATTENTION, MLPS, NORMS, POSITIONS
from lmablate.config.run import ModelConfig, RunConfig
from lmablate.errors import ConfigError

GATED_MLPS = ("swiglu", "geglu")  # gate, up and down matrices; the other built-ins: up, down


def _meta_parameters(build: Callable[[], Any]) -> int:
    """Parameters of a module built on the meta device (no memory, no init)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def mlp_parameters(cfg: ModelConfig) -> int:
    d, ff, bias = cfg.d_model, cfg.d_ff, int(cfg.bias)
    if not MLPS.entries[cfg.mlp].builtin:
        return _meta_parameters(lambda: MLPS.builder(cfg.mlp)(cfg))
    if cfg.mlp in GATED_MLPS:
        return 3 * d * ff + bias * (2 * ff + d)
    return 2 * d * ff + bias * (ff + d)


def norm_parameters(cfg: ModelConfig, dim: int) -> int:
    if not NORMS.entries[cfg.norm].builtin:
        return _meta_parameters(lambda: NORMS.builder(cfg.norm)(dim, cfg))
    with_bias = cfg.norm == "layernorm" and cfg.bias
    return dim * (2 if with_bias else 1)


def attention_parameters(cfg: ModelConfig) -> int:
    if not ATTENTION.entries[cfg.attention].builtin:
        return _meta_parameters(lambda: ATTENTION.builder(cfg.attention)(cfg, None))
    d, kv_dim, bias = cfg.d_model, cfg.kv_heads * cfg.head_dim, int(cfg.bias)
    count = 2 * d * d + 2 * d * kv_dim  # q, o: d x d; k, v: d x kv_dim
    count += bias * (2 * d + 2 * kv_dim)
    return count + (2 * cfg.head_dim if cfg.qk_norm else 0)  # a gain per head dimension, q and k


def position_parameters(cfg: ModelConfig) -> int:
    if not POSITIONS.entries[cfg.positions].builtin:
        return _meta_parameters(lambda: POSITIONS.builder(cfg.positions)(cfg))
    return cfg.max_positions * cfg.d_model if cfg.positions == "learned" else 0


def count_parameters(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameter counts from the config alone (a test checks them against built models).

    ``non_embedding`` excludes the token embedding, a learned position table and the LM head,
    as in Kaplan et al. (2020) "Scaling Laws for Neural Language Models"; ``total`` counts a
    tied matrix once.
    """
    d = cfg.d_model
    norms_per_block = 4 if cfg.norm_placement == "sandwich" else 2
    per_block = attention_parameters(cfg) + mlp_parameters(cfg)
    per_block += norms_per_block * norm_parameters(cfg, d)
    non_embedding = cfg.n_layers * per_block + norm_parameters(cfg, d)  # + final norm
    embedding = vocab_size * d
    positions = position_parameters(cfg)
    head = 0 if cfg.tie_embeddings else vocab_size * d
    return {
        "total": non_embedding + embedding + positions + head,
        "non_embedding": non_embedding,
        "embedding": embedding + positions,
    }


def training_flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int) -> int:
    """Training FLOPs per token: 6N + 12·d·L·T (Chowdhery et al. 2022, PaLM, app. B).

    N is the non-embedding parameters plus the LM head (the embedding lookups themselves are
    free; norm gains count as weights, a few hundred per layer). 6N is forward (2N) plus
    backward (4N); 12·d·T is one layer's attention score and value products (QKᵀ and AV,
    2·T·d each forward, times 3 for training), over the full T×T square as is customary
    although causal masking skips half of it. A sliding window is applied as a mask over that
    same square (no kernel here skips the masked blocks), so a windowed layer computes, and is
    counted, as a full one: the count is what runs (tested against torch's FlopCounterMode).
    """
    matmul_params = count_parameters(cfg, vocab_size)["non_embedding"] + vocab_size * cfg.d_model
    return 6 * matmul_params + 12 * cfg.d_model * cfg.n_layers * seq_len


def padded_vocab_size(tokenizer_vocab: int, multiple: int = 64) -> int:
    """Round the embedding up to a multiple of 64 rows: matmuls on such shapes run faster."""
    return math.ceil(tokenizer_vocab / multiple) * multiple


def resolve_vocab_size(cfg: ModelConfig, tokenizer_vocab: int) -> int:
    """Embedding rows for a tokenizer: ``model.vocab_size`` if set (and large enough)."""
    if cfg.vocab_size is None:
        return padded_vocab_size(tokenizer_vocab)
    if tokenizer_vocab > cfg.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({cfg.vocab_size}) is smaller than the tokenizer's vocabulary "
            f"({tokenizer_vocab} tokens); set model.vocab_size to at least {tokenizer_vocab} "
            "or to null to size it from the tokenizer"
        )
    return cfg.vocab_size


def training_memory_floor(cfg: RunConfig, vocab_size: int, precision: str) -> dict[str, int]:
    """A lower bound, in bytes, on the memory one training process needs: fp32 weights and
    gradients (8 bytes a parameter) and the optimizer's state (AdamW two moments, Muon, Lion
    and SGD with momentum one), and the activations one micro-batch keeps for the backward
    pass, counting only the inputs of each layer's matrix multiplies (6d + 2·d_ff values a
    token) at the precision's width. Real use is higher (attention, the loss, the allocator),
    so a run above the floor may still not fit, but one whose floor exceeds the device's
    memory cannot."""
    tc, model = cfg.train, cfg.model
    params = count_parameters(model, vocab_size)["total"]
    state = {"adamw": 8, "muon": 4, "lion": 4, "sgd": 4 if tc.sgd_momentum else 0}
    weights = params * (8 + state[tc.optimizer])
    micro_batch = tc.batch_size // tc.grad_accum_steps
    width = 4 if precision == "fp32" else 2
    per_token = model.n_layers * (6 * model.d_model + 2 * model.d_ff)
    activations = micro_batch * tc.seq_len * per_token * width
    return {"weights": weights, "activations": activations, "total": weights + activations}
