"""Per-app shared objects (settings, database, MQTT link), kept in app.extensions."""

from __future__ import annotations

import threading
from typing import cast

from flask import Flask, current_app

from console.broker import DynsecAdmin
from console.db import Database
from console.mqtt_link import ConsoleLink
from console.settings import Settings
from scheduler import Clock

_LINK_LOCK = threading.Lock()


def settings() -> Settings:
    return cast(Settings, current_app.extensions["loa_settings"])


def console_link() -> ConsoleLink:
    """The web process's MQTT connection, opened on first use (one per process)."""
    app = current_app
    with _LINK_LOCK:
        link = cast(ConsoleLink | None, app.extensions.get("loa_link"))
        if link is None:
            broker = settings().broker
            link = ConsoleLink(
                broker.host,
                broker.port,
                broker.console_username,
                broker.console_password.get_secret_value(),
                client_name="console-web",
            )
            link.start()
            app.extensions["loa_link"] = link
        return link


def clock() -> Clock:
    """The web process's clock (a FakeClock in tests): the API's idea of now."""
    return cast(Clock, current_app.extensions["loa_clock"])


def broker_admin() -> DynsecAdmin:
    broker = settings().broker
    return DynsecAdmin(
        broker.host, broker.port, broker.admin_username, broker.admin_password.get_secret_value()
    )


def install(app: Flask, cfg: Settings, db: Database, clock: Clock) -> None:
    app.extensions["loa_settings"] = cfg
    app.extensions["loa_db"] = db
    app.extensions["loa_clock"] = clock


def close(app: Flask) -> None:
    link = cast(ConsoleLink | None, app.extensions.pop("loa_link", None))
    if link is not None:
        link.stop()
