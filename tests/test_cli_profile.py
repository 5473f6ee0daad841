"""`unetbench profile` and `unetbench plan`: tables, output files, one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from unetbench.cli.main import main
from unetbench.profiler import RECORD_COLUMNS

TINY = ["--set", "n_blocks=2", "--set", "start_filts=4", "--shape", "8,8,8"]
FAST = ["--rounds", "1", "--warmup", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_profile_prints_a_table_and_writes_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    out = tmp_path / f"records{suffix}"
    assert main(["profile", *TINY, *FAST, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "peak_mem_train (MiB)" in text and "est_peak_mem_train (MiB)" in text
    assert "none" in text and "blocks" in text
    frame = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix](out)
    assert list(frame["checkpointing"]) == ["none", "blocks"]
    assert set(RECORD_COLUMNS) <= set(frame.columns)
    assert (frame["n_blocks"] == 2).all() and (frame["status"] == "ok").all()


def test_profile_warns_of_each_timing_taken_under_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unetbench.profiler import load

    # The rule itself is tested in test_load.py (also under real load); here it flags every
    # timing, so the command's handling of flagged rows is what is tested.
    monkeypatch.setattr(load, "timing_note", lambda **kw: f"load {kw['load_avg_1m']:.1f} (test)")
    out = tmp_path / "r.csv"
    assert main(["profile", *TINY, *FAST, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert [w.split(":")[1].strip() for w in warnings] == ["none/fp32", "blocks/fp32"]
    assert all("timed under load (load " in w and "(test)" in w for w in warnings)
    frame = pd.read_csv(out)
    assert frame["timing_note"].str.endswith("(test)").all()
    assert (frame["torch_threads"] == 1).all()
    assert main(["profile", *TINY, "--no-timing"]) == 0
    assert "warning" not in capsys.readouterr().out  # nothing timed, nothing flagged


def test_profile_reads_a_config_file_and_set_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"n_blocks": 3, "start_filts": 2, "planar_blocks": [0]}))
    args = ["profile", "--config", str(cfg), "--set", "n_blocks=2", "--shape", "4,8,8"]
    assert main([*args, "--checkpointing", "top_units", "--no-timing"]) == 0
    text = capsys.readouterr().out
    assert '"n_blocks": 2' in text and '"planar_blocks": [0]' in text
    assert "top_units" in text


def test_plan_answers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "plan.csv"
    args = ["plan", "--set", "n_blocks=2", "--set", "start_filts=4", "--budget", "16MiB"]
    assert main([*args, "--shape", "8,16,16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "total (MiB)" in text and "blocks" in text
    assert len(pd.read_csv(out)) == 4


def test_plan_exit_1_when_nothing_fits(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--set", "n_blocks=2", "--set", "start_filts=4", "--budget", "1KiB"]
    assert main([*args, "--shape", "8,8,8"]) == 1
    assert "False" in capsys.readouterr().out


def test_profile_precisions_and_auto(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    argv = ["profile", *TINY, *FAST, "--precision", "fp32,bf16", "--checkpointing", "none,auto"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fp32" in text and "bf16" in text and "checkpointing_chosen" in text
    frame = pd.read_csv(out)
    assert list(frame["precision"]) == ["fp32", "fp32", "bf16", "bf16"]
    assert list(frame["checkpointing"]) == ["none", "auto"] * 2
    chosen = frame[frame["checkpointing"] == "auto"]["checkpointing_chosen"]
    assert all(name in text for name in chosen)


def test_plan_bf16_fits_a_larger_patch(capsys: pytest.CaptureFixture[str]) -> None:
    sizes = {}
    for precision in ("fp32", "bf16"):
        argv = ["plan", "--set", "n_blocks=2", "--set", "start_filts=8", "--budget", "256MiB"]
        assert main([*argv, "--vary", "shape", "--precision", precision]) == 0
        line = [r for r in capsys.readouterr().out.splitlines() if r.startswith("shape")][-1]
        sizes[precision] = int(line.split()[line.split().index(precision) + 2].split("x")[0])
    assert sizes["bf16"] > sizes["fp32"]


BAD = [
    (["profile", "--set", "n_blocks"], r"--set expects KEY=VALUE, got 'n_blocks'"),
    (["profile", "--set", "depth=3"], r"unknown UNetConfig field.*'depth'"),
    (["profile", "--set", "n_blocks=0"], r"n_blocks"),
    (["profile", "--set", "planar_blocks=a,b"], r"planar_blocks"),
    (["profile", "--shape", "32,sixty,64"], r"--shape '32,sixty,64'"),
    (["profile", "--shape", "32,63,64"], r"63"),
    (["profile", "--shape", "0,64,64"], r"positive"),
    (["profile", "--device", "tpu"], r"device 'tpu'"),
    (["profile", "--checkpointing", "none,most"], r"unknown checkpointing policy 'most'"),
    (["profile", "--checkpointing", ","], r"--checkpointing needs at least one value"),
    (["profile", "--out", "records.xlsx"], r"--out 'records.xlsx'"),
    (["profile", "--config", "/nonexistent/cfg.json"], r"cannot read --config"),
    (["plan", "--budget", "11 parsecs"], r"--budget must be a positive size .* '11 parsecs'"),
    (["plan", "--budget", "1GiB", "--vary", "depth"], r"vary must be"),
    (["profile", "--precision", "fp32,fp8"], r"unknown precision 'fp8'; choose from fp32"),
    (["profile", "--budget", "lots"], r"--budget must be a positive size .* 'lots'"),
    (["plan", "--budget", "1GiB", "--precision", "half"], r"unknown precision 'half'"),
    (["plan", "--budget", "256MiB", "--headroom", "1GiB"], r"headroom"),
    (["profile", "--rounds", "-1"], r"--rounds must be an integer >= 1, but got -1$"),
    (["profile", "--rounds", "0"], r"--rounds must be an integer >= 1, but got 0$"),
    (["profile", "--warmup", "-1"], r"--warmup must be an integer >= 0, but got -1$"),
    (["profile", "--max-seconds", "0"], r"--max-seconds must be a number > 0, but got 0.0$"),
]


@pytest.mark.parametrize(("argv", "match"), BAD)
def test_user_mistakes_are_one_line_and_exit_2(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert re.search(match, err), err


def test_cuda_without_gpu_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["profile", *TINY, "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_malformed_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{n_blocks: 2")
    assert main(["profile", "--config", str(cfg)]) == 2
    assert "JSON is malformed" in capsys.readouterr().err
