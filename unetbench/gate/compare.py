"""Compare CURRENT profile records against a BASELINE: exact counts, timings within tolerance.

Rows are matched on a key (config fields + input shape + batch size + checkpointing for profile
records, the benchmark name for pytest-benchmark runs, ``config_key`` + ``role`` for a sweep's
``trials.parquet`` and ``config_key`` + ``train_seed`` for its ``runs.parquet``), plus the
device type and the precision: a CPU row is never compared with a CUDA row, nor an fp32 row
with a bf16 one. Deterministic metrics (parameter count, MACs/FLOPs, fake-tensor memory
estimates) must be equal; any change fails, because it means the architecture changed and the
baseline has to be updated on purpose. Measured metrics (times, throughputs, measured memory,
ratios) fail only when worse by more than their tolerance, and times only when neither row was
timed under load (:func:`unetbench.profiler.load.under_load`). Settings (:data:`SETTINGS`: the
memory budget, thread counts, backend flags...) describe how a row was measured: they are never
a regression, and are reported when they differ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from unetbench._errors import UsageError
from unetbench.gate import _sweep
from unetbench.gate._match import (
    default_key,
    keyed,
    matching_form,
    norm,
    short_labels,
    unmatched_notes,
)
from unetbench.profiler.load import under_load
from unetbench.report.render import render_table

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXACT_METRICS",
    "SETTINGS",
    "ComparisonResult",
    "compare_records",
    "default_key",
    "metric_columns",
]

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.10
#: Metrics that do not depend on the machine: compared exactly unless given a tolerance.
EXACT_METRICS = ("params", "fwd_macs", "fwd_flops", "train_flops", "est_peak_mem_train_bytes")
_MEASURED_SUFFIXES = ("_s", "_bytes", "_ratio")
#: Columns that say how a row was measured, not what was measured: inputs (memory budget and
#: headroom, batch size, training steps, seeds), the threads and CPUs it had, and the software
#: and backend it ran with. Never compared as metrics; reported when they differ.
SETTINGS = (
    "memory_budget_bytes",
    "memory_headroom_bytes",
    "memory_usable_bytes",
    "budget_bytes",
    "headroom_bytes",
    "usable_bytes",
    "batch_size",
    "train_steps",
    "n_seeds",
    "torch_threads",
    "cpus_usable",
    "device_name",
    "torch_version",
    "mem_method",
    "cudnn_benchmark",
    "cudnn_deterministic",
    "tf32_matmul",
    "tf32_cudnn",
)
# Spreads, identifiers, and how long a sweep spent on a trial's steps (its bookkeeping).
_NOT_METRICS = (
    "train_step_iqr_s",
    "infer_iqr_s",
    "timestamp",
    "trial_number",
    "trial_s",
    "estimate_s",
    "profile_s",
)
_FAILING = {"changed", "worse", "missing", "missing row", "status"}
SETTING, UNDER_LOAD = "setting", "under load"
_NOT_SHOWN = {"same", "ok", SETTING, UNDER_LOAD}  # summarised in the notes instead
_JUDGED = {"same", "ok", "better", "worse"}  # what a time under load is instead


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Columns compared by default: the exact metrics (with a sweep's per-mode copies such as
    ``train_flops__blocks``, and every estimate ``est_*``), then measured ones by their unit
    suffix (``_s``, ``_per_s``, ``_bytes``) or as ratios (``_ratio`` anywhere in the name, e.g.
    ``train_step_ratio_vs_none``); settings (:data:`SETTINGS`), spreads (IQR), identifiers and
    a sweep's bookkeeping durations are skipped."""
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c not in SETTINGS]
    exact = [c for c in EXACT_METRICS if c in numeric]
    exact += [c for c in numeric if c not in exact and _is_exact(c)]  # per-mode copies, est_*
    measured = [
        c
        for c in numeric
        if c not in exact
        and _base(c) not in _NOT_METRICS
        and "." not in c
        and (_base(c).endswith(_MEASURED_SUFFIXES) or "_ratio" in c)
    ]
    return exact + measured


