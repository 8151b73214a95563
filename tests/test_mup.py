"""parametrization: mup against its formulas and against the reference implementation (the
``mup`` package's MuAdamW), and the coordinate check: activation scale across widths after a
few steps, growing under sp and flat under mup."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from lmablate.config.keys import validate_run_config
from lmablate.config.run import TrainConfig
from lmablate.errors import ConfigError
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import build_optimizer, group_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from coord_check import VOCAB, coordinate_scales, model_config


def test_mup_at_its_base_width_is_sp():
    torch.manual_seed(0)
    sp = LM(model_config(32), VOCAB)
    torch.manual_seed(0)
    mup = LM(model_config(32, parametrization="mup", mup_base_width=32), VOCAB)
    for (name, a), (_, b) in zip(sp.state_dict().items(), mup.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    ids = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(sp(ids), mup(ids))
    train = TrainConfig(max_steps=10, warmup_steps=1)
    assert group_settings(train, mup.cfg.width_mult) == group_settings(train)


def test_the_multipliers_follow_the_formulas():
    cfg = model_config(128, parametrization="mup", mup_base_width=32, mup_base_head_dim=4)
    m = 128 / 32
    assert cfg.width_mult == m
    assert cfg.attention_scale == pytest.approx(math.sqrt(4) / 8)  # sqrt(base) / head_dim
    torch.manual_seed(0)
    model = LM(cfg, VOCAB)
    # hidden matrices at init_std / sqrt(m); embedding and head at init_std
    assert model.blocks[0].mlp.up_proj.weight.std().item() == pytest.approx(
        cfg.init_std / math.sqrt(m), rel=0.03
    )
    assert model.embed.weight.std().item() == pytest.approx(cfg.init_std, rel=0.05)
    # the output multiplier: logits are the head on the final hidden states, divided by m
    ids = torch.randint(0, VOCAB, (1, 8))
    hidden = model.hidden_states(ids)
    torch.testing.assert_close(model(ids), model.lm_head(hidden) / m)

    train = TrainConfig(max_steps=10, warmup_steps=1, weight_decay=0.1, matrix_lr_mult=2.0)
    groups = group_settings(train, m)
    assert groups["matrices"]["lr_mult"] == pytest.approx(2.0 / m)
    assert groups["matrices"]["weight_decay"] == pytest.approx(0.1 * m)
    for name in ("embeddings", "head", "scalars"):
        assert groups[name] == group_settings(train)[name]
    assert group_settings(train.model_copy(update={"optimizer": "lion"}), m)["matrices"][
        "lr_mult"
    ] == pytest.approx(2.0 / m)
    muon = train.model_copy(update={"optimizer": "muon"})
    assert group_settings(muon, m)["matrices"] == group_settings(muon)["matrices"]


def test_the_learning_rates_match_the_reference_mup_package():
    """Every parameter's learning rate and weight decay under our AdamW equal those of
    ``mup.MuAdamW`` on the same model with its base shapes set from the base width."""
    mup = pytest.importorskip("mup")
    base = LM(model_config(16), VOCAB)
    wide = LM(model_config(64, parametrization="mup", mup_base_width=16), VOCAB)
    train = TrainConfig(max_steps=10, warmup_steps=1, learning_rate=1e-3, weight_decay=0.1)
    ours = build_optimizer(wide, train, torch.device("cpu"))
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in ours.param_groups for p in g["params"]}
    for model in (base, wide):  # the reference knows the head by its type: the same tied weight
        model.lm_head = mup.MuSharedReadout(model.embed.weight, bias=False)
    mup.set_base_shapes(wide, base, rescale_params=False)
    groups = [
        {"params": [p], "weight_decay": 0.0 if p.ndim < 2 else 0.1} for p in wide.parameters()
    ]
    reference = mup.MuAdamW(groups, lr=1e-3)
    theirs = {
        id(p): (g["lr"], g["weight_decay"]) for g in reference.param_groups for p in g["params"]
    }
    assert set(mine) == set(theirs)
    for key, (lr, decay) in theirs.items():
        assert mine[key] == pytest.approx((lr, decay)), key


def test_sgd_under_mup_is_refused():
    with pytest.raises(ConfigError, match="SGD rules"):
        validate_run_config(
            {
                "model": {"parametrization": "mup", "mup_base_width": 64},
                "train": {"optimizer": "sgd"},
            }
        )
    with pytest.raises(ConfigError, match="only with parametrization: mup"):
        validate_run_config({"model": {"mup_base_width": 64}})


def test_the_coordinate_check_is_flat_under_mup_and_grows_under_sp():
    widths = [32, 64, 128, 256]
    sp = coordinate_scales("sp", widths)
    mup = coordinate_scales("mup", widths)
    for key in ("logits", "block 1"):
        sp_growth = sp[-1][key] / sp[0][key]
        mup_growth = mup[-1][key] / mup[0][key]
        assert sp_growth > 2.0, (key, sp)
        assert 0.67 < mup_growth < 1.5, (key, mup)
