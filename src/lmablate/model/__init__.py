"""The language model, one file per component family: ``norms``, ``positions``, ``attention``,
``mlp``; ``transformer`` assembles them (block, LM, KV cache); ``loss`` is the chunked LM-head
cross-entropy; ``counts`` gives parameters and FLOPs from the config alone."""

from lmablate.model.counts import count_parameters, resolve_vocab_size, training_flops_per_token
from lmablate.model.transformer import LM, KVCache

__all__ = ["LM", "KVCache", "count_parameters", "resolve_vocab_size", "training_flops_per_token"]
