"""Compare CURRENT profile records against a BASELINE: exact counts, timings within tolerance.

Rows are matched on a key (config fields + input shape + batch size + checkpointing for profile
records, the benchmark name for pytest-benchmark runs), plus the device type and the precision:
a CPU row is never compared with a CUDA row, nor an fp32 row with a bf16 one. Deterministic
metrics (parameter count, MACs/FLOPs, fake-tensor memory estimate) must be equal; any change
fails, because it means the architecture changed and the baseline has to be updated on purpose.
Measured metrics (times, throughputs, measured memory, ratios) fail only when worse by more than
their tolerance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unetbench._errors import UsageError
from unetbench.config import UNetConfig
from unetbench.report.render import render_table

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXACT_METRICS",
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
_NOT_METRICS = ("train_step_iqr_s", "infer_iqr_s", "timestamp", "trial_number", "batch_size")
_FAILING = {"changed", "worse", "missing", "missing row", "status"}
DEVICE, PRECISION = "device", "precision"
_SETTING = (DEVICE, PRECISION)  # key columns that say where a row ran, not what it measured


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Columns compared by default: the exact metrics, then measured ones by their unit suffix
    (``_s``, ``_per_s``, ``_bytes``) or as ratios (``_ratio`` anywhere in the name, e.g.
    ``train_step_ratio_vs_none``); spreads (IQR) and identifiers are skipped."""
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    exact = [c for c in EXACT_METRICS if c in numeric]
    measured = [
        c
        for c in numeric
        if c not in exact
        and c not in _NOT_METRICS
        and "." not in c
        and (c.endswith(_MEASURED_SUFFIXES) or "_ratio" in c)
    ]
    return exact + measured


