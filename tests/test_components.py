"""Every architecture component against a reference, and everything else (counts, the KV cache,
export, confounds, resume) for random combinations of them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_run_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

from lmablate.analysis.validity import FACTORS, NOT_FACTORS, factors_changed
from lmablate.config.components import MLPS
from lmablate.config.keys import with_defaults
from lmablate.config.run import ModelConfig, RunConfig
from lmablate.data.tokenizers import load_tokenizer
from lmablate.errors import ConfigError, LmablateError
from lmablate.export import export_target, hf_config, to_hf_state_dict
from lmablate.generation import Sampling, generate
from lmablate.model import loss, register
from lmablate.model.attention import Attention
from lmablate.model.counts import count_parameters, training_flops_per_token
from lmablate.model.mlp import build_mlp
from lmablate.model.norms import build_norm
from lmablate.model.positions import Positions, apply_rope, rope_cos_sin
from lmablate.model.transformer import LM
from lmablate.training.loop import train
from lmablate.training.metrics import read_jsonl
from lmablate.training.summary import write_or_check_config

VOCAB = 96
PROMPTS = ["The cat", "Once upon a time there was", "x"]


def tiny(**overrides) -> ModelConfig:
    fields = dict(d_model=32, n_heads=4, n_layers=2, d_ff=48)
    return ModelConfig(**{**fields, **overrides})


@st.composite
def combinations(draw) -> dict:
    """A random valid combination of every component field."""
    fields = {
        "norm": draw(st.sampled_from(["rmsnorm", "layernorm"])),
        "norm_placement": draw(st.sampled_from(["pre", "post", "sandwich"])),
        "qk_norm": draw(st.booleans()),
        "mlp": draw(st.sampled_from(["swiglu", "geglu", "silu", "gelu", "relu2"])),
        "positions": draw(st.sampled_from(["rope", "nope", "learned"])),
        "rotary_fraction": draw(st.sampled_from([1.0, 0.5, 0.25])),
        "sliding_window": draw(st.sampled_from([None, 3, 8])),
        "global_every": draw(st.sampled_from([None, 2])),
        "logit_softcap": draw(st.sampled_from([None, 4.0])),
        "bias": draw(st.booleans()),
        "parallel_block": draw(st.booleans()),
        "n_kv_heads": draw(st.sampled_from([None, 2])),
        "tie_embeddings": draw(st.booleans()),
        "init": draw(st.sampled_from(["normal", "depth_scaled", "zero_out"])),
        "max_positions": 64,
    }
    if fields["positions"] != "rope":
        fields["rotary_fraction"] = 1.0
    if fields["sliding_window"] is None:
        fields["global_every"] = None
    if fields["norm_placement"] != "pre":
        fields["parallel_block"] = False
    return fields


# ---------------------------------------------------------------------------- references


@pytest.mark.parametrize("bias", [False, True])
def test_norms_against_torch(bias):
    x = torch.randn(3, 5, 16)
    rms = build_norm(16, tiny(norm="rmsnorm", norm_eps=1e-6))
    layer = build_norm(16, tiny(norm="layernorm", norm_eps=1e-6, bias=bias))
    with torch.no_grad():
        rms.weight.uniform_(0.5, 1.5)
        layer.weight.uniform_(0.5, 1.5)
        if bias:
            layer.bias.uniform_(-1, 1)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * rms.weight
    torch.testing.assert_close(rms(x), expected)
    reference = F.layer_norm(x, (16,), layer.weight, layer.bias if bias else None, 1e-6)
    torch.testing.assert_close(layer(x), reference)
    assert (layer.bias is not None) == bias


ACTIVATIONS = {
    "swiglu": lambda gate, up: gate * torch.sigmoid(gate) * up,
    "geglu": lambda gate, up: 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2))) * up,
    "silu": lambda up: up * torch.sigmoid(up),
    "gelu": lambda up: 0.5 * up * (1 + torch.erf(up / math.sqrt(2))),
    "relu2": lambda up: torch.clamp(up, min=0) ** 2,
}


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_mlps_against_their_formulas(kind):
    torch.manual_seed(0)
    mlp = build_mlp(tiny(mlp=kind, bias=True))
    x = torch.randn(2, 7, 32)
    up = x @ mlp.up_proj.weight.T + mlp.up_proj.bias
    if kind in ("swiglu", "geglu"):
        gate = x @ mlp.gate_proj.weight.T + mlp.gate_proj.bias
        hidden = ACTIVATIONS[kind](gate, up)
    else:
        assert not hasattr(mlp, "gate_proj")
        hidden = ACTIVATIONS[kind](up)
    expected = hidden @ mlp.down_proj.weight.T + mlp.down_proj.bias
    torch.testing.assert_close(mlp(x), expected)


def test_sliding_window_against_an_explicit_mask():
    torch.manual_seed(0)
    window, seq = 3, 10
    cfg = tiny(sliding_window=window)
    attention = Attention(cfg, window)
    x = torch.randn(2, seq, 32)
    cos, sin = rope_cos_sin(torch.arange(seq), cfg.head_dim, cfg.rope_theta)

    def heads(linear: nn.Linear) -> torch.Tensor:  # (B, H, T, D)
        return linear(x).view(2, seq, 4, 8).transpose(1, 2)

    q, k = (
        apply_rope(heads(attention.q_proj), cos, sin),
        apply_rope(heads(attention.k_proj), cos, sin),
    )
    v = heads(attention.v_proj)
    allowed = torch.tensor([[0 <= i - j < window for j in range(seq)] for i in range(seq)])
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(8)
    weights = scores.masked_fill(~allowed, -math.inf).softmax(-1)
    expected = attention.o_proj((weights @ v).transpose(1, 2).reshape(2, seq, 32))
    torch.testing.assert_close(attention(x, cos, sin), expected)
    attention.window = None  # full causal attention sees more: the window changes the output
    assert not torch.allclose(attention(x, cos, sin), expected)


def test_global_every_keeps_every_kth_layer_global():
    cfg = tiny(n_layers=6, sliding_window=4, global_every=3)
    assert [cfg.window_of(i) for i in range(6)] == [4, 4, None, 4, 4, None]
    assert [b.attn.window for b in LM(cfg, VOCAB).blocks] == [4, 4, None, 4, 4, None]


@pytest.mark.parametrize("rows_per_slice", [3, 1000])
def test_softcapped_loss_and_gradients_against_cross_entropy(monkeypatch, rows_per_slice):
    monkeypatch.setattr(loss, "CHUNK_BYTES", 4 * 50 * rows_per_slice)
    torch.manual_seed(0)
    hidden = torch.randn(20, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    targets[::7] = loss.IGNORE_INDEX
    ours = loss.head_cross_entropy(hidden, weight, targets, softcap=3.0)
    ours.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.T
    reference = F.cross_entropy(3.0 * torch.tanh(logits / 3.0), targets)
    reference.backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weight.grad)


def test_softcap_bounds_the_logits_the_model_returns():
    torch.manual_seed(0)
    model = LM(tiny(logit_softcap=2.0, init_std=1.0), VOCAB)
    logits = model(torch.randint(0, VOCAB, (2, 9)))
    assert logits.abs().max() < 2.0
    uncapped = model.lm_head(model.hidden_states(torch.randint(0, VOCAB, (2, 9))))
    assert uncapped.abs().max() > 2.0


def test_dropout_only_while_training():
    torch.manual_seed(0)
    model = LM(tiny(dropout=0.5, attention_dropout=0.5), VOCAB)
    ids = torch.randint(0, VOCAB, (2, 9))
    assert not torch.equal(model(ids), model(ids))  # training: a new mask each call
    model.eval()
    assert torch.equal(model(ids), model(ids))


def test_initialization_of_the_output_projections():
    for init, check in (
        ("zero_out", lambda w: bool((w == 0).all())),
        ("depth_scaled", lambda w: abs(w.std().item() - 0.02 / math.sqrt(2 * 8)) < 0.002),
        ("normal", lambda w: abs(w.std().item() - 0.02) < 0.002),
    ):
        torch.manual_seed(0)
        model = LM(tiny(d_model=64, d_ff=256, n_layers=8, init=init), VOCAB)
        for block in model.blocks:
            assert check(block.attn.o_proj.weight) and check(block.mlp.down_proj.weight), init
        assert abs(model.blocks[0].attn.q_proj.weight.std().item() - 0.02) < 0.002


def test_rules_between_choices_are_config_errors():
    for fields, message in (
        ({"parallel_block": True, "norm_placement": "post"}, "needs norm_placement: pre"),
        ({"global_every": 2}, "needs model.sliding_window"),
        ({"positions": "nope", "rotary_fraction": 0.5}, "needs positions: rope"),
        ({"rotary_fraction": 0.375}, "= 3 is odd"),
        ({"rotary_fraction": 0.1}, "= 0 is odd or zero"),
        ({"mlp": "relu3"}, "did you mean 'relu2'"),
        ({"norm": "rms"}, "unknown norm 'rms'"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny(**fields)
    with pytest.raises(ValueError, match=r"max_positions \(32\) is shorter than train.seq_len"):
        RunConfig(model=tiny(positions="learned", max_positions=32), train={"seq_len": 64})


# ------------------------------------------------------------- every combination keeps working


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combinations())
def test_counts_match_the_built_model(fields):
    cfg = tiny(**fields)
    model = LM(cfg, VOCAB)
    counts = count_parameters(cfg, VOCAB)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    head = 0 if cfg.tie_embeddings else VOCAB * cfg.d_model
    assert counts["non_embedding"] == counts["total"] - counts["embedding"] - head
    # FLOPs: 6 x the weights, plus attention over the whole context (a window is a mask)
    matmul = counts["non_embedding"] + VOCAB * cfg.d_model
    expected = 6 * matmul + 12 * 32 * cfg.n_layers * 16
    assert training_flops_per_token(cfg, VOCAB, 16) == expected


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(str(tokenizer_dir))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=combinations())
def test_cached_generation_equals_recomputation(tokenizer, fields):
    torch.manual_seed(0)
    model = LM(tiny(init_std=0.1, **fields), tokenizer.vocab_size).eval()
    greedy = Sampling(max_new_tokens=10, temperature=0.0)
    cached = generate(model, tokenizer, PROMPTS, greedy, context=48)
    recomputed = generate(model, tokenizer, PROMPTS, greedy, context=48, use_cache=False)
    assert [s["new_token_ids"] for s in cached] == [s["new_token_ids"] for s in recomputed]


# ---------------------------------------------------------------------------------- export


def hf_logits_difference(cfg: ModelConfig) -> tuple[str, float]:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = LM(cfg, VOCAB).eval()
    with torch.no_grad():  # break the symmetry of unit gains and zero biases
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    fields = hf_config(cfg, VOCAB, context=64, eos_id=0)
    hf_model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(fields.pop("model_type"), **fields)
    )
    hf_model.load_state_dict(to_hf_state_dict(model.state_dict(), cfg), strict=True)
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        difference = (model(ids) - hf_model.eval()(ids).logits).abs().max().item()
    return export_target(cfg).architecture, difference


@pytest.mark.parametrize(
    ("fields", "architecture"),
    [
        ({}, "LlamaForCausalLM"),
        ({"mlp": "geglu", "bias": True, "n_kv_heads": 2}, "LlamaForCausalLM"),
        ({"qk_norm": True}, "Qwen3ForCausalLM"),
        ({"qk_norm": True, "n_kv_heads": 2, "tie_embeddings": False}, "Qwen3ForCausalLM"),
        ({"norm": "layernorm", "mlp": "gelu"}, "GPTNeoXForCausalLM"),
        (
            {"norm": "layernorm", "mlp": "relu2", "bias": True, "parallel_block": True,
             "rotary_fraction": 0.5, "tie_embeddings": False},
            "GPTNeoXForCausalLM",
        ),
        ({"norm": "layernorm", "mlp": "silu", "rotary_fraction": 0.25}, "GPTNeoXForCausalLM"),
        # windows, on every layer and on all but every 2nd (ids are 12 long: 3 windows)
        ({"sliding_window": 4}, "MinistralForCausalLM"),
        ({"sliding_window": 4, "global_every": 2, "n_kv_heads": 2}, "MinistralForCausalLM"),
        ({"qk_norm": True, "sliding_window": 4, "global_every": 2}, "Qwen3ForCausalLM"),
        ({"qk_norm": True, "sliding_window": 5}, "Qwen3ForCausalLM"),
        # Gemma 2: sandwich norms, soft-capped logits (2.0: every logit is bent), windows
        ({"norm_placement": "sandwich", "logit_softcap": 2.0}, "Gemma2ForCausalLM"),
        ({"norm_placement": "sandwich"}, "Gemma2ForCausalLM"),
        (
            {"norm_placement": "sandwich", "logit_softcap": 2.0, "sliding_window": 4,
             "global_every": 2, "mlp": "geglu", "tie_embeddings": False, "n_layers": 3},
            "Gemma2ForCausalLM",
        ),
        (
            {"norm_placement": "sandwich", "parametrization": "mup", "mup_base_width": 16,
             "logit_softcap": 2.0},
            "Gemma2ForCausalLM",
        ),
    ],
)  # fmt: skip
def test_export_parity_per_architecture(fields, architecture):
    target, difference = hf_logits_difference(tiny(**fields))
    assert target == architecture
    assert difference <= 1e-4


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"positions": "nope"}, "positions 'nope'"),
        ({"norm_placement": "post"}, "norm_placement 'post'"),
        ({"logit_softcap": 30.0}, "logit_softcap"),
        ({"sliding_window": 8, "bias": True}, "bias (Ministral has none)"),
        ({"norm_placement": "sandwich", "qk_norm": True}, "norm_placement 'sandwich' (needs pre)"),
        ({"norm_placement": "sandwich", "bias": True}, "bias (Gemma 2"),
        ({"mlp": "relu2"}, "mlp 'relu2'"),
        ({"qk_norm": True, "bias": True}, "bias (Qwen3"),
        ({"norm": "layernorm", "n_kv_heads": 2, "mlp": "gelu"}, "n_kv_heads 2"),
    ],
)
def test_combinations_no_architecture_computes_are_refused(fields, named):
    with pytest.raises(ConfigError, match="no Hugging Face architecture") as raised:
        export_target(tiny(**fields))
    assert named in str(raised.value)


# ------------------------------------------------------------------------ confounds, registry


def test_every_model_field_belongs_to_a_factor_group():
    grouped = {field for group in FACTORS.values() for field in group}
    assert set(ModelConfig.model_fields) - grouped - set(NOT_FACTORS) == set()
    assert factors_changed({"qk_norm": True, "mlp": "relu2"}) == ["normalization", "MLP"]
    assert factors_changed({"dropout": 0.1, "init": "zero_out"}) == ["dropout", "initialization"]
    assert factors_changed({"norm": "layernorm", "norm_placement": "post"}) == ["normalization"]


class HalfSwish(nn.Module):
    """A component of a user's own: down(silu(up x) / 2)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.extra = nn.Parameter(torch.ones(3))  # counted by building it on the meta device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.up_proj(x)) / 2)


