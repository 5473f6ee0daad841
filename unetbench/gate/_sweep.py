"""A sweep's outputs as records to compare: ``trials.parquet`` and ``runs.parquet``.

A sweep writes (see :mod:`unetbench.sweep.export`) one row per trial to ``trials.parquet``
(a config is trained by one search trial and perhaps one confirmation trial, ``role``; a trial
that found its config already trained copies that result, ``reused_from``) and one row per
training run to ``runs.parquet`` (a trial times a seed, ``train_seed``). The column names are
the sweep's (:mod:`unetbench.sweep.record`); a test checks that they agree, so that this module
need not import the sweep (and Optuna).
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["RUNS", "TRIALS", "comparable_rows", "sweep_key", "sweep_kind"]

CONFIG_KEY = "config_key"
ROLE = "role"
TRAIN_SEED = "train_seed"
TRIAL_STATE = "trial_state"
TRIAL_NUMBER = "trial_number"
REUSED_FROM = "reused_from"

TRIALS, RUNS = "trials", "runs"


def sweep_kind(df: pd.DataFrame) -> str | None:
    """``"trials"`` for a sweep's trials table, ``"runs"`` for its runs table, else None."""
    cols = set(df.columns)
    if CONFIG_KEY not in cols or TRIAL_NUMBER not in cols:
        return None
    if TRIAL_STATE in cols:
        return TRIALS
    if TRAIN_SEED in cols:
        return RUNS
    return None


def sweep_key(kind: str) -> list[str]:
    """A trial is one config in one role; a run is one config trained with one seed."""
    return [CONFIG_KEY, ROLE] if kind == TRIALS else [CONFIG_KEY, TRAIN_SEED]


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value) != ""


def comparable_rows(df: pd.DataFrame, kind: str, side: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a sweep table that hold a config's own result, and a line per kind of
    row left out: trials that never got a config (killed before choosing one), trials
    that copied another trial's result, and trials of a config and role that another trial
    of it settled (a FAIL retried, a surplus confirmation): the COMPLETE one is kept, else the
    latest."""
    df = df.reset_index(drop=True)
    if kind != TRIALS:
        return df, []
    notes = []
    keep = df[df[CONFIG_KEY].map(_present)]
    if len(keep) < len(df):
        notes.append(f"{side}: {len(df) - len(keep)} trial(s) without a config not compared")
    if REUSED_FROM in keep.columns:
        copies = keep[REUSED_FROM].map(_present)
        if copies.any():
            notes.append(
                f"{side}: {int(copies.sum())} trial(s) that reused another trial's result "
                "not compared (the trial they copied is)"
            )
            keep = keep[~copies]
    rank = keep.assign(
        _complete=(keep[TRIAL_STATE] == "COMPLETE").astype(int),
    ).sort_values(["_complete", TRIAL_NUMBER])
    last = rank.drop_duplicates(subset=sweep_key(kind), keep="last")
    if len(last) < len(keep):
        notes.append(
            f"{side}: {len(keep) - len(last)} trial(s) of a config and role another trial "
            "settled not compared (the COMPLETE or latest one is)"
        )
    return keep.loc[sorted(last.index)], notes
