"""The security tests use the console's fixtures (database, app, client, live server, worker)."""

from __future__ import annotations

import pytest

from tests.console.conftest import (
    app,
    client,
    database_backend,
    database_url,
    db,
    live_server,
    postgres_server,
    settings,
    sqlite_template,
    web_port,
    worker,
)

__all__ = [
    "app",
    "client",
    "database_backend",
    "database_url",
    "db",
    "live_server",
    "postgres_server",
    "settings",
    "sqlite_template",
    "web_port",
    "worker",
]


def pytest_configure(config: pytest.Config) -> None:
    """The console's marker, for its modules imported here when tests/console is not run."""
    config.addinivalue_line(
        "markers", "sqlite_only: run on SQLite only, not also on PostgreSQL (see docs/deploy.md)"
    )
