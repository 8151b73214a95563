"""The ``lmablate`` command line: subcommands mapped to functions, nothing else.

A user mistake (``LmablateError``) prints one clear message and exits with code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from lmablate import __version__
from lmablate.errors import LmablateError

EXAMPLES = """\
examples:
  lmablate run studies/quickstart.yaml             the quick-start study and its report
  lmablate run studies/seed.yaml --dry-run         what a study would run, and how long
  lmablate run studies/seed.yaml --parallel 6      six runs at once (one per GPU)
  torchrun --nproc-per-node 4 -m lmablate train configs/builtin.yaml --out runs/ddp
                                                   one run on four GPUs
  lmablate train configs/builtin.yaml --out runs/builtin
                                                   train one run (run again to resume)
  lmablate data inspect configs/builtin.yaml       corpus, split, tokens and cache of a config
  lmablate config configs/builtin.yaml --set learning_rate=1e-3
                                                   the resolved config, every default filled in
  lmablate config --reference                      every config field, its default and meaning
"""


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted or flat key, YAML-typed value); repeatable, "
        "e.g. --set train.learning_rate=1e-3 --set d_model=256",
    )


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from lmablate.config.keys import field_reference, load_run_config

    if args.reference:
        print(field_reference())
        return 0
    if args.config is None:
        raise LmablateError("lmablate config: give a CONFIG file, or --reference")
    cfg = load_run_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from lmablate.config.keys import load_run_config
    from lmablate.data import prepare, validation_set
    from lmablate.model.counts import count_parameters, resolve_vocab_size, training_flops_per_token

    cfg = load_run_config(args.config, args.overrides)
    log: Callable[[str], None] = (
        (lambda _: None) if args.json else (lambda message: print(message, file=sys.stderr))
    )
    data = prepare(cfg.data, progress=not args.json, log=log)
    tokenizer, meta, train = data.tokenizer, data.meta, cfg.train
    model_vocab = resolve_vocab_size(cfg.model, tokenizer.vocab_size)
    val = validation_set(data.val_tokens, train.seq_len, train.eval_tokens, tokenizer.decode)
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
            "seq_len": train.seq_len,
        },
        "train_budget": {
            "tokens": train_budget,
            "epochs": round(train_budget / meta["tokens"]["train"], 2),
        },
        "replaced_characters": meta["replaced_characters"],
        "leakage": meta["leakage"],
        "cache": {"path": str(data.cache_dir), "reused": data.cache_hit},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
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
            f"{val.n_targets:,} tokens ({val.n_bytes:,} bytes) in {len(val.inputs)} "
            f"windows of {train.seq_len}",
        ),
        (
            "train budget",
            f"{train.max_steps:,} steps x {train.batch_size} x {train.seq_len} = "
            f"{train_budget:,} tokens = {report['train_budget']['epochs']} epochs = "
            f"{flops * train_budget:.2e} FLOPs",
        ),
        (
            "leakage",
            f"{meta['leakage']['val_documents_in_training']} validation documents found in "
            f"training (SHA-256 per document); {meta['leakage']['duplicates_removed']} repeated "
            "documents removed",
        ),
        ("cache", f"{data.cache_dir} ({'reused' if data.cache_hit else 'written'})"),
    ]
    if meta["replaced_characters"]:
        rows.append(
            ("non-UTF-8", f"{meta['replaced_characters']:,} undecodable bytes replaced by U+FFFD")
        )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    sample = tokenizer.decode(data.train_tokens[:48].tolist()).replace("\n", " ")
    print(f"{'sample':<{width}}  {sample[:100]!r}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lmablate.config.keys import load_run_config
    from lmablate.training.distributed import World
    from lmablate.training.loop import train

    cfg = load_run_config(args.config, args.overrides)
    log = _logger(args.quiet)
    result = train(cfg, args.out, progress=not args.quiet, stop_at=args.stop_at, log=log)
    if not World.from_environment().is_main:  # under torchrun, rank 0 reports for the run
        return {"interrupted": 130, "diverged": 1}.get(result.status, 0)
    resume = f"lmablate train {args.config} --out {args.out}" + "".join(
        f" --set {o}" for o in args.overrides
    )
    if result.status == "interrupted":
        print(
            f"interrupted at step {result.step}; checkpoint saved. Resume with:\n  {resume}",
            file=sys.stderr,
        )
        return 130
    if result.status == "stopped":
        print(
            f"stopped at step {result.step} as asked; continue with:\n  {resume}", file=sys.stderr
        )
        return 0
    summary = result.summary or {}
    if result.status == "diverged":
        print(
            f"run diverged at step {summary.get('diverged_at_step')}: {summary.get('message')}"
            f"\nsummary: {result.run_dir / 'summary.json'}"
        )
        return 1
    print(_summary_lines(summary, result.run_dir))
    return 0


def _summary_lines(summary: dict, run_dir) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    mfu = summary.get("mfu")
    rows = [
        ("status", f"{summary['status']} at step {summary['step']:,}"),
        (
            "val loss",
            f"{fmt(summary['final_val_loss'], '.4f')} (best "
            f"{fmt(summary['best_val_loss'], '.4f')} at step {summary['best_val_step']})",
        ),
        ("val bpb", fmt(summary["final_val_bpb"], ".4f")),
        (
            "val accuracy",
            f"{fmt(summary['final_val_accuracy'], '.3f')} (top-5 "
            f"{fmt(summary['final_val_top5_accuracy'], '.3f')})",
        ),
        (
            "train loss",
            f"{fmt(summary['final_train_loss'], '.4f')} (mean of the last 10% of logged steps)",
        ),
        ("tokens", f"{summary['tokens_seen']:,} ({summary['epochs']:.2f} epochs)"),
        (
            "throughput",
            f"{fmt(summary['tokens_per_s'], ',.0f')} tokens/s, "
            f"{fmt((summary['achieved_flops_per_s'] or 0) / 1e9, ',.1f')} GFLOP/s, "
            f"MFU {'n/a (peak unknown)' if mfu is None else format(mfu, '.1%')}",
        ),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
        ("run dir", str(run_dir)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.config.study import load_study
    from lmablate.study.runner import dry_run, run_study

    study = load_study(args.study, args.overrides, seeds=args.seeds)
    directory = Path(args.out or f"results/{study.config.name}")
    log = _logger(args.quiet)
    if args.dry_run:
        rows = dry_run(study, only=args.only, log=log)
        _print_dry_run(rows)
        return 0
    outcome = run_study(
        study,
        directory,
        only=args.only,
        force=args.force,
        progress=not args.quiet,
        log=log,
        parallel=args.parallel,
        nproc_per_node=args.nproc_per_node,
        ray=args.ray,
    )
    command = (
        " ".join(["lmablate run", *sys.argv[2:]])
        if sys.argv[1:2] == ["run"]
        else f"lmablate run {args.study}"
    )
    if outcome.interrupted:
        print(
            f"interrupted; finished runs and checkpoints are kept. Resume with:\n  {command}",
            file=sys.stderr,
        )
        return 130
    failed = [path for path, status in outcome.statuses.items() if status != "complete"]
    data = json.loads((outcome.report / "research_data.json").read_text())
    findings = data["results_summary"]["key_findings"]
    print(
        f"study {study.config.name}: {len(outcome.statuses) - len(failed)} of "
        f"{len(outcome.statuses)} runs complete"
        + (f"; not complete: {', '.join(failed)}" if failed else "")
    )
    print(
        f"best (lowest validation loss): {findings['best_performing_config']}; "
        f"most efficient (FLOPs to target loss): {findings['most_efficient_config']}"
    )
    print(f"report: {outcome.report / 'research_report.md'}")
    return 0


def _print_dry_run(rows: list[dict]) -> None:
    print(
        f"{'variant':<16} {'seed':>4} {'params':>9} {'tokens':>12} {'FLOPs':>9} "
        f"{'s/step':>7} {'est. time':>9}  changes from baseline"
    )
    for row in rows:
        changes = ", ".join(f"{k}={v}" for k, v in row["changes"].items()) or "-"
        print(
            f"{row['variant']:<16} {row['seed']:>4} {row['params'] / 1e6:>8.2f}M "
            f"{row['tokens']:>12,} {row['flops']:>9.2e} {row['step_time_s']:>7.3f} "
            f"{row['estimated_s'] / 60:>8.1f}m  {changes}"
        )
    total = sum(r["estimated_s"] for r in rows)
    print(
        f"{len(rows)} runs, estimated {total / 60:.1f} minutes on this machine (from timed "
        "steps of each shape; evaluation included, data preparation not)"
    )


def cmd_report(args: argparse.Namespace) -> int:
    from lmablate.report.package import build_report

    out = build_report(args.directory)
    print(f"report: {out / 'research_report.md'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.study.runner import print_status, study_status

    print_status(study_status(Path(args.directory)))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.config.study import REFERENCE_PROMPTS
    from lmablate.generation import Sampling, generate
    from lmablate.hardware import resolve_device, resolve_precision
    from lmablate.training.checkpoint import load_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise LmablateError(f"run directory {run_dir} does not exist")
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise LmablateError(f"--prompts-file {path} does not exist")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = prompts or list(REFERENCE_PROMPTS)
    if any(not p.strip() for p in prompts):
        raise LmablateError("a prompt is empty; give text to continue")
    device = resolve_device(args.device)
    model, tokenizer, cfg, step = load_run(run_dir, str(device))
    settings = Sampling(
        max_new_tokens=args.max_new_tokens,
        temperature=0.0 if args.greedy else args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    samples = generate(
        model,
        tokenizer,
        prompts,
        settings,
        context=cfg.train.seq_len,
        precision=resolve_precision(cfg.train.precision, device),
        use_cache=not args.no_cache,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(run_dir),
                    "step": step,
                    "settings": settings.__dict__,
                    "samples": samples,
                },
                indent=2,
            )
        )
        return 0
    for i, sample in enumerate(samples, 1):
        print(f"── prompt {i} " + "─" * 40)
        print(sample["prompt"])
        print(
            f"── continuation ({sample['new_tokens']} tokens, stopped at {sample['stopped']}) "
            + "─" * 12
        )
        print(sample["generated_only"].strip("\n"))
        print()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.export import export_run, export_study

    source = Path(args.source)
    if args.all:
        if not (source / "study.yaml").is_file():
            raise LmablateError(f"{source} is not a study directory (no study.yaml)")
        out = Path(args.out_dir) if args.out_dir else source / "export"
        exported = export_study(source, out, args.dtype, log=_logger(False))
        print(f"exported {len(exported)} run(s) to {out}")
        return 0
    if args.out_dir is None:
        raise LmablateError("lmablate export RUN_DIR OUT_DIR: give the output folder")
    if not source.is_dir():
        raise LmablateError(f"run directory {source} does not exist")
    out = export_run(source, Path(args.out_dir), args.dtype)
    print(
        f"exported {source} to {out}: load it with "
        f"AutoModelForCausalLM.from_pretrained({str(out)!r})"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.downstream import evaluate_run

    if not Path(args.run_dir).is_dir():
        raise LmablateError(f"run directory {args.run_dir} does not exist")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    record = evaluate_run(
        args.run_dir,
        tasks,
        limit=args.limit,
        include_path=args.include_path,
        batch_size=args.batch_size,
        device=args.device,
    )
    for task, metrics in record["results"].items():
        shown = ", ".join(
            f"{k.split(',')[0]} {v:.4f}"
            for k, v in metrics.items()
            if isinstance(v, float) and "stderr" not in k
        )
        print(f"{task}: {shown}")
    print(f"results: {Path(args.run_dir) / 'eval' / 'lm_eval.json'}")
    return 0


def _logger(quiet: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    return log


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmablate",
        description="Ablation studies of small autoregressive transformer language models, "
        "turned into a research package.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lmablate {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    config = commands.add_parser(
        "config",
        help="validate a config and print it resolved, or list every field",
        description="Validate a run config and print it with every default filled in.",
    )
    config.add_argument("config", nargs="?", metavar="CONFIG", help="run config YAML file")
    config.add_argument(
        "--reference",
        action="store_true",
        help="print every config field with its default and meaning (Markdown)",
    )
    _add_overrides(config)
    config.set_defaults(func=cmd_config)

    run = commands.add_parser(
        "run",
        help="run a study (variants x seeds) and build its research package",
        description="Expand a study into runs under DIR/runs/<variant>/seed-<k>/, train each "
        "(skipping finished runs, resuming partial ones), generate text samples, and build "
        "DIR/report/. Run it again to continue an interrupted study.",
    )
    run.add_argument("study", metavar="STUDY", help="study YAML file")
    run.add_argument("--out", metavar="DIR", help="study directory (default: results/<name>)")
    run.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants")
    run.add_argument("--seeds", type=int, metavar="N", help="replicate with seeds 0..N-1")
    run.add_argument(
        "--force",
        action="store_true",
        help="retrain from scratch runs whose config no longer matches the study",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the expanded runs, their size, cost and an estimated time "
        "from a few timed steps of each shape, then exit",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    run.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="train up to K runs at once on this machine, each in its own process: one per "
        "GPU when there are GPUs, else each with its share of the CPU cores",
    )
    run.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="train each run on N processes (N GPUs) with torchrun and DistributedDataParallel",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="train each run as a Ray task on the cluster at ADDRESS (without one: the cluster "
        "RAY_ADDRESS names, else a Ray instance started here); --out must be a path every "
        "node shares. Needs pip install 'lmablate[ray]'",
    )
    _add_overrides(run)
    run.set_defaults(func=cmd_run)

    report = commands.add_parser(
        "report",
        help="rebuild a study's research package from its run directories",
        description="Rebuild DIR/report/ (JSON, CSV, figures, Markdown report, samples, zip) "
        "from the run directories alone; no training or model work.",
    )
    report.add_argument("directory", metavar="DIR", help="study directory")
    report.set_defaults(func=cmd_report)

    status = commands.add_parser("status", help="list a study's runs and their state")
    status.add_argument("directory", metavar="DIR", help="study directory")
    status.set_defaults(func=cmd_status)

    gen = commands.add_parser(
        "generate",
        help="continue prompts with a trained run's model",
        description="Sample continuations from a run's newest valid checkpoint (KV-cached, "
        "batched). Without --prompt or --prompts-file, continues the five reference prompts.",
    )
    gen.add_argument("run_dir", metavar="RUN_DIR", help="run directory (from train or run)")
    gen.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt; repeatable")
    gen.add_argument("--prompts-file", metavar="FILE", help="one prompt per line")
    gen.add_argument("--max-new-tokens", type=int, default=40, metavar="N")
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, metavar="K", help="sample among the K likeliest")
    gen.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling mass")
    gen.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    gen.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    gen.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the whole sequence every step (for comparison)",
    )
    gen.add_argument("--json", action="store_true", help="print JSON")
    gen.set_defaults(func=cmd_generate)

    export = commands.add_parser(
        "export",
        help="write a run as a Hugging Face model folder (LlamaForCausalLM)",
        description="Write RUN_DIR's newest valid weights, tokenizer, config and a model card to "
        "OUT_DIR, loadable with transformers' AutoModelForCausalLM and AutoTokenizer. With "
        "--all, export every complete run of a study (default OUT_DIR: STUDY_DIR/export).",
    )
    export.add_argument("source", metavar="RUN_DIR|STUDY_DIR")
    export.add_argument("out_dir", nargs="?", metavar="OUT_DIR")
    export.add_argument("--all", action="store_true", help="export every complete run of a study")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser(
        "eval",
        help="run lm-evaluation-harness tasks on a run (optional extra)",
        description="Export RUN_DIR to RUN_DIR/hf and run lm-evaluation-harness tasks on it; "
        "results go to RUN_DIR/eval/lm_eval.json and into the study report. Needs "
        "pip install 'lmablate[eval]'.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--tasks", required=True, help="comma-separated task names")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N examples per task")
    evaluate.add_argument("--include-path", metavar="DIR", help="folder of local task YAML files")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(func=cmd_eval)

    train = commands.add_parser(
        "train",
        help="train one run: evaluate, checkpoint, resume",
        description="Train one run config into RUN_DIR (config.json, metrics.jsonl, "
        "checkpoint/, summary.json). Run it again on the same RUN_DIR to resume from the last "
        "checkpoint; a finished run is left as it is. Ctrl-C saves a checkpoint and exits.",
    )
    train.add_argument("config", metavar="CONFIG", help="run config YAML file")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    train.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    train.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="checkpoint and stop after STEP optimizer steps (e.g. to fit a "
        "time-limited job); run again to continue",
    )
    _add_overrides(train)
    train.set_defaults(func=cmd_train)

    data = commands.add_parser("data", help="prepare and inspect the corpus of a config")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND", required=True)
    inspect = data_commands.add_parser(
        "inspect",
        help="documents, train/validation split, tokens and cache of a config",
        description="Load (or reuse) the corpus and tokenizer a config names, split it by "
        "document, tokenize it into the cache, and print what a run would train and evaluate on.",
    )
    inspect.add_argument("config", metavar="CONFIG", help="run config YAML file")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_overrides(inspect)
    inspect.set_defaults(func=cmd_data_inspect)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's stop) ends cleanly, like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.func(args)
    except LmablateError as exc:
        rank = os.environ.get("RANK", "0")  # under torchrun every process may say it
        print(f"error{'' if rank == '0' else f' (rank {rank})'}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
