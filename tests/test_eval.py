"""lmablate eval: lm-evaluation-harness on an exported run, with a local task (offline)."""

from __future__ import annotations

import json
import textwrap

import pytest
from helpers import jsonl_corpus, run_cli, tiny_run_config

from lmablate.errors import LmablateError


@pytest.fixture
def local_task(tmp_path):
    """A loglikelihood task whose data is a local JSON Lines file: no download."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    rows = [
        {"context": "The assert statement is", "target": "used"},
        {"context": "Assignment statements are used to", "target": "bind"},
        {"context": "A class definition", "target": "defines"},
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "tiny_local.yaml").write_text(
        textwrap.dedent(f"""\
        task: tiny_local
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder / "data.jsonl"}
        test_split: test
        output_type: loglikelihood
        doc_to_text: "{{{{context}}}}"
        doc_to_target: " {{{{target}}}}"
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        metadata:
          version: 1.0
        """)
    )
    return folder


@pytest.fixture
def swiglu_run(tmp_path, documents, tokenizer_dir):
    from lmablate.training.loop import train

    corpus = jsonl_corpus(tmp_path / "corpus.jsonl", documents)
    cfg = tiny_run_config(corpus, tokenizer_dir, seq_len=32, max_steps=4, eval_every=4)
    train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    return tmp_path / "run"


def test_eval_runs_a_local_task_and_stores_results(swiglu_run, local_task):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness (lmablate[eval]) not installed")
    pytest.importorskip("accelerate", reason="lmablate[eval] needs accelerate")
    result = run_cli(
        "eval",
        str(swiglu_run),
        "--tasks",
        "tiny_local",
        "--include-path",
        str(local_task),
        "--limit",
        "3",
        "--batch-size",
        "2",
        env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tiny_local: acc" in result.stdout
    record = json.loads((swiglu_run / "eval" / "lm_eval.json").read_text())
    assert record["tasks"] == ["tiny_local"] and record["limit"] == 3
    assert 0.0 <= record["results"]["tiny_local"]["acc,none"] <= 1.0
    assert (swiglu_run / "hf" / "model.safetensors").is_file()


def test_unknown_task_is_a_clear_error(swiglu_run, local_task):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness (lmablate[eval]) not installed")
    from lmablate.downstream import evaluate_run

    with pytest.raises(LmablateError, match="unknown to lm-evaluation-harness: no_such_task"):
        evaluate_run(swiglu_run, ["no_such_task"], include_path=local_task)


def test_missing_harness_names_the_install_command(swiglu_run, monkeypatch):
    import sys

    from lmablate.downstream import evaluate_run

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LmablateError, match=r"pip install 'lmablate\[eval\]'"):
        evaluate_run(swiglu_run, ["hellaswag"])
