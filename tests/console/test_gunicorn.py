"""Production serving: `python -m console serve` (gunicorn, several threaded workers) on an
instance made the way an installer makes one, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from console.broker import free_port
from console.db import Database
from console.models import AuditEntry
from console.settings import Settings, load_settings
from console.wsgi import build_app, gunicorn_options
from tests.conftest import wait_for
from tests.console.conftest import PASSWORDS

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "admin-pass-for-gunicorn"


def console(instance: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", "--instance", str(instance), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def worker_pids(master: int) -> list[int]:
    """Children of the gunicorn master, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            children.append(int(entry.name))
    return children


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """An installer's steps (docs/deploy.md): DATABASE_URL, init, migrate, an account, serve."""
    port = free_port()
    instance = tmp_path / "prod"
    env = {**os.environ, "DATABASE_URL": database_url, "LOA_NEW_PASSWORD": PASSWORD}
    made = console(
        instance, env, "init", "--web-port", str(port), "--broker-port", str(free_port())
    )
    assert made.returncode == 0, made.stderr
    assert "first admin login (shown once): admin / " in made.stdout
    again = console(instance, env, "init")  # nothing is overwritten, no second admin
    assert again.returncode == 0 and "first admin" not in again.stdout, again.stderr
    assert load_settings(instance).web_port == port
    assert console(instance, env, "migrate").returncode == 0
    created = console(instance, env, "create-user", "chu-tich", "--role", "admin")
    assert created.returncode == 0, created.stderr
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console", "--instance", str(instance), "serve",
             "--workers", "2", "--threads", "4"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, proc, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _health(base: str) -> bool:
    try:
        return requests.get(f"{base}/api/v1/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_serve_runs_two_workers_that_share_the_database(
    served: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, proc, log = served
    wait_for(lambda: _health(base) or proc.poll() is not None, 60, "the console to answer")
    assert proc.poll() is None, log.read_text()
    assert requests.get(f"{base}/api/v1/health", timeout=5).json()["status"] == "ok"
    wait_for(lambda: len(worker_pids(proc.pid)) == 2, 30, "two worker processes")

    login = {"username": "chu-tich", "password": PASSWORD}
    resp = requests.post(f"{base}/api/v1/auth/token", json=login, timeout=10)
    assert resp.status_code == 201, resp.text
    bearer = {"Authorization": f"Bearer {resp.json()['token']}"}
    # A zone made through one request is seen by the next ones, whichever worker answers.
    zone = {"id": "xa-gunicorn", "name": "Xã Gò Công", "kind": "commune"}
    assert requests.post(f"{base}/api/v1/zones", json=zone, headers=bearer, timeout=10).ok
    for _ in range(6):
        zones = requests.get(f"{base}/api/v1/zones", headers=bearer, timeout=10).json()
        assert [z["name"] for z in zones] == ["Xã Gò Công"]
    bad = requests.post(f"{base}/api/v1/zones", json={"id": "<b>"}, headers=bearer, timeout=10)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
    assert requests.get(f"{base}/api/v1/openapi.json", timeout=10).json()["openapi"] == "3.1.0"

    proc.send_signal(signal.SIGTERM)  # graceful stop, as systemd does
    assert proc.wait(timeout=60) == 0
    text = log.read_text()
    assert "Using worker: gthread" in text
    assert '"POST /api/v1/auth/token HTTP/1.1" 201' in text  # the access log
    assert "Traceback" not in text, text


def test_gunicorn_options_come_from_the_settings(settings: Settings) -> None:
    tuned = settings.model_copy(update={"web_workers": 3, "web_threads": 48, "web_port": 9000})
    options = gunicorn_options(tuned)
    assert options["bind"] == [f"{tuned.web_host}:9000"]
    assert (options["workers"], options["threads"], options["worker_class"]) == (3, 48, "gthread")
    override = gunicorn_options(tuned, bind="0.0.0.0:80", workers=1, threads=8)
    assert (override["bind"], override["workers"], override["threads"]) == (["0.0.0.0:80"], 1, 8)


def test_behind_a_proxy_the_audit_log_keeps_the_clients_address(
    settings: Settings, db: Database
) -> None:
    def login_from(client: FlaskClient) -> str | None:
        resp = client.post(
            "/api/v1/auth/token",
            json={"username": "viewer", "password": PASSWORDS["viewer"]},
            headers={"X-Forwarded-For": "203.0.113.7"},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        assert resp.status_code == 201
        with db.session() as session:
            last = select(AuditEntry.remote_addr).order_by(AuditEntry.id.desc()).limit(1)
            return session.scalar(last)

    direct = build_app(settings)
    proxied = build_app(settings.model_copy(update={"web_proxy_hops": 1}))
    try:
        assert login_from(direct.test_client()) == "127.0.0.1"  # no one may claim otherwise
        assert login_from(proxied.test_client()) == "203.0.113.7"
    finally:
        for app in (direct, proxied):
            app.extensions["loa_db"].dispose()
