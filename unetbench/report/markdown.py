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
from unetbench.report.outcomes import config_outcomes, count_words
from unetbench.report.render import cell, render_table
from unetbench.report.rungs_text import rung_summary
from unetbench.report.stats import CONFIDENCE
from unetbench.report.tables import STOPPED, is_stopped, timing_notes
from unetbench.studyinfo import StudyInfo

__all__ = ["findings", "summarize", "write_markdown"]

_PCT = f"{CONFIDENCE:.0%}"
_TITLES = {
    "pareto": f"Pareto front (config means over seeds, {_PCT} intervals)",
    "factor_effects": "Which design choices matter",
    "checkpointing": "Checkpointing savings (vs. no checkpointing)",
    "failures": "Infeasible and failed trials by reason",
    "stopped": "Interrupted and surplus trials (not results)",
    "configs": "All configs",
}
# Columns whose values are timings (a timing taken under load is flagged, not a result).
_TIMED = ("train_step_s", "_per_s")


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
    columns = ["trial_number", *fields, "n_seeds", "run_status"]
    columns += [o.column for o in info.objectives] + ["steps_done", "status", "ties"]
    columns += [c for c in table.columns if c == "top_rung" or c.startswith("val_dice_rung")]
    view = table[[c for c in dict.fromkeys(columns) if c in table.columns]].copy()
    if (
        "run_status" in view.columns
        and view["run_status"].fillna("").str.fullmatch(r"(\d+ ok)?").all()
    ):
        view = view.drop(columns="run_status")  # every run ok: nothing to say
    for o in info.objectives:
        if f"{o.column}_ci95_low" in table.columns and o.column in view.columns:
            view[o.column] = _with_interval(table, o.column)
            view = view.rename(columns={o.column: f"{o.column} [{_PCT} CI]"})
    notes = timing_notes(table)
    if notes.ne("").any():
        view["timing_note"] = notes
    if "ties" in view.columns:
        view = view.rename(columns={"ties": "Dice indistinct from trials"})
    return view


def _timing_warning(table: pd.DataFrame, info: StudyInfo) -> list[str]:
    """A line under a table of configs whose objective timings were taken under load."""
    timed = [o.column for o in info.objectives if o.column.endswith(_TIMED)]
    flagged = table[timing_notes(table).ne("")]
    if not timed or flagged.empty:
        return []
    numbers = ", ".join(str(n) for n in flagged["trial_number"])
    return [
        f"**Timed under load** (trials {numbers}): their {', '.join(timed)} measured a busy "
        "machine, not the config (column `timing_note` says why); do not read them as "
        "results, and measure again on an idle machine.",
        "",
    ]


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
    """One plain sentence per (objective, field, option), one per field that could not be
    analysed (with why) and one per seed-noise estimate."""
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
        if r["design"] == "not analysed":
            lines.append(f"- {r['field']}: not analysed for {r['objective']}: {r['note']}.")
            continue
        n = int(r["n"])
        paired = r["design"] == "paired"
        design = _plural(n, "pair") if paired else f"{_plural(n, 'config')} per option"
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def summarize(tables: dict[str, pd.DataFrame], info: StudyInfo) -> str:
    """A few lines for the terminal: counts, training budget and the best trade-offs.

    Counts are of what measured something: trials stopped before they did (interrupted,
    surplus) are named on a line of their own, so a resumed study reads as one that ran
    without a break.
    """
    trials, configs, front = tables["trials"], tables["configs"], tables["pareto"]
    counted = trials[~is_stopped(trials)]
    roles = counted["role"].value_counts().to_dict() if "role" in counted.columns else {}
    role_text = ", ".join(f"{n} {r}" for r, n in roles.items())
    rungs = "top_rung" in configs.columns
    of = ""
    if rungs:
        top = sum(c.startswith("steps_rung") for c in configs.columns) - 1
        at_top = int(configs["top_rung"].eq(top).sum())
        of = f" (over the {at_top} configs at the top rung)"
    lines = [
        f"study {info.name}: {len(configs)} configs in {len(counted)} trials"
        + (f" ({role_text})" if role_text else "")
        + f"; {len(front)} on the Pareto front{of} of "
        + ", ".join(f"{o.column} ({o.direction})" for o in info.objectives),
        "configs: " + ", ".join(count_words(config_outcomes(configs))),
    ]
    if "n_seeds" in configs.columns:
        trained = int((configs["n_seeds"] > 0).sum())
        runs = int(configs["n_seeds"].sum())
        lines[-1] += f"; {trained} trained ({_plural(runs, 'counted run')})"
    if rungs:
        lines.append(rung_summary(configs))
    elif "steps_done" in configs.columns and configs["steps_done"].notna().any():
        steps = configs["steps_done"].dropna().astype(int)
        same = steps.nunique() == 1
        lines.append(
            f"training: {steps.iloc[0]} steps per run for every config"
            if same
            else f"training: {steps.min()}-{steps.max()} steps per run (not all equal)"
        )
    if info.memory_budget_bytes is not None:
        lines.append(f"memory budget: {format_cell('budget_bytes', info.memory_budget_bytes)}")
    stopped = tables.get("stopped", pd.DataFrame(columns=["status", "trial_number"]))
    if len(stopped):
        parts = [
            f"{_plural(int((stopped['status'] == s).sum()), 'trial')} {s} "
            f"({', '.join(str(n) for n in stopped.loc[stopped['status'] == s, 'trial_number'])})"
            for s in STOPPED
            if (stopped["status"] == s).any()
        ]
        lines.append("not counted: " + ", ".join(parts) + "; they measured nothing")
    flagged = int(timing_notes(configs).ne("").sum())
    if flagged:
        lines.append(f"timed under load: {_plural(flagged, 'config')} (see timing_note)")
    for row in front.head(5).to_dict("records"):
        values = ", ".join(
            f"{o.column}={format_cell(o.column, row[o.column])}" for o in info.objectives
        )
        seeds = int(row.get("n_seeds", 1))
        lines.append(f"  trial {row['trial_number']} ({seeds} seed{'s' * (seeds != 1)}): {values}")
    return "\n".join(lines)


