"""The OpenAPI 3.1 document of the JSON API (`GET /api/v1/openapi.json`), made from the routes.

Every /api/v1 rule of the app becomes an operation, read from the route itself:

- path parameters from the rule's converters (`<int:schedule_id>` is an integer);
- the role from its `require_role` decorator (none: a public route);
- the request body from the pydantic model it hands to `parse_body` (its JSON Schema);
- query parameters from the `request.args` names it (or a function it calls) reads;
- the main answers from the statuses it returns and raises (`ApiError(404, …)`);
- the summary and description from its docstring.

What code cannot tell (a multipart upload, the shape of an answer, a parameter's type) comes
from `ROUTE_DOCS` below or from `@api_doc(...)` on a view. A route added later is in the
document without any change here; the test suite checks that every rule is.
"""

from __future__ import annotations

import dis
import inspect
import json
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, Response, current_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

from console.api import bp
from console.models import BroadcastStatus, DeliveryStatus, Role

OPENAPI_VERSION = "3.1.0"
MAX_SUMMARY_CHARS = 100
API_VERSION = "1"
REF = "#/components/schemas/{model}"
F = TypeVar("F", bound=Callable[..., Any])

SUCCESS = {200: "OK", 201: "Created", 202: "Accepted (sent to the broker)", 204: "Done, no content"}
ERRORS = {
    400: "The body is not a JSON object, a file is missing, or a session request lacks CSRF",
    401: "No credentials, wrong credentials or an expired token",
    403: "The account's role may not do this",
    404: "No such object",
    409: "Taken, or a conflict with what is stored (see `error.code`)",
    413: "The upload is larger than the console accepts",
    422: "A value is wrong: `error.message` says which and why, `error.field` names it",
    429: "Too many failed logins for this username lately",
}
# Calls whose first argument is an error status: ApiError(404, ...), abort(403).
RAISERS = ("ApiError", "abort")
CONVERTERS = {
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number"},
    "uuid": {"type": "string", "format": "uuid"},
}


@dataclass(frozen=True)
class RouteDoc:
    """What the generator cannot read from a view's code."""

    # name -> JSON Schema (a "description" key is moved onto the parameter)
    query: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # a whole requestBody object, replacing the one made from parse_body's model
    request_body: dict[str, Any] | None = None
    # JSON Schema of the success answer
    answer: dict[str, Any] | None = None
    # the success answer's media type when it is not JSON
    media_type: str | None = None
    # more statuses (or better descriptions of inferred ones)
    statuses: Mapping[int, str] = field(default_factory=dict)


def api_doc(**doc: Any) -> Callable[[F], F]:
    """Attach a RouteDoc to a view (put it under the route decorator)."""

    def decorator(view: F) -> F:
        view.openapi_doc = RouteDoc(**doc)  # type: ignore[attr-defined]
        return view

    return decorator


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


TIME = {"type": ["string", "null"], "format": "date-time"}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

