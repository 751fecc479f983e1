"""No secret in the repository, and none in any log of a whole flow at DEBUG level.

The repository scan reads every file git knows (tracked, or new and not ignored) against a
list of patterns; the suite's own test passwords are allowed by name, under tests/ only.

The log check runs the product as a commune would, with every log at DEBUG: staff log in
on the web and by API token, a device is registered (its broker password generated), run
as a real bridge process, given new credentials, and plays a broadcast; a password is
changed and an account made. Then every log (the console's web and worker, the bridge's,
the broker's, the audit log) is searched for every secret that passed by.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select

from console.db import Database
from console.models import AuditEntry, User
from console.security import hash_password, new_secret
from console.settings import Settings
from console.tls import TlsFiles, issue_server_certificate
from console.worker import build_worker
from tests.conftest import Broker, wait_for
from tests.console.conftest import PASSWORDS
from tests.console.test_end_to_end import tone_wav

ROOT = Path(__file__).resolve().parents[2]

# What a secret looks like in a file.
PATTERNS = {
    "private key": r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
    "AWS access key": r"\bAKIA[0-9A-Z]{16}\b",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    "JSON web token": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.",
    "password hash": r"\b(?:scrypt|pbkdf2)(?::[a-z0-9]+)+\$[A-Za-z0-9./+]+\$[0-9a-f]{32,}",
    "password in a URL": r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:(?!secret@|password@)[^/\s:@$<{]{3,}@",
    "credential given a value": (
        r"(?i)\b[a-z_]*(?:password|passwd|secret|token|api_?key)[a-z_]*[\"']?\s*[:=]\s*"
        r"[\"'][^\"'\s<>{}$]{8,}[\"']"
    ),
    "generated secret key": r"(?i)\bsecret_key\s*=\s*[\"']?[0-9a-f]{32,}",
}
# Files that hold secrets by nature: never in the repository.
SECRET_FILES = r"(^|/)(config\.toml|dynamic-security\.json|mosquitto\.db|[^/]*\.(key|pem|p12|pfx|sqlite3)|\.env|id_(rsa|ed25519|ecdsa))$"
# The suite's own throwaway passwords and forgeries (tests/ only): accounts on a test
# database, or values that must be refused. A new one is added here, knowingly.
TEST_PASSWORDS = {
    *PASSWORDS.values(),
    "admin-pass-for-gunicorn",
    "not-allowed-1234",
    "fuzz-pass-12345",
    "fuzz-pass-67890",
    "a-wrong-guess-1",
    "operator-new-pass-",
    "forged-token",
    "wrong-password",
    "new-password-1",
    "a-long-enough-one",
}
# Documentation: what a first admin password looks like (README's walk-through).
EXAMPLES = {"README.md": {"abcd-efgh-jkmn-pqrs"}}


def repository_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return [Path(name) for name in out.decode().split("\0") if name]


def findings(name: str, text: str) -> list[str]:
    """What looks like a secret in one file's text (allowed test passwords left out)."""
    out = []
    for what, pattern in PATTERNS.items():
        for match in re.finditer(pattern, text):
            found = match.group(0)
            if name.startswith("tests/") and any(p in found for p in TEST_PASSWORDS):
                continue
            if any(example in found for example in EXAMPLES.get(name, ())):
                continue
            line = text.count("\n", 0, match.start()) + 1
            out.append(f"{name}:{line}: {what}: {found[:60]}")
    return out


def test_no_secret_in_the_repository() -> None:
    files = repository_files()
    assert len(files) > 100
    problems = [f"{f}: a file of secrets" for f in files if re.search(SECRET_FILES, str(f))]
    scanned = 0
    for rel in files:
        path = ROOT / rel
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (audio, images): not where secrets are typed
        scanned += 1
        problems += findings(str(rel), text)
    assert not problems, "\n".join(
        [*problems, "(a test's throwaway password: add it to TEST_PASSWORDS in this file)"]
    )
    print(f"repository: {scanned} text files scanned for {len(PATTERNS)} kinds of secret")


