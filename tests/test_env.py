"""Environment columns: the git commit is unetbench's own, never the user's."""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_git_commit_is_unetbench_s_own_checkout_only(tmp_path: Path) -> None:
    """Installed inside a user's repository, unetbench must not report the user's commit."""
    from unetbench.profiler.env import commit_of_checkout

    def repo(path: Path, name: str) -> str:
        path.mkdir()
        (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
        git = ["git", "-C", str(path), "-c", "user.email=t@t", "-c", "user.name=t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "x"], check=True)
        out = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip()

    ours = repo(tmp_path / "unetbench-src", "unetbench")
    repo(tmp_path / "users-project", "my-lab-code")
    assert commit_of_checkout(tmp_path / "unetbench-src") == ours
    assert commit_of_checkout(tmp_path / "users-project") == ""
    nested = tmp_path / "users-project" / "lib"  # a folder inside someone else's repository
    nested.mkdir()
    (nested / "pyproject.toml").write_text('[project]\nname = "unetbench"\n')
    assert commit_of_checkout(nested) == ""
    assert commit_of_checkout(tmp_path / "nowhere") == ""
