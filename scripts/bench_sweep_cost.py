"""Measure whether a sweep's cost per trial stays flat as its study grows (PostgreSQL storage).

    .venv/bin/python scripts/bench_sweep_cost.py                      # 200 trials, 6 workers
    .venv/bin/python scripts/bench_sweep_cost.py --sampler tpe --out cost.json

The script starts a throwaway PostgreSQL server (``throwaway_server`` of tests/pg_server.py, as
the tests' fixture does: a fresh cluster in a temporary directory, on a free port of
127.0.0.1, fsync off; stopped and deleted at the end, even on error), creates one empty
database for the study, and runs ``unetbench.sweep.run_sweep`` on it with ``--workers`` worker
processes until ``--trials`` search trials are COMPLETE. Trials cost almost nothing to measure
(:class:`NearFreeEvaluator` trains and profiles nothing), so what is measured is the sweep
engine's own cost: sampling, claiming, bookkeeping and the storage round trips. The search
space has 1152 legal configs, every one of them feasible (no memory budget), so the sampler
never runs out of new configs and no trial is infeasible.

Figures:

* **trials/min, first and last window**: the COMPLETE search trials ranked by
  ``datetime_complete``; with a window of W trials (``--window``, default 50), the first
  window is ranks 1..W and its rate is ``(W - 1) / (t_W - t_1) * 60`` (W completions span
  W - 1 intervals); the last window is ranks N-W+1..N, likewise. ``ratio`` = last / first:
  1.0 means the cost per trial does not grow with the study, 0.5 that trials at the end took
  twice as long as at the start.
* **write transactions per trial**: the advance of PostgreSQL's transaction-ID counter over
  the sweep (``pg_current_xact_id()`` before and after ``run_sweep``). Read-only
  transactions get no transaction ID, so this counts the transactions that wrote, in any
  database of the cluster (only the study's is used). Each of the two readings assigns an ID
  itself, so the count is ``after - before - 1``. Divided by the number of trials in the
  study (every state).
* **all transactions per trial**: ``xact_commit + xact_rollback`` of the study's database in
  ``pg_stat_database`` (read-only ones included), divided by the same number. PostgreSQL 15
  keeps these counters in shared memory but each backend flushes its own pending counts only
  now and then (at most once a second while busy, ~10 s after going idle, and at exit;
  ``pg_stat_force_next_flush()`` acts only on the calling backend). So after the sweep the
  script terminates the study database's remaining (idle, pooled) connections, whose
  backends flush at exit, waits until they are gone, then reads the counters after
  ``pg_stat_clear_snapshot()``. The script's own queries run on the ``postgres`` database and
  are not counted; it reads the trials only after the counters.
* wall time of ``run_sweep``, trials by state, and the COMPLETE search trials (must equal
  ``--trials``).

A short table goes to stdout; ``--out PATH`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
# Worker processes are spawned: they unpickle the evaluator as bench_sweep_cost.NearFreeEvaluator,
# which they import from here (spawn hands them the parent's sys.path).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

if TYPE_CHECKING:
    from unetbench.config import UNetConfig
    from unetbench.sweep.spec import StudySpec

__all__ = [
    "NearFreeEvaluator",
    "SweepCost",
    "bench_spec",
    "measure_sweep_cost",
]

SAMPLERS = ("random", "tpe", "nsga2")
STUDY_NAME = "bench-sweep-cost"
DATABASE = "bench_sweep_cost"


class NearFreeEvaluator:
    """A stand-in for training and profiling that returns at once, the same for every call.

    Every config is feasible and trains ``spec.steps`` steps with status ok; the Dice is a
    hash of the config and seed, so samplers that learn see a fixed landscape.
    """

    def load_data(self, spec: StudySpec) -> Any:
        return None

    def estimate_memory(
        self, spec: StudySpec, config: UNetConfig, checkpointing: str
    ) -> dict[str, int]:
        peak = config.start_filts * 1_000_000 * (2 if checkpointing == "none" else 1)
        return {"est_peak_mem_train_bytes": peak, "est_total_train_bytes": peak + 1000}

    def choose_checkpointing(
        self, spec: StudySpec, config: UNetConfig, budget_bytes: int | None
    ) -> tuple[str, dict[str, int]]:
        return "none", self.estimate_memory(spec, config, "none")

    def train(
        self, spec: StudySpec, config: UNetConfig, data: Any, checkpointing: str, *, seed: int
    ) -> dict[str, Any]:
        key = json.dumps(config.to_dict(), sort_keys=True)
        dice = int(hashlib.sha256(f"{key}:{seed}".encode()).hexdigest()[:6], 16) % 1000 / 1000
        return {
            "val_dice": dice,
            "val_iou": dice / 2,
            "train_loss": 1 - dice,
            "steps_done": spec.steps,
            "train_s": 0.0,
            "status": "ok",
            "reason": "",
        }

    def profile(self, spec: StudySpec, config: UNetConfig) -> list[dict[str, Any]]:
        return [
            {
                "checkpointing": mode,
                "status": "ok",
                "reason": "",
                "peak_mem_train_bytes": self.estimate_memory(spec, config, mode)[
                    "est_peak_mem_train_bytes"
                ],
                "train_voxels_per_s": 1e6 / config.start_filts,
                "train_step_s": 0.01,
            }
            for mode in spec.checkpointing
        ]


def bench_spec(n_trials: int, sampler: str = "random") -> StudySpec:
    """The study: 1152 legal configs (6 up/merge pairs x 3 x 2 x 2 x 2 x 8), all feasible."""
    from unetbench.sweep.spec import StudySpec

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}; choose one of {SAMPLERS}")
    raw: dict[str, Any] = {
        "name": STUDY_NAME,
        "n_trials": n_trials,
        "seed": 3,
        "search": {
            "up_mode": [
                "transpose",
                "resizeconv_nearest",
                "resizeconv_linear",
                "resizeconv_nearest1",
                "resizeconv_linear1",
            ],
            "merge_mode": ["concat", "add"],  # add only with transpose: 6 legal pairs
            "normalization": ["batch", "instance", "none"],
            "attention": [False, True],
            "activation": ["relu", "silu"],
            "n_blocks": [2, 3],
            "start_filts": [4, 8, 12, 16, 24, 32, 48, 64],
        },
        "data": {"kind": "synthetic"},
        "train": {"patch_shape": [8, 32, 32], "batch_size": 1, "steps": 2},
        "profile": {"checkpointing": ["none", "blocks"]},
        "objectives": {"val_dice": "maximize", "peak_mem_train_bytes": "minimize"},
        "sampler": {"name": sampler},
    }
    return StudySpec.from_dict(raw, source="<bench_sweep_cost>")


def _pg_server() -> Any:
    """tests/pg_server.py, whose ``throwaway_server`` the tests' fixture uses as well."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        return importlib.import_module("pg_server")
    finally:
        sys.path.remove(str(ROOT / "tests"))


