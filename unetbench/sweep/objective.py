"""One trial: sample a config, check it, estimate, train, profile, and record one flat row.

Every outcome the sampler should learn from ends COMPLETE: an illegal config, a config that
does not fit the memory budget, an out-of-memory error or a diverged run is COMPLETE with its
``reason`` and a violated constraint, never FAIL, because Optuna's samplers ignore FAIL trials
and would propose the same configs again and again (optuna issues #3472 and #2864). Only a
crash of the worker itself (kill, Ctrl-C, a bug) leaves a FAIL trial.

The row is stored as the trial's user attributes (one JSON scalar per column, NaN as null so
optuna-dashboard can show them) and exported to ``trials.parquet`` by the runner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from unetbench._errors import ConfigError
from unetbench.sweep.evaluator import Evaluator, finite, free_memory, is_oom
from unetbench.sweep.space import build_config, config_key, suggest
from unetbench.sweep.storage import owner_alive, worker_identity

if TYPE_CHECKING:
    from unetbench.sweep.spec import StudySpec

__all__ = ["CONSTRAINT_NAMES", "WORST_MINIMIZE", "TrialObjective", "constraints_from_attrs"]

_LOG = logging.getLogger(__name__)
#: Objective value of a minimised column that could not be measured (an infeasible trial).
WORST_MINIMIZE = 1e15
#: Constraints of every trial (feasible when <= 0): estimated memory over the budget as a
#: fraction of it, and 1 for a trial that failed (illegal config, out of memory, diverged).
CONSTRAINT_NAMES = ("memory_over_budget", "failed")
# Profile columns repeated per checkpointing mode as "<column>__<mode>".
_PER_MODE = (
    "status",
    "est_peak_mem_train_bytes",
    "peak_mem_train_bytes",
    "train_step_s",
    "train_voxels_per_s",
)
# Row keys that describe this trial itself and are not copied when a result is reused.
_OWN_KEYS = frozenset(
    {"trial_number", "reused_from", "trial_s", "worker_host", "worker_pid", "worker_start"}
)


def constraints_from_attrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    """``constraints_func`` for Optuna < 5 (see :data:`CONSTRAINT_NAMES`); <= 0 is satisfied."""
    value = trial.user_attrs.get("constraints")
    return [float(v) for v in value] if isinstance(value, list) else [1.0, 1.0]


class TrialObjective:
    """The objective Optuna calls. ``on_start`` runs once the trial has recorded its worker."""

    def __init__(
        self,
        spec: StudySpec,
        evaluator: Evaluator,
        on_start: Callable[[optuna.Trial], None] | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.spec = spec
        self.evaluator = evaluator
        self.on_start = on_start
        self.poll_s = poll_s
        self._data: Any = None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        t0 = time.perf_counter()
        for key, value in worker_identity().items():
            trial.set_user_attr(key, value)
        if self.on_start is not None:
            self.on_start(trial)
        row: dict[str, Any] = {"trial_number": trial.number}
        self._run(trial, row)
        row["trial_s"] = time.perf_counter() - t0
        values = self._values(row)
        self._store(trial, row)
        return values

    def _run(self, trial: optuna.Trial, row: dict[str, Any]) -> None:
        spec = self.spec
        sampled = suggest(trial, spec)
        row.update(
            {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in {**spec.fixed, **sampled}.items()
            }
        )
        row.update(
            batch_size=spec.batch_size, input_shape=_fmt(spec.patch_shape), device=spec.device
        )
        try:
            config = build_config(spec, sampled)
            row.update(config.to_dict())
            config.check_input_shape(spec.patch_shape)
        except ConfigError as exc:
            return _infeasible(row, "illegal", f"illegal config: {exc}")
        key = config_key(config)
        trial.set_user_attr("config_key", key)
        if self._reuse(trial, key, row):
            return
        mode = self._choose_mode(config, row)
        if mode is None:
            budget = spec.memory_budget_bytes
            return _infeasible(
                row, "oom", f"estimated {row['est_total_train_bytes']} B > budget {budget} B"
            )
        self._train_and_profile(config, mode, row)

    def _choose_mode(self, config: Any, row: dict[str, Any]) -> str | None:
        """The first checkpointing mode (spec order) whose estimate fits the budget, or None.

        The last mode, assumed the most frugal, is estimated first: if even it does not fit,
        the trial is over after one estimate (well under a second).
        """
        spec, t0 = self.spec, time.perf_counter()
        budget = spec.memory_budget_bytes
        order = [spec.checkpointing[0]] if budget is None else [spec.checkpointing[-1]]
        order += [m for m in spec.checkpointing if m not in order]
        chosen = None
        for i, mode in enumerate(order):
            est = self.evaluator.estimate_memory(spec, config, mode)
            for key, value in est.items():
                row[f"{key}__{mode}"] = value
            if budget is not None and est["est_total_train_bytes"] > budget:
                if i == 0:
                    row.update(checkpointing=mode, **est)
                    break
                continue
            chosen = mode
            row.update(checkpointing=mode, **est)
            if i > 0 or budget is None:
                break
        row["estimate_s"] = time.perf_counter() - t0
        return chosen

    def _train_and_profile(self, config: Any, mode: str, row: dict[str, Any]) -> None:
        if self._data is None:
            self._data = self.evaluator.load_data(self.spec)
        try:
            self._measure(config, mode, row)
        except Exception as exc:
            if not is_oom(exc):
                raise
            _infeasible(row, "oom", f"out of memory: {exc}")
        finally:
            free_memory()  # the next trial starts from the same baseline

    def _measure(self, config: Any, mode: str, row: dict[str, Any]) -> None:
        result = self.evaluator.train(self.spec, config, self._data, mode)
        row.update(result)
        if result.get("status", "ok") != "ok":
            return _infeasible(row, str(result.get("status")), str(result.get("reason", "")))
        t = time.perf_counter()
        records = {r["checkpointing"]: r for r in self.evaluator.profile(self.spec, config)}
        row["profile_s"] = time.perf_counter() - t
        for m, rec in records.items():
            for col in _PER_MODE:
                if col in rec:
                    row[f"{col}__{m}"] = rec[col]
        chosen = records.get(mode, {})
        train_keys = set(result)
        row.update({k: v for k, v in chosen.items() if k not in train_keys or k == "status"})
        row["checkpointing"] = mode
        if chosen.get("status", "ok") != "ok":
            return _infeasible(row, str(chosen["status"]), f"profile: {chosen.get('reason', '')}")
        row.update(status="ok", reason="", feasible=True)
        return None

    def _reuse(self, trial: optuna.Trial, key: str, row: dict[str, Any]) -> bool:
        """Copy the result of an earlier trial of the same config (waiting if it is running)."""
        study = trial.study
        while True:
            earlier = [
                t
                for t in study.get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)
                )
                if t.number != trial.number and t.user_attrs.get("config_key") == key
            ]
            done = [t for t in earlier if t.state == TrialState.COMPLETE]
            if done:
                source = min(done, key=lambda t: t.number)
                original = source.user_attrs.get("reused_from", source.number)
                row.update({k: v for k, v in source.user_attrs.items() if k not in _OWN_KEYS})
                row.update(reused_from=original, trial_s=0.0)
                _LOG.info(
                    "trial %d: same config as trial %d, result reused", trial.number, original
                )
                return True
            running = [
                t
                for t in earlier
                if t.number < trial.number and owner_alive(t.user_attrs) is not False
            ]
            if not running:
                return False
            time.sleep(self.poll_s)

    def _values(self, row: dict[str, Any]) -> list[float]:
        """Objective values; an unmeasured one (infeasible trial) gets a bad but finite value."""
        values = []
        for name, direction in self.spec.objectives:
            v: Any = row.get(name)
            if not finite(v):
                est = row.get("est_peak_mem_train_bytes")
                if direction == "maximize":
                    v = 0.0
                elif name.endswith("_mem_train_bytes") and finite(est):
                    v = est
                else:
                    v = WORST_MINIMIZE
            values.append(float(v))
        budget = self.spec.memory_budget_bytes
        total: Any = row.get("est_total_train_bytes")
        over = (total - budget) / budget if budget and finite(total) else 0.0
        row["constraints"] = [float(over), 0.0 if row.get("feasible") else 1.0]
        return values

    def _store(self, trial: optuna.Trial, row: dict[str, Any]) -> None:
        for key, value in row.items():
            trial.set_user_attr(key, _jsonable(value))
        # The list format of Optuna's "constraints" system attribute (what a constraints_func
        # stores): samplers read it, and so does optuna-dashboard 0.21, which ignores the named
        # constraints of Optuna 5's Trial.set_constraint.
        trial.study._storage.set_trial_system_attr(
            trial._trial_id, "constraints", [float(v) for v in row["constraints"]]
        )


def _infeasible(row: dict[str, Any], status: str, reason: str) -> None:
    row.update(status=status, reason=reason, feasible=False)
    _LOG.info("trial %s infeasible: %s", row.get("trial_number"), reason)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _jsonable(value: Any) -> Any:
    """A JSON scalar or list: NaN/inf become None, numpy scalars become Python ones."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not finite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
