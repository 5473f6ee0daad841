"""A study describes itself: the sweep stores the resolved spec, the report reads it back."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from unetbench._errors import ConfigError, UsageError
from unetbench.studyinfo import SCHEMA, Objective, StudyInfo, read_study_json
from unetbench.sweep import load_study_spec
from unetbench.sweep.describe import describe, record_description, stored_description
from unetbench.sweep.storage import open_storage

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("name", ["quick", "smoke", "gpu", "anisotropic"])
def test_every_shipped_study_describes_itself_losslessly(name: str) -> None:
    spec = load_study_spec(STUDIES / f"{name}.toml")
    info = describe(spec)
    assert info.name == spec.name and info.fingerprint == spec.fingerprint()
    assert info.objectives == tuple(Objective(c, d) for c, d in spec.objectives)
    assert info.memory_budget_bytes == spec.memory_budget_bytes
    assert list(info.search) == list(spec.search)
    stored = json.loads(json.dumps(info.to_dict()))
    assert StudyInfo.from_dict(stored, "x").to_dict() == info.to_dict()


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_description_is_stored_in_the_study_and_next_to_the_trials(
    tmp_path: Path, kind: str
) -> None:
    spec = load_study_spec(STUDIES / "smoke.toml")
    url = None if kind == "sqlite" else str(tmp_path / "journal.log")
    store = open_storage(url, tmp_path / "smoke")
    study = optuna.create_study(storage=store.storage, study_name="smoke", load_if_exists=True)
    assert stored_description(study) is None
    path = record_description(study, spec, tmp_path / "smoke")
    again = optuna.load_study(study_name="smoke", storage=store.storage)
    from_storage = stored_description(again)
    from_file = read_study_json(path.parent)
    assert from_storage is not None
    assert from_storage.to_dict() == from_file.to_dict() == describe(spec).to_dict()
    assert from_file.source == str(path)


def test_foreign_or_broken_descriptions_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"study\.json does not exist"):
        read_study_json(tmp_path)
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_study_json(tmp_path)
    (tmp_path / "study.json").write_text(json.dumps({"schema": SCHEMA, "name": "x"}))
    with pytest.raises(ConfigError, match="malformed study description"):
        read_study_json(tmp_path)
    with pytest.raises(ConfigError, match="'maximize' or 'minimize'"):
        Objective("val_dice", "up")
