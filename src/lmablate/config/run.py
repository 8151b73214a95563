"""The run config: three sections, ``model``, ``train`` and ``data`` (the pydantic models below;
each field's description is its documentation, reused by ``lmablate config --reference``).

Field names are unique across sections, so a key that names a field may stand at the top level
of a config as a flat key (``keys.py`` nests it). Shapes that cannot be built are rejected here
with what would be valid (divisors of d_model, of n_heads, of batch_size). No torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lmablate.config.components import ATTENTION, MLPS, NORMS, POSITIONS, REGISTRIES

# Integers are strict (a YAML 3.5 or "12" for a layer count is a mistake, not a conversion);
# floats stay lax because PyYAML reads ``1e-4`` (no dot) as a string.
PosInt = Annotated[int, Field(gt=0, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
# Upper bounds on sizes and counts, each with why: a typo (an extra few zeros) fails here in
# milliseconds instead of allocating for minutes (keys.format_validation_error adds the reason).
LIMITS: dict[str, tuple[int, str]] = {
    "d_model": (2**16, "wider than any model this tool can train in memory"),
    "n_heads": (2**12, "more heads than any d_model here can divide usefully"),
    "n_kv_heads": (2**12, "more heads than any d_model here can divide usefully"),
    "n_layers": (2**12, "deeper than any published transformer LM by an order of magnitude"),
    "d_ff": (2**18, "an MLP wider than any model this tool can train in memory"),
    "vocab_size": (2**22, "a larger output layer than any tokenizer needs"),
    "max_positions": (2**22, "a longer position table than any context trained here"),
    "sliding_window": (2**22, "a window longer than any context trained here"),
    "global_every": (2**12, "more than the layers a model may have"),
    "batch_size": (2**20, "more sequences per step than fit any device"),
    "seq_len": (2**22, "a longer context than fits any device"),
    "max_steps": (10**9, "a billion optimizer steps"),
    "warmup_steps": (10**9, "a billion optimizer steps"),
    "muon_ns_steps": (99, "torch.optim.Muon refuses 100 or more Newton-Schulz steps"),
    "grad_accum_steps": (2**20, "more micro-batches than any batch_size allowed"),
    "eval_every": (10**9, "a billion optimizer steps"),
    "eval_tokens": (2**34, "more validation targets than a token cache holds"),
    "log_every": (10**9, "a billion optimizer steps"),
    "checkpoint_every": (10**9, "a billion optimizer steps"),
    "num_documents": (10**10, "more documents than any corpus this tool reads"),
}


def _bounded(field: str, zero: bool = False) -> object:
    """A strict int above 0 (or from 0) up to the field's limit."""
    low = {"ge": 0} if zero else {"gt": 0}
    return Annotated[int, Field(**low, le=LIMITS[field][0], strict=True)]