# Shapes of the answers (JSON Schema 2020-12). Additional fields may appear: clients ignore them.
ANSWER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}, "time": TIME},
    },
    "Token": {
        "type": "object",
        "required": ["token", "role"],
        "properties": {
            "token": {"type": "string"},
            "role": {"enum": [r.value for r in Role]},
        },
    },
    "Zone": {
        "type": "object",
        "required": ["id", "name", "kind", "parent_id"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"enum": ["commune", "hamlet", "cluster"]},
            "parent_id": {"type": ["string", "null"]},
        },
    },
    "Device": {
        "type": "object",
        "required": ["id", "name", "profile", "zone_id", "online", "last_seen_at"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "profile": {"type": "string"},
            "zone_id": {"type": "string"},
            "latitude": {"type": ["number", "null"]},
            "longitude": {"type": ["number", "null"]},
            "online": {"type": "boolean"},
            "last_seen_at": TIME,
            "config_version": {"type": ["integer", "null"]},
            "state": {"type": ["object", "null"]},
            "telemetry": {"type": ["object", "null"]},
            "decommissioned_at": {**TIME, "description": "set once decommissioned (history)"},
            "zones": {"type": "array", "items": {"type": "string"}},
            "bridge_config": {"type": "string", "description": "shown once, at registration"},
        },
    },
    "AudioFile": {
        "type": "object",
        "required": ["sha256", "name", "duration_ms", "size_bytes", "mime", "created_at"],
        "properties": {
            "sha256": SHA256,
            "name": {"type": "string"},
            "original_name": {"type": "string"},
            "duration_ms": {"type": "integer"},
            "size_bytes": {"type": "integer"},
            "mime": {"type": "string"},
            "loudness_lufs": {"type": ["number", "null"]},
            "created_by": {"type": ["integer", "null"]},
            "created_at": TIME,
        },
    },
    "Preset": {
        "type": "object",
        "required": ["key", "title", "audio_sha256", "duration_ms", "updated_at"],
        "properties": {
            "key": {"type": "string"},
            "title": {"type": "string"},
            "text": {"type": ["string", "null"]},
            "audio_sha256": SHA256,
            "duration_ms": {"type": "integer"},
            "size_bytes": {"type": "integer"},
            "updated_by": {"type": ["integer", "null"]},
            "updated_at": TIME,
        },
    },
    "Schedule": {
        "type": "object",
        "required": ["id", "name", "audio_sha256", "rule", "zone_ids", "priority", "enabled"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "audio_sha256": SHA256,
            "rule": {"type": "object"},
            "zone_ids": {"type": "array", "items": {"type": "string"}},
            "priority": {"enum": ["scheduled", "live"]},
            "bulletin_level": {"enum": ["normal", "priority"]},
            "volume_pct": {"type": ["integer", "null"]},
            "gong": {"type": "boolean"},
            "enabled": {"type": "boolean"},
            "on_conflict": {"enum": ["refuse", "queue_after"]},
            "created_at": TIME,
            "updated_at": TIME,
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["device_id", "status"],
        "properties": {
            "device_id": {"type": "string"},
            "status": {"enum": [s.value for s in DeliveryStatus]},
            "reason": {"type": ["string", "null"]},
            "received_at": TIME,
            "started_at": TIME,
            "ended_at": TIME,
        },
    },
    "Broadcast": {
        "type": "object",
        "required": ["id", "audio_sha256", "priority", "zone_ids", "status", "summary"],
        "properties": {
            "id": {"type": "string"},
            "schedule_id": {"type": ["integer", "null"]},
            "audio_sha256": SHA256,
            "priority": {"type": "string"},
            "zone_ids": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": [s.value for s in BroadcastStatus]},
            "scheduled_for": TIME,
            "fired_at": TIME,
            "play_at": TIME,
            "expires_at": TIME,
            "summary": {
                "type": "object",
                "description": "devices per delivery status",
                "additionalProperties": {"type": "integer"},
            },
            "deliveries": _list_of("Delivery"),
        },
    },
    "Stop": {
        "type": "object",
        "required": ["id", "zone_ids", "target_id"],
        "properties": {
            "id": {"type": "string"},
            "zone_ids": {"type": "array", "items": {"type": "string"}},
            "target_id": {"type": ["string", "null"]},
        },
    },
    "QuietHours": {
        "type": "object",
        "required": ["zone_id", "start", "end", "none", "default"],
        "properties": {
            "zone_id": {"type": "string"},
            "start": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            "end": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            "span": {"type": "string"},
            "none": {"type": "boolean"},
            "default": {"type": "boolean"},
            "updated_by": {"type": ["string", "integer", "null"]},
            "updated_at": TIME,
        },
    },
    "Holiday": {
        "type": "object",
        "required": ["date", "name"],
        "properties": {
            "date": {"type": "string", "format": "date"},
            "name": {"type": "string"},
            "created_by": {"type": ["string", "integer", "null"]},
            "created_at": TIME,
        },
    },
}

_MULTIPART_AUDIO = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                    "name": {"type": "string", "maxLength": 200},
                },
            }
        }
    },
}

