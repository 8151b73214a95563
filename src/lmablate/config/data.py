"""The data section of a run config: the corpus (one source, or named ``sources`` mixed by
token weight), its tokenizer, the document split, the overlap check and the filters of the
training documents (``data/`` builds what it names). No torch.

Which fields a study's variant may change is decided in ``config/study.py``: everything that
fixes the evaluation documents (the held-out sources, the split, the overlap check,
``eval_documents``) belongs to the study; the training side (``tokenizer``, ``filters``,
``max_train_tokens``, source weights and training-only sources) may belong to a variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from lmablate.config.components import FILTERS
from lmablate.config.fields import Section, Seed, bounded, looks_like_path

SINGLE_SOURCE = "corpus"  # the name of a study's one source (and its evaluation set)


class BPETraining(Section):
    vocab_size: Annotated[int, Field(ge=260, le=65536, strict=True)] = Field(
        4096, description="Vocabulary of the byte-level BPE tokenizer trained on the corpus."
    )


class TrainedTokenizer(Section):
    """``{train_bpe: {vocab_size: N}}``: a BPE tokenizer trained on the training documents."""

    train_bpe: BPETraining


class ContaminationCheck(Section):
    """Overlap between documents by word n-grams (``data/overlap.py``), applied before the split
    is used: near-copies dropped from the corpus, contaminated held-out documents moved out."""

    ngram: Annotated[int, Field(ge=3, le=64, strict=True)] = Field(
        8, description="Words per n-gram (GPT-3's contamination check used 13)."
    )
    near_duplicates: Annotated[float, Field(gt=0, le=1)] | None = Field(
        0.8,
        description="Drop a document when at least this share of its distinct n-grams occurs "
        "in the documents before it in the corpus (the first copy stays); null keeps them.",
    )
    max_overlap: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.2,
        description="A validation document sharing more than this share of its n-grams with "
        "training (a test document: with training or validation) is contaminated.",
    )
    action: Literal["move", "drop"] = Field(
        "move",
        description="What happens to a contaminated held-out document: move it to training, "
        "or drop it.",
    )


class SourceFields(Section):
    """Where documents come from: the fields of one source."""

    source: Literal["hf", "local", "builtin", "builtin_code"] = Field(
        "hf",
        description="hf: stream from the Hugging Face Hub (or a local folder laid out like a "
        "hub dataset). local: files at path. builtin: English prose that ships with Python "
        "(the standard library's documentation topics), needs no download. builtin_code: "
        "Python source that ships with Python (the standard library's modules).",
    )
    dataset: str = Field(
        "HuggingFaceTB/smollm-corpus", description="Hub dataset id or folder (source: hf)."
    )
    subset: str | None = Field("cosmopedia-v2", description="Dataset configuration (source: hf).")
    split: str = Field("train", description="Dataset split to read (source: hf).")
    text_field: str = Field(
        "text", description="Field holding the text in hf, .jsonl, .json and .parquet records."
    )
    path: str | None = Field(
        None,
        description="source: local. A .txt file (documents separated by blank lines), a "
        ".jsonl/.json/.parquet file of records, or a directory of .txt files (one document "
        "per file). Relative paths are relative to the working directory.",
    )
    num_documents: bounded("num_documents") | None = Field(
        500, description="Read the first N documents of the source; null reads all of them."
    )

    @model_validator(mode="after")
    def _check_path(self, info: ValidationInfo) -> SourceFields:
        if info.context and not info.context.get("check_paths", True):
            return self  # a finished run's config: its corpus may have moved since
        if self.source == "local":
            if self.path is None:
                raise ValueError("data.path is required when data.source is 'local'")
            if not Path(self.path).expanduser().exists():
                raise ValueError(f"data.path {self.path!r} does not exist")
        return self


class SourceConfig(SourceFields):
    """One named source of ``data.sources``."""

    weight: Annotated[float, Field(ge=0)] = Field(
        1.0,
        description="Share of the training tokens drawn from this source, relative to the other "
        "sources' weights (0: evaluated on, never trained on).",
    )
    held_out: bool = Field(
        True,
        description="Split this source's documents into training and held-out ones, its held-out "
        "documents forming an evaluation set of the same name; false: every document is "
        "training data (a variant's extra source), checked against every evaluation set.",
    )


FILTERS_NOTE = "a name registered with lmablate.data.register_filter (or a built-in one)"


class FilterConfig(Section):
    """Filters of the training documents (never of the held-out ones)."""

    min_chars: bounded("num_documents") | None = Field(
        None, description="Drop training documents shorter than this many characters."
    )
    max_chars: bounded("num_documents") | None = Field(
        None, description="Drop training documents longer than this many characters."
    )
    near_duplicates: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description="Drop a training document when at least this share of its distinct "
        "n-grams occurs in the training documents before it (null: keep them; exact repeats are "
        "always dropped).",
    )
    keep: list[str] = Field(
        default_factory=list,
        description="Keep only the training documents that each of these named filters keeps; "
        f"each is {FILTERS_NOTE}.",
    )

    @field_validator("keep")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        for name in names:
            FILTERS.check(name, where="data.filters.keep")
        return names

    @property
    def active(self) -> bool:
        return bool(
            self.min_chars or self.max_chars or self.near_duplicates is not None or self.keep
        )


class DataConfig(SourceFields):
    """The corpus, its tokenizer, the document-level split and the training filters."""

    sources: dict[str, SourceConfig] = Field(
        default_factory=dict,
        description="Named sources mixed by token weight, e.g. {prose: {source: builtin}, code: "
        "{source: builtin_code, weight: 0.3}}: each takes the fields above (source to "
        "num_documents) plus weight (its share of the training tokens relative to the others'; "
        "default 1, 0: evaluated on only) and held_out (default true: split, its held-out "
        "documents an evaluation set of its name; false: training data only, a variant's extra "
        "source). Empty: the one source that the fields above name.",
    )
    tokenizer: str | TrainedTokenizer = Field(
        "HuggingFaceTB/SmolLM-135M",
        description="A hub tokenizer id, a local directory or tokenizer.json, or "
        "{train_bpe: {vocab_size: N}} to train a byte-level BPE on the training documents.",
    )
    val_fraction: Annotated[float, Field(gt=0, le=0.5)] = Field(
        0.1, description="Share of documents held out for validation, in (0, 0.5]."
    )
    test_fraction: Annotated[float, Field(ge=0, le=0.5)] = Field(
        0.0,
        description="Share of documents held out as a test split, seen by neither training nor "
        "any choice made on validation (a study's tune:); every complete run is scored on it "
        "once at the end. 0: no test split.",
    )
    split_seed: Seed = Field(
        0, description="Seed of the document-level train/validation/test split."
    )
    contamination: ContaminationCheck = Field(
        default_factory=ContaminationCheck,
        description="The overlap check between held-out and training documents (ngram, "
        "near_duplicates, max_overlap, action); exact repeats are always removed.",
    )
    filters: FilterConfig = Field(
        default_factory=FilterConfig,
        description="Filters of the training documents: min_chars, max_chars, near_duplicates, "
        "keep (registered filter names); held-out documents are never filtered.",
    )
    max_train_tokens: bounded("eval_tokens") | None = Field(
        None,
        description="Unique training tokens: each source's training stream is cut to its "
        "weight's share of this many tokens, and a run longer than that repeats them (its "
        "epochs are reported). null: every training document.",
    )
    eval_documents: bounded("num_documents") | None = Field(
        None,
        description="Score whole documents: the first N held-out documents of each evaluation "
        "set, every byte of each one a target (needed when runs differ in tokenizer, so every "
        "run scores the same bytes). null: the first eval_tokens targets of each set.",
    )
    cache_dir: str | None = Field(
        None,
        description="Where token caches live; null: $LMABLATE_CACHE or ~/.cache/lmablate.",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """With ``sources``, the single source's fields are left out: they would be defaults
        that say nothing, and a dump must validate again (config.json is read back)."""
        out = handler(self)
        if self.sources:
            for name in SourceFields.model_fields:
                out.pop(name, None)
        return out

    @model_validator(mode="after")
    def _check_sources(self) -> DataConfig:
        if self.sources:
            single = sorted(set(SourceFields.model_fields) & self.model_fields_set)
            if single:
                raise ValueError(
                    f"data: give either sources or the single source's fields, not both "
                    f"({', '.join(single)} set beside sources); move them into a source"
                )
            if not any(s.held_out for s in self.sources.values()):
                raise ValueError(
                    "data.sources: no source is held out, so nothing can be evaluated; leave "
                    "held_out: true on at least one source"
                )
            if not any(s.weight > 0 for s in self.sources.values()):
                raise ValueError("data.sources: every weight is 0, so nothing can be trained on")
            for name in self.sources:
                if not name or not name.replace("_", "").replace("-", "").isalnum():
                    raise ValueError(
                        f"data.sources: {name!r} is not a source name (letters, digits, _ and "
                        "-; it names an evaluation set)"
                    )
        return self

    def named_sources(self) -> dict[str, SourceConfig]:
        """Every source by name: ``sources``, or the single source as ``corpus``."""
        if self.sources:
            return dict(self.sources)
        fields = {name: getattr(self, name) for name in SourceFields.model_fields}
        return {SINGLE_SOURCE: SourceConfig.model_construct(**fields)}

    @model_validator(mode="after")
    def _check_tokenizer(self, info: ValidationInfo) -> DataConfig:
        if info.context and not info.context.get("check_paths", True):
            return self
        tokenizer = self.tokenizer
        if (
            isinstance(tokenizer, str)
            and looks_like_path(tokenizer)
            and not Path(tokenizer).expanduser().exists()
        ):
            raise ValueError(
                f"data.tokenizer {tokenizer!r} looks like a path but does not exist; give a "
                "hub id, a tokenizer directory or a tokenizer.json file"
            )
        return self


# The training side of the data: what a study's variant (not its baseline) may change. The rest
# of the data section fixes the evaluation documents and belongs to the study.
VARIANT_DATA_FIELDS = ("tokenizer", "filters", "max_train_tokens", "sources")


def check_variant_data(changes: dict[str, Any], study_data: dict[str, Any], where: str) -> None:
    """Refuse a variant's data change that would move its evaluation documents."""
    fixed = [key for key in changes if key not in VARIANT_DATA_FIELDS]
    if fixed:
        raise ValueError(
            f"{where}: data fields ({', '.join(fixed)}) fix the evaluation documents, so they "
            "belong to the study's data section, shared by every run; a variant may change "
            f"only the training side ({', '.join(VARIANT_DATA_FIELDS)})"
        )
    sources = changes.get("sources")
    if sources is None:
        return
    if not isinstance(sources, dict):
        raise ValueError(f"{where}: data.sources must be a mapping of named sources")
    if "sources" not in study_data or not study_data["sources"]:
        raise ValueError(
            f"{where}: data.sources in a variant needs named sources in the study's data "
            "(data: {sources: {NAME: {source: ...}}}) to reweight or add to"
        )
    for name, change in sources.items():
        known = study_data["sources"].get(name)
        change = change if isinstance(change, dict) else {}
        if known is not None and SourceConfig.model_validate(known).held_out:
            moved = sorted(set(change) - {"weight"})
            if moved:
                raise ValueError(
                    f"{where}: data.sources.{name}.{moved[0]}: source {name!r} is held out, so "
                    "its documents are an evaluation set of the study; a variant may change "
                    "only its weight (add a training-only source with held_out: false instead)"
                )
        elif known is None and change.get("held_out", True):
            raise ValueError(
                f"{where}: data.sources.{name}: a source a variant adds is training data only; "
                "give it held_out: false (an evaluation set belongs to the study, so every run "
                "is scored on it)"
            )
