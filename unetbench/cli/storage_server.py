"""``unetbench storage-server``: Optuna's gRPC storage proxy in front of one database.

Hundreds of workers each holding connections would exceed a database's connection limit; the
proxy holds a few and the workers use ``--storage grpc://HOST:PORT`` instead.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

_LOG = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "storage-server",
        help="serve a study database to many workers (Optuna's gRPC storage proxy)",
        description=(
            "Run Optuna's gRPC storage proxy over a database until interrupted. Workers then "
            "use `unetbench sweep ... --storage grpc://HOST:PORT`."
        ),
    )
    p.add_argument(
        "--storage",
        required=True,
        help="the database, e.g. postgresql+psycopg2://USER@db-host/unetbench (password from "
        "~/.pgpass), or env:NAME / file:PATH to read it from an environment variable or a file",
    )
    p.add_argument("--host", default="localhost", help="address to listen on (default localhost)")
    p.add_argument("--port", type=int, default=13000, help="port to listen on (default 13000)")
    p.add_argument("--threads", type=int, default=10, help="threads serving requests (default 10)")


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import optuna

    from unetbench._errors import UsageError
    from unetbench._versions import require_tested

    require_tested("optuna")  # the proxy's cache is built on Optuna's internals
    from unetbench.sweep.storage import open_storage, proxy_backend, redact

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    store = open_storage(args.storage, Path("."))
    if store.kind not in ("server", "sqlite"):
        raise UsageError(
            f"--storage {redact(store.url)} is a {store.kind} storage; the proxy serves a "
            "database (postgresql://, mysql://, sqlite:///)"
        )
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise UsageError("storage-server needs grpcio: pip install grpcio protobuf") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _LOG.info("serving %s on grpc://%s:%d (Ctrl-C stops)", redact(store.url), args.host, args.port)
    optuna.storages.run_grpc_proxy_server(
        proxy_backend(store),  # with Optuna's cache, as it advises
        host=args.host,
        port=args.port,
        thread_pool=ThreadPoolExecutor(max_workers=args.threads),
    )
    return 0
