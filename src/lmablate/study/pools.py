"""Training a study's runs outside the study's own process: several at once on this machine
(``--parallel K``), each on several processes (``--nproc-per-node N``, torchrun), or as tasks on
a Ray cluster (``--ray``).

Every run is the same command a user could type, ``lmablate train CONFIG --out RUN_DIR``
(under ``python -m torch.distributed.run --standalone`` when it takes several processes), run
in a process of its own with its output in ``RUN_DIR/train.log``. A process of its own is what
isolates a failure (a crash or an out-of-memory kill ends that run only) and what gives each
run its own GPUs (``CUDA_VISIBLE_DEVICES``) or its share of the CPU cores (``OMP_NUM_THREADS``).
The run directory, as always, says how the run ended. No scheduling is written here beyond
"start the next run when a slot frees": Ray places tasks on a cluster, torchrun starts ranks.

A pool starts runs (``start``), reports the ones that ended (``wait``) and, on an interrupt,
asks every running one to checkpoint and stop (``stop``): the study loop in ``runner.py`` drives
either pool the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmablate.config.run import RunConfig
from lmablate.errors import LmablateError
from lmablate.training.summary import read_summary, write_json_atomic

POLL_S = 0.2
STOP_GRACE_S = 300  # how long a stopping run may take to write its checkpoint


@dataclass
class Ended:
    """A run whose training process has exited, and how it ended."""

    key: str  # the run's path in the study, e.g. runs/baseline/seed-0
    status: str  # complete | diverged | failed | interrupted
    message: str | None = None


def available_cores() -> int:
    """CPU cores this process may use (a job scheduler's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out, as CUDA_VISIBLE_DEVICES names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def train_command(config_file: Path, run_dir: Path, nproc: int) -> list[str]:
    """The command that trains one run: ``lmablate train``, under torchrun for nproc > 1."""
    train = ["-m", "lmablate", "train", str(config_file), "--out", str(run_dir)]
    if nproc == 1:
        return [sys.executable, *train]
    # --standalone: a rendezvous on a free local port, so runs side by side never collide
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [sys.executable, *torchrun, *train]


def start_training(
    config: RunConfig, run_dir: Path, nproc: int, env: dict[str, str], cwd: str | None = None
) -> subprocess.Popen:
    """Start the training process of one run; its output goes to RUN_DIR/train.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # the resolved config, as train itself would write it first: the command in train.log is
    # then one a user can run again by hand
    config_file = run_dir / "config.json"
    write_json_atomic(config_file, config.model_dump(mode="json"))
    command = train_command(config_file, run_dir, nproc)
    log = (run_dir / "train.log").open("a", encoding="utf-8")
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    try:
        # a session of its own: a Ctrl-C at the terminal reaches the study, which then asks
        # each run to stop exactly once (a second signal would skip the checkpoint)
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own descriptor


def _last_error(log: Path) -> str | None:
    """The ``error: ...`` line a refused ``lmablate train`` printed last, without its prefix."""
    if not log.is_file():
        return None
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


def ended(key: str, run_dir: Path, returncode: int) -> Ended:
    """How a run ended, from its run directory (written by train) and its exit code."""
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") in ("complete", "diverged", "failed"):
        return Ended(key, summary["status"], summary.get("message"))
    if returncode in (130, -signal.SIGINT, -signal.SIGTERM):
        return Ended(key, "interrupted")
    refusal = _last_error(run_dir / "train.log") if returncode == 2 else None
    if refusal is not None:  # refused before training (device, data, memory): its own words
        write_json_atomic(run_dir / "summary.json", {"status": "failed", "message": refusal})
        return Ended(key, "failed", refusal)
    message = (
        f"the training process exited with code {returncode} before writing its summary "
        f"(killed, or out of host memory?); its output is in {run_dir / 'train.log'}"
    )
    write_json_atomic(run_dir / "summary.json", {"status": "failed", "message": message})
    return Ended(key, "failed", message)


def stop_process(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Ask a training process to checkpoint and exit (SIGTERM); kill it after ``grace_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------- this machine


@dataclass
class _Slot:
    env: dict[str, str]  # what confines a run to its share of the machine
    where: str  # said in the progress line


def plan_slots(parallel: int, nproc: int, device_type: str) -> list[_Slot]:
    """Split this machine between ``parallel`` runs of ``nproc`` processes each."""
    if parallel < 1:
        raise LmablateError(f"--parallel must be at least 1, not {parallel}")
    if nproc < 1:
        raise LmablateError(f"--nproc-per-node must be at least 1, not {nproc}")
    processes = parallel * nproc
    threads = max(1, available_cores() // processes)
    if device_type == "cuda":
        gpus = visible_gpus()
        if processes > len(gpus):
            raise LmablateError(
                f"--parallel {parallel} x --nproc-per-node {nproc} needs {processes} GPUs (one "
                f"per process); this machine has {len(gpus)}. Lower --parallel or "
                "--nproc-per-node"
            )
        slots = []
        for i in range(parallel):
            mine = gpus[i * nproc : (i + 1) * nproc]
            env = {"CUDA_VISIBLE_DEVICES": ",".join(mine), "OMP_NUM_THREADS": str(threads)}
            slots.append(_Slot(env, f"GPU {','.join(mine)}"))
        return slots
    if device_type == "mps" and nproc > 1:
        raise LmablateError("--nproc-per-node needs CUDA GPUs or the CPU; this study trains on mps")
    where = f"{threads} CPU thread{'s' if threads > 1 else ''}" + (
        f" x {nproc} processes" if nproc > 1 else ""
    )
    return [_Slot({"OMP_NUM_THREADS": str(threads)}, where) for _ in range(parallel)]


class LocalPool:
    """Up to ``parallel`` runs at once on this machine, each in its own training process."""

    def __init__(self, parallel: int, nproc: int, device_type: str) -> None:
        self.nproc = nproc
        self.free = plan_slots(parallel, nproc, device_type)
        self.running: dict[str, tuple[subprocess.Popen, Path, _Slot]] = {}

    def describe(self) -> str:
        runs = len(self.free)
        at_once = f"up to {runs} runs at once" if runs > 1 else "one run at a time"
        return f"this machine, {at_once}, each in its own process (output in RUN_DIR/train.log)"

    def has_room(self) -> bool:
        return bool(self.free)

    def start(self, key: str, config: RunConfig, run_dir: Path) -> str:
        """Start training a run; what to say about it in the progress line."""
        slot = self.free.pop(0)
        process = start_training(config, run_dir, self.nproc, slot.env)
        self.running[key] = (process, run_dir, slot)
        return f"training on {slot.where}"

    def wait(self) -> list[Ended]:
        """Block until at least one run has ended; those that have."""
        while True:
            done = [
                key for key, (process, _, _) in self.running.items() if process.poll() is not None
            ]
            if done:
                return [self._release(key) for key in done]
            time.sleep(POLL_S)

    def _release(self, key: str) -> Ended:
        process, run_dir, slot = self.running.pop(key)
        self.free.append(slot)
        return ended(key, run_dir, process.returncode)

    def stop(self) -> list[Ended]:
        """Every running run checkpoints and exits; how each ended."""
        for process, _, _ in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in self.running.values():
            stop_process(process)
        return [self._release(key) for key in list(self.running)]

    def close(self) -> None:
        for process, _, _ in self.running.values():  # only after an error in the study itself
            stop_process(process)


# ------------------------------------------------------------------------------ a Ray cluster


def _ray():
    try:
        import ray
    except ImportError:
        raise LmablateError(
            "--ray needs Ray: pip install 'lmablate[ray]' (on every node of the cluster)"
        ) from None
    return ray


def _train_task(
    key: str,
    config: RunConfig,
    run_dir: str,
    nproc: int,
    threads: int,
    cwd: str,
    after_complete: Callable[[Path, str], None] | None,
) -> Ended:
    """A Ray task: train one run in its own process on the node Ray chose, then (the study's
    text samples) call ``after_complete(run_dir, device)`` there, on the run's GPU. Ray has
    already set CUDA_VISIBLE_DEVICES for the task."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # a study started in the background (``cmd &`` in a script) hands its Ray workers an
        # ignored SIGINT, which is how ray.cancel interrupts a task: take it back
        signal.signal(signal.SIGINT, signal.default_int_handler)
    process = start_training(
        config,
        Path(run_dir),
        nproc,
        {"OMP_NUM_THREADS": str(threads)},
        cwd=cwd if Path(cwd).is_dir() else None,  # relative data paths, on a shared disk
    )
    try:
        while process.poll() is None:  # a blocking wait() would not see Ray's cancel
            time.sleep(POLL_S)
        returncode = process.returncode
    except KeyboardInterrupt:  # ray.cancel: let the run checkpoint before the task ends
        stop_process(process)
        return Ended(key, "interrupted")
    result = ended(key, Path(run_dir), returncode)
    if result.status == "complete" and after_complete is not None:
        with contextlib.suppress(Exception):  # the study then does it on its own machine
            after_complete(Path(run_dir), "cuda" if _has_gpu() else "cpu")
    return result


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class RayPool:
    """Every run a Ray task (one GPU per process where the cluster has GPUs, else CPU), on an
    existing cluster (``address``) or on a Ray instance started on this machine."""

    def __init__(
        self,
        address: str | None,
        nproc: int,
        device_spec: str,
        after_complete: Callable[[Path, str], None] | None = None,
    ) -> None:
        ray = _ray()
        if nproc < 1:
            raise LmablateError(f"--nproc-per-node must be at least 1, not {nproc}")
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            ray.init(address=address, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f" at {address}" if address else ""
            raise LmablateError(f"could not start or reach a Ray cluster{where}: {exc}") from None
        finally:
            # Ray's driver exits at once on SIGTERM; the study's handler stops the runs cleanly
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
        self.ray, self.nproc, self.after_complete = ray, nproc, after_complete
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        most_gpus = max((int(n.get("GPU", 0)) for n in nodes), default=0)
        wants_gpu = device_spec == "auto" or device_spec.startswith("cuda")
        self.gpus = nproc if wants_gpu and most_gpus else 0
        if device_spec.startswith("cuda") and not most_gpus:
            raise LmablateError(
                f"train.device is {device_spec!r} but the Ray cluster has no GPUs; use auto or cpu"
            )
        if self.gpus and most_gpus < nproc:
            raise LmablateError(
                f"--nproc-per-node {nproc} needs a node with {nproc} GPUs; the largest node of "
                f"the Ray cluster has {most_gpus}"
            )
        self.cpus = nproc  # one core per training process: its Python loop and data windows
        self.task = ray.remote(_train_task).options(num_cpus=self.cpus, num_gpus=self.gpus)
        self.running: dict[Any, str] = {}  # object ref -> run key

    def describe(self) -> str:
        resources = self.ray.cluster_resources()
        return (
            f"Ray cluster with {int(resources.get('CPU', 0))} CPUs and "
            f"{int(resources.get('GPU', 0))} GPUs; each run takes {self.cpus} CPU(s)"
            + (f" and {self.gpus} GPU(s)" if self.gpus else "")
        )

    def has_room(self) -> bool:
        return True  # Ray queues what the cluster cannot place yet

    def start(self, key: str, config: RunConfig, run_dir: Path) -> str:
        ref = self.task.remote(
            key,
            config,
            str(run_dir.resolve()),
            self.nproc,
            1,  # thread per training process: Ray counts one CPU per process
            os.getcwd(),
            self.after_complete,
        )
        self.running[ref] = key
        return "submitted to Ray"

    def wait(self) -> list[Ended]:
        done, _ = self.ray.wait(list(self.running), num_returns=1)
        return [self._collect(ref) for ref in done]

    def _collect(self, ref: Any) -> Ended:
        key = self.running.pop(ref)
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            return Ended(key, "interrupted")
        except self.ray.exceptions.RayError as exc:  # the node or worker died
            return Ended(key, "failed", f"the Ray task failed: {exc}")

    def stop(self) -> list[Ended]:
        for ref in self.running:
            self.ray.cancel(ref)  # a KeyboardInterrupt in the task, which stops its run
        refs = list(self.running)
        self.ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
        return [self._collect(ref) for ref in refs]

    def close(self) -> None:
        self.ray.shutdown()
