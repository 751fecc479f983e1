"""The OpenAPI document: valid OpenAPI 3.1, complete (every /api/v1 rule of the app), true (the
roles it states are the ones enforced, the answers it describes are the ones given), and a
route added later is described from its own code."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from flask import Flask, Response, jsonify, request
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from pydantic import BaseModel, Field, create_model
from werkzeug.routing import Rule

from console import openapi
from console.api import ApiError, parse_body
from console.auth import db, require_role
from console.models import AudioFile, Role
from tests.console.conftest import token_for

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
SHA = "d" * 64


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    resp = client.get("/api/v1/openapi.json")  # no login needed
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    document: dict[str, Any] = resp.get_json()
    return document


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    ]


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator: the whole document, references included
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_every_api_rule_of_the_app_is_in_the_document(app: Flask, doc: dict[str, Any]) -> None:
    """Routes added to the API later are caught here if the generator misses them."""
    documented = {(m, "/api/v1" + p) for m, p, _ in operations(doc)}
    in_app = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            in_app |= {(m, path) for m in (rule.methods or set()) & METHODS}
    assert in_app - documented == set()
    assert documented - in_app == set()
    assert {"/zones", "/devices", "/audio", "/schedules", "/broadcasts", "/stop"} <= set(
        doc["paths"]
    )


def test_route_docs_name_only_routes_that_exist(app: Flask) -> None:
    assert set(openapi.ROUTE_DOCS) - set(app.view_functions) == set()


def _fill(path: str, op: dict[str, Any]) -> str:
    """A concrete URL for a path template: ids that exist nowhere."""
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = "999999" if param["schema"].get("type") == "integer" else "khong-co"
            path = path.replace("{" + param["name"] + "}", value)
    return "/api/v1" + path


def test_the_roles_it_states_are_the_ones_enforced(
    client: FlaskClient, doc: dict[str, Any]
) -> None:
    """Nobody: 401 wherever a role is stated; a viewer: 403 where more is needed, and so on."""
    tokens = {role: token_for(client, role) for role in ("viewer", "operator")}
    public = []
    for method, path, op in operations(doc):
        url, role = _fill(path, op), op.get("x-role")
        resp = client.open(url, method=method)
        resp.close()  # a live stream is never read
        if role is None:
            public.append(path)
            assert resp.status_code != 401, (method, path)
            assert op["security"] == []
            continue
        assert resp.status_code == 401, (method, path, resp.status_code)
        assert {"bearerToken": []} in op["security"]
        assert "401" in op["responses"] and "403" in op["responses"]
        for lower, token in tokens.items():
            if Role(lower).rank < Role(role).rank:
                denied = client.open(url, method=method, headers=token, json={})
                assert denied.status_code == 403, (method, path, lower)
    assert sorted(public) == ["/auth/token", "/health", "/openapi.json"]


def _schema_for(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    answer = doc["paths"][path][method.lower()]["responses"][str(status)]
    schema: dict[str, Any] = answer["content"]["application/json"]["schema"]
    return {**schema, "components": doc["components"]}


def check(doc: dict[str, Any], method: str, path: str, resp: Any, status: int) -> Any:
    """The answer has the status and the shape the document gives for it."""
    body = resp.get_json()
    assert resp.status_code == status, (method, path, body)
    jsonschema.validate(body, _schema_for(doc, method, path, status))
    return body


def test_answers_have_the_shapes_it_describes(
    client: FlaskClient, doc: dict[str, Any], app: Flask
) -> None:
    admin, operator = token_for(client, "admin"), token_for(client, "operator")
    with app.app_context(), db().session() as session:
        session.add(
            AudioFile(
                sha256=SHA, name="Thông báo <b>họp</b>", original_name="hop.mp3",
                duration_ms=4000, size_bytes=1000, mime="audio/mpeg",
            )
        )  # fmt: skip
    check(doc, "GET", "/health", client.get("/api/v1/health"), 200)
    login = {"username": "viewer", "password": "wrong-password"}
    check(doc, "POST", "/auth/token", client.post("/api/v1/auth/token", json=login), 401)
    zone = {"id": "xa-oa", "name": "Xã Ô Á", "kind": "commune"}
    check(doc, "POST", "/zones", client.post("/api/v1/zones", json=zone, headers=admin), 201)
    check(doc, "POST", "/zones", client.post("/api/v1/zones", json=zone, headers=admin), 409)
    bad = {**zone, "id": "<script>"}
    err = check(doc, "POST", "/zones", client.post("/api/v1/zones", json=bad, headers=admin), 422)
    assert err["error"]["field"] == "id"
    check(doc, "GET", "/zones", client.get("/api/v1/zones", headers=admin), 200)
    check(doc, "GET", "/audio/{sha256}", client.get(f"/api/v1/audio/{SHA}", headers=admin), 200)
    missing = client.get("/api/v1/audio/" + "0" * 64, headers=admin)
    check(doc, "GET", "/audio/{sha256}", missing, 404)
    schedule = {
        "name": "Bản tin sáng",
        "audio_sha256": SHA,
        "zone_ids": ["xa-oa"],
        "rule": {"kind": "recurring", "frequency": "daily", "times": ["07:00"],
                 "start_date": "2030-01-01"},
    }  # fmt: skip
    made = check(
        doc,
        "POST",
        "/schedules",
        client.post("/api/v1/schedules", json=schedule, headers=operator),
        201,
    )
    one = client.get(f"/api/v1/schedules/{made['id']}", headers=operator)
    check(doc, "GET", "/schedules/{schedule_id}", one, 200)
    check(doc, "GET", "/schedules", client.get("/api/v1/schedules", headers=operator), 200)
    quiet = client.get("/api/v1/communes/xa-oa/quiet-hours", headers=operator)
    check(doc, "GET", "/communes/{zone_id}/quiet-hours", quiet, 200)
    holiday = {"date": "2030-09-02", "name": "Quốc khánh"}
    added = client.post("/api/v1/communes/xa-oa/holidays", json=holiday, headers=operator)
    check(doc, "POST", "/communes/{zone_id}/holidays", added, 201)
    now = {"audio_sha256": SHA, "zone_ids": ["xa-oa"], "priority": "emergency"}
    sent = check(
        doc,
        "POST",
        "/broadcasts",
        client.post("/api/v1/broadcasts", json=now, headers=operator),
        201,
    )
    one = client.get(f"/api/v1/broadcasts/{sent['id']}", headers=operator)
    check(doc, "GET", "/broadcasts/{broadcast_id}", one, 200)
    check(doc, "GET", "/broadcasts", client.get("/api/v1/broadcasts", headers=operator), 200)
    stop = {"zone_ids": ["xa-oa"], "target_id": sent["id"]}
    check(doc, "POST", "/stop", client.post("/api/v1/stop", json=stop, headers=operator), 202)


def test_request_bodies_are_the_models_the_routes_parse(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/zones"]["post"]["requestBody"]["content"]["application/json"]
    zone_body = {**body["schema"], "components": doc["components"]}
    jsonschema.validate({"id": "xa-1", "name": "Xã Một", "kind": "commune"}, zone_body)
    for wrong in ({"id": "xa-1"}, {"id": "Xa 1", "name": "x", "kind": "commune"},
                  {"id": "xa-1", "name": "x", "kind": "commune", "extra": 1}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, zone_body)
    stop = doc["paths"]["/stop"]["post"]
    assert stop["x-role"] == "operator" and "202" in stop["responses"]
    assert stop["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/StopBody"
    )
    assert "priority" in schemas["BroadcastBody"]["properties"]
    upload = doc["paths"]["/audio"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    limit = [p for p in doc["paths"]["/broadcasts"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit == [{"name": "limit", "in": "query", "required": False,
                      "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}]  # fmt: skip
    param = doc["paths"]["/schedules/{schedule_id}"]["get"]["parameters"][0]
    assert param["in"] == "path" and param["schema"]["type"] == "integer"


def test_the_document_is_public_and_built_once(client: FlaskClient) -> None:
    first = client.get("/api/v1/openapi.json")
    second = client.get("/api/v1/openapi.json", headers={"Authorization": "Bearer nonsense"})
    assert first.data == second.data  # built once; a bad token does not matter here
    assert json.loads(first.data)["info"]["title"].startswith("Tiếng loa an ninh")
    wrong = client.post("/api/v1/openapi.json", json={})
    assert wrong.status_code == 405


# --- a route added later ------------------------------------------------------------------


class ThingBody(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    count: int = Field(ge=1, le=9)


@require_role(Role.OPERATOR)
def make_thing(thing_id: int) -> tuple[Response, int]:
    """Make a thing in a zone. A second sentence for the description only."""
    body = parse_body(ThingBody)
    page = request.args.get("page", "1")
    if thing_id > 100:
        raise ApiError(404, "not_found", "no such zone")
    if body.count > 5:
        raise ApiError(409, "conflict", "too many")
    return jsonify({"page": page}), 201


def test_a_route_added_later_is_described_from_its_code() -> None:
    rule = Rule("/api/v1/zones/<int:thing_id>/things", endpoint="api.make_thing", methods=["POST"])
    path, params = openapi.openapi_path(rule, "/api/v1")
    assert path == "/zones/{thing_id}/things"
    op, model = openapi.operation(rule, "POST", make_thing, params)
    assert model is ThingBody
    assert op["summary"] == "Make a thing in a zone"
    assert "A second sentence" in op["description"] and "operator" in op["description"]
    assert op["x-role"] == "operator" and op["tags"] == ["zones"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ThingBody")
    names = {(p["in"], p["name"]): p["schema"] for p in op["parameters"]}
    assert names == {("path", "thing_id"): {"type": "integer", "minimum": 0},
                     ("query", "page"): {"type": "string", "default": "1"}}  # fmt: skip
    assert set(op["responses"]) == {"201", "400", "401", "403", "404", "409", "422"}


def test_two_body_models_with_one_name_are_refused() -> None:
    first = create_model("SameBody", __module__="console.a", x=(int, ...))
    second = create_model("SameBody", __module__="console.b", y=(int, ...))
    with pytest.raises(ValueError, match="SameBody"):
        openapi.check_component_names([first, second])
