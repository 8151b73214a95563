"""The ``model`` section of a run config: the shape and every architecture choice the tool
can ablate, each field's description its documentation. Shapes that cannot be built are
rejected with what would be valid (divisors of d_model and of n_heads). No torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lmablate.config.components import ATTENTION, MLPS, NORMS, POSITIONS, REGISTRIES
from lmablate.config.fields import (
    PosFloat,
    Section,
    bounded,
    divisors,
)


class ModelConfig(Section):
    """Decoder-only transformer, Llama-compatible by default; every component is a field."""

    d_model: bounded("d_model") = Field(384, description="Width of the residual stream.")
    n_heads: bounded("n_heads") = Field(
        6, description="Attention (query) heads; must divide d_model."
    )
    n_kv_heads: bounded("n_kv_heads") | None = Field(
        None,
        description="Key/value heads for grouped-query attention; must divide n_heads. "
        "null means n_heads (plain multi-head attention).",
    )
    n_layers: bounded("n_layers") = Field(12, description="Transformer blocks.")
    d_ff: bounded("d_ff") = Field(1536, description="Hidden width of the MLP.")
    mlp: str = Field(
        "swiglu",
        description="MLP form, a name in the MLP registry (or one registered from Python): "
        + MLPS.reference()
        + ".",
    )
    rope_theta: PosFloat = Field(10000.0, description="Base of the rotary position frequencies.")
    norm_eps: PosFloat = Field(1.0e-5, description="Epsilon inside the norms.")
    tie_embeddings: bool = Field(
        True, description="Share the token embedding matrix with the output (LM head) layer."
    )
    vocab_size: bounded("vocab_size") | None = Field(
        None,
        description="Rows of the embedding. null: the tokenizer's vocabulary rounded up to a "
        "multiple of 64. A tokenizer larger than this is an error.",
    )
    init_std: PosFloat = Field(0.02, description="Std of the normal init of every weight matrix.")
    init: Literal["normal", "depth_scaled", "zero_out"] = Field(
        "normal",
        description="Init of the output projections (attention o_proj, MLP down_proj). normal: "
        "N(0, init_std) like every matrix. depth_scaled: N(0, init_std / sqrt(2 n_layers)) "
        "(GPT-2). zero_out: zeros, so every block starts as the identity.",
    )
    norm: str = Field(
        "rmsnorm",
        description="Normalization, a name in the norm registry: " + NORMS.reference() + ".",
    )
    norm_placement: Literal["pre", "post", "sandwich"] = Field(
        "pre",
        description="Where a block normalizes. pre: x + f(norm(x)) (GPT-2, Llama). post: "
        "x + norm(f(x)), the branch output normalized (OLMo 2's reordered norm). sandwich: "
        "x + norm(f(norm(x))) (Gemma 2, OLMo-core peri-norm). A final norm precedes the head.",
    )
    qk_norm: bool = Field(
        False,
        description="RMSNorm of each head's queries and keys (learned gain over head_dim) before "
        "the rotation (Qwen3; Wortsman et al. 2023).",
    )
    positions: str = Field(
        "rope",
        description="Position information, a name in the positions registry: "
        + POSITIONS.reference()
        + ".",
    )
    attention: str = Field(
        "causal",
        description="Attention, a name in the attention registry: " + ATTENTION.reference() + ".",
    )
    rotary_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0,
        description="Share of each head's dimensions that rope rotates (the first ones; GPT-NeoX "
        "rotary_pct). The rotated count must be even.",
    )
    max_positions: bounded("max_positions") = Field(
        2048,
        description="Rows of the learned position table (positions: learned); at least "
        "train.seq_len. Unused otherwise.",
    )
    sliding_window: bounded("sliding_window") | None = Field(
        None,
        description="Attend to the last W tokens only (Mistral, Gemma 2). null: full causal "
        "attention.",
    )
    global_every: bounded("global_every") | None = Field(
        None,
        description="With sliding_window: every k-th layer (layers k, 2k, ... counting from 1) "
        "keeps full attention (Gemma 2: 2; nanochat's SSSL pattern: 4). null: every layer slides.",
    )
    logit_softcap: PosFloat | None = Field(
        None,
        description="Soft-cap the output logits at c: c * tanh(z / c) (Gemma 2, modded-nanogpt). "
        "null: off.",
    )
    bias: bool = Field(
        False,
        description="Biases in every linear layer (q, k, v, o and the MLP) and in layernorm.",
    )
    parallel_block: bool = Field(
        False,
        description="x + attn(norm1(x)) + mlp(norm2(x)) from the same input (GPT-J, PaLM, "
        "GPT-NeoX); needs norm_placement: pre.",
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Dropout on each residual branch's output while training."
    )
    attention_dropout: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="Dropout on the attention probabilities while training."
    )
    parametrization: Literal["sp", "mup"] = Field(
        "sp",
        description="sp: standard parametrization. mup: the maximal update parametrization "
        "(Yang et al. 2022, Tensor Programs V), relative to a base of width mup_base_width: "
        "hidden matrices initialized at init_std / sqrt(m) and trained at the learning rate / m "
        "(weight decay x m) under AdamW and Lion, logits multiplied by 1 / m, attention scaled "
        "1 / head_dim; m = d_model / mup_base_width. At the base width it is sp.",
    )
    mup_base_width: bounded("d_model") | None = Field(
        None,
        description="The base model's d_model for parametrization: mup (the width its learning "
        "rate was tuned at). null: this model's own d_model (m = 1).",
    )
    mup_base_head_dim: bounded("d_model") | None = Field(
        None,
        description="The base model's head dimension for mup's 1 / head_dim attention scale "
        "(sqrt(base) / head_dim, so the base keeps 1 / sqrt(head_dim)). null: this model's "
        "own head dimension, right when widening adds heads, as the scale axis does.",
    )

    @property
    def width_mult(self) -> float:
        """m = d_model / mup_base_width under mup; 1 under sp."""
        if self.parametrization != "mup" or self.mup_base_width is None:
            return 1.0
        return self.d_model / self.mup_base_width

    @property
    def attention_scale(self) -> float | None:
        """The attention logits' scale: None (1 / sqrt(head_dim)) under sp; under mup
        sqrt(base head_dim) / head_dim."""
        if self.parametrization != "mup":
            return None
        base = self.mup_base_head_dim or self.head_dim
        return math.sqrt(base) / self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads "
                f"({self.n_heads}); valid n_heads for this d_model: "
                f"{divisors(self.d_model, even_quotient=True)}"
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"model.n_heads ({self.n_heads}) must be divisible by model.n_kv_heads "
                f"({self.n_kv_heads}); valid n_kv_heads: {divisors(self.n_heads)}"
            )
        if self.positions == "rope" and (self.rotary_dims % 2 or self.rotary_dims < 2):
            rotated = (
                f"head dimension d_model / n_heads = {self.d_model} / {self.n_heads} = "
                f"{self.head_dim} is odd"
                if self.rotary_fraction == 1.0
                else f"rotary dimensions int(rotary_fraction x head_dim) = "
                f"int({self.rotary_fraction} x {self.head_dim}) = {self.rotary_dims} is odd or zero"
            )
            raise ValueError(
                f"{rotated}; rotary embeddings rotate pairs of dimensions, so it must be even; "
                f"valid n_heads for this d_model: {divisors(self.d_model, even_quotient=True)}"
                + ("" if self.rotary_fraction == 1 else ", or another rotary_fraction")
            )
        if self.positions != "rope" and self.rotary_fraction != 1.0:
            raise ValueError(
                f"model.rotary_fraction ({self.rotary_fraction}) needs positions: rope "
                f"(positions is {self.positions!r})"
            )
        if self.global_every is not None and self.sliding_window is None:
            raise ValueError("model.global_every needs model.sliding_window (the window size)")
        if self.parametrization == "sp" and (self.mup_base_width or self.mup_base_head_dim):
            raise ValueError(
                "model.mup_base_width and mup_base_head_dim are read only with parametrization: mup"
            )
        if self.parallel_block and self.norm_placement != "pre":
            raise ValueError(
                f"model.parallel_block needs norm_placement: pre (got "
                f"{self.norm_placement!r}): both branches read the same normalized input"
            )
        return self

    @field_validator("norm", "mlp", "attention", "positions")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        """A component name must be in its family's registry (built in or registered)."""
        return REGISTRIES[info.field_name].check(name)

    @property
    def rotary_dims(self) -> int:
        """Dimensions of each head that rope rotates (0 without rope)."""
        if self.positions != "rope":
            return 0
        return int(self.head_dim * self.rotary_fraction)

    def window_of(self, layer: int) -> int | None:
        """The sliding window of block ``layer`` (0-based), None where attention is global."""
        if self.sliding_window is None:
            return None
        if self.global_every is not None and (layer + 1) % self.global_every == 0:
            return None
        return self.sliding_window
