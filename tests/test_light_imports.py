"""Light things stay light: building the command line and reading configs, reports and
comparisons import no torch (a bare `import torch` costs seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unetbench.cli.main import SUBCOMMANDS


@pytest.mark.parametrize(
    "code",
    [
        "from unetbench.cli.main import build_parser; build_parser()",
        "import unetbench.config; unetbench.config.UNetConfig(n_blocks=2).to_json()",
        "import unetbench.report, unetbench.gate.compare",
        "import unetbench, unetbench.units, unetbench.device_names, unetbench.shapes",
        "from unetbench.device_names import parse_devices; parse_devices('cuda:0,cuda:1')",
        # the Optuna version check reads package metadata: it imports neither torch nor Optuna
        "from unetbench._versions import require_tested; require_tested('optuna'); "
        "assert 'optuna' not in sys.modules",
    ],
)
def test_no_torch(code: str) -> None:
    probe = f"import sys; {code}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("argv", [[], *([name] for name in SUBCOMMANDS)], ids=str)
def test_help_runs_without_torch(argv: list[str]) -> None:
    """``unetbench --help`` and every ``unetbench SUBCOMMAND --help``."""
    probe = (
        "import sys\n"
        "from unetbench.cli.main import main\n"
        f"try:\n    main({[*argv, '--help']!r})\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False"


def test_counting_macs_shows_users_no_fvcore_warnings() -> None:
    probe = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "from unetbench import UNet, UNetConfig\n"
        "from unetbench.profiler.flops import count_fwd_macs\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    count_fwd_macs(UNet.from_config(UNetConfig(n_blocks=2, start_filts=4)),\n"
        "                   torch.randn(1, 1, 8, 8, 8))\n"
        "print([str(w.message)[:60] for w in seen if 'jit' in str(w.message)])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_and_compare_runs_import_no_torch(tmp_path: Path) -> None:
    """A whole `unetbench report` (tables and plots) and `unetbench compare` run."""
    from test_report import make_trials, sweep_shaped, write_study

    results = write_study(tmp_path / "demo", sweep_shaped(make_trials()))
    make_trials().to_parquet(tmp_path / "records.parquet")
    probe = (
        "import sys\n"
        "from unetbench.cli.main import main\n"
        f"codes = [main(['report', {str(results)!r}]),\n"
        f"         main(['compare', {str(tmp_path / 'records.parquet')!r},"
        f" {str(tmp_path / 'records.parquet')!r}])]\n"
        "print(codes, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[0, 0] False", out.stderr
