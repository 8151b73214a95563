"""Hugging Face export: a run directory -> a folder ``transformers`` loads with no custom code.

The weight-name map is one explicit table (``HF_NAMES``); ``{i}`` stands for the block index.
The folder holds config.json (LlamaConfig), model.safetensors, generation_config.json, the
tokenizer files and a model card. Only ``mlp: swiglu`` models have a Llama equivalent; a
plain-SiLU MLP is refused with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lmablate.config.keys import read_run_config
from lmablate.config.run import ModelConfig
from lmablate.errors import ConfigError, LmablateError
from lmablate.training.checkpoint import load_run

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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        "hidden_act": "silu",
        "max_position_embeddings": context,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "initializer_range": cfg.init_std,
    }


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Write ``out_dir`` so that ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``
    load the run's newest valid weights and tokenizer with no custom code."""
    from transformers import GenerationConfig, LlamaConfig

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if dtype not in DTYPES:
        raise LmablateError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    cfg = read_run_config(run_dir)
    check_exportable(cfg.model)
    model, tokenizer, _, step = load_run(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    state = to_hf_state_dict(model.state_dict(), cfg.model)
    if cfg.model.tie_embeddings:  # stored once; transformers ties it back on load
        state.pop("lm_head.weight")
    state = {name: t.detach().to(DTYPES[dtype]).contiguous() for name, t in state.items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    fields = llama_config(cfg.model, model.vocab_size, cfg.train.seq_len, tokenizer.eos_id)
    LlamaConfig(**fields, torch_dtype=dtype).save_pretrained(str(out_dir))
    GenerationConfig(
        bos_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.eos_id
    ).save_pretrained(str(out_dir))
    tokenizer.save(out_dir)
    (out_dir / "README.md").write_text(model_card(run_dir, cfg, summary, step, model, dtype))
    return out_dir


def model_card(
    run_dir: Path,
    cfg: Any,
    summary: dict[str, Any] | None,
    step: int,
    model: torch.nn.Module,
    dtype: str,
) -> str:
    summary = summary or {}
    study = run_dir.parent.parent.parent / "study.yaml"
    params = sum(p.numel() for p in model.parameters())
    data = cfg.data
    source = (
        f"{data.dataset} ({data.subset})"
        if data.source == "hf"
        else "Python's documentation topics (builtin)"
        if data.source == "builtin"
        else data.path
    )
    lines = [
        "---",
        "library_name: transformers",
        "tags: [lmablate, llama, ablation]",
        "---",
        "",
        f"# {run_dir.name if not study.is_file() else '/'.join(run_dir.parts[-2:])}",
        "",
        "A small Llama-architecture causal language model trained by lmablate"
        + (f" as part of the study in `{study.parent.name}`." if study.is_file() else "."),
        "",
        "| | |",
        "|---|---|",
        f"| architecture | LlamaForCausalLM, {cfg.model.n_layers} layers, d_model "
        f"{cfg.model.d_model}, {cfg.model.n_heads} heads ({cfg.model.kv_heads} key/value), "
        f"d_ff {cfg.model.d_ff}, {params / 1e6:.2f}M parameters |",
        f"| training data | {source}, {data.num_documents or 'all'} documents, "
        f"{int(data.val_fraction * 100)}% held out by document |",
        f"| tokens trained | {summary.get('tokens_seen', 'n/a'):,} "
        f"({summary.get('epochs', 0):.2f} epochs), weights of step {step} |"
        if summary
        else f"| weights | step {step} (run not finished) |",
        f"| final validation loss | {summary.get('final_val_loss', 'n/a')} nats/token |",
        f"| final validation bpb | {summary.get('final_val_bpb', 'n/a')} |",
        f"| run status | {summary.get('status', 'unfinished')} |",
        f"| weights dtype | {dtype} |",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "```",
        "",
        "This is a research artifact from an ablation study: a tiny model trained briefly, for "
        "comparing training recipes, not for use.",
        "",
    ]
    return "\n".join(lines)


def export_study(
    study_dir: Path, out_dir: Path, dtype: str = "float32", log: Callable[[str], None] = print
) -> list[Path]:
    """Export every complete run of a study to ``out_dir/<variant>/seed-<k>/``."""
    exported = []
    for summary_path in sorted(study_dir.glob("runs/*/seed-*/summary.json")):
        run_dir = summary_path.parent
        if json.loads(summary_path.read_text()).get("status") != "complete":
            continue
        name = "/".join(run_dir.parts[-2:])
        try:
            exported.append(export_run(run_dir, out_dir / name, dtype))
            log(f"exported {name} -> {out_dir / name}")
        except ConfigError as exc:
            log(f"skipped {name}: {exc}")
    return exported
