"""The `unetbench` pytest plugin, run the way users run it: in a separate pytest session."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# The plugin is normally loaded through its pytest11 entry point; load it by hand otherwise.
_INSTALLED = any(e.name == "unetbench" for e in entry_points(group="pytest11"))
PLUGIN = [] if _INSTALLED else ["-p", "unetbench.gate.pytest_plugin"]

USER_TEST = """
from unetbench import UNetConfig

def test_small_unet(unet_gate):
    cfg = UNetConfig(dim=2, n_blocks=2, start_filts={filts})
    metrics = unet_gate.check_config("small_unet", cfg, (16, 16), checkpointing="blocks")
    assert metrics["params"] > 0
"""


@pytest.fixture(scope="module")
def profiler_loaded() -> None:
    """Profile once in this process first: in-process pytest runs drop the modules they import
    when they finish, and torch cannot import its lazily loaded operator libraries twice."""
    from unetbench import UNetConfig
    from unetbench.gate import deterministic_metrics

    deterministic_metrics(UNetConfig(dim=2, n_blocks=2, start_filts=4), (16, 16))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", *args)


def test_normal_runs_untouched(pytester: pytest.Pytester) -> None:
    """A suite that never uses the fixture: no file written, nothing heavy imported."""
    pytester.makepyfile(
        """
        import sys

        def test_plain():
            heavy = {"pandas", "unetbench.gate.compare", "unetbench.profiler"}
            assert not heavy & set(sys.modules)
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "unetbench-baseline.json").exists()
    help_text = pytester.runpytest(*PLUGIN, "--help").stdout.str()
    assert "--unetbench-baseline" in help_text and "--unetbench-update-baseline" in help_text


@pytest.mark.usefixtures("profiler_loaded")
def test_record_then_check_then_catch_a_change(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST.format(filts=4))
    baseline = pytester.path / "ci" / "gate.json"
    recorded = run(pytester, f"--unetbench-baseline={baseline}", "--unetbench-update-baseline")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["*recorded 1 gate entries into*gate.json*"])
    doc = json.loads(baseline.read_text())
    entry = doc["entries"]["small_unet"]
    assert entry["setting"]["checkpointing"] == "blocks" and entry["setting"]["start_filts"] == 4
    assert set(entry["metrics"]) == {
        "params",
        "fwd_macs",
        "fwd_flops",
        "train_flops",
        "est_peak_mem_train_bytes",
    }
    assert doc["environment"]["torch_version"]

    run(pytester, f"--unetbench-baseline={baseline}").assert_outcomes(passed=1)

    pytester.makepyfile(test_user=USER_TEST.format(filts=6))  # a wider first block
    failed = run(pytester, f"--unetbench-baseline={baseline}")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(
        [
            "*unetbench gate 'small_unet' regressed against*",
            "*params*exact*changed (REGRESSION)*",
            "*--unetbench-update-baseline*",
        ]
    )
    assert json.loads(baseline.read_text()) == doc  # checking never rewrites the file


@pytest.mark.usefixtures("profiler_loaded")
def test_missing_entry_or_file_fails_with_instructions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST.format(filts=4))
    result = run(pytester)  # default path: unetbench-baseline.json in the rootdir
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*unetbench-baseline.json does not exist*'small_unet'*"])


def test_ratio_metrics_tolerance_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nunetbench_baseline = gate/ratios.json\n")
    test = """
        def test_ratio(unet_gate):
            unet_gate.check_metrics("step_vs_reference", {{"step_ratio": {value}}})
    """
    pytester.makepyfile(test_ratio=test.format(value=1.0))
    run(pytester, "--unetbench-update-baseline").assert_outcomes(passed=1)
    assert (pytester.path / "gate" / "ratios.json").is_file()
    pytester.makepyfile(test_ratio=test.format(value=1.15))
    run(pytester).assert_outcomes(passed=1)  # +15% within the default 20%
    pytester.makepyfile(test_ratio=test.format(value=1.5))
    worse = run(pytester)
    worse.assert_outcomes(failed=1)
    worse.stdout.fnmatch_lines(["*step_ratio*+50.00%*20%*worse (REGRESSION)*"])
    run(pytester, "--unetbench-ratio-tolerance=0.6").assert_outcomes(passed=1)


def test_time_ratio_measured_in_the_same_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time

        def slow():
            time.sleep(0.02)

        def fast():
            time.sleep(0.002)

        def test_within_bound(unet_gate):
            ratio = unet_gate.check_time_ratio("slow_vs_fast", slow, fast, rounds=3)
            assert ratio > 2

        def test_bound_exceeded(unet_gate):
            unet_gate.check_time_ratio("bounded", slow, fast, rounds=3, max_ratio=2.0)
        """
    )
    result = run(pytester, "--unetbench-update-baseline")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*unetbench gate 'bounded': time ratio * > max_ratio 2.0*"])
    entries = json.loads((pytester.path / "unetbench-baseline.json").read_text())["entries"]
    assert set(entries) == {"slow_vs_fast"} and entries["slow_vs_fast"]["metrics"]["time_ratio"] > 2


@pytest.mark.usefixtures("profiler_loaded")
def test_bad_baseline_file_is_reported(pytester: pytest.Pytester, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"entries": {}}')
    pytester.makepyfile(test_user=USER_TEST.format(filts=4))
    result = run(pytester, f"--unetbench-baseline={bad}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*not a unetbench baseline file*"])


def test_time_ratio_rejects_bad_rounds() -> None:
    from unetbench.gate.pytest_plugin import time_ratio

    with pytest.raises(ValueError, match=r"rounds >= 1.*rounds=0"):
        time_ratio(lambda: None, lambda: None, rounds=0)


def test_bad_ratio_tolerance_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nunetbench_ratio_tolerance = lots\n")
    pytester.makepyfile("def test_x():\n    assert True\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unetbench ratio tolerance must be a number >= 0*'lots'*"])


def test_loading_the_plugin_does_not_import_torch() -> None:
    # pytest loads the plugin in every session of a project that has unetbench installed.
    code = "import sys, unetbench.gate.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_time_ratio_summary_of_recorded_rounds() -> None:
    from unetbench.gate.pytest_plugin import TimeRatio

    ratio = TimeRatio((1.0, 2.0, 3.0, 4.0, 100.0))
    assert ratio.median == 3.0
    assert ratio.iqr == (1.5, 52.0)  # statistics.quantiles' default (exclusive) method
    assert ratio.as_info("r") == {"r": 3.0, "r_iqr": [1.5, 52.0], "r_rounds": ratio.ratios}
    assert str(TimeRatio((1.25,))) == "x1.250 (IQR 1.250-1.250, 1 rounds)"
