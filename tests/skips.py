"""Skipping for a missing optional test dependency, except in CI, where it fails instead.

A skipped oracle or server check would otherwise let CI pass without having run it. CI sets
``CI=true`` (as GitHub Actions, GitLab CI and .ci/run do); locally such tests skip with the
same install hint.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["ELEKTRONN3_INSTALL", "in_ci", "require", "skip_or_fail"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it in CI, where a skipped check must not pass unnoticed."""
    if in_ci():
        pytest.fail(f"{reason} (failing instead of skipping because CI=true)", pytrace=False)
    pytest.skip(reason)


def require(module: str, install: str) -> ModuleType:
    """Import ``module`` or skip (fail under CI=true) with the command that installs it.

    Works at module level (skips the whole file) and inside a test, like
    ``pytest.importorskip``. Import warnings of the optional package are silenced: they are
    the package's business, not the test's.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        skip_or_fail(f"{module} is not installed ({exc}); install it with: {install}")


#: The reference U-Net (a test oracle only; its own dependencies are not needed), as
#: scripts/setup.sh installs it.
ELEKTRONN3_INSTALL = ".venv/bin/python -m pip install --no-deps elektronn3==0.1.1 colorlog"
