"""Environment columns of a profile record: what ran, where and when.

Every record carries these so that numbers from different machines, torch builds and commits
are never compared unknowingly (as pytest-benchmark does for its saved runs).
"""

from __future__ import annotations

import datetime
import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["backend_flags", "device_name", "environment", "git_commit"]


def git_commit(directory: str | Path | None = None) -> str:
    """HEAD of the git repository holding ``directory`` (default: the working directory).

    That is the code being measured: a user profiling from their project's checkout gets
    their commit, as pytest-benchmark records it; "" outside a repository or without git.
    """
    return _head(str(Path(directory if directory is not None else Path.cwd()).resolve()))


@functools.lru_cache(maxsize=8)
def _head(directory: str) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    head = out.stdout.strip()
    return head if out.returncode == 0 and len(head) == 40 else ""


def device_name(device: torch.device) -> str:
    """Return a human name of the device: the GPU model, or the CPU's processor string."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return platform.processor() or platform.machine() or "cpu"


def backend_flags() -> dict[str, bool]:
    """The backend settings that change CUDA memory and speed: cuDNN's algorithm search
    (benchmark), deterministic algorithms, and TensorFloat-32 for matmuls and convolutions."""
    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Return the environment columns of a record."""
    from unetbench import __version__

    return {
        "torch_version": torch.__version__,
        "unetbench_version": __version__,
        "git_commit": git_commit(),
        "host": platform.node(),
        "device_name": device_name(device),
        **backend_flags(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