def _admin(server: Any) -> Any:
    """An autocommit superuser connection to the ``postgres`` database."""
    conn = server.connect()
    conn.autocommit = True
    return conn


def _scalar(conn: Any, query: str, params: Sequence[Any] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def _current_xid(conn: Any) -> int:
    """The transaction-ID counter; the call assigns one ID itself (autocommit: one each)."""
    return int(_scalar(conn, "SELECT pg_current_xact_id()::text"))


def _flush_and_read_xacts(conn: Any, database: str, timeout_s: float = 60.0) -> tuple[int, int]:
    """(xact_commit, xact_rollback) of ``database`` once every backend on it has exited.

    Backends flush their pending statistics when they exit; the sweep's idle pooled
    connections are terminated for that (the sweep is over and does not use them again).
    """
    others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    _scalar(conn, f"SELECT count(pg_terminate_backend(pid)) {others}", (database,))
    deadline = time.monotonic() + timeout_s
    while _scalar(conn, f"SELECT count(*) {others}", (database,)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"connections to {database} did not close within {timeout_s} s")
        time.sleep(0.1)
    _scalar(conn, "SELECT pg_stat_clear_snapshot()::text")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        )
        commit, rollback = cur.fetchone()
    return int(commit), int(rollback)


def _rate(times: Sequence[datetime]) -> float:
    """Completions per minute over a window: (len - 1) intervals between first and last."""
    span = (times[-1] - times[0]).total_seconds()
    return (len(times) - 1) / span * 60.0 if span > 0 else float("inf")


