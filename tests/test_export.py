"""Hugging Face export: a trained run loads in transformers and computes the same thing."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli

from lmablate.config.keys import validate_run_config
from lmablate.errors import ConfigError
from lmablate.export import export_run
from lmablate.generation import Sampling, generate
from lmablate.training.checkpoint import load_run
from lmablate.training.loop import train

transformers = pytest.importorskip("transformers")


def trained(tmp_path, corpus, tokenizer_dir, **model):
    cfg = validate_run_config(
        {
            "model": {
                "d_model": 32,
                "n_heads": 4,
                "n_kv_heads": 2,
                "n_layers": 2,
                "d_ff": 64,
                "mlp": "swiglu",
                **model,
            },
            "train": {
                "batch_size": 4,
                "seq_len": 32,
                "max_steps": 8,
                "warmup_steps": 1,
                "eval_every": 8,
                "eval_tokens": 256,
                "log_every": 2,
                "learning_rate": 3e-3,
            },
            "data": {
                "source": "local",
                "path": str(corpus),
                "tokenizer": str(tokenizer_dir),
                "num_documents": None,
            },
        }
    )
    run_dir = tmp_path / "run"
    train(cfg, run_dir, progress=False, log=lambda _: None)
    return run_dir


@pytest.mark.parametrize("tie", [True, False])
def test_exported_model_matches_lmablate(tmp_path, corpus, tokenizer_dir, tie):
    run_dir = trained(tmp_path, corpus, tokenizer_dir, tie_embeddings=tie)
    out = export_run(run_dir, tmp_path / "hf")
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert (out / name).is_file(), name

    hf, info = transformers.AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info.get("mismatched_keys")
    assert type(hf).__name__ == "LlamaForCausalLM"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    ours, our_tokenizer, cfg, _ = load_run(run_dir)

    text = "Assignment statements are used to bind names"
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    assert ids[0].tolist() == our_tokenizer.encode(text)
    assert hf.config.vocab_size == len(tokenizer) == our_tokenizer.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(
            hf.eval()(ids).logits, ours(ids)[..., : len(tokenizer)], rtol=1e-5, atol=1e-5
        )

    theirs = hf.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1] :].tolist()
    if our_tokenizer.eos_id in theirs:
        theirs = theirs[: theirs.index(our_tokenizer.eos_id)]
    mine = generate(
        ours,
        our_tokenizer,
        [text],
        Sampling(max_new_tokens=10, temperature=0),
        context=cfg.train.seq_len,
    )[0]["new_token_ids"]
    assert mine == theirs

    card = (out / "README.md").read_text()
    assert "final validation loss" in card and "LlamaForCausalLM" in card


@pytest.mark.parametrize(
    ("model", "architecture"),
    [
        ({"sliding_window": 4, "global_every": 2}, "MinistralForCausalLM"),
        ({"qk_norm": True, "sliding_window": 4}, "Qwen3ForCausalLM"),
        ({"norm_placement": "sandwich", "logit_softcap": 3.0}, "Gemma2ForCausalLM"),
        ({"norm_placement": "sandwich", "logit_softcap": 3.0, "sliding_window": 4,
          "global_every": 2}, "Gemma2ForCausalLM"),
    ],
)  # fmt: skip
def test_windowed_and_soft_capped_runs_export_at_the_tokenizers_size(
    tmp_path, corpus, tokenizer_dir, model, architecture
):
    """vocab_size 600 pads the embedding past the tokenizer's 512: those rows are no tokens,
    so the export leaves them out and sampling from it can never return one."""
    run_dir = trained(tmp_path, corpus, tokenizer_dir, vocab_size=600, **model)
    out = export_run(run_dir, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(hf).__name__ == architecture
    ours, tokenizer, _, _ = load_run(run_dir)
    size = tokenizer.vocab_size
    assert ours.vocab_size == 600 > size == len(transformers.AutoTokenizer.from_pretrained(out))
    ids = torch.tensor([tokenizer.encode("Assignment statements are used to bind names")])
    assert ids.shape[1] > 2 * 4  # longer than the window: the window changes the logits
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids)[..., :size], rtol=1e-5, atol=1e-5)
        torch.manual_seed(0)
        sampled = hf.generate(
            ids.repeat(8, 1), max_new_tokens=24, do_sample=True, temperature=5.0, top_k=0
        )
    assert sampled.max().item() < size
    card = (out / "README.md").read_text()
    assert f"{size:,} tokens (the embedding's {600 - size} padding rows are left out" in card


def test_bfloat16_export(tmp_path, corpus, tokenizer_dir):
    out = export_run(trained(tmp_path, corpus, tokenizer_dir), tmp_path / "hf", "bfloat16")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype="auto")
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16


def test_plain_silu_mlp_is_refused(tmp_path, corpus, tokenizer_dir):
    run_dir = trained(tmp_path, corpus, tokenizer_dir, mlp="silu")
    with pytest.raises(ConfigError, match=r"no Hugging Face architecture.*mlp 'silu'.*gated"):
        export_run(run_dir, tmp_path / "hf")
    result = run_cli("export", str(run_dir), str(tmp_path / "hf2"))
    assert result.returncode == 2 and "mlp 'silu' (needs a gated MLP" in result.stderr
    assert not (tmp_path / "hf2" / "model.safetensors").exists()


def test_cli_export_all(tmp_path, corpus, tokenizer_dir):
    study = tmp_path / "study.yaml"
    study.write_text(f"""\
name: tiny
data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
baseline:
  model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
  train: {{batch_size: 4, seq_len: 16, max_steps: 4, warmup_steps: 1, eval_every: 4,
          eval_tokens: 128, log_every: 2}}
variants:
  plain: {{mlp: silu}}
