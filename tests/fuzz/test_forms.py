"""The HTML forms staff post (login, change of password, logout), with the CSRF token the
page gives: any field value, a missing or forged token, broken form encoding. Every answer
is a page below 500 that shows what was typed escaped, and a good login still works."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from tests.console.conftest import PASSWORDS
from tests.fuzz.strategies import NASTY_TEXT, big_text
from tests.fuzz.tally import Case, Tally, fuzz_settings

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
field_values = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=60), big_text)


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'name="csrf_token" value="([^"]+)"', page
    )
    assert found is not None, page[:300]
    return found[1]


def encode_form(fields: dict[str, str]) -> bytes:
    """As a browser sends it, UTF-8 percent-encoded (a lone surrogate as its raw bytes)."""
    return urllib.parse.urlencode(fields, encoding="utf-8", errors="surrogatepass").encode()


def judge_page(resp: TestResponse, case: Case, typed: list[str]) -> None:
    """Below 500; whatever was typed appears only escaped."""
    html = resp.get_data().decode("utf-8", "replace")
    assert resp.status_code < 500, (resp.status_code, html[:500])
    for value in typed:
        for dangerous in (SCRIPT, ATTRIBUTE):
            if dangerous in value:
                assert dangerous not in html, f"{dangerous!r} shown unescaped"
    if resp.status_code >= 400:
        case.refused()
    else:
        case.accepted()


def login_works(app: Flask, role: str = "admin") -> None:
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    resp = browser.post(
        "/login", data={"csrf_token": token, "username": role, "password": PASSWORDS[role]}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]


Form = Callable[[dict[str, str]], dict[str, str]]


@st.composite
def form_fields(draw: st.DrawFn, valid: dict[str, str]) -> dict[str, str]:
    """The valid form with some fields changed, dropped, or added."""
    fields = dict(valid)
    for name in draw(st.lists(st.sampled_from(sorted(valid)), min_size=1, max_size=3, unique=True)):
        action = draw(st.sampled_from(["value", "value", "drop", "token"]))
        if action == "value":
            fields[name] = draw(field_values)
        elif action == "drop":
            del fields[name]
        else:
            fields["csrf_token"] = draw(
                st.sampled_from(["", "x", fields.get("csrf_token", "") + "x"])
            )
    if draw(st.booleans()):
        fields[draw(st.text(min_size=1, max_size=10))] = draw(field_values)
    return fields


def test_login_form(tally: Tally, app: Flask) -> None:
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    valid = {"csrf_token": token, "username": "nobody-here", "password": "wrong-password-1"}

    @fuzz_settings(0.35)
    @given(fields=form_fields(valid), raw=st.booleans())
    @example(fields={**valid, "username": SCRIPT}, raw=False)
    @example(fields={**valid, "username": ATTRIBUTE}, raw=False)
    @example(fields={**valid, "username": "\ud800"}, raw=False)
    def run(fields: dict[str, str], raw: bool) -> None:
        with tally.case("form: login") as case:
            body = encode_form(fields)
            if raw:  # percent-encoding that is not UTF-8, and bare bytes
                body = body.replace(b"%", b"%FF", 1) + b"&%zz=%&\xff\xfe=1"
            resp = browser.post(
                "/login", data=body, content_type="application/x-www-form-urlencoded"
            )
            judge_page(resp, case, list(fields.values()))

    run()
    login_works(app)


def test_password_change_form(tally: Tally, app: Flask) -> None:
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    resp = browser.post("/login", data={"csrf_token": token, "username": "operator",
                                        "password": PASSWORDS["operator"]})  # fmt: skip
    assert resp.status_code == 302
    token = csrf_token(browser, "/account")
    valid = {"csrf_token": token, "current": "not-the-password", "new": "a-new-password-1",
             "confirm": "a-new-password-1"}  # fmt: skip

    @fuzz_settings(0.3)
    @given(fields=form_fields(valid))
    @example(fields={**valid, "new": SCRIPT * 3, "confirm": ATTRIBUTE})
    def run(fields: dict[str, str]) -> None:
        with tally.case("form: change password") as case:
            resp = browser.post("/account", data=encode_form(fields),
                                content_type="application/x-www-form-urlencoded")  # fmt: skip
            judge_page(resp, case, list(fields.values()))

    run()
    assert browser.get("/account").status_code == 200  # still logged in, the page still works
    login_works(app, "operator")  # the wrong current password never changed it


def test_logout_and_language(tally: Tally, app: Flask) -> None:
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    browser.post(
        "/login", data={"csrf_token": token, "username": "viewer", "password": PASSWORDS["viewer"]}
    )

    short = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=60))  # a URL, a header

    @fuzz_settings(0.25)
    @given(code=short, referrer=short)
    def run(code: str, referrer: str) -> None:
        with tally.case("form: language and logout") as case:
            path = "/lang/" + urllib.parse.quote(code, safe="", errors="surrogatepass")
            ref = referrer.encode("utf-8", "surrogatepass").replace(b"\n", b"").replace(b"\r", b"")
            resp = browser.get(path, headers={"Referer": ref.decode("latin-1")})
            assert resp.status_code < 500
            location = resp.headers.get("Location", "")
            assert not location.startswith(("//", "http://evil", "javascript:"))  # no open redirect
            judge_page(resp, case, [])
            assert browser.post("/logout", data={"csrf_token": "forged"}).status_code == 400

    run()
