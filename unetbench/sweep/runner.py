"""``run_sweep``: run (or resume) a study until it has ``n_trials`` COMPLETE trials.

One worker runs in this process; more are spawned as processes that share the storage
(journal file or SQLite on one machine, a server database or the gRPC proxy across machines),
each on its own device when ``devices`` are given (the loop is in
:mod:`unetbench.sweep.worker`). The parent shows a progress bar and exports
``trials.parquet`` whenever a trial finishes. On SIGINT or SIGTERM (to the parent alone, as a
scheduler sends it, or to the whole process group, as Ctrl-C does) the parent passes the signal
on to its workers, which fail their running trials with the signal as the reason; it saves
what finished and raises :class:`~unetbench.sweep.worker.Interrupted`. A storage that stays
unreachable for longer than the grace period ends every worker and then the parent, with
:class:`~unetbench.sweep.retry.StorageUnreachable`; running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from unetbench._errors import ConfigError, UsageError
from unetbench.device_names import parse_devices
from unetbench.sweep.claims import ConfigClaims
from unetbench.sweep.confirm import pareto_ranked, seed_means
from unetbench.sweep.describe import record_description, stored_description
from unetbench.sweep.evaluator import Evaluator, TorchEvaluator, check_evaluator
from unetbench.sweep.export import export_results
from unetbench.sweep.liveness import Liveness
from unetbench.sweep.record import role_of, row_of
from unetbench.sweep.retry import RetryingStorage, StorageUnreachable
from unetbench.sweep.sampling import search_plan
from unetbench.sweep.spec import StudySpec, load_study_spec
from unetbench.sweep.storage import StudyStorage, open_storage
from unetbench.sweep.worker import (
    EXIT_INTERRUPTED,
    EXIT_STORAGE_LOST,
    Interrupted,
    RepeatedError,
    WorkerArgs,
    cpu_threads,
    interrupts_raise,
    run_worker,
    torch_threads,
    worker_process_main,
)

__all__ = ["SweepResult", "run_sweep"]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Where a sweep's results are and how many trials it holds."""

    study_name: str
    storage: str  # give this to optuna-dashboard
    trials_path: Path
    n_complete: int  # COMPLETE search trials
    n_confirm: int  # COMPLETE confirmation trials
    n_feasible: int
    n_failed: int
    n_crashed: int  # failed by an exception while measuring (a bug or a broken set-up)
    best: dict[
        str, Any
    ]  # the best config's search trial row, run metrics as seed means ({} if none)


