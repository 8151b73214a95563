"""The Python API: the command line's functions, importable from the package."""

from __future__ import annotations

import json
import subprocess
import sys

import lmablate


def test_import_is_light_and_names_resolve():
    code = (
        "import sys, lmablate; assert 'torch' not in sys.modules; "
        "[getattr(lmablate, name) for name in lmablate.__all__]; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_train_generate_study_and_analysis_from_python(tmp_path, documents, tokenizer_dir):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    run = {
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64},
        "train": {
            "batch_size": 4,
            "seq_len": 16,
            "max_steps": 4,
            "warmup_steps": 1,
            "eval_every": 4,
            "eval_tokens": 128,
            "log_every": 2,
        },
    }
    data = {
        "source": "local",
        "path": str(corpus),
        "tokenizer": str(tokenizer_dir),
        "num_documents": None,
    }
    cfg = lmablate.validate_run_config({**run, "data": data})
    result = lmablate.train_run(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert result.status == "complete" and result.summary["tokens_seen"] == 4 * 4 * 16

    model, tokenizer, loaded, step = lmablate.load_run(tmp_path / "run")
    assert loaded == cfg and step == 4
    samples = lmablate.generate(
        model, tokenizer, ["Hello"], lmablate.Sampling(max_new_tokens=3), context=16
    )
    assert samples[0]["prompt"] == "Hello"

    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        json.dumps(
            {
                "name": "api",
                "data": data,
                "baseline": run,
                "variants": {"fast": {"learning_rate": 1e-2}},
                "samples": {"prompts": ["Hi"], "max_new_tokens": 4},
            }
        )
    )
    study = lmablate.load_study(study_file, seeds=2)
    outcome = lmablate.run_study(study, tmp_path / "out", progress=False, log=lambda _: None)
    assert (outcome.report / "research_report.md").is_file()
    analysis = lmablate.analyze(lmablate.load_study_dir(tmp_path / "out"))
    assert {c.variant for c in analysis.comparisons} == {"fast"}
    assert analysis.findings["seeds_per_configuration"] == 2