def test_the_scan_finds_each_kind_of_secret(tmp_path: Path) -> None:
    """The patterns are not blind: real samples of each kind are found, even under tests/
    unless they are the suite's passwords."""
    files = TlsFiles(tmp_path)
    issue_server_certificate(files, ["localhost"])
    samples = {
        "private key": files.key.read_text(),
        "AWS access key": "aws = AKIA" + "ABCDEFGHIJKLMNOP",
        "GitHub token": "gh" + "p_" + "a1B2" * 9,
        "Slack token": "xo" + "xb-123456789012-abcdef",
        "Google API key": "AI" + "za" + "B" * 35,
        "JSON web token": "ey" + "JhbGciOiJIUzI1NiJ9.ey" + "JzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        "password hash": hash_password("correct horse battery"),
        "password in a URL": "postgresql://loa:" + "hunter2hunter@db.example/loa",
        "credential given a value": 'password = "' + new_secret() + '"',
        "generated secret key": "secret_key = " + "ab12" * 16,
    }
    assert set(samples) == set(PATTERNS)
    for what, text in samples.items():
        assert any(f": {what}: " in f for f in findings("console/x.py", text)), what
        assert findings("tests/x.py", text), what
    assert findings("tests/x.py", f'password = "{PASSWORDS["admin"]}"') == []
    assert findings("console/x.py", f'password = "{PASSWORDS["admin"]}"') != []
    assert re.search(SECRET_FILES, "instance/config.toml")
    assert re.search(SECRET_FILES, "instance/tls/ca.key")


# --- logs -------------------------------------------------------------------------------------


@contextmanager
def bridge_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge", "--config", str(config), "--simulate",
             "--log-level", "debug"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def page_token(session: requests.Session, url: str) -> str:
    html = session.get(url, timeout=10).text
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert match, f"no CSRF token on {url}"
    return match[1]


