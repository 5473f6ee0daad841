"""`compare_records` and `unetbench compare` on profile records and pytest-benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from unetbench import UNetConfig, UsageError
from unetbench.cli import main as cli_main
from unetbench.gate import compare_records, load_records, metric_columns, records_from_json


def main(argv: list[str]) -> int:
    """The real `unetbench` entry point, with only this test's subcommand loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "SUBCOMMANDS", ("compare",))
        return cli_main.main(argv)


def profile_records() -> pd.DataFrame:
    """Rows shaped like unetbench.profiler.profile output for four configs x two modes."""
    rows = []
    for n_blocks, filts in ((2, 8), (3, 16), (3, 32), (4, 16)):
        cfg = UNetConfig(n_blocks=n_blocks, start_filts=filts).to_dict()
        for mode, mem_factor, t_factor in (("none", 1.0, 1.0), ("blocks", 0.6, 1.3)):
            macs = 1_234_567 * filts * n_blocks
            rows.append(
                {
                    **cfg,
                    "input_shape": "16x32x32",
                    "output_shape": "16x32x32",
                    "batch_size": 1,
                    "checkpointing": mode,
                    "device": "cpu",
                    "status": "ok",
                    "params": 9_000 * filts * n_blocks,
                    "fwd_macs": macs,
                    "fwd_flops": 2 * macs,
                    "train_flops": 6 * macs,
                    "est_peak_mem_train_bytes": int(3_000_000 * filts * mem_factor),
                    "peak_mem_train_bytes": 3.1e6 * filts * mem_factor,
                    "train_step_s": 0.004 * filts * t_factor,
                    "train_step_iqr_s": 0.001,
                    "train_voxels_per_s": 16 * 32 * 32 / (0.004 * filts * t_factor),
                    "timestamp": "2026-11-23T19:00:00",
                }
            )
    return pd.DataFrame(rows)


def test_identical_records_pass() -> None:
    df = profile_records()
    result = compare_records(df, df.copy())
    assert result.passed and result.n_matched == len(df)
    assert set(result.table["status"]) == {"same"}
    assert "train_step_iqr_s" not in set(result.table["metric"])
    assert result.format().startswith("PASS: 8 rows matched")


def test_changed_flop_count_fails_exactly() -> None:
    base = profile_records()
    cur = base.copy()
    cur.loc[3, "train_flops"] += 1  # one FLOP more is still a different architecture
    result = compare_records(base, cur)
    assert not result.passed
    reg = result.regressions
    assert reg[["metric", "status"]].values.tolist() == [["train_flops", "changed"]]
    assert reg.loc[0, "row"] == "n_blocks=3, start_filts=16, checkpointing=blocks"
    assert "(REGRESSION)" in result.format()


@pytest.mark.parametrize(
    ("metric", "factor", "tolerances", "status"),
    [
        ("train_step_s", 1.05, None, "ok"),
        ("train_step_s", 1.15, None, "worse"),
        ("train_step_s", 1.15, {"train_step_s": 0.2}, "ok"),
        ("train_step_s", 0.80, None, "better"),
        ("train_voxels_per_s", 0.85, None, "worse"),  # throughput: lower is worse
        ("train_voxels_per_s", 1.20, None, "better"),
        ("peak_mem_train_bytes", 1.11, None, "worse"),
        ("params", 1.01, {"params": 0.05}, "ok"),  # an exact metric loosened on purpose
    ],
)
def test_tolerances_and_directions(
    metric: str, factor: float, tolerances: dict[str, float] | None, status: str
) -> None:
    base = profile_records()
    cur = base.copy()
    cur[metric] = cur[metric] * factor
    result = compare_records(base, cur, tolerances)
    statuses = set(result.table.loc[result.table["metric"] == metric, "status"])
    assert statuses == {status}
    assert result.passed == (status != "worse")


def test_missing_rows_status_and_new_rows() -> None:
    base = profile_records()
    cur = base.drop(index=0).copy()
    cur.loc[5, "status"] = "oom"
    cur.loc[5, ["train_step_s", "peak_mem_train_bytes"]] = float("nan")
    extra = base.iloc[[1]].assign(batch_size=2)
    cur = pd.concat([cur, extra], ignore_index=True)
    table = compare_records(base, cur).table
    by_status = table.groupby("status")["regression"].first().to_dict()
    assert by_status == {
        "missing row": True,
        "status": True,
        "missing": True,
        "new row": False,
        "same": False,
    }