# Keyed by endpoint ("api." + the view's name): what the code of these views cannot tell.
ROUTE_DOCS: dict[str, RouteDoc] = {
    "api.health": RouteDoc(answer=_ref("Health")),
    "api.create_token": RouteDoc(answer=_ref("Token")),
    "api.list_zones": RouteDoc(answer=_list_of("Zone")),
    "api.create_zone": RouteDoc(answer=_ref("Zone")),
    "api.list_devices": RouteDoc(answer=_list_of("Device")),
    "api.get_device": RouteDoc(answer=_ref("Device")),
    "api.create_device": RouteDoc(answer=_ref("Device")),
    "api.list_audio": RouteDoc(
        query={"q": {"type": "string", "description": "part of the name"}},
        answer=_list_of("AudioFile"),
    ),
    "api.get_audio": RouteDoc(answer=_ref("AudioFile")),
    "api.audio_file": RouteDoc(media_type="audio/mpeg"),
    "api.upload_audio": RouteDoc(
        request_body=_MULTIPART_AUDIO,
        answer=_ref("AudioFile"),
        statuses={200: "The same content was already stored", 413: ERRORS[413]},
    ),
    "api.list_presets": RouteDoc(answer=_list_of("Preset")),
    "api.get_preset": RouteDoc(answer=_ref("Preset")),
    "api.replace_preset": RouteDoc(answer=_ref("Preset")),
    "api.list_schedules": RouteDoc(answer=_list_of("Schedule")),
    "api.get_schedule": RouteDoc(answer=_ref("Schedule")),
    "api.create_schedule": RouteDoc(answer=_ref("Schedule")),
    "api.edit_schedule": RouteDoc(answer=_ref("Schedule")),
    "api.delete_schedule": RouteDoc(
        answer=_ref("Schedule"), statuses={200: "It had played: disabled, history kept"}
    ),
    "api.zone_programme": RouteDoc(
        query={"days": {"type": "integer", "minimum": 1, "maximum": 31, "default": 7}}
    ),
    "api.get_quiet_hours": RouteDoc(answer=_ref("QuietHours")),
    "api.set_quiet_hours": RouteDoc(answer=_ref("QuietHours")),
    "api.list_holidays": RouteDoc(
        query={"year": {"type": "integer", "minimum": 2000, "maximum": 2100}},
        answer=_list_of("Holiday"),
    ),
    "api.add_holidays": RouteDoc(answer=_list_of("Holiday")),
    "api.list_broadcasts": RouteDoc(
        query={
            "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            "schedule_id": {"type": "integer", "minimum": 0},
        },
        answer=_list_of("Broadcast"),
    ),
    "api.get_broadcast": RouteDoc(answer=_ref("Broadcast")),
    "api.create_broadcast": RouteDoc(answer=_ref("Broadcast")),
    "api.stop": RouteDoc(answer=_ref("Stop")),
}


# --- reading a view ----------------------------------------------------------------------


