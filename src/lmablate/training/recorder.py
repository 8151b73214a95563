"""What a run writes while it trains, in one place: train and eval records (metrics.jsonl and
a tracker), the progress bar and log lines, checkpoints with the loop state they carry, and at
the end summary.json. The loop (``loop.py``) decides when; this says what and where.

Ranks other than 0 under torchrun compute the same records and write none of them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmablate.analysis.rundata import DOCUMENTS_FILE
from lmablate.config.run import RunConfig
from lmablate.data import PreparedData, ValidationSet
from lmablate.data.cache import digest
from lmablate.data.references import references_for
from lmablate.hardware import peak_flops, synchronize
from lmablate.model.counts import training_flops_per_token
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import describe_groups
from lmablate.training.bookkeeping import Interval
from lmablate.training.checkpoint import checkpoints, save_checkpoint
from lmablate.training.distributed import World
from lmablate.training.metrics import MetricsLog, evaluate, read_jsonl
from lmablate.training.summary import RunResult, build_summary, write_json_atomic
from lmablate.training.trackers import make_tracker


class Recorder:
    """One run's writer, from the first evaluation to summary.json. ``loop`` is the state a
    checkpoint carries (elapsed_s, train_time_s, compile_s, compile_steps), updated here."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        world: World,
        model: LM,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        precision: str,
        data: PreparedData,
        val: ValidationSet,
        vocab_size: int,
        loop: dict[str, Any],
        t_start: float,
        start_step: int,
        progress: bool,
        log: Callable[[str], None],
    ) -> None:
        tc = cfg.train
        self.cfg, self.run_dir, self.world, self.data = cfg, run_dir, world, data
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.device, self.precision = device, precision
        self.val, self.vocab_size = val, vocab_size
        self.documents: tuple[int, list[list[float]]] = (-1, [])  # the last evaluation's
        self.loop = loop
        self.t_start, self.elapsed_before = t_start, loop["elapsed_s"]
        self.tokens_per_step = tc.batch_size * tc.seq_len
        self.flops_per_token = training_flops_per_token(cfg.model, vocab_size, tc.seq_len)
        self.peak = peak_flops(self.device, precision)
        if self.peak is not None:  # throughput counts every rank's tokens, so every GPU's peak
            self.peak *= world.size
        self.metrics: MetricsLog | _NoMetrics = _NoMetrics()
        if world.is_main:
            config = cfg.model_dump(mode="json")
            tracker = make_tracker(tc.logger, run_dir, config, tc.wandb_project)
            self.metrics = MetricsLog(run_dir / "metrics.jsonl", tracker)
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=tc.max_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            desc=run_dir.name,
            disable=None if progress else True,
        )
        self.log = self.bar.write if progress and not self.bar.disable else log  # above the bar

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def evaluate(self, step: int) -> dict[str, Any]:
        scores = evaluate(
            self.model, self.val, self.vocab_size, self.device, self.precision, per_document=True
        )
        # the per-document losses of the final evaluation go to eval_documents.json, not the log
        self.documents = (step, scores.pop("documents"))
        record = {
            "kind": "eval",
            "step": step,
            "tokens_seen": step * self.tokens_per_step,
            **scores,
            "elapsed": self.elapsed(),
        }
        self.metrics.write(record)
        self.log(
            f"step {step:>6}  val_loss {record['val_loss']:.4f}  val_bpb "
            f"{record['val_bpb']:.4f}  val_acc {record['val_accuracy']:.3f}"
        )
        return record

    def record_training(self, pending: Interval, step: int, lr: float, grad_norm: float) -> None:
        self.loop["train_time_s"] += pending.time_s
        record = pending.record(
            step, self.tokens_per_step, lr, grad_norm, z_loss=self.cfg.train.z_loss > 0
        )
        self.metrics.write({**record, "elapsed": self.elapsed()})
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            lr=f"{lr:.2e}",
            tok_s=f"{record['tokens_per_s']:,.0f}",
            refresh=False,
        )

    def evaluate_test(self) -> dict[str, Any] | None:
        """The finished model on the test split (when the data has one), scored once: what a
        study's tuned comparison reports, after choosing on validation."""
        if self.data.test_tokens is None:
            return None
        tc = self.cfg.train
        tokenizer = self.data.tokenizer
        test = self.data.scored("test", tc.seq_len, tc.eval_tokens)
        scores = evaluate(self.model, test, self.vocab_size, self.device, self.precision)
        references = references_for(self.data.train_tokens, test, tokenizer.vocab_size)
        self.log(f"test_loss {scores['val_loss']:.4f} on {test.n_targets:,} test targets")
        return {
            **{key.replace("val_", "test_", 1): value for key, value in scores.items()},
            "targets": test.n_targets,
            "bytes": test.n_bytes,
            "targets_digest": digest(test.targets[test.targets >= 0].tolist()),
            "references": references,
        }

    def mixture(self, step: int) -> dict[str, Any] | None:
        """Per training source: the tokens trained on over ``step`` steps, its unique tokens
        and how many epochs of them that is (None for one source)."""
        parts = self.data.train_parts()
        if not parts:
            return None
        tc = self.cfg.train
        batches = self.data.batches(tc.batch_size, tc.seq_len, tc.data_seed)
        trained = batches.tokens_by_source(step)
        total = sum(trained.values()) or 1
        return {
            part.name: {
                "weight": part.weight,
                "tokens_trained": trained.get(part.name, 0),
                "share_trained": trained.get(part.name, 0) / total,
                "unique_tokens": part.end - part.start,
                "epochs": trained.get(part.name, 0) / (part.end - part.start),
            }
            for part in parts
        }

    def count_compilation(self, t_step: float) -> None:
        """The step that compiled the model: its time is compile_s, not training time."""
        synchronize(self.device)
        self.loop["compile_s"] = self.loop.get("compile_s", 0.0) + time.perf_counter() - t_step
        self.loop["compile_steps"] = self.loop.get("compile_steps", 0) + 1

    def diverged_during(self, pending: Interval, step: int, bad_step: int) -> tuple[str, int, str]:
        """A non-finite loss or gradient at ``bad_step`` in the interval ending at ``step``."""
        # time of the steps counted in tokens_seen, pro-rated within the interval
        done = bad_step - (step - pending.steps)
        self.loop["train_time_s"] += pending.time_s * done / pending.steps
        message = f"non-finite training loss or gradient at step {bad_step}"
        self.log(f"run diverged: {message}; stopping (earlier checkpoints are kept)")
        return "diverged", bad_step, message

    def checkpoint(self, step: int, pending: Interval) -> None:
        if not self.world.is_main:  # every rank holds the same weights; one writes them
            return
        state = {
            **self.loop,
            "elapsed_s": self.elapsed(),
            "interval": pending.state(),
            "data_cache_key": self.data.cache_dir.name,
        }
        save_checkpoint(self.run_dir, step, self.model, self.optimizer, self.scaler, state)

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()

    def finish(self, status: str, step: int, message: str | None) -> RunResult:
        """Stopped: say where. Finished: summary.json, and only the last checkpoint kept."""
        run_dir = self.run_dir
        if status in ("interrupted", "stopped"):
            self.log(f"stopped at step {step}; checkpoint saved in {run_dir / 'checkpoint'}")
            return RunResult(status, step, run_dir)
        if not self.world.is_main:
            return RunResult(status, step, run_dir)  # rank 0 writes the summary
        self.loop["elapsed_s"] = self.elapsed()
        data = self.data
        test = self.evaluate_test() if status == "complete" else None
        summary = build_summary(
            status=status,
            step=step,
            message=message,
            cfg=self.cfg,
            records=read_jsonl(run_dir / "metrics.jsonl"),
            loop=self.loop,
            vocab_size=self.vocab_size,
            flops_per_token=self.flops_per_token,
            peak=self.peak,
            device=self.device,
            precision=self.precision,
            val=self.val,
            train_tokens=len(data.train_tokens),
            data_key=data.cache_dir.name,
            tokenizer=data.tokenizer.name,
            data_meta={
                key: data.meta[key]
                for key in ("documents", "tokens", "leakage", "sources", "eval_documents")
                if key in data.meta
            },
            parameter_groups=describe_groups(self.model, self.cfg.train),
            test=test,
            processes=self.world.size,
            references=references_for(data.train_tokens, self.val, data.tokenizer.vocab_size),
            mixture=self.mixture(step),
        )
        if status == "complete" and self.documents[0] == step:
            write_json_atomic(
                run_dir / DOCUMENTS_FILE,
                {
                    "step": step,
                    "targets_digest": summary["eval"]["targets_digest"],
                    "columns": ["targets", "nats"],
                    "documents": self.documents[1],
                },
            )
        write_json_atomic(run_dir / "summary.json", summary)
        if status == "complete":  # only the final checkpoint is worth its disk space now
            for old in checkpoints(run_dir)[:-1]:
                shutil.rmtree(old, ignore_errors=True)
        return RunResult(status, step, run_dir, summary)


class _NoMetrics:
    """Where ranks other than 0 write their (identical) records: nowhere."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
