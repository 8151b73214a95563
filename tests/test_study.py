"""Studies end to end: expansion, the runner, the research package, kills and resumes."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from helpers import run_cli, write_yaml

from lmablate.config.study import load_study
from lmablate.errors import ConfigError, LmablateError
from lmablate.study.runner import run_study

REFERENCE = Path(__file__).parents[1].parent / "shared" / "reference"
REFERENCE_KEYS = [
    "metadata",
    "experimental_setup",
    "results_summary",
    "detailed_metrics",
    "text_samples",
    "statistical_analysis",
    "visualizations",
]
REFERENCE_COLUMNS = [
    "configuration",
    "train_loss",
    "eval_loss",
    "accuracy",
    "perplexity",
    "avg_confidence",
    "top5_accuracy",
    "convergence_total_improvement",
    "convergence_early_phase_loss",
    "convergence_late_phase_loss",
    "convergence_converged",
    "efficiency_avg_step_time",
    "efficiency_steps_per_second",
    "efficiency_step_time_std",
]
TIMING = {"step_time", "tokens_per_s", "elapsed"}


def study_file(
    tmp_path: Path,
    corpus: Path,
    tokenizer: Path,
    extra: str = "",
    variants: str | None = None,
    max_steps: int = 12,
) -> Path:
    variants = textwrap.dedent(
        variants
        or """\
        high_lr: {description: Higher learning rate, learning_rate: 1.0e-2}
        short_seq: {description: Shorter sequences, seq_len: 16, batch_size: 8}
        small_model: {description: Smaller model, d_model: 16, n_heads: 2, n_layers: 1}
        """
    )
    head = textwrap.dedent(f"""\
        name: tiny
        description: A tiny study for tests
        seeds: [0]
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer}, num_documents: null}}
        baseline:
          description: Tiny baseline
          model: {{d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 32, learning_rate: 3.0e-3, warmup_steps: 2,
                  max_steps: {max_steps}, eval_every: 4, eval_tokens: 512, log_every: 2,
                  checkpoint_every: 4}}
        samples: {{prompts: [The function, A class], max_new_tokens: 6}}
        variants:
        """)
    path = tmp_path / "study.yaml"
    path.write_text(head + textwrap.indent(variants, "  ") + extra)
    return path


def trajectories(directory: Path) -> dict[str, list[dict]]:
    out = {}
    for metrics in sorted(directory.glob("runs/*/seed-*/metrics.jsonl")):
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        out[str(metrics.parent.relative_to(directory))] = [
            {k: v for k, v in r.items() if k not in TIMING} for r in lines
        ]
    return out


# --------------------------------------------------------------------------------- expansion


def test_expansion_pairs_replicates(tmp_path, corpus, tokenizer_dir):
    study = load_study(study_file(tmp_path, corpus, tokenizer_dir), seeds=2)
    assert study.variants == ["baseline", "high_lr", "short_seq", "small_model"]
    assert [(r.variant, r.seed) for r in study.runs][:3] == [
        ("baseline", 0),
        ("baseline", 1),
        ("high_lr", 0),
    ]
    for run in study.runs:  # replicate k: seed k and data order k for every variant
        assert run.config.train.seed == run.config.train.data_seed == run.seed
        assert run.config.data == study.data
    high = next(r for r in study.runs if r.variant == "high_lr")
    assert high.changes == {"learning_rate": 1e-2} and high.config.model.d_model == 32
    assert next(r for r in study.runs if r.variant == "small_model").changes == {
        "d_model": 16,
        "n_layers": 1,
    }  # n_heads equals the baseline's, so it is no change
    resolved = study.resolved()
    assert resolved["variants"]["short_seq"] == {
        "description": "Shorter sequences",
        "seq_len": 16,
        "batch_size": 8,
    }
    assert "seed" not in resolved["baseline"]["train"]


def test_set_routes_study_baseline_variant_and_every_run(tmp_path, corpus, tokenizer_dir):
    path = study_file(tmp_path, corpus, tokenizer_dir)
    study = load_study(
        path,
        [
            "max_steps=20",
            "variants.high_lr.learning_rate=5e-3",
            "baseline.d_ff=48",
            "data.val_fraction=0.2",
            "seeds=[3]",
            "samples.max_new_tokens=3",
        ],
    )
    by_name = {r.variant: r.config for r in study.runs}
    assert all(c.train.max_steps == 20 for c in by_name.values())
    assert by_name["high_lr"].train.learning_rate == 5e-3
    assert by_name["short_seq"].model.d_ff == 48 and by_name["baseline"].model.d_ff == 48
    assert study.data.val_fraction == 0.2 and study.config.seeds == [3]
    assert study.config.samples.max_new_tokens == 3
    with pytest.raises(ConfigError, match="no variant 'high_l'; did you mean 'high_lr'"):
        load_study(path, ["variants.high_l.learning_rate=1"])


@pytest.mark.parametrize(
    ("variants", "extra", "message"),
    [
        ("baseline: {learning_rate: 1.0e-3}\n", "", "variants.baseline: the baseline is its own"),
        ("bad: {data: {val_fraction: 0.2}}\n", "", "belong to the study's data section"),
        ("bad: {seed: 3}\n", "", "set per replicate by the study's seeds"),
        ("bad: {eval_tokens: 64}\n", "", "it belongs to the baseline so every run scores"),
        ("bad: {learning_rat: 1.0e-3}\n", "", "did you mean 'learning_rate'"),
        ("bad: {n_heads: 5}\n", "", "variants.bad: model.d_model (32) must be divisible"),
        ("a: {seq_len: 8}\na: {seq_len: 16}\n", "", "duplicate key 'a'"),
        ("ok: {seq_len: 16}\n", "seedz: [1]\n", "seedz: unknown study key; did you mean 'seeds'"),
        ("ok: {seq_len: 16}\n", "learning_rate: 1\n", "run settings go under baseline"),
        ("ok: {seq_len: 16}\n", "", None),
    ],
)
def test_study_mistakes(tmp_path, corpus, tokenizer_dir, variants, extra, message):
    path = study_file(tmp_path, corpus, tokenizer_dir, extra=extra, variants=variants)
    if message is None:
        assert len(load_study(path).runs) == 2
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study(path)


def test_a_study_needs_a_baseline(tmp_path):
    path = write_yaml(tmp_path / "s.yaml", "name: x\nvariants: {a: {learning_rate: 1.0e-3}}\n")
    with pytest.raises(ConfigError, match="baseline: required, but missing"):
        load_study(path)


# ------------------------------------------------------------------------------- end to end


@pytest.fixture
def finished_study(tmp_path_factory, documents, tokenizer_dir):
    tmp = tmp_path_factory.mktemp("study")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents))
    path = study_file(tmp, corpus, tokenizer_dir)
    outcome = run_study(load_study(path), tmp / "out", progress=False, log=lambda _: None)
    return path, tmp / "out", outcome


def test_tiny_study_builds_a_complete_package(finished_study):
    _, directory, outcome = finished_study
    assert set(outcome.statuses.values()) == {"complete"} and len(outcome.statuses) == 4
    report = directory / "report"
    for name in (
        "research_data.json",
        "performance_metrics.csv",
        "research_report.md",
        "research_package.zip",
        "text_samples/baseline.json",
        "text_samples/high_lr.md",
    ):
        assert (report / name).is_file(), name
    for name in (
        "training_loss_comparison.png",
        "final_performance_comparison.png",
        "efficiency_analysis.png",
        "convergence_analysis.png",
        "val_loss_vs_time.png",
        "equal_budget_comparison.png",
    ):
        image = matplotlib.image.imread(report / name)
        assert image.shape[0] > 300 and image.shape[1] > 500, name

    data = json.loads((report / "research_data.json").read_text())
    assert set(REFERENCE_KEYS) <= set(data)
    reference_file = REFERENCE / "original_research_data.json"
    if reference_file.is_file():  # the earlier attempt's files, beside the checkout
        reference = json.loads(reference_file.read_text())
        assert list(reference) == REFERENCE_KEYS
        for section in (
            "metadata",
            "experimental_setup",
            "results_summary",
            "statistical_analysis",
        ):
            assert set(reference[section]) <= set(data[section]), section
        assert set(reference["results_summary"]["key_findings"]) <= set(
            data["results_summary"]["key_findings"]
        )
        header = (REFERENCE / "original_performance_metrics.csv").read_text().splitlines()[0]
        assert header.split(",") == REFERENCE_COLUMNS
    assert data["metadata"]["hardware"] and "Colab" not in json.dumps(data["metadata"])
    assert data["text_samples"]["high_lr"]["prompt_5"]["prompt"] == "A class"
    assert data["text_samples"]["high_lr"]["prompt_1"]["reference"]  # a held-out document

    with (report / "performance_metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert set(REFERENCE_COLUMNS) <= set(rows[0])
    for added in (
        "val_bpb",
        "tokens_seen",
        "epochs",
        "params",
        "tokens_per_s",
        "mfu",
        "wall_time",
        "status",
    ):
        assert added in rows[0]
    means = {r["configuration"]: r for r in rows}
    assert len(means) == 4 and len(rows) == 4  # one row per configuration
    with (report / "run_metrics.csv").open() as f:
        assert [int(r["seed"]) for r in csv.DictReader(f)] == [0, 0, 0, 0]

    findings = data["results_summary"]["key_findings"]
    best = min(means, key=lambda v: float(means[v]["eval_loss"]))
    worst = max(means, key=lambda v: float(means[v]["eval_loss"]))
    assert findings["best_performing_config"] == best
    assert findings["worst_performing_config"] == worst
    reached = {v: float(r["flops_to_target"]) for v, r in means.items() if r["flops_to_target"]}
    assert findings["lowest_flops_to_target_config"] == min(reached, key=reached.get)
    assert findings["most_efficient_config"] is None  # one seed: a margin is never a finding
    # every configuration is placed at the ranking target or listed as not reaching it
    assert set(reached) | set(findings["not_reaching_target"]) == set(means)

    markdown = (report / "research_report.md").read_text()
    for section in (
        "## Experiment Overview",
        "## Experimental Setup",
        "## Key Findings",
        "## Configuration Details",
        "## Results Summary",
        "## Visualizations",
        "## Data Files",
        "## Usage for Research Paper",
        "### Citation Data",
        "## Text Generation",
    ):
        assert section in markdown
    assert f"**Best Performing Configuration:** {best}" in markdown
    assert "![" in markdown and "(efficiency_analysis.png)" in markdown


def test_samples_are_generated_per_run(finished_study):
    _, directory, _ = finished_study
    samples = json.loads((directory / "runs/high_lr/seed-0/samples.json").read_text())
    assert samples["settings"]["max_new_tokens"] == 6
    prompts = json.loads((directory / "sample_prompts.json").read_text())["prompts"]
    assert len(prompts) == 3  # samples.documents defaults to 3 held-out documents
    # samples.draws defaults to 3: every prompt continued with seeds 0, 1, 2 in turn
    assert len(samples["samples"]) == 5 * 3
    assert [(s["draw"], s["seed"]) for s in samples["samples"]] == [
        (d, d) for d in range(3) for _ in range(5)
    ]
    assert [s["prompt_index"] for s in samples["samples"]] == list(range(5)) * 3
    first = samples["samples"][:5]
    held_out, fixed = first[:3], first[3:]
    assert [s["prompt"] for s in fixed] == ["The function", "A class"]
    for sample, source in zip(held_out, prompts, strict=True):
        assert sample["prompt_ids"] == source["prompt_ids"]  # the document's own tokens
        assert sample["source"] == f"validation document {source['document']}"
        assert sample["reference"] == source["reference"] and source["reference"]
    # the draws differ: three seeds are three samples, not one repeated
    draws = [[s["new_token_ids"] for s in samples["samples"][d * 5 : d * 5 + 5]] for d in range(3)]
    assert draws[0] != draws[1] != draws[2]
    assert all(0 < s["new_tokens"] <= 6 for s in samples["samples"])
    assert all(s["generated"].startswith(s["prompt"]) for s in samples["samples"])
    assert samples["yardstick"] == {
        "baseline": {
            "run": "runs/baseline/seed-0",
            "step": samples["yardstick"]["baseline"]["step"],
        },
        "bigram": True,
    }
    assert all(s["baseline_ppl"] > 1 for s in samples["samples"])
    assert all(s["bigram_ppl"] > 1 for s in samples["samples"])
    assert 0 < samples["quality"]["distinct_1"] <= 1
    assert samples["quality"]["repetition_rate"] is not None
    truths = samples["quality"]["held_out_text"]
    assert truths["mean_bigram_ppl"] > 1 and truths["mean_baseline_ppl"] > 1
    # the documents' own continuations score the same in every run's file
    baseline = json.loads((directory / "runs/baseline/seed-0/samples.json").read_text())
    assert baseline["quality"]["held_out_text"] == truths
    markdown = (directory / "report" / "research_report.md").read_text()
    assert (
        "| configuration | distinct-1 | distinct-2 | distinct-3 | repetition | length "
        "| bigram ppl | ppl under baseline |" in markdown
    )
    assert "| *documents' own continuations* |" in markdown
    data = json.loads((directory / "report" / "research_data.json").read_text())
    quality = data["results_summary"]["text_generation_quality"]["high_lr"]
    assert quality["distinct_2"] > 0 and quality["draws_per_prompt"] == 3
    assert len(data["text_samples"]["high_lr"]["prompt_1"]["draws"]) == 3
    assert "sampler seeds 0-2 (3 draws per prompt), the same for every configuration" in markdown
    assert "text_samples/appendix.md" in markdown
    appendix = (directory / "report" / "text_samples" / "appendix.md").read_text()
    assert appendix.count("The document's own continuation:") == 3
    # prompts, truths, and 4 configurations' 3 draws of each of the 5 prompts
    assert appendix.count("```text") == 5 + 3 + 4 * 5 * 3
    assert appendix.count("high_lr, draw 3 (seed 2):") == 5
    # plain text: no repr escapes, no character cut mid-byte
    for path in (directory / "report" / "text_samples").glob("*.md"):
        text = path.read_text()
        assert "\\n" not in text and "\\'" not in text and "\ufffd" not in text, path.name


def test_rerun_skips_finished_runs_and_report_rebuilds_without_torch(finished_study):
    path, directory, _ = finished_study
    before = trajectories(directory)
    messages: list[str] = []
    run_study(load_study(path), directory, progress=False, log=messages.append)
    assert sum("already finished" in m for m in messages) == 4
    assert trajectories(directory) == before

    (directory / "report" / "research_data.json").unlink()
    code = (
        "import sys; from lmablate.report.package import build_report; "
        f"build_report({str(directory)!r}); "
        "assert 'torch' not in sys.modules, 'report imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (directory / "report" / "research_data.json").is_file()

    status = run_cli("status", str(directory))
    assert status.returncode == 0
    assert "high_lr" in status.stdout and status.stdout.count("complete") == 4


def test_changing_a_finished_run_is_refused_unless_forced(finished_study):
    path, directory, _ = finished_study
    changed = load_study(path, ["variants.high_lr.learning_rate=5e-3"])
    with pytest.raises(LmablateError, match=r"the study changed .*runs/high_lr/seed-0.*--force"):
        run_study(changed, directory, progress=False, log=lambda _: None)
    messages: list[str] = []
    run_study(changed, directory, force=True, only=["high_lr"], progress=False, log=messages.append)
    assert any("retraining runs/high_lr/seed-0" in m for m in messages)
    config = json.loads((directory / "runs/high_lr/seed-0/config.json").read_text())
    assert config["train"]["learning_rate"] == 5e-3


def test_failed_and_diverged_runs_do_not_stop_the_study(tmp_path, corpus, tokenizer_dir):
    variants = """\
      exploding: {description: Far too high a learning rate, learning_rate: 1.0e+6}
      gpu_only: {description: Needs a GPU, device: "cuda:7"}
      short_seq: {description: Shorter sequences, seq_len: 16}
    """
    path = study_file(tmp_path, corpus, tokenizer_dir, variants=variants, max_steps=8)
    outcome = run_study(load_study(path), tmp_path / "out", progress=False, log=lambda _: None)
    assert outcome.statuses == {
        "runs/baseline/seed-0": "complete",
        "runs/exploding/seed-0": "diverged",
        "runs/gpu_only/seed-0": "failed",
        "runs/short_seq/seed-0": "complete",
    }
    failed = json.loads((tmp_path / "out/runs/gpu_only/seed-0/summary.json").read_text())
    assert "cuda:7" in failed["message"]
    markdown = (tmp_path / "out/report/research_report.md").read_text()
    assert "### Runs that did not complete" in markdown
    assert "| exploding | 0 | diverged | non-finite" in markdown
    data = json.loads((tmp_path / "out/report/research_data.json").read_text())
    assert data["results_summary"]["key_findings"]["incomplete"] == ["exploding", "gpu_only"]


def test_killed_study_resumes_to_the_same_results(tmp_path, corpus, tokenizer_dir):
    """SIGINT inside a run, then SIGTERM between runs; the rerun finishes the study and every
    run's logged numbers equal an uninterrupted study's."""
    path = study_file(tmp_path, corpus, tokenizer_dir, max_steps=24)
    run_study(load_study(path), tmp_path / "whole", progress=False, log=lambda _: None)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "lmablate", "run", str(path), "--out", str(out)]

    # 1. inside the first run, once it has logged a few steps
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "runs/baseline/seed-0/metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not metrics.is_file() or metrics.read_text().count('"train"') < 3
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Resume with:" in stderr and "Traceback" not in stderr
    assert not (out / "report").exists()
    first_run_was_cut = not (out / "runs/baseline/seed-0/summary.json").exists()

    # 2. between runs: as soon as the runner announces run 3
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "[run 3/4]" in line:
            process.send_signal(signal.SIGTERM)
            break
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(seen) + rest
    if first_run_was_cut:  # it continued from its checkpoint rather than restarting
        assert any("resuming" in line for line in seen), "".join(seen)

    # 3. finish
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "4 of 4 runs complete" in result.stdout
    assert trajectories(out) == trajectories(tmp_path / "whole")
    for run in ("baseline", "high_lr", "short_seq", "small_model"):
        ours = json.loads((out / f"runs/{run}/seed-0/samples.json").read_text())
        theirs = json.loads((tmp_path / f"whole/runs/{run}/seed-0/samples.json").read_text())
        assert ours == theirs


def test_dry_run_prints_runs_and_an_estimate(tmp_path, corpus, tokenizer_dir):
    path = study_file(tmp_path, corpus, tokenizer_dir)
    result = run_cli("run", str(path), "--dry-run", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "learning_rate=0.01" in result.stdout and "seq_len=16" in result.stdout
    assert "4 runs, estimated" in result.stdout
    assert not (tmp_path / "out").exists()


def test_three_seed_study_reports_intervals_tests_budgets_and_validity(
    tmp_path, corpus, tokenizer_dir
):
    variants = """\
      high_lr: {description: Higher learning rate, learning_rate: 1.0e-2}
      large_batch: {description: Larger batch and rate, batch_size: 8, learning_rate: 5.0e-3}
    """
    path = study_file(tmp_path, corpus, tokenizer_dir, variants=variants, max_steps=8)
    outcome = run_study(
        load_study(path, seeds=3), tmp_path / "out", progress=False, log=lambda _: None
    )
    assert len(outcome.statuses) == 9 and set(outcome.statuses.values()) == {"complete"}
    report = tmp_path / "out" / "report"
    markdown = (report / "research_report.md").read_text()
    assert "## Statistical Analysis" in markdown and "paired t" in markdown
    assert "**Noise floor:**" in markdown
    assert markdown.count("] | ") >= 3  # "mean [low, high]" intervals in the table
    assert "## Equal-Budget Comparison" in markdown
    assert "(equal_budget_comparison.png)" in markdown
    assert "### Confounds" in markdown and "| large_batch | batch_size=8" in markdown
    assert "changes 2 factors at once (batch size, learning rate)" in markdown
    assert "trains on 2.00x the baseline's tokens" in markdown
    assert "**0** of" in markdown  # validation documents found in training
    assert "### Provenance" in markdown and "baseline/seed-2" in markdown

    data = json.loads((report / "research_data.json").read_text())
    significance = data["statistical_analysis"]["statistical_significance"]
    assert significance["noise_floor"] > 0
    tests = {c["variant"]: c for c in significance["comparisons_vs_baseline"]}
    assert set(tests) == {"high_lr", "large_batch"}
    assert all(c["test"] == "paired t" and c["df"] == 2 for c in tests.values())
    assert all(
        c["verdict"] in ("better", "worse", "within noise", "no detectable difference")
        for c in tests.values()
    )
    for key in ("intervals", "equal_budget", "confounds", "leakage", "provenance"):
        assert data["statistical_analysis"][key], key
    assert data["statistical_analysis"]["leakage"]["val_documents_in_training"] == 0

    with (report / "performance_metrics.csv").open() as f:
        means = {r["configuration"]: r for r in csv.DictReader(f)}
    assert float(means["baseline"]["eval_loss_ci_low"]) < float(means["baseline"]["eval_loss"])
    assert means["high_lr"]["verdict"] == tests["high_lr"]["verdict"]

    paper = report / "paper"
    table = (paper / "results_table.tex").read_text()
    assert r"\toprule" in table and r"large\_batch" in table and "paired" not in table
    for name in ("training_loss_comparison", "equal_budget_comparison", "efficiency_analysis"):
        assert (paper / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_a_changed_corpus_is_refused_for_finished_runs(finished_study):
    path, directory, _ = finished_study
    corpus = path.parent / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + json.dumps({"text": "A new document."}) + "\n")
    with pytest.raises(LmablateError, match=r"runs/baseline/seed-0 \(data\)"):
        run_study(load_study(path), directory, progress=False, log=lambda _: None)


def test_turning_on_a_tracker_is_not_a_change_of_study(finished_study):
    path, directory, _ = finished_study
    messages: list[str] = []
    run_study(
        load_study(path, ["logger=tensorboard"]), directory, progress=False, log=messages.append
    )
    assert sum("already finished" in m for m in messages) == 4


def test_report_includes_downstream_results_when_present(finished_study):
    from lmablate.report.package import build_report

    _, directory, _ = finished_study
    record = {
        "tasks": ["tiny_local"],
        "limit": 3,
        "results": {
            "tiny_local": {"alias": "tiny_local", "acc,none": 0.25, "acc_stderr,none": 0.1}
        },
    }
    (directory / "runs/high_lr/seed-0/eval").mkdir()
    (directory / "runs/high_lr/seed-0/eval/lm_eval.json").write_text(json.dumps(record))
    report = build_report(directory)
    markdown = (report / "research_report.md").read_text()
    assert "## Downstream Evaluation" in markdown
    assert "| high_lr/seed-0 | 0.2500 ± 0.1000 | 3 |" in markdown
    data = json.loads((report / "research_data.json").read_text())
    assert (
        data["downstream_evaluation"]["high_lr/seed-0"]["results"]["tiny_local"]["acc,none"] == 0.25
    )


def test_a_study_never_takes_over_another_studys_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "study.yaml").write_text("name: first\nseeds: [0]\n")
    second = write_yaml(
        tmp_path / "second.yaml", "name: second\ndata: {source: builtin}\nbaseline: {}\n"
    )
    with pytest.raises(LmablateError, match=r"holds the study 'first', not 'second'"):
        run_study(load_study(second), tmp_path / "out", progress=False, log=lambda _: None)
    assert (tmp_path / "out" / "study.yaml").read_text() == "name: first\nseeds: [0]\n"


def test_held_out_prompts_are_document_openings_with_their_true_continuation(tokenizer_dir):
    from lmablate.config.study import SamplesConfig
    from lmablate.data.tokenizers import load_tokenizer
    from lmablate.generation import continuation_text
    from lmablate.study.samples import document_prompts

    tokenizer = load_tokenizer(str(tokenizer_dir))
    eos = tokenizer.eos_id
    texts = ["Short.", "A longer document about functions and classes in Python.", "Café au lait"]
    docs = [tokenizer.encode(t) for t in texts]
    stream = np.array([t for d in docs for t in [*d, eos]], dtype=np.int64)
    settings = SamplesConfig(documents=2, prompt_tokens=3, max_new_tokens=4)
    prompts = document_prompts(stream, tokenizer, settings, context=64)
    short = document_prompts(stream, tokenizer, settings, context=6)[0]  # 6 - 4 new tokens
    assert short["prompt_ids"] == docs[short["document"]][:2]

    long_enough = [i for i, d in enumerate(docs) if len(d) > 3]
    assert [p["document"] for p in prompts] == long_enough[:2]
    for p in prompts:
        document = docs[p["document"]]
        cut = len(p["prompt_ids"])
        assert p["prompt_ids"] == document[:cut] and 1 <= cut <= 3
        assert p["reference_ids"] == document[cut : cut + 4]
        assert "\ufffd" not in p["prompt"] + p["reference"]
    # a character split across prompt and continuation decodes whole, on the continuation side
    ids = tokenizer.encode("é")
    if len(ids) > 1:  # byte-level pieces of one character
        assert continuation_text(tokenizer, ids[:1], ids[1:]) == "é"
    assert continuation_text(tokenizer, tokenizer.encode("Caf"), tokenizer.encode("é")) == "é"
    assert SamplesConfig(prompts="reference").prompts[0] == "The future of artificial intelligence"
