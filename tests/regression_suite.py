"""The project's fixed regression set: small U-Nets that together use every config option.

``tests/test_baseline.py`` recomputes their deterministic metrics on every CI run and compares
them exactly with ``results/baselines/regression.json``; ``tests/benchmarks/`` times them.
After an intended change (new torch, new counting rule, model change), rewrite the baseline
with ``.venv/bin/python scripts/update-baselines.py`` and commit it.

This is the project's own choice of configs, so it lives with the tests, not in the package;
the machinery it uses (:func:`unetbench.profiler.profile`, :class:`unetbench.gate.Baseline`)
is the library's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unetbench._errors import UnetbenchError
from unetbench.config import UNetConfig

__all__ = ["BASELINE_PATH", "CASES", "Case", "compute_entries"]

BASELINE_PATH = Path(__file__).resolve().parents[1] / "results" / "baselines" / "regression.json"


@dataclass(frozen=True)
class Case:
    """One config, its (small, legal) input and the checkpointing policies to count."""

    name: str
    config: UNetConfig
    input_shape: tuple[int, ...]
    checkpointing: tuple[str, ...] = ("none",)

    def entry_name(self, policy: str) -> str:
        return f"{self.name}-{policy}"


def _case(name: str, shape: tuple[int, ...], policies: tuple[str, ...], **kw: Any) -> Case:
    return Case(name, UNetConfig(**{"n_blocks": 3, "start_filts": 8, **kw}), shape, policies)


# Every up_mode, merge_mode, activation, normalization (incl. group<G>), attention, planar
# blocks, full_norm, conv_mode, dim, channel counts and checkpointing policy appears at least once.
CASES: tuple[Case, ...] = (
    _case("default_3d", (16, 32, 32), ("none", "blocks", "top_units", "lean", "cheap")),
    _case(
        "add_leaky_instance",
        (16, 32, 32),
        ("none", "lean", "cheap"),
        merge_mode="add",
        activation="leaky",
        normalization="instance",
        in_channels=2,
        out_channels=3,
    ),
    _case(
        "nearest_prelu_group",
        (16, 32, 32),
        ("none", "blocks"),
        up_mode="resizeconv_nearest",
        activation="prelu",
        normalization="group",
    ),
    _case(
        "linear_rrelu_group4",
        (16, 32, 32),
        ("none",),
        up_mode="resizeconv_linear",
        activation="rrelu",
        normalization="group4",
    ),
    _case(
        "nearest1_silu_nonorm",
        (16, 32, 32),
        ("none",),
        up_mode="resizeconv_nearest1",
        activation="silu",
        normalization="none",
        full_norm=False,
    ),
    _case(
        "linear1_lin_attention",
        (16, 32, 32),
        ("none", "blocks"),
        up_mode="resizeconv_linear1",
        activation="lin",
        attention=True,
    ),
    _case(
        "planar_valid_3d", (20, 44, 44), ("none", "blocks"), planar_blocks=(0,), conv_mode="valid"
    ),
    _case(
        "attention_2d_n4",
        (64, 64),
        ("none", "blocks", "top_units"),
        dim=2,
        n_blocks=4,
        attention=True,
    ),
    _case("valid_2d_partial_norm", (44, 44), ("none",), dim=2, conv_mode="valid", full_norm=False),
)


def compute_entries(cases: Iterable[Case] = CASES) -> dict[str, dict[str, Any]]:
    """Baseline entries (``{"setting": ..., "metrics": ...}``) of every case and policy.

    Counts only (the profiler with timing and memory measurement off), so the result is the
    same on every machine with the same torch version.
    """
    from unetbench.gate.compare import EXACT_METRICS
    from unetbench.profiler import profile

    entries: dict[str, dict[str, Any]] = {}
    for case in cases:
        frame = profile(
            case.config,
            case.input_shape,
            1,
            checkpointing=case.checkpointing,
            timing=False,
            measure_memory=False,
        )
        for row in frame.to_dict("records"):
            name = case.entry_name(str(row["checkpointing"]))
            if row["status"] != "ok":
                raise UnetbenchError(f"regression case {name} failed: {row['reason']}")
            setting = {
                **case.config.to_dict(),
                "input_shape": list(case.input_shape),
                "batch_size": 1,
                "checkpointing": row["checkpointing"],
            }
            entries[name] = {"setting": setting, "metrics": {m: int(row[m]) for m in EXACT_METRICS}}
    return entries