def _base(metric: str) -> str:
    """``train_flops__blocks`` -> ``train_flops``: a sweep's per-checkpointing-mode copy."""
    return metric.split("__", 1)[0]


def _is_exact(metric: str) -> bool:
    """Deterministic: an exact metric, its per-mode copy, or another estimate (``est_*``)."""
    return _base(metric) in EXACT_METRICS or _base(metric).startswith("est_")


def _is_timing(metric: str) -> bool:
    """A time, a throughput or a ratio of times: what load on the machine changes."""
    base = _base(metric)
    return base.endswith("_s") or ("_ratio" in base and ("step" in base or "time" in base))


@dataclass(frozen=True)
class ComparisonResult:
    """Outcome of :func:`compare_records`.

    ``table`` has one row per (matched row, metric) plus rows for unmatched records, with
    columns ``row``, ``metric``, ``baseline``, ``current``, ``change_pct``, ``tolerance``,
    ``status`` (same, ok, better, worse, changed, missing, new, missing row, new row, status,
    "under load": a time of a row timed under load on either side, not judged; "setting": a
    setting that differs; "only in baseline", "only in current": a sweep's config the other
    sweep did not train) and ``regression``. ``notes`` summarise settings that differ and rows
    timed under load, say which sweep trials were left out, and explain unmatched rows whose
    config the other side has on another device or precision.
    """

    table: pd.DataFrame
    key: tuple[str, ...]
    n_matched: int
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["regression"]].reset_index(drop=True)

    @property
    def passed(self) -> bool:
        return not bool(self.table["regression"].any())

    def changes(self) -> pd.DataFrame:
        """Rows worth showing: everything except unchanged and within-tolerance metrics,
        settings and times under load (both summarised in :attr:`notes`)."""
        return self.table[~self.table["status"].isin(_NOT_SHOWN)].reset_index(drop=True)

    @property
    def under_load(self) -> pd.DataFrame:
        """Times not judged because a side was timed under load."""
        return self.table[self.table["status"] == UNDER_LOAD].reset_index(drop=True)

    def format(self, *, all_rows: bool = False) -> str:
        """A text table of the changes (or of every comparison) and a one-line verdict."""
        shown = self.table if all_rows else self.changes()
        lines = []
        if len(shown):
            cells = [
                [
                    str(r["row"]),
                    str(r["metric"]),
                    _fmt(r["baseline"]),
                    _fmt(r["current"]),
                    _pct(r["change_pct"]),
                    _tol(r["tolerance"]),
                    str(r["status"]) + (" (REGRESSION)" if r["regression"] else ""),
                ]
                for r in shown.to_dict("records")
            ]
            head = ["row", "metric", "baseline", "current", "change", "tolerance", "status"]
            lines.append(render_table(pd.DataFrame(cells, columns=head), style="text"))
        lines += self.notes
        n_reg = int(self.table["regression"].sum())
        verdict = "FAIL" if n_reg else "PASS"
        loaded = self.under_load["row"].nunique()
        lines.append(
            f"{verdict}: {self.n_matched} rows matched on {_key_text(self.key)}; "
            f"{n_reg} regression(s), {len(self.changes()) - n_reg} other change(s)"
            + (f"; {loaded} row(s) timed under load, times not judged" if loaded else "")
        )
        return "\n".join(lines)


def _key_text(key: Sequence[str]) -> str:
    return ", ".join(key) if len(key) <= 3 else f"{len(key)} key columns ({key[0]} … {key[-1]})"


def _fmt(value: object) -> str:
    if isinstance(value, str):
        return value
    number = _num(value)
    if math.isnan(number):
        return "—"
    if number.is_integer() and abs(number) >= 1000:
        return f"{int(number):,}"
    return f"{number:.6g}"


def _pct(value: object) -> str:
    number = _num(value)
    if math.isnan(number):
        return ""
    return f"{number:+.1e}%" if 0 < abs(number) < 0.005 else f"{number:+.2f}%"


