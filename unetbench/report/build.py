"""``build_report``: read ``results/<study>``, write tables (CSV, Parquet, Markdown) and plots."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from unetbench._errors import UsageError
from unetbench.report._study import StudyInfo, load_study_info
from unetbench.report._units import format_cell
from unetbench.report.tables import (
    checkpointing_savings,
    config_columns,
    factor_effects,
    failures,
    pareto_mask,
    searched_fields,
    usable_mask,
)

__all__ = ["TABLES", "build_report", "load_trials", "markdown_table", "summarize"]

log = logging.getLogger(__name__)

TABLES = ("trials", "pareto", "factor_effects", "checkpointing", "failures")
_TITLES = {
    "pareto": "Pareto front",
    "factor_effects": "Per-factor effects (mean ± std)",
    "checkpointing": "Checkpointing savings (vs. no checkpointing)",
    "failures": "Failed and infeasible trials by reason",
    "trials": "All trials",
}


def load_trials(results_dir: str | Path) -> pd.DataFrame:
    """The trial records of ``results/<study>``: ``trials.parquet`` (or ``trials.csv``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UsageError(f"results directory {str(results_dir)!r} does not exist")
    for name, reader in (("trials.parquet", pd.read_parquet), ("trials.csv", pd.read_csv)):
        path = results_dir / name
        if path.is_file():
            return reader(path)
    raise UsageError(
        f"{str(results_dir)!r} has no trials.parquet or trials.csv; run `unetbench sweep` first"
    )


def markdown_table(df: pd.DataFrame, *, max_rows: int | None = None) -> str:
    """A GitHub Markdown table with human units (MiB/GiB, ms) in the cells."""
    shown = df if max_rows is None else df.head(max_rows)
    lines = ["| " + " | ".join(str(c) for c in shown.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in shown.columns) + "|")
    for row in shown.itertuples(index=False):
        cells = (format_cell(str(c), v) for c, v in zip(shown.columns, row, strict=True))
        lines.append("| " + " | ".join(cells) + " |")
    if max_rows is not None and len(df) > max_rows:
        lines.append(f"\n({len(df) - max_rows} more rows in the CSV/Parquet file)")
    return "\n".join(lines)


def _display(name: str, table: pd.DataFrame, info: StudyInfo, shown: list[str]) -> pd.DataFrame:
    """Narrow view of a table for Markdown: key columns only, mean ± std merged."""
    if name == "factor_effects":
        view = table[["field", "value", "n"]].copy()
        for o in info.objectives:
            mean, std = table[f"{o.column}_mean"], table[f"{o.column}_std"]
            view[o.column] = [
                f"{format_cell(o.column, m)} ± {format_cell(o.column, s) or '–'}"
                for m, s in zip(mean, std, strict=True)
            ]
        return view
    if name == "checkpointing":
        numbers = [c for c in table.columns if c.endswith(("_bytes", "_s", "_pct"))]
        return table[["label", "checkpointing", *numbers]]
    if name in ("trials", "pareto"):
        first = [c for c in ("trial_number",) if c in table.columns]
        extra = [c for c in ("on_pareto_front", "feasible", "status") if c in table.columns]
        columns = first + [o.column for o in info.objectives] + shown + extra
        return table[list(dict.fromkeys(columns))]
    return table


def _searched(trials: pd.DataFrame, info: StudyInfo) -> list[str]:
    return searched_fields(trials, info.searched_fields)


def summarize(tables: dict[str, pd.DataFrame], info: StudyInfo) -> str:
    """A few lines for the terminal: counts, best trade-offs and where the files are."""
    trials, front = tables["trials"], tables["pareto"]
    fail = tables["failures"]
    lines = [
        f"study {info.name}: {len(trials)} trials, {len(front)} on the Pareto front of "
        + ", ".join(f"{o.column} ({o.direction})" for o in info.objectives),
    ]
    if info.memory_budget_bytes is not None:
        lines.append(f"memory budget: {format_cell('budget_bytes', info.memory_budget_bytes)}")
    if len(fail):
        lines.append(
            "not usable: "
            + ", ".join(f"{int(n)} {k}" for k, n in fail.groupby("kind")["count"].sum().items())
        )
    for row in front.head(5).to_dict("records"):
        ident = f"trial {row['trial_number']}" if "trial_number" in row else "row"
        values = ", ".join(
            f"{o.column}={format_cell(o.column, row[o.column])}" for o in info.objectives
        )
        lines.append(f"  {ident}: {values}")
    return "\n".join(lines)


def _write_plots(tables: dict[str, pd.DataFrame], info: StudyInfo, out: Path) -> list[Path]:
    from unetbench.report import plots  # matplotlib only when plots are wanted

    trials = tables["trials"]
    figures: dict[str, Any] = {}
    if "val_dice" in trials.columns and trials["val_dice"].notna().any():
        figures["dice_vs_memory"] = plots.plot_dice_vs_memory(
            trials, objectives=info.objectives, memory_budget_bytes=info.memory_budget_bytes
        )
    if len(tables["checkpointing"]):
        figures["checkpointing"] = plots.plot_checkpointing(tables["checkpointing"])
    if all(
        c in trials.columns and trials[c].notna().any()
        for c in ("train_flops", "train_voxels_per_s")
    ):
        figures["throughput_vs_flops"] = plots.plot_throughput_vs_flops(trials)
    if len(tables["factor_effects"]):
        for o in info.objectives:
            figures[f"factor_effects_{o.column}"] = plots.plot_factor_effects(
                tables["factor_effects"], o.column
            )
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def build_report(
    results_dir: str | Path,
    *,
    spec: str | Path | None = None,
    objectives: Any = None,
    memory_budget: Any = None,
    searched: Iterable[str] | None = None,
    plots: bool = True,
    out_dir: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Compute the report tables of one study and write them under ``<results_dir>/report/``.

    Objectives, memory budget and searched fields come from the arguments when given, else from
    ``study.json``/the study spec (see :func:`load_study_info`). Writes ``<table>.csv``,
    ``<table>.parquet``, ``report.md`` and (with ``plots``) PNG figures. Returns the tables by
    name: ``trials`` (with ``on_pareto_front``), ``pareto``, ``factor_effects``,
    ``checkpointing`` and ``failures``.
    """
    results_dir = Path(results_dir)
    trials = load_trials(results_dir)
    info = load_study_info(
        results_dir,
        spec_path=spec,
        objectives=objectives,
        memory_budget=memory_budget,
        searched_fields=searched,
    )
    trials = trials.copy()
    trials["on_pareto_front"] = pareto_mask(trials, info.objectives)
    if "trial_number" in trials.columns:
        trials = trials.sort_values("trial_number").reset_index(drop=True)
    tables: dict[str, pd.DataFrame] = {
        "trials": trials,
        "pareto": trials[trials["on_pareto_front"]]
        .sort_values(
            info.objectives[0].column, ascending=info.objectives[0].direction == "minimize"
        )
        .reset_index(drop=True),
        "factor_effects": factor_effects(trials, info.objectives, _searched(trials, info)),
        "checkpointing": _savings_or_empty(trials),
        "failures": failures(trials),
    }
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        _to_parquet(table, out / f"{name}.parquet")
    images = _write_plots(tables, info, out) if plots else []
    _write_markdown(tables, info, out, images, _searched(trials, info))
    log.debug("report of %s written to %s", info.name, out)
    return tables


def _savings_or_empty(trials: pd.DataFrame) -> pd.DataFrame:
    per_mode = any(c.startswith("peak_mem_train_bytes__none") for c in trials.columns)
    long_form = {"checkpointing", "train_step_s"} <= set(trials.columns)
    if not (per_mode or long_form) or usable_mask(trials, feasible_only=False).sum() == 0:
        return pd.DataFrame(columns=["label", "checkpointing", "mem_saved_pct"])
    return checkpointing_savings(trials)


def _to_parquet(table: pd.DataFrame, path: Path) -> None:
    """Write Parquet; object columns holding lists or mixed types are stored as text."""

    def text(v: object) -> object:
        return v if v is None or (isinstance(v, float) and v != v) else str(v)

    safe = table.copy()
    for column in safe.columns:
        if (
            safe[column].dtype == object
            and safe[column].map(lambda v: isinstance(v, list | tuple | dict | set)).any()
        ):
            safe[column] = safe[column].map(text)
    try:
        safe.to_parquet(path, index=False)
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowInvalid/ArrowTypeError subclass these
        log.debug("storing object columns of %s as text: %s", path.name, exc)
        for column in safe.columns:
            if safe[column].dtype == object:
                safe[column] = safe[column].map(text)
        safe.to_parquet(path, index=False)


def _write_markdown(
    tables: dict[str, pd.DataFrame],
    info: StudyInfo,
    out: Path,
    images: list[Path],
    shown: list[str],
) -> None:
    parts = [f"# Report: {info.name}", "", "```", summarize(tables, info), "```", ""]
    parts += [f"![{p.stem}]({p.name})" for p in images] + [""]
    for name in ("pareto", "factor_effects", "checkpointing", "failures", "trials"):
        table = tables[name]
        parts += [f"## {_TITLES[name]}", ""]
        if not len(table):
            parts += ["(none)", ""]
            continue
        view = _display(name, table, info, shown or config_columns(table)[:6])
        parts += [markdown_table(view, max_rows=50 if name == "trials" else None), ""]
        (out / f"{name}.md").write_text(markdown_table(view) + "\n")
    (out / "report.md").write_text("\n".join(parts))
