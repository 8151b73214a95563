"""A study directory as data: the runs' configs, summaries, logs and samples, and their curves.

Everything is read from disk (study.yaml and each run's config.json, metrics.jsonl,
summary.json, samples.json, eval_documents.json), never from live objects. No torch.
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmablate.analysis.runfiles import FILES, checked_file, checked_record
from lmablate.errors import LmablateError

# a complete run's final evaluation, per validation document: [targets, summed nats]
DOCUMENTS_FILE = "eval_documents.json"


@dataclass
class RunData:
    variant: str
    seed: int
    path: Path
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, Any] | None = None
    downstream: dict[str, Any] | None = None  # eval/lm_eval.json, from lmablate eval
    documents: dict[str, Any] | None = None  # eval_documents.json: the final per-document loss
    damaged: list[str] = field(default_factory=list)  # files read as missing, and why
    summary_damaged: bool = False  # a summary.json that is there but fails its schema
    # the study's measure: nats per token, or bits per byte when the study's tokenizers differ
    # (set by StudyData: a property of the study, never of one run)
    in_bytes: bool = False

    @property
    def status(self) -> str:
        if self.summary is not None:
            return self.summary["status"]
        if self.summary_damaged:
            return "damaged"  # read as unfinished: resumed by a study, listed by a report
        return "partial" if self.records else "not started"

    @property
    def train_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == "train"]

    @property
    def eval_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == "eval"]

    @property
    def final_score(self) -> float | None:
        """The final validation measure the study ranks on (see ``StudyData.in_bytes``)."""
        return (self.summary or {}).get("final_val_bpb" if self.in_bytes else "final_val_loss")

    @property
    def final_test_score(self) -> float | None:
        return (self.summary or {}).get("final_test_bpb" if self.in_bytes else "final_test_loss")

    def score(self, record: dict[str, Any]) -> float:
        """An evaluation record's value of the study's measure."""
        return record["val_bpb" if self.in_bytes else "val_loss"]


@dataclass
class StudyData:
    directory: Path
    study: dict[str, Any]
    runs: list[RunData]

    def __post_init__(self) -> None:
        for run in self.runs:
            run.in_bytes = self.in_bytes

    @property
    def tokenizers(self) -> dict[str, str]:
        """Each compared configuration's tokenizer, as its complete runs recorded it."""
        out: dict[str, str] = {}
        for variant in self.compared:
            for run in self.runs_of(variant, complete_only=True):
                if (run.summary or {}).get("tokenizer"):
                    out.setdefault(variant, run.summary["tokenizer"])
        return out

    @property
    def in_bytes(self) -> bool:
        """True when the compared configurations differ in tokenizer: their nats per token
        score different targets, so the study's measure is bits per byte of the same bytes
        (every curve's ``score``, every run's ``final_score``)."""
        return len(set(self.tokenizers.values())) > 1

    @property
    def variants(self) -> list[str]:
        return ["baseline", *self.study.get("variants", {})]

    @property
    def ladder(self) -> dict[str, float]:
        """The budget ladder's runs of the baseline: {variant: multiple of its budget}."""
        return (self.study.get("budget") or {}).get("ladder_variants") or {}

    @property
    def compared(self) -> list[str]:
        """The configurations the study compares: every variant but the ladder's rungs and,
        in a tuned study, the candidates other than each configuration itself (those are
        compared through the tuned comparison, which chooses among them on validation), and
        the configurations at the scale axis's other sizes."""
        tuning = (self.study.get("tuning") or {}).get("variants") or {}
        candidates = {n for names in tuning.values() for n in names} - set(tuning)
        return [
            v
            for v in self.variants
            if v not in self.ladder and v not in candidates and v not in self.resized
        ]

    @property
    def resized(self) -> set[str]:
        """The variants that are a configuration at another size of the scale axis (compared
        in the Scale section, size by size, not with the written configurations)."""
        table = (self.study.get("scale") or {}).get("variants") or {}
        return {name for config, at in table.items() for name in at.values() if name != config}

    def runs_of(self, variant: str, complete_only: bool = False) -> list[RunData]:
        return [
            r
            for r in self.runs
            if r.variant == variant and (not complete_only or r.status == "complete")
        ]


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A run file's JSON object; None when absent, and None with a warning naming the file when
    it is damaged (a run whose summary is damaged reads as unfinished: a study resumes it from
    its checkpoints, a report leaves it out, and everything else stays readable)."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        warnings.warn(f"{path}: damaged, read as missing ({exc})", stacklevel=2)
        return None
    if not isinstance(value, dict):
        warnings.warn(f"{path}: damaged, read as missing (not a JSON object)", stacklevel=2)
        return None
    return value


