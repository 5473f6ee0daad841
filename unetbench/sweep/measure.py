"""One trial's measurements: check the config, estimate, train, profile, into one flat row.

:class:`TrialMeasure` takes a started trial (:class:`~unetbench.sweep.propose.Proposal`: its
config is sampled and claimed already) and returns its row and objective values; it writes
nothing to the storage but the ``config_key`` of an enqueued trial (see
:mod:`unetbench.sweep.record` for how the row is stored).

Every outcome of the config itself ends COMPLETE, infeasible, with its ``status`` and
``reason`` and a violated constraint, so the sampler learns from it: an illegal config
(``illegal``), a config whose estimate does not fit the memory budget or that ran out of memory
(``oom``), a run stopped by the time guard (``capped``) or a diverged one (``diverged``).
Optuna's samplers ignore FAIL trials and would propose such configs again and again (optuna
issues #3472 and #2864). Anything else is a crash, never a result: :class:`TrialError`
carries the exception's type, message and traceback to the worker, which fails the trial
(see :mod:`unetbench.sweep.worker`), as is a feasible trial that did not measure one of its
objectives. The end of a worker (kill, Ctrl-C, a dead machine) fails its trial too.

Every row carries the study's memory budget, headroom and usable memory (``None`` without a
budget), whatever the profiler recorded.

A config is trained once per study, across all workers and machines (see
:mod:`unetbench.sweep.claims`): a trial whose config another trial already finished copies
its result (``reused_from``), and one whose config another live trial is training waits for
it. A search trial trains its config with ``[train] repeats`` seeds
(:mod:`unetbench.sweep.repeats`); a confirmation trial trains further seeds of a searched
config and copies the memory and speed profile of its search trial instead of profiling again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from unetbench._errors import ConfigError
from unetbench.budget import AUTO, budget_columns
from unetbench.oom import is_oom
from unetbench.shapes import fmt_shape
from unetbench.sweep.claims import ConfigClaims
from unetbench.sweep.confirm import train_seeds
from unetbench.sweep.evaluator import Evaluator, finite, free_memory
from unetbench.sweep.liveness import Liveness
from unetbench.sweep.record import (
    CONFIG_KEY,
    CONFIRM_OF,
    N_SEEDS,
    PROMOTED_FROM,
    REPEAT_START,
    RUNG,
    WORKER,
    role_of,
    row_of,
    set_config_key,
)
from unetbench.sweep.repeats import RUN_KEYS, train_repeats
from unetbench.sweep.retry import StorageUnreachable
from unetbench.sweep.space import TRAINING_FIELDS, build_config, config_key
from unetbench.sweep.states import StateStore

if TYPE_CHECKING:
    from unetbench.sweep.propose import Proposal
    from unetbench.sweep.spec import StudySpec

__all__ = ["TrialError", "TrialMeasure"]

_LOG = logging.getLogger(__name__)
# The end of a crashed trial's traceback kept in its record (the frames nearest the error).
_TRACEBACK_CHARS = 8000
# Profile columns repeated per checkpointing mode as "<column>__<mode>".
_PER_MODE = (
    "status",
    "est_peak_mem_train_bytes",
    "peak_mem_train_bytes",
    "train_step_s",
    "train_step_iqr_s",
    "train_voxels_per_s",
    "train_flops",
    "timing_note",
    "timing_wait_share",
)
# Row keys that describe this trial itself and are not copied when a result is reused (a
# reused trial trained nothing, so it has no runs of its own).
_OWN_KEYS = frozenset({"trial_number", "reused_from", "trial_s", "device", WORKER, "runs", "role"})
# Keys a confirmation trial does not copy from its search trial: it trains for itself.
_NOT_PROFILE = RUN_KEYS | _OWN_KEYS | {"feasible", "constraints", "estimate_s", "profile_s"}
_NOT_PROFILE |= {"rung", "promoted_from", "profile_from", "state_artifacts", "state_missing"}


class TrialError(Exception):
    """A trial crashed: not a result. The worker fails the trial (Optuna FAIL) with the
    partial ``row`` (its config), the exception's type, message and traceback."""

    def __init__(
        self, row: dict[str, Any], error_type: str, message: str, tb: str, where: str = ""
    ) -> None:
        super().__init__(f"{error_type}: {message}")
        self.row, self.error_type, self.message, self.traceback = row, error_type, message, tb
        self.where = where  # file:line that raised it

    @classmethod
    def of(cls, row: dict[str, Any], exc: BaseException) -> TrialError:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        return cls(row, type(exc).__name__, _one_line(exc), tb[-_TRACEBACK_CHARS:], where)

    @property
    def signature(self) -> tuple[str, str]:
        """What makes two errors "the same": their type and the line that raised them (the
        message may name a different file or value each time), else the message."""
        return self.error_type, self.where or self.message