def default_key(baseline: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """``benchmark`` for benchmark runs, else config fields + input_shape + batch_size +
    checkpointing, as far as both files have them; then ``device`` if both files have it and
    ``precision`` if either has it (a file without it holds fp32 rows)."""
    both = set(baseline.columns) & set(current.columns)
    if "benchmark" in both:
        key = ["benchmark"]
    else:
        names = [*UNetConfig.field_names(), "input_shape", "batch_size", "checkpointing"]
        key = [c for c in names if c in both]
    if not key:
        raise UsageError(
            "cannot match rows: the files share no key column (config fields, input_shape, "
            "batch_size, checkpointing or benchmark); pass key=[...] / --key"
        )
    if DEVICE in both:
        key.append(DEVICE)
    if PRECISION in set(baseline.columns) | set(current.columns):
        key.append(PRECISION)
    return key


def _device_type(value: object) -> str:
    """``cuda:1`` -> ``cuda``: rows on any GPU of one kind are comparable, CPU and GPU are not."""
    return _norm(value).strip().lower().split(":", 1)[0]


_PRECISION_ALIASES = {
    "": "fp32",
    "float": "fp32",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
}


def _precision(value: object) -> str:
    """Precision name; empty (records older than the column) means fp32."""
    text = _norm(value).strip().lower().removeprefix("torch.")
    return _PRECISION_ALIASES.get(text, text)


def _matching_form(df: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """``df`` with device and precision in the form rows are matched on."""
    out = df.copy()
    if DEVICE in key and DEVICE in out.columns:
        out[DEVICE] = out[DEVICE].map(_device_type)
    if PRECISION in key:
        out[PRECISION] = out[PRECISION].map(_precision) if PRECISION in out.columns else "fp32"
    return out


def _norm(value: object) -> str:
    """Key text that is the same whether a value came from CSV, Parquet or JSON."""
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(_norm(v) for v in value) + "]"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    if text.startswith("(") and text.endswith(")"):  # "(0,)" / "(0, 1)" tuples as text
        inner = [p.strip() for p in text[1:-1].split(",") if p.strip()]
        return "[" + ", ".join(inner) + "]"
    return text


def _full_label(row: Iterable[object]) -> str:
    return " | ".join(_norm(v) for v in row)


def _short_labels(rows: pd.DataFrame, key: Sequence[str]) -> dict[str, str]:
    """Full key text -> label naming only the key columns that differ between rows."""
    texts = rows.map(_norm)
    if "benchmark" in texts.columns:  # drop the test file path all benchmarks share
        names = texts["benchmark"].tolist()
        files = {n.rsplit("::", 1)[0] if "::" in n else None for n in names}
        if len(files) == 1 and None not in files:
            texts["benchmark"] = [n.rsplit("::", 1)[1] for n in names]
    varying = [c for c in key if texts[c].nunique() > 1] or list(key)[:1]
    out = {}
    for full, row in zip(rows.itertuples(index=False), texts.itertuples(index=False), strict=True):
        values = dict(zip(key, row, strict=True))
        label = ", ".join(
            values[c] if len(varying) == 1 and c == "benchmark" else f"{c}={values[c]}"
            for c in varying
        )
        out[_full_label(full)] = label
    return out


def _keyed(df: pd.DataFrame, key: Sequence[str], name: str) -> pd.DataFrame:
    missing = [c for c in key if c not in df.columns]
    if missing:
        raise UsageError(f"{name} records lack key columns {missing}")
    out = df.copy()
    out.index = pd.Index([_full_label(row) for row in df[list(key)].itertuples(index=False)])
    dup = out.index[out.index.duplicated()]
    if len(dup):
        raise UsageError(
            f"{name} records have {len(dup)} rows with the same key, e.g. {dup[0]!r}; "
            f"add columns to the key (key columns now: {list(key)})"
        )
    return out


@dataclass(frozen=True)
class ComparisonResult:
    """Outcome of :func:`compare_records`.

    ``table`` has one row per (matched row, metric) plus rows for unmatched records, with
    columns ``row``, ``metric``, ``baseline``, ``current``, ``change_pct``, ``tolerance``,
    ``status`` (same, ok, better, worse, changed, missing, new, missing row, new row, status)
    and ``regression``. ``notes`` explain unmatched rows whose config the other side has on
    another device or precision.
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
        """Rows worth showing: everything except unchanged and within-tolerance metrics."""
        return self.table[~self.table["status"].isin(["same", "ok"])].reset_index(drop=True)

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
        lines.append(
            f"{verdict}: {self.n_matched} rows matched on {_key_text(self.key)}; "
            f"{n_reg} regression(s), {len(self.changes()) - n_reg} other change(s)"
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
    key = list(key) if key is not None else default_key(baseline, current)
    baseline, current = _matching_form(baseline, key), _matching_form(current, key)
    base, cur = _keyed(baseline, key, "baseline"), _keyed(current, key, "current")
    chosen = list(metrics) if metrics is not None else metric_columns(baseline)
    unknown = [m for m in tolerances if m not in chosen and m not in base.columns]
    if unknown:
        raise UsageError(f"tolerance given for unknown metric(s) {unknown}; metrics: {chosen}")
    chosen += [m for m in tolerances if m not in chosen]  # a tolerance asks for a comparison
    chosen = [m for m in chosen if m not in set(ignore)]
    short = _short_labels(pd.concat([baseline[key], current[key]]), key)
    rows: list[dict[str, object]] = []
    both = [k for k in base.index if k in cur.index]
    for label in both:
        b_row, c_row = base.loc[label], cur.loc[label]
        if "status" in base.columns and "status" in cur.columns:
            b_st, c_st = str(b_row["status"]), str(c_row["status"])
            if b_st != c_st and b_st == "ok":
                rows.append(_row(label, "status", b_st, c_st, math.nan, math.nan, "status"))
        for metric in chosen:
            exact = metric in EXACT_METRICS
            tol = float(tolerances.get(metric, 0.0 if exact else default_tolerance))
            b = _num(b_row.get(metric))
            c = _num(c_row.get(metric)) if metric in cur.columns else math.nan
            status, change = _judge(metric, b, c, tol)
            if status:
                rows.append(_row(label, metric, b, c, change, tol, status))
    missing = base.index.difference(cur.index, sort=False)
    new = cur.index.difference(base.index, sort=False)
    for label in missing:
        rows.append(_row(label, "(row)", math.nan, math.nan, math.nan, math.nan, "missing row"))
    for label in new:
        rows.append(_row(label, "(row)", math.nan, math.nan, math.nan, math.nan, "new row"))
    table = pd.DataFrame(
        rows, columns=["row", "metric", "baseline", "current", "change_pct", "tolerance", "status"]
    )
    table["row"] = table["row"].map(lambda k: short.get(k, k))
    table["regression"] = table["status"].isin(_FAILING)
    notes = _setting_notes(
        baseline[base.index.isin(missing)], current[cur.index.isin(new)], baseline, current, key
    )
    for note in notes:
        log.info("%s", note)
    log.debug("compared %d matched rows on %s", len(both), key)
    return ComparisonResult(table=table, key=tuple(key), n_matched=len(both), notes=tuple(notes))


def _setting_notes(
    missing: pd.DataFrame,
    new: pd.DataFrame,
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    key: Sequence[str],
) -> list[str]:
    """Why unmatched rows were not compared, where the other side has their config on another
    device or precision: one line per missing row, and per new row whose config no missing
    row's line already names."""
    setting = [c for c in key if c in _SETTING]
    identity = [c for c in key if c not in _SETTING]
    if not setting or not identity:
        return []
    labels = _short_labels(pd.concat([baseline[identity], current[identity]]), identity)

    def split(df: pd.DataFrame) -> list[tuple[str, str]]:
        n = len(identity)
        return [
            (_full_label(row[:n]), "/".join(_norm(v) for v in row[n:]))
            for row in df[[*identity, *setting]].itertuples(index=False)
        ]

    differ = " or ".join(setting) + (" differ" if len(setting) > 1 else " differs")

    def line(side: str, config: str, where: str, other: str, elsewhere: list[str]) -> str:
        return (
            f"{side} row {labels[config]} on {where} not compared: {other} has it only on "
            f"{', '.join(elsewhere)} ({differ})"
        )

    in_current: dict[str, list[str]] = {}
    for config, where in split(current):
        in_current.setdefault(config, []).append(where)
    in_baseline: dict[str, list[str]] = {}
    for config, where in split(baseline):
        in_baseline.setdefault(config, []).append(where)
    notes, named = [], set()
    for config, where in split(missing):
        if config in in_current:
            notes.append(line("baseline", config, where, "current", in_current[config]))
            named.add(config)
    for config, where in split(new):
        if config in in_baseline and config not in named:
            notes.append(line("current", config, where, "baseline", in_baseline[config]))
    return notes


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
