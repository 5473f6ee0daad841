"""Names a package imports on first use (PEP 562 module ``__getattr__``), so importing the
package stays cheap: no torch for ``import unetbench``, no pandas for the pytest plugin."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, names: Mapping[str, str], before: Callable[[str], None] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` (a module path) on first use and
    returns its attribute ``name``; ``before(module)`` runs first (e.g. a version check)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            if before is not None:
                before(names[name])
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
