"""The web console against a browser's attacker: CSRF on every state-changing route, session
fixation, logout and password changes that really end sessions, session expiry, cookie
flags, security headers, and STOP and emergency kept to operators and audited.

(tests/console/test_role_matrix.py holds the route × role matrix; this file does not repeat it.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select, update

from console.app import create_app
from console.auth import WEB_SESSION_MAX_AGE
from console.db import Database
from console.models import AuditEntry, WebSession, Zone, ZoneKind
from console.settings import Settings
from device_profiles import protocol
from tests.conftest import Broker, wait_for
from tests.console.conftest import PASSWORDS, audit_of, token_for
from tests.console.test_history import csrf_token, web_login
from tests.console.test_role_matrix import placeholder_path
from tests.firmware_bridge.mqtt_tools import Listener

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
TEMPLATES = Path(__file__).resolve().parents[2] / "console" / "templates"


def audit_count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def state_changing_calls(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every route that can change something."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & STATE_CHANGING):
            out.append((rule.endpoint, method, placeholder_path(rule)))
    return sorted(out)


def refused_for_csrf(resp: Any) -> bool:
    if resp.status_code != 400:
        return False
    if resp.is_json:
        return "CSRF" in resp.get_json()["error"]["message"]
    return "CSRF" in resp.get_data(as_text=True)


def send(client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> Any:
    resp = client.open(path, method=method, json={}, headers=headers)
    resp.close()
    return resp


# --- CSRF -----------------------------------------------------------------------------------


def test_every_state_changing_route_refuses_a_session_without_the_right_csrf_token(
    app: Flask, db: Database
) -> None:
    """An admin's browser session (every route lets an admin through) sends no token, or a
    forged one: each route refuses before doing anything, and nothing is audited."""
    browser = app.test_client()
    web_login(browser, "admin")
    calls = state_changing_calls(app)
    assert len(calls) >= 25  # the console's forms and the whole JSON API
    before = audit_count(db)
    problems = []
    for endpoint, method, path in calls:
        for headers in ({}, {"X-CSRFToken": "forged-token"}):
            resp = send(browser, method, path, headers)
            if not refused_for_csrf(resp):
                problems.append(f"{method} {path} ({endpoint}) {headers}: {resp.status_code}")
    assert not problems, "\n".join(problems)
    assert audit_count(db) == before
    assert browser.get("/account").status_code == 200  # logout without a token did nothing
    print(f"CSRF: {len(calls)} state-changing routes × 2 forgeries refused")


def test_a_bearer_token_needs_no_csrf_token_but_a_fake_one_does_not_borrow_the_session(
    app: Flask, client: FlaskClient, db: Database
) -> None:
    bearer = token_for(app.test_client(), "admin")
    body = {"id": "xa-csrf", "name": "Xã CSRF", "kind": "commune"}
    assert app.test_client().post("/api/v1/zones", json=body, headers=bearer).status_code == 201
    # A logged-in browser that adds a made-up token skips CSRF only to be judged by the
    # token, which is worth nothing: refused, nothing made.
    web_login(client, "admin")
    fake = {"Authorization": "Bearer not-a-real-token"}
    other = {"id": "xa-csrf-2", "name": "Xã CSRF 2", "kind": "commune"}
    resp = client.post("/api/v1/zones", json=other, headers=fake)
    assert resp.status_code == 401
    with db.session() as session:
        assert session.get(Zone, "xa-csrf-2") is None


def test_the_login_form_itself_needs_its_csrf_token(client: FlaskClient) -> None:
    """Login CSRF: a page elsewhere cannot log a browser into the attacker's account."""
    form = {"username": "viewer", "password": PASSWORDS["viewer"]}
    assert client.post("/login", data=form).status_code == 400
    assert client.post("/login", data={**form, "csrf_token": "forged"}).status_code == 400
    assert client.get("/account").status_code == 302


# --- sessions ---------------------------------------------------------------------------------


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def with_cookie(app: Flask, value: str) -> FlaskClient:
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def logged_in(client: FlaskClient) -> bool:
    resp = client.get("/account")
    return resp.status_code == 200


