"""The demo's city life: hotline calls, device alarms and caseworkers moving cases along.

`run_life` runs in a background thread of `citybrain demo up`. Every tick it posts one or two
12345 work orders from the synthetic corpus to a random city, fills a few synthetic waste
containers (NGSI-LD updates in each city's hub) and raises the alarm of a full one, and moves
some open cases one step along the state machine with the principal each step needs. It only
uses the nodes' public HTTP API, signing its tokens with each node's key (the demo holds every
data folder, as it does for the indicators).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from citybrain.demo.service import NodeSpec

log = logging.getLogger(__name__)

FILL_ALARM = 0.9  # the event centre's rule: a WasteContainer at 90 % is overflowing
BINS_PER_CITY = 4
TOKEN_TTL = 3600
CENTRE = ("bureau", "operator")
SENSORS = ("city_management", "service")  # sensors' entity types belong to city management

# the next step of an open case: (transition, who fires it, its body)
NEXT_STEP: dict[str, tuple[str, str, dict[str, Any]]] = {
    "captured": ("verify", "centre", {"note": "核实属实 verified on the phone"}),
    "verified": ("create_case", "centre", {}),
    "registered": ("dispatch", "centre", {}),
    "dispatched": ("handle", "department", {"note": "已接单 taken on"}),
    "handling": ("feedback", "department", {"note": "已处置完毕 done on site"}),
    "handled": ("accept_result", "centre", {"note": "现场核查通过 checked on site"}),
    "resolved": ("close", "centre", {}),
    "closed": ("call_back", "centre", {}),
    "rated": ("evaluate", "centre", {}),
}


@dataclass
class LifeStats:
    """What the city life did so far (read by tests and the status line)."""

    hotline: int = 0
    alarms: int = 0
    device_updates: int = 0
    transitions: int = 0
    errors: int = 0
    by_transition: dict[str, int] = field(default_factory=dict)


@dataclass
class _City:
    spec: NodeSpec
    bins: list[dict[str, Any]] = field(default_factory=list)
    levels: dict[str, float] = field(default_factory=dict)


class _Tokens:
    """Bearer headers per node and principal, signed with the node's key, renewed before expiry."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, str]]] = {}

    def headers(self, spec: NodeSpec, org: str, role: str) -> dict[str, str]:
        from citybrain.governance.identity.tokens import issue_token

        key = (spec.code, org, role)
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached[0] > TOKEN_TTL / 2:
            token = issue_token(
                data_dir=spec.data_dir,
                issuer=spec.code,
                subject=f"demo-{org}-{role}",
                org=org,
                role=role,
                ttl=TOKEN_TTL,
            )
            cached = (time.monotonic(), {"Authorization": f"Bearer {token}"})
            self._cache[key] = cached
        return cached[1]


def run_life(
    specs: list[NodeSpec],
    stop: threading.Event,
    rate: float = 1.0,
    *,
    seed: int | None = None,
    stats: LifeStats | None = None,
) -> LifeStats:
    """Simulate city life against the running nodes, rate ticks a second, until stop is set."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    from citybrain.events import corpus

    rng = random.Random(seed)
    points = np.random.default_rng(seed)
    stats = stats if stats is not None else LifeStats()
    tokens = _Tokens()
    texts = corpus.generate(seed=rng.randrange(1 << 30), per_type=20)
    targets = [s for s in specs if s.level != "province"] or list(specs)
    with httpx.Client(timeout=10.0) as client:
        cities = [_City(spec) for spec in targets]
        for city in cities:
            if stop.is_set():
                return stats
            _create_bins(client, tokens, city, stats, seed=rng.randrange(1 << 30))
        while not stop.is_set():
            started = time.monotonic()
            for _ in range(rng.choice((1, 1, 2))):
                _hotline_call(client, tokens, rng.choice(cities), texts, rng, points, stats)
            _fill_bins(client, tokens, rng.choice(cities), rng, stats)
            for city in rng.sample(cities, k=min(2, len(cities))):
                _move_cases(client, tokens, city, rng, stats)
            stop.wait(max(0.05, 1.0 / rate - (time.monotonic() - started)))
    return stats


def _call(
    client: httpx.Client,
    stats: LifeStats,
    method: str,
    url: str,
    headers: dict[str, str],
    json: Any = None,
) -> httpx.Response | None:
    """Send one request; a failure is counted and logged, never raised (the life goes on)."""
    try:
        response = client.request(method, url, headers=headers, json=json)
    except httpx.HTTPError as exc:
        stats.errors += 1
        log.warning("demo life: %s %s failed: %s", method, url, exc)
        return None
    if response.status_code >= 400:
        stats.errors += 1
        log.warning(
            "demo life: %s %s answered %s: %s",
            method,
            url,
            response.status_code,
            response.text[:200],
        )
        return None
    return response


def _devices(data_dir: Path, kind: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    path = data_dir / "city_management" / "iot_devices.parquet"
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return [r for r in rows if r.get("type") == kind]


def _create_bins(
    client: httpx.Client, tokens: _Tokens, city: _City, stats: LifeStats, *, seed: int
) -> None:
    """Create the city's first waste containers as NGSI-LD entities (upsert: reruns are fine)."""
    from citybrain.synth.entities import device_entities

    devices = _devices(city.spec.data_dir, "WasteContainer")[:BINS_PER_CITY]
    if not devices:
        return
    now = datetime.now(UTC)
    entities = [device_entities(d, now, seed)[1] for d in devices]
    rng = random.Random(seed)
    for entity in entities:
        level = round(rng.uniform(0.2, 0.8), 2)
        entity["fillingLevel"] = {"type": "Property", "value": level}
        city.levels[entity["id"]] = level
    response = _call(
        client,
        stats,
        "POST",
        f"{city.spec.url}/ngsi-ld/v1/entityOperations/upsert",
        tokens.headers(city.spec, *SENSORS),
        json=entities,
    )
    if response is not None:
        city.bins = entities


