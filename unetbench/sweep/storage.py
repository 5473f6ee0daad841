"""Where a study lives: storage strings, opened with clear errors and safe concurrent starts.

Storage strings:

* ``None`` -> embedded SQLite at ``<results_dir>/<study>/study.db``.
* ``journal:PATH``, or a path ending in ``.journal`` or ``.log`` -> an Optuna journal file
  (:class:`optuna.storages.journal.JournalFileBackend`), for several processes on one machine.
* ``sqlite:///PATH`` -> SQLite elsewhere (one machine).
* ``postgresql[+driver]://...`` (``postgres://`` is read as ``postgresql://``),
  ``mysql[+driver]://...`` -> a server database (:class:`optuna.storages.RDBStorage`), for
  workers on many machines (the sweep sends its own heartbeats).
* ``grpc://HOST:PORT`` -> Optuna's gRPC storage proxy (``unetbench storage-server``), for
  hundreds of workers in front of one database.

A storage string with a password should not be typed on a command line (any user of the
machine can read another's command lines). Instead:

* ``env:NAME`` -> the storage string is the value of the environment variable ``NAME``;
* ``file:PATH`` -> it is the first line of the file ``PATH`` (``~`` is expanded; keep the file
  private, ``chmod 600``);
* or leave the password out of a PostgreSQL URL: libpq then reads it from ``~/.pgpass`` (or
  ``$PGPASSFILE``) itself.

Spawned workers get the string as given (``env:NAME``, ``file:PATH``) and read it themselves.
What the sweep shows, logs or keeps (:attr:`StudyStorage.url`) has the password replaced by
``***`` (:func:`redact`).

A mistake (unknown scheme, missing driver, wrong password, missing database, server down or
silent) is a :class:`~unetbench.UsageError` with one line naming it, within the connect
timeout; nothing is created then. Once open, every call goes through
:class:`~unetbench.sweep.retry.RetryingStorage`, which rides out an outage for up to the grace
period.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage  # what load_study(URL) wraps

from unetbench._errors import UsageError
from unetbench.sweep.retry import RetryingStorage

__all__ = [
    "CONNECT_TIMEOUT_S",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "StudyStorage",
    "open_storage",
    "proxy_backend",
    "redact",
    "resolve_storage",
    "storage_file",
]

_LOG = logging.getLogger(__name__)
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
_SERVER_DIALECTS = ("postgresql", "mysql", "mariadb", "oracle", "mssql")
_ALLOWED = (
    "use sqlite:///PATH.db, postgresql+psycopg2://USER@HOST:PORT/DB (password in ~/.pgpass), "
    "mysql+pymysql://..., grpc://HOST:PORT or a journal file (PATH.journal, journal:PATH); "
    "env:NAME or file:PATH to read one from an environment variable or a file"
)
_DRIVER_HINT = {
    "psycopg2": "pip install psycopg2-binary (the extra unetbench[postgres])",
    "psycopg": "pip install 'psycopg[binary]'",
    "pymysql": "pip install pymysql",
    "grpc": "pip install grpcio protobuf (the extra unetbench[grpc])",
}
_LOCAL_HEARTBEAT = (
    "--heartbeat-interval and --grace-period apply to server databases and grpc:// only; "
    "{storage} is a local {kind} storage, whose dead workers are recognised by their process IDs"
)
# How long opening a storage waits for a server (database or gRPC proxy) to answer.
CONNECT_TIMEOUT_S = 5.0
# TCP keepalive on database connections: a server that stops answering mid-call is noticed
# within about idle + interval * count seconds, instead of never.
_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# Any 64-bit number, the same in every worker: PostgreSQL advisory lock around schema creation.
_SCHEMA_LOCK_KEY = 0x756E6574_62656E63


@dataclasses.dataclass
class StudyStorage:
    """An opened Optuna storage and what the sweep needs to know about it.

    ``kind`` is ``sqlite``, ``journal``, ``server`` (a database server) or ``grpc`` (the
    proxy); on the last two the sweep sends heartbeats (see :mod:`unetbench.sweep.liveness`).
    ``storage`` retries calls while the storage is unreachable for up to ``grace_period``
    seconds. Local storages (sqlite, journal) serialise trial creation
    with a lock file next to the storage, ``<storage file>.trials-lock`` (not ``.lock``, which
    Optuna's journal backend uses for its own symlink lock).
    """

    storage: optuna.storages.BaseStorage
    url: str  # the storage string for messages and optuna-dashboard, password as ***
    kind: str
    lock_path: Path | None = None
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S
    grace_period: int = GRACE_PERIOD_S

    @property
    def shared(self) -> bool:
        """Whether workers on other machines can use this storage."""
        return self.kind in ("server", "grpc")

    @contextlib.contextmanager
    def creation_lock(self) -> Iterator[None]:
        """Hold the lock (local storages only) while counting trials and creating one."""
        if self.lock_path is None:
            yield
            return
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def open_storage(
    url: str | None,
    study_dir: Path,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    connect_timeout: float | None = None,
    *,
    defaults: tuple[int | None, int | None] = (None, None),
) -> StudyStorage:
    """Resolve and open a storage string (see the module docstring).

    Args:
        url: the storage string, or None for SQLite under ``study_dir``.
        study_dir: ``<results_dir>/<study>``, home of the default SQLite file.
        heartbeat_interval: seconds between a running trial's heartbeats (shared storages;
            default 60).
        grace_period: seconds without a heartbeat after which a trial's worker is taken for
            dead, and how long a storage outage is waited out (shared storages; default 180).
        connect_timeout: seconds to wait for a server to answer when opening (default 5).
        defaults: a study's own ``(heartbeat_interval, grace_period)``, used where the two
            arguments above are None (and, unlike them, accepted on local storages).

    Raises:
        UsageError: a storage string or setting that cannot work, or a server that cannot be
            reached; the message is one line.
    """
    heartbeat_given = heartbeat_interval is not None or grace_period is not None
    if url is None and heartbeat_given:  # refused before the default database is created
        raise UsageError(_LOCAL_HEARTBEAT.format(storage="the default SQLite file", kind="sqlite"))
    timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise UsageError(f"--connect-timeout must be a number of seconds > 0, got {timeout!r}")
    url = _normalise(resolve_storage(url), study_dir)
    kind = _kind(url)
    if kind in ("sqlite", "journal") and heartbeat_given:
        raise UsageError(_LOCAL_HEARTBEAT.format(storage=redact(url), kind=kind))
    interval = _first(heartbeat_interval, defaults[0], HEARTBEAT_INTERVAL_S)
    grace = _first(grace_period, defaults[1], GRACE_PERIOD_S)
    _check_heartbeat(interval, grace)
    if kind == "journal":
        store = _open_journal(url)
    elif kind == "sqlite":
        store = _open_sqlite(url)
    elif kind == "grpc":
        store = _open_grpc(url, float(timeout))
    else:
        store = StudyStorage(_open_server(url, float(timeout)), redact(url), "server")
    store.heartbeat_interval = interval
    store.grace_period = grace
    # Its storage methods are made by retry.py (one forwarder each), which mypy cannot see.
    store.storage = RetryingStorage(store.storage, grace, redact(url))  # type: ignore[abstract]
    return store


class _ProxyCache(_CachedStorage):
    """Optuna's cache of finished trials as the gRPC proxy holds it.

    Optuna's cache raises KeyError when a parameter is set on a trial it has not read, which is
    every running trial after the proxy restarts: it reads the studies' trials first.
    """

    def set_trial_param(self, trial_id: int, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            known = trial_id in self._trial_id_to_study_id_and_number
        if not known:
            for study in self._backend.get_all_studies():
                self.get_all_trials(study._study_id, deepcopy=False)
        super().set_trial_param(trial_id, *args, **kwargs)


def proxy_backend(store: StudyStorage) -> optuna.storages.BaseStorage:
    """What ``unetbench storage-server`` serves for a database storage: the database with the
    proxy's cache. Not retried: while the database is away the proxy answers with its error,
    and each worker waits it out for its own grace period."""
    retrying = store.storage
    assert isinstance(retrying, RetryingStorage) and isinstance(retrying.inner, _CachedStorage)
    return _ProxyCache(retrying.inner._backend)


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's message) without the password of ``url``, as given or decoded."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return text
    creds = url.split("://", 1)[1].rsplit("@", 1)[0]
    if ":" not in creds:
        return text
    from urllib.parse import unquote

    secret = creds.split(":", 1)[1]
    for form in {secret, unquote(secret)} - {""}:
        text = text.replace(form, "***")
    return text


def resolve_storage(text: str | None) -> str | None:
    """The storage string that ``env:NAME`` or ``file:PATH`` stands for; any other as it is.

    Raises:
        UsageError: the variable is unset or empty, or the file cannot be read or is empty.
    """
    if text is None:
        return None
    stripped = text.strip()
    if stripped.startswith("env:"):
        name = stripped[len("env:") :]
        value = os.environ.get(name, "").strip() if name else ""
        if not value:
            raise UsageError(
                f"--storage {stripped}: the environment variable {name or '(none named)'} "
                "is not set or empty; export it with the storage URL, e.g. "
                f"export {name or 'UNETBENCH_DB'}=postgresql+psycopg2://USER:PASSWORD@HOST/DB"
            )
        return value
    if stripped.startswith("file:"):
        path = Path(stripped[len("file:") :]).expanduser()
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            raise UsageError(
                f"--storage {stripped}: cannot read {path}: {exc.strerror or exc}; the file "
                "holds the storage URL on its first line"
            ) from None
        value = next((line for line in lines if line), "")
        if not value:
            raise UsageError(f"--storage {stripped}: {path} is empty; put the storage URL in it")
        if path.stat().st_mode & 0o077 and value != redact(value):
            _LOG.warning(
                "%s holds a password and other users may read it: chmod 600 %s", path, path
            )
        return value
    return text


def storage_file(text: str | None) -> Path | None:
    """The local file a journal or ``sqlite:///`` storage string names (after
    :func:`resolve_storage`); None for the default, a server database and ``grpc://``."""
    url = resolve_storage(text)
    if url is None:
        return None
    url = url.strip()
    if url.startswith("journal:"):
        return Path(url[len("journal:") :].removeprefix("//"))
    if "://" not in url and url.endswith((".journal", ".log")):
        return Path(url)
    if url.lower().startswith("sqlite:///") and url[len("sqlite:///") :] not in ("", ":memory:"):
        return Path(url[len("sqlite:///") :])
    return None


