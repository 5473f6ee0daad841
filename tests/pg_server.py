"""Pytest plugin: a throwaway real PostgreSQL server for the tests marked ``postgres``.

One server per test session (per xdist worker), in a fresh temporary directory, on a free
TCP port of 127.0.0.1, with password (scram-sha-256) authentication over TCP, stopped and
deleted at the end. Without the PostgreSQL binaries the tests that use it are skipped, except
in CI (``CI=true``), where they fail so that CI cannot pass without having run them.

The binaries are looked up in ``$UNETBENCH_PG_BINDIR`` (if set, nowhere else), then in
``pg_config --bindir``, then in the newest ``/usr/lib/postgresql/*/bin``, then on ``PATH``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2  # type: ignore[import-untyped]
import pytest
from psycopg2 import sql
from skips import skip_or_fail

# The server refuses to run as root; as root, every server command runs as this OS user.
SERVER_OS_USER = "postgres"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
BINDIR_ENV = "UNETBENCH_PG_BINDIR"
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = (
    "install PostgreSQL (e.g. `apt-get install postgresql`) "
    f"or point ${BINDIR_ENV} at its bin directory"
)


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway PostgreSQL server: where it is and how to log in as superuser."""

    host: str
    port: int
    user: str
    password: str
    bindir: Path
    datadir: Path

    def url(self, database: str, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of `database` on this server, e.g. for Optuna's RDBStorage."""
        return (
            f"postgresql+{driver}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    def connect(self, database: str = "postgres") -> psycopg2.extensions.connection:
        """A psycopg2 connection to `database` as the superuser (the caller closes it)."""
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=10,
        )

    def stop(self) -> None:
        """Stop the server at once (fast shutdown: every connection is cut, as a restart or
        an outage does); :meth:`start` brings it back on the same port."""
        result = self._runner().run(
            [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"]
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start the stopped server again on its port and wait until it accepts logins."""
        logfile = self.datadir.parent / "server.log"
        result = self._runner().run(
            [str(self.bindir / "pg_ctl"), "start", "-D", str(self.datadir), "-l", str(logfile),
             "-o", f"-p {self.port}", "-w", "-t", str(int(START_TIMEOUT_S))],
            timeout=START_TIMEOUT_S + 30,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}")
        _wait_until_accepting(self, logfile)

    def _runner(self) -> _Runner:
        prefix = _server_command_prefix()
        assert not isinstance(prefix, str), prefix
        return _Runner(prefix, self.datadir.parent)

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh empty database (a random unique name when `name` is None)."""
        name = name if name is not None else f"test_{secrets.token_hex(8)}"
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return name


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_BINARIES)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _version_key(bindir: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: numeric version, unknown first."""
    try:
        return tuple(int(part) for part in bindir.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> Path | str:
    """The directory holding initdb, pg_ctl and postgres, or the reason why there is none."""
    missing = ", ".join(REQUIRED_BINARIES)
    override = os.environ.get(BINDIR_ENV)
    if override:
        if _has_binaries(Path(override)):
            return Path(override)
        return (
            f"PostgreSQL binaries ({missing}) not found in ${BINDIR_ENV}={override}: "
            f"point it at a PostgreSQL bin directory, or unset it and {INSTALL_HINT}"
        )
    candidates: list[Path] = []
    from_pg_config = _pg_config_bindir()
    if from_pg_config is not None:
        candidates.append(from_pg_config)
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)[::-1])
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if _has_binaries(bindir):
            return bindir
    return (
        f"PostgreSQL binaries ({missing}) not found via pg_config, /usr/lib/postgresql/*/bin "
        f"or PATH: {INSTALL_HINT}"
    )


def _server_command_prefix() -> list[str] | str:
    """Prefix that runs a command as the server's OS user, or the reason why it cannot."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        return (
            f"running as root, and PostgreSQL refuses root, but there is no "
            f"'{SERVER_OS_USER}' OS user to run it as: `apt-get install postgresql` creates it, "
            f"or `useradd --system {SERVER_OS_USER}`"
        )
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", SERVER_OS_USER, "--"]
    if shutil.which("su") is not None:
        return []  # marker for `su`: see _run
    return f"running as root, and neither runuser nor su is there to run as '{SERVER_OS_USER}'"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _Runner:
    """Runs server commands, as the `postgres` OS user when this process is root."""

    def __init__(self, prefix: list[str], workdir: Path) -> None:
        self.as_root = os.geteuid() == 0
        self.prefix = prefix
        self.workdir = workdir  # a cwd the server user can enter

    def argv(self, cmd: list[str]) -> list[str]:
        if not self.as_root:
            return cmd
        if self.prefix:
            return [*self.prefix, *cmd]
        return ["su", SERVER_OS_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]

    def run(self, cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(cmd),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def chown(self, path: Path) -> None:
        if self.as_root:
            shutil.chown(path, user=SERVER_OS_USER, group=pwd.getpwnam(SERVER_OS_USER).pw_gid)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"


def _wait_until_accepting(server: PostgresServer, logfile: Path) -> None:
    """Connect over TCP with the password until it works, or raise with the server log."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            server.connect().close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on {server.host}:{server.port} did not accept connections "
                    f"within {START_TIMEOUT_S:.0f} s: {exc}\n--- server log ---\n{_read(logfile)}"
                ) from exc
            time.sleep(0.1)


def _start(
    runner: _Runner, bindir: Path, datadir: Path, logfile: Path, password: str
) -> PostgresServer:
    """Start the server on a free port (retrying if another process grabs the port first)."""
    last_error = ""
    for _attempt in range(5):
        port = _free_port()
        result = runner.run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D",
                str(datadir),
                "-l",
                str(logfile),
                "-o",
                f"-p {port}",
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
            ],
            timeout=START_TIMEOUT_S + 30,
        )
        log = _read(logfile)
        if result.returncode == 0:
            server = PostgresServer(HOST, port, SUPERUSER, password, bindir, datadir)
            _wait_until_accepting(server, logfile)
            return server
        last_error = f"{result.stdout}{result.stderr}\n--- server log ---\n{log}"
        if "already in use" not in log:
            break
    raise RuntimeError(f"pg_ctl start failed:\n{last_error}")


class NoServer(RuntimeError):
    """No PostgreSQL server can be started here; the message says why and what to install."""


@contextlib.contextmanager
def throwaway_server() -> Iterator[PostgresServer]:
    """A fresh cluster in a ``mkdtemp`` directory, on a free port of 127.0.0.1, tuned for
    speed (fsync off: the data is thrown away), 200 connections; stopped and deleted at the
    end, whatever happened. Raises :class:`NoServer` without the binaries."""
    bindir = find_bindir()
    if isinstance(bindir, str):
        raise NoServer(bindir)
    prefix = _server_command_prefix()
    if isinstance(prefix, str):
        raise NoServer(prefix)

    tmpdir = Path(tempfile.mkdtemp(prefix="unetbench-pg-"))
    runner = _Runner(prefix, tmpdir)
    datadir = tmpdir / "data"
    logfile = tmpdir / "server.log"
    started = False
    try:
        runner.chown(tmpdir)
        password = secrets.token_urlsafe(24)
        pwfile = tmpdir / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        runner.chown(pwfile)
        result = runner.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")
        socket_dir = str(tmpdir).replace("'", "''")
        # Appending keeps the file's owner (the server user) even when written as root.
        with (datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# unetbench test server\n"
                f"listen_addresses = '{HOST}'\n"
                f"unix_socket_directories = '{socket_dir}'\n"
                "max_connections = 200\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        started = True  # from here on, stop it on the way out, whatever happened
        yield _start(runner, bindir, datadir, logfile, password)
    finally:
        if started:
            runner.run(
                [str(bindir / "pg_ctl"), "stop", "-D", str(datadir), "-m", "fast", "-w"],
                timeout=START_TIMEOUT_S + 30,
            )
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for this session, to test what SQLite cannot show.

    Optuna studies shared by many machines live on PostgreSQL; its locking, connection
    limits and authentication differ from SQLite's, so those paths are tested against a real
    server (:func:`throwaway_server`; not pytest's tmp_path: that is mode 700 under root, and
    the ``postgres`` OS user that runs the server when the tests run as root could not enter
    it). Skipped without the binaries (failed instead when ``CI=true``).
    """
    try:
        with throwaway_server() as server:
            yield server
    except NoServer as exc:
        skip_or_fail(str(exc))


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a fresh empty database, so that no test sees another's tables.

    Creating a database takes milliseconds, much less than a server; the databases are not
    dropped, the whole cluster goes at the end of the session.
    """
    return postgres_server.url(postgres_server.create_database())
