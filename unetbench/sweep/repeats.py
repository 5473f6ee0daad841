"""A trial's training runs: one per seed, each for exactly ``spec.steps`` steps.

A trial's ``val_dice``, ``val_iou``, ``train_loss`` and ``train_s`` are the means over its
runs as :func:`unetbench.seeds.seed_means` defines them; ``steps_done`` is the fewest steps
any run made. ``[train] seconds`` is a guard, not a budget: a run it stops before ``steps`` is
``capped`` (its Dice measures the machine's load, not the config) and so is the trial, which
is then infeasible. The first run that is not ok ends the trial. The runs are kept in the row
(``runs``) for ``runs.parquet``, each with its ``status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from unetbench.seeds import RUN_METRICS, seed_means

if TYPE_CHECKING:
    from unetbench.config import UNetConfig
    from unetbench.sweep.evaluator import Evaluator
    from unetbench.sweep.spec import StudySpec

__all__ = ["MEAN_COLUMNS", "RUN_KEYS", "train_repeats"]

#: Columns of a run that a trial reports as the mean over its runs.
MEAN_COLUMNS = RUN_METRICS
#: Row keys :func:`train_repeats` writes.
RUN_KEYS = frozenset(
    {*MEAN_COLUMNS, "runs", "train_seed", "n_seeds", "steps_done", "train_steps", "status"}
    | {"reason", "state"}
)


def train_repeats(
    evaluator: Evaluator,
    spec: StudySpec,
    config: UNetConfig,
    data: Any,
    mode: str,
    seeds: list[int],
    row: dict[str, Any],
    resume: Mapping[int, tuple[bytes, int]] | None = None,
    keep_state: bool = False,
) -> tuple[str, str, dict[int, bytes]]:
    """Train ``config`` once per seed into ``row``; returns the trial's (status, reason) and
    the runs' states by seed (``keep_state``). ``resume`` maps a seed to the state of an
    earlier run and its step count: that run continues (``resumed_steps`` in its run)."""
    runs: list[dict[str, Any]] = []
    states: dict[int, bytes] = {}
    row.update(train_seed=seeds[0], n_seeds=len(seeds), train_steps=spec.steps, runs=runs)
    status, reason = "ok", ""
    for seed in seeds:
        blob, resumed = (resume or {}).get(seed, (None, 0))
        result = evaluator.train(
            spec, config, data, mode, seed=seed, resume=blob, keep_state=keep_state
        )
        if isinstance(result.get("state"), bytes):
            states[seed] = result["state"]
        status = str(result.get("status", "ok"))
        reason = str(result.get("reason", ""))
        steps = int(result.get("steps_done", 0))
        capped = status == "ok" and steps < spec.steps
        if capped:
            status = "capped"
            reason = (
                f"train.seconds={spec.seconds} stopped the run with seed {seed} after "
                f"{steps} of {spec.steps} steps"
            )
        runs.append(
            {"train_seed": seed, "steps_done": steps, "resumed_steps": resumed,
             "capped": capped, "status": status, **{c: result.get(c) for c in MEAN_COLUMNS}}
        )  # fmt: skip
        row.update({k: v for k, v in result.items() if k not in RUN_KEYS})
        if status != "ok":
            break
    row["steps_done"] = min(r["steps_done"] for r in runs)
    means = seed_means([{**r, "config_key": 0} for r in runs], MEAN_COLUMNS)
    for col in MEAN_COLUMNS:
        row[col] = float(means[col].iloc[0]) if len(means) else float("nan")
    return status, reason, states
