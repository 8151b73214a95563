"""Bad input, as a new user types it, through every subcommand: each case must exit with the
documented code (2 for a mistake in the input), print no traceback, say in a few lines what is
wrong naming the field or file, finish well within a time limit, and leave every file that was
there before exactly as it was. The study loader is also fuzzed with random YAML-able values:
nothing but a ConfigError may come out of it."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import write_yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmablate.cli import main
from lmablate.config.study import build_study
from lmablate.errors import ConfigError

HANG_GUARD_S = 60  # a case that takes this long is hanging, not slow
MAX_LINES = 4


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: Path  # a valid tiny run config
    study: Path  # a valid tiny study
    run: Path  # a finished run of config
    study_dir: Path  # a finished run of study (one run)
    corpus: Path
    tokenizer: Path


@pytest.fixture(scope="module")
def ws(tmp_path_factory, documents, tokenizer_dir) -> Workspace:
    root = tmp_path_factory.mktemp("bad_input")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    data = f"{{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}"
    model = "{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}"
    train = (
        "{batch_size: 4, seq_len: 16, max_steps: 4, warmup_steps: 1, eval_every: 2, "
        "eval_tokens: 128, log_every: 2}"
    )
    config = write_yaml(root / "good.yaml", f"model: {model}\ntrain: {train}\ndata: {data}\n")
    study = write_yaml(
        root / "study.yaml",
        f"name: tiny\ndata: {data}\nbaseline: {{model: {model}, train: {train}}}\n"
        "samples: {documents: 1, max_new_tokens: 2}\n",
    )
    assert main(["train", str(config), "--out", str(root / "run"), "--quiet"]) == 0
    assert main(["run", str(study), "--out", str(root / "study_dir"), "--quiet"]) == 0
    return Workspace(
        root, config, study, root / "run", root / "study_dir", corpus, Path(tokenizer_dir)
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def bad_yaml(ws: Workspace, name: str, text: str | bytes) -> Path:
    path = ws.root / "cases" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def good_with(ws: Workspace, name: str, section: str, fields: str) -> Path:
    """The good run config with ``fields`` (YAML flow-mapping content) added to a section."""
    config = yaml.safe_load(ws.config.read_text())
    config[section] = {**config[section], **yaml.safe_load("{" + fields + "}")}
    return bad_yaml(ws, name, yaml.safe_dump(config))


def with_corpus(ws: Workspace, name: str, corpus: str, content: str | bytes) -> Path:
    """The good run config reading the corpus file ``corpus`` holding ``content``."""
    return good_with(ws, name, "data", f"path: {bad_yaml(ws, corpus, content)}")


def study_with(ws: Workspace, file: str, **top) -> Path:
    study = yaml.safe_load(ws.study.read_text())
    study.update(top)
    return bad_yaml(ws, file, yaml.safe_dump(study))


def damaged_copy(ws: Workspace, name: str, study_yaml: str | None = None) -> Path:
    """A copy of the finished study directory, its study.yaml replaced by ``study_yaml``."""
    import shutil

    copy = ws.root / "cases" / name
    if not copy.exists():
        shutil.copytree(ws.study_dir, copy)
    if study_yaml is not None:
        (copy / "study.yaml").write_text(study_yaml)
    return copy


def bomb(levels: int = 12) -> str:
    """A billion laughs: 9^(levels + 1) strings if expanded, from 9 * levels alias references,
    each level an unknown key."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


Case = tuple[str, Callable[[Workspace], list[str]], int, str]


def _damaged_run(w: Workspace, name: str, config_text: str) -> Path:
    """A copy of the finished run, its config.json replaced by ``config_text``."""
    import shutil

    copy = w.root / "cases" / name
    if not copy.exists():
        shutil.copytree(w.run, copy)
    (copy / "config.json").write_text(config_text)
    return copy


def _learned_run(w: Workspace) -> Path:
    """A finished run whose learned position table has 16 rows (trained before the snapshot)."""
    out = w.root / "cases" / "learned_run"
    if not (out / "summary.json").is_file():
        config = good_with(w, "learned.yaml", "model", "positions: learned, max_positions: 16")
        assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    return out


def _exported(w: Workspace) -> Path:
    """The finished run, exported once (outside the workspace's snapshot: made before it)."""
    out = w.root / "cases" / "exported"
    if not (out / "model.safetensors").is_file():
        assert main(["export", str(w.run), str(out)]) == 0
    return out


def _run(w: Workspace) -> list[str]:
    """lmablate run of the good study into a fresh directory (nothing may appear there)."""
    return ["run", str(w.study), "--out", str(w.root / "fresh")]


MILLION = {
    "learning_rate": {"logspace": [1.0e-4, 1.0e-2], "num": 100},
    "warmup_fraction": {"linspace": [0.0, 0.5], "num": 100},
    "weight_decay": {"linspace": [0.0, 0.5], "num": 100},
}


