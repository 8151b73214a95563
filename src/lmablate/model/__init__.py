"""The language model, one file per component family: ``norms``, ``positions``, ``attention``,
``mlp``; ``transformer`` assembles them (block, LM, KV cache); ``loss`` is the chunked LM-head
cross-entropy; ``counts`` gives parameters and FLOPs from the config alone.

``register(family, name, builder, description)`` adds a norm or an MLP of your own (see
``lmablate.config.components``). Nothing heavier is imported here, so that ``counts`` (no
torch) can be used where torch is not.
"""

from lmablate.config.components import register

__all__ = ["register"]
