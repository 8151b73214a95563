"""The schema of the run files lmablate reads back: ``summary.json``, ``metrics.jsonl``,
``samples.json``, ``eval_documents.json`` and ``eval/lm_eval.json`` (``config.json`` is a
``RunConfig``, checked where it is read).

Everything downstream (``report``, ``status``, resume, export) does arithmetic on these files,
so a value of the wrong type there (a hand-edited ``"NaN"``, a ``null`` final loss, a
truncated record) must stop at the reader, not surface as a traceback three modules later.
Each file is checked against one model here; a file (or record) that fails reads as missing,
with one warning that names the file and the field. A run whose summary fails is therefore an
unfinished run: a study resumes it from its checkpoints, a report leaves it out and lists it.

Types are strict (``"3.1"`` is not a number, ``true`` is not an integer), NaN and infinities
stay legal where a diverged run writes them, and fields this version does not know are kept:
a newer version's summary still reads.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmablate.config.keys import format_validation_error

Number = float | None
Count = int | None
Table = dict[str, Any] | None


class _File(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class RunSummary(_File):
    """``summary.json``: written last and atomically, so its status says how the run ended."""

    status: Literal["complete", "diverged", "failed"]
    message: str | None = None
    step: Count = None
    max_steps: Count = None
    diverged_at_step: Count = None
    best_val_step: Count = None
    tokens_seen: Count = None
    vocab_size: Count = None
    flops_per_token: Number = None
    total_flops: Number = None
    peak_memory_bytes: Count = None
    final_val_loss: Number = None
    final_val_bpb: Number = None
    final_val_ppl: Number = None
    final_val_accuracy: Number = None
    final_val_top5_accuracy: Number = None
    final_val_confidence: Number = None
    final_val_entropy: Number = None
    final_test_loss: Number = None
    final_test_bpb: Number = None
    final_test_accuracy: Number = None
    best_val_loss: Number = None
    last_val_loss: Number = None
    final_train_loss: Number = None
    epochs: Number = None
    wall_time_s: Number = None
    train_time_s: Number = None
    compile_s: Number = None
    tokens_per_s: Number = None
    achieved_flops_per_s: Number = None
    peak_flops_per_s: Number = None
    mfu: Number = None
    optimizer: str | None = None
    precision: str | None = None
    device: str | None = None
    tokenizer: str | None = None
    config_hash: str | None = None
    data_cache_key: str | None = None
    params: Table = None
    eval: Table = None
    data: Table = None
    reference_losses: Table = None
    environment: Table = None
    parameter_groups: Table = None
    test: Table = None
    mixture: Table = None
    final_val_sets: Table = None
    final_test_sets: Table = None

    @model_validator(mode="after")
    def _complete_has_its_results(self) -> RunSummary:
        """A complete run is ranked on these: each is a finite number."""
        if self.status != "complete":
            return self
        for name in ("step", "tokens_seen", "final_val_loss"):
            value = getattr(self, name)
            if value is None or not math.isfinite(value):
                raise ValueError(f"{name}: a complete run's {name} must be a finite number")
        return self


class Sample(_File):
    prompt: str
    generated: str
    generated_only: str
    new_tokens: int
    prompt_index: Count = None
    draw: Count = None


class SamplesFile(_File):
    """``samples.json``: the study's text samples of a finished run."""

    settings: dict[str, Any]
    samples: list[Sample] = Field(min_length=1)
    step: Count = None
    quality: Table = None
    yardstick: Table = None


class DocumentsFile(_File):
    """``eval_documents.json``: the final evaluation per validation document."""

    step: int
    targets_digest: str
    columns: list[str]
    documents: list[Annotated[list[float], Field(min_length=2, max_length=2)]]


class DownstreamFile(_File):
    """``eval/lm_eval.json``: what ``lmablate eval`` recorded."""

    results: dict[str, dict[str, Any]]
    limit: Count = None


class TrainRecord(_File):
    kind: Literal["train"]
    step: int
    tokens_seen: int
    loss: float
    step_time: float


class EvalRecord(_File):
    kind: Literal["eval"]
    step: int
    tokens_seen: int
    val_loss: float
    val_bpb: float
    val_accuracy: float


RECORDS: dict[str, type[_File]] = {"train": TrainRecord, "eval": EvalRecord}


def problem(exc: ValidationError) -> str:
    """A validation failure as one line: each field and what is wrong with it."""
    return format_validation_error(exc).replace("\n", "; ").removeprefix("- ")


FILES: dict[str, type[_File]] = {  # a run directory's JSON files, by path inside it
    "summary.json": RunSummary,
    "samples.json": SamplesFile,
    "eval_documents.json": DocumentsFile,
    "eval/lm_eval.json": DownstreamFile,
}


def checked_file(value: dict[str, Any], path: Path, schema: type[_File]) -> dict[str, Any] | None:
    """``value`` when it fits ``schema``; else None, with a warning naming the field."""
    try:
        schema.model_validate(value)
    except ValidationError as exc:
        warnings.warn(f"{path}: damaged, read as missing ({problem(exc)})", stacklevel=3)
        return None
    return value


def checked_record(record: Any, where: str) -> dict[str, Any] | None:
    """A metrics record when it is a train or eval record of the right types; None (with a
    warning naming the line and field) otherwise. Records of other kinds are not ours to
    check and pass through."""
    if not isinstance(record, dict):
        warnings.warn(f"{where}: not a JSON object; record skipped", stacklevel=3)
        return None
    kind = record.get("kind")
    schema = RECORDS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        return record if "step" in record and "kind" in record else None
    try:
        schema.model_validate(record)
    except ValidationError as exc:
        warnings.warn(f"{where}: record skipped ({problem(exc)})", stacklevel=3)
        return None
    return record