def read_jsonl(path: Path, check: bool = True) -> list[dict[str, Any]]:
    """Records of a metrics log. A torn last line (a kill mid-write) is dropped; a corrupt line
    or a record of the wrong types (``runfiles``) elsewhere is reported and skipped, never
    fatal. ``check=False`` (a resumed run rewriting its own log) keeps every record that has
    a kind and an integer step, so no record is lost for its types alone."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: unreadable record skipped", stacklevel=2)
                continue
            if not check:
                kept = isinstance(record, dict) and isinstance(record.get("step"), int)
                if kept and "kind" in record:
                    records.append(record)
                continue
            record = checked_record(record, f"{path}:{number}")
            if record is not None:
                records.append(record)
    return records


def read_run_file(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The run file ``name`` (a key of ``runfiles.FILES``) checked against its schema; None
    when absent, and None with a warning naming the file and field when damaged."""
    path = run_dir / name
    value = read_json_object(path)
    return None if value is None else checked_file(value, path, FILES[name])


def load_study_dir(directory: str | Path) -> StudyData:
    directory = Path(directory)
    study_file = directory / "study.yaml"
    if not study_file.is_file():
        raise LmablateError(
            f"{directory} is not a study directory (no study.yaml); "
            "create one with lmablate run STUDY.yaml"
        )
    try:
        study = yaml.safe_load(study_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LmablateError(
            f"{study_file} is damaged ({type(exc).__name__}); rerun the study with "
            "lmablate run STUDY.yaml --out this directory to rewrite it"
        ) from None
    if not isinstance(study, dict) or not isinstance(study.get("seeds"), list):
        raise LmablateError(
            f"{study_file} is damaged (no study with seeds in it); rerun the study with "
            "lmablate run STUDY.yaml --out this directory to rewrite it"
        )
    runs = [
        read_run(directory / "runs" / variant / f"seed-{seed}", variant, seed)
        for variant in ["baseline", *study.get("variants", {})]
        for seed in study["seeds"]
    ]
    return StudyData(directory, study, runs)


def read_run(path: Path, variant: str, seed: int) -> RunData:
    """A run directory's files; each damaged one is read as missing, and named in
    ``damaged`` (the warning says so too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = RunData(
            variant=variant,
            seed=seed,
            path=path,
            config=read_json_object(path / "config.json"),
            summary=read_run_file(path, "summary.json"),
            records=read_jsonl(path / "metrics.jsonl"),
            samples=read_run_file(path, "samples.json"),
            downstream=read_run_file(path, "eval/lm_eval.json"),
            documents=read_run_file(path, DOCUMENTS_FILE),
        )
    run.summary_damaged = run.summary is None and (path / "summary.json").is_file()
    for warning in caught:
        run.damaged.append(str(warning.message))
        warnings.warn(str(warning.message), stacklevel=2)
    return run


def scan_runs(directory: Path) -> list[RunData]:
    """The run directories under ``DIR/runs/VARIANT/seed-K``, found without study.yaml (what a
    damaged study directory still holds)."""
    runs = []
    for path in sorted((directory / "runs").glob("*/seed-*")):
        seed = path.name.removeprefix("seed-")
        if path.is_dir() and seed.lstrip("-").isdigit():
            runs.append(read_run(path, path.parent.name, int(seed)))
    return runs


def cumulative_train_time(run: RunData) -> dict[int, float]:
    """Seconds of training (evaluation excluded) spent up to each logged step."""
    elapsed, previous, out = 0.0, 0, {0: 0.0}
    for record in run.train_records:
        elapsed += record["step_time"] * (record["step"] - previous)
        previous = record["step"]
        out[previous] = elapsed
    return out


def eval_curve(run: RunData) -> list[dict[str, float]]:
    """Evaluation points with their budgets: tokens, training FLOPs, training seconds, and
    ``score``, the study's measure (validation loss, or bits per byte across tokenizers)."""
    flops_per_token = (run.summary or {}).get("flops_per_token")
    train_time = cumulative_train_time(run)
    curve = []
    for record in run.eval_records:
        point = {
            "step": record["step"],
            "tokens": record["tokens_seen"],
            "val_loss": record["val_loss"],
            "val_bpb": record["val_bpb"],
            "score": run.score(record),
            "val_accuracy": record["val_accuracy"],
        }
        point["flops"] = record["tokens_seen"] * flops_per_token if flops_per_token else None
        point["time_s"] = train_time.get(record["step"])
        curve.append(point)
    return curve


def loss_at(curve: list[dict[str, float]], budget: str, x: float) -> float | None:
    """The score (validation loss, or bpb) at ``budget`` = x, interpolated linearly; None
    beyond the curve."""
    points = [p for p in curve if p[budget] is not None]
    for before, after in itertools.pairwise(points):
        if before[budget] <= x <= after[budget]:
            span = after[budget] - before[budget]
            fraction = (x - before[budget]) / span if span else 1.0
            return before["score"] + fraction * (after["score"] - before["score"])
    if points and points[-1][budget] == x:
        return points[-1]["score"]
    return None
