"""Training data per variant: named sources mixed by token weight, filters, unique-token
budgets, tokenizers; evaluation sets fixed by the study, scored on the same bytes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import jsonl_corpus

from lmablate.config.data import DataConfig
from lmablate.config.study import build_study
from lmablate.data import Part, TrainBatches, prepare, register_filter
from lmablate.data.sources import builtin_code_documents
from lmablate.errors import ConfigError
from lmablate.training.loop import train


def two_domains(tmp_path, documents, **overrides) -> dict:
    """Prose (the fixture's 60 documents) and code (the first 60 standard-library chunks)."""
    prose = jsonl_corpus(tmp_path / "prose.jsonl", documents)
    code = jsonl_corpus(tmp_path / "code.jsonl", builtin_code_documents()[:60])
    return {
        "sources": {
            "prose": {"source": "local", "path": str(prose), "num_documents": None},
            "code": {"source": "local", "path": str(code), "num_documents": None, "weight": 0.0},
        },
        "tokenizer": {"train_bpe": {"vocab_size": 300}},
        "val_fraction": 0.1,
        **overrides,
    }


def scored_bytes(prepared, seq_len=32, eval_tokens=256):
    val = prepared.scored("val", seq_len, eval_tokens)
    return {s.name: s.n_bytes for s in val.sets}, val


def test_every_training_side_change_scores_the_same_evaluation_bytes(tmp_path, documents):
    """Another mixture, tokenizer, filter or budget: each evaluation set is the same documents,
    so with whole-document scoring the same UTF-8 bytes, and no held-out document is trained."""
    base = two_domains(tmp_path, documents, eval_documents=3)
    variants = {
        "baseline": {},
        "mixed": {"sources": {"code": {"weight": 0.5}}},
        "vocab": {"tokenizer": {"train_bpe": {"vocab_size": 400}}},
        "filtered": {"filters": {"min_chars": 2000}},
        "budget": {"max_train_tokens": 5000},
    }
    seen = {}
    for name, change in variants.items():
        cfg = DataConfig.model_validate(
            {**base, **change, "sources": _merged(base["sources"], change.get("sources", {}))}
        )
        prepared = prepare(cfg, progress=False)
        seen[name], val = scored_bytes(prepared)
        assert val.n_documents == 6 and [s.n_documents for s in val.sets] == [3, 3]
    first = seen["baseline"]
    assert all(b == first for b in seen.values()), seen
    # the bytes are the documents' own: the first three held-out documents of each source
    cfg = DataConfig.model_validate(base)
    prepared = prepare(cfg, progress=False)
    meta = prepared.meta
    prose_start, prose_end = meta["val_parts"][0][1:3]
    eos = prepared.tokenizer.eos_id
    stream = np.asarray(prepared.val_tokens[prose_start:prose_end])
    ends = np.flatnonzero(stream == eos)[:3]
    text = prepared.tokenizer.decode(stream[: ends[-1] + 1].tolist())
    assert first["prose"] == len(text.encode("utf-8"))


def _merged(base: dict, change: dict) -> dict:
    out = json.loads(json.dumps(base))
    for name, fields in change.items():
        out.setdefault(name, {}).update(fields)
    return out


def test_mixture_weights_are_realised_in_the_tokens_trained_on():
    """Windows are assigned to sources by a low-discrepancy sequence: after any number of steps
    each source's share of the windows is within 2 windows of its weight, and every window lies
    inside its own source's range."""
    tokens = np.arange(10_000, dtype=np.int64) % 500
    parts = [Part("a", 0, 6000, 0.7), Part("b", 6000, 9000, 0.2), Part("c", 9000, 10_000, 0.1)]
    batches = TrainBatches(tokens, batch_size=8, seq_len=16, data_seed=1, parts=parts)
    for steps in (1, 7, 50, 400):
        trained = batches.tokens_by_source(steps)
        windows = steps * 8
        for part in parts:
            assert abs(trained[part.name] / 16 - part.weight * windows) <= 2, (steps, trained)
    positions = np.arange(10_000)
    for step in range(30):
        inputs, _ = batches.batch_at(step)
        owner = batches.sources_at(step)[0]
        for row, index in enumerate(owner):
            part = parts[index]
            start = int(inputs[row, 0])  # tokens are positions mod 500: find where it starts
            candidates = positions[(positions % 500 == start)]
            assert any(part.start <= c and c + 17 <= part.end for c in candidates)
    # the same step gives the same windows (resume), a mixture of one is the plain sampler
    assert all(
        (a == b).all() for a, b in zip(batches.batch_at(5), batches.batch_at(5), strict=True)
    )
    plain = TrainBatches(tokens, 8, 16, 1)
    single = TrainBatches(tokens, 8, 16, 1, parts=[Part("a", 0, 10_000, 1.0)])
    assert (plain.batch_at(3)[0] == single.batch_at(3)[0]).all()


def test_a_variants_training_source_that_copies_evaluation_documents_is_caught(tmp_path, documents):
    """A training-only source holding an exact copy and a near-copy of held-out documents:
    both are removed from that run's training data and counted (an exact-hash check alone
    would miss the near-copy)."""
    base = two_domains(tmp_path, documents)
    prepared = prepare(DataConfig.model_validate(base), progress=False)
    held = [documents[i] for i in prepared.meta["val_document_indices"][:2]]
    words = held[1].split()
    near = " ".join([*words[:-3], "entirely", "different", "ending"])
    leaky = jsonl_corpus(tmp_path / "leaky.jsonl", [held[0], near, "An innocent document. " * 30])
    cfg = DataConfig.model_validate(
        {
            **base,
            "sources": {
                **base["sources"],
                "web": {
                    "source": "local",
                    "path": str(leaky),
                    "held_out": False,
                    "num_documents": None,
                },
            },
        }
    )
    meta = prepare(cfg, progress=False).meta
    assert meta["leakage"]["training_removed_for_overlap"] == {"exact": 1, "overlap": 1}
    assert meta["sources"]["web"]["train_documents"] == 1
    assert meta["leakage"]["val_documents_in_training"] == 0


def test_a_registered_filter_drops_training_documents_only(tmp_path, documents):
    register_filter("no_the", lambda text: " the " not in text, "documents without 'the'")
    base = two_domains(tmp_path, documents)
    plain = prepare(DataConfig.model_validate(base), progress=False)
    cfg = DataConfig.model_validate({**base, "filters": {"keep": ["no_the"], "min_chars": 50}})
    filtered = prepare(cfg, progress=False)
    dropped = filtered.meta["leakage"]["filtered"]["dropped"]
    kept_docs = filtered.meta["sources"]["prose"]["train_documents"]
    assert dropped["dropped by no_the"] > 0
    assert kept_docs == plain.meta["documents"]["train"] - sum(dropped.values())
    assert scored_bytes(filtered)[0] == scored_bytes(plain)[0]  # held-out side untouched
    with pytest.raises(Exception, match=r"unknown filter 'no_thee'.*did you mean 'no_the'"):
        DataConfig.model_validate({**base, "filters": {"keep": ["no_thee"]}})


def test_repeated_data_is_counted_as_epochs_per_source(tmp_path, documents):
    """A unique-token budget smaller than the run repeats the data: the summary counts the
    tokens each source gave and how many epochs of its unique tokens that is."""
    data = two_domains(tmp_path, documents, max_train_tokens=1000)
    data["sources"]["code"]["weight"] = 1.0
    cfg = _run_config(data, max_steps=40)
    summary = train(cfg, tmp_path / "run", progress=False).summary
    mixture = summary["mixture"]
    assert {m["unique_tokens"] for m in mixture.values()} == {500}
    assert sum(m["tokens_trained"] for m in mixture.values()) == summary["tokens_seen"]
    for m in mixture.values():
        assert m["share_trained"] == pytest.approx(0.5, abs=2 / 160)
        assert m["epochs"] == pytest.approx(m["tokens_trained"] / 500)
        assert m["epochs"] > 1
    assert set(summary["final_val_sets"]) == {"prose", "code"}


def _run_config(data: dict, **train_fields):
    from lmablate.config.keys import validate_run_config

    return validate_run_config(
        {
            "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64},
            "train": {
                "batch_size": 4,
                "seq_len": 16,
                "max_steps": 6,
                "warmup_steps": 1,
                "eval_every": 20,
                "eval_tokens": 128,
                "log_every": 10,
                **train_fields,
            },
            "data": data,
        }
    )


def test_a_variant_changes_only_the_training_side_of_the_data(tmp_path, documents):
    data = two_domains(tmp_path, documents)
    study = {"name": "s", "seeds": [0], "data": data, "baseline": {}}

    def build(variants):
        return build_study({**study, "variants": variants})

    built = build({"mixed": {"sources": {"code": {"weight": 0.5}}}})
    mixed = next(r for r in built.runs if r.variant == "mixed")
    assert mixed.changes == {"sources": {"code": {"weight": 0.5}}}
    assert mixed.config.data.sources["code"].weight == 0.5
    with pytest.raises(ConfigError, match=r"val_fraction.*fix the evaluation documents"):
        build({"v": {"val_fraction": 0.2}})
    with pytest.raises(ConfigError, match=r"sources.code.path: source 'code' is held out"):
        build({"v": {"sources": {"code": {"path": "x"}}}})
    with pytest.raises(ConfigError, match="held_out: false"):
        build({"v": {"sources": {"web": {"source": "builtin"}}}})
    with pytest.raises(ConfigError, match=r"different tokenizers.*eval_documents"):
        build({"v": {"tokenizer": {"train_bpe": {"vocab_size": 400}}}})
    with pytest.raises(ConfigError, match="belong to the study's data"):
        build_study({**study, "baseline": {"tokenizer": "gpt2"}})


def test_the_builtin_code_corpus_is_python_source_in_a_fixed_order():
    docs = builtin_code_documents()
    assert len(docs) > 500 and docs == builtin_code_documents()
    assert sum(("def " in d or "class " in d) for d in docs[:50]) >= 40
    assert min(len(d) for d in docs) > 0


def test_the_per_domain_table_matches_a_hand_computation(tmp_path):
    """Per set and for the macro-average: mean bpb over seeds, the paired difference from the
    baseline with its t-interval (t_0.975,2 = 4.3027), Holm verdicts within each set; the CSV,
    the figure and the report carry them, and differing tokenizers are flagged."""
    import csv

    from test_claims import line, write_run, write_study

    from lmablate.analysis.findings import analyze
    from lmablate.analysis.rundata import load_study_dir
    from lmablate.report.package import build_report

    bpb = {
        "baseline": {"prose": [1.00, 1.02, 1.01], "code": [2.00, 2.10, 2.05]},
        "mixed": {"prose": [1.03, 1.06, 1.04], "code": [1.80, 1.85, 1.90]},
    }
    write_study(tmp_path, {"mixed": {"sources": {"code": {"weight": 0.5}}}}, seeds=3)
    for variant, sets in bpb.items():
        for seed in range(3):
            write_run(tmp_path, variant, seed, line(8.0, 3.0 + 0.01 * seed, 2000))
            path = tmp_path / "runs" / variant / f"seed-{seed}" / "summary.json"
            summary = json.loads(path.read_text())
            summary["final_val_sets"] = {
                name: {
                    "loss": 2 * values[seed],
                    "bpb": values[seed],
                    "targets": 300,
                    "bytes": 1000 if variant == "baseline" else 1200,
                }
                for name, values in sets.items()
            }
            summary["final_test_sets"] = {  # the test documents: 0.1 bpb above validation
                name: {**record, "bpb": record["bpb"] + 0.1}
                for name, record in summary["final_val_sets"].items()
            }
            summary["tokenizer"] = "bpe-512" if variant == "baseline" else "bpe-1024"
            # fewer, harder targets: more nats per token, yet fewer bits per byte
            summary["final_val_bpb"] = (
                1.5 + 0.01 * seed - (0.1 + 0.01 * seed) * (variant != "baseline")
            )
            summary["final_val_loss"] = 3.0 + 0.01 * seed + 1.0 * (variant != "baseline")
            path.write_text(json.dumps(summary))
    analysis = analyze(load_study_dir(tmp_path))
    table = analysis.domains["table"]
    t = 4.302652729911275
    diffs = {
        "prose": [0.03, 0.04, 0.03],
        "code": [-0.20, -0.25, -0.15],
        "macro-average": [-0.085, -0.105, -0.06],
    }
    for name, d in diffs.items():
        mean = sum(d) / 3
        sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
        versus = table[name]["configurations"]["mixed"]["vs_baseline"]
        assert versus["difference"] == pytest.approx(mean)
        assert versus["ci_low"] == pytest.approx(mean - t * sd / 3**0.5)
        assert versus["ci_high"] == pytest.approx(mean + t * sd / 3**0.5)
    assert table["prose"]["configurations"]["baseline"]["bpb"]["mean"] == pytest.approx(1.01)
    assert table["macro-average"]["configurations"]["mixed"]["bpb"]["mean"] == pytest.approx(
        (1.415 + 1.455 + 1.47) / 3
    )
    assert table["code"]["configurations"]["mixed"]["vs_baseline"]["verdict"] == "better"
    test = analysis.domains["test"]
    assert test["prose"]["configurations"]["baseline"]["bpb"]["mean"] == pytest.approx(1.11)
    assert test["code"]["configurations"]["mixed"]["vs_baseline"]["difference"] == pytest.approx(
        -0.2
    )
    assert analysis.domains["tokens_per_byte"]["mixed"] == {"code": 0.25, "prose": 0.25}
    assert any("different tokenizer" in threat for threat in analysis.study_threats)
    # tokenizers differ: ranked and tested in bits per byte
    assert analysis.findings["metric"] == "val_bpb"
    (comparison,) = analysis.comparisons
    assert comparison.difference == pytest.approx(-0.11)
    assert [v for v, _ in analysis.ranking] == ["mixed", "baseline"]

    report = build_report(tmp_path)
    rows = list(csv.DictReader((report / "per_domain_metrics.csv").open()))
    assert len(rows) == 2 * 3 * 2 and {r["evaluation_set"] for r in rows} == set(diffs)
    assert {r["split"] for r in rows} == {"validation", "test"}
    markdown = (report / "research_report.md").read_text()
    assert "## Per-Domain Results" in markdown and "macro-average bpb" in markdown
    assert "On the **test** documents of each set" in markdown
    latex = (report / "paper" / "domains_table.tex").read_text()
    assert "macro-average" in latex and "$-0.200$" in latex and "better" in latex
    assert (report / "per_domain_performance.png").is_file()
    data = json.loads((report / "research_data.json").read_text())
    assert data["results_summary"]["per_domain"]["sets"] == ["code", "prose"]
    curves = data["visualizations"]["training_loss_comparison.png"]["panels"][1]
    assert curves["y"] == "validation bits per byte"  # not nats of different tokenizers
    confound = analysis.confounds["mixed"]
    assert confound["factors"] == ["data mixture"]


def test_every_shipped_study_expands():
    """Each studies/*.yaml validates and expands; the data study's variants differ only on the
    training side and score whole documents (its vocabulary variant needs them)."""
    from pathlib import Path

    from lmablate.config.study import load_study

    studies = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))
    assert len(studies) >= 6
    for path in studies:
        assert load_study(path).runs, path
    data = load_study(Path(__file__).parents[1] / "studies" / "data.yaml")
    assert data.data.eval_documents and set(data.data.sources) == {"prose", "code"}
    changed = {r.variant: set(r.changes) for r in data.runs if r.variant != "baseline"}
    assert changed == {
        "code_25": {"sources"},
        "code_50": {"sources"},
        "vocab_1024": {"tokenizer"},
        "long_only": {"filters"},
    }


