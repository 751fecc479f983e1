"""Live updates for the browser: server-sent events fed by polling the database.

The ingest runs in the console worker, the web in other processes (several gunicorn
workers): the database is what they share, so a stream polls it for what changed since
its cursor. A stream ends after `max_s` (the browser's EventSource reconnects by itself,
sending Last-Event-ID), so no web thread is held for ever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Response, request, stream_with_context

C = TypeVar("C")
# What a poll returns: the events to send (name, JSON-able data) and the next cursor.
Poll = Callable[[C], tuple[list[tuple[str, Any]], C]]

POLL_S = 1.0
HEARTBEAT_S = 15.0
MAX_STREAM_S = 300.0


def sse_event(name: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in json.dumps(data, ensure_ascii=False).split("\n"))
    return "\n".join(lines) + "\n\n"


def last_event_id() -> str | None:
    """The id of the last event the browser saw, sent again when it reconnects."""
    return request.headers.get("Last-Event-ID") or request.args.get("last_event_id")


def event_stream(
    poll: Poll[C],
    cursor: C,
    *,
    cursor_id: Callable[[C], str] = str,
    finished: Callable[[C], bool] = lambda _cursor: False,
    poll_s: float = POLL_S,
    max_s: float = MAX_STREAM_S,
) -> Response:
    """A text/event-stream response: `poll(cursor)` every `poll_s` until `max_s` is spent,
    or until `finished(cursor)` says nothing more can change."""

    def generate() -> Iterator[str]:
        nonlocal cursor
        yield f"retry: {int(poll_s * 2000)}\n\n"
        started = last_beat = time.monotonic()
        while True:
            events, cursor = poll(cursor)
            now = time.monotonic()
            for name, data in events:
                yield sse_event(name, data, cursor_id(cursor))
            if events:
                last_beat = now
            elif now - last_beat >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                last_beat = now
            if finished(cursor) or now - started >= max_s:
                return
            time.sleep(poll_s)

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must not buffer it
    return response
