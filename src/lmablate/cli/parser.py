"""The argument parser: every subcommand, its arguments and their help, in the order
``lmablate --help`` lists them."""

from __future__ import annotations

import argparse

from lmablate.cli.commands import (
    cmd_config,
    cmd_eval,
    cmd_export,
    cmd_generate,
    cmd_report,
    cmd_run,
    cmd_status,
    cmd_train,
)
from lmablate.cli.inspect import cmd_data_inspect
from lmablate.version import __version__

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
        help="write a run as a Hugging Face model folder (Llama, Qwen3, GPT-NeoX, ...)",
        description="Write RUN_DIR's newest valid weights, tokenizer, config and a model card to "
        "OUT_DIR, loadable with transformers' AutoModelForCausalLM and AutoTokenizer. With "
        "--all, export every complete run of a study (default OUT_DIR: STUDY_DIR/export).",
    )
    export.add_argument("source", metavar="RUN_DIR|STUDY_DIR")
    export.add_argument("out_dir", nargs="?", metavar="OUT_DIR")
    export.add_argument("--all", action="store_true", help="export every complete run of a study")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files already in OUT_DIR (never a run or study directory)",
    )
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
