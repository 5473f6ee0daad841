"""A crashed trial in the report: its error's type, message, worker and traceback.

The real :class:`TorchEvaluator` runs the smoke study with one bug injected into its first
training (a KeyError raised by real code), so the error reaches the report the way a real
bug does: a FAIL trial with ``status`` error, ``error_type``, ``reason`` and ``traceback``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tomllib

from unetbench.report import build_report, load_study_info, summarize
from unetbench.sweep import StudySpec, TorchEvaluator, run_sweep

SMOKE = Path(__file__).parent.parent / "studies" / "smoke.toml"


class CrashOnce(TorchEvaluator):
    """The real evaluator, whose first training raises a KeyError."""

    def __init__(self) -> None:
        self.crashed = False

    def train(
        self, spec: StudySpec, config: Any, data: Any, checkpointing: str, **kwargs: Any
    ) -> dict[str, Any]:
        if not self.crashed:
            self.crashed = True
            sizes = {"in": config.in_channels}
            return {"out": sizes["out"]}
        return super().train(spec, config, data, checkpointing, **kwargs)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    results = tmp_path_factory.mktemp("crash")
    raw = tomllib.loads(SMOKE.read_text())
    raw.update(n_trials=2)
    raw.pop("confirm")
    run_sweep(StudySpec.from_dict(raw, str(SMOKE)), results_dir=results, evaluator=CrashOnce(),
              show_progress=False)  # fmt: skip
    study = results / "smoke"
    return study, build_report(study, plots=False)


def test_failures_table_names_type_message_worker_and_where(
    crashed: tuple[Path, dict[str, pd.DataFrame]],
) -> None:
    study, tables = crashed
    trials = tables["trials"]
    (number,) = trials.loc[trials["status"] == "error", "trial_number"]
    (row,) = tables["failures"].to_dict("records")
    assert {k: row[k] for k in ("kind", "error_type", "reason", "n_trials", "n_configs")} == {
        "kind": "error",
        "error_type": "KeyError",
        "reason": "KeyError: 'out'",
        "n_trials": 1,
        "n_configs": 1,
    }
    assert row["trials"] == str(number) and row["workers"] == socket.gethostname()
    frames = row["last_frames"].splitlines()
    assert frames[0].lstrip().startswith('File "') and frames[-1] == "KeyError: 'out'"
    assert 'return {"out": sizes["out"]}' in row["last_frames"]
    md = (study / "report" / "report.md").read_text()
    assert f"Where trial {number} crashed (KeyError: 'out'):" in md
    assert "| error | KeyError | KeyError: 'out' | 1 | 1 |" in md
    full = (study / "report" / "failures.txt").read_text()
    assert full.startswith(f"=== trial {number} on {socket.gethostname()} (pid ")
    assert "Traceback (most recent call last):" in full and "in train" in full


def test_the_crashed_config_is_counted_as_one_error_not_as_a_result(
    crashed: tuple[Path, dict[str, pd.DataFrame]],
) -> None:
    study, tables = crashed
    configs, trials = tables["configs"], tables["trials"]
    crashed_key = trials.loc[trials["status"] == "error", "config_key"].iloc[0]
    retried = bool(
        ((trials["config_key"] == crashed_key) & (trials["trial_state"] == "COMPLETE")).any()
    )
    assert len(configs) == trials["config_key"].nunique() == 3 - retried
    row = configs[configs["config_key"] == crashed_key].iloc[0]
    assert row["status"] == ("ok" if retried else "error")
    assert not configs.loc[configs["status"] == "error", "on_pareto_front"].any()
    header = summarize(tables, load_study_info(study)).splitlines()
    assert header[0].startswith(f"study smoke: {3 - retried} configs in 3 trials (3 search)")
    assert header[1].startswith("configs: 2 feasible" + ("" if retried else ", 1 error"))


def test_the_command_line_says_where_the_tracebacks_are(
    crashed: tuple[Path, dict[str, pd.DataFrame]], capsys: pytest.CaptureFixture[str]
) -> None:
    from unetbench.cli.main import main

    study, _ = crashed
    assert main(["report", str(study), "--no-plots"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"tracebacks of 1 crashed trial(s): {study / 'report'}/failures.txt"
