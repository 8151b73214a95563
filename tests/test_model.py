"""The model against references: transformers' Llama, analytic counts, causality."""

from __future__ import annotations

import pytest
import torch

from lmablate.config.run import ModelConfig
from lmablate.errors import ConfigError
from lmablate.export import check_exportable, llama_config, to_hf_state_dict
from lmablate.model.counts import (
    count_parameters,
    padded_vocab_size,
    resolve_vocab_size,
    training_flops_per_token,
)
from lmablate.model.positions import apply_rope, rope_cos_sin
from lmablate.model.transformer import LM

VOCAB = 101  # deliberately not a multiple of anything


def tiny(**overrides) -> ModelConfig:
    fields = dict(d_model=32, n_heads=4, n_layers=2, d_ff=48, mlp="swiglu")
    return ModelConfig(**{**fields, **overrides})


def hf_twin(cfg: ModelConfig, model: LM):
    """transformers' Llama built from the same config export writes, with the same weights."""
    transformers = pytest.importorskip("transformers")
    fields = llama_config(cfg, model.vocab_size, context=64, eos_id=0)
    hf_cfg = transformers.LlamaConfig(**fields, attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), cfg), strict=True)
    return hf


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # multi-head attention
        {"n_kv_heads": 2},  # grouped-query attention
        {"n_kv_heads": 1, "tie_embeddings": False, "rope_theta": 500.0},  # multi-query, untied
    ],
    ids=["mha", "gqa", "mqa-untied"],
)
def test_logits_match_transformers_llama(overrides):
    cfg = tiny(**overrides)
    torch.manual_seed(0)
    model = LM(cfg, VOCAB).eval()
    hf = hf_twin(cfg, model)
    input_ids = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(input_ids)
        theirs = hf(input_ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_logits_are_causal():
    torch.manual_seed(0)
    model = LM(tiny(), VOCAB).eval()
    input_ids = torch.randint(0, VOCAB, (2, 12))
    changed = input_ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % VOCAB
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids)[:, :8], model(changed)[:, :8])
        assert not torch.allclose(model(input_ids)[:, 8:], model(changed)[:, 8:])


def test_rotary_scores_depend_on_relative_position_only():
    cfg = tiny()
    q, k = torch.randn(1, 1, 1, cfg.head_dim), torch.randn(1, 1, 1, cfg.head_dim)

    def score(q_pos: int, k_pos: int) -> float:
        cos, sin = rope_cos_sin(torch.tensor([q_pos, k_pos]), cfg.head_dim, cfg.rope_theta)
        return (apply_rope(q, cos[:1], sin[:1]) * apply_rope(k, cos[1:], sin[1:])).sum().item()

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)


@pytest.mark.parametrize("mlp", ["swiglu", "silu"])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("kv", [None, 2])
def test_parameter_counts_match_built_model(mlp, tie, kv):
    cfg = tiny(mlp=mlp, tie_embeddings=tie, n_kv_heads=kv)
    model = LM(cfg, VOCAB)
    counts = count_parameters(cfg, VOCAB)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    in_blocks = sum(p.numel() for p in model.blocks.parameters()) + model.norm.weight.numel()
    assert counts["non_embedding"] == in_blocks


def test_silu_mlp_is_two_matrices_and_not_exportable():
    model = LM(tiny(mlp="silu"), VOCAB)
    assert not hasattr(model.blocks[0].mlp, "gate_proj")
    with pytest.raises(ConfigError, match=r"mlp 'silu' \(needs a gated MLP"):
        check_exportable(model.cfg)


def test_training_flops_formula_on_reference_shape():
    # reference baseline: d 384, 12 layers, d_ff 1536, plain SiLU MLP, vocab 49152, T 512
    cfg = ModelConfig(d_model=384, n_heads=6, n_layers=12, d_ff=1536, mlp="silu")
    per_block = 4 * 384 * 384 + 2 * 384 * 1536 + 2 * 384
    n_matmul = 12 * per_block + 384 + 49152 * 384
    expected = 6 * n_matmul + 12 * 12 * 384 * 512
    assert training_flops_per_token(cfg, 49152, 512) == expected


def test_init_is_normal_with_configured_std():
    torch.manual_seed(0)
    model = LM(tiny(d_model=64, n_heads=4, d_ff=256, init_std=0.05), 512)
    weight = model.blocks[0].mlp.up_proj.weight
    assert abs(weight.std().item() - 0.05) < 0.003
    assert torch.equal(model.norm.weight, torch.ones(64))


def test_vocab_resolution():
    assert padded_vocab_size(49152) == 49152
    assert padded_vocab_size(4097) == 4160
    assert resolve_vocab_size(tiny(), 300) == 320
    assert resolve_vocab_size(tiny(vocab_size=512), 300) == 512
    with pytest.raises(ConfigError, match=r"model.vocab_size \(256\) is smaller"):
        resolve_vocab_size(tiny(vocab_size=256), 300)


@pytest.mark.parametrize(
    "window",
    [{}, {"sliding_window": 8}, {"sliding_window": 8, "global_every": 2}],
    ids=["full", "window", "window_every_2nd_global"],
)
def test_counted_flops_are_what_runs(window):
    """The counted training FLOPs equal torch's FlopCounterMode count of one forward and
    backward pass (attention on its math path, which the counter sees op by op), less the
    6 FLOPs a token the convention counts for each norm gain, which no matmul touches. A
    sliding window is a mask over the whole square, so it computes as much as full attention
    and is counted so."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    vocab, batch, seq = 256, 2, 32
    cfg = ModelConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64, **window)
    model = LM(cfg, vocab)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, vocab, (batch, seq))).float().sum().backward()
    gains = sum(p.numel() for p in model.parameters() if p.ndim == 1)
    counted = (training_flops_per_token(cfg, vocab, seq) - 6 * gains) * batch * seq
    assert counted == counter.get_total_flops()
