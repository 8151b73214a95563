"""One function per subcommand: read the arguments, call the API, print the outcome.

Imports are inside each command, so ``lmablate --help`` and the commands that need no torch
(``config``, ``report``, ``status``) start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from lmablate.errors import LmablateError

if TYPE_CHECKING:
    pass


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


def cmd_train(args: argparse.Namespace) -> int:
    from lmablate.config.keys import load_run_config
    from lmablate.training.distributed import World
    from lmablate.training.loop import train
    from lmablate.training.summary import summary_lines

    cfg = load_run_config(args.config, args.overrides)
    if args.stop_at is not None and args.stop_at < 1:
        raise LmablateError(
            f"--stop-at {args.stop_at}: give the optimizer step to stop after, 1 or more"
        )
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
    print(summary_lines(summary, result.run_dir))
    return 0


def _why_no_efficiency_finding(findings: dict) -> str:
    margin = findings.get("efficiency_margin") or {}
    verdict = margin.get("verdict")
    if verdict == "untested":
        seeds = findings.get("seeds_per_configuration") or 0
        return "one seed: the margin is untested" if seeds < 2 else "the margin is untested"
    if verdict == "within uncertainty":
        return "not beyond the seeds' uncertainty"
    if verdict == "beyond uncertainty":
        return "read mid-schedule"
    return "nothing to compare"


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.config.study import load_study

    # the study is read and checked before torch is imported: a mistake is refused in a moment
    study = load_study(args.study, args.overrides, seeds=args.seeds)
    from lmablate.study.estimate import dry_run, print_dry_run
    from lmablate.study.runner import check_launch, run_study

    directory = Path(args.out or f"results/{study.config.name}")
    log = _logger(args.quiet)
    if args.dry_run:
        check_launch(study, args.only, args.parallel, args.nproc_per_node, args.ray)
        rows = dry_run(study, only=args.only, log=log)
        print_dry_run(rows)
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
    by_bytes = findings.get("metric") == "val_bpb"  # tokenizers differ
    efficiency = findings["most_efficient_config"] or (
        f"no finding (fewest FLOPs: {findings.get('lowest_flops_to_target_config')}, "
        f"{_why_no_efficiency_finding(findings)})"
    )
    measure = "bpb" if by_bytes else "loss"
    print(
        f"best (lowest validation {measure}): {findings['best_performing_config']}; most "
        f"efficient (FLOPs to the ranking target {measure}): {efficiency}"
    )
    print(f"report: {outcome.report / 'research_report.md'}")
    if outcome.statuses and len(failed) == len(outcome.statuses):
        print(
            "error: no run completed; the report lists why under *Runs that did not complete*",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lmablate.report.package import build_report

    out = build_report(args.directory)
    print(f"report: {out / 'research_report.md'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.study.status import print_status, study_status

    rows, problem = study_status(Path(args.directory))
    print_status(rows)
    if problem is not None:  # the runs above were found without it
        raise LmablateError(problem)
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
        if path.is_dir():
            raise LmablateError(f"--prompts-file {path} is a directory; give a text file")
        if not path.is_file():
            raise LmablateError(f"--prompts-file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise LmablateError(
                f"--prompts-file {path} is not UTF-8 text (byte {exc.start} is not valid UTF-8)"
            ) from None
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise LmablateError(f"--prompts-file {path} holds no prompt (one per line)")
        prompts += lines
    prompts = prompts or list(REFERENCE_PROMPTS)
    if any(not p.strip() for p in prompts):
        raise LmablateError("a prompt is empty; give text to continue")
    device = resolve_device(args.device, what="--device")
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
        exported = export_study(
            source, out, args.dtype, log=_logger(False), overwrite=args.overwrite
        )
        print(f"exported {len(exported)} run(s) to {out}")
        return 0
    if args.out_dir is None:
        raise LmablateError("lmablate export RUN_DIR OUT_DIR: give the output folder")
    if not source.is_dir():
        raise LmablateError(f"run directory {source} does not exist")
    out = export_run(source, Path(args.out_dir), args.dtype, overwrite=args.overwrite)
    print(
        f"exported {source} to {out}: load it with "
        f"AutoModelForCausalLM.from_pretrained({str(out)!r})"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmablate.downstream import evaluate_run
    from lmablate.hardware import check_device_spec

    if not Path(args.run_dir).is_dir():
        raise LmablateError(f"run directory {args.run_dir} does not exist")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise LmablateError("--tasks names no task; give comma-separated task names")
    if args.limit is not None and args.limit < 1:
        raise LmablateError(f"--limit {args.limit}: give at least 1 example per task")
    if args.batch_size < 1:
        raise LmablateError(f"--batch-size {args.batch_size}: give at least 1")
    check_device_spec(args.device, "--device")
    if args.include_path is not None and not Path(args.include_path).is_dir():
        raise LmablateError(f"--include-path {args.include_path} is not a folder of task YAMLs")
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
