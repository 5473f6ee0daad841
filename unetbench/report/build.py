"""``build_report``: read ``results/<study>``, write tables (CSV, Parquet, Markdown) and plots.

Data flow: ``trials.parquet`` + ``runs.parquet`` + ``study.json`` -> searched fields read
back as the study's choices -> one row per config (:mod:`unetbench.report.configs`) ->
Pareto front, option differences with intervals (:mod:`unetbench.report.stats`),
checkpointing savings, failures and stopped trials (:mod:`unetbench.report.outcomes`) ->
files; with successive-halving rungs also each config's Dice per rung and the rank agreement
between rungs (:mod:`unetbench.report.rungs`); the plots attached to the study as Optuna
artifacts (:mod:`unetbench.report.artifacts`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unetbench._errors import UsageError
from unetbench.report.artifacts import attach_plots, default_artifacts, default_storage
from unetbench.report.configs import (
    BOUNDS,
    RUN_METRICS,
    config_table,
    overlapping,
    restore_choices,
)
from unetbench.report.markdown import findings, write_markdown
from unetbench.report.outcomes import failure_tracebacks, failures, stopped_trials
from unetbench.report.rungs import rank_agreement, rung_ladder, rung_of, study_rungs
from unetbench.report.rungs_text import attach_lines, effects_note, rung_section
from unetbench.report.stats import option_differences, option_levels, seed_noise
from unetbench.report.study import load_study_info
from unetbench.report.tables import (
    checkpointing_savings,
    searched_fields,
    usable_mask,
)
from unetbench.studyinfo import Objective, StudyInfo

__all__ = ["RUNG_TABLES", "TABLES", "build_report", "load_runs", "load_trials"]

log = logging.getLogger(__name__)

TABLES = (
    "trials",
    "configs",
    "pareto",
    "factor_effects",
    "factor_levels",
    "checkpointing",
    "failures",
    "stopped",
)
#: Tables of a study with successive-halving rungs, besides :data:`TABLES`.
RUNG_TABLES = ("rungs", "rank_agreement")
#: Every crashed trial's full traceback, next to report.md.
TRACEBACKS = "failures.txt"


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


def load_runs(results_dir: str | Path) -> pd.DataFrame | None:
    """One row per training run (``runs.parquet``), or None for a study without seeds."""
    path = Path(results_dir) / "runs.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def build_report(
    results_dir: str | Path,
    *,
    objectives: Sequence[str | Objective] | None = None,
    memory_budget_bytes: int | None = None,
    plots: bool = True,
    out_dir: str | Path | None = None,
    attach: bool = True,
    storage: str | None = None,
    artifacts: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Compute the report tables of one study and write them under ``<results_dir>/report/``.

    The study's objectives, memory budget and searched fields come from the description the
    sweep stored (``study.json``, see :mod:`unetbench.studyinfo`); ``objectives`` and
    ``memory_budget_bytes`` override them. Writes ``<table>.csv``, ``<table>.parquet``,
    ``report.md`` and (with ``plots``) PNG figures. Returns the tables named in
    :data:`TABLES`: every trial, one row per config (seed means and 95% intervals), the
    Pareto front of the configs, each option's difference to its field's first option
    (``factor_effects``) and each option's mean (``factor_levels``) per objective,
    checkpointing savings, failures (every crashed trial's traceback in ``failures.txt``)
    and stopped (interrupted or surplus) trials. A study with successive-halving rungs also
    gets :data:`RUNG_TABLES`: each config's Dice at every rung it reached (``rungs``) and
    Kendall's tau between rungs (``rank_agreement``); its front is over the configs that
    reached the top rung and its factor effects on accuracy are at rung 0.

    With ``plots`` and ``attach``, the PNGs are attached to the study as Optuna artifacts
    (:func:`unetbench.report.artifacts.attach_plots`): in ``storage`` (default the study's
    ``study.db`` when it exists), under ``artifacts`` (default the folder the sweep keeps its
    states in); the returned ``artifacts`` table (not written to a file) says what became of
    each plot.
    """
    results_dir = Path(results_dir)
    trials = load_trials(results_dir)
    info = load_study_info(
        results_dir, objectives=objectives, memory_budget_bytes=memory_budget_bytes
    )
    trials = restore_choices(trials, info.search)
    runs = load_runs(results_dir)
    runs = None if runs is None else restore_choices(runs, info.search)
    rungs = study_rungs(info.spec)
    configs = config_table(trials, runs, info.objectives, rungs)
    fields = searched_fields(configs, info.searched_fields)
    # Configs measured to the end, feasible or not (an over-budget choice still shows what it
    # costs), and diverged ones: their Dice of 0 counts (unetbench.seeds) and is the effect.
    trained = configs[usable_mask(configs, feasible_only=False) | configs["n_seeds"].gt(0)]
    order = {f: [str(v) for v in choices] for f, choices in info.search.items()}
    columns = [o.column for o in info.objectives]
    accuracy = [c for c in columns if c in RUN_METRICS]
    noise_runs = runs
    if rungs:  # accuracy's effects at rung 0, the one budget every config trained at
        trained = trained.assign(**{m: trained.get(f"{m}_rung0", math.nan) for m in accuracy})
        noise_runs = None if runs is None else runs[rung_of(runs, len(rungs) - 1).eq(0)]
    # Every searched field, present or not: one that cannot be analysed says why.
    wanted = list(info.searched_fields) or fields
    effects = _stack(
        [option_differences(trained, wanted, c, order).assign(objective=c) for c in columns]
    )
    levels = _stack([option_levels(trained, fields, c, order).assign(objective=c) for c in columns])
    if rungs:
        effects, levels = (_at_rung0(t, accuracy, rungs) for t in (effects, levels))
    front = _front(configs, info)
    trials = trials.assign(on_pareto_front=trials["trial_number"].isin(front["trial_number"]))
    tables: dict[str, pd.DataFrame] = {
        "trials": trials,
        "configs": configs,
        "pareto": front,
        "factor_effects": effects,
        "factor_levels": levels,
        "checkpointing": _savings_or_empty(configs),
        "failures": failures(trials),
        "stopped": stopped_trials(trials),
    }
    if rungs:
        metrics = [m for m in RUN_METRICS if m in configs.columns]
        ladder = rung_ladder(trials, runs, rungs, metrics, configs, BOUNDS)
        tables["rungs"] = ladder
        tables["rank_agreement"] = rank_agreement(ladder, rungs)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        _to_parquet(table, out / f"{name}.parquet")
    (out / TRACEBACKS).unlink(missing_ok=True)
    tracebacks = failure_tracebacks(trials)
    if tracebacks:
        (out / TRACEBACKS).write_text(tracebacks)
    images = _write_plots(tables, info, out, rungs) if plots else []
    noise = {m: seed_noise(noise_runs, m) for m in accuracy} if noise_runs is not None else {}
    sentences = findings(effects[effects["objective"].isin(accuracy)], noise)
    notes: list[str] = []
    if rungs:
        sentences = [*effects_note(rungs), *sentences]
        notes = rung_section(tables, rungs)
    if plots and attach:
        tables["artifacts"] = attach_plots(
            images,
            study=info.name,
            storage=storage or default_storage(results_dir),
            artifact_dir=Path(artifacts)
            if artifacts
            else default_artifacts(results_dir, info.spec),
        )
        notes = [*attach_lines(tables["artifacts"], results_dir), *notes]
    write_markdown(tables, info, out, images, fields, sentences, notes)
    log.debug("report of %s written to %s", info.name, out)
    return tables


