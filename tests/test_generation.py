"""Generation: cache parity, batching, Llama parity, sampling options, quality measures, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import jsonl_corpus, run_cli, tiny_run_config

from lmablate.config.run import ModelConfig
from lmablate.data.tokenizers import load_tokenizer
from lmablate.errors import LmablateError
from lmablate.export import llama_config, to_hf_state_dict
from lmablate.generation import (
    Sampling,
    _decode_layout,
    _DecodeLinear,
    continuation_perplexity,
    distinct_n,
    generate,
    quality,
    repetition_rate,
)
from lmablate.model.transformer import LM, KVCache

PROMPTS = ["The function", "A class definition may be", "x", "Assignment statements are used"]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(str(tokenizer_dir))


def tiny_model(tokenizer, **overrides) -> LM:
    fields = dict(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=64, init_std=0.1)
    torch.manual_seed(0)
    return LM(ModelConfig(**{**fields, **overrides}), tokenizer.vocab_size).eval()


def greedy(max_new_tokens: int = 12) -> Sampling:
    return Sampling(max_new_tokens=max_new_tokens, temperature=0.0)


def ids_of(samples) -> list[list[int]]:
    return [s["new_token_ids"] for s in samples]


def test_cache_equals_recompute(tokenizer):
    model = tiny_model(tokenizer)
    cached = generate(model, tokenizer, PROMPTS, greedy(), context=64)
    recomputed = generate(model, tokenizer, PROMPTS, greedy(), context=64, use_cache=False)
    assert ids_of(cached) == ids_of(recomputed)
    assert all(len(ids) == 12 for ids in ids_of(cached))


@pytest.mark.parametrize("mlp", ["swiglu", "silu"])
def test_decode_layout_keeps_logits_and_leaves_the_model_as_it_was(tokenizer, mlp):
    model = tiny_model(tokenizer, mlp=mlp)
    before = {name: type(m) for name, m in model.named_modules()}
    ids = torch.randint(0, tokenizer.vocab_size, (3, 6))
    positions = torch.arange(6).expand(3, 6)
    with torch.inference_mode():
        plain_cache = KVCache.allocate(model.cfg, 3, 6, torch.device("cpu"), torch.float32)
        model(ids[:, :5], positions=positions[:, :5], cache=plain_cache)
        expected = model(ids[:, 5:], positions=positions[:, 5:], cache=plain_cache)
        layout_cache = KVCache.allocate(model.cfg, 3, 6, torch.device("cpu"), torch.float32)
        with _decode_layout(model, rows=3, precision="fp32"):
            assert isinstance(model.blocks[0].attn.qkv_proj, _DecodeLinear)
            assert isinstance(model.lm_head, _DecodeLinear)
            model(ids[:, :5], positions=positions[:, :5], cache=layout_cache)  # plain: 15 rows
            got = model(ids[:, 5:], positions=positions[:, 5:], cache=layout_cache)  # 3 rows
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert {name: type(m) for name, m in model.named_modules()} == before
    assert model.blocks[0].attn.qkv_proj is None and model.blocks[0].mlp.gate_up_proj is None


def test_batched_prompts_equal_prompts_alone(tokenizer):
    model = tiny_model(tokenizer)
    batched = ids_of(generate(model, tokenizer, PROMPTS, greedy(), context=64))
    alone = [ids_of(generate(model, tokenizer, [p], greedy(), context=64))[0] for p in PROMPTS]
    assert batched == alone


def test_greedy_alone_equals_plain_argmax_loop(tokenizer):
    model = tiny_model(tokenizer)
    ids = tokenizer.encode(PROMPTS[1])
    with torch.no_grad():
        for _ in range(10):
            logits = model(torch.tensor([ids]))[0, -1]
            ids.append(int(logits.argmax()))
    ours = generate(model, tokenizer, [PROMPTS[1]], greedy(10), context=64)[0]
    assert ours["new_token_ids"] == ids[-10:]


def test_greedy_equals_transformers_llama_generate(tokenizer):
    transformers = pytest.importorskip("transformers")
    model = tiny_model(tokenizer, n_kv_heads=2)  # SwiGLU, grouped-query attention
    cfg = model.cfg
    fields = llama_config(cfg, model.vocab_size, context=64, eos_id=tokenizer.eos_id)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), cfg))
    for prompt in PROMPTS:
        input_ids = torch.tensor([tokenizer.encode(prompt)])
        theirs = hf.generate(
            input_ids,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.eos_id,
        )
        expected = theirs[0, input_ids.shape[1] :].tolist()
        if tokenizer.eos_id in expected:
            expected = expected[: expected.index(tokenizer.eos_id)]
        ours = generate(model, tokenizer, [prompt], greedy(), context=64)[0]
        assert ours["new_token_ids"] == expected, prompt


def test_sampling_is_seeded_and_options_reduce_to_greedy(tokenizer):
    model = tiny_model(tokenizer)
    warm = Sampling(max_new_tokens=12, temperature=1.0, seed=3)
    first = ids_of(generate(model, tokenizer, PROMPTS, warm, context=64))
    assert first == ids_of(generate(model, tokenizer, PROMPTS, warm, context=64))
    other = Sampling(max_new_tokens=12, temperature=1.0, seed=4)
    assert first != ids_of(generate(model, tokenizer, PROMPTS, other, context=64))
    expected = ids_of(generate(model, tokenizer, PROMPTS, greedy(), context=64))
    for settings in (
        Sampling(max_new_tokens=12, temperature=1.0, top_k=1),
        Sampling(max_new_tokens=12, temperature=1.0, top_p=1e-6),
    ):
        assert ids_of(generate(model, tokenizer, PROMPTS, settings, context=64)) == expected


def test_repetition_penalty_discourages_repeats(tokenizer):
    model = tiny_model(tokenizer)
    plain = generate(model, tokenizer, PROMPTS, greedy(30), context=64)
    penalized = generate(
        model,
        tokenizer,
        PROMPTS,
        Sampling(max_new_tokens=30, temperature=0, repetition_penalty=1e6),
        context=64,
    )
    for prompt, sample in zip(PROMPTS, penalized, strict=True):
        seen = tokenizer.encode(prompt) + sample["new_token_ids"]
        assert len(set(seen)) == len(seen)  # nothing repeats once any repeat is penalized
    assert sum(map(repetition_rate, [[s] for s in ids_of(plain)]), 0.0) >= 0  # sanity


def test_stops_at_eos(tokenizer):
    class EndsAtOnce(LM):
        def forward(self, *args, **kwargs):
            logits = super().forward(*args, **kwargs)
            logits[..., tokenizer.eos_id] = 1e4
            return logits

    torch.manual_seed(0)
    model = EndsAtOnce(
        ModelConfig(d_model=32, n_heads=4, n_layers=1, d_ff=64), tokenizer.vocab_size
    ).eval()
    samples = generate(model, tokenizer, PROMPTS[:2], greedy(), context=64)
    assert [s["new_tokens"] for s in samples] == [0, 0]
    assert all(s["stopped"] == "eos" and s["generated"] == s["prompt"] for s in samples)


def test_long_prompts_are_truncated_from_the_left(tokenizer):
    model = tiny_model(tokenizer)
    long_prompt = " ".join(["words"] * 200)
    with pytest.warns(UserWarning, match="truncated from the left"):
        sample = generate(model, tokenizer, [long_prompt], greedy(8), context=32)[0]
    assert sample["new_tokens"] == 8


def test_bad_sampling_settings():
    with pytest.raises(LmablateError, match=r"top_p 1.5 \(valid: in \(0, 1\]\)"):
        Sampling(top_p=1.5)
    with pytest.raises(LmablateError, match="temperature -1"):
        Sampling(temperature=-1)


def test_quality_measures_by_hand():
    a, b = [1, 2, 3, 1, 2, 3], [4, 4, 4, 4, 4]
    assert distinct_n([a, b], 1) == pytest.approx(4 / 11)
    assert distinct_n([a, b], 2) == pytest.approx(4 / 9)  # (1,2) (2,3) (3,1) (4,4)
    assert repetition_rate([a, b]) == pytest.approx(1 / 5)  # a: 3 unique of 3; b: 1 of 2
    assert distinct_n([[1]], 2) is None
    measures = quality(
        [
            {"new_token_ids": a, "baseline_ppl": 4.0, "bigram_ppl": 2.0},
            {"new_token_ids": b, "baseline_ppl": 16.0, "bigram_ppl": None},  # not scored
        ]
    )
    assert measures["mean_new_tokens"] == 5.5
    assert measures["mean_baseline_ppl"] == pytest.approx(8.0)  # geometric mean
    assert measures["mean_bigram_ppl"] == pytest.approx(2.0)  # over the scored ones only


def test_continuation_perplexity_by_hand(tokenizer):
    model = tiny_model(tokenizer)
    prompt, continuation = "The function", [5, 9, 11]
    ids = tokenizer.encode(prompt) + continuation
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    nll = F.cross_entropy(logits[-3:], torch.tensor(continuation))
    assert continuation_perplexity(model, tokenizer, prompt, continuation, 64) == pytest.approx(
        math.exp(nll.item()), rel=1e-5
    )


# ---------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, documents, tokenizer_dir):
    from lmablate.training.loop import train

    tmp = tmp_path_factory.mktemp("gen")
    corpus = jsonl_corpus(tmp / "c.jsonl", documents)
    cfg = tiny_run_config(
        corpus,
        tokenizer_dir,
        model={"n_layers": 2},
        data={"cache_dir": str(tmp / "cache")},
        seq_len=32,
        max_steps=6,
        eval_every=6,
        eval_tokens=256,
    )
    train(cfg, tmp / "run", progress=False, log=lambda _: None)
    return tmp / "run"


def test_cli_generate(trained_run, tmp_path):
    result = run_cli(
        "generate",
        str(trained_run),
        "--prompt",
        "The function",
        "--prompt",
        "A class",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "── prompt 1" in result.stdout and "The function" in result.stdout
    assert "── continuation (" in result.stdout
    as_json = run_cli("generate", str(trained_run), "--greedy", "--json", "--max-new-tokens", "4")
    data = json.loads(as_json.stdout)
    assert len(data["samples"]) == 5 and data["settings"]["temperature"] == 0.0  # reference set
    assert data["step"] == 6

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First prompt\n\nSecond prompt\n")
    from_file = run_cli("generate", str(trained_run), "--prompts-file", str(prompts), "--json")
    assert [s["prompt"] for s in json.loads(from_file.stdout)["samples"]] == [
        "First prompt",
        "Second prompt",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "  "], "a prompt is empty"),
        (["--prompts-file", "/no/such/file"], "does not exist"),
        (["--top-p", "2"], "top_p 2.0"),
    ],
)
def test_cli_generate_mistakes(trained_run, args, message):
    result = run_cli("generate", str(trained_run), *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_generate_without_a_run_or_checkpoint(tmp_path, trained_run):
    missing = run_cli("generate", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((trained_run / "config.json").read_text())
    import shutil

    shutil.copytree(trained_run / "tokenizer", bare / "tokenizer")
    result = run_cli("generate", str(bare))
    assert result.returncode == 2 and "has no checkpoint yet: train it first" in result.stderr


def test_why_a_run_has_no_weights(tmp_path, trained_run):
    """A checkpoint that fails its checksum, and a run that diverged before its first
    checkpoint, each say so."""
    import shutil

    from lmablate.training.checkpoint import checkpoints, load_run

    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    for path in checkpoints(damaged):
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(LmablateError, match="every checkpoint fails its checks"):
        load_run(damaged)

    diverged = tmp_path / "diverged"
    shutil.copytree(trained_run, diverged, ignore=shutil.ignore_patterns("checkpoint"))
    (diverged / "summary.json").write_text(json.dumps({"status": "diverged", "step": 3}))
    with pytest.raises(LmablateError, match="diverged at step 3, before its first checkpoint"):
        load_run(diverged)


def test_repetition_penalty_ignores_left_padding(tokenizer):
    """Padding is filled with the EOS id; penalizing it would change padded rows only."""

    class EosCompetes(LM):
        def forward(self, *args, **kwargs):
            logits = super().forward(*args, **kwargs)
            logits[..., tokenizer.eos_id] = logits.max(-1).values + 0.01
            return logits

    torch.manual_seed(0)
    model = EosCompetes(
        ModelConfig(d_model=32, n_heads=4, n_layers=1, d_ff=64, init_std=0.1), tokenizer.vocab_size
    ).eval()
    settings = Sampling(max_new_tokens=6, temperature=0, repetition_penalty=1.5)
    batched = ids_of(generate(model, tokenizer, PROMPTS, settings, context=64))
    alone = [ids_of(generate(model, tokenizer, [p], settings, context=64))[0] for p in PROMPTS]
    assert batched == alone
