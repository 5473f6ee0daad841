"""A resumed study reports exactly like one that ran without a break.

The same exhaustive study (every legal config once, then a confirmation round) is run twice
by real sweep processes: once straight through, once stopped by a real SIGINT while a trial
trains and then resumed by running the same command again. Both reports must have the same
header counts, configs, Pareto front, factor effects and levels, checkpointing table and
failures; the one interrupted trial is listed apart, with the trial that measured its config
afterwards. Run as a script, this file is that sweep process.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the sweep process imports the fake evaluator

from unetbench.report import build_report, load_study_info, summarize
from unetbench.report.plots import plot_dice_vs_memory
from unetbench.sweep import StudySpec
from unetbench.sweep.spec import tomllib

# Searched ints (n_blocks, start_filts) are what a trial without a record turns into floats;
# start_filts 64 is over the budget (oom), normalization "none" diverges (FakeEvaluator).
SPEC = """
name = "resumed"
n_trials = 12
seed = 11
memory_budget = "50MB"
[search]
n_blocks = [2, 3]
start_filts = [4, 8, 64]
normalization = ["batch", "none"]
[fixed]
merge_mode = "concat"
[data]
kind = "synthetic"
[train]
patch_shape = [8, 32, 32]
batch_size = 1
steps = 2
[profile]
checkpointing = ["none", "blocks"]
[objectives]
val_dice = "maximize"
peak_mem_train_bytes = "minimize"
[sampler]
name = "grid"
[confirm]
top = 2
repeats = 2
"""
SEARCHED = ["n_blocks", "start_filts", "normalization"]
# Three sweeps, one interrupted by a signal to its process: about a minute, outside the
# default run (.ci/run runs it with the other slow tests).
pytestmark = pytest.mark.slow
DELAY_S = 0.1  # one training; the same in both runs (it is each run's train_s)


def spec() -> StudySpec:
    return StudySpec.from_dict(tomllib.loads(SPEC), source="<resumed>")


def main(argv: list[str] | None = None) -> int:
    from test_sweep_mechanics import FakeEvaluator

    from unetbench.cli.main import guarded
    from unetbench.sweep import run_sweep

    class Marked(FakeEvaluator):
        """Leaves a marker, then waits ``pause`` seconds before each training: a window for
        a signal that changes nothing the report shows (``train_s`` is ``delay``)."""

        def __init__(self, markers: str, pause: float) -> None:
            super().__init__(delay=DELAY_S)
            self.markers, self.pause = markers, pause

        def train(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            Path(self.markers, f"train-{time.monotonic_ns()}").touch()
            time.sleep(self.pause)
            return super().train(*args, **kwargs)

    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--markers", required=True)
    p.add_argument("--pause", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def sweep() -> int:
        evaluator = Marked(args.markers, args.pause)
        run_sweep(spec(), results_dir=args.results, evaluator=evaluator, show_progress=False)
        return 0

    return guarded("sweep", sweep)


def start(results: Path, markers: Path, pause: float = 0.0) -> subprocess.Popen[str]:
    markers.mkdir(exist_ok=True)
    command = [sys.executable, __file__, "--results", str(results), "--markers", str(markers)]
    command += ["--pause", str(pause)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(proc: subprocess.Popen[str], markers: Path, after: int) -> None:
    """SIGINT as soon as ``after`` trainings have started: it lands in the pause before the
    last one trains."""
    deadline = time.monotonic() + 120
    while len(os.listdir(markers)) < after and proc.poll() is None:
        assert time.monotonic() < deadline, "the sweep never started training"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)


def finish(proc: subprocess.Popen[str]) -> int:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 128 + signal.SIGINT), err
    return proc.returncode


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("resume")
    straight, resumed = base / "straight", base / "resumed"
    first = start(straight, base / "m1")  # both at once: the test takes less wall time
    second = start(resumed, base / "m2", pause=2.0)
    interrupt(second, base / "m2", after=4)
    assert finish(second) == 128 + signal.SIGINT
    stopped_at = pd.read_parquet(resumed / "resumed" / "trials.parquet")
    assert finish(start(resumed, base / "m2")) == 0  # the same command again resumes
    assert finish(first) == 0
    out = {}
    for name, results in (("straight", straight), ("resumed", resumed)):
        study = results / "resumed"
        tables = build_report(study, plots=False)
        info = load_study_info(study)
        out[name] = {
            "tables": tables,
            "summary": summarize(tables, info),
            "md": (study / "report" / "report.md").read_text(),
            "plot_title": plot_dice_vs_memory(
                tables["configs"], objectives=info.objectives, memory_budget_bytes=50_000_000
            )
            .axes[0]
            .get_title(),
        }
    out["stopped_at"] = stopped_at
    return out


def by_config(table: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """A table without what names trials (numbers, times, workers), rows in config order."""
    names = ("trial_number", "datetime_start", "datetime_complete", "worker_pid", "ties")
    keep = [c for c in table.columns if c not in names + drop and not c.endswith("_s")]
    return table[keep].sort_values("config_key").reset_index(drop=True)


def test_the_interrupt_landed_in_a_trial(reports: dict[str, Any]) -> None:
    stopped = reports["stopped_at"]
    assert (stopped["status"] == "interrupted").sum() == 1
    assert (reports["resumed"]["tables"]["trials"]["status"] == "interrupted").sum() == 1


def test_header_counts_are_the_same(reports: dict[str, Any]) -> None:
    # The front's lines name its trials by number, which the interrupted trial shifts.
    straight, resumed = (
        [re.sub(r"^  trial \d+ ", "  trial N ", line) for line in r["summary"].splitlines()]
        for r in (reports["straight"], reports["resumed"])
    )
    front = len(reports["straight"]["tables"]["pareto"])
    assert front == len(reports["resumed"]["tables"]["pareto"]) >= 1
    # 12 configs (every legal one) in 14 trials: 12 searched, 2 confirmed; 4 oom (start_filts
    # 64), 4 diverged (normalization none), 4 feasible; 8 trained with 8 + 2 confirming runs.
    assert straight[:2] == [
        f"study resumed: 12 configs in 14 trials (12 search, 2 confirm); {front} on the Pareto "
        "front of val_dice (maximize), peak_mem_train_bytes (minimize)",
        "configs: 4 feasible, 4 diverged, 4 oom; 8 trained (10 counted runs)",
    ]
    interrupted = int(reports["resumed"]["tables"]["stopped"]["trial_number"].iloc[0])
    extra = f"not counted: 1 trial interrupted ({interrupted}); they measured nothing"
    assert resumed == [*straight[:4], extra, *straight[4:]]


def test_configs_front_effects_and_failures_are_the_same(reports: dict[str, Any]) -> None:
    a, b = reports["straight"]["tables"], reports["resumed"]["tables"]
    assert len(a["configs"]) == len(b["configs"]) == 12
    pd.testing.assert_frame_equal(by_config(a["configs"]), by_config(b["configs"]))
    pd.testing.assert_frame_equal(by_config(a["pareto"]), by_config(b["pareto"]))
    for name in ("factor_effects", "factor_levels", "checkpointing"):
        pd.testing.assert_frame_equal(a[name], b[name])
    failures = ["kind", "error_type", "reason", "n_trials", "n_configs"]
    pd.testing.assert_frame_equal(a["failures"][failures], b["failures"][failures])
    assert a["failures"]["n_trials"].sum() == 8  # 4 oom, 4 diverged: interruptions are not


def test_every_searched_field_is_analysed_with_its_levels_as_written(
    reports: dict[str, Any],
) -> None:
    for run in ("straight", "resumed"):
        tables = reports[run]["tables"]
        levels = tables["factor_levels"]
        dice = levels[levels["objective"] == "val_dice"]
        assert dict(dice.groupby("field")["value"].agg(list)) == {
            "n_blocks": ["2", "3"],
            "normalization": ["batch", "none"],
            "start_filts": ["4", "8"],  # 64 never trained: over budget
        }
        effects = tables["factor_effects"]
        for objective in ("val_dice", "peak_mem_train_bytes"):
            assert set(effects.loc[effects["objective"] == objective, "field"]) == set(SEARCHED)
        # A diverged training is not profiled: no memory for normalization "none", and the
        # table says so instead of dropping the field.
        skipped = effects[effects["design"] == "not analysed"]
        assert skipped[["field", "objective", "note"]].values.tolist() == [
            ["normalization", "peak_mem_train_bytes",
             "only configs with normalization = batch have a value of peak_mem_train_bytes"
             "; normalization = none: no value"]
        ]  # fmt: skip
        md = reports[run]["md"]
        assert "n_blocks = 3 instead of 2: val_dice" in md
        assert "start_filts = 8 instead of 4: val_dice" in md and ".0 instead" not in md
    sections = [r["md"].split("## Pareto front")[0].split("## Which design")[1] for r in
                (reports["straight"], reports["resumed"])]  # fmt: skip
    assert sections[0] == sections[1]


def test_no_empty_config_rows_and_the_stopped_trial_is_listed_apart(
    reports: dict[str, Any],
) -> None:
    tables = reports["resumed"]["tables"]
    assert tables["configs"][SEARCHED].notna().all().all()
    stopped = tables["stopped"]
    assert stopped["status"].tolist() == ["interrupted"]
    measured = int(stopped["measured_by"].iloc[0])  # the grid measured its config again
    again = tables["trials"].set_index("trial_number").loc[measured]
    assert again["config_key"] == stopped["config_key"].iloc[0]
    assert again["trial_state"] == "COMPLETE"
    assert "interrupted" not in set(tables["failures"]["kind"])
    assert "## Interrupted and surplus trials (not results)" in reports["resumed"]["md"]


def test_the_plot_counts_what_the_header_counts(reports: dict[str, Any]) -> None:
    for run in ("straight", "resumed"):
        title = reports[run]["plot_title"]
        # The header's words and numbers: 4 feasible shown; diverged configs have no memory
        # (their training is not profiled), oom ones no Dice.
        assert title == "Accuracy vs training memory (4 configs; not shown: 4 diverged, 4 oom)"
    assert reports["straight"]["plot_title"] == reports["resumed"]["plot_title"]


if __name__ == "__main__":
    raise SystemExit(main())
