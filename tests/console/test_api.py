"""JSON API: authentication, roles, validation and clear errors."""

from __future__ import annotations

import io

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.console.conftest import PASSWORDS, token_for


def test_token_needs_the_right_password(client: FlaskClient) -> None:
    resp = client.post("/api/v1/auth/token", json={"username": "admin", "password": "nope"})
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "bad_credentials"
    resp = client.post(
        "/api/v1/auth/token", json={"username": "admin", "password": PASSWORDS["admin"]}
    )
    assert resp.status_code == 201 and resp.get_json()["role"] == "admin"


def test_no_token_or_a_bad_token_is_refused(client: FlaskClient) -> None:
    assert client.get("/api/v1/devices").status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert client.get("/api/v1/devices", headers=bad).status_code == 401


ZONE = {"id": "xa-test", "name": "Xã Thử", "kind": "commune"}


@pytest.mark.parametrize(
    ("role", "method", "path", "body", "allowed"),
    [
        ("viewer", "get", "/api/v1/zones", None, True),
        ("viewer", "post", "/api/v1/zones", ZONE, False),
        ("operator", "post", "/api/v1/zones", ZONE, False),
        ("admin", "post", "/api/v1/zones", ZONE, True),
        ("viewer", "post", "/api/v1/schedules", {}, False),
        ("viewer", "post", "/api/v1/broadcasts", {}, False),
        ("viewer", "post", "/api/v1/stop", {}, False),
        ("viewer", "post", "/api/v1/devices", {}, False),
        ("operator", "post", "/api/v1/devices", {}, False),
        ("viewer", "get", "/api/v1/broadcasts", None, True),
        ("viewer", "get", "/api/v1/audio", None, True),
    ],
)
def test_roles_are_enforced(
    client: FlaskClient,
    role: str,
    method: str,
    path: str,
    body: dict[str, str] | None,
    allowed: bool,
) -> None:
    resp = getattr(client, method)(path, json=body, headers=token_for(client, role))
    if allowed:
        assert resp.status_code in (200, 201), resp.get_json()
    else:
        assert resp.status_code == 403
        assert resp.get_json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"id": "Xã Thử", "name": "x", "kind": "commune"}, 422, "id"),
        ({"id": "xa", "name": "", "kind": "commune"}, 422, "name"),
        ({"id": "xa", "name": "x", "kind": "province"}, 422, "kind"),
        ({"id": "xa", "name": "x", "kind": "commune", "extra": 1}, 422, "extra"),
        ({"id": "xa", "name": "x" * 5000, "kind": "commune"}, 422, "name"),
        ({"id": "thon", "name": "x", "kind": "hamlet"}, 422, "parent"),
        ({"id": "thon", "name": "x", "kind": "hamlet", "parent_id": "nowhere"}, 422, "nowhere"),
    ],
)
def test_bad_zone_bodies_get_clear_errors(
    client: FlaskClient, body: dict[str, object], status: int, fragment: str
) -> None:
    resp = client.post("/api/v1/zones", json=body, headers=token_for(client, "admin"))
    assert resp.status_code == status
    assert fragment in resp.get_json()["error"]["message"]


def test_a_body_that_is_not_json_is_refused(client: FlaskClient) -> None:
    headers = token_for(client, "admin") | {"Content-Type": "application/json"}
    resp = client.post("/api/v1/zones", data=b"{nope", headers=headers)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "bad_json"


def test_session_requests_need_the_csrf_token(client: FlaskClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    import re

    token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page.data)
    assert token is not None
    resp = client.post(
        "/login",
        data={
            "username": "admin",
            "password": PASSWORDS["admin"],
            "csrf_token": token.group(1).decode(),
        },
    )
    assert resp.status_code == 302
    resp = client.post("/api/v1/zones", json=ZONE)  # logged in by cookie, no CSRF header
    assert resp.status_code == 400
    assert "csrf" in resp.get_json()["error"]["message"].lower()


def test_a_login_without_csrf_token_is_refused(client: FlaskClient) -> None:
    resp = client.post("/login", data={"username": "admin", "password": PASSWORDS["admin"]})
    assert resp.status_code == 400  # refused by CSRF protection; nobody logged in
    assert client.get("/").status_code == 302


def test_upload_refuses_non_audio_and_keeps_nothing(client: FlaskClient, settings) -> None:  # type: ignore[no-untyped-def]
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(b"this is a text file, not audio\n" * 50), "notice.mp3")},
        headers=token_for(client, "operator"),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "not_audio"
    assert client.get("/api/v1/audio", headers=token_for(client, "viewer")).get_json() == []
    media = settings.media_dir
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_upload_without_a_file(client: FlaskClient) -> None:
    resp = client.post("/api/v1/audio", data={}, headers=token_for(client, "operator"))
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "no_file"


