"""The programme page as the server renders it: who sees which controls, the zone list and the
page's words (the script is tested in the browser, tests/console/browser/test_programme.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from console.models import Zone, ZoneKind
from console.web_programme import PROGRAMME_DAYS, zone_options
from tests.console.conftest import PASSWORDS, token_for

ZONES = [
    {"id": "xa-b", "name": "Xã Bình", "kind": "commune"},
    {"id": "xa-a", "name": "Xã An", "kind": "commune"},
    {"id": "thon-a2", "name": "Thôn 2", "kind": "hamlet", "parent_id": "xa-a"},
    {"id": "thon-a1", "name": "Thôn 1", "kind": "hamlet", "parent_id": "xa-a"},
    {"id": "cum-a11", "name": "Cụm 1.1", "kind": "cluster", "parent_id": "thon-a1"},
    {"id": "thon-b1", "name": "<b>Thôn</b> & “B”", "kind": "hamlet", "parent_id": "xa-b"},
]
CONFIG = re.compile(r'<script type="application/json" id="programme-config">(.*?)</script>', re.S)


@pytest.fixture
def zones(client: FlaskClient) -> None:
    admin = token_for(client, "admin")
    for zone in ZONES:
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201


def login(client: FlaskClient, role: str) -> None:
    token = _csrf(client.get("/login").get_data(as_text=True))
    resp = client.post(
        "/login", data={"username": role, "password": PASSWORDS[role], "csrf_token": token}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)


def config_of(html: str) -> dict[str, Any]:
    found = CONFIG.search(html)
    assert found, "the page carries no configuration for its script"
    return dict(json.loads(found[1]))


def page(client: FlaskClient, role: str, query: str = "") -> str:
    login(client, role)
    resp = client.get("/programme" + query)
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


@pytest.mark.usefixtures("zones")
def test_a_viewer_sees_the_programme_without_any_control_that_changes_it(
    client: FlaskClient,
) -> None:
    html = page(client, "viewer")
    for control in (
        'id="new-schedule"',
        'id="play-now"',
        'id="schedule-dialog"',
        'id="play-dialog"',
        'id="holiday-form"',
        'id="quiet-form"',
        'id="stop"',
    ):
        assert control not in html, control
    assert 'id="week"' in html and 'id="schedules"' in html and 'id="holidays"' in html
    assert "Chỉ quản trị viên mới đổi được giờ yên tĩnh." in html
    config = config_of(html)
    assert config["can_edit"] is False and config["can_set_quiet"] is False
    assert config["timezone"] == "Asia/Ho_Chi_Minh" and config["days"] == PROGRAMME_DAYS
    assert 'src="/static/programme.js"' in html


@pytest.mark.usefixtures("zones")
def test_an_operator_gets_the_forms_and_an_admin_also_quiet_hours(client: FlaskClient) -> None:
    html = page(client, "operator")
    for control in ('id="new-schedule"', 'id="play-now"', 'id="schedule-dialog"',
                    'id="play-dialog"', 'id="holiday-form"', 'id="stop"'):  # fmt: skip
        assert control in html, control
    assert 'id="quiet-form"' not in html  # quiet hours are the admin's
    assert config_of(html)["can_edit"] is True
    # Every input of the forms has a label.
    ids = set(re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html))
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
    radios_and_boxes = set(re.findall(r'<label class="inline"><input[^>]*\bid="([^"]+)"', html))
    assert ids - labelled - radios_and_boxes == set()

    client.post("/logout", data={"csrf_token": _csrf(html)})
    html = page(client, "admin")
    assert 'id="quiet-form"' in html
    assert config_of(html)["can_set_quiet"] is True


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found
    return found[1]


@pytest.mark.usefixtures("zones")
def test_zones_are_listed_under_their_commune_and_the_first_commune_is_chosen(
    client: FlaskClient,
) -> None:
    html = page(client, "viewer")
    config = config_of(html)
    assert [(z["id"], z["depth"], z["commune_id"]) for z in config["zones"]] == [
        ("xa-a", 0, "xa-a"),
        ("thon-a1", 1, "xa-a"),
        ("cum-a11", 2, "xa-a"),
        ("thon-a2", 1, "xa-a"),
        ("xa-b", 0, "xa-b"),
        ("thon-b1", 1, "xa-b"),
    ]
    assert config["selected"] == "xa-a"
    assert '<option value="xa-a" selected>' in html

    chosen = config_of(page(client, "viewer", "?zone=thon-b1"))
    assert chosen["selected"] == "thon-b1"


@pytest.mark.usefixtures("zones")
def test_an_unknown_or_hostile_zone_in_the_address_falls_back_to_the_first_commune(
    client: FlaskClient,
) -> None:
    for bad in ("nope", "<script>alert(1)</script>", "x" * 5000):
        html = page(client, "viewer", f"?zone={bad}")
        assert config_of(html)["selected"] == "xa-a"
        assert "<script>alert(1)</script>" not in html
    # A NUL is refused before any page sees it (PostgreSQL's text cannot hold one).
    assert client.get("/programme?zone=xa-a%00").status_code == 400


@pytest.mark.usefixtures("zones")
def test_html_in_a_zone_name_is_shown_as_text(client: FlaskClient) -> None:
    html = page(client, "viewer")
    assert "&lt;b&gt;Thôn&lt;/b&gt; &amp; “B”" in html  # the option's text
    assert "<b>Thôn</b>" not in html  # neither in the option nor in the script's JSON
    names = {z["id"]: z["name"] for z in config_of(html)["zones"]}
    assert names["thon-b1"] == "<b>Thôn</b> & “B”"


@pytest.mark.usefixtures("zones")
def test_the_page_speaks_vietnamese_and_english_on_request(client: FlaskClient) -> None:
    html = page(client, "operator")
    texts = config_of(html)["texts"]
    assert texts["weekdays"].split("|") == [
        "Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật",
    ]  # fmt: skip
    assert "Tuần này" in html and "Phát ngay" in html and "Lên lịch mới" in html
    assert texts["quiet_at"].startswith("Giờ yên tĩnh %(span)s")

    client.get("/lang/en")
    html = client.get("/programme").get_data(as_text=True)
    texts = config_of(html)["texts"]
    assert texts["weekdays"].split("|")[0] == "Monday"
    assert "This week" in html and "Play now" in html
    # Every placeholder the script fills is still there in both languages.
    for lang in ("en", "vi"):
        client.get(f"/lang/{lang}")
        texts = config_of(client.get("/programme").get_data(as_text=True))["texts"]
        assert "%(name)s" in texts["conflict"] and "%(when)s" in texts["conflict"]
        assert "%(span)s" in texts["quiet_at"] and "%(time)s" in texts["quiet_at"]


def test_without_zones_the_page_says_what_to_do(client: FlaskClient) -> None:
    html = page(client, "operator")
    assert "Chưa có khu vực nào" in html
    assert 'id="new-schedule"' not in html  # nothing to schedule to yet
    assert config_of(html)["zones"] == []


def test_nobody_logged_in_is_sent_to_the_login_page(client: FlaskClient) -> None:
    resp = client.get("/programme")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_zone_options_survive_a_missing_parent_and_a_cycle() -> None:
    zones = [
        Zone(id="xa", name="Xã", kind=ZoneKind.COMMUNE, parent_id=None),
        Zone(id="lost", name="Lạc", kind=ZoneKind.HAMLET, parent_id="gone"),  # parent deleted
        Zone(id="c1", name="C1", kind=ZoneKind.CLUSTER, parent_id="c2"),
        Zone(id="c2", name="C2", kind=ZoneKind.CLUSTER, parent_id="c1"),  # unreachable cycle
    ]
    options = zone_options(zones)
    assert [(o.id, o.depth, o.commune_id) for o in options] == [
        ("lost", 0, "lost"),
        ("xa", 0, "xa"),
    ]
