"""Training speed: lmablate's model and step against transformers' Llama and a notebook-style
model, in one process, with the machine's matrix-multiply peak measured alongside.

Three ways train on the same random token batches, alternating step by step so that drift in
the machine's speed touches each alike; the median of each way's timed steps is reported:

- lmablate: ``LM`` and ``train_step`` (forward, cross-entropy, backward, clip, AdamW step);
- transformers: ``LlamaForCausalLM`` with the same shape and weights, the same AdamW groups,
  and the usual step written against it (float32 cross-entropy over its logits);
- notebook: the plain PyTorch model such studies are often written as: a fused qkv projection,
  a plain SiLU MLP, full-sequence SDPA and a logits layer of ``tokenizer.vocab_size``, trained
  with the same step. It is compared against lmablate with ``mlp: silu`` (the same shape).

Then an optimizer table: the same lmablate step with each optimizer (``adamw``, ``muon``,
``lion``, ``sgd``; each its own copy of the swiglu model), its step time relative to AdamW's,
timed in the same alternating rounds. Muon's Newton-Schulz iterations cost time that a study
comparing at equal wall-clock time needs to know. ``--no-optimizers`` leaves the table out.

Also printed: FLOPs per token (6N + 12·L·d·T, the figure lmablate reports), the achieved FLOP/s,
and on the CPU the fraction of a float32 matrix-multiply peak probed in the same run.

    python benchmarks/bench_train.py [--rounds 3] [--batch 8] [--seq-len 512]
        [--precision fp32|bf16] [--compile] [--threads N] [--small] [--system-malloc]
        [--no-optimizers]

On the CPU the C allocator is set up as lmablate's training sets it (hardware.tune_allocator),
for all ways alike: they share the process. ``--system-malloc`` leaves it as it is.

``--small`` is a tiny shape (d_model 64, 2 layers) for checking that the script runs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import VOCAB
from torch import nn

from lmablate.config.run import ModelConfig, TrainConfig
from lmablate.export import llama_config, to_hf_state_dict
from lmablate.hardware import (
    autocast,
    device_name,
    resolve_device,
    synchronize,
    tune_allocator,
)
from lmablate.model.counts import training_flops_per_token
from lmablate.model.positions import apply_rope, rope_cos_sin
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import build_optimizer
from lmablate.training.loop import train_step

OPTIMIZERS = ("adamw", "muon", "lion", "sgd")


class NotebookBlock(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.up, self.down = nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.silu(self.up(self.norm2(x))))


class NotebookLM(nn.Module):
    """A transformer as a notebook would write it (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(
            NotebookBlock(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(cfg.n_layers)
        )
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.head.weight = self.embed.weight
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))


