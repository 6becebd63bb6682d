"""Distributed NGSI-LD queries: a query at a node also asks the context sources registered there.

The parent keeps one context source registration per trusted child (`refresh_peer_sources`)
and any manual ones. A query that concerns registrations is sent to every matching source in
parallel, each call signed with a peer token when the source is a trusted node, so the child
answers as it would to `node-<parent>` through its own gate. The answers are merged with the
local result, de-duplicated by entity id, sorted by id and paginated. One deadline bounds the
whole fan-out: a source that is down, slow or failing is named in the answer (NGSILD-Warning,
NGSILD-Partial, X-CityBrain-Missing), never waited for past the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import Request
from sqlalchemy import Engine

from citybrain.core.config import Settings
from citybrain.federation import trust
from citybrain.federation.models import Relation
from citybrain.governance.audit import service as audit
from citybrain.governance.gate import ReadDecision
from citybrain.governance.principal import Principal
from citybrain.hub.ngsild import csource
from citybrain.hub.ngsild.jsonld import ContextStore, TermMap, link_header_for

log = logging.getLogger(__name__)

PREFIX = "/ngsi-ld/v1"
PEER_ORIGIN = "node:"
PAGE = 1000  # the most a source answers per request (the NGSI-LD API's maximum limit)
REFRESH_SECONDS = 30.0  # one heartbeat: how often a child's entity types are looked up again
DEADLINE_HEADER = "X-CityBrain-Deadline"
MISSING_HEADER = "X-CityBrain-Missing"
# parameters of a query that pass through to a context source unchanged
FORWARDED = (
    "id",
    "idPattern",
    "q",
    "scopeQ",
    "attrs",
    "pick",
    "omit",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "options",
    "format",
    "lang",
    "datasetId",
)


@dataclass(frozen=True)
class Source:
    """One context source to ask: its registration, endpoint, and node code when trusted."""

    registration_id: str
    endpoint: str
    label: str  # what a partial answer names: the child's code, else the registration's name
    node: str | None  # code of the trusted peer the endpoint belongs to
    timeout: float | None  # management.timeout of the registration, in seconds


@dataclass
class Answer:
    """What one source returned, or why it returned nothing."""

    source: Source
    items: list[Any] = field(default_factory=list)
    count: int | None = None
    error: str | None = None
    code: int = 111  # warn-code: 111 unreachable / timed out, 199 an error answer
    missing: list[str] = field(default_factory=list)  # what the source itself lacked
    warnings: list[str] = field(default_factory=list)


@dataclass
class FanOut:
    """The answers of every source of one distributed request."""

    answers: list[Answer]
    seconds: float

    @property
    def missing(self) -> list[str]:
        """Return the labels of the sources (and the sources' sources) that did not answer."""
        out: list[str] = []
        for answer in self.answers:
            if answer.error is not None:
                out.append(answer.source.label)
            out.extend(answer.missing)
        return list(dict.fromkeys(out))

    def headers(self) -> dict[str, str]:
        """Return the partial-result headers (none when every source answered)."""
        warnings: list[str] = []
        for answer in self.answers:
            if answer.error is not None:
                text = answer.error.replace('"', "'").replace("\r", " ").replace("\n", " ")
                warnings.append(f'{answer.code} {answer.source.label} "{text[:200]}"')
            warnings.extend(answer.warnings)
        missing = self.missing
        if not missing and not warnings:
            return {}
        headers = {"NGSILD-Warning": ", ".join(warnings)} if warnings else {}
        if missing:
            headers["NGSILD-Partial"] = "true"
            headers[MISSING_HEADER] = ",".join(missing)
        return headers


# ---- which sources a query concerns --------------------------------------------------------

_peers: dict[str, tuple[float, list[dict[str, Any]]]] = {}
_refreshing: dict[str, asyncio.Task[Any]] = {}
_last_refresh: dict[str, float] = {}


def _child_peers(engine: Engine) -> list[dict[str, Any]]:
    """Return the trusted children, from a cache refreshed every 2 s."""
    key = csource.engine_key(engine)
    hit = _peers.get(key)
    stamp = time.monotonic()
    if hit is None or stamp - hit[0] > csource.CACHE_SECONDS:
        hit = (stamp, trust.list_peers(engine=engine, relation=Relation.child))
        _peers[key] = hit
    return hit[1]


def forget_cache(engine: Engine | None = None) -> None:
    """Drop the cached peers and registrations (of one engine, or all)."""
    for key in list(_peers):
        if engine is None or key == csource.engine_key(engine):
            _peers.pop(key, None)
    csource.forget_cache(engine)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _refresh_due(engine: Engine, tenant: str, rows: list[dict[str, Any]]) -> bool:
    """Whether a child was heard from since its registration was last refreshed."""
    if tenant:
        return False  # peers register the default tenant
    children = _child_peers(engine)
    if not children:
        return False
    by_origin = {r["origin"]: r for r in rows}
    now = datetime.now(UTC)
    for peer in children:
        row = by_origin.get(PEER_ORIGIN + peer["code"])
        contact = _aware(peer.get("last_contact_at"))
        if row is None:
            if contact is not None:
                return True
            continue
        modified = _aware(row["modified_at"])
        assert modified is not None
        if (
            contact is not None
            and contact > modified
            and (now - modified).total_seconds() > REFRESH_SECONDS
        ):
            return True
    return False


def sources_for(
    request: Request,
    *,
    tenant: str,
    types: list[str] | None,
    ids: list[str] | None,
    attrs: list[str] | None,
) -> list[Source]:
    """Return the context sources a query concerns ([] for local=true or a looping request)."""
    if request.query_params.get("local", "").lower() == "true":
        return []
    own = f"citybrain-{request.app.state.settings.code}"
    if own in (request.headers.get("via") or ""):
        return []  # the request came through this node already: answering locally ends a loop
    engine: Engine = request.app.state.engine
    rows = csource.active(engine=engine, tenant=tenant)
    last = _last_refresh.get(csource.engine_key(engine))
    if (last is None or time.monotonic() - last > REFRESH_SECONDS) and _refresh_due(
        engine, tenant, rows
    ):
        _last_refresh[csource.engine_key(engine)] = time.monotonic()
        _schedule_refresh(request)
    if not rows:
        return []
    peers = {p["url"].rstrip("/"): p["code"] for p in _child_peers(engine)}
    out: list[Source] = []
    for row in rows:
        reg = row["registration"]
        if reg.get("management", {}).get("localOnly"):
            continue
        if not csource.matches(reg, types=types, ids=ids, attrs=attrs):
            continue
        endpoint = reg["endpoint"].rstrip("/")
        node = peers.get(endpoint)
        timeout = reg.get("management", {}).get("timeout")
        out.append(
            Source(
                registration_id=reg["id"],
                endpoint=endpoint,
                label=node or str(reg.get("registrationName") or reg["id"]),
                node=node,
                timeout=float(timeout) / 1000 if timeout else None,
            )
        )
    return out


# ---- asking the sources --------------------------------------------------------------------

_tokens: dict[tuple[str, str], tuple[float, str]] = {}


def _token(settings: Settings, audience: str) -> str:
    """Return a peer token for a child, reused for a minute of its five-minute life."""
    key = (str(settings.data_dir), audience)
    hit = _tokens.get(key)
    stamp = time.time()
    if hit is None or stamp - hit[0] > 60:
        token = trust.peer_token(
            data_dir=settings.data_dir, caller=settings.code, audience=audience
        )
        hit = (stamp, token)
        _tokens[key] = hit
    return hit[1]


def client_for(request: Request) -> httpx.AsyncClient:
    """Return the node's pooled HTTP client for context sources (tests put their own)."""
    client: httpx.AsyncClient | None = getattr(request.app.state, "federation_client", None)
    if client is None:
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100)
        )
        request.app.state.federation_client = client
    return client