TUNE_MILLION = {  # 1000 x 1000 candidates
    "learning_rate": {"logspace": [1.0e-4, 1.0e-2], "num": 1000},
    "weight_decay": {"linspace": [0.0, 0.5], "num": 1000},
}


def _run_file(w: Workspace, file: str, **top) -> list[str]:
    """lmablate run of the good study with ``top`` replaced, into a fresh directory."""
    return ["run", str(study_with(w, file, **top)), "--out", str(w.root / "fresh")]


def _train(w: Workspace, config: Path) -> list[str]:
    return ["train", str(config), "--out", str(w.root / "fresh")]


CASES: list[Case] = [
    # ---- config files: paths, bytes, syntax
    ("config: missing file", lambda w: ["config", str(w.root / "nope.yaml")], 2, "nope.yaml"),
    ("config: a directory", lambda w: ["config", str(w.root)], 2, "is a directory"),
    ("config: /dev/null", lambda w: ["config", "/dev/null"], 2, "/dev/null"),
    (
        "config: not UTF-8",
        lambda w: ["config", str(bad_yaml(w, "latin.yaml", b"train: {seq_len: 1\xe9}\n"))],
        2,
        "byte",
    ),
    (
        "config: binary",
        lambda w: ["config", str(bad_yaml(w, "bin.yaml", b"\x00\x01\x02\xff" * 10))],
        2,
        "bin.yaml",
    ),
    (
        "config: YAML syntax",
        lambda w: ["config", str(bad_yaml(w, "syntax.yaml", "train: {seq_len: 16\n"))],
        2,
        "syntax.yaml:2:1: invalid YAML",
    ),
    (
        "config: a list, not a mapping",
        lambda w: ["config", str(bad_yaml(w, "list.yaml", "- 1\n- 2\n"))],
        2,
        "list.yaml",
    ),
    (
        "config: deep nesting",
        lambda w: ["config", str(bad_yaml(w, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000))],
        2,
        "deep.yaml",
    ),
    (
        "config: alias bomb",
        lambda w: ["config", str(bad_yaml(w, "bomb.yaml", bomb()))],
        2,
        "alias",
    ),
    # few aliases, each level an unknown key: one message about the expansion, not one per key
    *(
        (
            f"{command}: alias bomb of unknown keys",
            lambda w, command=command: [
                *command.split(),
                str(bad_yaml(w, "bomb8.yaml", bomb(8))),
                *(["--out", str(w.root / "fresh")] if command != "config" else []),
            ],
            2,
            "more than 100,000 values",
        )
        for command in ("config", "train", "run", "run --dry-run")
    ),
    (
        "config: a study file",
        lambda w: ["config", str(w.study)],
        2,
        "lmablate run",
    ),
    # ---- config fields
    (
        "config: unknown top-level key",
        lambda w: ["config", str(bad_yaml(w, "top.yaml", "trian: {}\n"))],
        2,
        "did you mean 'train'",
    ),
    (
        "config: unknown model key",
        lambda w: ["config", str(good_with(w, "mk.yaml", "model", "n_layer: 2"))],
        2,
        "did you mean 'n_layers'",
    ),
    (
        "config: unknown train key",
        lambda w: ["config", str(good_with(w, "tk.yaml", "train", "learning_rat: 0.1"))],
        2,
        "did you mean 'learning_rate'",
    ),
    (
        "config: unknown data key",
        lambda w: ["config", str(good_with(w, "dk.yaml", "data", "val_fractoin: 0.1"))],
        2,
        "did you mean 'val_fraction'",
    ),
    (
        "config: wrong type",
        lambda w: ["config", str(good_with(w, "type.yaml", "train", "learning_rate: fast"))],
        2,
        "learning_rate",
    ),
    (
        "config: infinite learning rate",
        lambda w: ["config", str(good_with(w, "inf.yaml", "train", "learning_rate: .inf"))],
        2,
        "learning_rate",
    ),
    (
        "config: NaN learning rate",
        lambda w: ["config", str(good_with(w, "nan.yaml", "train", "learning_rate: .nan"))],
        2,
        "learning_rate",
    ),
    (
        "config: absurd depth",
        lambda w: ["config", str(good_with(w, "deepm.yaml", "model", "n_layers: 1000000000000"))],
        2,
        "n_layers",
    ),
    (
        "config: absurd width",
        lambda w: ["config", str(good_with(w, "wide.yaml", "model", "d_model: 99999999"))],
        2,
        "d_model",
    ),
    (
        "config: heads do not divide width",
        lambda w: ["config", str(good_with(w, "heads.yaml", "model", "n_heads: 5"))],
        2,
        "divisible",
    ),
    (
        "config: zero seq_len",
        lambda w: ["config", str(good_with(w, "seq0.yaml", "train", "seq_len: 0"))],
        2,
        "seq_len",
    ),
    (
        "config: negative batch",
        lambda w: ["config", str(good_with(w, "batch.yaml", "train", "batch_size: -1"))],
        2,
        "batch_size",
    ),
    (
        "config: huge batch",
        lambda w: ["config", str(good_with(w, "hb.yaml", "train", "batch_size: 10000000000"))],
        2,
        "batch_size",
    ),
    (
        "config: seed past 2^63",
        lambda w: ["config", str(good_with(w, "seed.yaml", "train", "seed: 99999999999999999999"))],
        2,
        "seed",
    ),
    (
        "config: huge vocabulary",
        lambda w: ["config", str(good_with(w, "vocab.yaml", "model", "vocab_size: 10000000000"))],
        2,
        "vocab_size",
    ),
    (
        "config: --set unknown key",
        lambda w: ["config", str(w.config), "--set", "lerning_rate=1"],
        2,
        "learning_rate",
    ),
    (
        "config: --set a whole section",
        lambda w: ["config", str(w.config), "--set", "data=null"],
        2,
        "--set",
    ),
    (
        "config: --set wrong type",
        lambda w: ["config", str(w.config), "--set", "seq_len=long"],
        2,
        "--set",
    ),
    (
        "config: --set without =",
        lambda w: ["config", str(w.config), "--set", "seq_len"],
        2,
        "KEY=VALUE",
    ),
    # ---- train
    ("train: a study file", lambda w: ["train", str(w.study), "--out", "x"], 2, "lmablate run"),
    (
        "train: --out is a file",
        lambda w: ["train", str(w.config), "--out", str(w.corpus)],
        2,
        "corpus.jsonl",
    ),
    (
        "train: unknown device",
        lambda w: ["train", str(w.config), "--out", str(w.root / "dev"), "--set", "device=tpu"],
        2,
        "device",
    ),
    (
        "train: missing corpus",
        lambda w: [
            "train",
            str(good_with(w, "nocorpus.yaml", "data", f"path: {w.root / 'none.jsonl'}")),
            "--out",
            str(w.root / "nocorpus"),
        ],
        2,
        "none.jsonl",
    ),
    (
        "train: a .jsonl that is not JSON",
        lambda w: [
            "train",
            str(with_corpus(w, "notjson.yaml", "notjson.jsonl", '{"text": "a"}\n{"text": b}\n')),
            "--out",
            str(w.root / "fresh"),
        ],
        2,
        "notjson.jsonl as .jsonl records: line 2 is not JSON",
    ),
    (
        "train: a .parquet that is not Parquet",
        lambda w: [
            "train",
            str(with_corpus(w, "notparquet.yaml", "notparquet.parquet", b"PAR1 not really")),
            "--out",
            str(w.root / "fresh"),
        ],
        2,
        "not a Parquet file",
    ),
    (
        "train: empty corpus",
        lambda w: [
            "train",
            str(with_corpus(w, "empty.yaml", "empty.jsonl", "")),
            "--out",
            str(w.root / "emptyrun"),
        ],
        2,
        "empty.jsonl",
    ),
    (
        "train: corpus with a number as text",
        lambda w: [
            "train",
            str(with_corpus(w, "num.yaml", "num.jsonl", '{"text": 5}\n')),
            "--out",
            str(w.root / "numrun"),
        ],
        2,
        "num.jsonl",
    ),
    (
        "train: another config into a finished run",
        lambda w: [
            "train",
            str(good_with(w, "other.yaml", "train", "learning_rate: 0.01")),
            "--out",
            str(w.run),
        ],
        2,
        "learning_rate",
    ),
    (
        "train: seq_len past learned positions",
        lambda w: [
            "train",
            str(good_with(w, "pos.yaml", "model", "positions: learned, max_positions: 8")),
            "--out",
            str(w.root / "posrun"),
        ],
        2,
        "max_positions",
    ),
    (
        "train: a batch no memory holds",
        lambda w: [
            "train",
            str(good_with(w, "oom.yaml", "train", "batch_size: 1048576, seq_len: 4096")),
            "--out",
            str(w.root / "oomrun"),
        ],
        2,
        "lower train.batch_size",
    ),
    # ---- run
    ("run: missing study", lambda w: ["run", str(w.root / "no.yaml")], 2, "no.yaml"),
    (
        "run: unknown variant key",
        lambda w: [
            "run",
            str(study_with(w, "vk.yaml", variants={"a": {"learning_rat": 0.1}})),
            "--dry-run",
        ],
        2,
        "did you mean 'learning_rate'",
    ),
    (
        "run: unknown study key",
        lambda w: ["run", str(study_with(w, "sk.yaml", seedz=[1])), "--dry-run"],
        2,
        "did you mean 'seeds'",
    ),
    (
        "run: a variant name no file system holds",
        lambda w: [
            "run",
            str(study_with(w, "long.yaml", variants={"v" * 300: {"learning_rate": 0.1}})),
            "--dry-run",
        ],
        2,
        "variant",
    ),
    (
        "run: --only an unknown variant",
        lambda w: ["run", str(w.study), "--only", "nope", "--out", str(w.study_dir)],
        2,
        "nope",
    ),
    (
        "run: --dry-run --only an unknown variant",
        lambda w: ["run", str(w.study), "--only", "nope", "--dry-run"],
        2,
        "nope",
    ),
    ("run: --parallel 0", lambda w: [*_run(w), "--parallel", "0"], 2, "--parallel"),
    ("run: --seeds 0", lambda w: [*_run(w), "--seeds", "0"], 2, "--seeds"),
    ("run: --seeds huge", lambda w: [*_run(w), "--seeds", "1000000000"], 2, "--seeds"),
    (
        "run: --out is a file",
        lambda w: ["run", str(w.study), "--out", str(w.corpus)],
        2,
        "corpus.jsonl",
    ),
    (
        "run: into another study's directory",
        lambda w: [
            "run",
            str(study_with(w, "other_study.yaml", name="other")),
            "--out",
            str(w.study_dir),
        ],
        2,
        "tiny",
    ),
    ("run: --set seed", lambda w: [*_run(w), "--set", "seed=3"], 2, "seed"),
    # ---- --set into a study's own sections: the message names that section's keys
    *(
        (
            f"run: --set {setting}",
            lambda w, setting=setting: [
                "run",
                str(study_with(w, "big.yaml", variants={"big": {"d_model": 64}})),
                "--dry-run",
                "--set",
                setting,
            ],
            2,
            says,
        )
        for setting, says in (
            ("samples.foo=1", "samples.foo is not a field of samples (valid: documents"),
            ("samples.documnets=1", "did you mean 'documents'"),
            ("budget.mach=tokens", "budget.mach is not a field of budget; did you mean 'match'"),
            ("scale.sizes.width=2", "scale.sizes is a value, not a section"),
            ("variants={}", "names the study's whole variants section"),
            ("baseline=null", "names the study's whole baseline section"),
            ("variants.big.misspelt=1", "variants.big.misspelt is not a field of variants.big"),
            ("variants.bog.d_model=64", "no variant 'bog'; did you mean 'big'"),
            ("variants.big.model.d_model.x=1", "variants.big.model.d_model is a value"),
            ("baseline.model.dmodel=1", "baseline.model.dmodel is not a field of baseline.model"),
            ("model.d_model.x=1", "model.d_model is a value, not a section"),
            ("name.x=1", "name is a value, not a section"),
            ("nmae=x", "did you mean 'name'"),
        )
    ),
    (
        "train: --set into a value",
        lambda w: ["train", str(w.config), "--out", str(w.root / "fresh"), "--set", "d_model.x=1"],
        2,
        "model.d_model is a value",
    ),
    # ---- --out that holds something else: refused before a byte changes there
    (
        "train: --out is a study folder",
        lambda w: ["train", str(w.config), "--out", str(w.study_dir)],
        2,
        "is an lmablate study folder",
    ),
    (
        "train: --out holds the user's files",
        lambda w: ["train", str(w.config), "--out", str(w.root)],
        2,
        "already holds files lmablate did not write",
    ),
    (
        "run: --out is a run folder",
        lambda w: ["run", str(w.study), "--out", str(w.run)],
        2,
        "is an lmablate run folder",
    ),
    (
        "run: --out is one run of a study",
        lambda w: ["run", str(w.study), "--out", str(w.study_dir / "runs/baseline/seed-0")],
        2,
        "is an lmablate run folder",
    ),
    (
        "run: --out holds the user's files",
        lambda w: ["run", str(w.study), "--out", str(w.root)],
        2,
        "already holds files lmablate did not write",
    ),
    (
        "run: an empty prompt",
        lambda w: [
            "run",
            str(study_with(w, "prompt.yaml", samples={"prompts": [""]})),
            "--dry-run",
        ],
        2,
        "samples.prompts[0]",
    ),
    (
        "run: nothing to sample",
        lambda w: [
            "run",
            str(study_with(w, "nosample.yaml", samples={"documents": 0})),
            "--dry-run",
        ],
        2,
        "nothing to sample",
    ),
    (
        "run: no seeds",
        lambda w: ["run", str(study_with(w, "noseeds.yaml", seeds=[])), "--dry-run"],
        2,
        "seeds",
    ),
    (
        "run: duplicate variant",
        lambda w: [
            "run",
            str(
                bad_yaml(
                    w,
                    "dup.yaml",
                    w.study.read_text() + "variants:\n  a: {seq_len: 8}\n  a: {seq_len: 12}\n",
                )
            ),
            "--dry-run",
        ],
        2,
        "duplicate",
    ),
    # ---- report and status
    ("report: not a study", lambda w: ["report", str(w.run)], 2, "study.yaml"),
    ("report: missing directory", lambda w: ["report", str(w.root / "gone")], 2, "gone"),
    (
        "report: damaged study.yaml",
        lambda w: ["report", str(damaged_copy(w, "broken_yaml", "name: [\n"))],
        2,
        "study.yaml is damaged",
    ),
    (
        "report: empty study.yaml",
        lambda w: ["report", str(damaged_copy(w, "empty_yaml", ""))],
        2,
        "study.yaml is damaged",
    ),
    (
        "status: damaged study.yaml",
        lambda w: ["status", str(damaged_copy(w, "broken_status", "seeds: {\n"))],
        2,
        "study.yaml is damaged",
    ),
    ("status: missing directory", lambda w: ["status", str(w.root / "gone")], 2, "gone"),
    ("status: a file", lambda w: ["status", str(w.corpus)], 2, "corpus.jsonl"),
    # ---- generate
    ("generate: missing run", lambda w: ["generate", str(w.root / "gone")], 2, "gone"),
    ("generate: empty prompt", lambda w: ["generate", str(w.run), "--prompt", ""], 2, "empty"),
    (
        "generate: missing prompts file",
        lambda w: ["generate", str(w.run), "--prompts-file", str(w.root / "p.txt")],
        2,
        "p.txt",
    ),
    (
        "generate: empty prompts file",
        lambda w: ["generate", str(w.run), "--prompts-file", str(bad_yaml(w, "empty.txt", ""))],
        2,
        "empty.txt",
    ),
    (
        "generate: prompts file is a directory",
        lambda w: ["generate", str(w.run), "--prompts-file", str(w.root)],
        2,
        "directory",
    ),
    (
        "generate: infinite temperature",
        lambda w: ["generate", str(w.run), "--temperature", "inf"],
        2,
        "temperature",
    ),
    (
        "generate: zero new tokens",
        lambda w: ["generate", str(w.run), "--max-new-tokens", "0"],
        2,
        "max_new_tokens",
    ),
    (
        "generate: too many new tokens",
        lambda w: ["generate", str(w.run), "--max-new-tokens", "100000000"],
        2,
        "max_new_tokens",
    ),
    (
        "generate: seed past 2^63",
        lambda w: ["generate", str(w.run), "--seed", "99999999999999999999999"],
        2,
        "seed",
    ),
    ("generate: negative seed", lambda w: ["generate", str(w.run), "--seed", "-1"], 2, "seed"),
    (
        "generate: not a device",
        lambda w: ["generate", str(w.run), "--prompt", "a", "--device", "tpu"],
        2,
        "--device 'tpu' is not a device",
    ),
    (
        "generate: a GPU this machine lacks",
        lambda w: ["generate", str(w.run), "--prompt", "a", "--device", "cuda:99"],
        2,
        "--device is 'cuda:99' but",
    ),
    ("generate: top-p above 1", lambda w: ["generate", str(w.run), "--top-p", "2"], 2, "top_p"),
    (
        "generate: a directory without a run",
        lambda w: ["generate", str(w.root / "cases")],
        2,
        "cases",
    ),
    # ---- export
    (
        "export: into the run itself",
        lambda w: ["export", str(w.run), str(w.run)],
        2,
        "run",
    ),
    (
        "export: into a folder with files",
        lambda w: ["export", str(w.run), str(w.tokenizer)],  # a folder that always has files
        2,
        "did not write",
    ),
    (
        "export: --overwrite into a folder of the user's own files",
        lambda w: ["export", str(w.run), str(w.tokenizer), "--overwrite"],
        2,
        "did not write",
    ),
    (
        "export: OUT_DIR under a file",
        lambda w: ["export", str(w.run), str(w.corpus / "hf")],
        2,
        "is a file",
    ),
    (
        "export: a run whose config.json is not JSON",
        lambda w: ["export", str(_damaged_run(w, "torn_config", '{"model": {')), "x"],
        2,
        "config.json is damaged: not valid JSON",
    ),
    (
        "generate: a run whose config.json has a wrong type",
        lambda w: [
            "generate",
            str(_damaged_run(w, "typed_config", '{"model": {"d_model": "big"}}')),
            "--prompt",
            "a",
        ],
        2,
        "model.d_model",
    ),
    (
        "export: to a folder that cannot be created",
        lambda w: ["export", str(w.run), "/proc/lmablate-export"],  # not even root may
        2,
        "cannot create /proc/lmablate-export",
    ),
    (
        "train: --out that cannot be created",
        lambda w: ["train", str(w.config), "--out", "/proc/lmablate-run"],
        2,
        "cannot create /proc/lmablate-run",
    ),
    (
        "export: from an exported folder",
        lambda w: ["export", str(_exported(w)), str(w.root / "again")],
        2,
        "no run",
    ),
    (
        "export: into a study directory",
        lambda w: ["export", str(w.run), str(w.study_dir)],
        2,
        "study",
    ),
    ("export: missing run", lambda w: ["export", str(w.root / "gone"), "x"], 2, "gone"),
    (
        "export: out is a file",
        lambda w: ["export", str(w.run), str(w.corpus)],
        2,
        "corpus.jsonl",
    ),
    # ---- eval
    (
        "eval: zero batch size",
        lambda w: ["eval", str(w.run), "--tasks", "x", "--batch-size", "0"],
        2,
        "--batch-size",
    ),
    (
        "eval: negative limit",
        lambda w: ["eval", str(w.run), "--tasks", "x", "--limit", "-1"],
        2,
        "--limit",
    ),
    (
        "eval: unknown device",
        lambda w: ["eval", str(w.run), "--tasks", "x", "--device", "gpu9"],
        2,
        "--device",
    ),
    (
        "eval: missing include path",
        lambda w: ["eval", str(w.run), "--tasks", "x", "--include-path", str(w.root / "no")],
        2,
        "--include-path",
    ),
    # ---- data
    (
        "data inspect: missing config",
        lambda w: ["data", "inspect", str(w.root / "none.yaml")],
        2,
        "none.yaml",
    ),
    (
        "data inspect: binary corpus",
        lambda w: [
            "data",
            "inspect",
            str(with_corpus(w, "bincorpus.yaml", "bin.txt", b"\0" * 64)),
        ],
        2,
        "bin.txt",
    ),
    # ---- expansions are counted before they are built (a 10^6-run grid answers at once)
    (
        "run --dry-run: a grid of a million runs",
        lambda w: [
            "run",
            str(study_with(w, "million.yaml", sweeps=[{"grid": MILLION}])),
            "--dry-run",
        ],
        2,
        "expands into 1,000,001 runs",
    ),
    (
        "run: a tune grid of a million candidates",
        lambda w: [*_run_file(w, "tune_million.yaml", tune=TUNE_MILLION)],
        2,
        "more than max_runs",
    ),
    (
        "run: an empty tune list",
        lambda w: [*_run_file(w, "tune_empty.yaml", tune={"learning_rate": []})],
        2,
        "tune.learning_rate has no values",
    ),
    (
        "run: a single-value tune",
        lambda w: [*_run_file(w, "tune_one.yaml", tune={"learning_rate": [1.0e-3]})],
        2,
        "tune.learning_rate has one value",
    ),
    (
        "run: an integer field swept over fractions",
        lambda w: [
            *_run_file(
                w,
                "int_range.yaml",
                sweeps=[{"grid": {"n_layers": {"linspace": [1, 2], "num": 3}}}],
            )
        ],
        2,
        "n_layers takes integers",
    ),
    # ---- a variant must change something that runs
    (
        "run: a variant equal to the baseline",
        lambda w: [*_run_file(w, "same.yaml", variants={"same": {"learning_rate": 3.0e-4}})],
        2,
        "variants.same changes nothing",
    ),
    (
        "run: two variants that are one configuration",
        lambda w: [
            *_run_file(
                w,
                "twins.yaml",
                variants={"a": {"learning_rate": 1.0e-3}, "b": {"learning_rate": 0.001}},
            )
        ],
        2,
        "same configuration as variants.a",
    ),
    (
        "run: a sweep point equal to a variant",
        lambda w: [
            *_run_file(
                w,
                "sweep_twin.yaml",
                variants={"low": {"learning_rate": 1.0e-4}},
                sweeps=[{"grid": {"learning_rate": [1.0e-4, 1.0e-3]}}],
            )
        ],
        2,
        "same configuration as variants.low",
    ),
    (
        "run: z_loss: true",
        lambda w: [*_run_file(w, "zbool.yaml", variants={"z": {"z_loss": True}})],
        2,
        "train.z_loss: expected a number, not true/false",
    ),
    (
        "train: z_loss: true",
        lambda w: _train(w, good_with(w, "zbool_run.yaml", "train", "z_loss: true")),
        2,
        "train.z_loss: expected a number",
    ),
    (
        "train: a sliding window as long as the context",
        lambda w: _train(w, good_with(w, "window.yaml", "model", "sliding_window: 16")),
        2,
        "the window changes nothing",
    ),
    (
        "run: global_every 1",
        lambda w: [
            *_run_file(w, "global1.yaml", variants={"w": {"sliding_window": 8, "global_every": 1}})
        ],
        2,
        "model.global_every is 1",
    ),
    (
        "run: global_every past the last layer",
        lambda w: [
            *_run_file(w, "global9.yaml", variants={"w": {"sliding_window": 8, "global_every": 2}})
        ],
        2,
        "more than model.n_layers (1)",
    ),
    (
        "train: a Muon setting on an AdamW run",
        lambda w: _train(w, good_with(w, "muon_on_adamw.yaml", "train", "muon_momentum: 0.9")),
        2,
        "muon_momentum does not take effect",
    ),
    (
        "run: a Lion setting on an AdamW variant",
        lambda w: [*_run_file(w, "lion_on_adamw.yaml", variants={"l": {"lion_beta1": 0.8}})],
        2,
        "variants.l: lion_beta1 does not take effect",
    ),
    (
        "train: a wsd setting on a cosine schedule",
        lambda w: _train(w, good_with(w, "wsd_on_cosine.yaml", "train", "decay_fraction: 0.3")),
        2,
        "read only with schedule: wsd",
    ),
    *(
        (
            f"export: into the study's {part}/ folder",
            lambda w, part=part: [
                "export",
                str(w.study_dir / "runs" / "baseline" / "seed-0"),
                str(w.study_dir / part / "hf"),
            ],
            2,
            f"inside the {part}/ folder of the study",
        )
        for part in ("report", "runs")
    ),
    (
        "train: --stop-at 0",
        lambda w: [*_train(w, w.config), "--stop-at", "0"],
        2,
        "--stop-at 0",
    ),
    (
        "generate: more new tokens than the learned positions hold",
        lambda w: ["generate", str(_learned_run(w)), "--prompt", "a", "--max-new-tokens", "17"],
        2,
        "at most 16 new tokens fit",
    ),
    (
        "run: samples longer than a variant's learned positions",
        lambda w: _run_file(
            w,
            "learned_samples.yaml",
            variants={"learned": {"positions": "learned", "max_positions": 16}},
            samples={"documents": 1, "max_new_tokens": 20},
        ),
        2,
        "variants.learned: samples.max_new_tokens 20",
    ),
    (
        "run: --nproc-per-node that does not divide the batch",
        lambda w: [*_run(w), "--nproc-per-node", "3"],
        2,
        "--nproc-per-node 3 does not divide the batch of baseline (4)",
    ),
    (
        "run: --set max_runs=0",
        lambda w: [*_run(w), "--set", "max_runs=0"],
        2,
        "max_runs",
    ),
    # ---- the command line itself
    ("no command", lambda w: [], 2, "COMMAND"),
    ("unknown command", lambda w: ["trian"], 2, "invalid choice"),
    ("unknown option", lambda w: [*_run(w), "--sedes", "3"], 2, "--sedes"),
]


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


