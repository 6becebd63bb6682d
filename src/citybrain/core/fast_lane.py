"""A fast lane for the few JSON endpoints a node serves at high rates.

A settlement before payment must be answered about a thousand times a second, and FastAPI's
own work on a request (its exception layers, route matching, the request and response
objects, dependency resolution) costs about as much CPU as the checks themselves. A lane
answers one (method, path) straight from ASGI: inside the access log, the body limit,
authentication and write auditing, which all still apply, and calling the same service
function as the FastAPI route, which stays for the OpenAPI description and for every request
the lane declines. It declines (and hands the request, body included, to FastAPI) whenever
the request is not the common case: no JSON content type, a body that is not JSON, no
principal. So errors look exactly as they do through FastAPI.

A path lane serves a route with parameters (an NGSI-LD partial update names its entity and
attribute in the path): registered by method and the static beginning of its path, it gets
the scope and the raw body and answers (status, headers, body), or None to decline, when the
request is anything but the common case it was written for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citybrain.core.errors import CityBrainError
from citybrain.core.problems import problem
from citybrain.governance.principal import Principal

# a lane gets the app, the parsed body and the principal, and returns the JSON answer
Lane = Callable[[Any, Any, Principal], Awaitable[bytes]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
# a path lane gets the app, the scope, the raw body and the principal; None declines
PathLane = Callable[[Any, Scope, bytes, Principal], Awaitable[Answer | None]]
log = logging.getLogger("citybrain.fast_lane")


def _registry(app: Any, name: str) -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] | None = getattr(app.state, name, None)
    if found is None:
        found = {}
        setattr(app.state, name, found)
    return found


def lanes_of(app: Any) -> dict[tuple[str, str], Lane]:
    """The lanes of an app, by (method, path); plugins add theirs at start."""
    return _registry(app, "fast_lanes")


def path_lanes_of(app: Any) -> dict[tuple[str, str], PathLane]:
    """The path lanes of an app, by (method, static beginning of the path)."""
    return _registry(app, "fast_path_lanes")


def _path_lane(state: Any, method: str, path: str) -> PathLane | None:
    lanes: dict[tuple[str, str], PathLane] | None = getattr(state, "fast_path_lanes", None)
    if not lanes:
        return None
    for (lane_method, head), lane in lanes.items():
        if lane_method == method and path.startswith(head):
            return lane
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the body read already once, then the real stream's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


_FAILED: Any = object()  # what _answered returns once it has sent an error


async def _answered(call: Awaitable[Any], scope: Scope, receive: Receive, send: Send) -> Any:
    """Await a lane; on its error send the problem details FastAPI would, and return _FAILED."""
    try:
        return await call
    except CityBrainError as exc:
        response = problem(exc.status, exc.kind, exc.message, exc.detail or None)
    except Exception:
        log.exception("unexpected error", extra={"path": scope["path"]})
        response = problem(500, "InternalError", "internal error; the node logged the details")
    await response(scope, receive, send)
    return _FAILED


class FastLaneMiddleware:
    """Serve the registered lanes from ASGI; pass every other request to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a lane's request, or hand it on unchanged."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owner = scope.get("app")
        state = getattr(owner, "state", None)
        lanes = getattr(state, "fast_lanes", None)
        lane = lanes.get((scope["method"], scope["path"])) if lanes else None
        if lane is None:
            path_lane = _path_lane(state, scope["method"], scope["path"])
            if path_lane is None:
                await self.app(scope, receive, send)
            else:
                await self._path_lane(path_lane, owner, scope, receive, send)
            return
        principal = (scope.get("state") or {}).get("principal")
        content_type = b""
        for name, value in scope.get("headers") or ():
            if name == b"content-type":
                content_type = value
                break
        if not isinstance(principal, Principal) or b"json" not in content_type:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self.app(scope, _replay(raw, receive), send)
            return
        answer = await _answered(lane(owner, body, principal), scope, receive, send)
        if answer is _FAILED:
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _path_lane(
        self, lane: PathLane, owner: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        principal = (scope.get("state") or {}).get("principal")
        if not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        answer = await _answered(lane(owner, scope, raw, principal), scope, receive, send)
        if answer is _FAILED:
            return
        if answer is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        status, headers, body = answer
        if body:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
