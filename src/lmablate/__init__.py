"""lmablate: ablation studies of small autoregressive transformer language models."""

from lmablate.errors import ConfigError, DataError, LmablateError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "LmablateError", "__version__"]
