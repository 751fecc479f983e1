"""Fuzz fixtures: the run's tally of cases per decoder (kept and printed by tests/conftest.py),
and the console fixtures the API and ingest tests use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import TALLY

# The console's fixtures (a migrated database with three users, the app, its client, a
# worker); the database is SQLite: the SQL itself is covered on PostgreSQL elsewhere.
from tests.console.conftest import (  # noqa: F401
    app,
    client,
    db,
    live_server,
    settings,
    web_port,
    worker,
)
from tests.fuzz.tally import DEFAULT_EXAMPLES, Tally, examples
from tests.postgres import (  # noqa: F401
    database_backend,
    database_url,
    postgres_server,
    sqlite_template,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The suite's per-test timeout (120 s) grows with LOA_FUZZ_EXAMPLES for these tests."""
    here = Path(__file__).parent
    scale = max(1.0, examples() / DEFAULT_EXAMPLES)
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(int(120 * scale)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """SQLite; LOA_FUZZ_POSTGRES=1 adds PostgreSQL (a soak run: twice the time). A test that
    parametrizes database_backend itself (test_postgres_text) keeps its own choice."""
    if "database_backend" not in metafunc.fixturenames:
        return
    if any(
        m.args and m.args[0] == "database_backend"
        for m in metafunc.definition.iter_markers("parametrize")
    ):
        return
    backends = (
        ["sqlite", "postgresql"] if os.environ.get("LOA_FUZZ_POSTGRES") == "1" else ["sqlite"]
    )
    metafunc.parametrize("database_backend", backends, indirect=True)


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> Tally:
    """Record every example: `with tally.case("decoder") as case: ...; case.refused()`.
    (The run's tally is kept, merged and printed by tests/conftest.py.)"""
    return request.config.stash[TALLY]