def _has(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and bool(table[column].notna().any())


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of every part; an empty table with an ``objective`` column when there are none."""
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["objective"])


def _front(configs: pd.DataFrame, info: StudyInfo) -> pd.DataFrame:
    """Configs on the Pareto front, best first on the first objective, with Dice ties."""
    first = info.objectives[0]
    front = configs[configs["on_pareto_front"]]
    if first.column in front.columns:
        front = front.sort_values(first.column, ascending=first.direction == "minimize")
    front = front.reset_index(drop=True)
    accuracy = [o.column for o in info.objectives if o.column in RUN_METRICS]
    if accuracy and f"{accuracy[0]}_ci95_low" in front.columns:
        front["ties"] = overlapping(front, accuracy[0])
    return front


def _at_rung0(table: pd.DataFrame, accuracy: list[str], rungs: tuple[int, ...]) -> pd.DataFrame:
    """``table`` (effects or levels) with the rung and steps its accuracy rows are at."""
    at = table["objective"].isin(accuracy)
    return table.assign(
        rung=pd.Series(0, index=table.index).where(at),
        train_steps=pd.Series(rungs[0], index=table.index).where(at),
    )


def _write_plots(
    tables: dict[str, pd.DataFrame], info: StudyInfo, out: Path, rungs: tuple[int, ...] = ()
) -> list[Path]:
    from unetbench.report import plots  # matplotlib only when plots are wanted

    configs = tables["configs"]
    figures: dict[str, Any] = {}
    memory = [c for c in ("peak_mem_train_bytes", "est_peak_mem_train_bytes") if _has(configs, c)]
    subset, shown = "", configs
    if rungs:  # Dice at different budgets cannot share an axis: the top rung only
        shown = configs[configs["top_rung"].eq(len(rungs) - 1)]
        subset = f" that reached the top rung ({rungs[-1]} steps) of {len(configs)}"
    if _has(shown, "val_dice") and memory:
        figures["dice_vs_memory"] = plots.plot_dice_vs_memory(
            shown,
            objectives=info.objectives,
            memory_budget_bytes=info.memory_budget_bytes,
            subset=subset,
        )
    if len(tables["checkpointing"]):
        figures["checkpointing"] = plots.plot_checkpointing(tables["checkpointing"])
    speed = [c for c in configs.columns if c.startswith("train_voxels_per_s") and _has(configs, c)]
    if speed and any(_has(configs, c) for c in configs.columns if c.startswith("train_flops")):
        figures["throughput_vs_flops"] = plots.plot_throughput_vs_flops(configs)
    effects, levels = tables["factor_effects"], tables["factor_levels"]
    for o in info.objectives:
        if (levels["objective"] == o.column).any():
            at = f" at {rungs[0]} steps (rung 0)" if rungs and o.column in RUN_METRICS else ""
            figures[f"factor_effects_{o.column}"] = plots.plot_factor_effects(
                levels, effects, o.column, note=at
            )
    if rungs and tables["rungs"]["rung"].nunique() > 1:
        figures["rung_agreement"] = plots.plot_rung_agreement(
            tables["rungs"], tables["rank_agreement"]
        )
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


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