def test_a_registered_mlp_is_a_config_value_built_and_counted():
    register("mlp", "half_swish", HalfSwish, "down(silu(up x) / 2)")
    cfg = tiny(mlp="half_swish")
    model = LM(cfg, VOCAB)
    assert isinstance(model.blocks[0].mlp, HalfSwish)
    assert count_parameters(cfg, VOCAB)["total"] == sum(p.numel() for p in model.parameters())
    assert "half_swish" in MLPS.names()
    with pytest.raises(ConfigError, match="built in"):
        register("mlp", "swiglu", HalfSwish, "shadowing a built-in")
    with pytest.raises(ConfigError, match="no component family"):
        register("block", "mine", HalfSwish, "")
    with pytest.raises(ConfigError, match=r"a registered \(custom\) component"):
        export_target(cfg)


RESUMED_COMBINATIONS = [
    {  # most components off their defaults at once, dropout included (RNG in the checkpoint)
        "n_layers": 2,
        "norm": "layernorm",
        "norm_placement": "sandwich",
        "qk_norm": True,
        "mlp": "relu2",
        "positions": "learned",
        "max_positions": 64,
        "sliding_window": 5,
        "global_every": 2,
        "logit_softcap": 8.0,
        "bias": True,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "init": "depth_scaled",
    },
    {"n_layers": 2, "parallel_block": True, "mlp": "geglu", "rotary_fraction": 0.5},
]


