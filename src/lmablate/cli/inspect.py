"""``lmablate data inspect``: what a run config's data section resolves to, source by source:
documents, splits, tokens, evaluation sets, filters and the overlap check. No training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmablate.config.run import RunConfig
    from lmablate.data import PreparedData


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from lmablate.config.keys import load_run_config
    from lmablate.data import prepare

    cfg = load_run_config(args.config, args.overrides)
    log: Callable[[str], None] = (
        (lambda _: None) if args.json else (lambda message: print(message, file=sys.stderr))
    )
    data = prepare(cfg.data, progress=not args.json, log=log)
    report, rows = _inspect(cfg, data)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    sample = data.tokenizer.decode(data.train_tokens[:48].tolist()).replace("\n", " ")
    print(f"{'sample':<{width}}  {sample[:100]!r}")
    return 0


def _leakage_row(leak: dict[str, Any]) -> str:
    check = leak["overlap"]
    held = check["largest_overlap_after"]
    moved = {side: check["moved_to_training"][side] + check["dropped"][side] for side in held}
    verb = "moved to training" if check["action"] == "move" else "dropped"
    return (
        f"{leak['val_documents_in_training']} validation documents found in training (SHA-256); "
        f"{leak['duplicates_removed']} exact and {check['near_duplicates_removed']} near repeats "
        f"removed; held-out documents over {check['max_overlap']:.0%} {check['ngram']}-gram "
        f"overlap {verb}: "
        + ", ".join(f"{side} {moved[side]}" for side in held)
        + "; largest left: "
        + ", ".join(f"{side} {held[side]:.1%}" for side in held)
    )


def _inspect(cfg: RunConfig, data: PreparedData) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``data inspect``'s JSON report, and the same as the rows of its table."""
    from lmablate.data.references import references_for
    from lmablate.model.counts import count_parameters, resolve_vocab_size, training_flops_per_token

    tokenizer, meta, train = data.tokenizer, data.meta, cfg.train
    model_vocab = resolve_vocab_size(cfg.model, tokenizer.vocab_size)
    val = data.scored("val", train.seq_len, train.eval_tokens)
    references = references_for(data.train_tokens, val, tokenizer.vocab_size)
    train_budget = train.max_steps * train.batch_size * train.seq_len
    params = count_parameters(cfg.model, model_vocab)
    flops = training_flops_per_token(cfg.model, model_vocab, train.seq_len)
    report = {
        "source": meta["source"],
        "documents": meta["documents"],
        "tokens": meta["tokens"],
        "characters_per_token": round(
            meta["characters"]["total"] / sum(meta["tokens"].values()), 3
        ),
        "tokenizer": {
            "name": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "eos": tokenizer.eos_token,
            "eos_id": tokenizer.eos_id,
        },
        "model_vocab_size": model_vocab,
        "model_parameters": params,
        "training_flops_per_token": flops,
        "eval": {
            "targets": val.n_targets,
            "bytes": val.n_bytes,
            "windows": len(val.inputs),
            "documents": val.n_documents,
            "seq_len": train.seq_len,
        },
        "train_budget": {
            "tokens": train_budget,
            "epochs": round(train_budget / meta["tokens"]["train"], 2),
        },
        "replaced_characters": meta["replaced_characters"],
        "leakage": meta["leakage"],
        "reference_losses": references,
        "cache": {"path": str(data.cache_dir), "reused": data.cache_hit},
    }
    if meta.get("sources"):
        report["sources"] = meta["sources"]
        report["evaluation_sets"] = [
            {
                "name": s.name,
                "documents": s.n_documents,
                "targets": s.n_targets,
                "bytes": s.n_bytes,
                "tokens_per_byte": round(s.n_targets / s.n_bytes, 4),
            }
            for s in val.sets
        ]
    docs, tokens = meta["documents"], meta["tokens"]
    rows = [
        ("source", meta["source"]),
        (
            "documents",
            f"{docs['total']:,} (train {docs['train']:,}, validation {docs['val']:,}; "
            "split by document)",
        ),
        (
            "tokenizer",
            f"{tokenizer.name} ({tokenizer.vocab_size:,} tokens, EOS "
            f"{tokenizer.eos_token!r} = {tokenizer.eos_id})",
        ),
        ("model vocab", f"{model_vocab:,} embedding rows"),
        (
            "model size",
            f"{params['total'] / 1e6:.2f}M parameters ({params['non_embedding'] / 1e6:.2f}M "
            f"non-embedding), {flops / 1e6:.1f} MFLOPs per training token",
        ),
        (
            "tokens",
            f"train {tokens['train']:,}, validation {tokens['val']:,} "
            f"({report['characters_per_token']} characters per token)",
        ),
        (
            "eval targets",
            f"{val.n_targets:,} tokens ({val.n_bytes:,} bytes) of {val.n_documents:,} "
            f"documents, in {len(val.inputs)} windows of {train.seq_len}",
        ),
        (
            "train budget",
            f"{train.max_steps:,} steps x {train.batch_size} x {train.seq_len} = "
            f"{train_budget:,} tokens = {report['train_budget']['epochs']} epochs = "
            f"{flops * train_budget:.2e} FLOPs",
        ),
        ("leakage", _leakage_row(meta["leakage"])),
        (
            "references",
            ", ".join(
                f"{name} {references[name]['loss']:.4f} ({references[name]['bpb']:.4f} bpb)"
                for name in ("uniform", "unigram", "bigram")
            )
            + " on the eval targets (count models of the training split)",
        ),
        ("cache", f"{data.cache_dir} ({'reused' if data.cache_hit else 'written'})"),
    ]
    for name, source in (meta.get("sources") or {}).items():
        held = f"validation {source['val_documents']:,}" if source["held_out"] else "training only"
        rows.insert(
            2,
            (
                f"source {name}",
                f"weight {source['weight']:g} ({source['share']:.0%} of training tokens), "
                f"{source['train_documents']:,} training documents "
                f"({source['train_tokens']:,} tokens), {held}",
            ),
        )
    if len(val.sets) > 1 or meta.get("eval_documents"):
        for part in val.sets:
            rows.append(
                (
                    f"eval set {part.name}",
                    f"{part.n_documents:,} documents, {part.n_targets:,} targets, "
                    f"{part.n_bytes:,} bytes ({part.n_targets / part.n_bytes:.3f} tokens per byte)",
                )
            )
    filtered = meta["leakage"].get("filtered")
    if filtered:
        dropped = ", ".join(f"{n:,} {why}" for why, n in filtered["dropped"].items()) or "none"
        rows.append(("filters", f"kept {filtered['kept']:,} training documents; dropped {dropped}"))
    removed = meta["leakage"].get("training_removed_for_overlap")
    if removed:
        rows.append(
            (
                "training-only",
                f"removed {removed['exact']:,} exact and {removed['overlap']:,} overlapping "
                "copies of evaluation documents from the training-only sources",
            )
        )
    if meta["replaced_characters"]:
        rows.append(
            ("non-UTF-8", f"{meta['replaced_characters']:,} undecodable bytes replaced by U+FFFD")
        )
    return report, rows
