"""``report.md``: the report's tables and plain-language findings as Markdown.

Numeric columns are shown in one unit per column (MiB, ms, GFLOP...), named in the header
(``peak_mem_train (MiB)``), so a header never names bytes over values in MiB. A mean with
its 95% interval is one cell: ``0.871 [0.853, 0.889]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from unetbench.report._units import format_cell, scale_for
from unetbench.report.render import cell, render_table
from unetbench.report.stats import CONFIDENCE
from unetbench.studyinfo import StudyInfo

__all__ = ["findings", "summarize", "write_markdown"]

_PCT = f"{CONFIDENCE:.0%}"
_TITLES = {
    "pareto": f"Pareto front (config means over seeds, {_PCT} intervals)",
    "factor_effects": "Which design choices matter",
    "checkpointing": "Checkpointing savings (vs. no checkpointing)",
    "failures": "Infeasible and failed trials by reason",
    "configs": "All configs",
}


def _with_interval(table: pd.DataFrame, metric: str) -> pd.Series:
    low, high = f"{metric}_ci95_low", f"{metric}_ci95_high"
    cells = []
    lows, highs = table.get(low, pd.Series(np.nan, table.index)), table.get(high)
    highs = pd.Series(np.nan, table.index) if highs is None else highs
    for mean, lo, hi in zip(table[metric], lows, highs, strict=True):
        text = cell(mean, 1.0)
        cells.append(text if pd.isna(lo) or pd.isna(hi) else f"{text} [{lo:.3g}, {hi:.3g}]")
    return pd.Series(cells, index=table.index)


def _config_view(table: pd.DataFrame, info: StudyInfo, fields: Sequence[str]) -> pd.DataFrame:
    columns = ["trial_number", *fields, "n_seeds"]
    columns += [o.column for o in info.objectives] + ["steps_done", "status", "ties"]
    view = table[[c for c in dict.fromkeys(columns) if c in table.columns]].copy()
    for o in info.objectives:
        if f"{o.column}_ci95_low" in table.columns and o.column in view.columns:
            view[o.column] = _with_interval(table, o.column)
            view = view.rename(columns={o.column: f"{o.column} [{_PCT} CI]"})
    if "ties" in view.columns:
        view = view.rename(columns={"ties": "Dice indistinct from trials"})
    return view


def _difference(row: pd.Series, column: str) -> str:
    divisor, unit = (
        scale_for(column, [abs(float(row["diff"]))]) if column.endswith("_bytes") else (1.0, "")
    )
    unit = f" {unit}" if unit else ""

    def num(v: float) -> str:
        return f"{v / divisor:+.3g}"

    text = f"{num(row['diff'])}{unit}"
    if pd.notna(row["diff_ci95_low"]):
        text += f" ({_PCT} CI {num(row['diff_ci95_low'])} to {num(row['diff_ci95_high'])})"
    return text


def findings(differences: pd.DataFrame, noise: dict[str, dict[str, float]]) -> list[str]:
    """One plain sentence per (objective, field, option) and one per seed-noise estimate."""
    lines = []
    for metric, est in noise.items():
        if est["configs"]:
            lines.append(
                f"- Seed noise of {metric}: pooled standard deviation {est['std']:.3g} over "
                f"{int(est['configs'])} configs trained with several seeds "
                f"({int(est['dof'])} degrees of freedom)."
            )
        else:
            lines.append(f"- Seed noise of {metric}: unknown (no config trained with two seeds).")
    for _, r in differences.iterrows():
        design = f"{int(r['n'])} {'pairs' if r['design'] == 'paired' else 'configs per option'}"
        if pd.isna(r["diff_ci95_low"]):
            verdict = "too few configs to tell"
        elif r["distinguishable"]:
            verdict = "**distinguishable from seed noise**"
        else:
            verdict = "not distinguishable from seed noise"
        lines.append(
            f"- {r['field']} = {r['option']} instead of {r['reference']}: {r['objective']} "
            f"{_difference(r, str(r['objective']))}, {design}: {verdict}."
        )
    return lines


def summarize(tables: dict[str, pd.DataFrame], info: StudyInfo) -> str:
    """A few lines for the terminal: counts, training budget and the best trade-offs."""
    trials, configs, front = tables["trials"], tables["configs"], tables["pareto"]
    roles = trials["role"].value_counts().to_dict() if "role" in trials.columns else {}
    role_text = ", ".join(f"{n} {r}" for r, n in roles.items())
    lines = [
        f"study {info.name}: {len(configs)} configs in {len(trials)} trials"
        + (f" ({role_text})" if role_text else "")
        + f"; {len(front)} on the Pareto front of "
        + ", ".join(f"{o.column} ({o.direction})" for o in info.objectives),
    ]
    if "steps_done" in configs.columns and configs["steps_done"].notna().any():
        steps = configs["steps_done"].dropna().astype(int)
        same = steps.nunique() == 1
        lines.append(
            f"training: {steps.iloc[0]} steps per run for every config"
            if same
            else f"training: {steps.min()}-{steps.max()} steps per run (not all equal)"
        )
    if info.memory_budget_bytes is not None:
        lines.append(f"memory budget: {format_cell('budget_bytes', info.memory_budget_bytes)}")
    fail = tables["failures"]
    if len(fail):
        counts = fail.groupby("kind")["count"].sum().items()
        lines.append("not on the front: " + ", ".join(f"{int(n)} {k}" for k, n in counts))
    for row in front.head(5).to_dict("records"):
        values = ", ".join(
            f"{o.column}={format_cell(o.column, row[o.column])}" for o in info.objectives
        )
        seeds = int(row.get("n_seeds", 1))
        lines.append(f"  trial {row['trial_number']} ({seeds} seed{'s' * (seeds != 1)}): {values}")
    return "\n".join(lines)


def write_markdown(
    tables: dict[str, pd.DataFrame],
    info: StudyInfo,
    out: Path,
    images: list[Path],
    fields: Sequence[str],
    sentences: list[str],
) -> None:
    """Write ``report.md`` and one ``<table>.md`` per table shown."""
    parts = [f"# Report: {info.name}", "", "```", summarize(tables, info), "```", ""]
    parts += [f"![{p.stem}]({p.name})" for p in images] + [""]
    parts += [f"## {_TITLES['factor_effects']}", "", *sentences, ""]
    for name in ("pareto", "checkpointing", "failures", "configs"):
        table = tables[name]
        parts += [f"## {_TITLES[name]}", ""]
        if not len(table):
            parts += ["(none)", ""]
            continue
        if name in ("pareto", "configs"):
            view = _config_view(table, info, fields)
        elif name == "checkpointing":
            numbers = [c for c in table.columns if c.endswith(("_bytes", "_s", "_pct"))]
            view = table[["label", "checkpointing", *numbers]]
        else:
            view = table
        parts += [render_table(view, max_rows=60 if name == "configs" else None), ""]
        (out / f"{name}.md").write_text(render_table(view) + "\n")
    (out / "report.md").write_text("\n".join(parts))
