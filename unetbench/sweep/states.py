"""Trained states of a study's runs, kept so a promoted config continues instead of restarting.

A run that may be promoted (successive halving, :mod:`unetbench.sweep.rungs`) stores its
:class:`~unetbench.train.TrainState` as an Optuna artifact of its trial, in a
:class:`~optuna.artifacts.FileSystemArtifactStore` (``--artifacts DIR`` or ``[storage]
artifacts``; default ``<results-dir>/<study>/artifacts``). Its row names the artifact per seed
(``state_artifacts``), so any worker that can reach the folder (a file system every machine
mounts) can continue the run. A state that cannot be read (another machine's local folder, a
deleted file) is not an error: the promotion retrains from the start with the same seed, and
its row says so (``resumed_steps = 0``, ``state_missing``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

__all__ = ["StateStore"]

_LOG = logging.getLogger(__name__)


class StateStore:
    """Save and load run states as artifacts under ``root`` (created when first written)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._store: FileSystemArtifactStore | None = None

    def _artifacts(self) -> FileSystemArtifactStore:
        self.root.mkdir(parents=True, exist_ok=True)  # again each time: it may be removed
        if self._store is None:
            self._store = FileSystemArtifactStore(str(self.root))
        return self._store

    def save(self, study: optuna.Study, trial_id: int, blob: bytes, name: str) -> str | None:
        """Store ``blob`` as an artifact of the trial; returns its artifact id, or None when
        the folder cannot be written (a promotion of this run then retrains from the start;
        the trial's own result stands)."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, name)
                Path(path).write_bytes(blob)
                frozen = study._storage.get_trial(trial_id)
                return upload_artifact(
                    artifact_store=self._artifacts(),
                    file_path=path,
                    study_or_trial=frozen,
                    storage=study._storage,
                    mimetype="application/octet-stream",
                )
        except OSError as exc:
            _LOG.warning("state of trial %s not kept (%s): a promotion retrains it", name, exc)
            return None

    def load(self, artifact_id: str) -> bytes | None:
        """The stored bytes, or None when this machine cannot read them."""
        try:
            with self._artifacts().open_reader(artifact_id) as reader:
                return reader.read()
        except Exception as exc:  # a missing file or folder: the caller retrains
            _LOG.warning("state %s cannot be read (%s): training from the start", artifact_id, exc)
            return None