def _chain(view: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """The view and every function it wraps (functools.wraps' __wrapped__)."""
    seen: set[int] = set()
    fn: Any = view
    while callable(fn) and id(fn) not in seen:
        seen.add(id(fn))
        yield fn
        fn = getattr(fn, "__wrapped__", None)


def required_role(view: Callable[..., Any]) -> Role | None:
    """The role `require_role(...)` closed over, or None for a public route."""
    for fn in _chain(view):
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, Role):
                return value
    return None


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and those nested in it (comprehensions, inner functions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


@dataclass
class CodeFacts:
    """What a view's code shows: its body model, query names, statuses."""

    body_model: type[BaseModel] | None = None
    # a Body subclass the view names without parse_body (e.g. an optional body)
    other_model: type[BaseModel] | None = None
    streams: bool = False  # answers server-sent events (live.event_stream)
    query: dict[str, str | None] = field(default_factory=dict)  # name -> default
    success: set[int] = field(default_factory=set)
    errors: set[int] = field(default_factory=set)


def _resolve(names: list[str], namespace: Mapping[str, Any]) -> Any:
    value: Any = namespace.get(names[0]) if names else None
    for name in names[1:]:
        value = getattr(value, name, None)
    return value


def _read_code(fn: types.FunctionType, facts: CodeFacts, depth: int, own: bool) -> None:
    """Walk one function's bytecode; console functions it calls are read too (depth)."""
    for code in _codes(fn.__code__):
        instructions = list(dis.get_instructions(code))
        for i, ins in enumerate(instructions):
            status = ins.argval if ins.opname == "LOAD_CONST" else None
            if own and type(status) is int and status in SUCCESS:
                facts.success.add(status)
            if ins.opname != "LOAD_GLOBAL":
                continue
            following = instructions[i + 1 : i + 6]
            named = fn.__globals__.get(ins.argval)
            if own and isinstance(named, type) and issubclass(named, BaseModel):
                facts.other_model = facts.other_model or named
            if ins.argval == "event_stream":
                facts.streams = True
            if ins.argval in RAISERS:
                status = following[0].argval if following else None
                if following[0].opname == "LOAD_CONST" and status in ERRORS:
                    facts.errors.add(status)
            elif ins.argval == "parse_body" and facts.body_model is None:
                names = []
                for nxt in following[:3]:
                    if nxt.opname in ("LOAD_GLOBAL", "LOAD_ATTR") and isinstance(nxt.argval, str):
                        names.append(nxt.argval)
                    else:
                        break
                model = _resolve(names, fn.__globals__)
                if isinstance(model, type) and issubclass(model, BaseModel):
                    facts.body_model = model
            elif ins.argval == "request":
                _read_query(following, facts)
            else:
                callee = fn.__globals__.get(ins.argval)
                if not isinstance(callee, types.FunctionType) or not callee.__module__.startswith(
                    "console."
                ):
                    continue
                if _reads_query_by_argument(callee) and following[0].opname == "LOAD_CONST":
                    if isinstance(following[0].argval, str):  # _int_arg("limit", ...)
                        facts.query.setdefault(following[0].argval, None)
                elif depth > 0:
                    _read_code(callee, facts, depth - 1, own=False)


def _reads_query_by_argument(fn: types.FunctionType) -> bool:
    """True for a function like `def _int_arg(name, ...)` that reads request.args[name]."""
    code = fn.__code__
    if code.co_argcount < 1:
        return False
    first = code.co_varnames[0]
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname == "LOAD_GLOBAL" and ins.argval == "request":
            following = instructions[i + 1 : i + 4]
            reads_args = bool(following) and following[0].argval == "args"
            if reads_args and any(n.opname == "LOAD_FAST" and n.argval == first for n in following):
                return True
    return False


def _read_query(following: list[dis.Instruction], facts: CodeFacts) -> None:
    """`request.args.get("name", "default")` or `request.args["name"]`."""
    if not following or following[0].argval != "args":
        return
    rest = following[1:]
    if rest and rest[0].opname in ("LOAD_ATTR", "LOAD_METHOD"):  # .get / .getlist
        rest = rest[1:]
    if not rest or rest[0].opname != "LOAD_CONST" or not isinstance(rest[0].argval, str):
        return
    name = rest[0].argval
    default = None
    if len(rest) > 1 and rest[1].opname == "LOAD_CONST" and isinstance(rest[1].argval, str):
        default = rest[1].argval
    facts.query.setdefault(name, default)


def read_view(view: Callable[..., Any]) -> CodeFacts:
    facts = CodeFacts()
    inner = inspect.unwrap(view)
    if isinstance(inner, types.FunctionType):
        _read_code(inner, facts, depth=2, own=True)
    return facts


def _route_doc(endpoint: str, view: Callable[..., Any]) -> RouteDoc:
    for fn in _chain(view):
        doc = getattr(fn, "openapi_doc", None)
        if isinstance(doc, RouteDoc):
            return doc
    return ROUTE_DOCS.get(endpoint, RouteDoc())


def _returns_plain_response(view: Callable[..., Any]) -> bool:
    """True when the view may answer a bare Response (status 200)."""
    annotation = str(inspect.unwrap(view).__annotations__.get("return", ""))
    return "Response" in re.sub(r"tuple\[[^\]]*\]", "", annotation)


# --- the document ------------------------------------------------------------------------

_PARAM = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def openapi_path(rule: Rule, prefix: str) -> tuple[str, list[dict[str, Any]]]:
    """'/api/v1/schedules/<int:schedule_id>' -> ('/schedules/{schedule_id}', [parameter])."""
    params = []
    for match in _PARAM.finditer(rule.rule):
        schema = CONVERTERS.get(match["converter"] or "", {"type": "string"})
        params.append({"name": match["name"], "in": "path", "required": True, "schema": schema})
    path = _PARAM.sub(lambda m: "{" + m["name"] + "}", rule.rule)
    return path.removeprefix(prefix) or "/", params


def _summary(view: Callable[..., Any], endpoint: str) -> tuple[str, str]:
    """The docstring's first sentence (or the view's name) and the whole docstring."""
    text = " ".join((inspect.getdoc(inspect.unwrap(view)) or "").split())
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
    if len(first) > MAX_SUMMARY_CHARS:  # the rest stays in the description
        first = re.split(r"[:;(]", first, maxsplit=1)[0].strip()
        if len(first) > MAX_SUMMARY_CHARS:
            first = first[:MAX_SUMMARY_CHARS].rsplit(" ", 1)[0] + "…"
    if not first:
        first = endpoint.rpartition(".")[2].replace("_", " ").capitalize()
    return first, text


def _answer(
    status: int, description: str, schema: dict[str, Any] | None, media_type: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if status == 204:
        return out
    if media_type == "application/json":
        out["content"] = {media_type: {"schema": schema or {}}}
    else:
        out["content"] = {media_type: {"schema": {"type": "string"}}}
    return out


def _media_type(rule: Rule, doc: RouteDoc, facts: CodeFacts) -> str:
    if doc.media_type:
        return doc.media_type
    if facts.streams:
        return "text/event-stream"
    if rule.rule.endswith(".csv"):
        return "text/csv"
    return "application/json"


def operation(
    rule: Rule, method: str, view: Callable[..., Any], params: list[dict[str, Any]]
) -> tuple[dict[str, Any], type[BaseModel] | None]:
    endpoint = rule.endpoint
    doc, facts, role = _route_doc(endpoint, view), read_view(view), required_role(view)
    summary, description = _summary(view, endpoint)
    who = f"Role: {role.value} or higher." if role else "No login needed."
    op: dict[str, Any] = {
        "operationId": endpoint.rpartition(".")[2],
        "summary": summary,
        "description": f"{description}\n\n{who}".strip(),
        "tags": [rule.rule.removeprefix(bp.url_prefix or "").strip("/").split("/")[0]],
        "security": [{"bearerToken": []}, {"sessionCookie": []}] if role else [],
    }
    if role is not None:
        op["x-role"] = role.value
    query = dict.fromkeys(facts.query) | dict.fromkeys(doc.query)
    for name in query:
        schema = dict(doc.query.get(name, {"type": "string"}))
        param: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if "description" in schema:
            param["description"] = schema.pop("description")
        default = facts.query.get(name)
        if default and "default" not in schema:
            if schema.get("type") == "integer":
                if default.isdigit():
                    schema["default"] = int(default)
            else:
                schema["default"] = default
        param["schema"] = schema
        params = [*params, param]
    if params:
        op["parameters"] = params
    model, required = facts.body_model, True
    if model is None and method in ("POST", "PUT", "PATCH"):
        model, required = facts.other_model, False
    if doc.request_body is not None:
        op["requestBody"] = doc.request_body
    elif model is not None:
        op["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": _ref(model.__name__)}},
        }
    success = set(facts.success)
    if not success or _returns_plain_response(view):
        success.add(200)
    errors = set(facts.errors)
    if role is not None:
        errors |= {401, 403}
    if "requestBody" in op:
        errors |= {400, 422}
    if any(p["in"] == "path" for p in params):
        errors.add(404)
    answers: dict[str, Any] = {}
    media_type = _media_type(rule, doc, facts)
    for status in sorted(success | set(doc.statuses) | errors):
        text = doc.statuses.get(status) or SUCCESS.get(status) or ERRORS.get(status, "")
        if status >= 400:
            answers[str(status)] = _answer(status, text, _ref("Error"), "application/json")
        else:
            answers[str(status)] = _answer(status, text, doc.answer, media_type)
    op["responses"] = answers
    return op, model


