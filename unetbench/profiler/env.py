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

__all__ = ["backend_flags", "commit_of_checkout", "device_name", "environment", "git_commit"]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the unetbench checkout this code runs from, "" when it is not one.

    Only a source checkout of unetbench itself counts: an installed package inside a user's
    repository (a virtual environment in their project) must not report *their* commit.
    """
    return commit_of_checkout(Path(__file__).resolve().parents[2])


def commit_of_checkout(root: Path) -> str:
    """HEAD of the git repository whose top level is ``root`` and whose pyproject.toml names
    the unetbench project; "" otherwise."""
    try:
        project = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return ""
    if not any(line.strip() == 'name = "unetbench"' for line in project.splitlines()):
        return ""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root.resolve():
        return ""
    return lines[1]


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
