"""User management: create, change role, deactivate, reset a password; the last admin stays."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.db import Database
from console.models import User
from tests.console.conftest import PASSWORDS, audit_of, token_for
from tests.console.test_history import csrf_token, web_login


def user_id(db: Database, username: str) -> int:
    with db.session() as s:
        uid = s.scalar(select(User.id).where(User.username == username))
    assert uid is not None
    return uid



def new_token(client: FlaskClient, username: str, password: str) -> dict[str, str]:
    resp = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert resp.status_code == 201, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


def test_an_admin_creates_users_with_a_password_shown_once(
    client: FlaskClient, db: Database
) -> None:
    admin = token_for(client, "admin")
    resp = client.post("/api/v1/users", json={"username": "can.bo-a", "role": "operator"},
                       headers=admin)  # fmt: skip
    assert resp.status_code == 201
    made = resp.get_json()
    assert (made["username"], made["role"], made["active"]) == ("can.bo-a", "operator", True)
    assert made["password_generated"] is True and len(made["password"]) >= 10
    assert new_token(client, "can.bo-a", made["password"])  # it works
    listed = client.get("/api/v1/users", headers=admin).get_json()
    entry = next(u for u in listed if u["username"] == "can.bo-a")
    assert "password" not in entry and entry["last_login_at"] is not None
    # Or the admin types one (at least the minimum length).
    chosen = {"username": "thon-b", "role": "viewer", "password": "với dấu cách 12"}
    resp = client.post("/api/v1/users", json=chosen, headers=admin)
    assert resp.status_code == 201 and resp.get_json()["password_generated"] is False
    assert new_token(client, "thon-b", "với dấu cách 12")
    created = audit_of(db, "user_created")
    assert [(e.target, e.username, e.detail["role"]) for e in created] == [
        ("can.bo-a", "admin", "operator"),
        ("thon-b", "admin", "viewer"),
    ]
    assert all("password" not in str(e.detail) for e in created)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"username": "viewer", "role": "viewer"}, 409, "username"),
        ({"username": "new", "role": "viewer", "password": "short"}, 422, "password"),
        ({"username": "new", "role": "viewer", "password": "x" * 201}, 422, "password"),
        ({"username": "new", "role": "viewer", "password": " space-before-1"}, 422, "password"),
        ({"username": "new", "role": "viewer", "password": 1234567890123}, 422, "password"),
        ({"username": "two words", "role": "viewer"}, 422, "username"),
        ({"username": "tab\there", "role": "viewer"}, 422, "username"),
        ({"username": "nul\u0000", "role": "viewer"}, 422, "username"),
        ({"username": "", "role": "viewer"}, 422, "username"),
        ({"username": "u" * 65, "role": "viewer"}, 422, "username"),
        ({"username": "x" * 100_000, "role": "viewer"}, 422, "username"),
        ({"username": 12, "role": "viewer"}, 422, "username"),
        ({"username": "new", "role": "superuser"}, 422, "role"),
        ({"username": "new", "role": 3}, 422, "role"),
        ({"username": "new"}, 422, "role"),
        ({"username": "new", "role": "viewer", "is_admin": True}, 422, "is_admin"),
    ],
)
def test_bad_new_users_are_refused_clearly(
    client: FlaskClient, body: dict[str, Any], status: int, field: str
) -> None:
    resp = client.post("/api/v1/users", json=body, headers=token_for(client, "admin"))
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["error"]["field"] == field


def test_a_request_that_is_not_json_is_refused(client: FlaskClient) -> None:
    admin = token_for(client, "admin")
    for data in (b"not json", b"[1, 2]", b"\xff\xfe"):
        resp = client.post("/api/v1/users", data=data, headers=admin,
                           content_type="application/json")  # fmt: skip
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_json"
    resp = client.patch("/api/v1/users/1", data=b"{", headers=admin,
                        content_type="application/json")  # fmt: skip
    assert resp.status_code == 400


def test_html_in_a_username_is_stored_as_text(client: FlaskClient, db: Database) -> None:
    admin = token_for(client, "admin")
    resp = client.post("/api/v1/users", json={"username": "<b>x</b>", "role": "viewer"},
                       headers=admin)  # fmt: skip
    assert resp.status_code == 201
    web_login(client, "admin")
    html = client.get("/audit").get_data(as_text=True)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_a_role_change_applies_at_once_and_is_audited(client: FlaskClient, db: Database) -> None:
    admin, viewer = token_for(client, "admin"), token_for(client, "viewer")
    assert client.post("/api/v1/broadcasts", json={}, headers=viewer).status_code == 403
    uid = user_id(db, "viewer")
    resp = client.patch(f"/api/v1/users/{uid}", json={"role": "operator"}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["role"] == "operator"
    # The same token now passes the operator check (the body is what is wrong now).
    assert client.get("/api/v1/users", headers=viewer).status_code == 403
    assert client.post("/api/v1/broadcasts", json={}, headers=viewer).status_code == 422
    (entry,) = audit_of(db, "user_changed")
    assert (entry.target, entry.detail) == ("viewer", {"role": ["viewer", "operator"]})
    # Nothing to change: no audit entry; nothing given: an error.
    assert client.patch(f"/api/v1/users/{uid}", json={"role": "operator"},
                        headers=admin).status_code == 200  # fmt: skip
    assert len(audit_of(db, "user_changed")) == 1
    assert client.patch(f"/api/v1/users/{uid}", json={}, headers=admin).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"active": "no"}, "active"),
        ({"active": 0}, "active"),
        ({"role": "root"}, "role"),
        ({"role": None, "active": None}, "body"),
        ({"password": "new-password-1"}, "password"),
    ],
)
def test_bad_changes_are_refused(
    client: FlaskClient, db: Database, body: dict[str, Any], field: str
) -> None:
    uid = user_id(db, "viewer")
    resp = client.patch(f"/api/v1/users/{uid}", json=body, headers=token_for(client, "admin"))
    assert resp.status_code == 422 and resp.get_json()["error"]["field"] == field


def test_unknown_users_are_not_found(client: FlaskClient) -> None:
    admin = token_for(client, "admin")
    for uid in ("999", "99999999999999999999999"):
        assert client.patch(f"/api/v1/users/{uid}", json={"active": False},
                            headers=admin).status_code == 404  # fmt: skip
        assert client.post(f"/api/v1/users/{uid}/password", headers=admin).status_code == 404
    assert client.patch("/api/v1/users/abc", json={}, headers=admin).status_code == 404


def test_a_deactivated_user_loses_session_and_tokens_at_once(
    app: Flask, client: FlaskClient, db: Database
) -> None:
    admin = token_for(client, "admin")
    operator_token = token_for(client, "operator")
    browser = app.test_client()
    web_login(browser, "operator")
    assert browser.get("/history").status_code == 200
    uid = user_id(db, "operator")

    resp = client.patch(f"/api/v1/users/{uid}", json={"active": False}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["active"] is False
    assert client.get("/api/v1/zones", headers=operator_token).status_code == 401
    page = browser.get("/history")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    assert browser.get("/api/v1/zones").status_code == 401
    refused = client.post(
        "/api/v1/auth/token", json={"username": "operator", "password": PASSWORDS["operator"]}
    )
    assert refused.status_code == 401  # fmt: skip

    resp = client.patch(f"/api/v1/users/{uid}", json={"active": True}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["active"] is True
    # Reactivated: they log in again; the old token stays revoked.
    assert client.get("/api/v1/zones", headers=operator_token).status_code == 401
    assert client.get("/api/v1/zones", headers=token_for(client, "operator")).status_code == 200
    changes = [e.detail for e in audit_of(db, "user_changed")]
    assert changes == [{"active": [True, False]}, {"active": [False, True]}]


def test_the_last_active_admin_cannot_demote_or_deactivate_themself(
    client: FlaskClient, db: Database
) -> None:
    admin = token_for(client, "admin")
    me = user_id(db, "admin")
    for body in ({"role": "operator"}, {"active": False}, {"role": "viewer", "active": False}):
        resp = client.patch(f"/api/v1/users/{me}", json=body, headers=admin)
        assert resp.status_code == 409, body
        assert resp.get_json()["error"]["code"] == "last_admin"
    # A deactivated admin does not count.
    other = client.post("/api/v1/users", json={"username": "admin2", "role": "admin"},
                        headers=admin).get_json()  # fmt: skip
    client.patch(f"/api/v1/users/{other['id']}", json={"active": False}, headers=admin)
    assert client.patch(f"/api/v1/users/{me}", json={"role": "operator"},
                        headers=admin).status_code == 409  # fmt: skip
    # With another active admin, stepping down is allowed.
    client.patch(f"/api/v1/users/{other['id']}", json={"active": True}, headers=admin)
    resp = client.patch(f"/api/v1/users/{me}", json={"role": "operator"}, headers=admin)
    assert resp.status_code == 200
    assert client.get("/api/v1/users", headers=admin).status_code == 403  # no longer admin
    other_admin = new_token(client, "admin2", other["password"])
    resp = client.patch(f"/api/v1/users/{other['id']}", json={"active": False},
                        headers=other_admin)  # fmt: skip
    assert resp.status_code == 409  # admin2 is now the last one


def test_a_password_reset_gives_a_new_one_once_and_revokes_tokens(
    client: FlaskClient, db: Database
) -> None:
    admin = token_for(client, "admin")
    viewer = token_for(client, "viewer")
    uid = user_id(db, "viewer")
    resp = client.post(f"/api/v1/users/{uid}/password", headers=admin)
    assert resp.status_code == 200
    out = resp.get_json()
    assert out["username"] == "viewer" and out["password_generated"] is True
    assert client.get("/api/v1/zones", headers=viewer).status_code == 401  # token revoked
    old = client.post(
        "/api/v1/auth/token", json={"username": "viewer", "password": PASSWORDS["viewer"]}
    )
    assert old.status_code == 401  # fmt: skip
    assert new_token(client, "viewer", out["password"])
    # The admin may set one instead; too short is refused.
    short = client.post(f"/api/v1/users/{uid}/password", json={"password": "short"},
                        headers=admin)  # fmt: skip
    assert short.status_code == 422 and short.get_json()["error"]["field"] == "password"
    chosen = client.post(f"/api/v1/users/{uid}/password",
                         json={"password": "a-long-enough-one"}, headers=admin)  # fmt: skip
    assert chosen.status_code == 200 and chosen.get_json()["password_generated"] is False
    assert new_token(client, "viewer", "a-long-enough-one")
    resets = audit_of(db, "password_reset")
    assert [(e.target, e.username, e.detail) for e in resets] == [
        ("viewer", "admin", {"generated": True}),
        ("viewer", "admin", {"generated": False}),
    ]


def test_the_users_page_is_for_admins_and_sends_the_csrf_token(
    app: Flask, client: FlaskClient, db: Database
) -> None:
    web_login(client, "admin")
    page = client.get("/users")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "history.js" in html and 'id="users-config"' in html and "Người dùng mới" in html
    # The page's own calls carry the session's CSRF token; without it they are refused.
    token = csrf_token(client, "/users")
    body = {"username": "from-page", "role": "viewer"}
    assert client.post("/api/v1/users", json=body).status_code == 400
    resp = client.post("/api/v1/users", json=body, headers={"X-CSRFToken": token})
    assert resp.status_code == 201
    viewer = app.test_client()
    web_login(viewer, "viewer")
    assert viewer.get("/users").status_code == 403