def test_a_cookie_planted_before_login_is_not_the_one_logged_in(app: Flask) -> None:
    """Session fixation: the attacker gets a cookie from the login page and plants it in the
    victim's browser; the victim logs in; the attacker's copy stays a stranger's."""
    attacker = app.test_client()
    assert attacker.get("/login").status_code == 200
    planted = cookie_of(attacker)
    victim = with_cookie(app, planted)
    resp = victim.post(
        "/login",
        data={
            "username": "operator",
            "password": PASSWORDS["operator"],
            "csrf_token": csrf_token(victim),
        },
    )
    assert resp.status_code == 302
    assert cookie_of(victim) != planted
    assert logged_in(victim)
    assert not logged_in(with_cookie(app, planted))
    assert with_cookie(app, planted).get("/api/v1/zones").status_code == 401


def test_logout_ends_the_session_even_for_a_copy_of_its_cookie(app: Flask, db: Database) -> None:
    browser = app.test_client()
    web_login(browser, "operator")
    stolen = cookie_of(browser)
    assert logged_in(with_cookie(app, stolen))
    token = csrf_token(browser, "/account")
    assert browser.post("/logout", headers={"X-CSRFToken": token}).status_code == 302
    copy = with_cookie(app, stolen)
    assert not logged_in(copy)
    assert copy.get("/api/v1/zones").status_code == 401
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_logging_out_on_one_device_keeps_the_others(app: Flask) -> None:
    phone, desk = app.test_client(), app.test_client()
    web_login(phone, "operator")
    web_login(desk, "operator")
    desk.post("/logout", headers={"X-CSRFToken": csrf_token(desk, "/account")})
    assert not logged_in(desk)
    assert logged_in(phone)  # a duty officer's phone is not logged out by the office PC


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(
    app: Flask, db: Database
) -> None:
    mine, elsewhere = app.test_client(), app.test_client()
    web_login(mine, "viewer")
    web_login(elsewhere, "viewer")
    stolen = cookie_of(elsewhere)
    new = "viewer-new-pass-5678"
    form = {
        "current": PASSWORDS["viewer"],
        "new": new,
        "confirm": new,
        "csrf_token": csrf_token(mine, "/account"),
    }
    assert mine.post("/account", data=form).status_code == 302
    assert logged_in(mine)
    assert not logged_in(elsewhere)
    assert not logged_in(with_cookie(app, stolen))
    assert [e.username for e in audit_of(db, "password_changed")] == ["viewer"]


def test_a_password_reset_or_deactivation_by_an_admin_ends_every_session(app: Flask) -> None:
    admin = token_for(app.test_client(), "admin")
    api = app.test_client()
    users = {u["username"]: u["id"] for u in api.get("/api/v1/users", headers=admin).get_json()}
    operator, viewer = app.test_client(), app.test_client()
    web_login(operator, "operator")
    web_login(viewer, "viewer")
    reset = api.post(f"/api/v1/users/{users['operator']}/password", json={}, headers=admin)
    assert reset.status_code == 200, reset.get_json()
    assert not logged_in(operator)
    off = api.patch(f"/api/v1/users/{users['viewer']}", json={"active": False}, headers=admin)
    assert off.status_code == 200, off.get_json()
    assert not logged_in(viewer)
    back = api.patch(f"/api/v1/users/{users['viewer']}", json={"active": True}, headers=admin)
    assert back.status_code == 200
    assert not logged_in(viewer)  # reactivation does not revive an ended login


def resigned(app: Flask, cookie: str, age: timedelta) -> str:
    """The same session content, signed as if it had last been sent `age` ago."""
    interface = SecureCookieSessionInterface()
    current = interface.get_signing_serializer(app)
    assert current is not None
    data = current.loads(cookie)
    then = int((datetime.now(UTC) - age).timestamp())

    class Then(TimestampSigner):
        def get_timestamp(self) -> int:
            return then

    old = URLSafeTimedSerializer(
        app.secret_key,
        salt=interface.salt,
        serializer=interface.serializer,
        signer=Then,
        signer_kwargs={
            "key_derivation": interface.key_derivation,
            "digest_method": interface.digest_method,
        },
    )
    return str(old.dumps(data))


def test_an_idle_session_expires_and_a_busy_one_ends_after_its_maximum_age(
    app: Flask, db: Database
) -> None:
    browser = app.test_client()
    web_login(browser, "operator")
    cookie = cookie_of(browser)
    idle = app.permanent_session_lifetime
    assert idle == timedelta(hours=12)
    assert logged_in(with_cookie(app, resigned(app, cookie, idle - timedelta(minutes=5))))
    assert not logged_in(with_cookie(app, resigned(app, cookie, idle + timedelta(minutes=5))))
    # Used all the time (the cookie renewed at each request), a login still ends at last.
    with db.session() as session:
        session.execute(
            update(WebSession).values(
                created_at=datetime.now(UTC) - WEB_SESSION_MAX_AGE - timedelta(minutes=1)
            )
        )
    assert not logged_in(browser)


