"""The committed baseline of deterministic metrics must match exactly, on every CI run.

params, fwd_macs, fwd_flops, train_flops and est_peak_mem_train_bytes of the fixed regression
set (tests/regression_suite.py) are counted on fake tensors / small inputs (no timing) and
compared with results/baselines/regression.json. A difference means the model, the counting or
torch changed: if intended, run `.venv/bin/python scripts/update-baselines.py` and commit
the file.
"""

from __future__ import annotations

import pytest
from regression_suite import BASELINE_PATH, CASES, Case, compute_entries

from unetbench.config import ACTIVATIONS, CONV_MODES, MERGE_MODES, UP_MODES
from unetbench.gate import Baseline
from unetbench.model import policy_names


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    loaded = Baseline.load(BASELINE_PATH)
    assert loaded.exists, f"{BASELINE_PATH} is missing; create it with scripts/update-baselines.py"
    return loaded


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_deterministic_metrics_match_baseline_exactly(case: Case, baseline: Baseline) -> None:
    for name, entry in compute_entries([case]).items():
        assert name in baseline.entries, f"{name} missing from {BASELINE_PATH}"
        assert baseline.entries[name]["setting"] == entry["setting"], name
        result = baseline.compare(name, entry["metrics"])
        assert set(result.table["status"]) == {"same"}, (
            f"{name} differs from {BASELINE_PATH}:\n{result.format()}\n"
            f"{baseline.environment_note()}\n"
            "If intended: .venv/bin/python scripts/update-baselines.py, then commit the file."
        )


def test_baseline_has_no_stale_entries(baseline: Baseline) -> None:
    expected = {case.entry_name(p) for case in CASES for p in case.checkpointing}
    assert set(baseline.entries) == expected


def test_cases_cover_every_option() -> None:
    configs = [case.config for case in CASES]
    seen = {
        "up_mode": {c.up_mode for c in configs},
        "merge_mode": {c.merge_mode for c in configs},
        "activation": {c.activation for c in configs},
        "conv_mode": {c.conv_mode for c in configs},
        "normalization": {c.normalization.rstrip("0123456789") for c in configs},
    }
    assert seen["up_mode"] == set(UP_MODES)
    assert seen["merge_mode"] == set(MERGE_MODES)
    assert seen["activation"] == set(ACTIVATIONS)
    assert seen["conv_mode"] == set(CONV_MODES)
    assert seen["normalization"] == {"batch", "group", "instance", "none"}
    assert any(c.normalization[5:].isdigit() for c in configs if c.normalization != "group")
    assert {c.dim for c in configs} == {2, 3}
    assert {c.attention for c in configs} == {False, True}
    assert {c.full_norm for c in configs} == {False, True}
    assert any(c.planar_blocks for c in configs)
    assert any(c.in_channels > 1 and c.out_channels > 2 for c in configs)
    assert {p for case in CASES for p in case.checkpointing} == set(policy_names())
