"""Every JSON body of the API (each POST/PUT/PATCH route of app.url_map under /api/v1):
random bytes, JSON of any shape and mutations of a valid body get a JSON answer below 500
(a 4xx names the problem in `error.message`), and the valid body still works afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from console.db import Database
from tests.fuzz.api_setup import Console, as_json, body_routes, expect, set_up_console
from tests.fuzz.strategies import json_bytes, json_values, mutated, raw_bytes
from tests.fuzz.tally import Case, Tally, fuzz_settings

UPLOAD_ROUTES = {"api.upload_audio"}  # multipart: tests/fuzz/test_uploads.py
# Routes whose valid body costs seconds (speech synthesis, broker accounts): fewer examples.
SCALE = {"api.speak_text": 0.1, "api.reissue_device_credentials": 0.2, "api.create_device": 0.3}
SCALE_DEFAULT = 0.35
GOOD_AFTER = (200, 201, 202, 204, 409)
# The valid body again, after the fuzzing: a locked login (wrong passwords were tried), a
# device that the fuzzing registered already.
ALSO_GOOD = {"api.create_token": (429,), "api.create_device": (422,)}


@pytest.fixture
def console(client: FlaskClient, db: Database, tmp_path: Path) -> Console:
    return set_up_console(client, db, tmp_path)


def api_body_endpoints(app: Flask) -> set[str]:
    return {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and (rule.methods or set()) & {"POST", "PUT", "PATCH"}
    }


def judge(resp: TestResponse, case: Case) -> None:
    """Below 500, JSON, and a 4xx says what is wrong."""
    body = resp.get_data(as_text=True)
    assert resp.status_code < 500, (resp.status_code, body[:800])
    if resp.status_code == 204:
        case.accepted()
        return
    assert resp.is_json, (resp.status_code, resp.content_type, body[:300])
    data = resp.get_json()
    if resp.status_code >= 400:
        error = data["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        assert error["message"].strip()
        case.refused()
    else:
        case.accepted()


# Regressions: deeply nested JSON made Flask's get_json raise RecursionError (a 500 on every
# route with a body).
DEEP = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


def fuzz_route(tally: Tally, console: Console, endpoint: str, method: str, url: str,
               valid: dict[str, object]) -> None:  # fmt: skip
    bodies = st.one_of(raw_bytes, json_bytes(json_values()), json_bytes(mutated(valid)))

    @fuzz_settings(SCALE.get(endpoint, SCALE_DEFAULT))
    @given(body=bodies)
    @example(body=DEEP)
    @example(body=DEEP_OBJECT)
    @example(body=b'{"name": "\\ud800"}')
    def run(body: bytes) -> None:
        with tally.case(f"api body: {endpoint}") as case:
            judge(console.send(method, url, body), case)

    run()


def test_json_bodies_of_every_route(tally: Tally, app: Flask, console: Console) -> None:
    # Every route with a body is fuzzed: a new one needs a valid example in api_setup.
    assert api_body_endpoints(app) - UPLOAD_ROUTES == set(body_routes(console))
    for endpoint, (method, url, valid) in body_routes(console).items():
        fuzz_route(tally, console, endpoint, method, url, valid)
        # The process and its database still serve the valid body.
        expect(console.send(method, url, as_json(valid)), *GOOD_AFTER, *ALSO_GOOD.get(endpoint, ()))


NOT_JSON = [
    ("application/x-www-form-urlencoded", b"name=x&id=y"),
    ("text/plain", b'{"id": "x"}'),
    ("application/json; charset=latin-1", '{"name": "Thôn"}'.encode("latin-1")),
    ("multipart/form-data; boundary=zz", b"--zz\r\n\r\n--zz--"),
    ("application/json", b""),
]


def test_bodies_that_are_not_json(tally: Tally, console: Console) -> None:
    for content_type, body in NOT_JSON:
        for endpoint, (method, url, _) in body_routes(console).items():
            if endpoint in SCALE:
                continue  # their bodies are ignored or costly; refusal is the same code path
            with tally.case(f"api body: {endpoint}") as case:
                resp = console.client.open(url, method=method, data=body, content_type=content_type,
                                           headers=console.admin)  # fmt: skip
                judge(resp, case)
