"""`unetbench report results/<study>` end to end on synthetic trial records."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import make_trials, sweep_shaped, write_study

from unetbench.cli import main as cli_main


def main(argv: list[str]) -> int:
    """The real `unetbench` entry point, with only this test's subcommand loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "SUBCOMMANDS", ("report",))
        return cli_main.main(argv)


def test_report_reads_the_stored_study_and_writes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    results = write_study(tmp_path / "results" / "quick", sweep_shaped(make_trials()))
    assert main(["report", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study quick: 18 configs in 18 trials; 4 on the Pareto front")
    assert "memory budget: 150 MiB" in out and "1 pruned" in out
    assert "report written to" in out and "(5 plots)" in out
    report = results / "report"
    for name in ("trials", "configs", "pareto", "factor_effects", "checkpointing", "failures"):
        assert (report / f"{name}.csv").is_file() and (report / f"{name}.parquet").is_file()
    assert "start_filts = 16 instead of 8: val_dice" in (report / "report.md").read_text()


def test_report_overrides_and_no_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_study(tmp_path, sweep_shaped(make_trials()))
    args = ["report", str(tmp_path), "--objective", "val_iou:maximize", "--objective"]
    args += ["train_step_s:minimize", "--memory-budget", "1GiB", "--no-plots"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "val_iou (maximize), train_step_s (minimize)" in out and "(0 plots)" in out
    assert "memory budget: 1 GiB" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no trials.parquet"),
        (["--memory-budget", "lots"], "--memory-budget must be a positive size"),
        (["--objective", "val_dice:up"], "'maximize' or 'minimize'"),
        (["--objective", "params"], "needs a direction"),
    ],
)
def test_report_bad_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    if extra:
        write_study(tmp_path, make_trials())
    assert main(["report", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_report_of_a_study_without_description_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_trials().to_parquet(tmp_path / "trials.parquet")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "study.json does not exist" in err and err.count("\n") == 1
