"""Which rows of two record tables are the same measurement: the key, and labels for rows.

Rows pair on a key (see :func:`default_key`) in a form that is the same whether a value came
from CSV, Parquet or JSON, with the device reduced to its type and the precision to its name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from unetbench._errors import UsageError
from unetbench.config import UNetConfig
from unetbench.gate import _sweep

__all__ = [
    "default_key",
    "full_label",
    "keyed",
    "matching_form",
    "norm",
    "short_labels",
    "unmatched_notes",
]

DEVICE, PRECISION = "device", "precision"
_SETTING = (DEVICE, PRECISION)  # key columns that say where a row ran, not what it measured


def default_key(baseline: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """``benchmark`` for benchmark runs, ``config_key`` + ``role`` for a sweep's trials,
    ``config_key`` + ``train_seed`` for its runs, else config fields + input_shape + batch_size
    + checkpointing, as far as both files have them; then ``device`` if both files have it and
    ``precision`` if either has it (a file without it holds fp32 rows)."""
    both = set(baseline.columns) & set(current.columns)
    kinds = (_sweep.sweep_kind(baseline), _sweep.sweep_kind(current))
    if kinds[0] != kinds[1] and None not in kinds:
        raise UsageError(
            f"cannot compare a sweep's {kinds[0]} table with its {kinds[1]} table; "
            "pass two trials.parquet or two runs.parquet files"
        )
    if kinds[0] is not None and kinds[0] == kinds[1]:
        key = _sweep.sweep_key(kinds[0])
    elif "benchmark" in both:
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
    return norm(value).strip().lower().split(":", 1)[0]


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
    text = norm(value).strip().lower().removeprefix("torch.")
    return _PRECISION_ALIASES.get(text, text)


def matching_form(df: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """``df`` with device and precision in the form rows are matched on."""
    out = df.copy()
    if DEVICE in key and DEVICE in out.columns:
        out[DEVICE] = out[DEVICE].map(_device_type)
    if PRECISION in key:
        out[PRECISION] = out[PRECISION].map(_precision) if PRECISION in out.columns else "fp32"
    return out


def norm(value: object) -> str:
    """Key text that is the same whether a value came from CSV, Parquet or JSON."""
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(norm(v) for v in value) + "]"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    if text.startswith("(") and text.endswith(")"):  # "(0,)" / "(0, 1)" tuples as text
        inner = [p.strip() for p in text[1:-1].split(",") if p.strip()]
        return "[" + ", ".join(inner) + "]"
    return text


def full_label(row: Iterable[object]) -> str:
    return " | ".join(norm(v) for v in row)


def short_labels(rows: pd.DataFrame, key: Sequence[str]) -> dict[str, str]:
    """Full key text -> label naming only the key columns that differ between rows."""
    texts = rows.map(norm)
    if _sweep.CONFIG_KEY in texts.columns:
        texts[_sweep.CONFIG_KEY] = _config_labels(texts[_sweep.CONFIG_KEY])
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
            values[c]
            if (len(varying) == 1 and c == "benchmark") or c == _sweep.CONFIG_KEY
            else f"{c}={values[c]}"
            for c in varying
        )
        out[full_label(full)] = label
    return out


def _config_labels(keys: pd.Series) -> list[str]:
    """A sweep's ``config_key`` JSON as the fields that differ between the configs, e.g.
    ``attention=true, up_mode=transpose`` (the whole key where it is not a JSON object)."""
    parsed = []
    for text in keys:
        try:
            fields = json.loads(text)
        except ValueError:
            return list(keys)
        if not isinstance(fields, dict):
            return list(keys)
        parsed.append({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})
    names = sorted({k for p in parsed for k in p})
    varying = [k for k in names if len({p.get(k) for p in parsed}) > 1] or names
    return [", ".join(f"{k}={p.get(k, '—')}" for k in varying) for p in parsed]


def keyed(df: pd.DataFrame, key: Sequence[str], name: str) -> pd.DataFrame:
    missing = [c for c in key if c not in df.columns]
    if missing:
        raise UsageError(f"{name} records lack key columns {missing}")
    out = df.copy()
    out.index = pd.Index([full_label(row) for row in df[list(key)].itertuples(index=False)])
    dup = out.index[out.index.duplicated()]
    if len(dup):
        raise UsageError(
            f"{name} records have {len(dup)} rows with the same key, e.g. {dup[0]!r}; "
            f"add columns to the key (key columns now: {list(key)})"
        )
    return out


def unmatched_notes(
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
    labels = short_labels(pd.concat([baseline[identity], current[identity]]), identity)

    def split(df: pd.DataFrame) -> list[tuple[str, str]]:
        n = len(identity)
        return [
            (full_label(row[:n]), "/".join(norm(v) for v in row[n:]))
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
