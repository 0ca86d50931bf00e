"""Fixtures shared by the unit and compat tests: a throwaway PostgreSQL server (`tests.postgres_server`).

``postgres_server`` is one server per test process (pytest-xdist worker), started on first use;
``postgres_url`` is a new empty database on it for one test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()