@dataclass(frozen=True)
class SweepCost:
    """The figures of one measurement (see the module docstring for their definitions)."""

    trials: int
    workers: int
    sampler: str
    window: int
    wall_s: float
    trials_per_min_first: float
    trials_per_min_last: float
    ratio_last_first: float
    trials_per_min_by_window: list[float]  # consecutive windows of ranks 1..W, W+1..2W, ...
    trials_in_study: int
    trials_by_state: dict[str, int]
    complete_search_trials: int
    write_xacts: int
    write_xacts_per_trial: float
    xact_commit: int
    xact_rollback: int
    all_xacts_per_trial: float
    postgres_version: str
    optuna_version: str
    python_version: str
    cpu_count: int | None
    unetbench_path: str  # the package measured (PYTHONPATH can point at another checkout)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measure_sweep_cost(
    trials: int = 200,
    workers: int = 6,
    sampler: str = "random",
    window: int = 50,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> SweepCost:
    """Run the benchmark study on a throwaway server and return its figures."""
    import optuna

    from unetbench.sweep import run_sweep

    # Spawned workers unpickle the evaluator by its module path: not __main__ (see top).
    evaluator = importlib.import_module("bench_sweep_cost").NearFreeEvaluator()
    if trials < 2 or workers < 1 or window < 2:
        raise ValueError("need trials >= 2, workers >= 1 and window >= 2")
    spec = bench_spec(trials, sampler)
    with (
        _pg_server().throwaway_server() as server,
        tempfile.TemporaryDirectory(prefix="unetbench-bench-") as results,
    ):
        admin = _admin(server)
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
            url = server.url(DATABASE)
            version = str(_scalar(admin, "SHOW server_version"))
            commit0, rollback0 = _flush_and_read_xacts(admin, DATABASE)
            xid0 = _current_xid(admin)
            t0 = time.perf_counter()
            run_sweep(
                spec,
                n_trials=trials,
                workers=workers,
                storage=url,
                results_dir=results,
                evaluator=evaluator,
                show_progress=False,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
            wall_s = time.perf_counter() - t0
            xid1 = _current_xid(admin)
            commit1, rollback1 = _flush_and_read_xacts(admin, DATABASE)
        finally:
            admin.close()
        study = optuna.load_study(study_name=STUDY_NAME, storage=url)
        all_trials = study.get_trials(deepcopy=False)
        storage = study._storage
        if hasattr(storage, "engine"):
            storage.engine.dispose()  # before the server stops
    states = Counter(t.state.name for t in all_trials)
    done = sorted(
        (
            t.datetime_complete
            for t in all_trials
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.user_attrs.get("role", "search") == "search"
            and t.datetime_complete is not None
        ),
    )
    w = min(window, len(done))
    first, last = _rate(done[:w]), _rate(done[-w:])
    n = len(all_trials)
    writes = xid1 - xid0 - 1  # the second reading's own ID is not the sweep's
    commits, rollbacks = commit1 - commit0, rollback1 - rollback0
    return SweepCost(
        trials=trials,
        workers=workers,
        sampler=sampler,
        window=w,
        wall_s=wall_s,
        trials_per_min_first=first,
        trials_per_min_last=last,
        ratio_last_first=last / first,
        trials_per_min_by_window=[
            _rate(done[i : i + w]) for i in range(0, len(done) - 1, w) if len(done[i : i + w]) > 1
        ],
        trials_in_study=n,
        trials_by_state=dict(sorted(states.items())),
        complete_search_trials=len(done),
        write_xacts=writes,
        write_xacts_per_trial=writes / n,
        xact_commit=commits,
        xact_rollback=rollbacks,
        all_xacts_per_trial=(commits + rollbacks) / n,
        postgres_version=version,
        optuna_version=optuna.__version__,
        python_version=platform.python_version(),
        cpu_count=os.cpu_count(),
        unetbench_path=str(Path(importlib.import_module("unetbench").__file__ or "").parent),
    )


def format_table(cost: SweepCost) -> str:
    w = cost.window
    windows = " ".join(f"{r:.0f}" for r in cost.trials_per_min_by_window)
    by_state = ", ".join(f"{k}={v}" for k, v in cost.trials_by_state.items())
    versions = f"{cost.postgres_version} / {cost.optuna_version} / {cost.cpu_count}"
    rows = [
        ("trials / workers / sampler", f"{cost.trials} / {cost.workers} / {cost.sampler}"),
        (f"trials/min, first {w} COMPLETE", f"{cost.trials_per_min_first:.1f}"),
        (f"trials/min, last {w} COMPLETE", f"{cost.trials_per_min_last:.1f}"),
        ("ratio last/first", f"{cost.ratio_last_first:.3f}"),
        (f"trials/min per window of {w}", windows),
        ("write transactions (xid advance)", f"{cost.write_xacts}"),
        ("write transactions / trial", f"{cost.write_xacts_per_trial:.1f}"),
        ("commits + rollbacks (pg_stat_database)", f"{cost.xact_commit} + {cost.xact_rollback}"),
        ("all transactions / trial", f"{cost.all_xacts_per_trial:.1f}"),
        ("sweep wall time", f"{cost.wall_s:.1f} s"),
        ("trials in study, by state", by_state),
        ("COMPLETE search trials", f"{cost.complete_search_trials}"),
        ("PostgreSQL / Optuna / CPUs", versions),
        ("unetbench measured", cost.unetbench_path),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=200, help="COMPLETE search trials")
    parser.add_argument("--workers", type=int, default=6, help="worker processes")
    parser.add_argument("--sampler", choices=SAMPLERS, default="random")
    parser.add_argument("--window", type=int, default=50, help="trials per rate window")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--heartbeat-interval", type=int, default=None)
    parser.add_argument("--grace-period", type=int, default=None)
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure this many times; prints medians"
    )
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    costs = []
    for i in range(args.rounds):
        cost = measure_sweep_cost(
            trials=args.trials,
            workers=args.workers,
            sampler=args.sampler,
            window=args.window,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
        )
        costs.append(cost)
        if args.rounds > 1:
            print(f"--- round {i + 1} of {args.rounds}")
        print(format_table(cost))
    if args.rounds > 1:
        print(format_summary(costs))
    if args.out is not None:
        data = costs[0].to_dict() if args.rounds == 1 else [c.to_dict() for c in costs]
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"written: {args.out}")
    bad = [c.complete_search_trials for c in costs if c.complete_search_trials != args.trials]
    if bad:
        print(f"ERROR: {bad} COMPLETE search trials, not {args.trials}")
    return 1 if bad else 0


def format_summary(costs: Sequence[SweepCost]) -> str:
    """Median and range over rounds of the ratios and transactions per trial."""

    def line(name: str, values: Sequence[float]) -> str:
        ordered = sorted(values)
        return (
            f"{name:<40}median {statistics.median(ordered):.3g}, "
            f"range {ordered[0]:.3g} to {ordered[-1]:.3g}"
        )

    second = [c.trials_per_min_last / c.trials_per_min_by_window[1] for c in costs]
    return "\n".join(
        [
            f"--- {len(costs)} rounds",
            line("ratio last/first window", [c.ratio_last_first for c in costs]),
            line("ratio last/second window", second),
            line("trials/min, last window", [c.trials_per_min_last for c in costs]),
            line("write transactions / trial", [c.write_xacts_per_trial for c in costs]),
            line("all transactions / trial", [c.all_xacts_per_trial for c in costs]),
            line("sweep wall time (s)", [c.wall_s for c in costs]),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
