"""Parameter and FLOP counts from the config alone (no model is built; no torch), and the
size of the embedding for a tokenizer."""

from __future__ import annotations

import math

from lmablate.config.run import ModelConfig
from lmablate.errors import ConfigError


def count_parameters(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameter counts from the config alone (a test checks them against a built model).

    ``non_embedding`` excludes the token embedding and the LM head, as in Kaplan et al. (2020)
    "Scaling Laws for Neural Language Models"; ``total`` counts a tied matrix once.
    """
    d, kv_dim = cfg.d_model, cfg.kv_heads * cfg.head_dim
    attention = 2 * d * d + 2 * d * kv_dim  # q, o: d x d; k, v: d x kv_dim
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * cfg.d_ff
    per_block = attention + mlp + 2 * d  # two RMSNorm weights
    non_embedding = cfg.n_layers * per_block + d  # + final norm
    embedding = vocab_size * d
    head = 0 if cfg.tie_embeddings else vocab_size * d
    return {
        "total": non_embedding + embedding + head,
        "non_embedding": non_embedding,
        "embedding": embedding,
    }


def training_flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int) -> int:
    """Training FLOPs per token: 6N + 12·L·d·T (Chowdhery et al. 2022, PaLM, appendix B).

    N counts every weight used in a matrix multiply: the non-embedding weights plus the LM head
    (the embedding lookup itself is free). 6N is forward (2N) plus backward (4N); 12·L·d·T is
    the attention score and value products (QKᵀ and AV, 2·T·d each per layer forward, times 3
    for training), counted over the full T×T square as is customary although causal masking
    skips half of it.
    """
    matmul_params = count_parameters(cfg, vocab_size)["non_embedding"] + vocab_size * cfg.d_model
    return 6 * matmul_params + 12 * cfg.n_layers * cfg.d_model * seq_len


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
