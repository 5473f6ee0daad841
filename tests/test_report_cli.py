"""`unetbench report results/<study>` end to end on synthetic trial records."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import make_trials

from unetbench.cli import main as cli_main


def main(argv: list[str]) -> int:
    """The real `unetbench` entry point, with only this test's subcommand loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "SUBCOMMANDS", ("report",))
        return cli_main.main(argv)


def test_report_reads_spec_and_writes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quick.toml").write_text(
        'name = "quick"\nn_trials = 36\nmemory_budget = "150MiB"\n'
        "[search]\nn_blocks = [2, 3, 4]\nstart_filts = [8, 16, 32]\nattention = [false, true]\n"
        '[objectives]\nval_dice = "maximize"\npeak_mem_train_bytes = "minimize"\n'
    )
    results = tmp_path / "results" / "quick"
    results.mkdir(parents=True)
    make_trials().to_parquet(results / "trials.parquet")
    assert main(["report", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study quick: 36 trials, ")
    assert "memory budget: 150 MiB" in out and "1 oom" in out
    assert "report written to" in out and "(5 plots)" in out
    report = results / "report"
    for name in ("trials", "pareto", "factor_effects", "checkpointing", "failures"):
        assert (report / f"{name}.csv").is_file() and (report / f"{name}.parquet").is_file()
    effects = (report / "factor_effects.md").read_text()
    assert "| start_filts | 8 |" in effects and "checkpointing" not in effects  # spec's fields


def test_report_overrides_and_no_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_trials().to_csv(tmp_path / "trials.csv", index=False)
    args = [
        "report",
        str(tmp_path),
        "--objective",
        "val_iou",
        "--objective",
        "train_step_s:minimize",
        "--memory-budget",
        "1GiB",
        "--no-plots",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "val_iou (maximize), train_step_s (minimize)" in out and "(0 plots)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no trials.parquet"),
        (["--memory-budget", "lots"], "memory budget"),
        (["--objective", "val_dice:up"], "'maximize' or 'minimize'"),
    ],
)
def test_report_bad_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    if extra:
        make_trials().to_parquet(tmp_path / "trials.parquet")
    assert main(["report", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