class TrialMeasure:
    """Measures started trials of one worker; ``spec.device`` is the device it trains on."""

    def __init__(
        self,
        spec: StudySpec,
        evaluator: Evaluator,
        liveness: Liveness,
        claims: ConfigClaims,
        poll_s: float = 2.0,
        data: Any = None,
        states: StateStore | None = None,
    ) -> None:
        self.spec = spec
        self.evaluator = evaluator
        self.liveness = liveness
        self.claims = claims
        self.poll_s = poll_s
        self._data: Any = data  # loaded at the first training when None
        self.states = states  # where runs' states are kept for promotions (rungs)
        self._trial: Any = None  # the trial being measured

    def __call__(self, proposal: Proposal) -> tuple[dict[str, Any], list[float]]:
        """The trial's row and objective values."""
        t0 = time.perf_counter()
        trial = proposal.trial
        assert trial is not None
        row: dict[str, Any] = {"trial_number": trial.number, "role": proposal.role}
        try:
            self._run(trial, proposal, row)
        finally:  # the study's settings, whatever a profile or a copied row said
            row.update(budget_columns(self.spec))
        row["trial_s"] = time.perf_counter() - t0
        return row, self._values(row, trial.study)

    def _run(self, trial: optuna.Trial, proposal: Proposal, row: dict[str, Any]) -> None:
        sampled = proposal.sampled
        spec = self.spec  # with this trial's precision, when precision is searched
        for field in TRAINING_FIELDS:  # this trial's precision / memory format, if searched
            if sampled.get(field, getattr(spec, field)) != getattr(spec, field):
                spec = dataclasses.replace(spec, **{field: sampled[field]})
        row.update(
            {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in {**spec.fixed, **sampled}.items()
            }
        )
        row.update(
            batch_size=spec.batch_size,
            input_shape=fmt_shape(spec.patch_shape),
            device=spec.device,
            precision=spec.precision,
            memory_format=spec.memory_format,
        )
        try:
            config = build_config(spec, sampled)
            row.update(config.to_dict())
            config.check_input_shape(spec.patch_shape)
        except ConfigError as exc:
            return _infeasible(row, "illegal", f"illegal config: {exc}")
        key = config_key(config, spec.precision, spec.memory_format)
        row[CONFIG_KEY] = key
        if trial.user_attrs.get(CONFIG_KEY) != key:  # an enqueued trial, not sampled
            set_config_key(trial.study._storage, trial._trial_id, key)
        if proposal.claim is None and self._reuse(trial, key, row):
            return
        self._trial = trial
        rung = int(trial.user_attrs.get(RUNG, 0))
        if proposal.role == "confirm":  # confirmations train at the top rung
            rung = spec.top_rung
        if spec.rungs:
            row["rung"] = rung
        try:
            if proposal.role == "confirm":
                return self._confirm(trial, spec, config, row)
            if proposal.role == "promote":
                return self._promote(trial, spec, config, rung, row)
            spec = dataclasses.replace(spec, steps=spec.rung_steps(0))  # rung 0 (or all steps)
            mode = self._choose_mode(spec, config, row)
            if mode is None:
                usable = row["memory_usable_bytes"]
                return _infeasible(
                    row,
                    "oom",
                    f"estimated {row['est_total_train_bytes']} B > budget {usable} B "
                    f"(headroom {row['memory_headroom_bytes']} B kept free)",
                )
            self._train_and_profile(spec, config, mode, row, keep=rung < spec.top_rung)
        except StorageUnreachable:
            raise  # the worker's end, not the trial's outcome
        except Exception as exc:
            if is_oom(exc):  # a property of the config: infeasible, the sampler learns
                return _infeasible(row, "oom", f"out of memory: {_one_line(exc)}")
            raise TrialError.of(row, exc) from exc  # a crash is never a result

    def _choose_mode(self, spec: StudySpec, config: Any, row: dict[str, Any]) -> str | None:
        """The first checkpointing mode (spec order) whose estimate fits the budget, or None.

        The last mode, assumed the most frugal, is estimated first: if even it does not fit,
        the trial is over after one estimate (well under a second). With ``auto``, the
        evaluator chooses among all policies (fewest training FLOPs that fit).
        """
        t0 = time.perf_counter()
        row.update(budget_columns(spec))
        budget = row["memory_usable_bytes"]
        if spec.checkpointing == (AUTO,):
            mode, est = self.evaluator.choose_checkpointing(spec, config, budget)
            row.update(checkpointing=AUTO, checkpointing_chosen=mode, **est)
            row["estimate_s"] = time.perf_counter() - t0
            fits = budget is None or est["est_total_train_bytes"] <= budget
            return mode if fits else None
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
            row.update(checkpointing=mode, checkpointing_chosen=mode, **est)
            if i > 0 or budget is None:
                break
        row["estimate_s"] = time.perf_counter() - t0
        return chosen

    def _train_and_profile(
        self, spec: StudySpec, config: Any, mode: str, row: dict[str, Any], keep: bool
    ) -> None:
        try:
            self._measure(spec, config, mode, row, keep)
        finally:
            free_memory(self.spec.device)  # the next trial starts from the same baseline

    def _train(
        self,
        spec: StudySpec,
        config: Any,
        mode: str,
        seeds: list[int],
        row: dict[str, Any],
        resume: dict[int, tuple[bytes, int]] | None = None,
        keep: bool = False,
    ) -> bool:
        """Train one run per seed; False (and the row infeasible) unless all are ok. With
        ``keep`` (a rung below the top), the runs' states are stored for a promotion."""
        if self._data is None:
            self._data = self.evaluator.load_data(self.spec)
        try:
            status, reason, states = train_repeats(
                self.evaluator, spec, config, self._data, mode, seeds, row, resume, keep
            )
        finally:
            free_memory(self.spec.device)  # the next run starts from the same baseline
        if states and self.states is not None:
            trial = self._trial
            saved = {
                str(seed): self.states.save(
                    trial.study, trial._trial_id, blob, f"trial{trial.number}-seed{seed}.pt"
                )
                for seed, blob in states.items()
            }
            row["state_artifacts"] = {k: v for k, v in saved.items() if v is not None}
        if status != "ok":
            _infeasible(row, status, reason)
        return status == "ok"

    def _promote(
        self, trial: optuna.Trial, spec: StudySpec, config: Any, rung: int, row: dict[str, Any]
    ) -> None:
        """Train a config on from the rung below: its runs continue from their stored states
        (or retrain from the start when a state cannot be read); the memory and speed
        profile is copied from the trial it continues."""
        source, profile = _copy_profile(trial, PROMOTED_FROM, row)
        row.update(promoted_from=source.number, rung=rung)
        seeds = train_seeds(spec, 0, spec.repeats)
        stored = profile.get("state_artifacts") or {}
        resume: dict[int, tuple[bytes, int]] = {}
        for seed in seeds:
            blob = None
            if self.states is not None and str(seed) in stored:
                blob = self.states.load(str(stored[str(seed)]))
            if blob is not None:
                resume[seed] = (blob, spec.rung_steps(rung - 1))
        row["state_missing"] = len(resume) < len(seeds)
        at_rung = dataclasses.replace(spec, steps=spec.rung_steps(rung))
        mode = str(profile["checkpointing_chosen"])
        if self._train(at_rung, config, mode, seeds, row, resume, rung < spec.top_rung):
            row.update(status="ok", reason="", feasible=True)

    def _confirm(
        self, trial: optuna.Trial, spec: StudySpec, config: Any, row: dict[str, Any]
    ) -> None:
        """Further seeds of a searched config; its profile is copied from the search trial."""
        _, profile = _copy_profile(trial, CONFIRM_OF, row)
        seeds = train_seeds(
            spec, int(trial.user_attrs[REPEAT_START]), int(trial.user_attrs[N_SEEDS])
        )
        if self._train(spec, config, str(profile["checkpointing_chosen"]), seeds, row):
            row.update(status="ok", reason="", feasible=True)

    def _measure(
        self, spec: StudySpec, config: Any, mode: str, row: dict[str, Any], keep: bool
    ) -> None:
        seeds = train_seeds(spec, 0, spec.repeats)
        if not self._train(spec, config, mode, seeds, row, keep=keep):
            return None
        t = time.perf_counter()
        auto = spec.checkpointing == (AUTO,)
        if auto:  # profile the policy auto chose, under its own name
            spec = dataclasses.replace(spec, checkpointing=(mode,))
        records = {r["checkpointing"]: r for r in self.evaluator.profile(spec, config)}
        row["profile_s"] = time.perf_counter() - t
        for m, rec in records.items():
            for col in _PER_MODE:
                if col in rec:
                    row[f"{col}__{m}"] = rec[col]
        chosen = records.get(mode, {})
        row.update({k: v for k, v in chosen.items() if k not in RUN_KEYS or k == "status"})
        row.update(checkpointing=AUTO if auto else mode, checkpointing_chosen=mode)
        status = str(chosen.get("status", "ok"))
        if status == "oom":
            return _infeasible(row, status, f"profile: {chosen.get('reason', '')}")
        if status != "ok":
            raise TrialError(row, "ProfileError", f"profile: {chosen.get('reason', status)}", "")
        row.update(status="ok", reason="", feasible=True)
        return None

    def _reuse(self, trial: optuna.Trial, key: str, row: dict[str, Any]) -> bool:
        """For a trial that holds no claim (enqueued, or a repeat the sampler had to propose):
        copy the result of a finished trial of the same config and role, or claim it, waiting
        while another live trial trains it."""
        study, role = trial.study, row["role"]
        claim = key if role == "search" else f"{key}|{role}"
        while True:
            if self._copy_finished(study, trial.number, key, row):
                return True
            if self.claims.take(claim, trial._trial_id):
                if self._copy_finished(study, trial.number, key, row):
                    self.claims.release(claim)  # its owner finished and released meanwhile
                    return True
                return False
            time.sleep(self.poll_s)
            self.liveness.fail_dead(study)

    def _copy_finished(
        self, study: optuna.Study, number: int, key: str, row: dict[str, Any]
    ) -> bool:
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.number != number and _same(t, key, row["role"])
        ]
        if not done:
            return False
        first = min(done, key=lambda t: t.number)
        source = row_of(first)
        original = source.get("reused_from", first.number)
        row.update({k: v for k, v in source.items() if k not in _OWN_KEYS})
        row.update(reused_from=original, trial_s=0.0)
        _LOG.info("trial %d: same config as trial %d, result reused", number, original)
        return True

    def _values(self, row: dict[str, Any], study: optuna.Study) -> list[float]:
        """Objective values. An infeasible trial measured nothing: its values are finite
        stand-ins on the scale of the measured ones, so plots stay readable (0 for a maximised
        column, the memory estimate or the largest value measured so far for a minimised one)
        and its violated constraint keeps it off the front. A feasible trial that did not
        measure an objective is a crash (:class:`TrialError`)."""
        values = []
        for name, direction in self.spec.objectives:
            v: Any = row.get(name)
            if not finite(v):
                if row.get("feasible"):
                    raise TrialError(
                        row, "ObjectiveMissing", f"objective {name} was not measured ({v!r})", ""
                    )
                est = row.get("est_peak_mem_train_bytes")
                if direction == "maximize":
                    v = 0.0
                elif name.endswith("_mem_train_bytes") and finite(est):
                    v = est
                else:
                    v = _largest(study, name)
            values.append(float(v))
        usable: Any = row.get("memory_usable_bytes")
        total: Any = row.get("est_total_train_bytes")
        over = (total - usable) / usable if finite(usable) and finite(total) else 0.0
        row["constraints"] = [float(over), 0.0 if row.get("feasible") else 1.0]
        return values


