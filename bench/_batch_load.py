"""Batch upserts as a client sends them: bodies of 1,000 entities on keep-alive connections.

    python bench/_batch_load.py HOST PORT CONNECTIONS ENTITIES TOKEN
builds every body first (not timed), then keeps CONNECTIONS requests in flight until all
are answered; prints entities per second and the count of answers other than 201.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import read_status  # noqa: E402
from ngsild import BATCH, entity  # noqa: E402


def _requests(host: str, port: int, count: int, token: str) -> list[bytes]:
    out = []
    for lo in range(0, count, BATCH):
        body = json.dumps([entity(i) for i in range(lo, min(lo + BATCH, count))]).encode()
        head = (
            f"POST /ngsi-ld/v1/entityOperations/upsert HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _connection(host: str, port: int, queue: list[bytes], out: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while queue:
            writer.write(queue.pop())
            out[0 if await read_status(reader) == b"201" else 1] += 1
    finally:
        writer.close()


async def run(host: str, port: int, connections: int, count: int, token: str) -> None:
    """Send the upserts of entity(0..count); print the rate."""
    queue = list(reversed(_requests(host, port, count, token)))
    out = [0, 0]
    start = time.monotonic()
    await asyncio.gather(*(_connection(host, port, queue, out) for _ in range(connections)))
    elapsed = time.monotonic() - start
    print(json.dumps({"per_s": count / elapsed, "ok": out[0], "failed": out[1]}))


if __name__ == "__main__":
    h, p, c, n, t = sys.argv[1:6]
    asyncio.run(run(h, int(p), int(c), int(n), t))
