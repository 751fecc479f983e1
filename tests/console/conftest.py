"""Console fixtures: a migrated database, settings wired to the real test broker, the app."""

from __future__ import annotations

import functools
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import BaseWSGIServer, make_server

from console.app import create_app
from console.broker import free_port
from console.db import Database, upgrade
from console.devrun import broker_config
from console.models import AuditEntry, Role, User
from console.security import hash_password
from console.settings import Settings
from console.worker import Worker, build_worker
from tests import postgres
from tests.conftest import Broker

# One PostgreSQL server per run and a fresh database per test (tests/postgres.py).
postgres_server = postgres.postgres_server
sqlite_template = postgres.sqlite_template
database_backend = postgres.database_backend
database_url = postgres.database_url

PASSWORDS = {
    "admin": "admin-pass-1234",
    "operator": "operator-pass-1234",
    "viewer": "viewer-pass-1234",
}


def make_settings(tmp_path: Path, broker: Broker, **overrides: Any) -> Settings:
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    bs = broker.process.settings
    url = overrides.pop("database_url", f"sqlite:///{instance / 'console.sqlite3'}")
    return Settings(
        instance_dir=instance,
        secret_key=secrets.token_hex(16),
        database_url=url,
        media_dir=instance / "media",
        broker=broker_config(bs, broker.console_username, broker.console_password),
        **overrides,
    )


@pytest.fixture
def web_port() -> int:
    return free_port()


BROWSER_TESTS = Path(__file__).parent / "browser"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: run on SQLite only, not also on PostgreSQL (see docs/deploy.md)"
    )


# The modules that run on PostgreSQL too in `make test`: those whose point is the SQL (the
# API's queries, schedules, reports, ingest, the worker's claims and lease, migrations,
# backup). LOA_TEST_POSTGRES=all runs every database test on both backends.
POSTGRES_MODULES = {
    "test_api", "test_programme", "test_history", "test_ingest", "test_lease",
    "test_worker_firing", "test_postgres", "test_gunicorn", "test_backup", "test_devices_admin",
}  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the database runs on SQLite and on PostgreSQL, unless marked
    sqlite_only or in browser/ (slow, and they exercise the pages, not the SQL).
    LOA_TEST_DATABASES=sqlite narrows the run (a quick local loop)."""
    if "database_backend" not in metafunc.fixturenames:
        return
    every = postgres.DATABASE_BACKENDS
    wanted = os.environ.get("LOA_TEST_DATABASES", ",".join(every)).split(",")
    backends = [b for b in every if b in wanted] or ["sqlite"]
    only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if only_sqlite or BROWSER_TESTS in metafunc.definition.path.parents:
        backends = ["sqlite"]
    elif (
        metafunc.definition.path.stem not in POSTGRES_MODULES
        and os.environ.get("LOA_TEST_POSTGRES") != "all"
    ):
        backends = ["sqlite"]  # keeps `make test` under 15 minutes on 2 cores
    metafunc.parametrize("database_backend", backends, indirect=True)


@pytest.fixture
def settings(tmp_path: Path, mqtt_broker: Broker, web_port: int, database_url: str) -> Settings:
    return make_settings(
        tmp_path,
        mqtt_broker,
        public_base_url=f"http://127.0.0.1:{web_port}",
        database_url=database_url,
    )


@functools.cache
def password_hash(password: str) -> str:
    """scrypt is slow on purpose (0.1 s): the suite's three accounts are hashed once per run."""
    return hash_password(password)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    with database.session() as session:
        for role in Role:
            digest = password_hash(PASSWORDS[role.value])
            session.add(User(username=role.value, password_hash=digest, role=role))
    yield database
    database.dispose()


@pytest.fixture
def app(settings: Settings, db: Database) -> Iterator[Flask]:
    application = create_app(settings, db)
    application.config["WTF_CSRF_ENABLED"] = True
    yield application
    from console import services

    services.close(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def worker(settings: Settings, db: Database) -> Iterator[Worker]:
    """The console worker, running: its ingest stores what devices report, as in production."""
    running = build_worker(settings, db=db)
    running.start(poll_s=0.2)
    yield running
    running.stop()


def audit_of(db: Database, action: str) -> list[AuditEntry]:
    """The audit log's entries of one action."""
    with db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def token_for(client: FlaskClient, role: str) -> dict[str, str]:
    resp = client.post("/api/v1/auth/token", json={"username": role, "password": PASSWORDS[role]})
    assert resp.status_code == 201, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


@pytest.fixture
def live_server(app: Flask, web_port: int) -> Iterator[str]:
    """The app on a real HTTP port (bridges download audio from it)."""
    server: BaseWSGIServer = make_server("127.0.0.1", web_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