@pytest.mark.parametrize(("name", "argv", "code", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(ws, capfd, name, argv, code, fragment):
    args = argv(ws)
    capfd.readouterr()
    before = snapshot(ws.root)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_GUARD_S)
    try:
        try:
            result = main(args)
        except SystemExit as exc:  # argparse's own errors
            result = exc.code
        except _Hang:
            pytest.fail(f"{name}: still running after {HANG_GUARD_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capfd.readouterr().err
    assert result == code, f"{name}: exit {result}, expected {code}\n{err[-1500:]}"
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.strip()]
    assert 0 < len(message) <= MAX_LINES, f"{name}: {len(message)} lines\n{err[-1500:]}"
    # progress notes may come first, but not a library's own report of the same failure
    before_ours = itertools.takewhile(
        lambda line: not line.startswith(("error:", "usage:")), message
    )
    assert not [line for line in before_ours if re.search("error|fail", line, re.I)], (
        f"{name}: two messages\n{err}"
    )
    assert fragment in err, f"{name}: {fragment!r} not in\n{err}"
    after = snapshot(ws.root)
    changed = {p for p in before if before[p] != after.get(p)}
    assert not changed, f"{name}: changed {sorted(changed)}"
    created = set(after) - set(before)
    assert not created, f"{name}: created {sorted(created)}"


def test_the_table_covers_every_subcommand():
    assert len(CASES) >= 60
    covered = {
        word
        for case in CASES
        for word in ("config", "train", "run", "report", "status", "generate", "export", "eval")
        if case[0].startswith(word)
    }
    covered |= {"data"} if any(c[0].startswith("data") for c in CASES) else set()
    assert covered == {
        "config",
        "train",
        "run",
        "report",
        "status",
        "generate",
        "export",
        "eval",
        "data",
    }


# -------------------------------------------------------------------- fuzzing the study loader

YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
SECTIONS = st.sampled_from(["model", "train", "data", "samples", "budget", "tune", "sweeps"])
FIELDS = st.sampled_from(
    [
        "d_model",
        "n_heads",
        "n_layers",
        "learning_rate",
        "seq_len",
        "batch_size",
        "max_steps",
        "optimizer",
        "schedule",
        "prompts",
        "documents",
        "match",
        "ladder",
        "val_fraction",
        "source",
        "tokenizer",
    ]
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every machine; explore with more locally
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    top=st.dictionaries(
        st.sampled_from(["name", "seeds", "baseline", "variants", "samples", "data", "extra"]),
        YAML_VALUES,
        max_size=4,
    ),
    section=SECTIONS,
    field=FIELDS,
    value=YAML_VALUES,
    variant=YAML_VALUES,
)
@example(  # found by this test: a key holding a carriage return split one problem in two
    top={}, section="model", field="d_model", value=None, variant={"": None, "\r": None}
)
def test_the_study_loader_only_ever_raises_config_errors(top, section, field, value, variant):
    raw = {
        "name": "fuzz",
        "baseline": {"model": {"d_model": 32, "n_heads": 2}, "train": {}},
        **top,
    }
    if isinstance(raw.get("baseline"), dict) and section in ("model", "train"):
        raw["baseline"] = {**raw["baseline"], section: {field: value}}
    elif section not in ("model", "train"):
        raw[section] = {field: value} if section != "sweeps" else [{field: value}]
    raw.setdefault("variants", {"v": variant})
    try:
        build_study(raw)
    except ConfigError as exc:
        message = str(exc)
        assert len(message) < 5000  # a short message, never an expanded value
        assert len(message.splitlines()) <= 4  # three problems, then a count
        # pydantic's own wording and its union tags never reach the user
        for raw_text in (
            "Extra inputs are not permitted",
            "function-after",
            "list[any]",
            "instance of",
            "Config",
            "Spaced",
        ):
            assert raw_text not in message, message


def test_status_names_each_damaged_file_and_shows_the_rest(ws, capsys):
    copy = damaged_copy(ws, "damaged_summary")
    (copy / "runs/baseline/seed-0/summary.json").write_text("{not json")
    assert main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "summary.json: damaged, read as missing" in out
    (copy / "study.yaml").write_text("name: [\n")
    assert main(["status", str(copy)]) == 2
    captured = capsys.readouterr()
    assert "baseline" in captured.out  # the runs found under runs/, without study.yaml
    assert "study.yaml is damaged" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("final_val_loss", "NaN", "final_val_loss: expected a number (got 'NaN')"),
        ("final_val_loss", None, "final_val_loss must be a finite number"),
        ("step", True, "step: expected an integer (got True)"),
    ],
)
def test_report_and_status_skip_and_list_a_run_whose_summary_is_broken(
    ws, capfd, field, value, named
):
    copy = damaged_copy(ws, f"typed_{field}_{value}")
    path = copy / "runs/baseline/seed-0/summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    capfd.readouterr()
    assert main(["report", str(copy)]) == 0
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and named in captured.err
    report = (copy / "report/research_report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| baseline | 0 |"))
    assert "damaged" in row and named in row  # the report lists the run it left out, and why
    assert main(["status", str(copy)]) == 0
    assert named in capfd.readouterr().out


