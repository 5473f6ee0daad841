"""Environment columns: the git commit is that of the working directory's repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from unetbench.profiler.env import git_commit


def make_repo(path: Path) -> str:
    path.mkdir()
    (path / "model.py").write_text("x = 1\n")
    git = ["git", "-C", str(path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    out = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_git_commit_is_the_working_directory_s_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = make_repo(tmp_path / "users-project")
    (tmp_path / "users-project" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "users-project" / "sub")
    assert git_commit() == head
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert git_commit() == "" and git_commit(tmp_path / "users-project") == head
