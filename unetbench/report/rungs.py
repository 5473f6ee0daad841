"""Successive-halving rungs in a report: each config's Dice at every rung it reached, and how
well the ranking at one rung predicts the ranking at the next.

A study with ``[train] steps = [40, 160, 640]`` trains every config at rung 0 (its search
trial) and trains the best on to later rungs (promotion trials, role ``promote``); the
confirmation round trains more seeds at the top rung (see :mod:`unetbench.sweep.rungs`).
Promotions are not further configs: :func:`rung_ladder` gives one row per (config, rung)
with the seed means of the runs at that rung, and :func:`with_rungs` adds them to the config
table as ``val_dice_rung<k>``, ``steps_rung<k>`` and ``top_rung``, the config's accuracy being
that of its highest rung.

:func:`rank_agreement` measures the evidence for successive halving: Kendall's tau
(:func:`scipy.stats.kendalltau`, tau-b) between the Dice of the configs that reached both of
two rungs, with a percentile bootstrap 95% interval (configs resampled with replacement,
:data:`RESAMPLES` resamples from :data:`SEED`; the resamples' tau-b by :func:`kendall_tau_b`,
scipy's formula for many resamples at once), for every pair of consecutive rungs and every
rung against the top one. Below :data:`MIN_CONFIGS` common configs tau is not computed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from unetbench.report.stats import CONFIDENCE, config_accuracy
from unetbench.report.tables import is_stopped, trial_states

__all__ = [
    "MIN_CONFIGS",
    "RESAMPLES",
    "SEED",
    "agreement_sentences",
    "bootstrap_tau",
    "kendall_tau_b",
    "rank_agreement",
    "rung_ladder",
    "rung_of",
    "study_rungs",
    "with_rungs",
]

#: Bootstrap resamples of the configs behind each tau interval.
RESAMPLES = 2000
#: Seed of every bootstrap (one generator per pair of rungs), so a report is reproducible.
SEED = 0
#: Fewest configs common to two rungs for which tau is computed.
MIN_CONFIGS = 3
#: The metric whose rankings are compared.
METRIC = "val_dice"
_RUNG_ROLES = ("search", "promote")


def study_rungs(spec: Mapping[str, object]) -> tuple[int, ...]:
    """The training steps of each rung, as the sweep stored them (``study.json``'s
    ``spec.rungs``); ``()`` for a study without rungs."""
    rungs = spec.get("rungs")
    if not isinstance(rungs, list | tuple) or len(rungs) < 2:
        return ()
    return tuple(int(s) for s in rungs)


def rung_of(frame: pd.DataFrame, top: int) -> pd.Series:
    """The rung each row (a trial or a run) trained at: its ``rung`` (0 where empty), and the
    top rung for confirmation trials, which train there."""
    if "rung" in frame.columns:
        rung = pd.to_numeric(frame["rung"], errors="coerce").fillna(0).astype(int)
    else:
        rung = pd.Series(0, index=frame.index, dtype=int)
    if "role" in frame.columns:
        rung = rung.where(frame["role"].astype(str).ne("confirm"), top)
    return rung


def _role(frame: pd.DataFrame) -> pd.Series:
    if "role" not in frame.columns:
        return pd.Series("search", index=frame.index, dtype=object)
    return frame["role"].fillna("search").astype(str)


def rung_ladder(
    trials: pd.DataFrame,
    runs: pd.DataFrame | None,
    rungs: Sequence[int],
    metrics: Sequence[str],
    configs: pd.DataFrame,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """One row per config and rung it finished: the rung's trial and the seed means of its runs.

    A config reached rung ``k`` when a search (``k = 0``) or promotion trial trained it there
    and completed (a promotion whose worker died does not count; its retry does). The runs of
    that trial, and at the top rung those of the config's completed confirmation trials, give
    ``n_seeds``, ``seeds``, ``run_status`` and each metric's mean, std and 95% interval
    (:func:`unetbench.report.stats.config_accuracy`). ``configs`` (one row per config) gives
    each config's ``trial_number``; ``rung_trial`` is the trial of the rung. Rows without a
    value of :data:`METRIC` are left out (a config found infeasible has no Dice at any rung).
    """
    top = len(rungs) - 1
    if trials.empty or "config_key" not in trials.columns:
        return _empty_ladder(metrics)
    role = _role(trials)
    done = trials[
        role.isin(_RUNG_ROLES)
        & trial_states(trials).eq("COMPLETE")
        & ~is_stopped(trials)
        & trials["config_key"].notna()
    ]
    if "reused_from" in done.columns:
        done = done[done["reused_from"].isna()]
    done = done.assign(rung=rung_of(done, top)).sort_values("trial_number")
    done = done.drop_duplicates(["config_key", "rung"])  # the first to finish, as the sweep
    confirmed = trials[role.eq("confirm") & trial_states(trials).eq("COMPLETE")]
    if runs is None or runs.empty or "config_key" not in runs.columns:
        runs = pd.concat([done, confirmed], ignore_index=True)  # each trial one seed of its own
    runs = runs.assign(rung=rung_of(runs, top))
    numbers = dict(zip(configs["config_key"], configs["trial_number"], strict=False))
    parts = []
    for k, steps in enumerate(rungs):
        at = done[done["rung"].eq(k)]
        trained = set(at["trial_number"]) | (set(confirmed["trial_number"]) if k == top else set())
        chosen = runs[runs["trial_number"].isin(trained) & runs["rung"].eq(k)]
        accuracy = config_accuracy(chosen, [m for m in metrics if m in chosen.columns], bounds)
        keep = ["config_key", "trial_number"]
        keep += [c for c in ("state_missing", "promoted_from") if c in at.columns]
        part = at[keep].rename(columns={"trial_number": "rung_trial"})
        part = part.merge(accuracy, on="config_key", how="left")
        part.insert(0, "trial_number", part["config_key"].map(numbers))
        part.insert(1, "rung", k)
        part.insert(2, "train_steps", steps)
        parts.append(part)
    ladder = pd.concat(parts, ignore_index=True)
    for m in dict.fromkeys([METRIC, *metrics]):  # a study in which nothing measured Dice
        if m not in ladder.columns:
            ladder[m] = math.nan
    ladder = ladder[pd.to_numeric(ladder[METRIC], errors="coerce").notna()]
    ladder = ladder[ladder["trial_number"].notna()]  # configs the config table knows
    reached = set(zip(ladder["config_key"], ladder["rung"], strict=True))
    pairs = zip(ladder["config_key"], ladder["rung"], strict=True)
    ladder["promoted"] = [(c, r + 1) in reached for c, r in pairs]
    ladder["trial_number"] = ladder["trial_number"].astype(int)
    return ladder.sort_values(["rung", "trial_number"]).reset_index(drop=True)


def _empty_ladder(metrics: Sequence[str]) -> pd.DataFrame:
    columns = ["trial_number", "rung", "train_steps", "config_key", "rung_trial", "n_seeds"]
    return pd.DataFrame(columns=[*columns, *metrics, "promoted"])


def with_rungs(
    configs: pd.DataFrame,
    ladder: pd.DataFrame,
    rungs: Sequence[int],
    metrics: Sequence[str],
    wide: Sequence[str] = (METRIC,),
) -> pd.DataFrame:
    """``configs`` with each config's accuracy (seed means of ``metrics``, intervals,
    ``n_seeds``, ``seeds``, ``run_status``) taken from its highest rung, ``steps_done``/
    ``train_steps`` of that rung, ``top_rung`` (0 for a config that trained only at rung 0,
    or not at all) and, for each rung, ``<metric>_rung<k>`` for the ``wide`` metrics and
    ``steps_rung<k>`` (empty where the config did not reach it).
    """
    out = configs.copy()
    top_of = ladder.groupby("config_key")["rung"].max()
    out["top_rung"] = out["config_key"].map(top_of).fillna(0).astype(int)
    highest = ladder.merge(top_of.rename("top").reset_index(), on="config_key")
    highest = highest[highest["rung"].eq(highest["top"])].set_index("config_key")
    trained = out["config_key"].isin(highest.index)
    taken = ["n_seeds", "seeds", "run_status"]
    taken += [f"{m}{s}" for m in metrics for s in ("", "_std", "_ci95_low", "_ci95_high")]
    for column in [c for c in taken if c in highest.columns]:
        values = out["config_key"].map(highest[column])
        out[column] = values.where(trained, out[column]) if column in out.columns else values
    steps = out["top_rung"].map(dict(enumerate(rungs)))
    for column in ("steps_done", "train_steps"):
        if column in out.columns:
            out[column] = out[column].where(~trained | out["top_rung"].eq(0), steps)
    by_rung = {k: ladder[ladder["rung"].eq(k)].set_index("config_key") for k in range(len(rungs))}
    for m in [m for m in dict.fromkeys(wide) if m in ladder.columns]:
        for k, part in by_rung.items():
            out[f"{m}_rung{k}"] = out["config_key"].map(part[m]).astype(float)
    for k, part in by_rung.items():
        out[f"steps_rung{k}"] = out["config_key"].map(part["train_steps"]).astype(float)
    return out


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``x`` against the same row of ``y`` (shape ``(B, n)``).

    tau-b = sum of sign(x_i - x_j) sign(y_i - y_j) over pairs, divided by the square root of
    the number of pairs untied in x times the number untied in y: what
    :func:`scipy.stats.kendalltau` computes for one row, here for many resamples at once.
    NaN where every value of a row is equal.
    """
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    sx = np.sign(x[:, :, None] - x[:, None, :]).astype(np.int8)
    sy = np.sign(y[:, :, None] - y[:, None, :]).astype(np.int8)
    concordance = (sx * sy).sum(axis=(1, 2), dtype=np.int64)
    untied = np.abs(sx).sum(axis=(1, 2), dtype=np.int64) * np.abs(sy).sum(
        axis=(1, 2), dtype=np.int64
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(untied > 0, concordance / np.sqrt(untied.astype(float)), np.nan)


def bootstrap_tau(
    x: np.ndarray, y: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float, int]:
    """Percentile bootstrap interval of Kendall's tau-b between paired ``x`` and ``y``.

    Configs (pairs) are drawn with replacement, ``resamples`` times from ``seed``. A resample
    in which every config has the same value on a rung has no tau and is left out; returns
    ``(low, high, defined resamples)``.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    draws = rng.integers(0, n, size=(resamples, n))
    batch = max(1, 2_000_000 // max(n * n, 1))  # a few MB of signs at a time
    taus = np.concatenate(
        [
            kendall_tau_b(x[draws[i : i + batch]], y[draws[i : i + batch]])
            for i in range(0, resamples, batch)
        ]
    )
    taus = taus[np.isfinite(taus)]
    if not len(taus):
        return math.nan, math.nan, 0
    alpha = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(taus, [alpha, 100 - alpha])
    return float(low), float(high), len(taus)


def rank_agreement(
    ladder: pd.DataFrame,
    rungs: Sequence[int],
    *,
    metric: str = METRIC,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """Kendall's tau of ``metric`` between rungs, over the configs that reached both.

    One row per pair of consecutive rungs (``comparison`` ``next``) and per rung below the
    one before the top against the top (``top``): ``rung_a``/``steps_a``, ``rung_b``/
    ``steps_b``, ``n_configs``, ``kendall_tau`` (tau-b, as :func:`scipy.stats.kendalltau`),
    ``p_value``, ``tau_ci95_low``/``_high`` (:func:`bootstrap_tau`), ``n_resamples`` and
    ``n_resamples_defined``, ``note`` (why tau is missing: fewer than :data:`MIN_CONFIGS`
    common configs, or every config equal on one rung).
    """
    top = len(rungs) - 1
    pairs = [(k, k + 1, "next") for k in range(top)]
    pairs += [(k, top, "top") for k in range(top - 1)]
    rows = []
    for a, b, comparison in pairs:
        va = ladder[ladder["rung"].eq(a)].set_index("config_key")[metric]
        vb = ladder[ladder["rung"].eq(b)].set_index("config_key")[metric]
        both = va.to_frame("a").join(vb.rename("b"), how="inner").dropna()
        x, y = both["a"].to_numpy(float), both["b"].to_numpy(float)
        n = len(both)
        row: dict[str, object] = {
            "comparison": comparison,
            "rung_a": a,
            "steps_a": rungs[a],
            "rung_b": b,
            "steps_b": rungs[b],
            "metric": metric,
            "n_configs": n,
            "kendall_tau": math.nan,
            "p_value": math.nan,
            "tau_ci95_low": math.nan,
            "tau_ci95_high": math.nan,
            "n_resamples": 0,
            "n_resamples_defined": 0,
            "note": "",
        }
        if n < MIN_CONFIGS:
            row["note"] = f"{n} common config{'s' * (n != 1)}: tau needs at least {MIN_CONFIGS}"
        else:
            from scipy.stats import kendalltau

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = kendalltau(x, y)
            if not math.isfinite(result.statistic):
                row["note"] = "every config has the same value on one rung: tau is undefined"
            else:
                low, high, defined = bootstrap_tau(x, y, resamples=resamples, seed=seed)
                row.update(
                    kendall_tau=float(result.statistic),
                    p_value=float(result.pvalue),
                    tau_ci95_low=low,
                    tau_ci95_high=high,
                    n_resamples=resamples,
                    n_resamples_defined=defined,
                )
        rows.append(row)
    return pd.DataFrame(rows)


def _number(value: float) -> str:
    return f"{value:.2f}".replace("-0.00", "0.00")


def agreement_sentences(agreement: pd.DataFrame) -> list[str]:
    """One sentence per row of :func:`rank_agreement`.

    "The ranking at 40 steps agreed with the ranking at 160 steps: tau = 0.62 [0.31, 0.85]
    over 18 configs" where the interval lies above 0; "did not clearly agree with" where it
    includes 0, "disagreed with" where it lies below; without tau, why not.
    """
    lines = []
    for r in agreement.to_dict("records"):
        a, b = f"{r['steps_a']} steps", f"{r['steps_b']} steps"
        n = int(r["n_configs"])
        if pd.isna(r["kendall_tau"]):
            lines.append(
                f"- The ranking at {a} and the ranking at {b}: tau cannot be computed "
                f"({r['note']})."
            )
            continue
        low, high = float(r["tau_ci95_low"]), float(r["tau_ci95_high"])
        verb = (
            "agreed with"
            if low > 0
            else "disagreed with"
            if high < 0
            else "did not clearly agree with"
        )
        lines.append(
            f"- The ranking at {a} {verb} the ranking at {b}: tau = "
            f"{_number(r['kendall_tau'])} [{_number(low)}, {_number(high)}] over {n} configs."
        )
    return lines
