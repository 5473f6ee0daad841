"""Every attribute a sweep stores on a trial, and the format of a trial's record.

A trial is created with its identity in one storage call (:func:`new_trial`): its ``role``
(``"search"`` or ``"confirm"``), the ``worker`` that runs it, and for a confirmation the
config it retrains. While it runs, the sampler adds ``config_key`` (so other proposals see the
config taken) and the worker's heartbeat counter. When it ends, its whole row (one flat dict:
config, estimates, training means, profile, status) is written as **one** user attribute,
``record`` (:func:`write_record`), beside the constraints the samplers read; so a trial costs
a constant number of commits whatever its row holds. Readers take the row with
:func:`row_of`, which also reads studies stored before the record existed (one user
attribute per column).

This module is the one place that names trial attributes; nothing else writes them.
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from unetbench.values import jsonable

__all__ = [
    "CONFIG_KEY",
    "FAILURE",
    "HEARTBEAT",
    "LEADING",
    "PROMOTED_FROM",
    "REASON_PREFIX",
    "RECORD",
    "ROLE",
    "RUNG",
    "TOKEN",
    "WORKER",
    "beat",
    "fail_reason",
    "identity_of",
    "new_trial",
    "role_of",
    "row_of",
    "set_config_key",
    "set_worker",
    "worker_identity",
    "write_failure",
    "write_record",
]

# User attributes.
ROLE = "role"  # "search" | "promote" | "confirm"; trials of studies before roles: search
WORKER = "worker"  # {"host", "pid", "start", "boot"}: the process that runs the trial
CONFIG_KEY = "config_key"  # the trained config (and precision), set when it is chosen
RECORD = "record"  # the trial's row, one dict, written once when the trial ends
FAILURE = "failure"  # {"status", "reason"} of a trial being failed (dead worker, signal...)
CONFIRM_OF = "confirm_of"  # a confirmation: number of the search trial of its config
REPEAT_START = "repeat_start"  # a confirmation: its first repeat index
RUNG = "rung"  # successive halving: the rung a trial trains to (search trials: 0)
PROMOTED_FROM = "promoted_from"  # a promotion: number of the trial of the rung below
N_SEEDS = "n_seeds"  # a confirmation: how many seeds it trains
# System attributes.
TOKEN = "unetbench:token"  # unique per new trial: found again after a lost answer
HEARTBEAT = "unetbench:heartbeat"  # a counter the running trial's worker bumps every interval
CONSTRAINTS = "constraints"  # Optuna's list format, read by its constrained samplers
# Study system attribute ``<prefix><trial number>``: why a trial was failed after it ended.
REASON_PREFIX = "unetbench:fail_reason:"
#: Columns that lead a record and trials.parquet, in this order; the rest follow as the trial
#: recorded them (optuna-dashboard shows the start of a long attribute, so they come first).
LEADING = (
    "trial_number",
    "trial_state",
    "role",
    "feasible",
    "status",
    "reason",
    "reused_from",
    "config_key",
    "rung",
    "train_seed",
    "n_seeds",
    "steps_done",
    "train_steps",
    "val_dice",
    "val_iou",
    "train_loss",
    "peak_mem_train_bytes",
    "est_peak_mem_train_bytes",
    "train_voxels_per_s",
    "checkpointing",
)
# Row keys every trial stores as attributes of their own; the rest of a row is its record.
_IDENTITY = frozenset({ROLE, WORKER, CONFIG_KEY})


def role_of(trial: FrozenTrial | optuna.Trial) -> str:
    """``"search"`` or ``"confirm"``."""
    return str(trial.user_attrs.get(ROLE, "search"))


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot (Linux), to tell reused PIDs
    apart; None for no process or a zombie (killed, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def worker_identity() -> dict[str, Any]:
    """This process: host name, PID, its start time and the PID namespace it lives in.

    ``pidns`` (the inode of ``/proc/self/ns/pid``) tells two containers with one host name
    apart: a PID is only looked up in ``/proc`` by a reader in the same namespace.
    """
    pid = os.getpid()
    try:
        pidns: int | None = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = None
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _start_ticks(pid),
        "pidns": pidns,
        "boot": _boot_id(),
    }


def identity_of(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """A trial's worker identity from its user attributes, or None if it has none."""
    ident = attrs.get(WORKER)
    if isinstance(ident, dict) and "host" in ident and "pid" in ident:
        return ident
    if {"worker_host", "worker_pid", "worker_start"} <= attrs.keys():  # studies before 0.2
        return {
            "host": attrs["worker_host"],
            "pid": attrs["worker_pid"],
            "start": attrs["worker_start"],
        }
    return None