SEED_MAX = 2**63 - 1  # torch and numpy take seeds up to a signed 64-bit integer
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, strict=True)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """Decoder-only transformer, Llama-compatible by default; every component is a field."""

    d_model: _bounded("d_model") = Field(384, description="Width of the residual stream.")
    n_heads: _bounded("n_heads") = Field(
        6, description="Attention (query) heads; must divide d_model."
    )
    n_kv_heads: _bounded("n_kv_heads") | None = Field(
        None,
        description="Key/value heads for grouped-query attention; must divide n_heads. "
        "null means n_heads (plain multi-head attention).",
    )
    n_layers: _bounded("n_layers") = Field(12, description="Transformer blocks.")
    d_ff: _bounded("d_ff") = Field(1536, description="Hidden width of the MLP.")
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
    vocab_size: _bounded("vocab_size") | None = Field(
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
    max_positions: _bounded("max_positions") = Field(
        2048,
        description="Rows of the learned position table (positions: learned); at least "
        "train.seq_len. Unused otherwise.",
    )
    sliding_window: _bounded("sliding_window") | None = Field(
        None,
        description="Attend to the last W tokens only (Mistral, Gemma 2). null: full causal "
        "attention.",
    )
    global_every: _bounded("global_every") | None = Field(
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
                f"{_divisors(self.d_model, even_quotient=True)}"
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"model.n_heads ({self.n_heads}) must be divisible by model.n_kv_heads "
                f"({self.n_kv_heads}); valid n_kv_heads: {_divisors(self.n_heads)}"
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
                f"valid n_heads for this d_model: {_divisors(self.d_model, even_quotient=True)}"
                + ("" if self.rotary_fraction == 1 else ", or another rotary_fraction")
            )
        if self.positions != "rope" and self.rotary_fraction != 1.0:
            raise ValueError(
                f"model.rotary_fraction ({self.rotary_fraction}) needs positions: rope "
                f"(positions is {self.positions!r})"
            )
        if self.global_every is not None and self.sliding_window is None:
            raise ValueError("model.global_every needs model.sliding_window (the window size)")
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


class TrainConfig(_Section):
    """Optimization, evaluation and bookkeeping of one run."""

    batch_size: _bounded("batch_size") = Field(
        8, description="Sequences per optimizer step, all micro-batches and processes together."
    )
    seq_len: _bounded("seq_len") = Field(
        512, description="Tokens of context per training sequence."
    )
    learning_rate: PosFloat = Field(3.0e-4, description="Peak learning rate, reached after warmup.")
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="The decay ends at min_lr_ratio * learning_rate at max_steps."
    )
    warmup_steps: _bounded("warmup_steps", zero=True) = Field(
        100, description="Steps of linear warmup from 0."
    )
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None,
        description="Warmup as a share of max_steps: when set, warmup_steps is "
        "round(warmup_fraction * max_steps) (giving both is an error unless they agree), so the "
        "warmup scales with the run (a study's matched budgets keep it a fraction). null: "
        "warmup_steps as written.",
    )
    schedule: Literal["cosine", "wsd", "linear", "constant"] = Field(
        "cosine",
        description="Learning rate after warmup. cosine: cosine decay to the floor. wsd: "
        "warmup-stable-decay, the peak until the last decay_fraction of the steps, then "
        "decay_shape down to the floor (Hägele et al. 2024). linear: straight down to the floor "
        "(Bergsma et al. 2025 with min_lr_ratio 0). constant: the peak throughout.",
    )
    decay_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2, description="wsd: the share of max_steps spent decaying, at the end."
    )
    decay_shape: Literal["linear", "cosine", "sqrt"] = Field(
        "linear",
        description="wsd: the decay's shape: linear, cosine, or sqrt (1 - sqrt(progress), "
        "Hägele et al. 2024).",
    )
    max_steps: _bounded("max_steps") = Field(2000, description="Optimizer steps in the run.")
    optimizer: Literal["adamw", "muon", "lion", "sgd"] = Field(
        "adamw",
        description="adamw: AdamW (Loshchilov & Hutter 2019). muon: Muon (Jordan et al. 2024; "
        "torch.optim.Muon's update, its Newton-Schulz iteration in bfloat16 on GPUs and float32 "
        "on CPUs) on the hidden weight matrices, AdamW on embeddings, LM head and scalars, as "
        "its authors use it. lion: Lion (Chen et al. 2023), sign of an "
        "interpolated momentum, decoupled weight decay. sgd: SGD with momentum (weight decay "
        "as L2 on the gradient, torch.optim.SGD).",
    )
    weight_decay: NonNegFloat = Field(
        0.1,
        description="Decoupled weight decay of the embedding, head and matrix groups (the "
        "*_weight_decay fields override one group); norm gains and biases are not decayed.",
    )
    adam_beta1: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.9, description="AdamW beta1 (also Muon's AdamW groups)."
    )
    adam_beta2: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.95, description="AdamW beta2 (also Muon's AdamW groups)."
    )
    adam_eps: PosFloat = Field(1.0e-8, description="AdamW epsilon (also Muon's AdamW groups).")
    muon_momentum: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.95, description="Muon momentum (Jordan et al. 2024)."
    )
    muon_nesterov: bool = Field(True, description="Muon: Nesterov momentum (Jordan et al. 2024).")
    muon_ns_steps: _bounded("muon_ns_steps") = Field(
        5, description="Muon: Newton-Schulz iterations that orthogonalize the update."
    )
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = Field(
        "match_rms_adamw",
        description="Muon's per-matrix learning-rate scale. match_rms_adamw: "
        "0.2 * sqrt(max(rows, cols)), so the update's RMS matches AdamW's and AdamW's learning "
        "rate and weight decay carry over (Liu et al. 2025, 'Muon is Scalable for LLM "
        "Training'). original: sqrt(max(1, rows / cols)), tuned at learning rates near 0.02 "
        "(Jordan et al. 2024; set matrix_lr_mult).",
    )
    lion_beta1: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.9,
        description="Lion: interpolation of momentum and gradient for the update "
        "(Chen et al. 2023).",
    )
    lion_beta2: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.99,
        description="Lion: momentum decay (Chen et al. 2023). Lion's authors use a "
        "learning rate 3-10x smaller and a weight decay 3-10x larger than AdamW's.",
    )
    sgd_momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="SGD momentum.")
    sgd_nesterov: bool = Field(False, description="SGD: Nesterov momentum (Sutskever et al. 2013).")
    embedding_lr_mult: NonNegFloat = Field(
        1.0,
        description="Learning rate of the embeddings (token and learned positions; the head "
        "too when tied) as a multiple of the schedule's.",
    )
    head_lr_mult: NonNegFloat = Field(
        1.0, description="Learning rate of an untied LM head as a multiple of the schedule's."
    )
    matrix_lr_mult: NonNegFloat = Field(
        1.0,
        description="Learning rate of the hidden weight matrices (attention, MLP) as a multiple "
        "of the schedule's.",
    )
    scalar_lr_mult: NonNegFloat = Field(
        1.0,
        description="Learning rate of norm gains and biases as a multiple of the schedule's.",
    )
    embedding_weight_decay: NonNegFloat | None = Field(
        None, description="Weight decay of the embeddings; null: weight_decay."
    )
    head_weight_decay: NonNegFloat | None = Field(
        None, description="Weight decay of an untied LM head; null: weight_decay."
    )
    matrix_weight_decay: NonNegFloat | None = Field(
        None, description="Weight decay of the hidden weight matrices; null: weight_decay."
    )
    scalar_weight_decay: NonNegFloat = Field(
        0.0, description="Weight decay of norm gains and biases."
    )
    z_loss: NonNegFloat = Field(
        0.0,
        description="Coefficient c of the z-loss c * log(Z)^2 added to the objective, Z the "
        "softmax normalizer of the logits (PaLM, Chowdhery et al. 2022: 1e-4). The logged loss "
        "stays the cross-entropy; the z term is logged beside it as z_loss. 0: off.",
    )
    grad_clip: NonNegFloat = Field(
        1.0, description="Clip the global gradient norm to this value; 0 disables clipping."
    )
    grad_accum_steps: _bounded("grad_accum_steps") = Field(
        1, description="Micro-batches per optimizer step; must divide batch_size."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast on GPUs that support it, fp16 with a gradient scaler "
        "on older GPUs, fp32 on CPU. fp32/bf16/fp16 force one.",
    )
    device: str = Field(
        "auto", description="auto, cpu, cuda, cuda:N or mps. auto picks cuda, then mps, then cpu."
    )
    eval_every: _bounded("eval_every") = Field(
        400, description="Evaluate on the validation targets every N steps."
    )
    eval_tokens: _bounded("eval_tokens") = Field(
        65536,
        description="Validation target tokens scored at each evaluation (capped by what the "
        "validation documents hold); the same targets for every seq_len and batch size.",
    )
    log_every: _bounded("log_every") = Field(10, description="Log training metrics every N steps.")
    checkpoint_every: _bounded("checkpoint_every") = Field(
        500, description="Save a resumable checkpoint every N steps."
    )
    seed: Seed = Field(
        0, description="Seed of the weight initialization (0 to 2^63 - 1, as torch takes it)."
    )
    data_seed: Seed = Field(
        0, description="Seed of the training batch order (0 to 2^63 - 1, as numpy takes it)."
    )
    compile: bool = Field(
        False,
        description="Compile the model with torch.compile. The first step after a start or "
        "resume compiles; its wall time is summary.json's compile_s, which the summary's "
        "train_time_s and tokens_per_s leave out (metrics.jsonl times every step as it ran).",
    )
    logger: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="Mirror metrics.jsonl to an experiment tracker: tensorboard (event files "
        "in RUN_DIR/tensorboard) or wandb (set WANDB_MODE=offline to run without an account). "
        "Optional extras: pip install 'lmablate[tensorboard]' or 'lmablate[wandb]'.",
    )
    wandb_project: str = Field("lmablate", description="Weights & Biases project (logger: wandb).")

    @model_validator(mode="before")
    @classmethod
    def _warmup_from_fraction(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("warmup_fraction") is not None:
            max_steps = data.get("max_steps", cls.model_fields["max_steps"].default)
            try:
                steps = round(float(data["warmup_fraction"]) * max_steps)
            except (TypeError, ValueError):
                return data  # the field validators say what is wrong
            written = data.get("warmup_steps")
            if written is not None and written != steps:
                raise ValueError(
                    f"train.warmup_steps ({written}) and train.warmup_fraction "
                    f"({data['warmup_fraction']}: {steps} of {max_steps} steps) disagree; give "
                    "one (warmup_fraction: null to write the warmup in steps)"
                )
            data = {**data, "warmup_steps": steps}
        return data

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must be smaller than train.max_steps "
                f"({self.max_steps})"
            )
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"train.grad_accum_steps ({self.grad_accum_steps}) must divide train.batch_size "
                f"({self.batch_size}); valid values: {_divisors(self.batch_size)}"
            )
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(
                f"train.device {self.device!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps"
            )
        return self


