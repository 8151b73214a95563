"""What each architecture component costs: training tokens/s of every component choice
relative to the default model, at the reference shape (d_model 384, 6 heads, 12 layers,
d_ff 1536, a 49,152-token vocabulary, batch 8 x 512 tokens), fp32.

Each choice is timed against the default in the same stretch of time: the two models take
optimizer steps in turn on the same random batches (one untimed warm-up step each), and the
ratio of their median step times is printed. A researcher reading an equal-time comparison
needs this first: a component that is 10% slower gets 10% fewer tokens in the same time.

    python benchmarks/bench_components.py [--rounds 3] [--only qk_norm relu2 ...] [--small]

``--small`` is a tiny shape (d_model 64, 2 layers, seq_len 64) for checking that it runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import VOCAB

from lmablate.config.run import ModelConfig, TrainConfig
from lmablate.hardware import device_name, synchronize, tune_allocator
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import build_optimizer
from lmablate.training.loop import train_step

CHOICES: dict[str, dict] = {
    "qk_norm": {"qk_norm": True},
    "mlp geglu": {"mlp": "geglu"},
    "mlp silu": {"mlp": "silu"},
    "mlp gelu": {"mlp": "gelu"},
    "mlp relu2": {"mlp": "relu2"},
    "norm layernorm": {"norm": "layernorm"},
    "norm_placement post": {"norm_placement": "post"},
    "norm_placement sandwich": {"norm_placement": "sandwich"},
    "positions nope": {"positions": "nope"},
    "positions learned": {"positions": "learned"},
    "rotary_fraction 0.25": {"rotary_fraction": 0.25},
    "sliding_window 128": {"sliding_window": 128},
    "sliding_window 128, global_every 2": {"sliding_window": 128, "global_every": 2},
    "logit_softcap 30": {"logit_softcap": 30.0},
    "bias": {"bias": True},
    "parallel_block": {"parallel_block": True},
    "dropout 0.1": {"dropout": 0.1, "attention_dropout": 0.1},
}


def stepper(cfg: ModelConfig, tc: TrainConfig, vocab: int, device: torch.device):
    torch.manual_seed(0)
    model = LM(cfg, vocab).to(device)
    optimizer = build_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> float:
        synchronize(device)
        start = time.perf_counter()
        train_step(model, optimizer, scaler, inputs, targets, tc, device, "fp32")
        synchronize(device)
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", metavar="CHOICE", help="time only these choices")
    parser.add_argument("--small", action="store_true", help="a tiny shape, to check it runs")
    args = parser.parse_args()
    tune_allocator()
    device = torch.device("cpu")
    if args.small:
        shape = dict(d_model=64, n_heads=4, n_layers=2, d_ff=128)
        tc, vocab = TrainConfig(batch_size=4, seq_len=64), 512
    else:
        shape = dict(d_model=384, n_heads=6, n_layers=12, d_ff=1536)
        tc, vocab = TrainConfig(batch_size=8, seq_len=512), VOCAB
    choices = {k: v for k, v in CHOICES.items() if not args.only or k in args.only}
    tokens = tc.batch_size * tc.seq_len
    print(f"{device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"shape {shape}, batch {tc.batch_size} x {tc.seq_len}, vocab {vocab}, fp32\n")
    print(f"{'choice':<36} {'tokens/s':>9} {'default':>9} {'relative':>9}")
    default = stepper(ModelConfig(**shape), tc, vocab, device)
    for name, change in choices.items():
        variant = stepper(ModelConfig(**shape, **change), tc, vocab, device)
        batch = torch.randint(0, vocab, (tc.batch_size, tc.seq_len + 1))
        inputs, targets = batch[:, :-1], batch[:, 1:]
        default(inputs, targets), variant(inputs, targets)  # warm-up, untimed
        times = {"default": [], "variant": []}
        for _ in range(args.rounds):
            times["default"].append(default(inputs, targets))
            times["variant"].append(variant(inputs, targets))
        base, mine = (statistics.median(times[k]) for k in ("default", "variant"))
        print(f"{name:<36} {tokens / mine:>9,.0f} {tokens / base:>9,.0f} {base / mine:>8.2f}x")
        del variant


if __name__ == "__main__":
    main()