samples: {{max_new_tokens: 2, prompts: [Hi]}}
""")
    assert run_cli("run", str(study), "--out", str(tmp_path / "out"), "--quiet").returncode == 0
    result = run_cli("export", "--all", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "exported 1 run(s)" in result.stdout
    assert "skipped plain/seed-0" in result.stderr
    assert (tmp_path / "out/export/baseline/seed-0/model.safetensors").is_file()


def test_export_never_overwrites_what_it_was_not_asked_to(tmp_path, corpus, tokenizer_dir):
    run_dir = trained(tmp_path, corpus, tokenizer_dir)
    config = (run_dir / "config.json").read_text()
    for out, message in (
        (run_dir, "is the run directory"),
        (run_dir / "exported", "is inside the run directory"),
    ):
        result = run_cli("export", str(run_dir), str(out))
        assert result.returncode == 2 and message in result.stderr, result.stderr[-500:]
    assert (run_dir / "config.json").read_text() == config  # the run is untouched
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # the user's own files are never an export's to replace
        result = run_cli("export", str(run_dir), str(busy), *extra)
        assert result.returncode == 2 and "did not write (notes.txt)" in result.stderr
        assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    done = tmp_path / "done"
    assert run_cli("export", str(run_dir), str(done)).returncode == 0
    assert json.loads((done / ".lmablate").read_text()) == {"kind": "export"}
    result = run_cli("export", str(run_dir), str(done))
    assert result.returncode == 2 and "earlier export; pass --overwrite" in result.stderr
    (done / ".lmablate").unlink()  # an export from before the marker: recognised by its names
    (done / "chat_template.jinja").write_text("{{ stale }}")  # one this export does not write
    assert run_cli("export", str(run_dir), str(done), "--overwrite").returncode == 0
    assert (done / ".lmablate").is_file() and (done / "model.safetensors").is_file()
    assert not (done / "chat_template.jinja").exists()  # nothing of the earlier export outlives it
    (tmp_path / "file").write_text("x")
    result = run_cli("export", str(run_dir), str(tmp_path / "file"))
    assert result.returncode == 2 and "is a file" in result.stderr


@pytest.mark.parametrize(
    ("model", "architecture"),
    [
        ({"tie_embeddings": True}, "LlamaForCausalLM"),
        ({"tie_embeddings": False, "mup_base_head_dim": 4}, "LlamaForCausalLM"),
        ({"qk_norm": True}, "Qwen3ForCausalLM"),
        ({"norm": "layernorm", "mlp": "gelu", "n_kv_heads": None, "bias": True},
         "GPTNeoXForCausalLM"),
    ],
)  # fmt: skip
def test_an_exported_mup_model_computes_the_same_logits(
    tmp_path, corpus, tokenizer_dir, model, architecture
):
    """Width 32 over a base of 16 (m = 2): the output multiplier and the 1 / head_dim
    attention scale are folded into the exported weights."""
    run_dir = trained(
        tmp_path, corpus, tokenizer_dir, parametrization="mup", mup_base_width=16, **model
    )
    out = export_run(run_dir, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert type(hf).__name__ == architecture
    ours, tokenizer, _, _ = load_run(run_dir)
    assert ours.cfg.width_mult == 2.0
    ids = torch.tensor([tokenizer.encode("Assignment statements are used to bind names")])
    with torch.no_grad():
        torch.testing.assert_close(
            hf.eval()(ids).logits, ours(ids)[..., : tokenizer.vocab_size], rtol=1e-5, atol=1e-5
        )


def test_a_bias_free_neox_export_says_its_zero_biases_where_it_counts_parameters(
    tmp_path, corpus, tokenizer_dir
):
    run_dir = trained(
        tmp_path, corpus, tokenizer_dir, norm="layernorm", mlp="gelu", n_kv_heads=None
    )
    out = export_run(run_dir, tmp_path / "hf")
    card = (out / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| architecture"))
    ours = sum(p.numel() for p in load_run(run_dir)[0].parameters())
    assert f"{ours / 1e6:.2f}M parameters (the weights file holds" in row
    assert "exported as zeros" in row
    # a model with biases of its own exports no zeros, and its card says nothing of them
    biased = export_run(
        trained(
            tmp_path / "b",
            corpus,
            tokenizer_dir,
            norm="layernorm",
            mlp="gelu",
            n_kv_heads=None,
            bias=True,
        ),
        tmp_path / "hf_b",
    )
    assert "exported as zeros" not in (biased / "README.md").read_text()


def test_a_transformers_that_would_drop_the_window_is_refused_before_any_write(
    tmp_path, corpus, tokenizer_dir, monkeypatch
):
    """An older transformers builds Gemma 2 / Qwen3 configs without layer_types: the export
    would compute another model, so it is refused, and nothing is written."""
    run_dir = trained(tmp_path, corpus, tokenizer_dir, sliding_window=4, global_every=2)
    original = transformers.AutoConfig.for_model

    def forgetful(model_type, **fields):
        config = original(model_type, **fields)
        config.layer_types = ["full_attention"] * len(config.layer_types)
        return config

    monkeypatch.setattr(transformers.AutoConfig, "for_model", forgetful)
    with pytest.raises(ConfigError, match=r"does not keep layer_types .* -U transformers"):
        export_run(run_dir, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_the_card_of_a_run_that_failed_after_a_checkpoint_says_so(tmp_path, corpus, tokenizer_dir):
    from lmablate.export import model_card

    run_dir = trained(tmp_path, corpus, tokenizer_dir)
    model, _, cfg, step = load_run(run_dir)
    card = model_card(run_dir, cfg, {"status": "failed", "message": "x"}, step, model, "float32")
    assert f"| weights | step {step} (run failed) |" in card
