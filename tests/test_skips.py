"""tests/skips.py: a missing optional test dependency skips locally and fails under CI=true."""

from __future__ import annotations

import pytest
from skips import require

MISSING = "unetbench_no_such_module"


def test_require_returns_the_module() -> None:
    assert require("json", "n/a").__name__ == "json"


def test_missing_module_skips_locally_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=rf"{MISSING}.*pip install it"):
        require(MISSING, "pip install it")


@pytest.mark.parametrize("value", ["true", "True", " true "])
def test_missing_module_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"pip install it.*CI=true"):
        require(MISSING, "pip install it")
