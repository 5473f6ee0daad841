"""scripts/gpu-check.sh: the GPU check's quick CPU run passes, and bad arguments exit 2."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _load_gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


gpu_check = _load_gpu_check()


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def test_quick_cpu_run_passes(tmp_path: Path) -> None:
    from unetbench.model import policy_names

    out = tmp_path / "out"
    result = _run("--device", "cpu", "--quick", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    df = pd.read_csv(out / "gpu-check.csv")
    keys = ["config", "checkpointing", "precision"]
    expected = {
        (c, p, q)
        for c in gpu_check.CONFIGS
        for p in gpu_check.QUICK.policies
        for q in gpu_check.PRECISIONS
    }
    assert len(df) == len(expected)
    assert set(df[keys].itertuples(index=False, name=None)) == expected
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", [*keys, "reason"]]
    assert df["within_tolerance"].all()
    # On the CPU the estimate is the tracked peak: exact in fp32, within 0.1% in bf16.
    assert (df["alloc_est_ratio"] - 1).abs().max() < 1e-3
    assert (df.loc[df["precision"] == "fp32", "alloc_est_ratio"] == 1).all()
    assert {"est_peak_mem_train_bytes", "reserved_est_ratio", "train_step_s"} <= set(df.columns)
    auto = df[df["checkpointing"] == "auto"]
    assert auto["checkpointing_chosen"].isin(policy_names()).all()

    text = (out / "gpu-check.txt").read_text()
    assert text in result.stdout  # the printed table is the one saved
    assert "PASS" in text
    table = [
        line.split() for line in text.splitlines() if line.startswith(tuple(gpu_check.CONFIGS))
    ]
    assert len(table) == len(expected)
    assert {row[1] for row in table} == set(gpu_check.PRECISIONS)
    assert {row[2] for row in table} == set(gpu_check.QUICK.memory_formats)
    auto_rows = [row for row in table if row[3] == "auto"]
    assert auto_rows and all(row[4] in policy_names() for row in auto_rows)
    # The device checks ran on the CPU too (the allocator history is CUDA's alone): every
    # patch planned for the budget trained three steps, and every policy was timed.
    trained = [line for line in text.splitlines() if "3 steps" in line]
    assert len(trained) == 2 * 6 and all(line.endswith("3 steps ok") for line in trained)
    timed = [line for line in text.splitlines() if " median " in line and " ms, x" in line]
    assert len(timed) == 2 * 5
    assert "gap-allocations" not in text


def test_bad_argument_exits_2_with_one_line() -> None:
    result = _run("--no-such-option", timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--no-such-option" in lines[0]


@pytest.mark.parametrize(
    "args",
    [["--configs", "nope"], ["--tolerance", "x"], ["--tolerance", "1.5"], ["--quick", "extra"]],
)
def test_bad_arguments_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("gpu_check.py: error:")


def test_failures_flag_off_and_unmeasured_rows() -> None:
    mib = 2**20
    rows = pd.DataFrame(
        {
            "est_peak_mem_train_bytes": [100 * mib, 100 * mib, 100 * mib, 100 * mib],
            "peak_mem_train_bytes": [104 * mib, 106 * mib, math.nan, math.nan],
            "peak_reserved_train_bytes": [110 * mib, 120 * mib, math.nan, math.nan],
            "train_step_s": [0.1, 0.1, math.nan, math.nan],
            "status": ["ok", "ok", "ok", "oom"],
        }
    )
    df = gpu_check.add_ratios(rows)
    assert df["alloc_est_ratio"].iloc[0] == pytest.approx(1.04)
    assert df["reserved_est_ratio"].iloc[1] == pytest.approx(1.2)
    off, failed = gpu_check.failures(df, 0.05)
    assert list(off.index) == [1, 2]  # 6% off, and an ok row without a measurement
    assert list(failed.index) == [3]
    off, _ = gpu_check.failures(df, 0.10)
    assert list(off.index) == [2]


@pytest.mark.usefixtures("one_thread")  # main sets one thread for a quick CPU run: restored
def test_a_config_that_fails_is_reported_and_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import unetbench.profiler

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(unetbench.profiler, "profile", broken)
    code = gpu_check.main(["--device", "cpu", "--quick", "--configs", "2d", "--out", str(tmp_path)])
    assert code == 1
    df = pd.read_csv(tmp_path / "gpu-check.csv")
    assert len(df) == len(gpu_check.QUICK.policies) * len(gpu_check.PRECISIONS)
    assert (df["status"] == "error").all() and df["reason"].str.contains("boom").all()
    out = capsys.readouterr().out
    assert "rows not measured" in out and "FAIL" in out


@pytest.mark.usefixtures("one_thread")
def test_an_estimate_off_its_peak_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import unetbench.profiler

    def off_by_ten_percent(*args: object, **kwargs: object) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "checkpointing": "auto",
                    "checkpointing_chosen": "lean",
                    "precision": precision,
                    "status": "ok",
                    "reason": "",
                    "est_peak_mem_train_bytes": 100 * 2**20,
                    "peak_mem_train_bytes": (100 if precision == "fp32" else 110) * 2**20,
                    "peak_reserved_train_bytes": 128 * 2**20,
                    "train_step_s": 0.01,
                }
                for precision in gpu_check.PRECISIONS
            ]
        )

    monkeypatch.setattr(unetbench.profiler, "profile", off_by_ten_percent)
    code = gpu_check.main(["--device", "cpu", "--quick", "--configs", "2d", "--out", str(tmp_path)])
    assert code == 1
    df = pd.read_csv(tmp_path / "gpu-check.csv")
    assert list(df["within_tolerance"]) == [True, False]
    out = capsys.readouterr().out
    assert "2d bf16 auto (chose lean): est 100.0 MiB, alloc 110.0 MiB, alloc/est 1.1000" in out
    assert "FAIL: 1/2 rows" in out


def _load_device_module() -> ModuleType:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check_device
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return gpu_check_device


def test_fake_peak_storages_are_the_estimate_less_the_parameters() -> None:
    """The fake side of the allocator comparison: the storages alive at the fake step's peak
    add up to the estimate (parameters and buffers, made before the step, aside)."""
    from unetbench import UNetConfig
    from unetbench.profiler import estimate_train_memory

    device = _load_device_module()
    cfg = UNetConfig(n_blocks=2, start_filts=4)
    from unetbench.profiler import _step
    from unetbench.profiler.memory import model_bytes

    params = model_bytes(_step.build_model(cfg))  # parameters and buffers
    for policy in ("lean", "cheap"):
        alive = device.fake_peak_storages(cfg, (1, 1, 8, 16, 16), policy, "bf16", cuda=True)
        estimate = estimate_train_memory(cfg, (8, 16, 16), 1, policy, "bf16", "cuda")
        assert sum(n for n, _ in alive) + params == estimate
        assert all(op.startswith("aten.") for _, op in alive)


def test_unmatched_names_the_device_blocks_the_fake_step_lacks() -> None:
    device = _load_device_module()
    fake = [(1000, "aten.convolution"), (512, "aten.relu"), (4096, "aten.cat")]
    blocks = [(1024, "conv"), (512, "relu"), (8192, "workspace"), (4096, "cat"), (600, "x")]
    assert device.unmatched(blocks, fake) == [(8192, "workspace"), (600, "x")]
