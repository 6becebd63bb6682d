"""A lean HTTP/1.1 load generator: keep-alive connections, prepared requests, run as a process.

A Python HTTP client costs more CPU per request than the server under test, so the load
here writes prepared request bytes on raw asyncio streams and reads only the status line,
the headers and Content-Length bytes of body.

    python bench/_load.py HOST PORT SECONDS CONNECTIONS ENTITIES [TOKEN]
prints requests per second and the count of non-204 answers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import read_status  # noqa: E402

AUTH = {"header": ""}


def _request(host: str, port: int, i: int, entities: int) -> bytes:
    path = f"/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:{i % entities:08d}/attrs/pm25"
    body = json.dumps({"value": i % 500}).encode()
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{AUTH['header']}\r\n"
    )
    return head.encode() + body


async def _worker(
    host: str, port: int, k: int, step: int, stop: float, entities: int, out: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i, ok, bad = k, 0, 0
    try:
        while time.monotonic() < stop:
            writer.write(_request(host, port, i, entities))
            if await read_status(reader) == b"204":
                ok += 1
            else:
                bad += 1
            i += step
    finally:
        writer.close()
    out[0] += ok
    out[1] += bad


async def run(host: str, port: int, seconds: float, connections: int, entities: int) -> None:
    """Keep `connections` requests in flight for `seconds`; print the rate."""
    out = [0, 0]
    start = time.monotonic()
    stop = start + seconds
    await asyncio.gather(
        *(_worker(host, port, k, connections, stop, entities, out) for k in range(connections))
    )
    elapsed = time.monotonic() - start
    print(json.dumps({"per_s": out[0] / elapsed, "ok": out[0], "failed": out[1]}))


if __name__ == "__main__":
    h, p, s, c, n = sys.argv[1:6]
    if len(sys.argv) > 6:
        AUTH["header"] = f"Authorization: Bearer {sys.argv[6]}\r\n"
    asyncio.run(run(h, int(p), float(s), int(c), int(n)))