def test_too_large_upload_is_refused_in_json(client: FlaskClient) -> None:
    client.application.config["MAX_CONTENT_LENGTH"] = 10_000
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(b"\0" * 20_000), "big.wav")},
        headers=token_for(client, "operator"),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "too_large"


def test_media_needs_device_credentials(client: FlaskClient) -> None:
    sha = "a" * 64
    assert client.get(f"/media/{sha}.mp3").status_code == 401
    resp = client.get(f"/media/{sha}.mp3", auth=("loa-x", "wrong"))
    assert resp.status_code == 401
    # Staff tokens are not device credentials.
    assert client.get(f"/media/{sha}.mp3", headers=token_for(client, "admin")).status_code == 401


def test_the_console_speaks_vietnamese_first_then_english(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert "Đăng nhập" in page and 'lang="vi"' in page
    client.get("/lang/en")
    page = client.get("/login").get_data(as_text=True)
    assert "Log in" in page and 'lang="en"' in page


def test_schedule_with_a_bad_rule_names_the_problem(client: FlaskClient) -> None:
    headers = token_for(client, "admin")
    client.post("/api/v1/zones", json=ZONE, headers=headers)
    body = {
        "name": "x",
        "audio_sha256": "b" * 64,
        "rule": {"kind": "sometimes"},
        "zone_ids": ["xa-test"],
    }
    resp = client.post("/api/v1/schedules", json=body, headers=headers)
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "invalid_rule"


def test_unknown_routes_wrong_methods_and_huge_bodies_answer_the_apis_json(
    app: Flask, client: FlaskClient
) -> None:
    admin = token_for(client, "admin")
    for path in ("/api/v1/no-such-thing", "/api/v1/devices/x/y/z", "/api/v1/" + "x" * 5000):
        for headers in (admin, {}):  # no route: 404 before any login is asked for
            resp = client.get(path, headers=headers)
            assert resp.status_code == 404 and resp.is_json, path[:40]
            error = resp.get_json()["error"]
            assert error["code"] == "not_found" and "no such route: GET /api/v1/" in error["message"]
            assert len(error["message"]) < 400  # a huge path is not echoed whole
    # HTML in the path comes back inside JSON (never a page that renders it).
    resp = client.get("/api/v1/<script>alert(1)</script>", headers=admin)
    assert resp.status_code == 404 and resp.mimetype == "application/json"
    # A route's own 404 keeps its words.
    resp = client.get("/api/v1/devices/khong-co", headers=admin)
    assert resp.get_json()["error"]["message"] == "no device 'khong-co'"

    for method, path, allowed in [
        ("delete", "/api/v1/zones", ["GET", "HEAD", "OPTIONS", "POST"]),
        ("put", "/api/v1/health", ["GET", "HEAD", "OPTIONS"]),
        ("post", "/api/v1/devices/x/credentials/", None),  # a trailing slash: no such route
    ]:
        resp = getattr(client, method)(path, json={"a": 1}, headers=admin)
        if allowed is None:
            assert resp.status_code == 404 and resp.is_json
            continue
        assert resp.status_code == 405 and resp.is_json, path
        error = resp.get_json()["error"]
        assert error["code"] == "method_not_allowed" and error["allowed"] == allowed
        assert f"{method.upper()} {path} is not allowed" in error["message"]
        assert resp.headers["Allow"] == ", ".join(allowed)

    app.config["MAX_CONTENT_LENGTH"] = 2048
    json_headers = admin | {"Content-Type": "application/json"}
    for path, kwargs in [
        ("/api/v1/zones", {"data": b'{"id": "' + b"x" * 5000 + b'"}', "headers": json_headers}),
        ("/api/v1/audio", {"data": {"file": (io.BytesIO(b"x" * 5000), "a.mp3")}, "headers": admin}),
        ("/api/v1/no-such-thing", {"data": b"x" * 5000, "headers": json_headers}),
    ]:
        resp = client.post(path, **kwargs)
        assert resp.is_json and resp.status_code in (404, 413), path
        if path != "/api/v1/no-such-thing":
            assert resp.status_code == 413
            assert resp.get_json()["error"] == {
                "code": "too_large", "message": "the request body is larger than 2048 bytes"}  # fmt: skip
    # The process carries on; pages keep Flask's own HTML error pages.
    assert client.get("/api/v1/zones", headers=admin).status_code == 200
    page = client.get("/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_a_page_asked_for_without_logging_in_says_why_on_the_login_form(
    client: FlaskClient,
) -> None:
    resp = client.get("/devices?zone=thon-a")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=%2Fdevices")
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Vui lòng đăng nhập để mở trang này." in page
    assert "Please log in" not in page
    assert "Vui lòng đăng nhập" not in client.get("/login").get_data(as_text=True)  # once
    client.get("/lang/en")
    page = client.get(client.get("/history").headers["Location"]).get_data(as_text=True)
    assert "Please log in to open this page." in page
