"""The machine: device and precision choice, accelerator peak FLOP/s, environment record.

Peak FLOP/s are dense (no structured sparsity) figures from NVIDIA's product datasheets, per
precision. MFU is only ever computed against a peak from this table; on a device it does not
know (any CPU included) MFU is ``None`` rather than a guess.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from lmablate.errors import LmablateError
from lmablate.version import __version__

# (pattern on torch.cuda.get_device_name, {precision: dense peak FLOP/s}). First match wins, so
# specific variants (PCIe) come before the family name. fp32 is the non-tensor-core rate,
# which is what fp32 matmuls run at unless TF32 is enabled (PyTorch's default leaves it off).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    (r"H100.*PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 51.2e12}),
    (r"H[12]00.*NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    (r"H100|H200|GH200", {"bf16": 989e12, "fp16": 989e12, "fp32": 66.9e12}),
    (r"A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
    (r"L40S", {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12}),
    (r"\bL4\b", {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12}),
    (r"A10\b", {"bf16": 125e12, "fp16": 125e12, "fp32": 31.2e12}),
    (r"T4\b", {"fp16": 65e12, "fp32": 8.1e12}),
    (r"V100.*PCIE", {"fp16": 112e12, "fp32": 14e12}),
    (r"V100", {"fp16": 125e12, "fp32": 15.7e12}),
]


DEVICE_SPEC = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # as train.device accepts them


def check_device_spec(spec: str, what: str) -> None:
    """A device name this tool can place a model on, or an error naming ``what`` set it."""
    if not DEVICE_SPEC.fullmatch(spec):
        raise LmablateError(f"{what} {spec!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps")


def resolve_device(spec: str, what: str = "train.device") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit device is an error
    naming ``what`` set it (the config field, or a command's option)."""
    check_device_spec(spec, what)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LmablateError(f"{what} is {spec!r} but CUDA is not available here; use auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise LmablateError(
            f"{what} is {spec!r} but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LmablateError(f"{what} is {spec!r} but MPS is not available here; use auto")
    return device


def resolve_precision(spec: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that support it, fp16 with a gradient scaler on older ones, else fp32."""
    if spec == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if spec == "fp16" and device.type != "cuda":
        raise LmablateError(
            f"train.precision fp16 needs a CUDA device (this run is on {device.type}); "
            "use bf16 or fp32"
        )
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LmablateError(
            f"train.precision bf16 is not supported by {torch.cuda.get_device_name(device)}; "
            "use fp16 or auto"
        )
    return spec


# glibc's malloc hands each allocation above its mmap threshold (at most 32 MB by default)
# straight to the kernel and unmaps it on free, so every step's large activations, logits and
# gradients arrive as fresh pages, each one a page fault when first touched: on a 2-core
# machine kernel time was close to half of a training step's CPU time with whole logits, and
# still 13% with the sliced loss (model/loss.py). Raising the threshold and the
# trim threshold keeps freed blocks in the heap for the next step (what jemalloc and tcmalloc,
# the allocators PyTorch's CPU tuning guide recommends preloading, do by design).
_MALLOC_SETTINGS = {
    -3: 2**30,
    -1: 2**32,
    -2: 2**27,
}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
_allocator_tuned = False


def tune_allocator() -> bool:
    """Keep freed large blocks for reuse (glibc only; once per process). True if applied.

    Set ``LMABLATE_SYSTEM_MALLOC=1`` to leave the C allocator as it is.
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("LMABLATE_SYSTEM_MALLOC") == "1":
        return _allocator_tuned
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    _allocator_tuned = all(libc.mallopt(key, value) == 1 for key, value in _MALLOC_SETTINGS.items())
    return _allocator_tuned


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a clock read after it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or f"{platform.machine()} CPU"


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Dense peak FLOP/s of this device at this precision, or None when not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, name):
            return peaks.get(precision)
    return None


def memory_bytes(device: torch.device) -> int | None:
    """The device's total memory: a GPU's own, else the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def peak_memory_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def git_sha(path: Path | None = None) -> str | None:
    """The commit of the lmablate checkout this code runs from, if it runs from one."""
    path = path or Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    """What a reader needs to reproduce a number: versions, device, code revision."""
    return {
        "lmablate_version": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device_name(device),
        "device_memory_bytes": memory_bytes(device),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
