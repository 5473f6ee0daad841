"""``report.md``'s words on successive-halving rungs and on the plots attached to the study."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from unetbench.report.render import render_table
from unetbench.report.rungs import MIN_CONFIGS, RESAMPLES, SEED, agreement_sentences
from unetbench.report.stats import CONFIDENCE

__all__ = ["attach_lines", "effects_note", "rung_section", "rung_summary"]

_PCT = f"{CONFIDENCE:.0%}"


def _steps(rungs: Sequence[int]) -> str:
    return ", ".join(str(s) for s in rungs)


def effects_note(rungs: Sequence[int]) -> list[str]:
    """Which rung the factor effects on accuracy are computed at, and why."""
    return [
        f"Effects on accuracy are computed at rung 0 ({rungs[0]} steps), the one budget every "
        "config trained at: later rungs hold only the configs promoted for doing well at the "
        "rung before, so differences between their options would be biased by that selection "
        "(see the rank agreement above for how far the short training's ranking carries). "
        "Memory, FLOPs and speed do not depend on the rung.",
        "",
    ]


def rung_summary(configs: pd.DataFrame) -> str:
    """``training: rungs of 40, 160, 640 steps: 18 configs at 40, 6 at 160, 2 at 640``."""
    ks = sorted(
        int(c.removeprefix("steps_rung")) for c in configs.columns if c.startswith("steps_rung")
    )
    steps = [configs[f"steps_rung{k}"].max() for k in ks]
    counts = [int(configs[f"steps_rung{k}"].notna().sum()) for k in ks]
    known = [int(s) for s in steps if pd.notna(s)]
    names = _steps(known) if len(known) == len(ks) else f"{len(ks)} rungs"
    parts = [
        f"{n} at {int(s)}" if pd.notna(s) else f"{n} at rung {k}"
        for k, s, n in zip(ks, steps, counts, strict=True)
    ]
    return f"training: rungs of {names} steps: configs trained {', '.join(parts)}"


def rung_section(tables: dict[str, pd.DataFrame], rungs: Sequence[int]) -> list[str]:
    """The report's section on rungs: what the front and the accuracy are computed over, the
    rank agreement sentences and table, and every config's Dice at every rung."""
    ladder, agreement, configs = tables["rungs"], tables["rank_agreement"], tables["configs"]
    top = len(rungs) - 1
    at_top = int(configs["top_rung"].eq(top).sum())
    counts = ladder.groupby("rung")["config_key"].nunique().reindex(range(len(rungs)), fill_value=0)
    trained = ", ".join(f"{n} at {steps} steps" for steps, n in zip(rungs, counts, strict=True))
    lines = [
        "## Successive halving: rungs",
        "",
        f"Rungs of {_steps(rungs)} steps; configs with a Dice at each: {trained}. "
        "Promotions are the same config trained longer, not further configs: the config "
        "table has one row per config, its accuracy that of its highest rung (`top_rung`), "
        "with its Dice at every rung it reached (`val_dice_rung<k>`, `steps_rung<k>`). "
        f"**The Pareto front is computed only over the {at_top} configs that reached the top "
        f"rung ({rungs[-1]} steps)**, as the sweep judges them.",
        "",
        "### Does the ranking at fewer steps predict the ranking at more?",
        "",
        *agreement_sentences(agreement),
        "",
        f"Kendall's tau-b of Dice over the configs that reached both rungs; {_PCT} intervals: "
        f"percentile bootstrap, {RESAMPLES} resamples of the configs with replacement (seed "
        f"{SEED}; resamples in which tau is undefined are left out, `n_resamples_defined`). "
        f"With fewer than {MIN_CONFIGS} common configs tau is not computed. Only promoted "
        "configs reach the next rung, so tau measures the agreement among the better configs "
        "of the lower rung.",
        "",
    ]
    if len(agreement):
        view = agreement.drop(columns=["metric"])
        lines += [render_table(view), ""]
    lines += ["### Dice at each rung", ""]
    if not len(ladder):
        return [*lines, "(none)", ""]
    view = ladder[
        [
            c
            for c in (
                "rung",
                "train_steps",
                "trial_number",
                "rung_trial",
                "n_seeds",
                "val_dice",
                "val_dice_ci95_low",
                "val_dice_ci95_high",
                "promoted",
                "state_missing",
            )
            if c in ladder.columns
        ]
    ]
    return [*lines, render_table(view, max_rows=60), ""]


def attach_lines(attached: pd.DataFrame, results_dir: Path) -> list[str]:
    """One line on the plots attached to the study as Optuna artifacts, or why not."""
    if not len(attached):
        return []
    done = attached[attached["action"].ne("not attached")]
    if not len(done):
        reason = attached["reason"].iloc[0]
        return [f"Plots not attached to the study as Optuna artifacts: {reason}.", ""]
    counts = done["action"].value_counts()
    what = ", ".join(f"{counts[a]} {a}" for a in ("added", "replaced", "unchanged") if a in counts)
    folder = Path(str(done["artifact_dir"].iloc[0]))
    try:
        shown = folder.resolve().relative_to(results_dir.resolve())
        where = f"`{shown}/` next to this study's results"
    except ValueError:
        where = f"`{folder}`"
    return [
        f"Plots attached to study `{done['study'].iloc[0]}` as Optuna artifacts ({what}; files "
        f"in {where}): `optuna-dashboard <storage> --artifact-dir <that folder>` shows them "
        "on the study's page.",
        "",
    ]
