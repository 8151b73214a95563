"""Text generation from a trained run, and measures of the text it produces.

Sampling runs the prompt through the model once (prefill), then one token per step against a
key/value cache. Prompts of different lengths are batched with left padding: each sequence gets
its own rotary positions (0 at its first real token) and an attention mask hides the padding,
so a batched continuation equals the same prompt's continuation alone. Decoding options:
greedy, temperature, top-k, top-p (nucleus; Holtzman et al. 2020), a repetition penalty (the
CTRL rule, Keskar et al. 2019: divide positive logits, multiply negative ones), a stop at EOS
or after ``max_new_tokens``; seeded, under ``torch.inference_mode()`` and the run's precision.
Logits of embedding rows beyond the tokenizer's vocabulary (padding to a multiple of 64) are
masked, so only decodable tokens are ever drawn.

Quality measures (Li et al. 2016 for distinct-n): distinct-1/2/3 (unique n-grams / all n-grams
over a run's continuations), the repetition rate (share of 4-grams that repeat an earlier
4-gram of the same continuation), the mean continuation length in tokens, and the geometric-mean
perplexity of the continuations under common yardsticks (in a study: the training split's
bigram count model, and the baseline's model).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.effect import check_positions
from lmablate.config.run import SEED_MAX
from lmablate.data.tokenizers import Tokenizer
from lmablate.errors import LmablateError
from lmablate.hardware import autocast
from lmablate.model.attention import Attention
from lmablate.model.mlp import MLP
from lmablate.model.transformer import LM, KVCache

MAX_NEW_TOKENS = 65536  # a longer continuation is a typo; the cache would hold it all


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 40
    temperature: float = 0.8  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"{name} {value} (valid: {valid})"
            for name, value, ok, valid in (
                (
                    "max_new_tokens",
                    self.max_new_tokens,
                    1 <= self.max_new_tokens <= MAX_NEW_TOKENS,
                    f"1 to {MAX_NEW_TOKENS:,}",
                ),
                (
                    "temperature",
                    self.temperature,
                    math.isfinite(self.temperature) and self.temperature >= 0,
                    "finite, >= 0; 0 is greedy",
                ),
                ("top_k", self.top_k, self.top_k is None or self.top_k >= 1, ">= 1"),
                (
                    "top_p",
                    self.top_p,
                    self.top_p is None or (math.isfinite(self.top_p) and 0 < self.top_p <= 1),
                    "in (0, 1]",
                ),
                (
                    "repetition_penalty",
                    self.repetition_penalty,
                    math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
                    "finite, > 0; 1 is off",
                ),
                ("seed", self.seed, 0 <= self.seed <= SEED_MAX, f"0 to {SEED_MAX} (2^63 - 1)"),
            )
            if not ok
        ]
        if problems:
            raise LmablateError("invalid sampling settings: " + "; ".join(problems))


def _prompt_ids(tokenizer: Tokenizer, prompt: str | list[int]) -> list[int]:
    """A prompt given as text is encoded; one given as token ids (a document's opening) is
    used as it is, so it is exactly the tokens the document starts with."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt) or [tokenizer.eos_id]
    return list(prompt) or [tokenizer.eos_id]


def continuation_text(tokenizer: Tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add after the prompt: decoded together with the prompt, so a
    character split across the boundary is whole, without a trailing character cut short by
    the token limit (byte-level tokens can end mid-character)."""
    head = tokenizer.decode(prompt_ids).rstrip("\ufffd")  # a prompt ending mid-character
    full = tokenizer.decode(prompt_ids + new_ids)
    text = full[len(head) :] if full.startswith(head) else tokenizer.decode(new_ids)
    return text.rstrip("\ufffd")


def _prepare_prompts(
    tokenizer: Tokenizer, prompts: list[str | list[int]], context: int, max_new_tokens: int
) -> list[list[int]]:
    keep = max(1, context - max_new_tokens)  # room for the continuation inside the context
    if max_new_tokens >= context:
        warnings.warn(
            f"{max_new_tokens} new tokens do not fit the model's context of {context}: "
            "positions past it were never trained",
            stacklevel=3,
        )
    encoded = []
    for prompt in prompts:
        ids = _prompt_ids(tokenizer, prompt)
        if len(ids) > keep:
            warnings.warn(
                f"prompt of {len(ids)} tokens truncated from the left to {keep} so that it and "
                f"{max_new_tokens} new tokens fit the model's context of {context}",
                stacklevel=3,
            )
            ids = ids[-keep:]
        encoded.append(ids)
    return encoded


def _choose(
    logits: torch.Tensor,
    history: torch.Tensor | None,
    settings: Sampling,
    generator: torch.Generator,
) -> torch.Tensor:
    """Next token per sequence from (B, V) float logits on the CPU; ``history`` (the tokens so
    far) is needed only for a repetition penalty."""
    if history is not None and settings.repetition_penalty != 1.0:
        seen = torch.gather(logits, 1, history)
        seen = torch.where(
            seen > 0, seen / settings.repetition_penalty, seen * settings.repetition_penalty
        )
        logits = logits.scatter(1, history, seen)
    if settings.temperature == 0:
        return logits.argmax(-1)
    logits = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < logits.shape[-1]:
        threshold = logits.topk(settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, -torch.inf)
    if settings.top_p is not None and settings.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        # drop a token once the ones ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs > settings.top_p
        logits = logits.scatter(1, order, ordered.masked_fill(drop, -torch.inf))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


class _DecodeLinear(nn.Module):
    """An ``nn.Linear`` that computes ``rows``-row products as ``weight @ x.T``.

    A decode step multiplies every weight matrix by a handful of rows (one per sequence), so it
    is bound by reading the weights from memory. In fp32 on a CPU, ``F.linear`` on a few rows
    reads a large weight several times slower than the transposed product ``weight @ x.T``
    (the 49,152 x 384 LM head on 5 rows, 2-core AMD EPYC: 12.5 ms against 3.4 ms;
    ``benchmarks/bench_generate.py`` prints both). Inputs with another number of rows (the
    prefill) take ``F.linear``, so the rule depends on the shape alone.
    """

    def __init__(self, weight: torch.Tensor, rows: int, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight, self.rows, self.bias = weight, rows, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] != self.rows:
            return F.linear(x, self.weight, self.bias)
        out = torch.mm(self.weight, flat.T).T
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _fused(linears: tuple[nn.Linear, ...], rows: int) -> _DecodeLinear:
    """One product for several linear layers of the same input (weights, biases stacked)."""
    biases = [linear.bias for linear in linears]
    bias = None if biases[0] is None else torch.cat(biases)
    return _DecodeLinear(torch.cat([linear.weight for linear in linears]), rows, bias)


def _decode_layout_applies(model: nn.Module, precision: str) -> bool:
    """fp32 models on a CPU: there it measured faster; in bf16 ``F.linear`` is faster."""
    weight = next(model.parameters())
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and precision == "fp32"


@contextlib.contextmanager
def _decode_layout(model: nn.Module, rows: int, precision: str) -> Iterator[None]:
    """While decoding, run every linear layer as a ``_DecodeLinear``, with q, k, v and gate, up
    concatenated into one product each (fewer, larger products); restore the model after."""
    swapped: list[tuple[nn.Module, str, nn.Module | None]] = []
    if _decode_layout_applies(model, precision):
        for parent in list(model.modules()):
            if isinstance(parent, Attention):
                swapped.append((parent, "qkv_proj", parent.qkv_proj))
                parent.qkv_proj = _fused((parent.q_proj, parent.k_proj, parent.v_proj), rows)
            elif isinstance(parent, MLP) and parent.gated:
                swapped.append((parent, "gate_up_proj", parent.gate_up_proj))
                parent.gate_up_proj = _fused((parent.gate_proj, parent.up_proj), rows)
            for name in ("o_proj", "down_proj", "lm_head"):
                child = getattr(parent, name, None)
                if type(child) is nn.Linear:
                    setattr(parent, name, _DecodeLinear(child.weight, rows, child.bias))
                    swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


@torch.inference_mode()
def generate(
    model: LM,
    tokenizer: Tokenizer,
    prompts: list[str | list[int]],
    settings: Sampling,
    *,
    context: int,
    precision: str = "fp32",
    use_cache: bool = True,
) -> list[dict[str, Any]]:
    """One continuation per prompt, batched; ``use_cache=False`` recomputes every step."""
    if not prompts:
        return []
    check_positions(model.cfg, settings.max_new_tokens)
    model.eval()
    device = next(model.parameters()).device
    encoded = _prepare_prompts(tokenizer, prompts, context, settings.max_new_tokens)
    batch, width = len(encoded), max(map(len, encoded))
    total = width + settings.max_new_tokens
    pads = torch.tensor([width - len(ids) for ids in encoded], device=device)
    tokens = torch.full((batch, total), tokenizer.eos_id, dtype=torch.long, device=device)
    for row, ids in enumerate(encoded):
        tokens[row, width - len(ids) : width] = torch.tensor(ids, device=device)
    index = torch.arange(total, device=device)
    valid = index[None, :] >= pads[:, None]  # (B, total): False on left padding
    positions = (index[None, :] - pads[:, None]).clamp(min=0)  # 0 at each first real token
    causal = index[:, None] >= index[None, :]  # (total, total)
    # a padding query may see itself, so no softmax row is empty
    allowed = (causal[None] & valid[:, None, :]) | torch.eye(
        total, dtype=torch.bool, device=device
    )[None]
    cache = None
    if use_cache:
        dtype = (
            torch.bfloat16
            if precision == "bf16"
            else (torch.float16 if precision == "fp16" else model.embed.weight.dtype)
        )
        cache = KVCache.allocate(model.cfg, batch, total, device, dtype)
    generator = torch.Generator().manual_seed(settings.seed)
    finished = torch.zeros(batch, dtype=torch.bool)
    lengths = torch.full((batch,), settings.max_new_tokens)
    vocab = tokenizer.vocab_size
    end = width
    # the prefill and the recompute path multiply many rows; only cached decode steps need it
    layout = _decode_layout(model, batch, precision) if use_cache else contextlib.nullcontext()
    with layout:
        for step in range(settings.max_new_tokens):
            start = cache.length if cache is not None else 0
            with autocast(device, precision):  # a no-op context in fp32
                logits = model(
                    tokens[:, start:end],
                    positions=positions[:, start:end],
                    cache=cache,
                    mask=allowed[:, None, start:end, :end],
                )
            logits = logits[:, -1].float().cpu()  # (B, V)
            logits[:, vocab:] = -torch.inf
            history = None
            if settings.repetition_penalty != 1.0:
                # left padding is not text: point it at the row's first real token, already counted
                first_real = tokens[torch.arange(batch, device=device), pads][:, None]
                history = torch.where(valid[:, :end], tokens[:, :end], first_real).cpu()
            next_ids = _choose(logits, history, settings, generator)
            next_ids = torch.where(finished, torch.full_like(next_ids, tokenizer.eos_id), next_ids)
            newly_done = (next_ids == tokenizer.eos_id) & ~finished
            lengths[newly_done] = step
            finished |= newly_done
            tokens[:, end] = next_ids.to(device)
            end += 1
            if bool(finished.all()):
                break
    samples = []
    for row, ids in enumerate(encoded):
        new_ids = tokens[row, width : width + int(lengths[row])].tolist()
        prompt = prompts[row]
        samples.append(
            {
                "prompt": prompt if isinstance(prompt, str) else tokenizer.decode(ids),
                "prompt_ids": ids,
                "generated": tokenizer.decode(ids + new_ids).rstrip("\ufffd"),
                "generated_only": continuation_text(tokenizer, ids, new_ids),
                "new_tokens": len(new_ids),
                "new_token_ids": new_ids,
                "stopped": "eos"
                if bool(finished[row]) and len(new_ids) < settings.max_new_tokens
                else "length",
            }
        )
    return samples


# --------------------------------------------------------------------------- quality measures


def _ngrams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(continuations: list[list[int]], n: int) -> float | None:
    grams = [g for ids in continuations for g in _ngrams(ids, n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(continuations: list[list[int]], n: int = 4) -> float | None:
    total = repeated = 0
    for ids in continuations:
        grams = _ngrams(ids, n)
        total += len(grams)
        repeated += len(grams) - len(set(grams))
    return repeated / total if total else None


@torch.inference_mode()
def continuation_perplexity(
    model: LM,
    tokenizer: Tokenizer,
    prompt: str | list[int],
    continuation_ids: list[int],
    context: int,
) -> float | None:
    """exp(mean NLL of the continuation's tokens given the prompt) under ``model``."""
    if not continuation_ids:
        return None
    prompt_ids = _prompt_ids(tokenizer, prompt)
    ids = (prompt_ids + continuation_ids)[-context:]
    n = min(len(continuation_ids), len(ids) - 1)
    device = next(model.parameters()).device
    inputs = torch.tensor([ids[:-1]], device=device)
    logits = model(inputs)[0, -n:].float()
    targets = torch.tensor(ids[-n:], device=device)
    return math.exp(F.cross_entropy(logits, targets).item())


def quality(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    continuations = [s["new_token_ids"] for s in samples]

    def geometric_mean(key: str) -> float | None:
        values = [s[key] for s in samples if s.get(key) is not None]
        return math.exp(sum(map(math.log, values)) / len(values)) if values else None

    return {
        "distinct_1": distinct_n(continuations, 1),
        "distinct_2": distinct_n(continuations, 2),
        "distinct_3": distinct_n(continuations, 3),
        "repetition_rate": repetition_rate(continuations),
        "mean_new_tokens": sum(map(len, continuations)) / len(continuations) if samples else None,
        "mean_bigram_ppl": geometric_mean("bigram_ppl"),
        "mean_baseline_ppl": geometric_mean("baseline_ppl"),
    }
