"""Hypothesis strategies for bad input: nasty strings and numbers, JSON of any shape, and
structure-aware mutations of a valid payload (drop a field, wrong type, huge, deep, ...)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

MB = 1024 * 1024
HUGE_TEXT = "x" * MB  # built once: hypothesis need not generate a megabyte
HUGE_VIET = "Thôn Đông " * (MB // 10)

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'; DROP TABLE devices; --",
    "{{7*7}}",
    "%s%n%x",
    "\u202eevil\u202c",  # right-to-left override
    "a\u200bb\u200d",  # zero-width space and joiner
    "\ufeff",
    "\ud800",  # a lone surrogate (JSON can carry it as an escape)
    "Loa thôn Đông — Xã Sao Lưu",
    "🔥📢",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "+",
    "#",
    "a/+/#",
    "..",
    "\r\nX-Injected: 1",
    "C:\\Windows\\system32",
]
# Big strings by name, so that a failing example's report stays readable.
BIG_TEXT = {"digits_5000": "9" * 5000, "x_1mb": HUGE_TEXT, "viet_1mb": HUGE_VIET}
big_text = st.sampled_from(sorted(BIG_TEXT)).map(BIG_TEXT.__getitem__)
NASTY_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    -(2**31),
    2**31,
    2**53,
    2**53 + 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    0.5,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
]
ODD_IDS = ["a/b", "+", "#", "..", "../x", "A", "-a", "a" * 64, "a b", "ä", "", "\x00", "a+b", "a#"]

nasty_text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40))
nasty_or_big_text = st.one_of(nasty_text, big_text)
nasty_number = st.one_of(
    st.sampled_from(NASTY_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), nasty_number, nasty_text)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """JSON of any shape: scalars, lists and objects nested a few levels."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(nasty_text, children, max_size=5),
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int) -> Any:
    """A list nested `depth` deep (decoders must refuse it, not recurse to death)."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def deep_json_text(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any], big: bool = True) -> Any:
    """A valid JSON object changed in one to three places, the way bad input comes;
    `big`: some changes are a megabyte (else 10 kB)."""
    value: Any = json.loads(json.dumps(valid))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        value = draw(_mutate_once(value, big))
    return value


def _huge(big: bool) -> st.SearchStrategy[Any]:
    n = 100_000 if big else 1000
    return st.one_of(
        big_text if big else st.just("y" * 10_000),
        st.just(None).map(lambda _: [0] * n),
        st.just(None).map(lambda _: {str(i): i for i in range(n // 20)}),
    )


@st.composite
def _mutate_once(draw: st.DrawFn, value: Any, big: bool) -> Any:
    if not isinstance(value, dict) or not value:
        return draw(st.one_of(json_values(), st.just(value)))
    keys = sorted(value)
    key = draw(st.sampled_from(keys))
    kind = draw(
        st.sampled_from(
            ["drop", "type", "number", "text", "deep", "huge", "null", "extra", "inner", "v", "id"]
        )
    )
    out = dict(value)
    if kind == "drop":
        del out[key]
    elif kind == "type":
        out[key] = draw(json_values(max_leaves=4))
    elif kind == "number":
        out[key] = draw(nasty_number)
    elif kind == "text":
        out[key] = draw(nasty_or_big_text if big else nasty_text)
    elif kind == "deep":
        out[key] = nested(draw(st.sampled_from([50, 500, 900])))
    elif kind == "huge":
        out[key] = draw(_huge(big))
    elif kind == "null":
        out[key] = None
    elif kind == "extra":
        out[draw(nasty_text)] = draw(json_values(max_leaves=4))
    elif kind == "inner" and isinstance(out[key], dict):
        out[key] = draw(_mutate_once(out[key], big))
    elif kind == "inner" and isinstance(out[key], list) and out[key]:
        items = list(out[key])
        index = draw(st.integers(0, len(items) - 1))
        items[index] = draw(_mutate_once(items[index], big))
        out[key] = items
    elif kind == "v":
        out["v"] = draw(st.sampled_from([0, 2, "1", 1.0, None, [1], True]))
    elif kind == "id":
        out[key] = draw(st.sampled_from(ODD_IDS))
    return out


def to_json_bytes(value: Any, ascii_only: bool = True) -> bytes:
    """JSON as a sender could write it: NaN and Infinity included; a lone surrogate as an
    escape (ascii_only) or as the bytes a careless encoder writes."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def json_bytes(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """`values` encoded as JSON bytes, either way to_json_bytes can."""
    return to_json_bytes(draw(values), draw(st.booleans()))


ODD_PAYLOADS = {
    "empty": b"",
    "null": b"null",
    "list": b"[]",
    "object": b"{}",
    "not_utf8": b"\xff\xfe\x00",
    "v_only": b'{"v":1}',
    "deep_100k": b"[" * 100_000,
    "int_5000_digits": b'{"v":1,"id":"x","ts":' + b"9" * 5000 + b"}",
    "float_overflow": b'{"v":1,"id":"x","ts":1e999}',
    "nan": b'{"v":1,"id":"x","ts":NaN}',
    "nul_70k": b"\x00" * 70_000,
    "surrogate": b'{"v":1,"a":"\\ud800"}',
}
raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(sorted(ODD_PAYLOADS)).map(ODD_PAYLOADS.__getitem__),
)
