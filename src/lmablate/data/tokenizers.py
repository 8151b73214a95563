"""Tokenizers: a hub id, a local directory or tokenizer.json, or a BPE trained on the corpus.

Everything is a Hugging Face *fast* tokenizer underneath; lmablate talks to its Rust backend
(``tokenizers.Tokenizer``) directly so batches of documents are encoded in parallel. Documents
are encoded without special tokens; the data pipeline puts the EOS token between them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmablate.errors import DataError

HUB_LOGGERS = ("huggingface_hub", "datasets", "transformers", "fsspec")


@contextlib.contextmanager
def hub_quiet() -> Iterator[None]:
    """The Hub libraries' own log lines (each retry of an unreachable host, progress notes)
    held back while they work for us: a failure then reads as lmablate's one message."""
    loggers = [logging.getLogger(name) for name in HUB_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")
TRAINED_EOS = "<|endoftext|>"


@dataclass
class Tokenizer:
    backend: Backend
    eos_id: int
    name: str

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token(self) -> str:
        return self.backend.id_to_token(self.eos_id)

    def identity(self) -> str:
        """A digest of everything that decides how text is encoded."""
        return hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # the _fast variant skips character offsets, which nothing here reads (tokenizers 0.21+)
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    def save(self, directory: Path) -> None:
        """Write tokenizer.json plus the config that ``AutoTokenizer.from_pretrained`` reads."""
        from transformers import PreTrainedTokenizerFast

        fast = PreTrainedTokenizerFast(
            tokenizer_object=self.backend,
            eos_token=self.eos_token,
            bos_token=self.eos_token,
            unk_token=None,
        )
        fast.save_pretrained(str(directory))


def _eos_from_vocab(backend: Backend, where: str) -> int:
    for token in EOS_CANDIDATES:
        token_id = backend.token_to_id(token)
        if token_id is not None:
            return token_id
    raise DataError(
        f"tokenizer {where} has no end-of-text token (looked for {', '.join(EOS_CANDIDATES)}); "
        "one is needed to separate documents"
    )


def load_tokenizer(spec: str) -> Tokenizer:
    """A tokenizer from a tokenizer.json file, a local directory or a hub id."""
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            backend = Backend.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on a bad file
            raise DataError(f"{path} is not a valid tokenizer.json: {exc}") from exc
        return Tokenizer(backend, _eos_from_vocab(backend, str(path)), str(path))
    if (
        path.is_dir()
        and not (path / "tokenizer.json").is_file()
        and not any((path / name).is_file() for name in ("tokenizer_config.json", "vocab.json"))
    ):
        raise DataError(
            f"tokenizer directory {path} holds no tokenizer (no tokenizer.json or "
            "tokenizer_config.json)"
        )
    from transformers import AutoTokenizer

    try:
        with hub_quiet():
            hf = AutoTokenizer.from_pretrained(spec, trust_remote_code=False)  # no hub code
    except Exception as exc:  # hub errors (offline, not found, gated) are all user-fixable
        where = f"directory {path}" if path.is_dir() else f"{spec!r} from the Hugging Face Hub"
        raise DataError(
            f"could not load tokenizer {where}: {type(exc).__name__}: {exc}\n"
            "If the Hub is unreachable, give a local tokenizer directory or tokenizer.json, "
            "or train one with tokenizer: {train_bpe: {vocab_size: 4096}}."
        ) from exc
    if not getattr(hf, "is_fast", False):
        raise DataError(f"tokenizer {spec!r} has no fast (Rust) implementation")
    backend = hf.backend_tokenizer
    eos_id = hf.eos_token_id if hf.eos_token_id is not None else _eos_from_vocab(backend, spec)
    return Tokenizer(backend, eos_id, spec)


def train_bpe(documents: list[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style) on ``documents``; deterministic for a given input."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[TRAINED_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(documents, trainer=trainer, length=len(documents))
    return Tokenizer(backend, backend.token_to_id(TRAINED_EOS), f"bpe-{vocab_size}")


def load_trained(path: Path, name: str) -> Tokenizer:
    backend = Backend.from_file(str(path))
    return Tokenizer(backend, backend.token_to_id(TRAINED_EOS), name)


def save_backend(tokenizer: Tokenizer, path: Path) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tokenizer.backend.save(str(tmp))
    os.replace(tmp, path)
