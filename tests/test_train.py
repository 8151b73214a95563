"""Training one run: learning, schedule, exact resume, divergence, checkpoints, metrics."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli, write_yaml
from safetensors.torch import load_file

from lmablate.config.keys import validate_run_config
from lmablate.config.run import RunConfig, TrainConfig
from lmablate.data import ValidationSet, validation_set
from lmablate.errors import LmablateError
from lmablate.model.transformer import LM
from lmablate.optim.schedules import lr_at
from lmablate.training.checkpoint import checkpoints
from lmablate.training.loop import train
from lmablate.training.metrics import evaluate, read_jsonl

TIMING_FIELDS = {"step_time", "tokens_per_s", "elapsed"}


def tiny_config(corpus: Path, tokenizer, **train) -> RunConfig:
    return validate_run_config(
        {
            "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64},
            "train": {
                "batch_size": 8,
                "seq_len": 32,
                "learning_rate": 3e-3,
                "warmup_steps": 5,
                "max_steps": 30,
                "eval_every": 10,
                "eval_tokens": 2048,
                "log_every": 5,
                "checkpoint_every": 10,
                **train,
            },
            "data": {
                "source": "local",
                "path": str(corpus),
                "tokenizer": str(tokenizer),
                "num_documents": None,
            },
        }
    )


def trajectory(run_dir: Path) -> list[dict]:
    """Every logged number that does not depend on wall-clock time."""
    return [
        {k: v for k, v in r.items() if k not in TIMING_FIELDS}
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]


def quiet_train(cfg: RunConfig, run_dir: Path, **kwargs):
    return train(cfg, run_dir, progress=False, log=lambda _: None, **kwargs)


# ------------------------------------------------------------------------------- schedule


def test_lr_schedule_edges():
    cfg = TrainConfig(learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)  # last warmup update reaches the peak
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(60, cfg) == pytest.approx(0.55e-3)  # halfway: midpoint of peak and floor
    assert lr_at(110, cfg) == pytest.approx(1e-4)  # floor = min_lr_ratio * lr at max_steps
    decay = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert lr_at(109, cfg) > 1e-4


def test_lr_schedule_without_warmup_or_floor():
    cfg = TrainConfig(learning_rate=2e-3, min_lr_ratio=0.0, warmup_steps=0, max_steps=100)
    assert lr_at(0, cfg) == pytest.approx(2e-3)
    assert lr_at(100, cfg) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------ training


def test_a_tiny_model_learns(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir, max_steps=60, eval_every=30)
    result = quiet_train(cfg, tmp_path / "run")
    summary = result.summary
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[0]["val_loss"] == pytest.approx(math.log(512), abs=0.1)  # uniform at init
    assert summary["status"] == "complete"
    assert summary["final_val_loss"] < evals[0]["val_loss"] - 0.8
    assert summary["final_val_accuracy"] > evals[0]["val_accuracy"]
    assert summary["tokens_seen"] == 60 * 8 * 32
    for name in (
        "status",
        "final_val_loss",
        "final_val_bpb",
        "best_val_loss",
        "final_train_loss",
        "tokens_seen",
        "wall_time_s",
        "tokens_per_s",
        "mfu",
    ):
        assert name in summary
    assert summary["mfu"] is None  # no known peak for a CPU: never a guess
    assert summary["tokens_per_s"] > 0 and summary["environment"]["torch"] == torch.__version__
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "summary.json", "tokenizer/tokenizer.json"):
        assert (run / name).is_file()
    assert [p.name for p in checkpoints(run)] == ["step-00000060"]  # final one kept on success


def test_resume_is_bit_identical(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir)
    quiet_train(cfg, tmp_path / "whole")

    stopped = quiet_train(cfg, tmp_path / "split", stop_at=13)
    assert stopped.status == "stopped" and stopped.step == 13
    assert not (tmp_path / "split" / "summary.json").exists()
    resumed = quiet_train(cfg, tmp_path / "split")
    assert resumed.status == "complete"

    assert trajectory(tmp_path / "split") == trajectory(tmp_path / "whole")
    final = "checkpoint/step-00000030/model.safetensors"
    whole, split = load_file(tmp_path / "whole" / final), load_file(tmp_path / "split" / final)
    for name, tensor in whole.items():
        assert torch.equal(tensor, split[name]), name


def test_resume_from_an_older_checkpoint_drops_replayed_lines(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir)
    quiet_train(cfg, tmp_path / "whole")
    quiet_train(cfg, tmp_path / "split", stop_at=13)
    # as if killed after logging step 13 but before its checkpoint landed: newest is step 10
    newest = checkpoints(tmp_path / "split")[-1]
    (newest / "model.safetensors").write_bytes(b"torn")  # corrupt: checksum must catch it
    messages: list[str] = []
    train(cfg, tmp_path / "split", progress=False, log=messages.append)
    assert any("corrupt" in m and "does not match its checksum" in m for m in messages)
    assert any("resuming" in m and "from step 10" in m for m in messages)
    assert trajectory(tmp_path / "split") == trajectory(tmp_path / "whole")


def test_finished_runs_are_left_alone(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir, max_steps=10, eval_every=5)
    quiet_train(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    messages: list[str] = []
    result = train(cfg, tmp_path / "run", progress=False, log=messages.append)
    assert result.status == "complete" and "already finished" in messages[0]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_resuming_with_another_config_is_refused(tmp_path, corpus, tokenizer_dir):
    quiet_train(tiny_config(corpus, tokenizer_dir), tmp_path / "run", stop_at=5)
    changed = tiny_config(corpus, tokenizer_dir, learning_rate=1e-3)
    with pytest.raises(LmablateError, match=r"different config \(train.learning_rate: 0.003 -> "):
        quiet_train(changed, tmp_path / "run")


def test_divergence_is_a_status_not_a_crash(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir, learning_rate=1e6, max_steps=20)
    result = quiet_train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert result.status == summary["status"] == "diverged"
    assert 1 <= summary["diverged_at_step"] <= 5
    assert "non-finite" in summary["message"]
    assert summary["final_val_loss"] is None  # a diverged run has no final result
    assert summary["best_val_loss"] == pytest.approx(math.log(512), abs=0.1)  # the step-0 eval
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0]
    for path in checkpoints(tmp_path / "run"):  # nothing non-finite was checkpointed
        assert all(torch.isfinite(t).all() for t in load_file(path / "model.safetensors").values())


def test_seed_fixes_init_and_data_seed_fixes_batches(tmp_path, corpus, tokenizer_dir):
    def step0_and_first_loss(**seeds) -> tuple[float, float]:
        run = tmp_path / "-".join(f"{k}{v}" for k, v in seeds.items())
        quiet_train(tiny_config(corpus, tokenizer_dir, max_steps=6, eval_every=6, **seeds), run)
        records = read_jsonl(run / "metrics.jsonl")
        return records[0]["val_loss"], records[1]["loss"]

    base = step0_and_first_loss(seed=0, data_seed=0)
    other_data = step0_and_first_loss(seed=0, data_seed=1)
    other_init = step0_and_first_loss(seed=1, data_seed=0)
    assert other_data[0] == base[0] and other_data[1] != base[1]  # same init, other batches
    assert other_init[0] != base[0]  # other init


def test_gradient_accumulation_matches_one_big_batch(tmp_path, corpus, tokenizer_dir):
    one = tiny_config(corpus, tokenizer_dir, max_steps=10, eval_every=10)
    four = tiny_config(corpus, tokenizer_dir, max_steps=10, eval_every=10, grad_accum_steps=4)
    quiet_train(one, tmp_path / "one")
    quiet_train(four, tmp_path / "four")
    for a, b in zip(trajectory(tmp_path / "one"), trajectory(tmp_path / "four"), strict=True):
        for key in ("loss", "val_loss", "grad_norm"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), key


# ------------------------------------------------------------------------------- metrics


def test_eval_metrics_match_a_per_token_reference():
    torch.manual_seed(0)
    vocab = 50
    model = LM(
        RunConfig(model={"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64}).model, vocab
    ).eval()
    tokens = np.random.default_rng(0).integers(0, vocab, 300).astype(np.uint16)
    val: ValidationSet = validation_set(tokens, 16, 200, lambda ids: "ab" * len(ids))
    got = evaluate(model, val, vocab, torch.device("cpu"), "fp32")

    nll = correct = top5 = confidence = entropy = 0.0
    with torch.no_grad():
        logits = model(val.inputs)
    for w in range(val.inputs.shape[0]):
        for t in range(val.inputs.shape[1]):
            target = int(val.targets[w, t])
            if target < 0:
                continue
            probs = F.softmax(logits[w, t].double(), dim=-1)
            nll -= math.log(probs[target])
            ranking = sorted(range(vocab), key=lambda i: -probs[i])
            correct += ranking[0] == target
            top5 += target in ranking[:5]
            confidence += float(probs.max())
            entropy -= sum(float(p) * math.log(float(p)) for p in probs)
    n = 200
    assert got["val_loss"] == pytest.approx(nll / n, rel=1e-5)
    assert got["val_bpb"] == pytest.approx(nll / math.log(2) / 400, rel=1e-5)
    assert got["val_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert got["val_accuracy"] == pytest.approx(correct / n)
    assert got["val_top5_accuracy"] == pytest.approx(top5 / n)
    assert got["val_confidence"] == pytest.approx(confidence / n, rel=1e-5)
    assert got["val_entropy"] == pytest.approx(entropy / n, rel=1e-5)


def test_per_document_losses_add_up_to_the_evaluation():
    """Targets belong to the document whose EOS ends them; each document's summed nats, by
    hand from the full logits, and their total is the evaluation's."""
    torch.manual_seed(0)
    vocab, eos = 50, 0
    model = LM(
        RunConfig(model={"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64}).model, vocab
    ).eval()
    rng = np.random.default_rng(1)
    documents = [[*rng.integers(1, vocab, size=n).tolist(), eos] for n in (30, 5, 61, 20, 90)]
    tokens = np.array([t for d in documents for t in d], dtype=np.uint16)
    val = validation_set(tokens, 16, 150, lambda ids: "ab" * len(ids), eos_id=eos)
    got = evaluate(model, val, vocab, torch.device("cpu"), "fp32", per_document=True)

    # a target is the stream token it predicts, owned by that token's document (its EOS too)
    owner = [k for k, d in enumerate(documents) for _ in d]
    expected = [[0, 0.0] for _ in range(val.n_documents)]
    with torch.no_grad():
        log_probs = F.log_softmax(model(val.inputs).double(), dim=-1).flatten(0, 1)
    for j in range(150):  # target j is stream token j + 1
        expected[owner[j + 1]][0] += 1
        expected[owner[j + 1]][1] -= float(log_probs[j, int(tokens[j + 1])])
    assert val.n_documents == 5  # the 150 targets end inside the fifth document
    # the first document's first token is context only; the last is cut at 150 targets
    assert [n for n, _ in got["documents"]] == [n for n, _ in expected] == [30, 6, 62, 21, 31]
    for (_, nats), (_, want) in zip(got["documents"], expected, strict=True):
        assert nats == pytest.approx(want, rel=1e-5)
    total = sum(nats for _, nats in got["documents"])
    assert total / val.n_targets == pytest.approx(got["val_loss"], rel=1e-9)


# ---------------------------------------------------------------------------- command line


def smollm_sized_tokenizer(directory: Path, documents: list[str]) -> Path:
    """A tokenizer directory with SmolLM's 49,152-token vocabulary (BPE + reserved tokens)."""
    from lmablate.data.tokenizers import train_bpe

    tokenizer = train_bpe(documents, 2000)
    missing = 49_152 - tokenizer.vocab_size
    tokenizer.backend.add_tokens([f"<reserved_{i}>" for i in range(missing)])
    assert tokenizer.vocab_size == 49_152
    tokenizer.save(directory)
    return directory


def test_cli_train_local_jsonl_with_smollm_sized_vocab(tmp_path, corpus, documents):
    tokenizer = smollm_sized_tokenizer(tmp_path / "tokenizer", documents)
    config = write_yaml(
        tmp_path / "run.yaml",
        f"""\
        model: {{d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}}
        train: {{batch_size: 4, seq_len: 32, max_steps: 12, warmup_steps: 2, eval_every: 6,
                eval_tokens: 512, log_every: 3, checkpoint_every: 6, learning_rate: 3e-3}}
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer}, num_documents: null}}
        """,
    )
    out = tmp_path / "run"
    result = run_cli("train", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "status        complete at step 12" in result.stdout
    assert "val loss" in result.stdout and "tokens/s" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vocab_size"] == 49_152 and summary["status"] == "complete"
    assert json.loads((out / "config.json").read_text())["train"]["max_steps"] == 12

    again = run_cli("train", str(config), "--out", str(out), "--quiet")
    assert again.returncode == 0 and again.stderr == ""


def test_ctrl_c_checkpoints_and_says_how_to_resume(tmp_path, corpus, tokenizer_dir):
    config = write_yaml(
        tmp_path / "run.yaml",
        f"""\
        model: {{d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}}
        train: {{batch_size: 8, seq_len: 32, max_steps: 100000, warmup_steps: 2,
                eval_every: 100000, eval_tokens: 512, log_every: 1, checkpoint_every: 100000}}
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
        """,
    )
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lmablate", "train", str(config), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_jsonl(metrics)) < 5:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "checkpoint saved. Resume with:" in stderr
    assert f"lmablate train {config} --out {out}" in stderr
    assert "Traceback" not in stderr
    saved = checkpoints(out)
    assert len(saved) == 1
    step = int(saved[0].name.split("-")[1])
    assert read_jsonl(metrics)[-1]["step"] == step


def test_resuming_on_changed_data_is_refused(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir)
    quiet_train(cfg, tmp_path / "run", stop_at=5)
    corpus.write_text(corpus.read_text() + json.dumps({"text": "One more document."}) + "\n")
    with pytest.raises(LmablateError, match="was started on other data"):
        quiet_train(cfg, tmp_path / "run")


def test_compiled_run_learns_the_same_and_reports_compilation_apart(
    tmp_path, corpus, tokenizer_dir
):
    eager = quiet_train(tiny_config(corpus, tokenizer_dir, max_steps=10), tmp_path / "eager")
    compiled = quiet_train(
        tiny_config(corpus, tokenizer_dir, max_steps=10, compile=True), tmp_path / "compiled"
    )
    a, b = trajectory(tmp_path / "eager"), trajectory(tmp_path / "compiled")
    for x, y in zip(a, b, strict=True):
        assert x.get("loss", x.get("val_loss")) == pytest.approx(
            y.get("loss", y.get("val_loss")), rel=1e-4
        )
    summary = compiled.summary
    assert eager.summary["compile_s"] is None
    assert 0 < summary["compile_s"] < summary["wall_time_s"]
    assert summary["train_time_s"] < summary["wall_time_s"] - summary["compile_s"]


def test_every_schedule_by_hand():
    base = dict(learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    schedules = {
        name: TrainConfig(**base, **extra)
        for name, extra in {
            "wsd": {"schedule": "wsd", "decay_fraction": 0.2},  # decay from step 88 (110 - 22)
            "wsd_sqrt": {"schedule": "wsd", "decay_fraction": 0.2, "decay_shape": "sqrt"},
            "wsd_cosine": {"schedule": "wsd", "decay_fraction": 0.2, "decay_shape": "cosine"},
            "linear": {"schedule": "linear"},
            "constant": {"schedule": "constant"},
        }.items()
    }
    for cfg in schedules.values():  # the same warmup for every schedule
        assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    wsd = schedules["wsd"]
    assert lr_at(50, wsd) == lr_at(88, wsd) == pytest.approx(1e-3)  # stable until the decay
    assert lr_at(99, wsd) == pytest.approx(1e-4 + 9e-4 * (1 - 11 / 22))
    assert lr_at(99, schedules["wsd_sqrt"]) == pytest.approx(1e-4 + 9e-4 * (1 - (0.5**0.5)))
    assert lr_at(99, schedules["wsd_cosine"]) == pytest.approx(5.5e-4)
    assert lr_at(60, schedules["linear"]) == pytest.approx(5.5e-4)  # halfway down the line
    assert lr_at(109, schedules["constant"]) == pytest.approx(1e-3)
    to_zero = TrainConfig(**{**base, "min_lr_ratio": 0.0}, schedule="linear")
    assert lr_at(109, to_zero) == pytest.approx(1e-3 * (1 - 99 / 100))
    decays = [lr_at(s, schedules[name]) for name in ("wsd", "linear") for s in range(88, 110)]
    assert all(a >= b for a, b in itertools.pairwise(decays[:22])) and decays[21] > 1e-4
    with pytest.raises(ValueError, match="decay_fraction"):
        TrainConfig(**base, schedule="wsd", decay_fraction=0.0)


def test_a_run_follows_its_schedule(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_config(corpus, tokenizer_dir, schedule="wsd", decay_fraction=0.5, max_steps=20)
    quiet_train(cfg, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    logged = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert len(logged) == 4 and all(lr == lr_at(step - 1, cfg.train) for step, lr in logged.items())
    assert logged[10] == cfg.train.learning_rate  # update 9: still stable


def test_a_run_that_failed_to_start_can_be_retried_with_another_config(
    tmp_path, corpus, tokenizer_dir, monkeypatch
):
    bad = tiny_config(corpus, tokenizer_dir, device="cuda:99", max_steps=10)
    with pytest.raises(LmablateError, match="cuda:99"):
        quiet_train(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory was written

    def broken(*args, **kwargs):
        raise RuntimeError("the model could not be built")

    with monkeypatch.context() as patch:  # a failure after config.json was written
        patch.setattr("lmablate.training.loop.LM", broken)
        with pytest.raises(RuntimeError):
            quiet_train(tiny_config(corpus, tokenizer_dir, max_steps=8), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
    fixed = tiny_config(corpus, tokenizer_dir, device="cpu", max_steps=10)
    assert quiet_train(fixed, tmp_path / "run").status == "complete"


def test_a_run_that_cannot_fit_is_refused_before_anything_is_written(
    tmp_path, corpus, tokenizer_dir, monkeypatch
):
    """The memory floor (weights, gradients, AdamW moments and one micro-batch's matmul inputs)
    by hand, and a run above the device's memory refused with the documented advice."""
    from lmablate.model.counts import count_parameters, training_memory_floor

    cfg = tiny_config(corpus, tokenizer_dir)
    floor = training_memory_floor(cfg, 512, "fp32")
    params = count_parameters(cfg.model, 512)["total"]
    tc, m = cfg.train, cfg.model
    micro = tc.batch_size // tc.grad_accum_steps
    assert floor["weights"] == params * 16  # fp32 weights + grads + two AdamW moments
    assert (
        floor["activations"] == micro * tc.seq_len * m.n_layers * (6 * m.d_model + 2 * m.d_ff) * 4
    )
    assert training_memory_floor(cfg, 512, "bf16")["activations"] == floor["activations"] // 2

    monkeypatch.setattr("lmablate.training.loop.memory_bytes", lambda device: 1024)
    with pytest.raises(LmablateError, match=r"lower train\.batch_size"):
        train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run").exists()
