"""No database password on a command line, in a log, in study.json or in the records.

The storage string can come from an environment variable (``env:NAME``) or a file
(``file:PATH``), and a PostgreSQL URL without a password uses libpq's ``~/.pgpass``. Tested
with real ``unetbench sweep`` processes on a real PostgreSQL server whose role needs its
password: the command lines of the sweep and of its spawned workers are read from /proc while
they run.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from pg_server import PostgresServer
from psycopg2 import sql

from unetbench import UsageError
from unetbench.sweep.storage import redact, resolve_storage, storage_file

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "unetbench.cli.main"]


def _role_and_database(server: PostgresServer) -> tuple[str, str, str]:
    """A fresh login role with a random password, owning a fresh database."""
    role, password = f"sweeper_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    conn = server.connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, [role] * 2))
            )
    finally:
        conn.close()
    return role, password, role


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str | None:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return None


def _database_text(server: PostgresServer, database: str) -> str:
    """Every row of every table of ``database``, as text."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [row[0] for row in cur.fetchall()]
            assert "trial_user_attributes" in tables and "study_system_attributes" in tables
            rows = []
            for table in tables:
                cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                rows.append(repr(cur.fetchall()))
    finally:
        conn.close()
    return "\n".join(rows)


@pytest.mark.postgres
def test_no_password_on_command_lines_logs_study_json_or_records(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    role, password, database = _role_and_database(postgres_server)
    s = postgres_server
    url = f"postgresql+psycopg2://{role}:{password}@{s.host}:{s.port}/{database}"
    results, log = tmp_path / "results", tmp_path / "sweep.log"
    argv = [*CLI, "-v", "sweep", str(ROOT / "studies/smoke.toml"), "--workers", "2",
            "--storage", "env:UNETBENCH_TEST_DB", "--results-dir", str(results),
            "--no-progress"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=_env(UNETBENCH_TEST_DB=url)
        )
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in {proc.pid, *_descendants(proc.pid)}:
                line = _cmdline(pid)
                if line:
                    seen.setdefault(pid, line)
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"the sweep did not end in 600 s:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    workers = [line for line in seen.values() if "spawn_main" in line]
    assert len(workers) >= 2, seen  # both spawned workers were seen running
    assert all(password not in line for line in seen.values()), seen
    assert password not in output
    assert f"{role}:***@" in output  # the dashboard line, redacted
    study_dir = results / "smoke"
    assert password not in (study_dir / "study.json").read_text()
    for name in ("trials.parquet", "runs.parquet"):
        frame = pd.read_parquet(study_dir / name)
        assert len(frame) >= 3
        assert password not in frame.astype(str).to_csv()
    stored = _database_text(postgres_server, database)
    assert "smoke" in stored and password not in stored


@pytest.mark.postgres
def test_a_url_without_password_uses_pgpass_and_mistakes_show_no_password(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    role, password, database = _role_and_database(postgres_server)
    s = postgres_server
    bare = f"postgresql://{role}@{s.host}:{s.port}/{database}"
    argv = [*CLI, "sweep", str(ROOT / "studies/smoke.toml"), "--trials", "1", "--storage", bare,
            "--results-dir", str(tmp_path / "results"), "--no-progress"]  # fmt: skip
    home = tmp_path / "home"
    home.mkdir()
    # Without ~/.pgpass the server refuses: the password is what .pgpass brings.
    refused = subprocess.run(argv, capture_output=True, text=True, env=_env(HOME=str(home)))
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and "password" in refused.stderr
    # A wrong password from the environment: one line, and neither password in it.
    wrong = secrets.token_urlsafe(12)
    url = f"postgresql+psycopg2://{role}:{wrong}@{s.host}:{s.port}/{database}"
    env_argv = ["env:DB_URL" if a == bare else a for a in argv]
    failed = subprocess.run(
        env_argv, capture_output=True, text=True, env=_env(HOME=str(home), DB_URL=url)
    )
    assert failed.returncode == 2, failed.stderr
    assert len(failed.stderr.splitlines()) == 1 and "password authentication failed" in (
        failed.stderr
    )
    assert wrong not in failed.stderr and f"{role}:***@" in failed.stderr
    assert not (tmp_path / "results").exists()
    pgpass = home / ".pgpass"
    pgpass.write_text(f"{s.host}:{s.port}:{database}:{role}:{password}\n")
    pgpass.chmod(0o600)
    ran = subprocess.run(argv, capture_output=True, text=True, env=_env(HOME=str(home)))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "search trials" in ran.stdout and password not in ran.stdout + ran.stderr


# ----------------------------------------------------------------------------- env: and file:


def test_env_and_file_give_the_storage_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = "postgresql+psycopg2://me:s3cret@db-host/unetbench"
    monkeypatch.setenv("UNETBENCH_TEST_DB", f"  {url}\n")
    assert resolve_storage("env:UNETBENCH_TEST_DB") == url
    monkeypatch.setenv("HOME", str(tmp_path))
    private = tmp_path / ".unetbench-db"
    private.write_text(f"\n{url}\nignored\n")
    private.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert resolve_storage("file:~/.unetbench-db") == url
    assert caplog.records == []
    private.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert resolve_storage(f"file:{private}") == url
    assert [r.getMessage() for r in caplog.records] == [
        f"{private} holds a password and other users may read it: chmod 600 {private}"
    ]
    assert "s3cret" not in caplog.text
    for plain in (None, "results/x.journal", "sqlite:///x.db", url):
        assert resolve_storage(plain) == plain
    journal = tmp_path / "where.txt"
    journal.write_text("runs/s.journal\n")
    assert storage_file(f"file:{journal}") == Path("runs/s.journal")
    assert storage_file("sqlite:////abs/s.db") == Path("/abs/s.db")
    assert storage_file("journal:rel/s.log") == Path("rel/s.log")
    assert storage_file(url) is None and storage_file(None) is None


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("env:UNETBENCH_UNSET_VAR", "--storage env:UNETBENCH_UNSET_VAR: the environment variable "
         "UNETBENCH_UNSET_VAR is not set or empty"),
        ("env:", "the environment variable (none named) is not set"),
        ("file:/nonexistent/db-url", "--storage file:/nonexistent/db-url: cannot read "
         "/nonexistent/db-url: No such file or directory"),
        ("file:{empty}", "is empty; put the storage URL in it"),
    ],
)  # fmt: skip
def test_env_and_file_mistakes_are_one_line(tmp_path: Path, storage: str, message: str) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n\n")
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_storage(storage.format(empty=empty))


def test_redact() -> None:
    assert redact("postgresql+psycopg2://me:s3cret@db:5432/x") == (
        "postgresql+psycopg2://me:***@db:5432/x"
    )
    assert redact("postgresql://me@db/x") == "postgresql://me@db/x"
    assert redact("postgresql://me:p@ss@db/x") == "postgresql://me:***@db/x"
    assert redact("results/s.journal") == "results/s.journal"
