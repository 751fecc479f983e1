"""The console web in production: gunicorn with threaded workers, one app per worker process.

`python -m console serve` runs it (settings `web_workers`, `web_threads`, `web_host`,
`web_port`). gunicorn can also load the app itself:

    LOA_INSTANCE=/srv/loa/instance gunicorn -k gthread -w 2 --threads 32 \
        'console.wsgi:application()'

Each worker process builds its own app after the fork (its own database pool and MQTT link).
The scheduler and the ingest never run here: they are the one `python -m console worker`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from werkzeug.middleware.proxy_fix import ProxyFix

from console.app import create_app
from console.settings import Settings, load_settings

INSTANCE_ENV = "LOA_INSTANCE"
# A worker that has not told the master it is alive for this long is restarted. With gthread
# the worker's main loop reports, not each request, so long live streams are not cut by it.
WORKER_TIMEOUT_S = 60
# On stop or reload, requests (and live streams) get this long to finish; browsers reconnect.
GRACEFUL_TIMEOUT_S = 10
KEEPALIVE_S = 5


def build_app(settings: Settings) -> Flask:
    """The app as production runs it: behind `web_proxy_hops` trusted reverse proxies."""
    app = create_app(settings)
    hops = settings.web_proxy_hops
    if hops:
        # The audit log records the client's address, and url_for the public scheme and host.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    return app


def application(instance: str | None = None) -> Flask:
    """gunicorn's app factory: the instance folder from the argument or $LOA_INSTANCE."""
    folder = Path(instance or os.environ.get(INSTANCE_ENV, "instance"))
    return build_app(load_settings(folder))


def gunicorn_options(
    settings: Settings,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    access_log: str = "-",
) -> dict[str, Any]:
    """gunicorn's settings for the console; arguments override the instance's settings.

    With `[tls] web = true` it answers HTTPS itself, with the instance's certificate.
    """
    tls = settings.tls if settings.tls and settings.tls.web else None
    https = {"certfile": str(tls.cert_file), "keyfile": str(tls.key_file)} if tls else {}
    return {
        "bind": [bind or f"{settings.web_host}:{settings.web_port}"],
        "workers": workers or settings.web_workers,
        "worker_class": "gthread",
        "threads": threads or settings.web_threads,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "accesslog": access_log,
        "errorlog": "-",
        "proc_name": "loa-console-web",
        # Several consoles (or test runs) on one machine must not share a control socket.
        "control_socket_disable": True,
        **https,
    }


class ConsoleServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's master, configured in code: no config file to keep in step."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__(prog="python -m console serve")

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return build_app(self.settings)


def serve(settings: Settings, options: dict[str, Any]) -> int:
    """Run gunicorn in the foreground until SIGTERM/SIGINT (graceful stop)."""
    ConsoleServer(settings, options).run()
    return 0