def _copy_profile(
    trial: optuna.Trial, attr: str, row: dict[str, Any]
) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]]:
    """The trial a promotion or confirmation builds on (number in user attribute ``attr``),
    and its row; copies its memory and speed profile into ``row`` (``profile_from``: the
    trial that measured it)."""
    storage = trial.study._storage
    source = storage.get_trial(
        storage.get_trial_id_from_study_id_trial_number(
            trial.study._study_id, int(trial.user_attrs[attr])
        )
    )
    profile = row_of(source)
    row.update({k: v for k, v in profile.items() if k not in _NOT_PROFILE})
    row["profile_from"] = profile.get("profile_from", source.number)
    return source, profile


def _infeasible(row: dict[str, Any], status: str, reason: str) -> None:
    row.update(status=status, reason=reason, feasible=False)
    _LOG.info("trial %s infeasible: %s", row.get("trial_number"), reason)


def _same(trial: optuna.trial.FrozenTrial, key: str, role: str) -> bool:
    return trial.user_attrs.get(CONFIG_KEY) == key and role_of(trial) == role


def _largest(study: optuna.Study, name: str) -> float:
    """The largest value of ``name`` any COMPLETE trial measured; 0 if none did."""
    seen: list[Any] = [
        row_of(t).get(name) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return max((float(v) for v in seen if finite(v)), default=0.0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
