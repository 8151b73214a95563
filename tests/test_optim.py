"""Optimizers, parameter groups and the z-loss: each update against torch.optim or against the
published rule computed by hand, groups as documented, exact resume for every optimizer."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_run_config, write_yaml
from safetensors.torch import load_file

from lmablate.config.run import ModelConfig, TrainConfig
from lmablate.config.study import load_study
from lmablate.errors import ConfigError
from lmablate.model import loss
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import (
    build_optimizer,
    describe_groups,
    parameter_roles,
    set_learning_rate,
)
from lmablate.optim.rules import Lion, Muon
from lmablate.study.runner import run_study
from lmablate.training.loop import train
from lmablate.training.metrics import read_jsonl

CPU = torch.device("cpu")
VOCAB = 11
BLOCK_MATRICES = [
    "blocks.0.attn.q_proj.weight",
    "blocks.0.attn.k_proj.weight",
    "blocks.0.attn.v_proj.weight",
    "blocks.0.attn.o_proj.weight",
    "blocks.0.mlp.gate_proj.weight",
    "blocks.0.mlp.up_proj.weight",
    "blocks.0.mlp.down_proj.weight",
]
UNTIED_BIASED = {
    "tie_embeddings": False,
    "bias": True,
    "norm": "layernorm",
    "positions": "learned",
    "max_positions": 16,
}


def tiny_model(seed: int = 0, **model) -> LM:
    torch.manual_seed(seed)
    return LM(ModelConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, **model), VOCAB)


def names(model: LM) -> dict[str, list[str]]:
    return {group: [n for n, _ in named] for group, named in parameter_roles(model).items()}


# --------------------------------------------------------------------------- parameter groups


def test_groups_of_the_default_model():
    assert names(tiny_model()) == {
        "embeddings": ["embed.weight"],  # tied: also the LM head
        "head": [],
        "matrices": BLOCK_MATRICES,
        "scalars": ["blocks.0.attn_norm.weight", "blocks.0.mlp_norm.weight", "norm.weight"],
    }


def test_groups_of_an_untied_biased_model_with_learned_positions():
    assert names(tiny_model(**UNTIED_BIASED)) == {
        "embeddings": ["embed.weight", "position.table.weight"],
        "head": ["lm_head.weight"],
        "matrices": BLOCK_MATRICES,
        "scalars": [
            "blocks.0.attn_norm.weight",
            "blocks.0.attn_norm.bias",
            "blocks.0.attn.q_proj.bias",
            "blocks.0.attn.k_proj.bias",
            "blocks.0.attn.v_proj.bias",
            "blocks.0.attn.o_proj.bias",
            "blocks.0.mlp_norm.weight",
            "blocks.0.mlp_norm.bias",
            "blocks.0.mlp.gate_proj.bias",
            "blocks.0.mlp.up_proj.bias",
            "blocks.0.mlp.down_proj.bias",
            "norm.weight",
            "norm.bias",
        ],
    }


GROUPED = TrainConfig(
    learning_rate=1e-3,
    weight_decay=0.1,
    embedding_lr_mult=2.0,
    head_lr_mult=0.5,
    matrix_lr_mult=4.0,
    scalar_lr_mult=3.0,
    head_weight_decay=0.0,
    scalar_weight_decay=0.01,
)


def test_every_group_gets_its_learning_rate_and_weight_decay():
    model = tiny_model(**UNTIED_BIASED)
    optimizer = build_optimizer(model, GROUPED, CPU)
    got = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert got == {
        "embeddings": (2e-3, 0.1),
        "head": (5e-4, 0.0),
        "matrices": (4e-3, 0.1),
        "scalars": (3e-3, 0.01),
    }
    set_learning_rate(optimizer, 1e-4)  # the schedule's value, times each multiplier
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-4, 5e-5, 4e-4, 3e-4])
    everything = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(everything) == len({id(p) for p in everything}) == len(list(model.parameters()))

    described = describe_groups(model, GROUPED)
    assert described["head"] == {
        "optimizer": "adamw",
        "peak_lr": 5e-4,
        "lr_mult": 0.5,
        "weight_decay": 0.0,
        "parameters": VOCAB * 8,
        "tensors": 1,
    }
    assert sum(row["parameters"] for row in described.values()) == sum(
        p.numel() for p in model.parameters()
    )
    assert "head" not in describe_groups(tiny_model(), GROUPED)  # tied: nothing in it


# --------------------------------------------------------------------- updates by reference


def fake_gradients(model: LM, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator)


def run_steps(model: LM, optimizer, steps: int = 3) -> None:
    for step in range(steps):
        fake_gradients(model, seed=step)
        optimizer.step()


def by_name(model: LM) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def reference_groups(model: LM, cfg: TrainConfig, groups=("embeddings", "head", "matrices")):
    """The documented groups built by hand: name -> (lr, weight decay)."""
    table = {
        "embeddings": (cfg.learning_rate * 2.0, 0.1),
        "head": (cfg.learning_rate * 0.5, 0.0),
        "matrices": (cfg.learning_rate * 4.0, 0.1),
        "scalars": (cfg.learning_rate * 3.0, 0.01),
    }
    roles = parameter_roles(model)
    return [
        {"params": [p for _, p in roles[g]], "lr": table[g][0], "weight_decay": table[g][1]}
        for g in groups
        if roles[g]
    ]


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_adamw_and_sgd_match_torch_optim_with_the_documented_groups(kind):
    cfg = GROUPED.model_copy(update={"optimizer": kind, "sgd_nesterov": True})
    ours, theirs = tiny_model(**UNTIED_BIASED), tiny_model(**UNTIED_BIASED)
    groups = reference_groups(theirs, cfg, ("embeddings", "head", "matrices", "scalars"))
    if kind == "adamw":
        reference = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8)
    else:
        reference = torch.optim.SGD(groups, momentum=0.9, nesterov=True)
    run_steps(ours, build_optimizer(ours, cfg, CPU))
    run_steps(theirs, reference)
    before, after, expected = by_name(tiny_model(**UNTIED_BIASED)), by_name(ours), by_name(theirs)
    for name in after:
        assert not torch.equal(after[name], before[name]), name  # every parameter moved
        assert torch.equal(after[name], expected[name]), name


def test_lion_follows_its_published_update_rule():
    """Chen et al. 2023, Algorithm 2, by hand on a 2x3 tensor for three steps."""
    torch.manual_seed(0)
    p = torch.randn(2, 3)
    param = torch.nn.Parameter(p.clone())
    lr, wd, beta1, beta2 = 0.1, 0.5, 0.9, 0.99
    optimizer = Lion([param], lr=lr, betas=(beta1, beta2), weight_decay=wd)
    m = torch.zeros(2, 3)
    grads = [torch.randn(2, 3) for _ in range(3)]
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        c = beta1 * m + (1 - beta1) * g
        p = p - lr * (torch.sign(c) + wd * p)
        m = beta2 * m + (1 - beta2) * g
        torch.testing.assert_close(param.detach(), p, rtol=0, atol=1e-6)


def test_lion_through_build_optimizer_updates_every_group():
    cfg = GROUPED.model_copy(update={"optimizer": "lion"})
    model, start = tiny_model(**UNTIED_BIASED), by_name(tiny_model(**UNTIED_BIASED))
    optimizer = build_optimizer(model, cfg, CPU)
    fake_gradients(model, seed=0)
    optimizer.step()
    # first step: momentum 0, so the update is sign(g); each group at its own lr and decay
    generator = torch.Generator().manual_seed(0)
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    roles = {n: group for group, named in parameter_roles(model).items() for n, _ in named}
    for name, param in model.named_parameters():
        g = torch.randn(param.shape, generator=generator)
        lr, wd = lrs[roles[name]]
        expected = start[name] * (1 - lr * wd) - lr * torch.sign(g)
        torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-7)


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's quintic iteration (Jordan et al. 2024), written from the formula."""
    a, b, c = 3.4445, -4.775, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