def _normalise(url: str | None, study_dir: Path) -> str:
    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(study_dir / 'study.db').resolve()}"
    url = url.strip()
    if not url:
        raise UsageError(f"--storage is empty; {_ALLOWED}")
    for old in ("postgres://", "postgres+"):
        if url.startswith(old):  # SQLAlchemy knows only "postgresql"
            url = "postgresql" + url[len("postgres") :]
    if url.startswith("postgresql://"):
        # SQLAlchemy's default driver differs between releases (psycopg2, then psycopg 3):
        # take whichever of the two is installed.
        url = f"postgresql+{_installed_pg_driver()}://" + url[len("postgresql://") :]
    return url


def _installed_pg_driver() -> str:
    import importlib.util

    for module in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(module) is not None:
            return module
    return "psycopg2"  # not installed: opening it names the package to install


def _kind(url: str) -> str:
    if url.startswith("journal:") or ("://" not in url and url.endswith((".journal", ".log"))):
        return "journal"
    if "://" not in url:
        raise UsageError(
            f"--storage {url!r} is neither a database URL nor a journal file; {_ALLOWED}"
        )
    scheme = url.split("://", 1)[0].lower()
    dialect = scheme.split("+", 1)[0]
    if scheme == "grpc":
        return "grpc"
    if dialect == "sqlite":
        return "sqlite"
    if dialect in _SERVER_DIALECTS:
        return "server"
    raise UsageError(f"--storage {redact(url)!r}: unknown scheme {scheme!r}; {_ALLOWED}")