def run_sweep(
    spec: StudySpec | str | Path,
    n_trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    results_dir: str | Path = "results",
    evaluator: Evaluator | None = None,
    show_progress: bool = True,
    *,
    devices: str | Sequence[str] | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    connect_timeout: float | None = None,
    artifacts: str | Path | None = None,
) -> SweepResult:
    """Run or resume ``spec`` until ``n_trials`` (default ``spec.n_trials``) trials are COMPLETE.

    Args:
        spec: a :class:`StudySpec` or the path of a study TOML file.
        n_trials: total COMPLETE trials wanted (not additional ones).
        workers: worker processes on this machine; default one per device, else 1.
        storage: an Optuna storage URL, ``grpc://HOST:PORT`` or journal file (see
            :mod:`unetbench.sweep.storage`); default ``sqlite:///<results_dir>/<study>/study.db``.
        results_dir: parent of the study's directory, where ``trials.parquet`` is written.
        evaluator: what measures a config; default :class:`TorchEvaluator` (train + profile).
        show_progress: show a tqdm bar with trials done and the best value so far.
        devices: one device per worker (``"cuda:0,cuda:1"``, ``"all"`` or a list); worker i
            trains on ``devices[i % len(devices)]`` instead of the spec's device, recorded per
            trial as ``device``.
        heartbeat_interval: seconds between heartbeats of a running trial (shared storages;
            default the spec's ``[storage] heartbeat_interval``, else 60).
        grace_period: seconds of silence after which a trial's worker is taken for dead, and
            how long a storage outage is waited out (default the spec's
            ``[storage] grace_period``, else 180).
        connect_timeout: seconds to wait for a storage server when opening (default the
            spec's ``[storage] connect_timeout``, else 5).
        artifacts: folder of the runs' trained states, for a study with rungs (default the
            spec's ``[storage] artifacts``, else ``<results_dir>/<study>/artifacts``); every
            machine of a study should reach the same folder.

    Raises:
        StorageUnreachable: the storage stayed unreachable for longer than the grace period.
        Interrupted: SIGINT or SIGTERM; running trials are failed and finished ones saved.
    """
    if not isinstance(spec, StudySpec):
        spec = load_study_spec(spec)
    n = spec.n_trials if n_trials is None else n_trials
    device_list = _devices(spec, devices, check=evaluator is None)
    workers = len(device_list) if workers is None and devices is not None else (workers or 1)
    if n < 1 or workers < 1:
        raise UsageError(f"n_trials and workers must be >= 1, got n_trials={n}, workers={workers}")
    evaluator = TorchEvaluator() if evaluator is None else evaluator
    check_evaluator(evaluator)
    plan = search_plan(spec, n)
    n = plan.n_trials
    data = evaluator.load_data(spec)  # data mistakes end the sweep before anything is stored
    study_dir = Path(results_dir) / spec.name
    artifacts = str(artifacts or spec.artifacts or study_dir / "artifacts")
    store = open_storage(
        storage,
        study_dir,
        heartbeat_interval,
        grace_period,
        spec.connect_timeout if connect_timeout is None else connect_timeout,
        defaults=(spec.heartbeat_interval, spec.grace_period),
    )
    study = _create_or_check(spec, store)
    record_description(study, spec, study_dir)
    Liveness(store).fail_dead(study)
    trials_path = study_dir / "trials.parquet"
    searched = tuple(spec.search)
    bar = _Progress(spec, n, show_progress)
    try:
        with interrupts_raise():
            if workers == 1:
                bar.update(study)
                with torch_threads(cpu_threads(spec, 1)), _stops_on(RepeatedError):
                    run_worker(
                        spec,
                        store,
                        n,
                        evaluator,
                        on_trial_end=lambda s: _after(s, bar, study_dir, searched),
                        device=device_list[0],
                        plan=plan,
                        data=data,
                        artifacts=artifacts,
                    )
            else:
                args = WorkerArgs(
                    spec=spec,
                    storage_url=storage,
                    study_dir=str(study_dir),
                    n_trials=n,
                    evaluator=evaluator,
                    workers=workers,
                    log_level=logging.getLogger().getEffectiveLevel(),
                    threads=cpu_threads(spec, workers),
                    heartbeat_interval=store.heartbeat_interval if store.shared else None,
                    grace_period=store.grace_period if store.shared else None,
                    connect_timeout=connect_timeout or spec.connect_timeout,
                    plan=plan,
                    artifacts=artifacts,
                )
                _run_processes(args, device_list, study, bar, study_dir)
    except KeyboardInterrupt:
        _LOG.warning("interrupted: finished trials are saved in %s", trials_path)
        _save(study, store, study_dir, searched)
        raise
    finally:
        bar.close()
    claims = ConfigClaims(store.storage, spec.name)
    claims.drop_stale(running=bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))))
    export_results(study, study_dir, searched)
    return _result(spec, store, study, trials_path)


@contextlib.contextmanager
def _stops_on(kind: type[Exception]) -> Iterator[None]:
    """A worker that stops with ``kind`` says why in one line; the sweep ends normally
    (what finished is exported, and the result counts the crashed trials)."""
    try:
        yield
    except kind as exc:
        _LOG.error("%s", exc)


def _save(
    study: optuna.Study, store: StudyStorage, study_dir: Path, searched: tuple[str, ...]
) -> None:
    """After an interrupt, with a short patience for the storage: drop the claims the
    interrupted trials left (a signal can land between taking a claim and noting it) and
    export what finished."""
    if isinstance(store.storage, RetryingStorage):
        store.storage.patience = min(store.storage.patience, 5.0)
    try:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ConfigClaims(store.storage, study.study_name).drop_stale(bool(running))
        export_results(study, study_dir, searched)
    except StorageUnreachable as exc:
        _LOG.warning("trials.parquet not updated: %s", exc)


def _devices(spec: StudySpec, devices: str | Sequence[str] | None, check: bool) -> list[str]:
    """The workers' devices; each is checked to exist here when torch measures (``check``)."""
    if devices is None:
        if check:  # a CUDA study on a machine without CUDA ends before any trial exists
            from unetbench.devices import resolve_device

            resolve_device(spec.device)
        return [spec.device]
    if not check:  # a stand-in evaluator: the names need only be spelled right
        return parse_devices(devices)
    from unetbench.devices import resolve_devices

    return resolve_devices(devices)


