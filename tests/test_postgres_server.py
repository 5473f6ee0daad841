"""The throwaway PostgreSQL server of tests/pg_server.py works as the other tests assume."""

from __future__ import annotations

from urllib.parse import urlsplit

import optuna
import psycopg2  # type: ignore[import-untyped]
import pytest
from pg_server import PostgresServer

pytestmark = pytest.mark.postgres


def test_accepts_the_password(postgres_server: PostgresServer) -> None:
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            (version,) = cur.fetchone()
    finally:
        conn.close()
    assert version.startswith("PostgreSQL")


def test_refuses_a_wrong_password(postgres_server: PostgresServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            password=postgres_server.password + "-wrong",
            dbname="postgres",
            connect_timeout=10,
        )


def test_create_database_gives_fresh_databases(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database()
    assert first != second
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname IN (%s, %s)", (first, second)
            )
            assert sorted(row[0] for row in cur.fetchall()) == sorted([first, second])
    finally:
        conn.close()
    for name in (first, second):  # each one can be connected to, and is empty
        conn = postgres_server.connect(name)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                assert cur.fetchone() == (0,)
        finally:
            conn.close()


def test_listens_on_loopback_only(postgres_server: PostgresServer, pg_url: str) -> None:
    url = urlsplit(pg_url)
    assert (url.hostname, url.port) == ("127.0.0.1", postgres_server.port)
    assert url.scheme == "postgresql+psycopg2"
    database = url.path.lstrip("/")
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=url.port,
        user=url.username,
        password=postgres_server.password,
        dbname=database,
        connect_timeout=10,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone() == ("127.0.0.1",)
            cur.execute("SELECT host(inet_server_addr()), inet_server_port(), current_database()")
            assert cur.fetchone() == ("127.0.0.1", postgres_server.port, database)
    finally:
        conn.close()


def test_optuna_rdb_storage_works(pg_url: str) -> None:
    storage = optuna.storages.RDBStorage(pg_url)
    try:
        study = optuna.create_study(storage=storage, study_name="pg-smoke")
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, x * x)
        loaded = optuna.load_study(study_name="pg-smoke", storage=storage)
        assert [t.state for t in loaded.trials] == [optuna.trial.TrialState.COMPLETE]
        assert loaded.trials[0].params == {"x": x}
    finally:
        storage.engine.dispose()
