"""The language model: a decoder-only transformer, Llama-compatible by construction.

Token embedding -> ``n_layers`` pre-norm blocks -> final RMSNorm -> LM head (tied to the
embedding by default). Each block is ``x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x))``.

Choices that keep it interchangeable with ``transformers.LlamaForCausalLM`` (a test checks logit
parity on a tiny config):
- RMSNorm computed in float32 and cast back before the weight multiply, as Llama does.
- Rotary embeddings in the "rotate-half" layout of the Hugging Face implementation (the first
  and second halves of each head are the rotated pairs, not interleaved even/odd dimensions).
- Separate q/k/v/o projections with no biases; grouped-query attention via ``n_kv_heads``.

Deliberate additions beyond Llama: ``mlp: silu``, a plain two-matrix MLP down(silu(up x)), the
form the reference study used; it has no Llama equivalent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.run import ModelConfig
from lmablate.errors import ConfigError
from lmablate.model.loss import head_cross_entropy


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # the same arithmetic in one fused operation
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # float32 statistics even under autocast, as in Llama (bf16 variance underflows)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables in float32 for integer positions: (T,) -> (T, D); (B, T) ->
    (B, 1, T, D), which broadcasts over heads (each sequence its own positions)."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponents / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (..., T, D / 2)
    angles = torch.cat((freqs, freqs), dim=-1)  # rotate-half layout: both halves share a freq
    if angles.dim() == 3:
        angles = angles.unsqueeze(1)  # (B, 1, T, D)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys; cos/sin are (T, D) or (B, 1, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        # while decoding, one product for q, k and v (weights concatenated); see generation.py
        self.qkv_proj: nn.Module | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        if self.qkv_proj is None:
            q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
            k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, D), (B, KV, T, D)
        else:  # rotate queries and keys together, heads on dim 2: (B, T, H + KV, D)
            heads = self.n_heads + self.n_kv_heads
            qkv = self.qkv_proj(x)
            qk = qkv[..., : heads * self.head_dim].view(batch, seq, heads, self.head_dim)
            qk = apply_rope(qk, cos.transpose(-2, -3), sin.transpose(-2, -3)).transpose(1, 2)
            q, k = qk.split((self.n_heads, self.n_kv_heads), dim=1)
            v = qkv[..., heads * self.head_dim :].view(batch, seq, self.n_kv_heads, self.head_dim)
            v = v.transpose(1, 2)
        if cache is not None:  # append this step's keys and values; attend over all so far
            keys, values = cache  # (B, KV, T_max, D)
            keys[:, :, start : start + seq] = k
            values[:, :, start : start + seq] = v
            k, v = keys[:, :, : start + seq], values[:, :, : start + seq]
        if self.n_kv_heads != self.n_heads:
            # each kv head serves n_heads / n_kv_heads consecutive query heads, as in Llama
            repeats = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(repeats, dim=1)
            v = v.repeat_interleave(repeats, dim=1)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        else:  # (B, 1, T, T_keys), True where a query may attend
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        if self.gated:
            self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        # while decoding, one product for gate and up (weights concatenated); see generation.py
        self.gate_up_proj: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.silu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, **attn
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, **attn)
        return x + self.mlp(self.mlp_norm(x))


class LM(nn.Module):
    """Maps token ids (B, T) to next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) for every weight matrix, ones for norms; seed torch first to fix it."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits: ``model(ids)``, causal over 0..T-1. Training: ``model(ids, targets=...)``
        returns the mean cross-entropy instead, without materializing the logits (loss.py).
        Decoding: per-sequence ``positions`` (B, T), a ``cache`` that this call extends, and an
        attention ``mask`` (B, 1, T, keys)."""
        hidden = self.hidden_states(input_ids, positions, cache, mask)
        if targets is not None:
            return head_cross_entropy(hidden, self.lm_head.weight, targets)
        return self.lm_head(hidden)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final normalized hidden states (B, T, d_model): the LM head's input."""
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.embed(input_ids)  # (B, T, d_model)
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, cos, sin, mask=mask)
            else:
                layer = (cache.keys[i], cache.values[i])
                x = block(x, cos, sin, cache=layer, start=cache.length, mask=mask)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.norm(x)


@dataclass
class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions."""

    keys: list[torch.Tensor]  # per layer (B, KV, max_len, D)
    values: list[torch.Tensor]
    length: int = 0  # positions filled so far

    @classmethod
    def allocate(
        cls, cfg: ModelConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> KVCache:
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        return cls(
            [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
        )


# ------------------------------------------------------------------------ parameters and FLOPs


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
