"""Hugging Face export: a run directory -> a folder ``transformers`` loads with no custom code.

The model's combination of components decides the architecture (``TARGETS``, first match):

- ``LlamaForCausalLM``: RMSNorm before each branch, a gated MLP (swiglu, geglu), full rotary
  positions; biases allowed (``attention_bias``, ``mlp_bias``). The default model.
- ``MinistralForCausalLM``: Llama with a sliding window on every layer or on all but every
  ``global_every``-th (``layer_types``), no biases.
- ``Qwen3ForCausalLM``: Llama with QK-norm (per-head RMSNorm of q and k), windowed or not, no
  biases.
- ``GPTNeoXForCausalLM``: LayerNorm before each branch, a plain MLP (gelu, relu2, silu),
  whole or partial rotary positions, sequential or parallel blocks, multi-head attention
  (no grouped keys). Its LayerNorms and MLP always have biases: a model without them exports
  them as zeros, which computes the same function.
- ``Gemma2ForCausalLM``: sandwich norms (RMSNorm before and after each branch) and a gated
  MLP, with or without soft-capped logits and windows, no biases.

The embedding and head are written at the tokenizer's size: the padding rows past it are no
tokens. A combination none of them computes (post norms, NoPE or learned positions,
soft-capped logits with pre norms, a registered component, ...) is refused before anything is
written, with the fields that stand in the way of each architecture. Each architecture's
weight names are one explicit table (``{i}`` stands for the block index); GPT-NeoX's fused
``query_key_value`` interleaves q, k and v per head, which ``_neox_qkv`` spells out. A
``parametrization: mup`` model exports to the same architectures with its multipliers folded
into its weights (``fold_mup``), so the exported model computes the same logits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lmablate.analysis.rundata import read_run_file
from lmablate.config.keys import read_run_config
from lmablate.errors import ConfigError, LmablateError
from lmablate.export.targets import (  # noqa: F401  (the export's public names)
    DTYPES,
    HF_NAMES,
    NEOX_NAMES,
    QWEN3_NAMES,
    TARGETS,
    Target,
    check_exportable,
    export_target,
    fold_mup,
    hf_config,
    llama_config,
    name_pairs,
    to_hf_state_dict,
)
from lmablate.locks import LEGACY, check_claim, claim, folder_kind
from lmablate.training.checkpoint import load_run

STUDY_OWN = ("runs", "report")  # the folders of a study directory that lmablate writes


def _is_run_dir(path: Path) -> bool:
    """What lmablate train writes first: the run's config and its metrics log."""
    return (path / "config.json").is_file() and (path / "metrics.jsonl").is_file()


def check_export_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder that is a file, a run or study directory, lies inside a run
    directory or a study's own ``runs/``/``report/``, or holds files an export did not write;
    a folder an earlier export wrote (its ``.lmablate`` marker says ``export``) is replaced
    only with ``overwrite``. Nothing is written before every check has passed."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LmablateError(f"export output {out_dir} is a file; give a folder")
    for folder in (out_dir, *out_dir.resolve().parents):
        if _is_run_dir(folder):
            raise LmablateError(
                f"export output {out_dir} is {'' if folder == out_dir else 'inside '}the run "
                f"directory {folder}; exporting there would replace the run's own config.json. "
                "Give a folder outside it"
            )
    resolved = out_dir.resolve()
    for folder in resolved.parents:
        part = resolved.relative_to(folder).parts[0]
        if (folder / "study.yaml").is_file() and part in STUDY_OWN:
            raise LmablateError(
                f"export output {out_dir} is inside the {part}/ folder of the study {folder}, "
                f"which lmablate writes itself; give a folder outside it (export --all writes "
                f"to {folder / 'export'} by default)"
            )
    if (out_dir / "study.yaml").exists():
        raise LmablateError(
            f"export output {out_dir} is a study directory; give a folder outside it (or "
            "leave OUT_DIR out with --all: STUDY_DIR/export)"
        )
    check_claim(out_dir, "export")
    if folder_kind(out_dir) == "export" and not overwrite:
        raise LmablateError(
            f"export output {out_dir} already holds an earlier export; pass --overwrite to "
            "replace it, or give a new or empty folder"
        )


EVAL_FOLDER = "hf"  # RUN_DIR/hf: the export lmablate eval makes (and remakes) for itself


