"""Every route of the console × anonymous / viewer / operator / admin, plus CSRF, login
throttling and the session cookie.

Each route's least role is declared once, in MINIMUM below; a route that is not in it fails
`test_every_route_is_classified`, so a new route cannot ship without a decision. Routes are
called with placeholder arguments: an unknown id answering 404 after the role check proves
the check let the request through; a refusal (401, 403, the login page) must come first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from console.db import Database
from console.models import AuditEntry, Role
from tests.console.conftest import PASSWORDS, token_for
from tests.console.test_history import csrf_token, web_login

PUBLIC = "public"  # anyone, logged in or not
DEVICE = "device"  # a field device's own HTTP Basic credentials; staff are refused too

V, OP, AD = Role.VIEWER, Role.OPERATOR, Role.ADMIN

# endpoint -> the least role that may use it (docs/api.md, "Routes"; docs/console.md).
MINIMUM: dict[str, Role | str] = {
    # pages
    "static": PUBLIC,
    "web.login": PUBLIC,
    "web.set_language": PUBLIC,
    "web.index": V,
    "web.account": V,
    "web.logout": V,
    "programme.page": V,
    "audio.page": V,
    "devices.page": V,
    "emergency.page": OP,
    "emergency.alarm_strings": V,
    "emergency.preset_audio": OP,
    "history.page": V,
    "history.broadcast": V,
    "history.audit": AD,
    "history.users": AD,
    # audio for field devices
    "media.audio": DEVICE,
    # the JSON API
    "api.health": PUBLIC,
    "api.create_token": PUBLIC,
    "api.openapi_document": PUBLIC,  # the API's description; no data
    "api.list_zones": V,
    "api.zone_tree": V,
    "api.create_zone": AD,
    "api.list_devices": V,
    "api.live_devices": V,
    "api.get_device": V,
    "api.create_device": AD,
    "api.update_device": AD,
    "api.delete_device": AD,
    "api.reissue_device_credentials": AD,
    "api.list_audio": V,
    "api.get_audio": V,
    "api.audio_file": V,
    "api.upload_audio": OP,
    "api.speak_text": OP,
    "api.delete_audio": OP,
    "api.list_presets": V,
    "api.get_preset": V,
    "api.replace_preset": OP,
    "api.list_schedules": V,
    "api.get_schedule": V,
    "api.create_schedule": OP,
    "api.edit_schedule": OP,
    "api.delete_schedule": OP,
    "api.preview_rule": V,
    "api.zone_programme": V,
    "api.get_quiet_hours": V,
    "api.set_quiet_hours": AD,
    "api.get_fire_rule": V,
    "api.set_fire_rule": AD,
    "api.list_holidays": V,
    "api.add_holidays": OP,
    "api.delete_holiday": OP,
    "api.list_broadcasts": V,
    "api.get_broadcast": V,
    "api.broadcast_live": V,
    "api.create_broadcast": OP,
    "api.sound_emergency": OP,
    "api.stop": OP,
    "api.list_alarms": V,
    "api.alarms_live": V,
    "api.acknowledge_alarm": OP,
    "api.report_broadcasts": V,
    "api.report_broadcasts_csv": V,
    "api.report_broadcast": V,
    "api.report_broadcast_csv": V,
    "api.audit_log": AD,
    "api.audit_log_csv": AD,
    "api.users_list": AD,
    "api.users_create": AD,
    "api.users_change": AD,
    "api.users_reset_password": AD,
}

PLACEHOLDERS = {"IntegerConverter": "987654", "PathConverter": "missing/file.txt"}
BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class Call:
    endpoint: str
    method: str
    path: str

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/")

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.endpoint})"


def placeholder_path(rule: Rule) -> str:
    def arg(match: re.Match[str]) -> str:
        converter = type(rule._converters[match["name"]]).__name__
        return PLACEHOLDERS.get(converter, "zz-missing")

    return re.sub(r"<(?:[^:<>]+:)?(?P<name>\w+)>", arg, rule.rule)


def calls(app: Flask) -> list[Call]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append(Call(rule.endpoint, method, placeholder_path(rule)))
    # Logging out ends the session the other calls use: last.
    return sorted(out, key=lambda c: (c.endpoint == "web.logout", c.path, c.method))


def send(client: FlaskClient, call: Call, headers: dict[str, str]) -> TestResponse:
    kwargs: dict[str, Any] = {"headers": headers}
    if call.method in BODY_METHODS:
        kwargs["json"] = {}
    resp = client.open(call.path, method=call.method, **kwargs)
    resp.close()  # a live stream stops here; only the status is looked at
    return resp


def to_login(resp: TestResponse) -> bool:
    return resp.status_code == 302 and resp.headers.get("Location", "").startswith("/login")


def test_every_route_is_classified(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    missing = sorted(endpoints - set(MINIMUM))
    assert not missing, (
        f"routes without a declared least role: {missing}; add each to MINIMUM in {__name__}"
    )
    gone = sorted(set(MINIMUM) - endpoints)
    assert not gone, f"MINIMUM names routes that no longer exist: {gone}"


def refusal(call: Call, resp: TestResponse, role: Role | None) -> str | None:
    """What is wrong with the answer to a caller whose role is `role` (None: anonymous)."""
    need = MINIMUM[call.endpoint]
    status = resp.status_code
    if status >= 500:
        return f"{call}: {status} (a crash)"
    if need == DEVICE:
        return None if status == 401 else f"{call}: {status}, expected 401 (device only)"
    if need == PUBLIC:
        return f"{call}: {status} refused a public route" if status in (401, 403) else None
    assert isinstance(need, Role)
    if role is None:
        if call.api:
            return None if status == 401 else f"{call}: {status}, expected 401"
        return None if to_login(resp) else f"{call}: {status}, expected a redirect to /login"
    if role.rank < need.rank:
        return None if status == 403 else f"{call}: {status} for {role}, expected 403"
    if status in (401, 403) or to_login(resp):
        return f"{call}: {status} refused {role}, which is allowed"
    return None


def test_anonymous_visitors_are_sent_to_log_in(app: Flask, client: FlaskClient) -> None:
    token = csrf_token(client)  # so a refused POST is refused for who it is, not for CSRF
    problems = [
        problem
        for call in calls(app)
        if (problem := refusal(call, send(client, call, {"X-CSRFToken": token}), None))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", [V, OP, AD], ids=str)
def test_each_role_gets_exactly_its_routes(app: Flask, db: Database, role: Role) -> None:
    """Pages with the role's browser session, the API with its token."""
    browser = app.test_client()
    web_login(browser, role.value)
    token = csrf_token(browser, "/account")
    api = app.test_client()
    bearer = token_for(api, role.value)
    problems = []
    for call in calls(app):
        if call.api:
            resp = send(api, call, bearer)
        elif call.endpoint == "web.logout":  # allowed: it ends the session, then the login page
            session = app.test_client()
            web_login(session, role.value)
            resp = send(session, call, {"X-CSRFToken": csrf_token(session, "/account")})
            if not (to_login(resp) and to_login(session.get("/account"))):
                problems.append(f"{call}: {resp.status_code}, the session did not end")
            continue
        else:
            resp = send(browser, call, {"X-CSRFToken": token})
        if problem := refusal(call, resp, role):
            problems.append(problem)
    assert not problems, "\n".join(problems)