@pytest.mark.parametrize("model", RESUMED_COMBINATIONS)
def test_resume_is_bit_identical_for_other_components(tmp_path, corpus, tokenizer_dir, model):
    cfg = tiny_run_config(
        corpus, tokenizer_dir, model=model, max_steps=12, checkpoint_every=4, eval_every=4
    )

    def quiet(run_dir, **kwargs):
        return train(cfg, run_dir, progress=False, log=lambda _: None, **kwargs)

    quiet(tmp_path / "whole")
    assert quiet(tmp_path / "split", stop_at=7).status == "stopped"
    assert quiet(tmp_path / "split").status == "complete"

    def trajectory(run_dir):
        timing = {"step_time", "tokens_per_s", "elapsed"}
        records = read_jsonl(run_dir / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k not in timing} for r in records]

    assert trajectory(tmp_path / "split") == trajectory(tmp_path / "whole")
    final = "checkpoint/step-00000012/model.safetensors"
    whole, split = load_file(tmp_path / "whole" / final), load_file(tmp_path / "split" / final)
    assert whole.keys() == split.keys()
    for name, tensor in whole.items():
        assert torch.equal(tensor, split[name]), name


def test_the_readme_custom_component_example_runs(tmp_path, monkeypatch, capsys):
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- custom-mlp:start -->\n```python\n")[1].split("```")[0]
    assert 'lmablate.model.register("mlp", "squared_gelu"' in block
    monkeypatch.chdir(root)
    out = tmp_path / "custom_mlp"
    namespace: dict = {}
    exec(
        compile(block.replace('"results/custom_mlp"', repr(str(out))), "README", "exec"), namespace
    )
    assert namespace["outcome"].statuses == {
        "runs/baseline/seed-0": "complete",
        "runs/squared_gelu/seed-0": "complete",
    }
    config = json.loads((out / "runs/squared_gelu/seed-0/config.json").read_text())
    assert config["model"]["mlp"] == "squared_gelu"
    report = (out / "report" / "research_report.md").read_text()
    assert "squared_gelu" in report