def new_trial(
    study: optuna.Study,
    role: str,
    attrs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    distributions: Mapping[str, BaseDistribution] | None = None,
) -> int:
    """Create a RUNNING trial with its role, worker and ``attrs`` in one storage call."""
    template = FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params=dict(params or {}),
        distributions=dict(distributions or {}),
        user_attrs={ROLE: role, WORKER: worker_identity(), **(attrs or {})},
        system_attrs={HEARTBEAT: 0, TOKEN: uuid.uuid4().hex},
        intermediate_values={},
        trial_id=-1,
    )
    return int(study._storage.create_new_trial(study._study_id, template_trial=template))


def row_of(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's row: its record, or for older studies its per-column user attributes,
    with its identity attributes; a FAIL trial's status and reason are those of its
    failure."""
    attrs = trial.user_attrs
    record = attrs.get(RECORD)
    row = dict(record) if isinstance(record, dict) else {}
    row.update({k: v for k, v in attrs.items() if k not in (RECORD, FAILURE) and k not in row})
    failure = attrs.get(FAILURE)
    if trial.state == TrialState.FAIL and isinstance(failure, dict):
        row.update(failure)
    return row


def write_record(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    row: Mapping[str, Any],
    constraints: list[float],
) -> None:
    """Store a finished trial's row (one call) and its constraints (one call)."""
    rest = [k for k in row if k not in LEADING and k != "runs"]  # the runs list is long: last
    keys = [k for k in LEADING if k in row] + rest + (["runs"] if "runs" in row else [])
    record = {k: jsonable(row[k]) for k in keys if k not in _IDENTITY}
    storage.set_trial_user_attr(trial_id, RECORD, record)
    storage.set_trial_system_attr(trial_id, CONSTRAINTS, [float(v) for v in constraints])


def write_failure(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    reason: str,
    status: str = "error",
    **detail: str,
) -> None:
    """Why a RUNNING trial is being failed (``error``, ``interrupted`` or ``surplus``), in an
    attribute of its own: a trial that completes meanwhile keeps its record, and shows this
    only if it ends FAIL. A crash adds ``error_type`` and ``traceback`` (``detail``)."""
    storage.set_trial_user_attr(trial_id, FAILURE, {"status": status, "reason": reason, **detail})


def set_config_key(storage: optuna.storages.BaseStorage, trial_id: int, key: str | None) -> None:
    """The config a trial trains, written as soon as it is chosen (others see it taken)."""
    storage.set_trial_user_attr(trial_id, CONFIG_KEY, key)


def set_worker(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """This process as the worker of a trial it did not create (one enqueued by a user)."""
    storage.set_trial_user_attr(trial_id, WORKER, worker_identity())


def beat(storage: optuna.storages.BaseStorage, trial_id: int, count: int) -> None:
    """One heartbeat of a running trial."""
    storage.set_trial_system_attr(trial_id, HEARTBEAT, count)


def fail_reason(study: optuna.Study) -> dict[int, str]:
    """Reasons stored with the study for trials failed after they could take attributes."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {
        int(k[len(REASON_PREFIX) :]): str(v)
        for k, v in attrs.items()
        if k.startswith(REASON_PREFIX)
    }
