"""Baseline files of deterministic metrics (and same-run timing ratios), and how to fill them.

A baseline is a JSON document::

    {"format": "unetbench-baseline", "version": 1,
     "environment": {"torch_version": "2.13.0+cpu", ...},
     "entries": {"<name>": {"setting": {config fields, input_shape, batch_size, checkpointing},
                            "metrics": {"params": 85394, "train_flops": 1159987200, ...}}}}

It is what the ``unetbench`` pytest plugin reads and writes, what ``tests/test_baseline.py``
checks, and ``unetbench compare`` reads it like any other records file.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetbench._errors import UnetbenchError, UsageError
from unetbench.gate._load import BASELINE_FORMAT, records_from_json
from unetbench.gate.compare import EXACT_METRICS, ComparisonResult, compare_records

__all__ = ["Baseline", "deterministic_metrics", "environment"]

log = logging.getLogger(__name__)
_VERSION = 1


def environment() -> dict[str, str]:
    """Versions that can change deterministic counts (torch's tracer and fake tensors)."""
    import torch

    import unetbench

    return {
        "torch_version": torch.__version__,
        "unetbench_version": unetbench.__version__,
        "python_version": platform.python_version(),
    }


def deterministic_metrics(
    config_or_model: Any,
    input_shape: Iterable[int],
    batch_size: int = 1,
    checkpointing: str = "none",
) -> dict[str, int]:
    """Parameter count, MACs, FLOPs and fake-estimated training memory; no timing, no device
    memory, so the numbers are the same on every machine with the same torch version.

    Uses :func:`unetbench.profiler.profile` with timing and memory measurement off.
    """
    from unetbench.profiler import profile

    frame = profile(
        config_or_model,
        tuple(input_shape),
        batch_size,
        checkpointing=checkpointing,
        timing=False,
        measure_memory=False,
    )
    row = frame.iloc[0]
    if row["status"] != "ok":
        raise UnetbenchError(f"profiling failed ({row['status']}): {row['reason']}")
    return {m: int(row[m]) for m in EXACT_METRICS}


@dataclass
class Baseline:
    """A baseline file in memory: named entries of a setting and its metrics."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    exists: bool = False

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Read ``path``; a missing file gives an empty baseline (``exists`` False)."""
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"baseline {path}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
            raise UsageError(f"baseline {path}: not a unetbench baseline file (no format key)")
        if doc.get("version") != _VERSION:
            raise UsageError(f"baseline {path}: version {doc.get('version')!r}, need {_VERSION}")
        return cls(path, dict(doc.get("entries", {})), dict(doc.get("environment", {})), True)

    def to_json(self) -> str:
        doc = {
            "format": BASELINE_FORMAT,
            "version": _VERSION,
            "environment": self.environment,
            "entries": {name: self.entries[name] for name in sorted(self.entries)},
        }
        return json.dumps(doc, indent=1, sort_keys=False) + "\n"

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json())
        log.info("baseline with %d entries written to %s", len(self.entries), target)
        return target

    def set(self, name: str, metrics: Mapping[str, float], setting: Mapping[str, Any]) -> None:
        """Record (or replace) one entry; the environment becomes the current one."""
        self.entries[name] = {"setting": dict(setting), "metrics": dict(metrics)}
        self.environment = environment()

    def compare(
        self,
        name: str,
        metrics: Mapping[str, float],
        tolerances: Mapping[str, float] | None = None,
        *,
        default_tolerance: float = 0.1,
    ) -> ComparisonResult:
        """Compare ``metrics`` with entry ``name`` (exact metrics exactly, others in tolerance).

        Raises:
            KeyError: ``name`` is not in the baseline.
        """
        import pandas as pd

        if name not in self.entries:
            raise KeyError(name)
        base = records_from_json({"format": BASELINE_FORMAT, "entries": {name: self.entries[name]}})
        current = pd.DataFrame([{"benchmark": name, **metrics}])
        chosen = [m for m in self.entries[name].get("metrics", {}) if m not in ("benchmark",)]
        chosen += [m for m in metrics if m not in chosen]
        return compare_records(
            base,
            current,
            tolerances,
            default_tolerance=default_tolerance,
            key=["benchmark"],
            metrics=chosen,
        )

    def environment_note(self) -> str:
        """One line saying how this run's versions differ from the baseline's, if they do."""
        now = environment()
        diff = [
            f"{k}: baseline {self.environment.get(k)!r}, now {v!r}"
            for k, v in now.items()
            if k != "python_version" and self.environment.get(k) not in (None, v)
        ]
        return ("versions differ from the baseline (" + "; ".join(diff) + ")") if diff else ""