def check_component_names(models: list[type[BaseModel]]) -> None:
    names: dict[str, type[BaseModel]] = {}
    for model in models:
        other = names.setdefault(model.__name__, model)
        if other is not model:
            raise ValueError(
                f"two body models are named {model.__name__} ({other.__module__} and "
                f"{model.__module__}): rename one, the document names schemas by class name"
            )


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every /api/v1 route of `app`."""
    prefix = bp.url_prefix or "/api/v1"
    paths: dict[str, dict[str, Any]] = {}
    models: list[type[BaseModel]] = []
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith(prefix + "/")]
    for rule in sorted(rules, key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        path, params = openapi_path(rule, prefix)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op, model = operation(rule, method, view, params)
            paths.setdefault(path, {})[method.lower()] = op
            if model is not None and model not in models:
                models.append(model)
    check_component_names(models)
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components = {**schemas.get("$defs", {}), **ANSWER_SCHEMAS}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Tiếng loa an ninh console API",
            "version": API_VERSION,
            "description": (
                "The commune loudspeaker console: zones, devices, audio, presets, schedules, "
                "broadcasts, emergency and stop. Get a token with POST /auth/token and send it "
                "as `Authorization: Bearer <token>`. Times are ISO 8601 in UTC."
            ),
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": prefix}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from POST /auth/token (valid 30 days)",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session",
                    "description": "a logged-in browser; send the CSRF token as X-CSRFToken",
                },
            },
        },
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """This document (OpenAPI 3.1): every route of the API, with its role and body."""
    text = current_app.extensions.get("loa_openapi")
    if text is None:  # built once per process: the routes do not change after start
        text = json.dumps(build_document(current_app), ensure_ascii=False, indent=1)
        current_app.extensions["loa_openapi"] = text
    return Response(text, mimetype="application/json")
