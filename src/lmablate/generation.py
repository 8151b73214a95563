"""Text generation from a trained run: seeded sampling with temperature and top-k.

Each new token re-runs the model over the whole (context-truncated) sequence; the samples a
study writes are short (40 tokens from five prompts), so this costs little next to training.
Logits of embedding rows beyond the tokenizer's vocabulary (padding to a multiple of 64) are
masked, so only decodable tokens are ever drawn.
"""

from __future__ import annotations

from typing import Any

import torch

from lmablate.data.tokenizers import Tokenizer


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    context: int,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """One continuation per prompt; stops at EOS or after ``max_new_tokens``."""
    model.eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    samples = []
    for prompt in prompts:
        prompt_ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
        ids = list(prompt_ids)
        for _ in range(max_new_tokens):
            window = torch.tensor([ids[-context:]], device=device)
            logits = model(window)[0, -1].float().cpu()  # (V,)
            logits[tokenizer.vocab_size :] = -torch.inf
            next_id = _choose(logits, temperature, top_k, generator)
            if next_id == tokenizer.eos_id:
                break
            ids.append(next_id)
        new_ids = ids[len(prompt_ids) :]
        samples.append(
            {
                "prompt": prompt,
                "generated": tokenizer.decode(ids),
                "generated_only": tokenizer.decode(new_ids),
                "new_tokens": len(new_ids),
            }
        )
    return samples


def _choose(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> int:
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        threshold = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, -torch.inf)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