HAS_TORCH_MUON = hasattr(torch.optim, "Muon")


@pytest.mark.skipif(not HAS_TORCH_MUON, reason="torch.optim.Muon needs torch 2.9")
@pytest.mark.parametrize("adjust", ["match_rms_adamw", "original"])
def test_muon_in_bfloat16_is_torch_optim_muon_bit_for_bit(adjust):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(shape)) for shape in ((6, 4), (4, 6), (5, 5))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True}
    ours_opt = Muon(ours, **settings, ns_steps=5, adjust_lr=adjust, ns_dtype=torch.bfloat16)
    theirs_opt = torch.optim.Muon(theirs, **settings, ns_steps=5, adjust_lr_fn=adjust)
    for _ in range(3):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        ours_opt.step()
        theirs_opt.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("adjust", ["match_rms_adamw", "original"])
def test_muon_update_is_orthogonalized_nesterov_momentum_by_hand(adjust):
    """Two steps on a 6x4 matrix in float32 (the CPU's precision): EMA momentum, Nesterov,
    five Newton-Schulz steps, the learning rate scaled per shape, decoupled decay."""
    torch.manual_seed(0)
    p0 = torch.randn(6, 4)
    param = torch.nn.Parameter(p0.clone())
    lr, wd, mu = 0.02, 0.1, 0.95
    muon = Muon(
        [param], lr=lr, weight_decay=wd, momentum=mu, adjust_lr=adjust, ns_dtype=torch.float32
    )
    scale = 0.2 * math.sqrt(6) if adjust == "match_rms_adamw" else math.sqrt(6 / 4)
    p, buf = p0.clone(), torch.zeros(6, 4)
    for _ in range(2):
        g = torch.randn(6, 4)
        param.grad = g.clone()
        muon.step()
        buf = mu * buf + (1 - mu) * g
        update = newton_schulz((1 - mu) * g + mu * buf)
        p = p * (1 - lr * wd) - lr * scale * update
        torch.testing.assert_close(param.detach(), p, rtol=0, atol=1e-5 * lr * scale)
    # orthogonalized: the singular values of the update sit near 1 (the iteration's 0.7-1.2)
    singular = torch.linalg.svdvals(newton_schulz(torch.randn(6, 4)))
    assert singular.min() > 0.6 and singular.max() < 1.3