class BPETraining(_Section):
    vocab_size: Annotated[int, Field(ge=260, le=65536, strict=True)] = Field(
        4096, description="Vocabulary of the byte-level BPE tokenizer trained on the corpus."
    )


class TrainedTokenizer(_Section):
    """``{train_bpe: {vocab_size: N}}``: a BPE tokenizer trained on the training documents."""

    train_bpe: BPETraining


class ContaminationCheck(_Section):
    """Overlap between documents by word n-grams (``data/overlap.py``), applied before the split
    is used: near-copies dropped from the corpus, contaminated held-out documents moved out."""

    ngram: Annotated[int, Field(ge=3, le=64, strict=True)] = Field(
        8, description="Words per n-gram (GPT-3's contamination check used 13)."
    )
    near_duplicates: Annotated[float, Field(gt=0, le=1)] | None = Field(
        0.8,
        description="Drop a document when at least this share of its distinct n-grams occurs "
        "in the documents before it in the corpus (the first copy stays); null keeps them.",
    )
    max_overlap: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.2,
        description="A validation document sharing more than this share of its n-grams with "
        "training (a test document: with training or validation) is contaminated.",
    )
    action: Literal["move", "drop"] = Field(
        "move",
        description="What happens to a contaminated held-out document: move it to training, "
        "or drop it.",
    )


