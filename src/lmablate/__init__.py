"""lmablate: ablation studies of small autoregressive transformer language models.

The command line's functions are the Python API, for notebooks and scripts::

    import lmablate
    study = lmablate.load_study("studies/quickstart.yaml", ["max_steps=60"], seeds=3)
    outcome = lmablate.run_study(study, "results/quickstart")       # trains, samples, reports
    analysis = lmablate.analyze(lmablate.load_study_dir("results/quickstart"))
    analysis.findings["best_performing_config"], analysis.comparisons

    cfg = lmablate.load_run_config("configs/builtin.yaml", ["max_steps=100"])
    result = lmablate.train_run(cfg, "runs/builtin")                 # RunResult(.summary)
    model, tokenizer, cfg, step = lmablate.load_run("runs/builtin")
    lmablate.generate(model, tokenizer, ["Once upon a time"], lmablate.Sampling(),
                      context=cfg.train.seq_len)
    lmablate.export_run("runs/builtin", "exported/builtin")

Names are imported on first use, so ``import lmablate`` stays light (no torch until needed).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lmablate.errors import ConfigError, DataError, LmablateError
from lmablate.version import __version__

_API = {
    "load_run_config": "lmablate.config.keys",
    "validate_run_config": "lmablate.config.keys",
    "RunConfig": "lmablate.config.run",
    "load_study": "lmablate.config.study",
    "prepare": "lmablate.data",
    "load_run": "lmablate.training.checkpoint",
    "generate": "lmablate.generation",
    "Sampling": "lmablate.generation",
    "load_study_dir": "lmablate.analysis.rundata",
    "analyze": "lmablate.analysis.findings",
    "build_report": "lmablate.report.package",
    "export_run": "lmablate.export",
    "export_study": "lmablate.export",
}

__all__ = [
    "ConfigError",
    "DataError",
    "LmablateError",
    "__version__",
    "run_study",
    "train_run",
    *_API,
]


def train_run(config: Any, run_dir: str | Path, **kwargs: Any) -> Any:
    """Train (or resume) one run; see ``lmablate.training.loop.train``."""
    from lmablate.training.loop import train

    return train(config, run_dir, **kwargs)


def run_study(study: Any, directory: str | Path, **kwargs: Any) -> Any:
    """Run a study (``load_study``'s result) into ``directory``; see ``study.runner.run_study``."""
    from lmablate.study.runner import run_study as _run_study

    return _run_study(study, Path(directory), **kwargs)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmablate' has no attribute {name!r}")