def _failures_view(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The failures table without its tracebacks, and the tracebacks' ends as code blocks."""
    view = table.drop(columns=["last_frames"])
    if not view["error_type"].astype(bool).any():
        view = view.drop(columns="error_type")
    blocks = []
    for row in table[table["last_frames"].astype(bool)].to_dict("records"):
        first = str(row["trials"]).split(",")[0]
        blocks += [
            f"Where trial {first} crashed ({row['reason']}):",
            "",
            "```",
            str(row["last_frames"]),
            "```",
            "",
        ]
    if blocks:
        blocks.insert(0, "Every crashed trial's full traceback is in [failures.txt](failures.txt).")
        blocks.insert(1, "")
    return view, blocks


def _checkpointing_view(table: pd.DataFrame) -> pd.DataFrame:
    numbers = [c for c in table.columns if c.endswith(("_bytes", "_s", "_pct"))]
    view = table[["label", "checkpointing", *numbers]].copy()
    notes = timing_notes(table)
    if notes.ne("").any():
        # The empty percentage of a flagged row says why, instead of reading as 0 or a gap.
        added = view["step_time_added_pct"].map(lambda v: cell(v)).astype(object)
        view["step_time_added_pct"] = added.where(notes.eq(""), "timed under load")
        view["timing_note"] = notes
    return view


def write_markdown(
    tables: dict[str, pd.DataFrame],
    info: StudyInfo,
    out: Path,
    images: list[Path],
    fields: Sequence[str],
    sentences: list[str],
    notes: Sequence[str] = (),
) -> None:
    """Write ``report.md`` and one ``<table>.md`` per table shown; ``notes`` (lines) follow
    the plots."""
    parts = [f"# Report: {info.name}", "", "```", summarize(tables, info), "```", ""]
    parts += [f"![{p.stem}]({p.name})" for p in images] + [""]
    parts += list(notes)
    parts += [f"## {_TITLES['factor_effects']}", "", *sentences, ""]
    for name in ("pareto", "checkpointing", "failures", "stopped", "configs"):
        table = tables[name]
        parts += [f"## {_TITLES[name]}", ""]
        if not len(table):
            parts += ["(none)", ""]
            continue
        after: list[str] = []
        if name in ("pareto", "configs"):
            view = _config_view(table, info, fields)
            parts += _timing_warning(table, info)
        elif name == "checkpointing":
            view = _checkpointing_view(table)
        elif name == "failures":
            view, after = _failures_view(table)
        elif name == "stopped":
            parts += [
                "Stopped before they measured anything; `measured_by` is the trial that "
                "measured the same config afterwards (empty: none did); `stopped.csv` has "
                "each one's config_key.",
                "",
            ]
            view = table.drop(columns="config_key")
        else:
            view = table
        parts += [render_table(view, max_rows=60 if name == "configs" else None), "", *after]
        (out / f"{name}.md").write_text(render_table(view) + "\n")
    (out / "report.md").write_text("\n".join(parts))
