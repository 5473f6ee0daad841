"""``unetbench sweep studies/X.toml``: run or resume a study (see docs/sweeps.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from unetbench._errors import UsageError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run or resume an Optuna study over U-Net configs",
        description=(
            "Run a study until it has n_trials COMPLETE trials; running it again resumes. "
            "Writes <results-dir>/<study>/trials.parquet and the Optuna storage. Exit codes: "
            "0 done, 1 a trial crashed (see the failures), 2 a mistake in the command or study, "
            "75 the storage stayed unreachable for longer than the grace period, 130/143 "
            "interrupted by SIGINT/SIGTERM."
        ),
    )
    p.add_argument("spec", type=Path, help="study spec, e.g. studies/quick.toml")
    p.add_argument("--trials", type=int, default=None, help="COMPLETE trials wanted in total")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on this machine (default: one per --devices entry, else 1)",
    )
    p.add_argument(
        "--devices",
        default=None,
        help="one device per worker, e.g. cuda:0,cuda:1 or all (every GPU here); "
        "default: the spec's [train] device for every worker",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: sqlite:///f.db, postgresql+psycopg2://USER@HOST/DB (password "
        "from ~/.pgpass), grpc://HOST:PORT (unetbench storage-server) or a journal file "
        "(PATH.journal, in an existing folder); env:NAME or file:PATH read the storage string "
        "from an environment variable or a file, to keep a password off the command line; "
        "default sqlite under <results-dir>/<study>/study.db",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=int,
        default=None,
        metavar="SECONDS",
        help="server databases and grpc://: seconds between heartbeats of a running trial "
        "(default: the study's [storage] heartbeat_interval, else 60)",
    )
    p.add_argument(
        "--grace-period",
        type=int,
        default=None,
        metavar="SECONDS",
        help="server databases and grpc://: seconds without a heartbeat after which a trial's "
        "worker is taken for dead and the trial failed and rerun elsewhere, and how long a "
        "storage outage is waited out before the sweep stops with exit code 75 "
        "(default: the study's [storage] grace_period, else 180)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for a database server or storage proxy to answer when the sweep "
        "starts (default: the study's [storage] connect_timeout, else 5)",
    )
    p.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        metavar="DIR",
        help="a study with rungs ([train] steps = [40, 160, 640]): folder of the runs' trained "
        "states, so a promoted config continues where it stopped; give every machine the same "
        "(shared) folder (default: the study's [storage] artifacts, else "
        "<results-dir>/<study>/artifacts)",
    )
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="default: results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from unetbench._versions import require_tested

    require_tested("optuna")  # before the sweep imports Optuna's internals
    import optuna
    from tqdm.contrib.logging import logging_redirect_tqdm

    from unetbench.report._units import format_cell
    from unetbench.sweep import load_study_spec, run_sweep
    from unetbench.sweep.storage import redact, storage_file

    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    spec = load_study_spec(args.spec)
    check_places(args.results_dir, spec.name, storage_file(args.storage))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        result = run_sweep(
            spec,
            n_trials=args.trials,
            workers=args.workers,
            storage=args.storage,
            results_dir=args.results_dir,
            show_progress=not args.no_progress,
            devices=args.devices,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            connect_timeout=args.connect_timeout,
            artifacts=args.artifacts,
        )
    confirmed = f" and {result.n_confirm} confirmation trials" if result.n_confirm else ""
    print(
        f"{result.study_name}: {result.n_complete} search trials{confirmed} complete "
        f"({result.n_feasible} feasible, {result.n_failed} failed runs)"
    )
    name = spec.objective_names[0]
    if result.best:
        best = format_cell(name, result.best.get(name))
        seeds = result.best.get("n_seeds") or 1
        where = f"trial {result.best.get('trial_number')}, mean of {int(seeds)} seed(s)"
        print(f"best {name}: {best} ({where})")
    print(f"trials: {result.trials_path}")
    print(f"dashboard: optuna-dashboard {redact(result.storage)}")
    if result.n_crashed:
        print(
            f"{result.n_crashed} trial(s) crashed with an error while measuring; their type, "
            f"message and traceback are in {result.trials_path} (columns reason, error_type, "
            f"traceback) and in the failures of `unetbench report {result.trials_path.parent}`",
            file=sys.stderr,
        )
        return 1
    return 0


def check_places(results_dir: Path, study: str, storage: Path | None) -> None:
    """Refuse, before anything is created, a ``--results-dir`` that cannot hold
    ``<results-dir>/<study>/`` and a journal or SQLite file whose folder is missing or not
    writable: one line naming the path. A missing results folder is created later; a missing
    storage folder is a mistake (a misspelt path would start a new study, not resume one)."""
    existing = results_dir / study
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise UsageError(f"--results-dir {results_dir}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"--results-dir {results_dir}: {existing} is a file, not a folder; give a folder "
            "(it is created if missing)"
        )
    if not _writable(existing):
        raise UsageError(
            f"--results-dir {results_dir}: no permission to write in {existing}; give a folder "
            "you can write to"
        )
    if storage is None:
        return
    folder = storage.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UsageError(
            f"--storage {storage}: the folder {folder} {what}; create it or fix the path (a "
            "storage file's folder is not created, so that a misspelt path cannot start a new "
            "study)"
        )
    if storage.is_dir():
        raise UsageError(f"--storage {storage} is a folder; name a file in it, e.g. study.journal")
    if not _writable(folder) or (storage.exists() and not os.access(storage, os.R_OK | os.W_OK)):
        where = storage if storage.exists() else folder
        raise UsageError(f"--storage {storage}: no permission to write {where}")


def _writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder``: tried (an unnamed temporary file, gone at
    once), since permission bits do not tell for root, read-only mounts or /sys."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
