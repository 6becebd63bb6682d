"""HTTP JSON pull: fetch records from a JSON API on a schedule, page by page, incrementally.

The records are found at a dotted path in the response (or the response is the list). Pages
follow a `Link: <...>; rel="next"` header or a next-URL field. With a cursor field, the
largest cursor applied is the checkpoint, sent back as a query parameter on the next run, so a
restart resumes where it stopped; records the server sends again are absorbed by the sink's
upsert (table key or entity id with its observation time).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urljoin

import httpx
from sqlalchemy import Engine

from citybrain.core.errors import BadInput
from citybrain.hub.connectors import checkpoints
from citybrain.hub.connectors.sinks import Counters, EntitySink, TableSink

log = logging.getLogger(__name__)
CONNECTOR = "http-pull"
MAX_PAGES = 10_000


class PullFailed(BadInput):
    """The source answered with something the connector cannot use."""


def _order(value: Any) -> tuple[int, float, str]:
    """Sort numbers as numbers and everything else (ISO 8601 date-times) as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _dig(body: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(body, dict) or part not in body:
            return None
        body = body[part]
    return body


class HttpPull:
    """Pull JSON records from a URL into a sink."""

    def __init__(
        self,
        *,
        engine: Engine,
        url: str,
        name: str,
        sink: TableSink | EntitySink,
        records_path: str = "",
        cursor_field: str | None = None,
        since_param: str | None = None,
        next_field: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"the source must be an http:// or https:// URL, not {url!r}")
        if since_param and not cursor_field:
            raise BadInput("--since-param needs --cursor-field: the value sent is the cursor")
        self.engine, self.url, self.name, self.sink = engine, url, name, sink
        self.records_path, self.cursor_field = records_path, cursor_field
        self.since_param, self.next_field = since_param, next_field
        self.client = httpx.Client(timeout=timeout, headers=headers or {}, follow_redirects=True)

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()

    def checkpoint(self) -> Any:
        """Return the largest cursor applied so far (None before the first run)."""
        with self.engine.connect() as conn:
            raw = checkpoints.read(conn, CONNECTOR, self.name)
        return None if raw is None else json.loads(raw)

    def _get(self, url: str, params: dict[str, str]) -> httpx.Response:
        try:
            # httpx replaces a URL's query with params, even empty ones: pass none for next links
            response = self.client.get(url, params=params or None)
        except httpx.HTTPError as exc:
            raise PullFailed(f"cannot fetch {url}: {exc.__class__.__name__} {exc}") from None
        if response.status_code != 200:
            raise PullFailed(f"{url} answered {response.status_code}: {response.text[:200]}")
        return response

    def _records(self, response: httpx.Response) -> tuple[list[dict[str, Any]], Any]:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PullFailed(f"{response.url} did not answer JSON") from None
        records = _dig(body, self.records_path) if self.records_path else body
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            where = f"at {self.records_path!r}" if self.records_path else "as the response"
            raise PullFailed(f"{response.url} has no list of JSON objects {where}")
        return records, body

    def _next(self, response: httpx.Response, body: Any) -> str | None:
        link = response.links.get("next", {}).get("url")
        if link:
            return urljoin(str(response.url), link)
        if self.next_field:
            following = _dig(body, self.next_field)
            if isinstance(following, str) and following:
                return urljoin(str(response.url), following)
        return None

    def run_once(self, counters: Counters | None = None) -> Counters:
        """Fetch every page from the checkpoint on; apply each page before the next."""
        counters = counters or Counters()
        since = self.checkpoint()
        params = {self.since_param: str(since)} if self.since_param and since is not None else {}
        url: str | None = self.url
        visited: set[str] = set()
        while url is not None and len(visited) < MAX_PAGES:
            response = self._get(url, params)
            visited.add(str(response.url))
            records, body = self._records(response)
            field = self.cursor_field
            if field and since is not None:
                # keep records at the checkpoint: another record may share its cursor value
                floor = _order(since)
                records = [r for r in records if _order(r.get(field, "")) >= floor]
            cursors = [r[field] for r in records if field and r.get(field) is not None]
            top = max(cursors, key=_order) if cursors else None
            self._apply(records, top, counters)
            if top is not None and (since is None or _order(top) > _order(since)):
                since = top
            following = self._next(response, body)
            url = None if following is None or following in visited else following
            params = {}  # a next link carries its own parameters
        return counters

    def _apply(self, records: list[dict[str, Any]], top: Any, counters: Counters) -> None:
        previous = self.checkpoint()
        advance = top is not None and (previous is None or _order(top) > _order(previous))
        if isinstance(self.sink, TableSink):
            self.sink.apply(records, source=f"{CONNECTOR}:{self.name}", counters=counters)
            if advance:
                with self.engine.begin() as conn:
                    checkpoints.write(conn, CONNECTOR, self.name, json.dumps(top))
        else:
            with self.engine.begin() as conn:
                self.sink.apply_in(conn, records, counters=counters)
                if advance:
                    checkpoints.write(conn, CONNECTOR, self.name, json.dumps(top))
        counters.batches += 1
        log.info("page pulled", extra={"connector": self.name, "records": len(records)})