def test_the_session_cookie_is_secure_when_the_console_is_served_over_https(
    settings: Settings, db: Database
) -> None:
    def cookie_flags(app: Flask) -> list[str]:
        client = app.test_client()
        resp = client.post(
            "/login",
            data={
                "username": "viewer",
                "password": PASSWORDS["viewer"],
                "csrf_token": csrf_token(client),
            },
            base_url="https://localhost",
            headers={"Referer": "https://localhost/login"},
        )
        assert resp.status_code == 302
        header = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session="))
        return [part.strip().lower() for part in header.split(";")]

    plain = create_app(settings, db)
    flags = cookie_flags(plain)
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
    https = create_app(settings.model_copy(update={"public_base_url": "https://loa.test"}), db)
    assert "secure" in cookie_flags(https)


# --- headers and pages ------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(app: Flask, client: FlaskClient) -> None:
    web_login(client, "admin")
    for path in [
        "/login",
        "/",
        "/emergency",
        "/api/v1/zones",
        "/api/v1/health",
        "/static/console.js",
        "/api/v1/no-such-route",
    ]:
        resp = client.get(path)
        resp.close()  # a static file is streamed
        headers = resp.headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        policy = dict(d.partition(" ")[::2] for d in headers["Content-Security-Policy"].split("; "))
        assert policy["script-src"] == "'self'", path  # no inline script, no eval
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'", path
        assert "http" not in headers["Content-Security-Policy"], path  # no external source


def test_no_template_has_an_inline_script_or_event_handler() -> None:
    """What lets the policy forbid inline scripts: only JSON data blocks and static files."""
    problems = []
    for template in sorted(TEMPLATES.glob("*.html")):
        text = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag and 'type="application/json"' not in tag:
                problems.append(f"{template.name}: {tag}")
        for handler in re.findall(r"<[^>]*\son[a-z]+\s*=", text):
            problems.append(f"{template.name}: {handler}")
        problems += [f"{template.name}: javascript: URL" for _ in re.findall("javascript:", text)]
    assert not problems, "\n".join(problems)


# --- STOP and emergency -----------------------------------------------------------------------


@pytest.fixture
def commune(db: Database) -> str:
    with db.session() as session:
        session.add(Zone(id="xa-sec-stop", name="Xã Dừng", kind=ZoneKind.COMMUNE))
    return "xa-sec-stop"


def test_stop_needs_an_operator_and_is_audited_with_who_and_what(
    app: Flask, db: Database, commune: str, mqtt_broker: Broker
) -> None:
    listener = Listener(mqtt_broker, protocol.zone_command_topic(commune))
    try:
        viewer = app.test_client()
        web_login(viewer, "viewer")
        refused = viewer.post(
            "/api/v1/stop",
            json={"zone_ids": [commune]},
            headers={"X-CSRFToken": csrf_token(viewer, "/account")},
        )
        assert refused.status_code == 403
        operator = app.test_client()
        web_login(operator, "operator")
        resp = operator.post(
            "/api/v1/stop",
            json={"zone_ids": [commune]},
            headers={"X-CSRFToken": csrf_token(operator, "/account")},
        )
        assert resp.status_code == 202, resp.get_json()
        stop_id = resp.get_json()["id"]
        wait_for(lambda: listener.messages, 15, "the STOP on the commune's topic")
    finally:
        listener.close()
    (sent,) = [protocol.decode_command(body) for _t, body in listener.messages]
    assert isinstance(sent, protocol.StopCommand) and sent.id == stop_id  # only the operator's
    (entry,) = audit_of(db, "stop")
    assert (entry.username, entry.target, entry.detail["zone_ids"]) == (
        "operator",
        stop_id,
        [commune],
    )
    assert entry.remote_addr == "127.0.0.1"


def test_an_emergency_from_a_viewer_is_refused_and_leaves_no_trace(
    app: Flask, db: Database, commune: str
) -> None:
    viewer = app.test_client()
    web_login(viewer, "viewer")
    token = csrf_token(viewer, "/account")
    body = {"preset_key": "fire", "zone_ids": [commune]}
    assert (
        viewer.post("/api/v1/emergency", json=body, headers={"X-CSRFToken": token}).status_code
        == 403
    )
    assert viewer.get("/emergency").status_code == 403
    assert audit_of(db, "emergency") == []
