"""Seed statistics: which differences between configs and options are larger than seed noise.

A study trains each config with one or more seeds (``runs.parquet``: one row per training
run). This module turns runs into per-config means with 95% Student-t intervals, estimates the
seed-to-seed noise from configs trained more than once, and compares the options of each
searched field by *paired* differences: two configs that differ only in that field form a
pair, so the other fields' effects cancel. Where a field has fewer than two such pairs, the
option groups are compared unpaired (Welch). Everything here reads records, never models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from unetbench.seeds import COUNTED, counted_runs, seed_means

__all__ = [
    "CONFIDENCE",
    "config_accuracy",
    "mean_interval",
    "option_differences",
    "option_levels",
    "run_status",
    "seed_noise",
]

#: Coverage of every interval in the report.
CONFIDENCE = 0.95


def _t_quantile(dof: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, dof))


def mean_interval(values: Iterable[float]) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the finite values; the interval is NaN below two values."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = _t_quantile(n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def config_accuracy(
    runs: pd.DataFrame,
    metrics: Sequence[str],
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """One row per ``config_key``: ``n_seeds``, ``seeds``, ``run_status`` and, per metric,
    the seed mean of :func:`unetbench.seeds.seed_means`, the std and the 95% CI.

    Only counted runs (:func:`unetbench.seeds.counted_runs`: ok or diverged, never capped)
    enter the means: a capped run measures how busy the machine was, not the config.
    ``run_status`` counts every run by status, so a diverged run's Dice 0 is told from a
    real 0 and a capped run is seen, not silently dropped. ``bounds`` clips a metric's
    interval to the values it can take (a Dice interval never reaches above 1 because one
    seed collapsed).
    """
    means = seed_means(runs, metrics).set_index("config_key").to_dict("index")
    ok = counted_runs(runs)
    rows = []
    for key, group in runs.groupby("config_key", sort=False, dropna=False):
        counted = ok[ok["config_key"].eq(key)] if key == key else ok.iloc[0:0]
        row: dict[str, object] = {
            "config_key": key,
            "n_seeds": len(counted),
            "seeds": means[key]["seeds"] if key in means else "",
            "run_status": run_status(group),
        }
        for m in metrics:
            values = pd.to_numeric(counted[m], errors="coerce")
            mean = float(means[key][m]) if key in means else math.nan
            _, low, high, n = mean_interval(values)
            if math.isnan(mean) or n != len(values):  # a run without the metric: no interval
                low = high = math.nan
            row[m] = mean
            row[f"{m}_std"] = float(values.std(ddof=1)) if n > 1 else math.nan
            if bounds and m in bounds and n > 1:
                low, high = max(low, bounds[m][0]), min(high, bounds[m][1])
            row[f"{m}_ci95_low"], row[f"{m}_ci95_high"] = low, high
        rows.append(row)
    columns = ["config_key", "n_seeds", "seeds", "run_status"]
    columns += [f"{m}{s}" for m in metrics for s in ("", "_std", "_ci95_low", "_ci95_high")]
    return pd.DataFrame(rows, columns=columns)


def run_status(runs: pd.DataFrame) -> str:
    """``"2 ok, 1 diverged, 1 capped (not counted)"``: a config's runs by status."""
    status = runs["status"].fillna("ok").astype(str) if "status" in runs.columns else None
    if status is None:
        status = pd.Series("ok", index=runs.index)
    if "capped" in runs.columns:
        status = status.where(~runs["capped"].fillna(False).astype(bool), "capped")
    counts = status.value_counts(sort=False)
    parts = [
        f"{n} {s}" + ("" if s in COUNTED else " (not counted)")
        for s, n in sorted(counts.items(), key=lambda kv: (kv[0] not in COUNTED, kv[0]))
    ]
    return ", ".join(parts)


def seed_noise(runs: pd.DataFrame, metric: str) -> dict[str, float]:
    """Pooled seed-to-seed standard deviation of ``metric`` over configs with several
    counted runs (:func:`unetbench.seeds.counted_runs`).

    Returns ``std`` (NaN without any repeated config), ``configs`` (how many were repeated)
    and ``dof`` (degrees of freedom of the pooled estimate).
    """
    ok = counted_runs(runs)
    squares, dof, configs = 0.0, 0, 0
    for _, group in ok.groupby("config_key", sort=False):
        values = pd.to_numeric(group[metric], errors="coerce").dropna()
        if len(values) > 1:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
            configs += 1
    std = math.sqrt(squares / dof) if dof else math.nan
    return {"std": std, "configs": float(configs), "dof": float(dof)}