def test_staff_sessions_use_the_api_with_the_csrf_token_only(
    app: Flask, client: FlaskClient
) -> None:
    web_login(client, "admin")
    body = {"username": "csrf-check", "role": "viewer"}
    refused = client.post("/api/v1/users", json=body)
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "bad_request"
    wrong = client.post("/api/v1/users", json=body, headers={"X-CSRFToken": "forged"})
    assert wrong.status_code == 400
    token = csrf_token(client, "/account")
    assert (
        client.post("/api/v1/users", json=body, headers={"X-CSRFToken": token}).status_code == 201
    )
    # A token request carries no cookie to forge: it needs no CSRF token.
    bearer = token_for(app.test_client(), "admin")
    other = {"username": "csrf-check-2", "role": "viewer"}
    assert app.test_client().post("/api/v1/users", json=other, headers=bearer).status_code == 201


def test_forms_refuse_a_post_without_the_csrf_token(app: Flask, client: FlaskClient) -> None:
    assert client.post("/login", data={"username": "admin",
                                       "password": PASSWORDS["admin"]}).status_code == 400  # fmt: skip
    web_login(client, "admin")
    change = {
        "current": PASSWORDS["admin"],
        "new": "another-pass-123",
        "confirm": "another-pass-123",
    }
    assert client.post("/account", data=change).status_code == 400
    assert client.post("/logout").status_code == 400
    assert client.get("/account").status_code == 200  # still logged in, password unchanged
    assert token_for(app.test_client(), "admin")


def failed_logins(db: Database, action: str) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).where(AuditEntry.action == action)) or 0


def test_the_sixth_wrong_password_locks_the_account_even_for_the_right_one(
    app: Flask, client: FlaskClient, db: Database
) -> None:
    def attempt(password: str) -> int:
        form = {"username": "operator", "password": password, "csrf_token": csrf_token(client)}
        return client.post("/login", data=form).status_code

    assert [attempt(f"wrong-{n}") for n in range(5)] == [401] * 5
    assert attempt("wrong-again") == 429
    locked = client.post("/login", data={"username": "operator",
                                         "password": PASSWORDS["operator"],
                                         "csrf_token": csrf_token(client)})  # fmt: skip
    assert locked.status_code == 429
    assert "15" in locked.get_data(as_text=True)  # "wait 15 minutes"
    assert client.get("/history").status_code == 302  # not logged in
    api = client.post(
        "/api/v1/auth/token", json={"username": "operator", "password": PASSWORDS["operator"]}
    )
    assert api.status_code == 429 and api.get_json()["error"]["code"] == "login_locked"  # fmt: skip
    assert (failed_logins(db, "login_failed"), failed_logins(db, "login_refused")) == (5, 3)
    # Another account is not affected.
    web_login(app.test_client(), "viewer")


def test_the_session_cookie_is_http_only_same_site_and_renewed_at_login(
    client: FlaskClient,
) -> None:
    token = csrf_token(client)
    before = client.get_cookie("session")
    assert before is not None
    resp = client.post("/login", data={"username": "viewer", "password": PASSWORDS["viewer"],
                                       "csrf_token": token})  # fmt: skip
    assert resp.status_code == 302
    cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert any(f.startswith("expires=") for f in flags)  # ends after PERMANENT_SESSION_LIFETIME
    after = client.get_cookie("session")
    assert after is not None and after.value != before.value  # no session fixation
    assert resp.headers["X-Frame-Options"] == "DENY"