def _fill_bins(
    client: httpx.Client, tokens: _Tokens, city: _City, rng: random.Random, stats: LifeStats
) -> None:
    """Fill two bins a little; a full one raises its alarm at the event centre, then is emptied."""
    if not city.bins:
        return
    for entity in rng.sample(city.bins, k=min(2, len(city.bins))):
        entity_id = entity["id"]
        level = city.levels[entity_id]
        level = round(rng.uniform(0.05, 0.3), 2) if level >= FILL_ALARM else level
        level = round(min(1.0, level + rng.uniform(0.05, 0.25)), 2)
        city.levels[entity_id] = level
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        attrs = {"fillingLevel": {"type": "Property", "value": level, "observedAt": stamp}}
        response = _call(
            client,
            stats,
            "PATCH",
            f"{city.spec.url}/ngsi-ld/v1/entities/{entity_id}/attrs",
            tokens.headers(city.spec, *SENSORS),
            json=attrs,
        )
        if response is None:
            continue
        stats.device_updates += 1
        if level < FILL_ALARM:
            continue
        # the node's alarm subscription (fillingLevel>=0.9) turns this update into a case
        stats.alarms += 1


def _hotline_call(
    client: httpx.Client,
    tokens: _Tokens,
    city: _City,
    texts: list[dict[str, Any]],
    rng: random.Random,
    points: np.random.Generator,
    stats: LifeStats,
) -> None:
    """Post one 12345 work order from the corpus, at a point inside the city."""
    from citybrain.geo import service as geo

    lon, lat = (float(v) for v in geo.sample_points(city.spec.code, 1, points)[0])
    county = geo.locate(lon, lat)
    body = {
        "text": rng.choice(texts)["text"],
        "phone": f"13{rng.randrange(10**9):09d}",
        "lon": round(lon, 6),
        "lat": round(lat, 6),
        "address": f"{county.name_zh}附近" if county is not None else None,
        "urgency": rng.choices(("normal", "urgent"), weights=(9, 1))[0],
    }
    response = _call(
        client,
        stats,
        "POST",
        f"{city.spec.url}/api/events/hotline",
        tokens.headers(city.spec, *CENTRE),
        json=body,
    )
    if response is not None:
        stats.hotline += 1


def _move_cases(
    client: httpx.Client, tokens: _Tokens, city: _City, rng: random.Random, stats: LifeStats
) -> None:
    """Move up to three cases of the city one step on, each with the principal it needs."""
    centre = tokens.headers(city.spec, *CENTRE)
    response = _call(client, stats, "GET", f"{city.spec.url}/api/events/cases?limit=60", centre)
    if response is None:
        return
    movable = [c for c in response.json() if c.get("state") in NEXT_STEP]
    # cases advance at different speeds, so the board shows every state at once
    chosen = [c for c in movable if rng.random() < 0.5][:3]
    for case in chosen:
        name, who, body = NEXT_STEP[case["state"]]
        body = dict(body)
        if name == "call_back":
            body["rating"] = rng.choices((5, 4, 3, 2), weights=(6, 3, 1, 1))[0]
            body["note"] = "回访满意度 call-back rating"
        headers = (
            tokens.headers(city.spec, str(case["department"]), "operator")
            if who == "department"
            else centre
        )
        moved = _call(
            client,
            stats,
            "POST",
            f"{city.spec.url}/api/events/cases/{case['id']}/transitions/{name}",
            headers,
            json=body,
        )
        if moved is not None:
            stats.transitions += 1
            stats.by_transition[name] = stats.by_transition.get(name, 0) + 1
