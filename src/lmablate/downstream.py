"""Downstream evaluation with lm-evaluation-harness (optional extra ``lmablate[eval]``).

``evaluate_run`` exports the run to ``RUN_DIR/hf`` (see ``export``), runs the harness's
``simple_evaluate`` on it with the ``hf`` model type, and stores the results in
``RUN_DIR/eval/lm_eval.json``, which the study report includes when present. Tasks can be the
harness's own (which download their data from the Hugging Face Hub) or local task YAML files in
``include_path`` (which can read local data files, and so work offline).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from lmablate.errors import LmablateError
from lmablate.export import EVAL_FOLDER, export_run

INSTALL = "pip install 'lmablate[eval]'"


def evaluate_run(
    run_dir: str | Path,
    tasks: list[str],
    *,
    limit: int | None = None,
    include_path: str | Path | None = None,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise LmablateError(
            f"lmablate eval needs lm-evaluation-harness ({exc.name} is not installed): {INSTALL}"
        ) from None
    run_dir = Path(run_dir)
    if not tasks:
        raise LmablateError("--tasks: name at least one task, e.g. --tasks hellaswag,arc_easy")
    exported = export_run(run_dir, run_dir / EVAL_FOLDER)
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise LmablateError(
            f"--tasks: unknown to lm-evaluation-harness: {', '.join(unknown)}"
            + ("" if include_path else " (local task files: --include-path DIR)")
        )
    try:
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={exported},dtype=float32",
            tasks=tasks,
            task_manager=manager,
            limit=limit,
            batch_size=batch_size,
            device=device,
        )
    except (ConnectionError, OSError, ValueError) as exc:  # typically task data offline
        raise LmablateError(
            f"lm-evaluation-harness could not run {', '.join(tasks)}: {type(exc).__name__}: {exc}"
        ) from exc
    record = {
        "tasks": tasks,
        "limit": limit,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "results": results["results"],
        "n_samples": results.get("n-samples"),
    }
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    (out / "lm_eval.json").write_text(json.dumps(record, indent=2, default=str))
    return record