def _check_heartbeat(interval: int, grace: int) -> None:
    for name, value in (("--heartbeat-interval", interval), ("--grace-period", grace)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    if grace <= interval:
        raise UsageError(
            f"--grace-period ({grace} s) must be longer than --heartbeat-interval ({interval} s), "
            "or every live worker would look dead between two heartbeats"
        )


def _open_journal(url: str) -> StudyStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(url[len("journal:") :].removeprefix("//") if url.startswith("journal:") else url)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path)))
    return StudyStorage(storage, str(path), "journal", Path(f"{path}.trials-lock"))


def _open_sqlite(url: str) -> StudyStorage:
    from optuna.storages import RDBStorage

    db = Path(url.split(":///", 1)[-1])
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    except Exception as exc:
        raise UsageError(f"cannot open storage {url}: {_first_line(exc)}") from None
    _sqlite_wal(storage)
    return StudyStorage(_CachedStorage(storage), url, "sqlite", Path(f"{db}.trials-lock"))


def _open_server(url: str, connect_timeout: float) -> optuna.storages.BaseStorage:
    """RDBStorage on a database server (with Optuna's cache of finished trials, so a read
    fetches only what changed); its tables are created by one worker at a time."""
    import sqlalchemy
    from optuna.storages import RDBStorage

    safe = redact(url)
    connect_args: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout))}
    if url.startswith("postgresql"):
        connect_args.update(_KEEPALIVE)
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    except ImportError as exc:
        module = getattr(exc, "name", None) or str(exc)
        hint = _DRIVER_HINT.get(str(module).split(".")[0], f"install the driver {module}")
        raise UsageError(f"--storage {safe} needs the database driver {module}: {hint}") from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as exc:
        # ValueError: a URL SQLAlchemy cannot parse, e.g. a port that is not a number
        raise UsageError(f"--storage {safe}: {_scrub(_first_line(exc), url)}; {_ALLOWED}") from None
    for attempt in range(8):
        try:
            with _schema_lock(engine):
                rdb = RDBStorage(
                    url, engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args}
                )
                return _CachedStorage(rdb)
        except sqlalchemy.exc.OperationalError as exc:
            raise UsageError(
                f"cannot open storage {safe}: {_scrub(_first_line(exc), url)}"
            ) from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Another worker created the same tables at the same moment (dialects without
            # the advisory lock below): the next try finds them.
            _LOG.debug("schema creation raced (%s); retrying", _first_line(exc))
            time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))
        finally:
            engine.dispose()
    raise UsageError(f"cannot open storage {safe}: its tables could not be created")


