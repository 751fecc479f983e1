"""PostgreSQL's text cannot hold a NUL character, which SQLite stores without a word: on
PostgreSQL a NUL anywhere a request carries text (a JSON field, a path, a query, a form
field, a file name) made the database raise, and the console answer 500. Now each is a
4xx before any SQL. Runs on PostgreSQL only (SQLite never failed)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from console.db import Database
from tests.fuzz.api_setup import COMMUNE, DEVICE, Console, body_routes, set_up_console
from tests.fuzz.tally import Tally, fuzz_settings
from tests.fuzz.test_api import judge
from tests.fuzz.test_forms import csrf_token, encode_form
from tests.fuzz.test_queries import with_query

pytestmark = pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
NUL = st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=8), st.text(max_size=8))


@pytest.fixture
def console(client: FlaskClient, db: Database, tmp_path: Path) -> Console:
    return set_up_console(client, db, tmp_path)


def with_nul(value: object, text: str) -> object:
    """Every string of a JSON value replaced by `text` (keys kept)."""
    if isinstance(value, str):
        return text
    if isinstance(value, dict):
        return {k: with_nul(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [with_nul(v, text) for v in value]
    return value


def test_nul_in_json_bodies_paths_and_queries(tally: Tally, app: Flask, console: Console) -> None:
    routes = body_routes(console)
    gets = ["/api/v1/devices/{}", "/api/v1/zones/{}/programme", "/api/v1/broadcasts/{}",
            "/api/v1/presets/{}", "/api/v1/communes/{}/holidays", "/api/v1/reports/broadcasts/{}"]  # fmt: skip

    @fuzz_settings(0.25)
    @given(endpoint=st.sampled_from(sorted(routes)), text=NUL, get=st.sampled_from(gets),
           param=st.sampled_from(["user", "zone", "q", "action", "since"]))  # fmt: skip
    def run(endpoint: str, text: str, get: str, param: str) -> None:
        method, url, valid = routes[endpoint]
        with tally.case("postgresql: NUL in a JSON body") as case:
            judge(console.client.open(url, method=method, json=with_nul(valid, text),
                                      headers=console.admin), case)  # fmt: skip
        with tally.case("postgresql: NUL in a path") as case:
            judge(console.client.get(get.format(text), headers=console.admin), case)
        with tally.case("postgresql: NUL in a query") as case:
            for path in (
                "/api/v1/audit",
                "/api/v1/devices",
                "/api/v1/audio",
                "/api/v1/reports/broadcasts",
            ):
                judge(
                    console.client.get(with_query(path, {param: text}), headers=console.admin), case
                )

    run()
    assert console.client.get(f"/api/v1/devices/{DEVICE}", headers=console.admin).status_code == 200
    assert (
        console.client.get(
            f"/api/v1/communes/{COMMUNE}/holidays", headers=console.admin
        ).status_code
        == 200
    )


def test_nul_in_forms_and_file_names(tally: Tally, app: Flask, console: Console) -> None:
    browser = app.test_client()
    token = csrf_token(browser, "/login")
    for fields in (
        {"username": "admin\x00", "password": "x"},
        {"username": "a", "password": "\x00"},
    ):
        with tally.case("postgresql: NUL in a form") as case:
            resp = browser.post("/login", data=encode_form({"csrf_token": token, **fields}),
                                content_type="application/x-www-form-urlencoded")  # fmt: skip
            assert resp.status_code < 500, resp.get_data(as_text=True)[:300]
            case.refused()
    for name, filename in (("Thông\x00báo", "a.wav"), ("ok", "x\x00.wav")):
        with tally.case("postgresql: NUL in a file name") as case:
            resp = console.client.post(
                "/api/v1/audio", data={"file": (io.BytesIO(b"RIFF"), filename), "name": name},
                headers=console.operator,
            )  # fmt: skip
            judge(resp, case)
