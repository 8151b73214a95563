"""Generation speed: lmablate with its KV cache, lmablate recomputing every step, and
transformers' LlamaForCausalLM.generate on the same weights, in one process.

The model is the reference baseline's size with a SwiGLU MLP (so a Llama twin exists):
d_model 384, 6 heads, 12 layers, d_ff 1536, 49,152-token vocabulary. Each way continues the
five reference prompts together (batched, left-padded) greedily for 40 new tokens on the CPU,
in fp32 or (``--dtype bfloat16``) bf16 for both; the three ways alternate for several rounds
and the median is reported.

    python benchmarks/bench_generate.py [--rounds 3] [--new-tokens 40] [--threads N]
        [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import VOCAB, smollm_sized_tokenizer, timed

from lmablate.config.run import ModelConfig
from lmablate.config.study import REFERENCE_PROMPTS
from lmablate.export import llama_config, to_hf_state_dict
from lmablate.generation import Sampling, _DecodeLinear, generate
from lmablate.hardware import device_name
from lmablate.model.transformer import LM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="weights and activations of both models",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    tokenizer = smollm_sized_tokenizer()
    cfg = ModelConfig(d_model=384, n_heads=6, n_layers=12, d_ff=1536, mlp="swiglu")
    torch.manual_seed(0)
    model = LM(cfg, VOCAB).eval()
    fields = llama_config(cfg, VOCAB, context=512, eos_id=tokenizer.eos_id)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**fields, attn_implementation="sdpa")
    ).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), cfg))
    dtype = getattr(torch, args.dtype)
    model, hf = model.to(dtype), hf.to(dtype)

    prompts = list(REFERENCE_PROMPTS)
    encoded = [tokenizer.encode(p) for p in prompts]
    width = max(map(len, encoded))
    input_ids = torch.tensor([[tokenizer.eos_id] * (width - len(e)) + e for e in encoded])
    attention_mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    settings = Sampling(max_new_tokens=args.new_tokens, temperature=0.0)

    def ours(use_cache: bool) -> int:
        samples = generate(model, tokenizer, prompts, settings, context=512, use_cache=use_cache)
        return sum(s["new_tokens"] for s in samples)

    @torch.inference_mode()
    def theirs() -> int:
        out = hf.generate(
            input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=args.new_tokens,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.eos_id,
        )
        new = out[:, width:]
        return sum(
            int((row == tokenizer.eos_id).nonzero()[0])
            if (row == tokenizer.eos_id).any()
            else len(row)
            for row in new
        )

    ways = {
        "lmablate (KV cache)": lambda: ours(True),
        "lmablate (recompute)": lambda: ours(False),
        "transformers generate": theirs,
    }
    for run in ways.values():  # warm-up: allocator, kernels, lazy imports
        run()
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, run in ways.items():
            start = time.perf_counter()
            tokens = run()
            rates[name].append(tokens / (time.perf_counter() - start))

    print(
        f"device: {device_name(torch.device('cpu'))}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(
        f"5 prompts x {args.new_tokens} new tokens, greedy, {args.dtype}, median of "
        f"{args.rounds} rounds"
    )
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, rate in median.items():
        print(f"  {name:<24} {rate:8.1f} tokens/s")
    # the kernel behind the decode layout: the LM head on one row per prompt
    head = model.lm_head.weight
    rows = torch.randn(len(prompts), head.shape[1], dtype=dtype)
    decode_head = _DecodeLinear(head, len(prompts))
    with torch.inference_mode():
        plain, _ = timed(lambda: F.linear(rows, head), 50 * args.rounds)
        transposed, _ = timed(lambda: decode_head(rows), 50 * args.rounds)
    print(
        f"  LM head {tuple(head.shape)} x {len(prompts)} rows: F.linear {plain * 1e3:.2f} ms, "
        f"weight @ x.T {transposed * 1e3:.2f} ms"
    )
    cached = median["lmablate (KV cache)"]
    print(
        f"  KV cache vs recompute:      {cached / median['lmablate (recompute)']:.2f}x "
        "(target >= 3)"
    )
    print(
        f"  KV cache vs transformers:   {cached / median['transformers generate']:.2f}x "
        "(target >= 1.5)"
    )


if __name__ == "__main__":
    main()