def plain_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    tc: TrainConfig,
    device: torch.device,
    precision: str,
) -> None:
    """The step a user writes: logits, float32 cross-entropy, backward, clip, AdamW."""
    with autocast(device, precision):
        logits = forward(inputs)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of the best of several square matrix products on ``device`` (the probe)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(8):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per way")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="also time lmablate compiled")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--small", action="store_true", help="tiny shape: check the script")
    parser.add_argument(
        "--system-malloc", action="store_true", help="leave the C allocator as it is for all ways"
    )
    parser.add_argument(
        "--no-optimizers", action="store_true", help="leave out the optimizer table"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    device = resolve_device(args.device)
    # lmablate's training sets the C allocator up on CPU; in one process it serves every way, so
    # the ratios compare models and steps, and the peak fraction is what lmablate achieves
    tuned = device.type == "cpu" and not args.system_malloc and tune_allocator()
    allocator = "tuned for reuse" if tuned else "as is"
    shape = dict(d_model=384, n_heads=6, n_layers=12, d_ff=1536)
    vocab = VOCAB
    if args.small:
        shape, vocab = dict(d_model=64, n_heads=4, n_layers=2, d_ff=256), 1024
    tc = TrainConfig(batch_size=args.batch, seq_len=args.seq_len, max_steps=10, warmup_steps=1)
    swiglu, silu = ModelConfig(**shape, mlp="swiglu"), ModelConfig(**shape, mlp="silu")

    def built(model: nn.Module) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = model.to(device).train()
        return model, build_optimizer(model, tc, device)

    torch.manual_seed(0)
    ours, ours_opt = built(LM(swiglu, vocab))
    fields = llama_config(swiglu, vocab, context=args.seq_len, eos_id=0)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**fields, attn_implementation="sdpa")
    )
    hf.load_state_dict(to_hf_state_dict(ours.state_dict(), swiglu))
    hf, hf_opt = built(hf)
    torch.manual_seed(0)
    ours_silu, ours_silu_opt = built(LM(silu, vocab))
    torch.manual_seed(0)
    notebook, notebook_opt = built(NotebookLM(silu, vocab))
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    def lmablate_way(model: nn.Module, optimizer: torch.optim.Optimizer, forward=None):
        forward = model if forward is None else forward
        return lambda x, y: train_step(forward, optimizer, scaler, x, y, tc, device, args.precision)

    def plain_way(forward, model: nn.Module, optimizer: torch.optim.Optimizer):
        return lambda x, y: plain_step(forward, model, optimizer, x, y, tc, device, args.precision)

    ways: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
        "lmablate (swiglu)": lmablate_way(ours, ours_opt),
        "transformers Llama (swiglu)": plain_way(lambda x: hf(input_ids=x).logits, hf, hf_opt),
        "lmablate (silu)": lmablate_way(ours_silu, ours_silu_opt),
        "notebook-style (silu)": plain_way(notebook, notebook, notebook_opt),
    }
    compile_s = None
    if args.compile:
        torch.manual_seed(0)
        compiled_model, compiled_opt = built(LM(swiglu, vocab))
        ways["lmablate (swiglu, compiled)"] = lmablate_way(
            compiled_model, compiled_opt, torch.compile(compiled_model)
        )

    optimizers = [] if args.no_optimizers else list(OPTIMIZERS)
    if not hasattr(torch.optim, "Muon") and "muon" in optimizers:
        optimizers.remove("muon")
        print(f"muon left out: torch.optim.Muon needs torch >= 2.9 (this is {torch.__version__})")
    for kind in optimizers:
        torch.manual_seed(0)
        model = LM(swiglu, vocab).to(device).train()
        kind_tc = tc.model_copy(update={"optimizer": kind})
        optimizer = build_optimizer(model, kind_tc, device)
        ways[f"optimizer {kind}"] = lambda x, y, m=model, o=optimizer, c=kind_tc: train_step(
            m, o, scaler, x, y, c, device, args.precision
        )

    generator = torch.Generator().manual_seed(0)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, vocab, (args.batch, args.seq_len + 1), generator=generator)
        return tokens[:, :-1].to(device), tokens[:, 1:].to(device)

    for name, step in ways.items():  # warm-up: allocator, kernels, compilation
        synchronize(device)
        start = time.perf_counter()
        step(*batch())
        synchronize(device)
        if name.endswith("compiled)"):
            compile_s = time.perf_counter() - start
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, step in ways.items():
            inputs, targets = batch()
            synchronize(device)
            start = time.perf_counter()
            step(inputs, targets)
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)

    tokens = args.batch * args.seq_len
    rate = {name: tokens / statistics.median(values) for name, values in seconds.items()}
    flops = {
        "swiglu": training_flops_per_token(swiglu, vocab, args.seq_len),
        "silu": training_flops_per_token(silu, vocab, args.seq_len),
    }
    peak = None
    if device.type == "cpu":
        peak = matmul_peak(device, torch.float32 if args.precision == "fp32" else torch.bfloat16)
    print(
        f"device: {device_name(device)}; torch {torch.__version__}, threads {args.threads}, "
        f"C allocator {allocator} (all ways)"
    )
    print(
        f"shape: d_model {shape['d_model']}, {shape['n_layers']} layers, d_ff {shape['d_ff']}, "
        f"vocab {vocab:,}, batch {args.batch} x seq_len {args.seq_len}, {args.precision}; "
        f"median of {args.rounds} steps"
    )
    print(f"FLOPs/token: swiglu {flops['swiglu'] / 1e6:.1f}M, silu {flops['silu'] / 1e6:.1f}M")
    if peak is not None:
        print(f"measured {args.precision} matmul peak (2048^3 probe): {peak / 1e9:.1f} GFLOP/s")
    for name, value in rate.items():
        if name.startswith("optimizer "):
            continue
        achieved = value * flops["silu" if "silu" in name else "swiglu"]
        share = f", {achieved / peak:.0%} of matmul peak" if peak else ""
        print(f"  {name:<30} {value:8.1f} tokens/s  {achieved / 1e9:6.1f} GFLOP/s{share}")
    if compile_s is not None:
        print(f"  (compilation and first step: {compile_s:.1f} s, not in the figures above)")
    swiglu_ratio = rate["lmablate (swiglu)"] / rate["transformers Llama (swiglu)"]
    silu_ratio = rate["lmablate (silu)"] / rate["notebook-style (silu)"]
    print(f"  lmablate vs transformers Llama:  {swiglu_ratio:.2f}x (target >= 1.2)")
    print(f"  lmablate vs notebook-style:      {silu_ratio:.2f}x (target >= 1.1)")
    if peak is not None:
        share = rate["lmablate (swiglu)"] * flops["swiglu"] / peak
        print(f"  lmablate share of matmul peak:   {share:.0%} (target >= 60%)")
    if optimizers:
        print("optimizers (lmablate swiglu step; step time relative to AdamW's, same rounds):")
        base = statistics.median(seconds["optimizer adamw"])
        for kind in optimizers:
            median = statistics.median(seconds[f"optimizer {kind}"])
            print(f"  {kind:<6} {median * 1e3:9.1f} ms/step  {median / base:5.2f}x AdamW")


if __name__ == "__main__":
    main()