def deadline_for(request: Request) -> float:
    """Return the seconds the fan-out may take: the setting, or less when the caller says so."""
    settings: Settings = request.app.state.settings
    deadline = float(settings.federation_deadline_seconds)
    given = request.headers.get(DEADLINE_HEADER)
    if given:
        try:
            deadline = min(deadline, max(float(given), 0.05))
        except ValueError:
            pass
    return deadline


def _headers(request: Request, source: Source, terms: TermMap, remaining: float) -> dict[str, str]:
    settings: Settings = request.app.state.settings
    headers = {
        "Accept": "application/json",
        # a source's own sources must answer it before this node stops waiting for it
        DEADLINE_HEADER: f"{remaining * 0.8:.3f}",
        "Via": ", ".join(
            v for v in (request.headers.get("via"), f"1.1 citybrain-{settings.code}") if v
        ),
    }
    if terms.urls:
        headers["Link"] = link_header_for(terms.urls[0])
    tenant = request.headers.get("NGSILD-Tenant")
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    if source.node is not None:
        headers["Authorization"] = f"Bearer {_token(settings, source.node)}"
    return headers


async def _ask(
    client: httpx.AsyncClient,
    source: Source,
    *,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    want: int | None,
    timeout: float,
) -> Answer:
    """Fetch up to `want` items (all, for None) from one source, page by page."""
    answer = Answer(source)
    url = source.endpoint + PREFIX + path
    offset = 0
    while True:
        page_params = dict(params)
        if want is not None:
            page_params["limit"] = str(min(PAGE, max(want - offset, 0)))
            page_params["offset"] = str(offset)
        try:
            response = await client.get(url, params=page_params, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            answer.error = f"no answer within {timeout:.2f} s"
            return answer
        except httpx.HTTPError as exc:
            answer.error = f"unreachable: {type(exc).__name__}"
            return answer
        if response.status_code != 200:
            answer.code = 199
            answer.error = f"answered {response.status_code}"
            return answer
        try:
            body = response.json()
        except ValueError:
            answer.code = 199
            answer.error = "answered with a body that is not JSON"
            return answer
        nested = response.headers.get(MISSING_HEADER)
        if nested:
            answer.missing.extend(m for m in nested.split(",") if m)
        warning = response.headers.get("NGSILD-Warning")
        if warning and warning not in answer.warnings:
            answer.warnings.append(warning)
        if response.headers.get("NGSILD-Results-Count") is not None and answer.count is None:
            try:
                answer.count = int(response.headers["NGSILD-Results-Count"])
            except ValueError:
                pass
        if not isinstance(body, list):
            answer.items = [body]
            return answer
        answer.items.extend(body)
        offset += len(body)
        if want is None or len(body) < PAGE or offset >= want or not body:
            return answer


async def fan_out(
    request: Request,
    sources: list[Source],
    *,
    path: str,
    params: dict[str, str],
    terms: TermMap,
    want: int | None,
) -> FanOut:
    """Ask every source in parallel; whatever has not answered by the deadline is missing."""
    started = time.perf_counter()
    deadline = deadline_for(request)
    client = client_for(request)
    tasks: dict[asyncio.Task[Answer], Source] = {}
    for source in sources:
        timeout = min(deadline, source.timeout) if source.timeout else deadline
        task = asyncio.create_task(
            _ask(
                client,
                source,
                path=path,
                params=params,
                headers=_headers(request, source, terms, timeout),
                want=want,
                timeout=timeout,
            )
        )
        tasks[task] = source
    answers: list[Answer] = []
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        for task, source in tasks.items():
            if task in done and not task.cancelled() and task.exception() is None:
                answers.append(task.result())
            else:
                late = Answer(source, error=f"no answer within the {deadline:.2f} s deadline")
                if task in done and task.exception() is not None:
                    late.code, late.error = 199, f"failed: {task.exception()!r}"
                answers.append(late)
    return FanOut(answers=answers, seconds=time.perf_counter() - started)


# ---- merging -------------------------------------------------------------------------------


def _newer(candidate: dict[str, Any], kept: dict[str, Any]) -> bool:
    new, old = candidate.get("modifiedAt"), kept.get("modifiedAt")
    return isinstance(new, str) and isinstance(old, str) and new > old


def _visible(reader: Any, entity: Any, terms: TermMap) -> bool:
    """Keep out of a merge the types this node's gate refuses the requester."""
    if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
        return False
    types = entity.get("type") or []
    names = [types] if isinstance(types, str) else list(types)
    return all(isinstance(reader.decide(terms.expand(str(t))), ReadDecision) for t in names)


def merge(
    local: list[dict[str, Any]],
    result: FanOut,
    *,
    reader: Any,
    terms: TermMap,
    sys_attrs: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Merge the local and remote entities by id (sorted); return them and the duplicates."""
    merged: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for entity in local:
        merged[str(entity.get("id"))] = entity
    for answer in result.answers:
        for entity in answer.items:
            if not _visible(reader, entity, terms):
                continue
            key = entity["id"]
            kept = merged.get(key)
            if kept is None:
                merged[key] = entity
                continue
            duplicates += 1
            # the newest copy wins when the times are known; otherwise the local (first) one
            if sys_attrs and _newer(entity, kept):
                merged[key] = entity
    return [merged[k] for k in sorted(merged)], duplicates


def forwarded_params(
    params: dict[str, str], *, types: list[str] | None, count: bool
) -> dict[str, str]:
    """Return the query parameters a source receives (types as this node's gate left them)."""
    out = {k: params[k] for k in FORWARDED if params.get(k)}
    if types is not None:
        out["type"] = ",".join(types)
    if count:
        out["count"] = "true"
    return out


def record(
    request: Request,
    result: FanOut,
    *,
    resource: str,
    rows: int,
) -> None:
    """Append the audit record of one fan-out: the sources asked, the rows, what was missing."""
    principal = getattr(request.state, "principal", None)
    missing = result.missing
    audit.append(
        data_dir=request.app.state.settings.data_dir,
        principal=principal if isinstance(principal, Principal) else None,
        action="federation.query",
        resource=resource,
        result="partial" if missing else "ok",
        rows=rows,
        detail={
            "sources": [a.source.label for a in result.answers],
            "missing": missing,
            "seconds": round(result.seconds, 4),
        },
    )


# ---- registrations kept for the trusted children -------------------------------------------


def peer_registration_id(code: str) -> str:
    """Return the id of the registration this node keeps for child `code`."""
    return f"{csource.ID_PREFIX}node-{code}"


def _peer_registration(peer: dict[str, Any], types: list[str], timeout_ms: int) -> dict[str, Any]:
    return {
        "id": peer_registration_id(peer["code"]),
        "type": csource.REGISTRATION_TYPE,
        "registrationName": f"node-{peer['code']}",
        "description": f"entities of the child node {peer['code']}",
        "endpoint": peer["url"].rstrip("/"),
        "information": [{"entities": [{"type": [t]} for t in types]}],
        "mode": "inclusive",
        "management": {"timeout": timeout_ms},
        "contextSourceInfo": [{"key": "node", "value": peer["code"]}],
    }


async def _child_types(
    client: httpx.AsyncClient, settings: Settings, peer: dict[str, Any], timeout: float
) -> list[str] | None:
    """Return the expanded entity types a child shows this node, or None when it cannot say."""
    token = _token(settings, peer["code"])
    try:
        response = await client.get(
            peer["url"].rstrip("/") + PREFIX + "/types",
            params={"details": "true", "local": "true"},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, list):
        return None
    # asked without a Link header, the child compacts with the core context alone
    terms = _core_terms()
    return sorted(
        {
            terms.expand(str(t["typeName"]))
            for t in body
            if isinstance(t, dict) and t.get("typeName")
        }
    )


_core: list[TermMap] = []


def _core_terms() -> TermMap:
    if not _core:
        _core.append(ContextStore().term_map(None))
    return _core[0]


def store_peer_types(
    *, engine: Engine, settings: Settings, peer: dict[str, Any], types: list[str]
) -> str:
    """Create, update or drop the registration of one child from its entity types."""
    reg_id = peer_registration_id(peer["code"])
    origin = PEER_ORIGIN + peer["code"]
    timeout_ms = int(settings.federation_deadline_seconds * 1000)
    try:
        current: dict[str, Any] | None = csource.get(engine=engine, tenant="", reg_id=reg_id)
    except Exception:  # noqa: BLE001 - NotFound: the child has no registration yet
        current = None
    if not types:
        if current is not None:
            csource.remove(engine=engine, tenant="", reg_id=reg_id)
        return "removed" if current is not None else "none"
    registration = _peer_registration(peer, types, timeout_ms)
    if current is None:
        csource.create(engine=engine, tenant="", registration=registration, origin=origin)
        return "created"
    # keep what an administrator set on the kept registration besides what the child reports
    kept = {**current["registration"], **registration}
    csource.replace(engine=engine, tenant="", registration=kept, origin=origin)
    return "updated"


async def refresh_peer_sources(
    *, engine: Engine, settings: Settings, client: httpx.AsyncClient
) -> dict[str, str]:
    """Look up every child's entity types in parallel and keep one registration per child.

    A child that cannot be reached keeps the registration it had; a registration of a node
    that is no longer a trusted child is dropped. Returns what happened per child code.
    """
    children = trust.list_peers(engine=engine, relation=Relation.child)
    timeout = float(settings.federation_deadline_seconds)
    found = await asyncio.gather(
        *(_child_types(client, settings, peer, timeout) for peer in children)
    )
    outcome: dict[str, str] = {}
    for peer, types in zip(children, found, strict=True):
        if types is None:
            outcome[peer["code"]] = "unreachable"
            continue
        outcome[peer["code"]] = store_peer_types(
            engine=engine, settings=settings, peer=peer, types=types
        )
    codes = {p["code"] for p in children}
    for row in csource.list_rows(engine=engine, tenant=""):
        origin = str(row["origin"])
        if origin.startswith(PEER_ORIGIN) and origin[len(PEER_ORIGIN) :] not in codes:
            csource.remove(engine=engine, tenant="", reg_id=row["id"])
            outcome[origin[len(PEER_ORIGIN) :]] = "removed"
    forget_cache(engine)
    return outcome


def _schedule_refresh(request: Request) -> None:
    """Refresh the children's registrations in the background, one refresh at a time."""
    engine: Engine = request.app.state.engine
    running = _refreshing.get(csource.engine_key(engine))
    if running is not None and not running.done():
        return
    task = asyncio.get_running_loop().create_task(
        refresh_peer_sources(
            engine=engine, settings=request.app.state.settings, client=client_for(request)
        )
    )
    _refreshing[csource.engine_key(engine)] = task
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("refreshing the children's registrations failed: %r", task.exception())


async def keep_sources(*, engine: Engine, settings: Settings) -> None:
    """Refresh the children's registrations every heartbeat (a node's background task)."""
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await refresh_peer_sources(engine=engine, settings=settings, client=client)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad round
                log.warning("refreshing the children's registrations failed: %r", exc)
            await asyncio.sleep(REFRESH_SECONDS)