def test_muon_on_matrices_adamw_elsewhere():
    cfg = GROUPED.model_copy(update={"optimizer": "muon"})
    ours, theirs = tiny_model(**UNTIED_BIASED), tiny_model(**UNTIED_BIASED)
    roles = parameter_roles(theirs)
    muon = Muon(
        [{"params": [p for _, p in roles["matrices"]], "lr": 4e-3, "weight_decay": 0.1}],
        adjust_lr="match_rms_adamw",
        ns_dtype=torch.float32,  # on the CPU
    )
    adamw = torch.optim.AdamW(
        reference_groups(theirs, cfg, ("embeddings", "head", "scalars")), betas=(0.9, 0.95)
    )
    optimizer = build_optimizer(ours, cfg, CPU)
    assert [type(o).__name__ for o in optimizer.optimizers] == ["AdamW", "Muon"]
    assert {g["name"] for g in optimizer.optimizers[1].param_groups} == {"matrices"}
    for step in range(3):
        fake_gradients(ours, seed=step)
        fake_gradients(theirs, seed=step)
        optimizer.step()
        muon.step()
        adamw.step()
    for (name, got), expected in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.equal(got, expected), name


def test_muon_refuses_what_is_not_a_matrix():
    with pytest.raises(ValueError, match="matrices only"):
        Muon([torch.nn.Parameter(torch.ones(3))])


# ---------------------------------------------------------------------------------- z-loss


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_z_loss_value_and_gradients_match_autograd_on_full_logits(softcap):
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7))
    targets[0, :3] = loss.IGNORE_INDEX
    c = 0.1  # large, so the z term's gradient is not lost in the cross-entropy's

    logits = hidden @ weight.T
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    ce = F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1))
    keep = targets.reshape(-1) != loss.IGNORE_INDEX
    z = c * torch.logsumexp(logits.reshape(-1, 50), dim=-1)[keep].square().mean()
    (ce + z).backward()
    expected = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None

    got = loss.head_losses(hidden, weight, targets, softcap=softcap, z_loss=c)
    got.objective.backward()
    torch.testing.assert_close(got.cross_entropy, ce.detach())
    torch.testing.assert_close(got.z_loss, z.detach())
    torch.testing.assert_close(got.objective, (ce + z).detach())
    torch.testing.assert_close(hidden.grad, expected[0])
    torch.testing.assert_close(weight.grad, expected[1])
    assert not got.cross_entropy.requires_grad and not got.z_loss.requires_grad


