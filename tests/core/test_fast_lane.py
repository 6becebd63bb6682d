"""The fast lane: serves its (method, path) from ASGI, declines everything else unchanged."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from citybrain.core.errors import Conflict
from citybrain.core.fast_lane import FastLaneMiddleware, lanes_of
from citybrain.governance.principal import Principal, Role

WHO = Principal(subject="t", org="bureau", role=Role.service, issuer="370100")


async def _inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the lane: echoes the body it received."""
    received = b""
    while True:
        message = await receive()
        received += message.get("body", b"")
        if not message.get("more_body"):
            break
    body = json.dumps({"inner": received.decode()}).encode()
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(
    app: Any, body: bytes, *, content_type: bytes = b"application/json", who: Any = WHO
) -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/x",
        "headers": [(b"content-type", content_type)],
        "app": app,
        "state": {"principal": who},
    }
    chunks = [body[:3], body[3:]]  # a body in two messages

    async def receive() -> dict[str, Any]:
        part = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": part, "more_body": bool(chunks)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(FastLaneMiddleware(_inner)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


def _app() -> Any:
    app = SimpleNamespace(state=SimpleNamespace())

    async def lane(_app: Any, body: Any, principal: Principal) -> bytes:
        if body.get("conflict"):
            raise Conflict("taken")
        if body.get("boom"):
            raise RuntimeError("boom")
        return json.dumps({"lane": body, "who": principal.subject}).encode()

    lanes_of(app)[("POST", "/api/x")] = lane
    return app


def test_the_lane_answers_its_requests() -> None:
    assert _call(_app(), b'{"a": 1}') == (200, {"lane": {"a": 1}, "who": "t"})


def test_the_lane_declines_what_is_not_the_common_case_and_the_app_gets_the_body() -> None:
    app = _app()
    assert _call(app, b'{"a": ') == (299, {"inner": '{"a": '})  # not JSON
    assert _call(app, b'{"a": 1}', content_type=b"text/plain") == (299, {"inner": '{"a": 1}'})
    assert _call(app, b'{"a": 1}', who=None) == (299, {"inner": '{"a": 1}'})
    plain = SimpleNamespace(state=SimpleNamespace())  # no lanes at all
    assert _call(plain, b'{"a": 1}') == (299, {"inner": '{"a": 1}'})


def test_errors_in_the_lane_are_problem_details() -> None:
    app = _app()
    status, body = _call(app, b'{"conflict": true}')
    assert status == 409 and body["title"] == "taken"
    status, body = _call(app, b'{"boom": true}')
    assert status == 500 and "internal error" in body["title"]
