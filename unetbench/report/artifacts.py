"""The report's plots as Optuna artifacts of the study, so optuna-dashboard shows them.

Each PNG is uploaded with :func:`optuna.artifacts.upload_artifact` to a
:class:`~optuna.artifacts.FileSystemArtifactStore` as a study-level artifact. The storage is
the study's own (default ``<results>/<study>/study.db`` when it exists; any storage string
the sweep takes, :mod:`unetbench.sweep.storage`), the folder the one the sweep keeps its
runs' states in (default the study's ``[storage] artifacts``, else
``<results>/<study>/artifacts``). A report run again replaces the bytes of an artifact of the
same file name (same artifact id) or leaves it alone when they are equal, so artifacts never
pile up. Without a reachable storage the report is written all the same, and says why it
attached nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from unetbench._errors import UnetbenchError

__all__ = ["ATTACH_COLUMNS", "attach_plots", "default_artifacts", "default_storage"]

log = logging.getLogger(__name__)

#: Columns of the table :func:`attach_plots` returns, one row per plot.
ATTACH_COLUMNS = ("file", "action", "artifact_id", "study", "storage", "artifact_dir", "reason")
# Seconds a report waits for a storage outage or server before it gives up attaching.
_WAIT_S = 20


def default_storage(results_dir: Path) -> str | None:
    """``sqlite:///<results_dir>/study.db`` when that file exists (the sweep's default)."""
    db = results_dir / "study.db"
    return f"sqlite:///{db.resolve()}" if db.is_file() else None


def default_artifacts(results_dir: Path, spec: Mapping[str, object]) -> Path:
    """The folder the sweep keeps artifacts in: the study's ``[storage] artifacts``, else
    ``<results_dir>/artifacts``."""
    folder = spec.get("artifacts")
    return Path(str(folder)) if folder else results_dir / "artifacts"


def _table(files: Sequence[Path], action: str, **fields: str) -> pd.DataFrame:
    rows = [{"file": p.name, "action": action, "artifact_id": "", **fields} for p in files]
    return pd.DataFrame(rows, columns=list(ATTACH_COLUMNS)).fillna("")


def attach_plots(
    files: Sequence[Path], *, study: str, storage: str | None, artifact_dir: Path
) -> pd.DataFrame:
    """Attach ``files`` to ``study`` in ``storage`` as artifacts stored under ``artifact_dir``.

    Returns one row per file: ``action`` ``added``, ``replaced`` (new bytes under the
    existing artifact id of that file name), ``unchanged`` or ``not attached`` (``reason``
    says why: no storage, unreachable, no such study), with ``artifact_id`` and where.
    """
    where = {"study": study, "artifact_dir": str(artifact_dir)}
    if not files:
        return _table(files, "not attached")
    if storage is None:
        why = "no storage: the study has no study.db here; give --storage"
        return _table(files, "not attached", storage="", reason=why, **where)
    from unetbench.sweep.storage import open_storage, redact, storage_file

    try:
        local = storage_file(storage)
        shown = redact(storage)
        if local is not None and not local.is_file():
            raise UnetbenchError(f"{local} does not exist")
        # The folder argument names the default SQLite file's home: unused for a given URL.
        store = open_storage(storage, Path("."), connect_timeout=_WAIT_S,
                             defaults=(_WAIT_S // 2, _WAIT_S))  # fmt: skip
        shown = store.url
        actions = _upload(files, study, store.storage, artifact_dir)
    except (UnetbenchError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("plots not attached to study %s: %s", study, reason)
        return _table(files, "not attached", storage=redact(storage), reason=reason, **where)
    rows = [
        {"file": p.name, "action": a, "artifact_id": i, "storage": shown, "reason": "", **where}
        for p, (a, i) in zip(files, actions, strict=True)
    ]
    return pd.DataFrame(rows, columns=list(ATTACH_COLUMNS))


def _upload(
    files: Sequence[Path], study_name: str, storage: object, artifact_dir: Path
) -> list[tuple[str, str]]:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)  # type: ignore[arg-type]
    except KeyError:
        raise UnetbenchError(f"the storage has no study named {study_name!r}") from None
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    attrs = study._storage.get_study_system_attrs(study._study_id)
    existing: dict[str, str] = {}
    for key, value in attrs.items():
        meta = json.loads(value) if key.startswith(ARTIFACTS_ATTR_PREFIX) else None
        if isinstance(meta, dict):  # optuna-dashboard marks a deleted one with null
            existing.setdefault(str(meta["filename"]), str(meta["artifact_id"]))
    actions = []
    for path in files:
        artifact_id = existing.get(path.name)
        if artifact_id is None:
            new_id = upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=study
            )
            actions.append(("added", new_id))
            continue
        data = path.read_bytes()
        try:
            with store.open_reader(artifact_id) as reader:
                same = reader.read() == data
        except Exception:  # the file is gone (deleted by hand): write it again
            same = False
        if not same:
            with path.open("rb") as fh:
                store.write(artifact_id, fh)
        actions.append(("unchanged" if same else "replaced", artifact_id))
    log.debug("plots attached to study %s: %s", study_name, actions)
    return actions