def test_a_changed_description_resumes_the_finished_study_without_retraining(ws, capfd):
    """What a variant's description is never decides whether its runs are the same: not for
    de-duplication (tests/test_expansion.py), and not for resuming."""
    copy = damaged_copy(ws, "redescribed")
    study = yaml.safe_load(ws.study.read_text())
    study["baseline"]["description"] = "the same run, described anew"
    changed = bad_yaml(ws, "redescribed.yaml", yaml.safe_dump(study))
    summary = copy / "runs/baseline/seed-0/summary.json"
    before = summary.read_bytes()
    assert main(["run", str(changed), "--out", str(copy), "--quiet"]) == 0, capfd.readouterr().err
    assert summary.read_bytes() == before  # resumed as finished, not trained again


@pytest.mark.parametrize(
    ("file", "content", "named"),
    [
        ("samples.json", {"settings": {}, "samples": [{"prompt": 3}]}, "samples.0.prompt"),
        ("samples.json", {"settings": {}, "samples": []}, "samples: List should have at least"),
        ("eval_documents.json", {"step": 4, "targets_digest": "x", "columns": [],
                                 "documents": [[1, "NaN"]]}, "documents.0.1"),
        ("eval/lm_eval.json", {"results": ["hellaswag"]}, "results: expected a mapping"),
    ],
)  # fmt: skip
def test_report_reads_past_any_run_file_of_the_wrong_shape(ws, capfd, file, content, named):
    copy = damaged_copy(ws, f"shape_{file.replace('/', '_')}_{len(str(content))}")
    path = copy / "runs/baseline/seed-0" / file
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(content))
    capfd.readouterr()
    assert main(["report", str(copy)]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and f"{file}: damaged, read as missing ({named}" in err, err
