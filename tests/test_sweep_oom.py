"""A host out-of-memory inside a trial is that trial's outcome, not the end of the sweep.

The sweep runs as a real `unetbench sweep` process under an address-space limit (`prlimit
--as`), so torch's CPU allocator really fails ("DefaultCPUAllocator: can't allocate memory").
One config's first activation (1024 channels x 32x128x128 voxels, 2 GiB) cannot be allocated
under 3 GB; the other (2 channels) trains. The memory budget is set far above both so that the
estimate lets both train.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from unetbench.oom import is_oom

STUDY = """
name = "oom"
n_trials = 2
seed = 0
memory_budget = "1TiB"

[search]
start_filts = [2, 1024]

[fixed]
n_blocks = 2

[data]
kind = "synthetic"
seed = 0
shape = [32, 128, 128]
n_train = 1
n_val = 1

[train]
patch_shape = [32, 128, 128]
batch_size = 1
steps = 2
threads = 1

[profile]
checkpointing = ["none"]
options = { timing = false, count_flops = false }

[objectives]
val_dice = "maximize"
peak_mem_train_bytes = "minimize"

[sampler]
name = "random"
"""
ADDRESS_SPACE_BYTES = 3_000_000_000


@pytest.mark.slow  # a real sweep process under prlimit, about a minute: CI runs it with -m slow
def test_cpu_out_of_memory_is_an_infeasible_trial_and_the_sweep_goes_on(tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    spec = tmp_path / "oom.toml"
    spec.write_text(STUDY)
    proc = subprocess.run(
        [
            "prlimit",
            f"--as={ADDRESS_SPACE_BYTES}",
            sys.executable,
            "-m",
            "unetbench.cli.main",
            "sweep",
            str(spec),
            "--no-progress",
            "--results-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    frame = pd.read_parquet(tmp_path / "r" / "oom" / "trials.parquet").set_index("start_filts")
    assert sorted(frame.index) == [2, 1024], "the seed no longer proposes both configs"
    assert list(frame["trial_state"]) == ["COMPLETE", "COMPLETE"]
    big, small = frame.loc[1024], frame.loc[2]
    assert big["status"] == "oom" and not big["feasible"]
    assert "can't allocate memory" in big["reason"]
    assert small["status"] == "ok" and small["feasible"]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8"), True),
        (OSError(12, "Cannot allocate memory"), False),  # not from an allocation in a trial
        (RuntimeError("cannot allocate memory for the workspace"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_oom(exc: BaseException, expected: bool) -> None:
    assert is_oom(exc) is expected


def test_torch_out_of_memory_error_is_oom() -> None:
    import torch

    assert is_oom(torch.OutOfMemoryError("CUDA error"))
