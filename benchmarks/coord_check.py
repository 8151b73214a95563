"""The coordinate check of muP (Yang et al. 2022, Tensor Programs V, section 4; the reference
``mup`` package's ``coord_check``): train the same model at several widths for a few AdamW
steps at one learning rate on the same tokens, then measure the mean absolute value of each
block's output and of the logits. Under sp these grow with the width (the updates of the hidden
matrices grow with it); under mup they stay flat, which is what lets a learning rate tuned at
the base width carry over.

    python benchmarks/coord_check.py [--widths 32 64 128 256] [--steps 4] [--lr 1e-2]

The base width of mup is the first width; the head dimension is 8 at every width (heads grow
with the width, as the scale axis widens a model), d_ff is 4 d_model, 2 layers.
"""

from __future__ import annotations

import argparse

import torch

from lmablate.config.run import ModelConfig, TrainConfig
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import build_optimizer

VOCAB = 96


def model_config(d_model: int, **fields) -> ModelConfig:
    """Width d_model at a head dimension of 8, d_ff 4 d_model, 2 layers."""
    return ModelConfig(
        d_model=d_model, n_heads=d_model // 8, n_layers=2, d_ff=4 * d_model, **fields
    )


def coordinate_scales(
    parametrization: str, widths: list[int], steps: int = 4, lr: float = 1e-2
) -> list[dict[str, float]]:
    """Per width: mean |x| of each block's output and of the logits after ``steps`` steps."""
    out = []
    for width in widths:
        fields = {"parametrization": "mup", "mup_base_width": widths[0]}
        torch.manual_seed(0)
        model = LM(model_config(width, **(fields if parametrization == "mup" else {})), VOCAB)
        train = TrainConfig(learning_rate=lr, weight_decay=0)  # a constant rate: no schedule
        optimizer = build_optimizer(model, train, torch.device("cpu"))
        ids = torch.randint(0, VOCAB, (8, 33), generator=torch.Generator().manual_seed(1))
        for _ in range(steps):
            loss = model(ids[:, :-1], targets=ids[:, 1:]).objective
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            x = model.embed(ids[:, :-1])
            cos, sin = model.position.rotary(torch.arange(x.shape[1]))
            scales = {}
            for i, block in enumerate(model.blocks):
                x = block(x, cos, sin)
                scales[f"block {i}"] = x.abs().mean().item()
            scales["logits"] = model(ids[:, :-1]).abs().mean().item()
        out.append(scales)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    if args.steps < 1 or any(w < 8 or w % 8 for w in args.widths):
        parser.error("--steps must be at least 1 and every width a multiple of 8 (head dim 8)")
    print(f"mean |activation| after {args.steps} AdamW steps at lr {args.lr:g}, by width")
    print(f"{'':6} {'':8} " + " ".join(f"{w:>7}" for w in args.widths) + "   widest/narrowest")
    for parametrization in ("sp", "mup"):
        rows = coordinate_scales(parametrization, args.widths, args.steps, args.lr)
        for key in rows[0]:
            values = [row[key] for row in rows]
            cells = " ".join(f"{v:7.3f}" for v in values)
            print(f"{parametrization:6} {key:8} {cells}   {values[-1] / values[0]:.2f}x")


if __name__ == "__main__":
    main()
