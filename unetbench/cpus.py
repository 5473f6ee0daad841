"""How many CPUs this process may use: its affinity mask and its cgroup's CPU quota.

``os.cpu_count()`` counts the machine's cores, which is wrong inside a SLURM job
(``--cpus-per-task`` sets the affinity mask and often a cgroup quota), a container with a CPU
limit, or ``taskset``. Torch threads and worker counts come from :func:`usable_cpus`.
Importing this module does not import torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "usable_cpus"]

_CGROUP = Path("/sys/fs/cgroup")


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup quota; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def cgroup_cpu_limit(root: Path = _CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 2.5), or None without one.

    Reads cgroup v2 (``cpu.max``: "QUOTA PERIOD" or "max PERIOD") of the process's own cgroup
    and its parents, else cgroup v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
    """
    for path in _v2_dirs(root):
        try:
            quota, period = (path / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _v2_dirs(root: Path) -> list[Path]:
    """The cgroup v2 directory of this process, then its parents up to ``root``."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return [root]
    own = next((line[3:] for line in lines if line.startswith("0::")), "/")
    here = root / own.strip("/")
    dirs = [here, *here.parents]
    return [d for d in dirs if d == root or root in d.parents]