def option_levels(
    configs: pd.DataFrame,
    fields: Sequence[str],
    objective: str,
    order: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Per option of each field: how many configs, their mean ``objective`` and its 95% CI.

    Options come in ``order`` (the study's order of each field's choices) where given.
    """
    rows = []
    for field in [f for f in fields if f in configs.columns and objective in configs.columns]:
        values = configs[field].map(lambda v: None if v is None or v != v else str(v))
        groups = dict(list(configs.groupby(values, sort=False)))
        known = [str(o) for o in (order or {}).get(field, []) if str(o) in groups]
        for value in known + [v for v in groups if v not in known]:
            group = groups[value]
            mean, low, high, n = mean_interval(pd.to_numeric(group[objective], errors="coerce"))
            rows.append(
                {
                    "field": field,
                    "value": value,
                    "n_configs": n,
                    objective: mean,
                    f"{objective}_ci95_low": low,
                    f"{objective}_ci95_high": high,
                }
            )
    columns = ["field", "value", "n_configs", objective]
    columns += [f"{objective}_ci95_low", f"{objective}_ci95_high"]
    return pd.DataFrame(rows, columns=columns)


def option_differences(
    configs: pd.DataFrame,
    fields: Sequence[str],
    objective: str,
    order: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Difference in ``objective`` between each option and its field's first (reference) option.

    ``configs`` holds one row per config with the searched fields and ``objective``.
    ``order`` gives each field's options in the study's order (the first is the reference);
    missing, the order of appearance. Columns: ``field``, ``option``, ``reference``,
    ``design`` (``paired`` or ``unpaired``), ``n`` (pairs, or the smaller group),
    ``diff`` (mean option - reference), ``diff_ci95_low``, ``diff_ci95_high`` and
    ``distinguishable`` (the interval excludes 0), ``note``. A field that cannot be
    compared (not in the records, or fewer than two of its options with a value of
    ``objective``) gets one row with ``design`` ``"not analysed"`` and the reason in
    ``note``, so no searched field drops out of the report without a word.
    """
    present = [f for f in fields if f in configs.columns]
    if objective not in configs.columns:  # nothing measured it (every trial crashed...)
        configs = configs.assign(**{objective: math.nan})
    data = configs.copy()
    for field in present:
        data[field] = data[field].map(lambda v: None if v is None or v != v else str(v))
    data[objective] = pd.to_numeric(data[objective], errors="coerce")
    data = data[data[objective].notna()]
    rows = []
    for field in fields:
        if field not in present:
            rows.append(_not_analysed(field, objective, "the records have no such column"))
            continue
        known = [str(o) for o in (order or {}).get(field, [])]
        seen = [v for v in dict.fromkeys(data[field]) if v is not None]
        options = [o for o in known or seen if (data[field] == o).any()]
        options += [o for o in seen if o not in options]
        if len(options) < 2:
            rows.append(_not_analysed(field, objective, _why_not(field, objective, options, known)))
            continue
        others = [f for f in present if f != field]
        for option in options[1:]:
            rows.append(_difference(data, field, options[0], option, others, objective))
    columns = ["field", "option", "reference", "design", "n", "diff"]
    columns += ["diff_ci95_low", "diff_ci95_high", "distinguishable", "note"]
    return pd.DataFrame(rows, columns=columns)


def _why_not(field: str, objective: str, options: list[str], known: list[str]) -> str:
    if not options:
        return f"no config has a value of {objective}"
    missing = [o for o in known if o not in options]
    rest = f"; {field} = {' or '.join(missing)}: no value" if missing else ""
    return f"only configs with {field} = {options[0]} have a value of {objective}{rest}"


def _not_analysed(field: str, objective: str, note: str) -> dict[str, object]:
    return {
        "field": field,
        "option": None,
        "reference": None,
        "design": "not analysed",
        "n": 0,
        "diff": math.nan,
        "diff_ci95_low": math.nan,
        "diff_ci95_high": math.nan,
        "distinguishable": False,
        "note": note,
    }


def _difference(
    data: pd.DataFrame, field: str, ref: str, option: str, others: list[str], objective: str
) -> dict[str, object]:
    a = data[data[field] == ref]
    b = data[data[field] == option]
    row: dict[str, object] = {"field": field, "option": option, "reference": ref}
    pairs = (
        a.groupby(others)[objective].mean().rename("a").to_frame()
        .join(b.groupby(others)[objective].mean().rename("b"), how="inner")
        if others
        else pd.DataFrame({"a": [a[objective].mean()], "b": [b[objective].mean()]})
    )  # fmt: skip
    paired = len(pairs) >= 2
    if paired:
        mean, low, high, n = mean_interval(pairs["b"] - pairs["a"])
    else:
        mean, low, high, n = _welch(a[objective].to_numpy(float), b[objective].to_numpy(float))
    row.update(
        design="paired" if paired else "unpaired",
        n=n,
        diff=mean,
        diff_ci95_low=low,
        diff_ci95_high=high,
        distinguishable=bool(low > 0 or high < 0),  # False when the interval is NaN
        note="",
    )
    return row


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, int]:
    """Mean of b minus mean of a with a Welch 95% interval (NaN below two values each)."""
    n = int(min(a.size, b.size))
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    diff = float(b.mean() - a.mean())
    if n < 2:
        return diff, math.nan, math.nan, n
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, n
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = _t_quantile(dof) * se
    return diff, diff - half, diff + half, n