def test_z_loss_off_is_the_plain_cross_entropy():
    torch.manual_seed(1)
    hidden, weight = torch.randn(10, 8), torch.randn(20, 8)
    targets = torch.randint(0, 20, (10,))
    off = loss.head_losses(hidden, weight, targets)
    assert float(off.z_loss) == 0.0 and torch.equal(off.objective, off.cross_entropy)


# ------------------------------------------------------------------------- runs and resume


def trajectory(run_dir):
    timing = {"step_time", "tokens_per_s", "elapsed"}
    return [
        {k: v for k, v in r.items() if k not in timing}
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]


OPTIMIZER_RUNS = {
    "adamw": {"schedule": "wsd", "embedding_lr_mult": 2.0, "z_loss": 1e-3},
    "muon": {"schedule": "linear", "min_lr_ratio": 0.0, "matrix_lr_mult": 2.0},
    "lion": {"learning_rate": 1e-3, "weight_decay": 0.3, "schedule": "constant"},
    "sgd": {"learning_rate": 0.1, "sgd_nesterov": True, "scalar_weight_decay": 0.01},
}


@pytest.mark.parametrize("kind", list(OPTIMIZER_RUNS))
def test_resume_is_bit_identical_for_every_optimizer(tmp_path, corpus, tokenizer_dir, kind):
    cfg = tiny_run_config(
        corpus,
        tokenizer_dir,
        model={"tie_embeddings": False, "bias": True},
        optimizer=kind,
        max_steps=12,
        checkpoint_every=4,
        eval_every=4,
        **OPTIMIZER_RUNS[kind],
    )
    stop_at = random.Random(kind).randint(1, 11)  # a different step per optimizer

    def quiet(run_dir, **kwargs):
        return train(cfg, run_dir, progress=False, log=lambda _: None, **kwargs)

    whole = quiet(tmp_path / "whole")
    assert quiet(tmp_path / "split", stop_at=stop_at).status == "stopped"
    assert quiet(tmp_path / "split").status == "complete" == whole.status

    assert trajectory(tmp_path / "split") == trajectory(tmp_path / "whole")
    final = "checkpoint/step-00000012/model.safetensors"
    a, b = load_file(tmp_path / "whole" / final), load_file(tmp_path / "split" / final)
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name

    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["optimizer"] == kind
    groups = summary["parameter_groups"]
    assert set(groups) == {"embeddings", "head", "matrices", "scalars"}
    expected = "muon" if kind == "muon" else kind
    assert groups["matrices"]["optimizer"] == expected
    assert groups["embeddings"]["optimizer"] == ("adamw" if kind == "muon" else kind)
    records = [r for r in read_jsonl(tmp_path / "whole" / "metrics.jsonl") if r["kind"] == "train"]
    if cfg.train.z_loss:  # logged beside the loss, which stays the cross-entropy
        assert all(0 < r["z_loss"] < r["loss"] for r in records)
    else:
        assert all("z_loss" not in r for r in records)
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_a_checkpoint_of_another_optimizer_is_refused_clearly(tmp_path, corpus, tokenizer_dir):
    adamw = tiny_run_config(corpus, tokenizer_dir, max_steps=8, checkpoint_every=4)
    train(adamw, tmp_path / "run", progress=False, log=lambda _: None, stop_at=4)
    model = tiny_model()
    optimizer = build_optimizer(model, TrainConfig(optimizer="lion"), CPU)
    state = torch.load(
        next((tmp_path / "run" / "checkpoint").glob("step-*")) / "trainer.pt", weights_only=False
    )
    with pytest.raises(ConfigError, match="cannot resume"):
        optimizer.load_state_dict(state["optimizer"])


# ------------------------------------------------------------------------------ the report


