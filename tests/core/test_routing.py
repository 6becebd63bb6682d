"""The router guard: every route is still reached, nested and prefixed ones too."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from citybrain.core.routing import APIRouter, static_heads


def test_static_heads() -> None:
    assert static_heads(["/a/b", "/a/{x}/c", "/d"]) == ("/a/", "/a/b", "/d")
    assert static_heads(["/{anything}"]) is None  # a parameter first can match any path
    assert static_heads(["/", "/static/{p:path}"]) == ("/", "/static/")


def test_nested_and_prefixed_routers_are_all_reached() -> None:
    inner = APIRouter()

    @inner.get("/regs/{rid}")
    def reg(rid: str) -> dict[str, str]:
        return {"reg": rid}

    outer = APIRouter(prefix="/v1")

    @outer.get("/things")
    def things() -> dict[str, str]:
        return {"things": "all"}

    outer.include_router(inner)  # its routes answer under /v1 though their paths lack it
    other = APIRouter()

    @other.get("/other/{x}")
    def other_route(x: str) -> dict[str, str]:
        return {"other": x}

    app = FastAPI()
    app.include_router(outer)
    app.include_router(other, prefix="/p")
    client = TestClient(app)
    assert client.get("/v1/things").json() == {"things": "all"}
    assert client.get("/v1/regs/7").json() == {"reg": "7"}
    assert client.get("/p/other/3").json() == {"other": "3"}
    assert client.get("/other/3").status_code == 404
    assert client.get("/v2/things").status_code == 404
    assert client.post("/v1/things").status_code == 405  # a partial match stays a partial