@contextlib.contextmanager
def _schema_lock(engine: Any) -> Iterator[None]:
    """On PostgreSQL, an advisory lock held while Optuna creates or checks its tables.

    Workers started at the same moment on an empty database would otherwise race in
    ``CREATE TYPE``/``CREATE TABLE`` and all but one fail.
    """
    import sqlalchemy

    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            conn.commit()


def _open_grpc(url: str, connect_timeout: float) -> StudyStorage:
    address = url.split("://", 1)[1].rstrip("/")
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        raise UsageError(
            f"--storage {url!r}: a gRPC storage is grpc://HOST:PORT, e.g. grpc://db:13000"
        )
    try:
        import grpc  # noqa: F401  (optuna imports it lazily; fail here with the hint)
        from optuna.storages import GrpcStorageProxy
    except ImportError:
        raise UsageError(f"--storage {url} needs grpcio: {_DRIVER_HINT['grpc']}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = _quick_reconnect(GrpcStorageProxy)(host=host, port=int(port_text))
    try:
        proxy.wait_server_ready(timeout=connect_timeout)
    except Exception:
        proxy.close()
        raise UsageError(
            f"no storage server answers at {url} (waited {connect_timeout:g} s); start "
            f"one with `unetbench storage-server --storage DB-URL --host {host} --port {port_text}`"
        ) from None
    return StudyStorage(proxy, url, "grpc")


# gRPC waits up to 120 s between reconnection attempts by default, so a restarted proxy could
# go unnoticed for two minutes; the sweep's own retries back off to 5 s.
_GRPC_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


def _quick_reconnect(proxy_class: Any) -> Any:
    """Optuna's GrpcStorageProxy with a channel that retries the connection every few
    seconds (its channel is made in ``_setup``, also when a copy is unpickled)."""
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.client import GrpcClientCache

    class QuickReconnect(proxy_class):
        def _setup(self) -> None:
            options = [("grpc.max_receive_message_length", -1), *_GRPC_RECONNECT]
            self._channel = grpc.insecure_channel(f"{self._host}:{self._port}", options=options)
            self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
            self._cache = GrpcClientCache(self._stub)

    return QuickReconnect


def _sqlite_wal(storage: Any) -> None:
    """WAL mode with synchronous=NORMAL: a commit costs ~2 ms instead of ~20 ms (an fsync).

    Survives a killed process (not a power cut, which may lose the last commits); like any
    SQLite database it needs a local disk, not NFS.
    """
    import sqlalchemy

    def on_connect(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # reconnect, so every connection gets the pragmas


def _first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper), first non-empty line."""
    inner = getattr(exc, "orig", None) or exc
    for line in str(inner).splitlines():
        line = line.strip()
        if line and not line.startswith("(Background on this error"):
            return line
    return type(exc).__name__
