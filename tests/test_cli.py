"""The command line as a user meets it: help, inspect output, exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, write_yaml

from lmablate.cli import main
from lmablate.errors import ConfigError

BUILTIN = str(Path(__file__).parents[1] / "configs" / "builtin.yaml")


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("config", "data"):
        assert f"    {command}" in out
    assert "examples:" in out


def test_data_inspect_local_corpus_with_local_tokenizer(tmp_path, documents, tokenizer_dir):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for i, doc in enumerate(documents[:40]):
        (corpus / f"{i:03d}.txt").write_text(doc)
    config = write_yaml(
        tmp_path / "run.yaml",
        f"""\
        model: {{d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}}
        train: {{seq_len: 64, eval_tokens: 1000, max_steps: 10, warmup_steps: 2}}
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, val_fraction: 0.25}}
        """,
    )
    result = run_cli("data", "inspect", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "documents     40 (train 30, validation 10; split by document)" in out
    assert "model vocab   512 embedding rows" in out
    assert "eval targets  1,000 tokens" in out and "in 16 windows of 64" in out
    assert "cache" in out and "(written)" in out
    assert "wrote token cache" in result.stderr

    again = run_cli("data", "inspect", str(config), "--json")
    report = json.loads(again.stdout)
    assert report["documents"] == {"total": 40, "read": 40, "train": 30, "val": 10}
    assert set(report["reference_losses"]) == {"uniform", "unigram", "bigram"}
    assert report["leakage"]["overlap"]["largest_overlap_after"]["val"] <= 0.2
    assert report["cache"]["reused"] is True
    assert report["tokens"]["train"] > report["tokens"]["val"] > 1000


def test_user_mistakes_exit_2_without_traceback(tmp_path):
    config = write_yaml(tmp_path / "run.yaml", "train: {learning_rat: 1e-3}\n")
    result = run_cli("config", str(config))
    assert result.returncode == 2
    assert "did you mean 'learning_rate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_tokenizer_larger_than_model_vocab(tmp_path, documents, tokenizer_dir, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(documents[:10]))
    config = write_yaml(
        tmp_path / "run.yaml",
        f"""\
        model: {{vocab_size: 256}}
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}}}
        """,
    )
    assert main(["data", "inspect", str(config)]) == 2
    assert "model.vocab_size (256) is smaller than the tokenizer's vocabulary (512" in (
        capsys.readouterr().err
    )


def test_config_prints_resolved_yaml_with_overrides(capsys):
    assert main(["config", BUILTIN, "--set", "learning_rate=2e-3"]) == 0
    out = capsys.readouterr().out
    assert "learning_rate: 0.002" in out and "n_kv_heads: null" in out


def test_config_reference(capsys):
    assert main(["config", "--reference"]) == 0
    assert "| `learning_rate` |" in capsys.readouterr().out


def test_set_on_a_nonexistent_key(capsys):
    assert main(["config", BUILTIN, "--set", "layers=4"]) == 2
    assert "layers is not a config field; did you mean 'n_layers'?" in capsys.readouterr().err


def test_readme_documents_every_field_and_command():
    from lmablate.cli import build_parser
    from lmablate.config.keys import field_reference

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- config-reference:start -->\n")[1].split("<!-- config-reference")[0]
    assert block.strip() == field_reference().strip(), "run: lmablate config --reference"
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"`lmablate {name}" in readme, f"README does not document `lmablate {name}`"


def test_a_study_whose_runs_all_fail_exits_non_zero(tmp_path, corpus, tokenizer_dir):
    study = write_yaml(
        tmp_path / "study.yaml",
        f"""\
        name: doomed
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 16, max_steps: 6, warmup_steps: 1, eval_every: 3,
                  eval_tokens: 128, log_every: 1, learning_rate: 1.0e+6, grad_clip: 0.0}}
        samples: {{prompts: [The], max_new_tokens: 2}}
        """,
    )
    result = run_cli("run", str(study), "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "0 of 1 runs complete" in result.stdout
    assert "error: no run completed" in result.stderr
    assert "Traceback" not in result.stderr


def test_prompts_that_say_nothing_are_errors(tmp_path, capsys):
    from lmablate.config.study import build_study

    for samples, message in (
        ({"prompts": [""]}, r"samples.prompts\[0\] is empty"),
        ({"prompts": [], "documents": 0}, "nothing to sample"),
    ):
        with pytest.raises(ConfigError, match=message):
            build_study({"name": "s", "data": {}, "baseline": {}, "samples": samples})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "binary.txt").write_bytes(b"ok\n\xff\xfe\x00")
    for path, message in (
        (tmp_path / "empty.txt", "holds no prompt"),
        (tmp_path / "binary.txt", "is not UTF-8 text (byte 3"),
        (tmp_path, "is a directory"),
    ):
        assert main(["generate", str(run_dir), "--prompts-file", str(path)]) == 2
        assert message in capsys.readouterr().err


def test_dry_run_checks_the_options_the_run_would(capsys):
    study = Path(__file__).parents[1] / "studies" / "quickstart.yaml"
    for extra, message in (
        (["--only", "nope"], "--only: no variant named nope"),
        (["--parallel", "0"], "--parallel must be at least 1"),
        (["--nproc-per-node", "0"], "--nproc-per-node must be at least 1"),
        (["--parallel", "2", "--ray"], "--parallel and --ray do not combine"),
    ):
        assert main(["run", str(study), "--dry-run", *extra]) == 2
        assert message in capsys.readouterr().err


def test_eval_checks_its_options_itself(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for extra, message in (
        (["--tasks", " , "], "--tasks names no task"),
        (["--tasks", "x", "--limit", "0"], "--limit 0: give at least 1"),
        (["--tasks", "x", "--batch-size", "-2"], "--batch-size -2: give at least 1"),
        (["--tasks", "x", "--device", "gpu0"], "--device 'gpu0' is not a device"),
        (["--tasks", "x", "--include-path", str(tmp_path / "no")], "is not a folder of task"),
    ):
        assert main(["eval", str(run_dir), *extra]) == 2
        assert message in capsys.readouterr().err