def test_data_inspect_shows_each_source_and_evaluation_set(tmp_path, documents):
    from helpers import run_cli, write_yaml

    data = two_domains(tmp_path, documents, eval_documents=3)
    data["sources"]["code"]["weight"] = 0.5
    data["filters"] = {"min_chars": 400}
    config = write_yaml(
        tmp_path / "run.yaml",
        "model: {d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}\n"
        "train: {seq_len: 64, eval_tokens: 1000, max_steps: 10, warmup_steps: 2}\n"
        f"data: {json.dumps(data)}\n",
    )
    result = run_cli("data", "inspect", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "source prose" in out and "weight 1 (67% of training tokens)" in out
    assert "source code" in out and "weight 0.5 (33% of training tokens)" in out
    assert re.search(r"eval set prose +3 documents", out)
    assert re.search(r"eval set code +3 documents", out)
    assert "filters" in out and "shorter than 400 characters" in out
    report = json.loads(run_cli("data", "inspect", str(config), "--json").stdout)
    assert [s["name"] for s in report["evaluation_sets"]] == ["prose", "code"]
    assert all(s["documents"] == 3 for s in report["evaluation_sets"])
    assert report["sources"]["code"]["share"] == pytest.approx(1 / 3)


def test_curve_readings_are_in_bits_per_byte_when_tokenizers_differ(tmp_path):
    """In nats per token the variant's curve lies above the baseline's everywhere (its longer
    tokens are harder targets); in bits per byte below. Efficiency, equal budgets, the tuned
    comparison's inputs and the figures must read the bytes, so the variant comes first."""
    from test_claims import line, write_run, write_study

    from lmablate.analysis.findings import analyze
    from lmablate.analysis.rundata import eval_curve, load_study_dir
    from lmablate.report.package import build_report

    write_study(tmp_path, {"vocab": {"tokenizer": "bpe-1024"}}, seeds=2)
    per_byte = {"baseline": 3.0, "vocab": 5.0}  # nats per token / bits per byte
    for variant, nats in (("baseline", 3.0), ("vocab", 4.0)):
        for seed in range(2):
            write_run(tmp_path, variant, seed, line(8.0, nats + 0.01 * seed, 2000))
            run = tmp_path / "runs" / variant / f"seed-{seed}"
            records = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
            for record in records:
                if record["kind"] == "eval":
                    record["val_bpb"] = record["val_loss"] / per_byte[variant]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            summary = json.loads((run / "summary.json").read_text())
            summary["final_val_bpb"] = summary["final_val_loss"] / per_byte[variant]
            summary["tokenizer"] = "bpe-512" if variant == "baseline" else "bpe-1024"
            (run / "summary.json").write_text(json.dumps(summary))
    study = load_study_dir(tmp_path)
    assert study.in_bytes
    curve = eval_curve(study.runs_of("vocab")[0])
    assert curve[-1]["score"] == pytest.approx(4.0 / 5.0) and curve[-1]["val_loss"] == 4.0
    analysis = analyze(study)
    # the common target is the baseline's lowest seed-mean bpb (at its end); the variant,
    # 0.8 bpb at its end, crosses it three quarters into its run: first in compute
    assert analysis.efficiency["target"] == pytest.approx((3.0 + 0.005) / 3.0, rel=1e-3)
    assert next(v for v, _ in analysis.efficiency_ranking) == "vocab"
    assert analysis.equal_budgets["tokens"]["ranking"] == ["vocab", "baseline"]
    assert analysis.equal_budgets["tokens"]["val_loss"]["vocab"] == pytest.approx(
        (4.0 + 4.01) / 2 / 5.0
    )
    assert "bits per byte" in analysis.findings["efficiency_measure"]

    report = build_report(tmp_path)
    data = json.loads((report / "research_data.json").read_text())
    figures = data["visualizations"]
    assert figures["efficiency_analysis.png"]["panels"][0]["y"] == "validation bits per byte"
    assert figures["convergence_analysis.png"]["panels"][0]["y"].startswith("bits per byte")
    final = figures["final_performance_comparison.png"]["panels"][0]
    assert final["y"] == "final validation bits per byte"
    assert "own tokenizer" in figures["final_performance_comparison.png"]["panels"][1]["title"]


def test_a_run_config_with_sources_reads_back_from_its_own_dump():
    """config.json is read back by samples, generate, export and eval: a config with several
    sources must validate again from its dump, which names no single source's defaults."""
    from lmablate.config.run import RunConfig

    config = RunConfig.model_validate(
        {
            "data": {
                "sources": {
                    "prose": {"source": "builtin"},
                    "code": {"source": "builtin_code", "num_documents": 30, "weight": 0.5},
                },
                "eval_documents": 4,
            }
        }
    )
    dumped = config.model_dump(mode="json")
    assert "dataset" not in dumped["data"] and "source" not in dumped["data"]
    assert RunConfig.model_validate(json.loads(json.dumps(dumped))) == config
    assert "dataset" in RunConfig().model_dump(mode="json")["data"]  # one source: as before


def test_a_study_of_two_sources_and_two_tokenizers_runs_and_scores_its_samples(tmp_path, documents):
    """End to end: every run's config.json reads back (samples are drawn from it), and a
    variant with its own tokenizer has its continuations scored under the baseline, on the
    same text in the baseline's tokens (its ids index another vocabulary)."""
    from lmablate.config.study import build_study
    from lmablate.study.runner import run_study

    messages: list[str] = []
    study = build_study(
        {
            "name": "two",
            "data": two_domains(tmp_path, documents, eval_documents=2),
            "baseline": {
                "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64},
                "train": {
                    "batch_size": 4,
                    "seq_len": 16,
                    "max_steps": 4,
                    "warmup_steps": 1,
                    "eval_every": 2,
                    "log_every": 2,
                },
            },
            "variants": {"vocab": {"tokenizer": {"train_bpe": {"vocab_size": 400}}}},
            "samples": {"max_new_tokens": 6, "draws": 1, "documents": 2, "prompt_tokens": 4},
        }
    )
    outcome = run_study(study, tmp_path / "out", progress=False, log=messages.append)
    assert set(outcome.statuses.values()) == {"complete"}
    assert not [m for m in messages if "failed" in m], messages
    record = json.loads(
        (tmp_path / "out" / "runs" / "vocab" / "seed-0" / "samples.json").read_text()
    )
    assert record["samples"] and all(s["baseline_ppl"] is not None for s in record["samples"])
    data = json.loads((outcome.report / "research_data.json").read_text())
    assert "prose: local" in data["experimental_setup"]["dataset"]["name"]
