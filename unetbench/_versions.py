"""The major versions of dependencies whose private parts unetbench uses, as tested.

The sweep builds on Optuna's storage internals (its trial cache, its gRPC client): a new major
release may change them without notice. :func:`require_tested` turns an untested major into
one clear line at sweep start instead of an ``AttributeError`` deep inside a trial. Reads the
installed version from package metadata: importing this module imports neither torch nor
Optuna.
"""

from __future__ import annotations

from importlib import metadata

from unetbench._errors import UsageError

__all__ = ["TESTED_MAJORS", "require_tested"]

#: distribution -> the major versions the test suite passes with (pyproject.toml bounds the
#: same; constraints.txt holds the exact versions).
TESTED_MAJORS: dict[str, tuple[int, ...]] = {"optuna": (5,)}


def require_tested(dist: str, version: str | None = None) -> None:
    """Raise UsageError unless ``dist`` (installed, or at ``version``) has a tested major.

    ``require_tested("optuna", "6.0.0")`` raises: ``optuna 6.0.0 is installed, but unetbench
    is tested with optuna 5.x only (...); install a tested version: pip install
    'optuna>=5,<6'``.
    """
    if version is None:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise UsageError(f"{dist} is not installed: pip install -e . in the checkout") from None
    majors = TESTED_MAJORS[dist]
    head = version.split(".", 1)[0]
    if head.isdigit() and int(head) in majors:
        return
    tested = " or ".join(f"{m}.x" for m in majors)
    spec = f"{dist}>={min(majors)},<{max(majors) + 1}"
    raise UsageError(
        f"{dist} {version} is installed, but unetbench is tested with {dist} {tested} only "
        f"(it uses Optuna's internals); install a tested version: pip install '{spec}'"
    )