def _create_or_check(spec: StudySpec, store: StudyStorage) -> optuna.Study:
    """Create the study, or check that the stored one was made from the same spec."""
    study = optuna.create_study(
        storage=store.storage,
        study_name=spec.name,
        directions=spec.directions,
        load_if_exists=True,
    )
    described = stored_description(study)
    # Studies made before the description only kept the spec's hash.
    stored = described.fingerprint if described else study.user_attrs.get("unetbench_spec_hash")
    if stored is not None and stored != spec.fingerprint():
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise ConfigError(
                f"{spec.source}: study {spec.name!r} in {store.url} was run with a different "
                "spec (search, training, objectives...); rename the study or use another "
                "--results-dir"
            )
        # Nothing was measured under the old spec (its trials failed): take the new one.
        _LOG.warning(
            "study %r has no complete trial; its spec is replaced by %s", spec.name, spec.source
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is "experimental"
        study.set_metric_names(spec.objective_names)
    return study


def _run_processes(
    args: WorkerArgs,
    devices: list[str],
    study: optuna.Study,
    bar: _Progress,
    study_dir: Path,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=worker_process_main,
            args=(dataclasses.replace(args, seed_offset=i, device=devices[i % len(devices)]),),
            name=f"unetbench-sweep-{i}",
        )
        for i in range(args.workers)
    ]
    for p in procs:
        p.start()
    seen = -1
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            with contextlib.suppress(StorageUnreachable):  # the workers say when to give up
                finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                if finished != seen:
                    seen = finished
                    _after(study, bar, study_dir, tuple(args.spec.search))
    except KeyboardInterrupt as exc:
        _stop(procs, getattr(exc, "signum", signal.SIGINT))
        raise
    for p in procs:
        p.join()
    codes = [p.exitcode for p in procs]
    if EXIT_STORAGE_LOST in codes:
        raise StorageUnreachable(
            f"the storage was unreachable for longer than the grace period; "
            f"{codes.count(EXIT_STORAGE_LOST)} of {len(procs)} workers stopped; run the same "
            "command again to resume"
        )
    interrupted = [c - EXIT_INTERRUPTED for c in codes if c and c > EXIT_INTERRUPTED]
    if interrupted:
        raise Interrupted(interrupted[0])
    bad = [c for c in codes if c]
    if bad:
        _LOG.warning("%d worker process(es) exited with codes %s", len(bad), bad)


def _stop(procs: Sequence[multiprocessing.process.BaseProcess], signum: int) -> None:
    """The signal the parent got to every worker (they fail their running trials with its
    name; those that got it already ignore it), then wait for them."""
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signum)
    deadline = time.monotonic() + 15.0
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _after(study: optuna.Study, bar: _Progress, study_dir: Path, searched: tuple[str, ...]) -> None:
    bar.update(study)
    export_results(study, study_dir, searched)


class _Progress:
    """tqdm bar: COMPLETE trials of n_trials plus the confirmations, infeasible count and the
    best feasible value."""

    def __init__(self, spec: StudySpec, n: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.spec, self.name = spec, spec.objective_names[0]
        total = n + (min(spec.confirm_top, n) if spec.confirm_repeats > spec.repeats else 0)
        self.bar = tqdm(total=total, desc=spec.name, unit="trial", disable=not enabled)

    def update(self, study: optuna.Study) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = _best(self.spec, done)
        infeasible = sum(not row_of(t).get("feasible", False) for t in done)
        shown = f"{best[self.name]:.4g}" if best else "-"
        self.bar.total = max(self.bar.total, len(done))  # confirmation may run longer
        self.bar.set_postfix_str(f"best {self.name}={shown}, infeasible={infeasible}")
        self.bar.n = len(done)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _best(spec: StudySpec, trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Row of the best config: first of :func:`~unetbench.sweep.confirm.pareto_ranked` (the
    front, best first objective first), run metrics as seed means over every seed of the
    config (confirmation included); {} if no config is feasible."""
    ranked = pareto_ranked(spec, trials)
    if not ranked:
        return {}
    row = row_of(ranked[0])
    mean = seed_means(trials, spec.top_rung).get(row.get("config_key"), {})
    return {**row, **{k: v for k, v in mean.items() if k != "config_key"}}


def _result(spec: StudySpec, store: StudyStorage, study: optuna.Study, path: Path) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = _best(spec, done)
    return SweepResult(
        study_name=spec.name,
        storage=store.url,
        trials_path=path,
        n_complete=sum(role_of(t) == "search" for t in done),
        n_confirm=sum(role_of(t) == "confirm" for t in done),
        n_feasible=sum(bool(row_of(t).get("feasible")) for t in done),
        n_failed=sum(
            t.state == TrialState.FAIL and row_of(t).get("status") != "surplus" for t in trials
        ),
        n_crashed=sum(t.state == TrialState.FAIL and "error_type" in row_of(t) for t in trials),
        best=best,
    )