def _tol(value: object) -> str:
    number = _num(value)
    return "" if math.isnan(number) else ("exact" if number == 0 else f"{number * 100:g}%")


def _judge(metric: str, b: float, c: float, tol: float) -> tuple[str, float]:
    if math.isnan(b) and math.isnan(c):
        return "", math.nan
    if math.isnan(b):
        return "new", math.nan
    if math.isnan(c):
        return "missing", math.nan
    change = (c - b) / abs(b) * 100 if b != 0 else (0.0 if c == b else math.copysign(math.inf, c))
    if c == b:
        return "same", change
    if tol == 0:
        return "changed", change
    worse = -change if metric.endswith("_per_s") else change  # throughputs: higher is better
    if worse > tol * 100:
        return "worse", change
    return ("better" if -worse > tol * 100 else "ok"), change


def compare_records(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    tolerances: Mapping[str, float] | None = None,
    *,
    default_tolerance: float = DEFAULT_TOLERANCE,
    key: Sequence[str] | None = None,
    metrics: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
) -> ComparisonResult:
    """Compare two record tables; see the module docstring for the rules.

    Args:
        tolerances: relative tolerance per metric (0.2 = 20%); overrides the default and may
            loosen an exact metric on purpose.
        default_tolerance: tolerance of measured metrics not named in ``tolerances``.
        key: columns that identify a row (default: :func:`default_key`).
        metrics: metrics to compare (default: :func:`metric_columns` of the baseline).
        ignore: metrics to leave out.
    """
    tolerances = dict(tolerances or {})
    for name, tol in [("default", default_tolerance), *tolerances.items()]:
        if not (isinstance(tol, int | float) and tol >= 0 and math.isfinite(tol)):
            raise UsageError(f"tolerance for {name} must be a number >= 0, but got {tol!r}")
    given = key is not None
    key = list(key) if key is not None else default_key(baseline, current)
    kind = _sweep.sweep_kind(baseline)
    sweep = kind is not None and kind == _sweep.sweep_kind(current)
    notes: list[str] = []
    if sweep and not given:
        assert kind is not None
        baseline, left_b = _sweep.comparable_rows(baseline, kind, "baseline")
        current, left_c = _sweep.comparable_rows(current, kind, "current")
        notes += left_b + left_c
    baseline, current = matching_form(baseline, key), matching_form(current, key)
    base, cur = keyed(baseline, key, "baseline"), keyed(current, key, "current")
    chosen = list(metrics) if metrics is not None else metric_columns(baseline)
    unknown = [m for m in tolerances if m not in chosen and m not in base.columns]
    if unknown:
        raise UsageError(f"tolerance given for unknown metric(s) {unknown}; metrics: {chosen}")
    chosen += [m for m in tolerances if m not in chosen]  # a tolerance asks for a comparison
    chosen = [m for m in chosen if m not in set(ignore)]
    settings = [c for c in SETTINGS if c not in key and (c in base.columns or c in cur.columns)]
    short = short_labels(pd.concat([baseline[key], current[key]]), key)
    rows: list[dict[str, object]] = []
    both = [k for k in base.index if k in cur.index]
    for label in both:
        b_row, c_row = base.loc[label], cur.loc[label]
        if "status" in base.columns and "status" in cur.columns:
            b_st, c_st = str(b_row["status"]), str(c_row["status"])
            if b_st != c_st and b_st == "ok":
                rows.append(_row(label, "status", b_st, c_st, math.nan, math.nan, "status"))
        for metric in chosen:
            exact = _is_exact(metric)
            tol = float(tolerances.get(metric, 0.0 if exact else default_tolerance))
            b = _num(b_row.get(metric))
            c = _num(c_row.get(metric)) if metric in cur.columns else math.nan
            status, change = _judge(metric, b, c, tol)
            if status in _JUDGED and _is_timing(metric) and _loaded(metric, b_row, c_row):
                status = UNDER_LOAD
            if status:
                rows.append(_row(label, metric, b, c, change, tol, status))
        for name in settings:
            b_set, c_set = b_row.get(name), c_row.get(name)
            if norm(b_set) != norm(c_set):
                rows.append(_row(label, name, b_set, c_set, math.nan, math.nan, SETTING))
    missing = base.index.difference(cur.index, sort=False)
    new = cur.index.difference(base.index, sort=False)
    gone, added = ("only in baseline", "only in current") if sweep else ("missing row", "new row")
    for label in missing:
        rows.append(_row(label, "(row)", math.nan, math.nan, math.nan, math.nan, gone))
    for label in new:
        rows.append(_row(label, "(row)", math.nan, math.nan, math.nan, math.nan, added))
    table = pd.DataFrame(
        rows, columns=["row", "metric", "baseline", "current", "change_pct", "tolerance", "status"]
    )
    table["row"] = table["row"].map(lambda k: short.get(k, k))
    table["regression"] = table["status"].isin(_FAILING)
    notes += _summaries(table, base, cur, both, short)
    if sweep and (len(missing) or len(new)):
        notes.append(
            f"{len(missing)} config(s) only in baseline, {len(new)} only in current: configs "
            "the other sweep did not train or confirm (sampling), not regressions"
        )
    notes += unmatched_notes(
        baseline[base.index.isin(missing)], current[cur.index.isin(new)], baseline, current, key
    )
    for note in notes:
        log.info("%s", note)
    log.debug("compared %d matched rows on %s", len(both), key)
    return ComparisonResult(table=table, key=tuple(key), n_matched=len(both), notes=tuple(notes))


