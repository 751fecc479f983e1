"""A throwaway PostgreSQL server for the suite, from Debian's `postgresql` package.

`start_postgres()` runs `initdb` and `postgres` from /usr/lib/postgresql/<newest>/bin in a
temporary folder, on a free loopback port, with no Unix socket and trust authentication for
its one superuser. PostgreSQL refuses to run as root, so as root (CI) the server runs as the
unprivileged `nobody`. Durability is switched off (fsync, full-page writes): it is a test
server, and every database on it is made from a migrated template in a few milliseconds.
"""

from __future__ import annotations

import gc
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine

from console.broker import free_port
from console.db import upgrade

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "loa"
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 60.0
# Test settings: nothing here must survive a crash, and the suite opens many pools at once.
SERVER_OPTIONS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "64MB",
    "unix_socket_directories": "",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "timezone": "UTC",
}


class PostgresUnavailable(RuntimeError):
    """Debian's PostgreSQL server is not installed (`scripts/setup.sh --with-postgres`)."""


def find_bin_dir() -> Path | None:
    """The newest installed server's bin folder, or None when there is none."""
    found = []
    for path in Path("/").glob(BIN_GLOB.lstrip("/")):
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            try:
                found.append((int(path.parent.name), path))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to an unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """A running server: make, drop and connect to databases on it."""

    base_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of one database on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @contextmanager
    def admin(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection to the maintenance database (CREATE/DROP DATABASE)."""
        conn = psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        )
        try:
            yield conn
        finally:
            conn.close()

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template` if given); returns its URL."""
        stmt = sql.SQL("CREATE DATABASE {} ENCODING 'UTF8'").format(sql.Identifier(name))
        if template is not None:
            stmt = sql.SQL("{} TEMPLATE {} STRATEGY FILE_COPY").format(
                stmt, sql.Identifier(template)
            )
        else:
            stmt = sql.SQL("{} TEMPLATE template0").format(stmt)
        with self.admin() as conn:
            conn.execute(stmt)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop it, closing whatever connections a test left open on it."""
        stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with self.admin() as conn:
            conn.execute(stmt)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Fast shutdown (open connections are closed), then the folder is removed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _ready(port: int) -> bool:
    try:
        psycopg.connect(
            host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", connect_timeout=2
        ).close()
    except psycopg.OperationalError:
        return False
    return True


def start_postgres(bin_dir: Path | None = None) -> PostgresServer:
    """initdb + postgres on a free port; raises PostgresUnavailable when not installed."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            f"no PostgreSQL server in {BIN_GLOB}: run `scripts/setup.sh --with-postgres`"
        )
    drop = _run_as()
    # Not under pytest's basetemp: that is private to root, and the server may run as nobody.
    base = Path(tempfile.mkdtemp(prefix="loa-pg-"))
    data = base / "data"
    log_path = base / "server.log"
    try:
        if drop:
            os.chown(base, drop["user"], drop["group"])
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=base,
            **drop,
        )
        port = free_port()
        options = [f"--{key}={value}" for key, value in SERVER_OPTIONS.items()]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=base,
                **drop,
            )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        detail = (exc.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"initdb failed: {detail}") from None
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    server = PostgresServer(base_dir=base, port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _ready(port):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"PostgreSQL did not start on port {port}:\n{tail}")
        time.sleep(0.1)
    return server


# --- fixtures (imported by tests/console/conftest.py) ------------------------------------

DATABASE_BACKENDS = ("sqlite", "postgresql")
TEMPLATE_DB = "loa_template"
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole run, with a template database migrated once."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        upgrade(server.create_database(TEMPLATE_DB))
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """The backend (sqlite or postgresql), set per test by tests/console/conftest.py."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy (a migration run is about a second)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "console.sqlite3"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:  # fold the WAL into the file, so one file is the database
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def database_url(
    request: pytest.FixtureRequest, database_backend: str, tmp_path: Path
) -> Iterator[str]:
    """A fresh database of the test's backend, already migrated to the newest schema."""
    if database_backend == "sqlite":
        instance = tmp_path / "instance"
        instance.mkdir(exist_ok=True)
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, instance / "console.sqlite3")
        yield f"sqlite:///{instance / 'console.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    url = server.create_database(name, template=TEMPLATE_DB)
    yield url
    server.drop_database(name)
    # A pool a test did not dispose of leaves psycopg connections that warn (ResourceWarning,
    # an error in this suite) whenever they are collected, possibly in a later test. SQLite's
    # are silent: collect them here, quietly, so both backends judge a test alike.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