def export_run(
    run_dir: str | Path, out_dir: str | Path, dtype: str = "float32", overwrite: bool = False
) -> Path:
    """Write ``out_dir`` so that ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``
    load the run's newest valid weights and tokenizer with no custom code. ``out_dir`` must
    be new or empty, or (with ``overwrite``) an earlier export's folder, and never a run or
    study directory; the one folder inside a run it writes is the run's own ``hf/`` for
    ``lmablate eval``."""
    from transformers import GenerationConfig

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if dtype not in DTYPES:
        raise LmablateError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    own = out_dir.resolve() == (run_dir / EVAL_FOLDER).resolve()
    if not own:
        check_export_target(out_dir, overwrite)
    cfg = read_run_config(run_dir)
    target = export_target(cfg.model)
    model, tokenizer, _, step = load_run(run_dir)
    summary = read_run_file(run_dir, "summary.json")
    # the rows past the tokenizer's (padding to a multiple of 64) are no tokens: left out, so
    # that nothing loading the export can sample them
    vocab = tokenizer.vocab_size
    fields = target.config(cfg.model, vocab, cfg.train.seq_len, tokenizer.eos_id)
    config = installed_config(target.architecture, dict(fields), dtype)  # before any write
    if own:
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        claim(out_dir, "export")
        for name in LEGACY["export"]:  # an earlier export's files: none outlives this one
            (out_dir / name).unlink(missing_ok=True)
    state = to_hf_state_dict(model.state_dict(), cfg.model, DTYPES[dtype])
    for name in (target.names["embed.weight"], "lm_head.weight", "embed_out.weight"):
        if name in state:
            state[name] = state[name][:vocab]
    if fields["tie_word_embeddings"]:  # stored once; transformers ties it back on load
        state.pop("embed_out.weight" if "embed_out.weight" in state else "lm_head.weight")
    state = {name: t.detach().to(DTYPES[dtype]).contiguous() for name, t in state.items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(out_dir))
    GenerationConfig(
        bos_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.eos_id
    ).save_pretrained(str(out_dir))
    tokenizer.save(out_dir)
    zeros = sum(  # GPT-NeoX's always-present biases, for a model that has none
        t.numel() for n, t in state.items() if n.endswith(".bias") and not cfg.model.bias
    )
    card = model_card(run_dir, cfg, summary, step, model, dtype, target.architecture, zeros, vocab)
    (out_dir / "README.md").write_text(card)
    return out_dir


def installed_config(architecture: str, fields: dict[str, Any], dtype: str) -> Any:
    """The architecture's config as the installed transformers builds it, refused (naming the
    version to install) when that version lacks the architecture or would drop a field that
    changes what it computes (an older one ignores ``layer_types``)."""
    import transformers
    from transformers import AutoConfig

    model_type = fields.pop("model_type")
    needs = f"{architecture} export needs a newer transformers than {transformers.__version__}"
    try:
        config = AutoConfig.for_model(model_type, **fields, torch_dtype=dtype)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{needs} (pip install -U transformers): {exc}") from None
    for name in ("layer_types", "sliding_window", "final_logit_softcapping"):
        if name in fields and getattr(config, name, None) != fields[name]:
            raise ConfigError(
                f"{needs}: this one does not keep {name} ({fields[name]!r}), so the exported "
                "model would compute something else (pip install -U transformers)"
            )
    return config


def model_card(
    run_dir: Path,
    cfg: Any,
    summary: dict[str, Any] | None,
    step: int,
    model: torch.nn.Module,
    dtype: str,
    architecture: str = "LlamaForCausalLM",
    zeros: int = 0,
    vocab: int | None = None,
) -> str:
    """``zeros``: the bias values the weights file holds that the model does not have
    (GPT-NeoX's layout has biases a bias-free model exports as zeros); ``vocab``: the
    tokenizer's size, at which the embedding and head are exported."""
    summary = summary or {}
    study = run_dir.parent.parent.parent / "study.yaml"
    params = sum(p.numel() for p in model.parameters())
    rows = model.vocab_size - vocab if vocab else 0
    vocabulary = (
        [f"| vocabulary | {vocab:,} tokens"
         + (f" (the embedding's {rows} padding rows are left out of the export)" if rows else "")
         + " |"]
        if vocab
        else []
    )  # fmt: skip
    padding = (
        f" (the weights file holds {zeros:,} more values: the biases {architecture}'s layout "
        "always has, exported as zeros because this model has none; they compute nothing)"
        if zeros > 0
        else ""
    )
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
        f"tags: [lmablate, {architecture.removesuffix('ForCausalLM').lower()}, ablation]",
        "---",
        "",
        f"# {run_dir.name if not study.is_file() else '/'.join(run_dir.parts[-2:])}",
        "",
        f"A small causal language model ({architecture}) trained by lmablate"
        + (f" as part of the study in `{study.parent.name}`." if study.is_file() else "."),
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {architecture}, {cfg.model.n_layers} layers, d_model "
        f"{cfg.model.d_model}, {cfg.model.n_heads} heads ({cfg.model.kv_heads} key/value), "
        f"d_ff {cfg.model.d_ff}, {params / 1e6:.2f}M parameters{padding} |",
        *vocabulary,
        f"| training data | {source}, {data.num_documents or 'all'} documents, "
        f"{int(data.val_fraction * 100)}% held out by document |",
        f"| tokens trained | {summary['tokens_seen']:,} "
        f"({summary.get('epochs') or 0:.2f} epochs), weights of step {step} |"
        if summary and summary.get("tokens_seen") is not None
        else f"| weights | step {step} (run {(summary or {}).get('status', 'not finished')}) |",
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
    study_dir: Path,
    out_dir: Path,
    dtype: str = "float32",
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> list[Path]:
    """Export every complete run of a study to ``out_dir/<variant>/seed-<k>/``."""
    exported = []
    for summary_path in sorted(study_dir.glob("runs/*/seed-*/summary.json")):
        run_dir = summary_path.parent
        if (read_run_file(run_dir, "summary.json") or {}).get("status") != "complete":
            continue
        name = "/".join(run_dir.parts[-2:])
        try:
            exported.append(export_run(run_dir, out_dir / name, dtype, overwrite))
            log(f"exported {name} -> {out_dir / name}")
        except ConfigError as exc:
            log(f"skipped {name}: {exc}")
    return exported