def _summaries(
    table: pd.DataFrame,
    base: pd.DataFrame,
    cur: pd.DataFrame,
    both: Sequence[str],
    short: Mapping[str, str],
) -> list[str]:
    """One line per setting that differs, and one for the rows timed under load."""
    lines = []
    differ = table[table["status"] == SETTING]
    for name, group in differ.groupby("metric", sort=False):
        first = group.iloc[0]
        lines.append(
            f"setting {name} differs in {len(group)} of {len(both)} matched row(s), e.g. "
            f"{first['row']}: baseline {_fmt_setting(first['baseline'])}, current "
            f"{_fmt_setting(first['current'])} (a setting, not a measurement: not judged)"
        )
    loaded = [k for k in both if _notes(base.loc[k]) or _notes(cur.loc[k])]
    if loaded:
        sides = [
            f"{side} {sum(bool(_notes(df.loc[k])) for k in loaded)}"
            for side, df in (("baseline", base), ("current", cur))
        ]
        k = loaded[0]
        example = (_notes(cur.loc[k]) or _notes(base.loc[k]))[0]
        lines.append(
            f"{len(loaded)} of {len(both)} matched row(s) timed under load ({', '.join(sides)}): "
            f"their times are not judged, e.g. {short.get(k, k)}: {example}"
        )
    return lines


def _notes(row: Any) -> list[str]:
    """The row's timing notes that flag load: ``timing_note`` and per-mode copies."""
    return [
        str(row[c])
        for c in row.index
        if str(c).startswith("timing_note") and under_load({"timing_note": row[c]})
    ]


def _loaded(metric: str, *rows: pd.Series) -> bool:
    """Whether a side timed ``metric`` under load: the row's note, or for a sweep's per-mode
    copy (``train_step_s__none``) that mode's note (``timing_note__none``) too."""
    _, sep, mode = metric.partition("__")
    notes = ["timing_note", f"timing_note__{mode}"] if sep else ["timing_note"]
    return any(under_load({"timing_note": row.get(n)}) for row in rows for n in notes)


def _fmt_setting(value: object) -> str:
    text = norm(value)
    return text if text else "absent"


def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _row(
    label: str, metric: str, b: object, c: object, change: float, tol: float, status: str
) -> dict[str, object]:
    return {
        "row": label,
        "metric": metric,
        "baseline": b,
        "current": c,
        "change_pct": change,
        "tolerance": tol,
        "status": status,
    }
