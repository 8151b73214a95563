"""The run config: three sections, ``model``, ``train`` and ``data`` (the pydantic models below;
each field's description is its documentation, reused by ``lmablate config --reference``).

Field names are unique across sections, so a key that names a field may stand at the top level
of a config as a flat key (``keys.py`` nests it). Shapes that cannot be built are rejected here
with what would be valid (divisors of d_model, of n_heads, of batch_size). No torch.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    model_validator,
)

from lmablate.config.data import (  # noqa: F401  (re-exported: the data section's home)
    BPETraining,
    ContaminationCheck,
    DataConfig,
    TrainedTokenizer,
)
from lmablate.config.fields import (  # noqa: F401  (re-exported for the modules that use them)
    LIMITS,
    SEED_MAX,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Section,
    Seed,
    bounded,
    divisors,
    looks_like_path,
)
from lmablate.config.model import ModelConfig


class TrainConfig(Section):
    """Optimization, evaluation and bookkeeping of one run."""

    batch_size: bounded("batch_size") = Field(
        8, description="Sequences per optimizer step, all micro-batches and processes together."
    )
    seq_len: bounded("seq_len") = Field(512, description="Tokens of context per training sequence.")
    learning_rate: PosFloat = Field(3.0e-4, description="Peak learning rate, reached after warmup.")
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="The decay ends at min_lr_ratio * learning_rate at max_steps."
    )
    warmup_steps: bounded("warmup_steps", zero=True) = Field(
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
    max_steps: bounded("max_steps") = Field(2000, description="Optimizer steps in the run.")
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
    muon_ns_steps: bounded("muon_ns_steps") = Field(
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
    grad_accum_steps: bounded("grad_accum_steps") = Field(
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
    eval_every: bounded("eval_every") = Field(
        400, description="Evaluate on the validation targets every N steps."
    )
    eval_tokens: bounded("eval_tokens") = Field(
        65536,
        description="Validation target tokens scored at each evaluation (capped by what the "
        "validation documents hold); the same targets for every seq_len and batch size.",
    )
    log_every: bounded("log_every") = Field(10, description="Log training metrics every N steps.")
    checkpoint_every: bounded("checkpoint_every") = Field(
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
                f"({self.batch_size}); valid values: {divisors(self.batch_size)}"
            )
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(
                f"train.device {self.device!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps"
            )
        return self


class RunConfig(Section):
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
        model, seq_len = self.model, self.train.seq_len
        if model.sliding_window is not None and model.sliding_window >= seq_len:
            raise ValueError(
                f"model.sliding_window ({model.sliding_window}) is not shorter than "
                f"train.seq_len ({seq_len}): every token already sees its whole context, so "
                "the window changes nothing; give a window below seq_len, or null for full "
                "attention"
            )
        if model.global_every == 1:
            raise ValueError(
                "model.global_every is 1: every layer keeps full attention, so the "
                "sliding_window changes nothing; give 2 or more (every k-th layer global), or "
                "leave out sliding_window"
            )
        if model.global_every is not None and model.global_every > model.n_layers:
            raise ValueError(
                f"model.global_every ({model.global_every}) is more than model.n_layers "
                f"({model.n_layers}): no layer keeps full attention, which is global_every: "
                f"null; give 2 to {model.n_layers}"
            )
        if self.model.parametrization == "mup" and self.train.optimizer == "sgd":
            raise ValueError(
                "model.parametrization: mup scales the learning rates of Adam-like optimizers "
                "(adamw, lion; muon's matrices scale by their shape already); its SGD rules "
                "are not implemented here: use train.optimizer adamw, lion or muon"
            )
        return self


SECTIONS: dict[str, type[Section]] = {
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
