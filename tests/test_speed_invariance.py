"""Speed work must not change what is learned: a fixed-seed run's numbers are pinned.

The figures below were recorded from the straightforward implementation (full float32 logits,
one cross-entropy over them) before any speed change; every optimization since must reproduce
them within float tolerance. The data are synthetic token ids, so the pins do not depend on a
corpus, a tokenizer or the Python version.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmablate.config.run import ModelConfig, TrainConfig
from lmablate.data import validation_set
from lmablate.model import loss
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import build_optimizer
from lmablate.optim.schedules import lr_at
from lmablate.training.loop import train_step
from lmablate.training.metrics import evaluate

CPU = torch.device("cpu")
VOCAB = 512  # large against d_model, as the reference study's 49,152 against 384

# (loss, pre-clip gradient norm) of each step, then the validation metrics after them
PINNED_STEPS = [
    (6.2480340003967285, 1.5953460931777954),
    (6.29858922958374, 1.456755518913269),
    (6.110938549041748, 1.8377118110656738),
    (6.021825313568115, 1.9630982875823975),
    (5.936177730560303, 1.7977192401885986),
    (5.730877876281738, 1.8333770036697388),
    (5.668779373168945, 1.3285411596298218),
    (5.3960723876953125, 1.4404932260513306),
    (5.279044151306152, 1.514910340309143),
    (5.592978477478027, 0.7884643077850342),
    (4.841142177581787, 5.676939010620117),
    (4.696897506713867, 1.0750237703323364),
    (5.216169357299805, 0.8432989716529846),
    (4.979249954223633, 0.7645927667617798),
    (4.700573444366455, 0.9356729984283447),
    (4.895787715911865, 0.6888038516044617),
    (5.219057559967041, 0.9020748734474182),
    (4.925109386444092, 0.7545466423034668),
    (4.808135509490967, 1.0394383668899536),
    (5.811651229858398, 1.0139557123184204),
    (4.811060428619385, 0.9182775616645813),
    (4.810138702392578, 0.6902236938476562),
    (4.941009521484375, 0.7647579908370972),
    (4.534163475036621, 0.6817004680633545),
]
PINNED_EVAL = {
    "val_loss": 4.492766494181619,
    "val_bpb": 6.481691941027916,
    "val_accuracy": 0.13432835820895522,
    "val_top5_accuracy": 0.4626865671641791,
    "val_confidence": 0.12778956954603765,
    "val_entropy": 4.614416492519094,
}


def short_run(
    grad_accum_steps: int = 1, compile_model: bool = False
) -> tuple[list[tuple[float, float]], dict]:
    cfg = ModelConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=64, init_std=0.05)
    tc = TrainConfig(
        batch_size=4,
        seq_len=16,
        learning_rate=1e-2,
        warmup_steps=4,
        max_steps=24,
        grad_accum_steps=grad_accum_steps,
    )
    torch.manual_seed(0)
    model = LM(cfg, VOCAB)
    optimizer = build_optimizer(model, tc, CPU)
    forward = torch.compile(model) if compile_model else model
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    generator = torch.Generator().manual_seed(1)
    # Zipf-distributed tokens, each mostly its predecessor plus one: there is something to learn
    zipf = 1.0 / torch.arange(1, VOCAB + 1)
    stream = torch.multinomial(zipf, tc.max_steps * 4 * 17, True, generator=generator)
    stream = stream.view(tc.max_steps * 4, 17)
    follows = torch.rand(stream[:, 1:].shape, generator=generator) < 0.5
    stream[:, 1:] = torch.where(follows, (stream[:, :-1] + 1) % VOCAB, stream[:, 1:])
    steps = []
    for step in range(tc.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tc)
        batch = stream[step * 4 : (step + 1) * 4]
        loss, norm, _ = train_step(
            forward, optimizer, scaler, batch[:, :-1], batch[:, 1:], tc, CPU, "fp32"
        )
        steps.append((float(loss), float(norm)))
    val_tokens = stream[-4:].flatten()[:300]  # the last batch, seen once
    val = validation_set(val_tokens.numpy(), 16, 200, lambda ids: "x" * len(ids))
    return steps, evaluate(model, val, VOCAB, CPU, "fp32")


def test_fixed_seed_run_is_pinned():
    steps, metrics = short_run()
    np.testing.assert_allclose(steps, PINNED_STEPS, rtol=1e-4)
    for name, value in PINNED_EVAL.items():
        assert metrics[name] == pytest.approx(value, rel=1e-4), name


def test_gradient_accumulation_matches_the_pins():
    steps, _ = short_run(grad_accum_steps=2)
    np.testing.assert_allclose(steps, PINNED_STEPS, rtol=1e-4)


def test_many_slices_match_the_pins(monkeypatch):
    monkeypatch.setattr(loss, "CHUNK_BYTES", 4 * VOCAB * 24)  # 24 rows a slice, 64 rows a batch
    steps, _ = short_run()
    np.testing.assert_allclose(steps, PINNED_STEPS, rtol=1e-4)


@pytest.mark.parametrize("rows_per_slice", [1, 7, 1000])
def test_head_loss_equals_cross_entropy_with_gradients(monkeypatch, rows_per_slice):
    monkeypatch.setattr(loss, "CHUNK_BYTES", 4 * 50 * rows_per_slice)
    torch.manual_seed(0)
    hidden = torch.randn(3, 10, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (3, 10))
    targets[0, :4] = loss.IGNORE_INDEX  # padding past the last target is not scored
    expected = F.cross_entropy((hidden @ weight.T).flatten(0, 1), targets.flatten())
    (2.5 * expected).backward()
    want = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got = loss.head_cross_entropy(hidden, weight, targets)
    (2.5 * got).backward()  # the incoming gradient scales both results
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(hidden.grad, want[0])
    torch.testing.assert_close(weight.grad, want[1])


def test_compiled_model_matches_the_pins():
    steps, metrics = short_run(compile_model=True)
    np.testing.assert_allclose(steps, PINNED_STEPS, rtol=1e-4)
    assert metrics["val_loss"] == pytest.approx(PINNED_EVAL["val_loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("env", "expected"), [({}, "True"), ({"LMABLATE_SYSTEM_MALLOC": "1"}, "False")]
)
def test_allocator_setting_applies_on_glibc_unless_turned_off(env, expected):
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting is for glibc on Linux; elsewhere it does nothing")
    code = "from lmablate.hardware import tune_allocator; print(tune_allocator())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    assert result.stdout.strip() == expected