def test_the_report_states_groups_schedules_and_the_untuned_optimizers(
    tmp_path, corpus, tokenizer_dir
):
    study = write_yaml(
        tmp_path / "study.yaml",
        f"""\
        name: optim
        seeds: [0]
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 16, learning_rate: 3.0e-3, warmup_steps: 2,
                  max_steps: 8, eval_every: 4, eval_tokens: 256, log_every: 2}}
        samples: {{prompts: [The], max_new_tokens: 2}}
        variants:
          lion_wsd: {{optimizer: lion, schedule: wsd, embedding_lr_mult: 0.5}}
          sgd: {{optimizer: sgd, learning_rate: 0.1}}
        """,
    )
    outcome = run_study(load_study(study), tmp_path / "out", progress=False, log=lambda _: None)
    assert set(outcome.statuses.values()) == {"complete"}
    report = tmp_path / "out" / "report"
    markdown = (report / "research_report.md").read_text()

    assert "| baseline | embeddings | adamw | 0.003 | 0.1 | 1 |" in markdown
    assert "| lion_wsd | matrices | lion | 0.003 | 0.1 |" in markdown
    assert "| sgd | scalars | sgd | 0.1 | 0 |" in markdown
    assert "### Tuning" in markdown and "(adamw, lion, sgd)" in markdown
    assert "| lion_wsd | schedule=wsd, optimizer=lion, embedding_lr_mult=0.5 |" in markdown
    assert "learning-rate schedule, optimizer, parameter groups | yes" in markdown

    assert "learning_rate_schedules.png" in markdown  # the schedules differ
    assert (report / "learning_rate_schedules.png").stat().st_size > 10_000
    data = json.loads((report / "research_data.json").read_text())
    groups = data["experimental_setup"]["training_setup"]["parameter_groups"]
    assert groups["sgd"]["matrices"] == {
        "optimizer": "sgd",
        "peak_lr": 0.1,
        "lr_mult": 1.0,
        "weight_decay": 0.1,
        "parameters": 4 * 32 * 32 + 3 * 32 * 64,
        "tensors": 7,
    }
    assert data["statistical_analysis"]["study_threats"]


def test_no_schedule_figure_when_every_variant_shares_the_schedule(tmp_path):
    from lmablate.analysis.rundata import RunData, StudyData
    from lmablate.report.figures import draw_schedules
    from lmablate.report.plotting import variant_styles

    train = TrainConfig(max_steps=50, warmup_steps=5).model_dump(mode="json")
    runs = [
        RunData(v, 0, tmp_path, {"train": {**train, **change}}, None)
        for v, change in (("baseline", {}), ("other", {"optimizer": "lion"}))
    ]
    study = StudyData(tmp_path, {"seeds": [0], "variants": {"other": {}}}, runs)
    styles = variant_styles(study.variants)
    assert draw_schedules(study, styles, tmp_path) == {}
    runs[1].config["train"]["schedule"] = "constant"
    assert list(draw_schedules(study, styles, tmp_path)) == ["learning_rate_schedules.png"]


def test_the_schedule_legend_names_a_few_variants_and_counts_the_rest(tmp_path):
    """A tuned or scaled study has many variants per schedule: naming them all once squeezed
    the axes to nothing (a constrained-layout warning, a figure with no plot)."""
    import warnings

    from matplotlib import pyplot as plt

    from lmablate.analysis.rundata import RunData, StudyData
    from lmablate.report import design_figures
    from lmablate.report.plotting import variant_styles

    train = TrainConfig(max_steps=50, warmup_steps=5).model_dump(mode="json")
    names = ["baseline", *(f"size=w{i},learning_rate=0.001" for i in range(9))]
    runs = [
        RunData(
            v, 0, tmp_path, {"train": {**train, "learning_rate": 0.01 if i % 2 else 3e-4}}, None
        )
        for i, v in enumerate(names)
    ]
    study = StudyData(tmp_path, {"seeds": [0], "variants": {name: {} for name in names[1:]}}, runs)
    legends = []
    real_finish = design_figures.finish

    def keep(fig, path, description):
        legends.append([t.get_text() for legend in fig.legends for t in legend.get_texts()])
        return real_finish(fig, path, description)

    design_figures.finish, saved = keep, design_figures.finish
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a collapsed layout warns
            design_figures.draw_schedules(study, variant_styles(study.variants), tmp_path)
    finally:
        design_figures.finish = saved
        plt.close("all")
    (labels,) = legends
    assert len(labels) == 2 and all(" and 3 more (" in label for label in labels), labels