def web_login(base: str, username: str, password: str) -> requests.Session:
    browser = requests.Session()
    form = {"username": username, "password": password,
            "csrf_token": page_token(browser, f"{base}/login")}  # fmt: skip
    resp = browser.post(f"{base}/login", data=form, allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text[:500]
    return browser


def api_token(base: str, username: str, password: str) -> str:
    resp = requests.post(f"{base}/api/v1/auth/token",
                         json={"username": username, "password": password}, timeout=10)  # fmt: skip
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def device_file(bridge_config: str, state_dir: Path, path: Path) -> Path:
    path.write_text(bridge_config.replace('"/var/lib/tieng-loa', f'"{state_dir}'))
    return path


def mqtt_password(bridge_config: str) -> str:
    match = re.search(r'^password = "([^"]+)"', bridge_config, re.M)
    assert match
    return match[1]


def online(base: str, bearer: dict[str, str], device_id: str, want: bool) -> bool:
    resp = requests.get(f"{base}/api/v1/devices/{device_id}", headers=bearer, timeout=10)
    return bool(resp.json()["online"]) is want


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The root logger at DEBUG, as `python -m console --log-level debug` sets it.
    (SQLAlchemy, which would log rows, keeps its own logger at WARNING unless echo is on.)"""
    caplog.set_level(logging.DEBUG)
    assert not logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.INFO)
    return caplog


def test_no_secret_in_any_log_of_a_whole_flow(
    app: Flask,
    settings: Settings,
    db: Database,
    live_server: str,
    mqtt_broker: Broker,
    tmp_path: Path,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    base = live_server
    secrets: dict[str, str] = {
        "admin password": PASSWORDS["admin"],
        "operator password": PASSWORDS["operator"],
        "console's broker password": settings.broker.console_password.get_secret_value(),
        "broker admin password": settings.broker.admin_password.get_secret_value(),
        "Flask secret key": settings.secret_key.get_secret_value(),
    }
    worker = build_worker(settings, db=db)
    worker.start(poll_s=0.2)
    bridge_log = tmp_path / "bridge.log"
    try:
        # Staff: a browser session each, and an API token each.
        admin_web = web_login(base, "admin", PASSWORDS["admin"])
        operator_web = web_login(base, "operator", PASSWORDS["operator"])
        admin = {"Authorization": f"Bearer {api_token(base, 'admin', PASSWORDS['admin'])}"}
        operator_token = api_token(base, "operator", PASSWORDS["operator"])
        secrets["admin API token"] = admin["Authorization"].split()[1]
        secrets["operator API token"] = operator_token
        wrong = requests.post(f"{base}/api/v1/auth/token", timeout=10,
                              json={"username": "admin", "password": "a-wrong-guess-1"})  # fmt: skip
        assert wrong.status_code == 401

        # An account made by the admin, with a password generated and shown once.
        made = requests.post(f"{base}/api/v1/users", headers=admin, timeout=10,
                             json={"username": "can-bo-moi", "role": "viewer"})  # fmt: skip
        assert made.status_code == 201, made.text
        secrets["generated password of a new account"] = made.json()["password"]

        # A device registered: its broker password generated and put in its config file.
        for zone in ({"id": "xa-bi-mat", "name": "Xã Bí Mật", "kind": "commune"},
                     {"id": "thon-bi-mat", "name": "Thôn Bí Mật", "kind": "hamlet",
                      "parent_id": "xa-bi-mat"}):  # fmt: skip
            assert requests.post(f"{base}/api/v1/zones", json=zone, headers=admin,
                                 timeout=10).status_code == 201  # fmt: skip
        body = {"id": "loa-bi-mat", "name": "Loa", "profile": "speaker-node",
                "zone_id": "thon-bi-mat"}  # fmt: skip
        resp = requests.post(f"{base}/api/v1/devices", json=body, headers=admin, timeout=30)
        assert resp.status_code == 201, resp.text
        first = resp.json()["bridge_config"]
        secrets["device's first MQTT password"] = mqtt_password(first)
        config = device_file(first, tmp_path / "pi", tmp_path / "bridge.toml")
        with bridge_process(config, bridge_log):
            wait_for(lambda: online(base, admin, "loa-bi-mat", True), 30, "the device online")
        wait_for(lambda: online(base, admin, "loa-bi-mat", False), 30, "the device offline")

        # New credentials (a lost file); the bridge runs on the new one and plays a broadcast.
        resp = requests.post(f"{base}/api/v1/devices/loa-bi-mat/credentials", headers=admin,
                             timeout=30)  # fmt: skip
        assert resp.status_code == 200, resp.text
        second = resp.json()["bridge_config"]
        secrets["device's new MQTT password"] = mqtt_password(second)
        device_file(second, tmp_path / "pi", config)
        with bridge_process(config, bridge_log):
            wait_for(lambda: online(base, admin, "loa-bi-mat", True), 30, "the device back")
            csrf = {"X-CSRFToken": page_token(operator_web, f"{base}/account")}
            wav = tone_wav(tmp_path / "thong-bao.wav", seconds=1.0)
            with wav.open("rb") as fh:
                up = operator_web.post(f"{base}/api/v1/audio", headers=csrf, timeout=60,
                                       files={"file": ("thong-bao.wav", fh)})  # fmt: skip
            assert up.status_code == 201, up.text
            sent = operator_web.post(
                f"{base}/api/v1/broadcasts", headers=csrf, timeout=30,
                json={"audio_sha256": up.json()["sha256"], "zone_ids": ["thon-bi-mat"]},
            )  # fmt: skip
            assert sent.status_code == 201, sent.text
            url = f"{base}/api/v1/broadcasts/{sent.json()['id']}"
            wait_for(
                lambda: (
                    requests.get(url, headers=admin, timeout=10).json()["summary"]
                    == {"finished": 1}
                ),
                60,
                "the broadcast played",
            )

        # The operator changes their password on the web.
        new_password = "operator-new-pass-" + new_secret(6)
        form = {"current": PASSWORDS["operator"], "new": new_password, "confirm": new_password,
                "csrf_token": page_token(operator_web, f"{base}/account")}  # fmt: skip
        changed = operator_web.post(f"{base}/account", data=form, allow_redirects=False,
                                    timeout=30)  # fmt: skip
        assert changed.status_code == 302
        secrets["operator's new password"] = new_password
        admin_web.post(f"{base}/logout", timeout=10,
                       data={"csrf_token": page_token(admin_web, f"{base}/account")})  # fmt: skip
        cookies = [c.value for s in (admin_web, operator_web) for c in s.cookies]
    finally:
        worker.stop()

    # What else a thief would want: hashes, session cookies and the keys inside them.
    with db.session() as session:
        for user in session.scalars(select(User)):
            secrets[f"password hash of {user.username}"] = user.password_hash
        audit = [
            json.dumps([e.action, e.target, e.username, e.detail], ensure_ascii=False)
            for e in session.scalars(select(AuditEntry))
        ]
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    for n, cookie in enumerate(cookies):
        secrets[f"session cookie {n}"] = cookie
        key = serializer.loads(cookie).get("_key")
        if key:
            secrets[f"login key in session cookie {n}"] = key

    logs = {
        "console web and worker (DEBUG)": debug_logs.text,
        "bridge (--log-level debug)": bridge_log.read_text(errors="replace"),
        "broker": mqtt_broker.process.settings.log_path.read_text(errors="replace"),
        "audit log": "\n".join(audit),
    }
    # The logs are real: each holds what happened.
    assert "loa-bi-mat" in logs["bridge (--log-level debug)"]
    assert "DEBUG" in logs["bridge (--log-level debug)"]
    assert "loa-bi-mat" in logs["broker"]
    assert "/api/v1/devices/loa-bi-mat/credentials" in logs["console web and worker (DEBUG)"]
    assert any(r.levelno == logging.DEBUG for r in debug_logs.records)
    assert "device_credentials_reissued" in logs["audit log"]
    leaks = [
        f"the {what} is in the {where} log"
        for what, value in secrets.items()
        for where, text in logs.items()
        if value and value in text
    ]
    sizes = {where: len(text.splitlines()) for where, text in logs.items()}
    print(f"logs searched: {sizes} lines, for {len(secrets)} secrets")
    assert not leaks, "\n".join(leaks)
    assert len(secrets) >= 15
