"""Console fixtures: a migrated database, settings wired to the real test broker, the app."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from console.accounts import create_user
from console.app import create_app
from console.broker import free_port
from console.db import Database, upgrade
from console.models import Role
from console.settings import BrokerConfig, Settings
from tests.conftest import Broker

PASSWORDS = {
    "admin": "admin-pass-1234",
    "operator": "operator-pass-1234",
    "viewer": "viewer-pass-1234",
}


def make_settings(tmp_path: Path, broker: Broker, **overrides: Any) -> Settings:
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    bs = broker.process.settings
    return Settings(
        instance_dir=instance,
        secret_key=secrets.token_hex(16),
        database_url=f"sqlite:///{instance / 'console.sqlite3'}",
        media_dir=instance / "media",
        broker=BrokerConfig(
            host=bs.host,
            port=bs.port,
            public_host=bs.host,
            admin_username=bs.admin_username,
            admin_password=bs.admin_password,
            console_username=broker.console_username,
            console_password=broker.console_password,
            data_dir=bs.data_dir,
        ),
        **overrides,
    )


@pytest.fixture
def web_port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, mqtt_broker: Broker, web_port: int) -> Settings:
    return make_settings(tmp_path, mqtt_broker, public_base_url=f"http://127.0.0.1:{web_port}")


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    with database.session() as session:
        for role in Role:
            create_user(session, role.value, PASSWORDS[role.value], role)
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
