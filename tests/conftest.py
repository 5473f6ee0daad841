"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

# A throwaway PostgreSQL server (fixtures postgres_server, pg_url): tests/pg_server.py.
pytest_plugins = ["pg_server"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread: tiny nets run faster so, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