def test_round_trip_through_every_file_format(tmp_path: Path) -> None:
    df = profile_records()
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text(df.to_json(orient="records"))
    for name in ("a.csv", "a.parquet", "a.json"):
        loaded = load_records(tmp_path / name)
        result = compare_records(df, loaded)  # planar_blocks list vs text still matches
        assert result.passed and result.n_matched == len(df), name


def pytest_benchmark_run(flops: int, ratio: float) -> dict[str, object]:
    bench = {
        "group": None,
        "name": "test_train_step[n3-f16]",
        "fullname": "tests/benchmarks/test_bench.py::test_train_step[n3-f16]",
        "params": {"name": "n3-f16"},
        "extra_info": {
            "params": 1_000_000,
            "train_flops": flops,
            "train_step_ratio_vs_ref": ratio,
            "peak_mem_train_bytes": 2**20,
            "activation": "relu",
        },
        "stats": {"min": 0.1, "max": 0.2, "mean": 0.15, "median": 0.14, "rounds": 5},
    }
    return {"machine_info": {}, "commit_info": {}, "benchmarks": [bench], "version": "5.3.1"}


def test_pytest_benchmark_json(tmp_path: Path) -> None:
    base, cur = tmp_path / "base.json", tmp_path / "cur.json"
    base.write_text(json.dumps(pytest_benchmark_run(10**9, 1.10)))
    cur.write_text(json.dumps(pytest_benchmark_run(10**9, 1.15)))
    records = load_records(base)
    assert records.loc[0, "benchmark"].endswith("test_train_step[n3-f16]")
    assert set(metric_columns(records)) == {
        "params",
        "train_flops",
        "train_step_ratio_vs_ref",
        "peak_mem_train_bytes",
        "bench_min_s",
        "bench_median_s",
        "bench_mean_s",
    }
    assert compare_records(records, load_records(cur)).passed  # ratio +4.5% < 10%
    worse = load_records(cur).assign(train_step_ratio_vs_ref=1.3)
    result = compare_records(records, worse)
    assert result.regressions["metric"].tolist() == ["train_step_ratio_vs_ref"]
    assert result.regressions["row"].tolist() == ["test_train_step[n3-f16]"]  # path dropped
    cur.write_text(json.dumps(pytest_benchmark_run(10**9 + 64, 1.10)))
    assert not compare_records(records, load_records(cur)).passed


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = profile_records()
    df.to_parquet(tmp_path / "base.parquet")
    df.to_csv(tmp_path / "same.csv", index=False)
    changed = df.copy()
    changed.loc[0, "fwd_macs"] *= 2
    changed.loc[1, "train_step_s"] *= 1.3
    changed.to_csv(tmp_path / "changed.csv", index=False)
    assert main(["compare", str(tmp_path / "base.parquet"), str(tmp_path / "same.csv")]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "base.parquet"), str(tmp_path / "changed.csv")]) == 1
    out = capsys.readouterr().out
    assert "fwd_macs" in out and "+100.00%" in out and "train_step_s" in out
    assert "FAIL: 8 rows matched" in out and "2 regression(s)" in out
    args = [
        "compare",
        str(tmp_path / "base.parquet"),
        str(tmp_path / "changed.csv"),
        "--tolerance-for",
        "train_step_s=0.5",
        "--ignore",
        "fwd_macs",
    ]
    assert main(args) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tolerance-for", "train_step_s"], "METRIC=0.2"),
        (["--tolerance-for", "bogus=0.2"], "unknown metric"),
        (["--tolerance", "-1"], "must be a number >= 0"),
        (["--key", "nonexistent"], "lack key columns"),
    ],
)
def test_cli_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    profile_records().to_csv(tmp_path / "a.csv", index=False)
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_records(tmp_path / "nope.csv")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UsageError, match=r"\.csv, \.parquet or \.json"):
        load_records(tmp_path / "a.txt")
    (tmp_path / "b.json").write_text('{"hello": 1}')
    with pytest.raises(UsageError, match="pytest-benchmark"):
        load_records(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read records"):
        load_records(tmp_path / "c.json")
    df = profile_records()
    with pytest.raises(UsageError, match="same key"):
        compare_records(pd.concat([df, df]), df)


def test_a_tolerance_asks_for_a_comparison() -> None:
    base = profile_records().assign(custom_metric=1.0)
    cur = base.assign(custom_metric=1.5)
    assert compare_records(base, cur).passed  # not a metric by name
    result = compare_records(base, cur, {"custom_metric": 0.2})
    assert set(result.regressions["metric"]) == {"custom_metric"}


# --- rows are matched on device type and precision too ----------------------------------------


def test_cpu_and_cuda_rows_of_one_config_are_not_paired() -> None:
    base = profile_records()
    cur = base.assign(device="cuda:0")
    result = compare_records(base, cur)
    assert result.key[-1] == "device" and "checkpointing" in result.key
    assert result.n_matched == 0 and not result.passed
    assert set(result.table["status"]) == {"missing row", "new row"}
    assert len(result.notes) == len(base)  # one line per config, not one per side
    assert result.notes[0] == (
        "baseline row n_blocks=2, start_filts=8, checkpointing=none on cpu not compared: "
        "current has it only on cuda (device differs)"
    )
    assert result.notes[0] in result.format()


def test_a_config_measured_on_both_devices_matches_its_own_device() -> None:
    cpu = profile_records()
    base = pd.concat([cpu, cpu.assign(device="cuda", train_step_s=1e-4)], ignore_index=True)
    cur = cpu.assign(device="cuda:1", train_step_s=1e-4)  # faster than the CPU rows, as on GPU
    result = compare_records(base, cur)
    assert result.passed is False and result.n_matched == len(cpu)
    assert set(result.regressions["status"]) == {"missing row"}  # the CPU rows, not the times
    assert len(result.notes) == len(cpu)
    assert all("on cpu not compared: current has it only on cuda" in n for n in result.notes)


def test_fp32_and_bf16_rows_are_not_paired() -> None:
    base = profile_records().assign(precision="fp32")
    cur = base.assign(precision="bf16")
    result = compare_records(base, cur)
    assert result.key[-2:] == ("device", "precision")
    assert result.n_matched == 0 and not result.passed
    assert result.notes[0].endswith(
        "on cpu/fp32 not compared: current has it only on cpu/bf16 (device or precision differ)"
    )
    new_rows = compare_records(cur, base).notes
    assert new_rows[0].startswith("baseline row") and "on cpu/bf16" in new_rows[0]


@pytest.mark.parametrize("precision", ["fp32", "FP32", "float32", "torch.float32", "", None])
def test_records_without_precision_are_fp32(precision: str | None) -> None:
    old = profile_records()  # predates the precision column
    new = old.assign(precision=precision)
    for base, cur in ((old, new), (new, old)):
        result = compare_records(base, cur)
        assert result.passed and result.n_matched == len(old), precision
        assert result.notes == ()


def test_precision_survives_csv_with_empty_cells(tmp_path: Path) -> None:
    df = profile_records().assign(precision="fp32")
    df.loc[[0, 1], "precision"] = None  # written before the column was filled in
    df.to_csv(tmp_path / "a.csv", index=False)
    result = compare_records(profile_records(), load_records(tmp_path / "a.csv"))
    assert result.passed and result.n_matched == len(df)


def test_rows_on_different_gpus_of_one_kind_pair() -> None:
    base = profile_records().assign(device="cuda:0")
    cur = base.assign(device="cuda:1", train_step_s=base["train_step_s"] * 1.5)
    result = compare_records(base, cur)
    assert result.n_matched == len(base) and result.notes == ()
    assert set(result.regressions["metric"]) == {"train_step_s"}
    assert compare_records(base, base.assign(device="cuda")).passed


def test_benchmark_runs_with_a_device_are_keyed_on_it() -> None:
    run = records_from_json(pytest_benchmark_run(10**9, 1.10))
    assert compare_records(run, run.assign(device="cuda")).passed  # only one side says
    result = compare_records(run.assign(device="cpu"), run.assign(device="cuda"))
    assert result.key == ("benchmark", "device") and result.n_matched == 0
    assert result.notes[0].startswith("baseline row test_train_step[n3-f16] on cpu")


# --- settings are not measurements -------------------------------------------------------------


def test_settings_that_differ_are_reported_never_regressions() -> None:
    base = profile_records().assign(
        memory_budget_bytes=2**30, memory_headroom_bytes=0, torch_threads=1
    )
    cur = base.drop(columns=["memory_budget_bytes"]).assign(
        memory_headroom_bytes=2**29, torch_threads=4
    )
    assert not {"memory_budget_bytes", "memory_headroom_bytes"} & set(metric_columns(base))
    result = compare_records(base, cur)
    assert result.passed and result.n_matched == len(base)
    settings = result.table[result.table["status"] == "setting"]
    assert sorted(set(settings["metric"])) == [
        "memory_budget_bytes",
        "memory_headroom_bytes",
        "torch_threads",
    ]
    assert len(settings) == 3 * len(base) and not settings["regression"].any()
    assert result.changes().empty  # summarised in the notes instead
    assert result.notes[0] == (
        "setting memory_budget_bytes differs in 8 of 8 matched row(s), e.g. n_blocks=2, "
        "start_filts=8, checkpointing=none: baseline 1073741824, current absent (a setting, "
        "not a measurement: not judged)"
    )
    assert "setting torch_threads differs in 8 of 8" in result.format()
    assert result.format().endswith(
        "PASS: 8 rows matched on 18 key columns (in_channels … device); "
        "0 regression(s), 0 other change(s)"
    )


# --- times taken under load are not judged -----------------------------------------------------


def test_times_under_load_on_either_side_are_not_judged() -> None:
    base = profile_records().assign(timing_note="")
    cur = base.copy()
    cur["train_step_s"] *= 1.5
    cur["train_voxels_per_s"] /= 1.5
    cur.loc[[0, 1], "timing_note"] = "waited for a CPU 62% of the time"
    result = compare_records(base, cur)
    assert set(result.regressions["metric"]) == {"train_step_s", "train_voxels_per_s"}
    assert len(result.regressions) == 2 * (len(base) - 2)  # the quiet rows still fail
    loaded = result.under_load
    assert sorted(loaded["metric"]) == ["train_step_s", "train_step_s", "train_voxels_per_s",
                                        "train_voxels_per_s"]  # fmt: skip
    assert set(loaded["row"]) == {
        "n_blocks=2, start_filts=8, checkpointing=none",
        "n_blocks=2, start_filts=8, checkpointing=blocks",
    }
    assert not loaded["regression"].any()
    assert (
        "2 of 8 matched row(s) timed under load (baseline 0, current 2): their times are not "
        "judged, e.g. n_blocks=2, start_filts=8, checkpointing=none: waited for a CPU 62% of "
        "the time"
    ) in result.notes
    both_loaded = compare_records(base.assign(timing_note="load 3.4 on 2 CPUs"), cur)
    assert both_loaded.passed and len(both_loaded.under_load) == 2 * len(base)
    assert "8 row(s) timed under load, times not judged" in both_loaded.format()


def test_counts_and_memory_are_judged_under_load() -> None:
    base = profile_records().assign(timing_note="load 3.4 on 2 CPUs")
    cur = base.copy()
    cur.loc[0, "train_flops"] += 1
    cur.loc[1, "peak_mem_train_bytes"] *= 1.5
    result = compare_records(base, cur)
    assert sorted(result.regressions["metric"]) == ["peak_mem_train_bytes", "train_flops"]


def test_an_empty_note_read_back_from_csv_is_not_load(tmp_path: Path) -> None:
    base = profile_records().assign(timing_note="")
    base.to_csv(tmp_path / "a.csv", index=False)  # empty cells come back as NaN
    cur = base.assign(train_step_s=base["train_step_s"] * 1.5)
    result = compare_records(load_records(tmp_path / "a.csv"), cur)
    assert len(result.regressions) == len(base) and result.under_load.empty


# --- a sweep's trials.parquet and runs.parquet -------------------------------------------------

SAMPLE = Path(__file__).resolve().parent.parent / "results" / "sample-quick"


def test_a_sweep_s_trials_compare_without_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    trials = SAMPLE / "trials.parquet"
    assert main(["compare", str(trials), str(trials)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        "PASS: 30 rows matched on 4 key columns (config_key … precision); 0 regression(s), "
        "0 other change(s)"
    )
    frame = load_records(trials)
    result = compare_records(frame, frame)
    assert result.key == ("config_key", "role", "device", "precision")
    # several rows per config: its search trial and its confirmation
    assert frame.groupby("config_key").size().max() == 2


def test_a_sweep_s_runs_compare_without_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    runs = SAMPLE / "runs.parquet"
    assert main(["compare", str(runs), str(runs)]) == 0
    assert "PASS: 42 rows matched on config_key, train_seed" in capsys.readouterr().out
    frame = load_records(runs)
    slower = frame.assign(train_s=frame["train_s"] * 1.5)
    result = compare_records(frame, slower)
    assert set(result.regressions["metric"]) == {"train_s"} and len(result.regressions) == 42


def test_trials_that_hold_no_result_of_their_own_are_left_out() -> None:
    base = load_records(SAMPLE / "trials.parquet")
    first = base.iloc[[0]]
    reused = first.assign(trial_number=30, reused_from=0.0, trial_s=0.0)
    failed_then_retried = base.iloc[[1]].assign(trial_number=31, trial_state="FAIL")
    no_config = first.assign(trial_number=32, config_key=None, trial_state="FAIL")
    cur = pd.concat([base, reused, failed_then_retried, no_config], ignore_index=True)
    cur = cur[cur["trial_number"] != 29]  # a confirmation this sweep did not run
    result = compare_records(base, cur)
    assert result.passed and result.n_matched == 29
    assert result.notes[:3] == (
        "current: 1 trial(s) without a config not compared",
        "current: 1 trial(s) that reused another trial's result not compared (the trial they "
        "copied is)",
        "current: 1 trial(s) of a config and role another trial settled not compared (the "
        "COMPLETE or latest one is)",
    )
    only = result.table[result.table["status"] == "only in baseline"]
    assert only["row"].tolist() == [  # the config fields that differ between configs
        "attention=false, merge_mode=concat, normalization=instance, up_mode=resizeconv_linear, "
        "role=confirm"
    ]
    assert (
        "1 config(s) only in baseline, 0 only in current: configs the other sweep did not "
        "train or confirm (sampling), not regressions"
    ) in result.notes
    worse = cur.copy()
    worse.loc[worse["trial_number"] == 1, "status"] = "oom"  # the kept (COMPLETE) trial
    assert compare_records(base, worse).regressions["metric"].tolist() == ["status"]


def test_a_sweep_s_per_mode_counts_and_estimates_are_exact() -> None:
    base = load_records(SAMPLE / "trials.parquet")
    cur = base.copy()
    cur.loc[0, "train_flops__blocks"] += 1
    cur.loc[1, "est_total_train_bytes"] += 512
    result = compare_records(base, cur)
    reg = result.regressions
    assert sorted(zip(reg["metric"], reg["status"], reg["tolerance"], strict=True)) == [
        ("est_total_train_bytes", "changed", 0.0),
        ("train_flops__blocks", "changed", 0.0),
    ]


def test_trials_and_runs_do_not_compare(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", str(SAMPLE / "trials.parquet"), str(SAMPLE / "runs.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot compare a sweep's trials table with its runs" in err


def test_the_sweep_s_column_names_are_the_writer_s() -> None:
    from unetbench.gate import _sweep
    from unetbench.sweep import export, record

    assert _sweep.CONFIG_KEY == record.CONFIG_KEY and _sweep.ROLE == record.ROLE
    assert {_sweep.TRIAL_NUMBER, _sweep.CONFIG_KEY, _sweep.TRAIN_SEED} <= set(export.RUN_COLUMNS)
    assert {_sweep.TRIAL_NUMBER, _sweep.TRIAL_STATE, _sweep.REUSED_FROM} <= set(record.LEADING)


def test_a_sweep_s_per_mode_times_follow_their_mode_s_note() -> None:
    base = load_records(SAMPLE / "trials.parquet").assign(
        timing_note="", timing_note__none="", timing_note__blocks=""
    )
    cur = base.assign(
        train_step_s__none=base["train_step_s__none"] * 2,
        train_step_s__blocks=base["train_step_s__blocks"] * 2,
    )
    cur.loc[cur["trial_number"] == 0, "timing_note__none"] = "load 3.4 on 2 CPUs"
    result = compare_records(base, cur)
    loaded = result.under_load
    # trial 0's times of mode none, not those of mode blocks
    assert loaded["metric"].tolist() == ["train_step_s__none", "train_voxels_per_s__none"]
    reg = result.regressions
    assert set(reg["metric"]) == {"train_step_s__none", "train_step_s__blocks"}
    assert len(reg) == 2 * 30 - 1
    assert (
        "1 of 30 matched row(s) timed under load (baseline 0, current 1): their times are not "
        "judged, e.g. attention=true, merge_mode=add, normalization=instance, "
        "up_mode=transpose, role=search: load 3.4 on 2 CPUs"
    ) in result.notes


def test_spreads_and_bookkeeping_of_a_sweep_are_not_metrics() -> None:
    chosen = metric_columns(load_records(SAMPLE / "trials.parquet"))
    assert not [c for c in chosen if "_iqr_" in c]  # train_step_iqr_s__none too
    assert not {"trial_s", "estimate_s", "profile_s", "memory_usable_bytes"} & set(chosen)
    assert {"train_step_s__none", "train_flops__blocks", "est_total_train_bytes"} <= set(chosen)