class DataConfig(_Section):
    """The corpus, its tokenizer and the document-level train/validation split."""

    source: Literal["hf", "local", "builtin"] = Field(
        "hf",
        description="hf: stream from the Hugging Face Hub (or a local folder laid out like a "
        "hub dataset). local: files at path. builtin: English prose that ships with Python "
        "(the standard library's documentation topics), needs no download.",
    )
    dataset: str = Field(
        "HuggingFaceTB/smollm-corpus", description="Hub dataset id or folder (source: hf)."
    )
    subset: str | None = Field("cosmopedia-v2", description="Dataset configuration (source: hf).")
    split: str = Field("train", description="Dataset split to read (source: hf).")
    text_field: str = Field(
        "text", description="Field holding the text in hf, .jsonl, .json and .parquet records."
    )
    path: str | None = Field(
        None,
        description="source: local. A .txt file (documents separated by blank lines), a "
        ".jsonl/.json/.parquet file of records, or a directory of .txt files (one document "
        "per file). Relative paths are relative to the working directory.",
    )
    num_documents: _bounded("num_documents") | None = Field(
        500, description="Read the first N documents of the source; null reads all of them."
    )
    tokenizer: str | TrainedTokenizer = Field(
        "HuggingFaceTB/SmolLM-135M",
        description="A hub tokenizer id, a local directory or tokenizer.json, or "
        "{train_bpe: {vocab_size: N}} to train a byte-level BPE on the training documents.",
    )
    val_fraction: Annotated[float, Field(gt=0, le=0.5)] = Field(
        0.1, description="Share of documents held out for validation, in (0, 0.5]."
    )
    test_fraction: Annotated[float, Field(ge=0, le=0.5)] = Field(
        0.0,
        description="Share of documents held out as a test split, seen by neither training nor "
        "any choice made on validation (a study's tune:); every complete run is scored on it "
        "once at the end. 0: no test split.",
    )
    split_seed: Seed = Field(
        0, description="Seed of the document-level train/validation/test split."
    )
    contamination: ContaminationCheck = Field(
        default_factory=ContaminationCheck,
        description="The overlap check between held-out and training documents (ngram, "
        "near_duplicates, max_overlap, action); exact repeats are always removed.",
    )
    cache_dir: str | None = Field(
        None,
        description="Where token caches live; null: $LMABLATE_CACHE or ~/.cache/lmablate.",
    )

    @model_validator(mode="after")
    def _check_paths(self, info: ValidationInfo) -> DataConfig:
        if info.context and not info.context.get("check_paths", True):
            return self  # a finished run's config: its corpus may have moved since
        if self.source == "local":
            if self.path is None:
                raise ValueError("data.path is required when data.source is 'local'")
            if not Path(self.path).expanduser().exists():
                raise ValueError(f"data.path {self.path!r} does not exist")
        tokenizer = self.tokenizer
        if (
            isinstance(tokenizer, str)
            and looks_like_path(tokenizer)
            and not Path(tokenizer).expanduser().exists()
        ):
            raise ValueError(
                f"data.tokenizer {tokenizer!r} looks like a path but does not exist; give a "
                "hub id, a tokenizer directory or a tokenizer.json file"
            )
        return self


class RunConfig(_Section):
    """Everything one training run needs."""

    description: str = Field("", description="Free text shown in reports.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    @model_validator(mode="after")
    def _check_positions(self) -> RunConfig:
        if self.model.positions == "learned" and self.model.max_positions < self.train.seq_len:
            raise ValueError(
                f"model.max_positions ({self.model.max_positions}) is shorter than "
                f"train.seq_len ({self.train.seq_len}): the learned position table needs a row "
                "for every position of a training sequence"
            )
        return self


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "data": DataConfig,
}

# Flat key -> its section. Field names are unique across sections by design (asserted here), so
# a flat key is never ambiguous.
FLAT_KEYS: dict[str, str] = {
    field: section for section, cls in SECTIONS.items() for field in cls.model_fields
}
assert len(FLAT_KEYS) == sum(len(cls.model_fields) for cls in SECTIONS.values())


def looks_like_path(value: str) -> bool:
    """A tokenizer spec meant as a file system path rather than a hub id."""
    return value.startswith((".", "/", "~")) or value.endswith(".json")


def _divisors(n: int, even_quotient: bool = False) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0 and not (even_quotient and (n // k) % 2)]