class Sinusoidal(Positions):
    """Fixed sinusoidal positions added to the tokens (Vaswani et al. 2017): no parameters."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.d_model = cfg.d_model

    def embedding(self, positions: torch.Tensor) -> torch.Tensor:
        frequencies = 10000 ** (-torch.arange(0, self.d_model, 2) / self.d_model)
        angles = positions.float()[..., None] * frequencies  # (..., T, d_model / 2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class DampedAttention(Attention):
    """Causal attention whose output is halved: a registered attention of one's own."""

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return 0.5 * super().forward(*args, **kwargs)


def test_registered_positions_and_attention_build_count_and_decode(tokenizer):
    register("positions", "sinusoidal", Sinusoidal, "fixed sin/cos added to the tokens")
    register("attention", "damped", DampedAttention, "causal attention, output halved")
    cfg = tiny(positions="sinusoidal", attention="damped", init_std=0.1)
    torch.manual_seed(0)
    model = LM(cfg, tokenizer.vocab_size).eval()
    assert isinstance(model.blocks[0].attn, DampedAttention)
    assert count_parameters(cfg, tokenizer.vocab_size)["total"] == sum(
        p.numel() for p in model.parameters()
    )
    ids = torch.randint(0, tokenizer.vocab_size, (1, 6))
    plain = LM(tiny(positions="nope", init_std=0.1), tokenizer.vocab_size).eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(model(ids), plain(ids))  # both components change the function
    greedy = Sampling(max_new_tokens=8, temperature=0.0)
    cached = generate(model, tokenizer, PROMPTS, greedy, context=48)
    recomputed = generate(model, tokenizer, PROMPTS, greedy, context=48, use_cache=False)
    assert [s["new_token_ids"] for s in cached] == [s["new_token_ids"] for s in recomputed]
    registered = "a registered (custom) component: attention 'damped', positions 'sinusoidal'"
    with pytest.raises(ConfigError, match=re.escape(registered)):
        export_target(cfg)
    with pytest.raises(ValueError, match="unknown attention 'dampd'; did you mean 'damped'"):
        tiny(attention="dampd")


ADDED_FIELDS = ("norm", "norm_placement", "qk_norm", "positions", "attention", "bias", "dropout")


def test_a_run_recorded_before_the_component_fields_is_the_same_run(
    tmp_path, corpus, tokenizer_dir
):
    """Upgrading lmablate must not orphan runs on disk: a config.json without the fields added
    since means their defaults, so resuming or rerunning a study finds no conflict."""
    cfg = tiny_run_config(corpus, tokenizer_dir)
    recorded = cfg.model_dump(mode="json")
    for field in ADDED_FIELDS:
        del recorded["model"][field]
    assert with_defaults(recorded) == cfg.model_dump(mode="json")  # what config_conflicts uses
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    write_or_check_config(tmp_path, cfg)  # what resuming uses: no error, written in full
    assert json.loads((tmp_path / "config.json").read_text())["model"]["qk_norm"] is False
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    changed = cfg.model_copy(update={"model": cfg.model.model_copy(update={"qk_norm": True})})
    with pytest.raises(LmablateError, match=r"model.qk_norm: False -> True"):
        write_or_check_config(tmp_path, changed)
