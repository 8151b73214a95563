"""The language model: one file per component family, the transformer that assembles them,
the chunked LM-head loss, and the parameter and FLOP counts."""

from lmablate.model.transformer import LM, KVCache, count_parameters, resolve_vocab_size

__all__ = ["LM", "KVCache", "count_parameters", "resolve_vocab_size"]
