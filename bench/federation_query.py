"""Distributed query: the province asks 16 city nodes against one node holding all the data.

N AirQualityObserved entities (default 16,000) are spread over 16 city nodes (1/16 each),
and the same N are loaded into one more node on its own. Every node is a separate
`citybrain serve` process on localhost (18 in all). The province holds the registrations of
its 16 children and no data of the type; the same query by type and q (about 10% of the
entities match, first page of 100 by id, with count) goes to the province, which fans out to
the cities, and to the single node, alternating, in one run: p50 and p95 of each, and the
ratio of the p95s.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import report, wait_healthy  # noqa: E402
from citybrain.app import prepare_node  # noqa: E402
from citybrain.core.config import load_settings  # noqa: E402
from citybrain.federation import distributed, trust  # noqa: E402
from citybrain.federation.models import Relation  # noqa: E402
from citybrain.governance.identity.tokens import issue_token  # noqa: E402
from citybrain.hub.ngsild import service  # noqa: E402
from citybrain.hub.ngsild.entities import expand_entity  # noqa: E402
from citybrain.hub.ngsild.jsonld import ContextStore  # noqa: E402

N = int(os.environ.get("CITYBRAIN_BENCH_FEDERATION_ENTITIES", "16000"))
REQUESTS = int(os.environ.get("CITYBRAIN_BENCH_FEDERATION_REQUESTS", "100"))
PROVINCE = "370000"
# the 16 cities of Shandong: 370100 Jinan ... 371700 Heze (Laiwu, 371200, joined Jinan in 2019)
CITIES = [f"37{n:02d}00" for n in range(1, 18) if n != 12]
SINGLE = "370000"  # the single node is a province-level node of its own folder
QUERY = {"type": "AirQualityObserved", "q": "pm25>=270", "limit": "100", "count": "true"}
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entity(i: int) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:{i:08d}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": (i * 7) % 300, "unitCode": "GQ"},
        "location": {
            "type": "GeoProperty",
            "value": {
                "type": "Point",
                "coordinates": [116 + (i % 997) / 300, 35 + (i % 991) / 400],
            },
        },
    }


def _load(engine: Any, ids: range | list[int]) -> None:
    terms = ContextStore().term_map(None)
    chunk: list[dict[str, Any]] = []
    for i in ids:
        chunk.append(expand_entity(_entity(i), terms))
        if len(chunk) == 1000:
            service.upsert_many(engine=engine, tenant="", entities=chunk, mode="upsert")
            chunk = []
    if chunk:
        service.upsert_many(engine=engine, tenant="", entities=chunk, mode="upsert")


class Nodes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}

    def start(self, name: str, code: str, level: str, deadline: float = 3.0) -> str:
        port = _port()
        self.ports[name] = port
        cmd = [sys.executable, "-m", "citybrain", "serve", "--level", level, "--code", code]
        cmd += ["--data", str(self.root / name), "--port", str(port)]
        log = (self.root / f"{name}.log").open("ab")
        env = {
            **os.environ,
            "CITYBRAIN_LOG_LEVEL": "WARNING",
            "CITYBRAIN_FEDERATION_DEADLINE_SECONDS": str(deadline),
        }
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
        return f"http://127.0.0.1:{port}"

    def wait(self) -> None:
        for name, port in self.ports.items():
            if not wait_healthy(port, tries=300, pause=0.1):
                raise RuntimeError(f"node {name} did not start")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _prepare(root: Path) -> dict[str, Any]:
    """Load the data and exchange the keys before any process starts."""
    province = load_settings(data_dir=root / "province", code=PROVINCE, level="province")
    p_engine = prepare_node(province)
    cities = {}
    for k, code in enumerate(CITIES):
        settings = load_settings(data_dir=root / code, code=code, level="city")
        engine = prepare_node(settings)
        _load(engine, range(k, N, len(CITIES)))
        trust.add_peer(
            engine=engine,
            own_code=code,
            code=PROVINCE,
            relation=Relation.parent,
            url="http://127.0.0.1:1",
            public_key=trust.own_public_key(province.data_dir),
        )
        engine.dispose()
        cities[code] = settings
    single = load_settings(data_dir=root / "single", code=SINGLE, level="province")
    s_engine = prepare_node(single)
    _load(s_engine, range(N))
    s_engine.dispose()
    return {"province": province, "p_engine": p_engine, "cities": cities, "single": single}


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="citybrain-fedq-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        prep = _prepare(root)
        nodes = Nodes(root)
        try:
            for code in CITIES:
                url = nodes.start(code, code, "city")
                trust.add_peer(
                    engine=prep["p_engine"],
                    own_code=PROVINCE,
                    code=code,
                    relation=Relation.child,
                    url=url,
                    public_key=trust.own_public_key(prep["cities"][code].data_dir),
                )
                distributed.store_peer_types(
                    engine=prep["p_engine"],
                    settings=prep["province"],
                    peer=trust.get_peer(engine=prep["p_engine"], code=code),
                    types=[VOCAB + "AirQualityObserved"],
                )
            prep["p_engine"].dispose()
            p_url = nodes.start("province", PROVINCE, "province")
            s_url = nodes.start("single", SINGLE, "province")
            nodes.wait()
            print(f"  {len(nodes.procs)} nodes up after {time.perf_counter() - started:.1f} s")
            tokens = {
                p_url: issue_token(
                    data_dir=prep["province"].data_dir, subject="bench", org="health",
                    role="steward", issuer=PROVINCE,
                ),
                s_url: issue_token(
                    data_dir=prep["single"].data_dir, subject="bench", org="health",
                    role="steward", issuer=SINGLE,
                ),
            }  # fmt: skip
            samples: dict[str, list[float]] = {p_url: [], s_url: []}
            answers: dict[str, tuple[list[str], str]] = {}
            with httpx.Client(timeout=30) as client:
                for round_ in range(REQUESTS + 5):
                    for url in (p_url, s_url) if round_ % 2 else (s_url, p_url):
                        start = time.perf_counter()
                        response = client.get(
                            url + "/ngsi-ld/v1/entities",
                            params=QUERY,
                            headers={"Authorization": f"Bearer {tokens[url]}"},
                        )
                        elapsed = time.perf_counter() - start
                        assert response.status_code == 200, response.text
                        assert "NGSILD-Partial" not in response.headers, response.headers
                        if round_ >= 5:  # the first rounds warm the connections and caches
                            samples[url].append(elapsed)
                        answers[url] = (
                            [e["id"] for e in response.json()],
                            response.headers["NGSILD-Results-Count"],
                        )
            assert answers[p_url] == answers[s_url], "the two answers differ"
        finally:
            nodes.stop()
    fed, one = samples[p_url], samples[s_url]
    fed_p95, one_p95 = _p(fed, 0.95), _p(one, 0.95)
    figures = {
        "entities": N,
        "cities": len(CITIES),
        "requests": len(fed),
        "matches": int(answers[p_url][1]),
        "page": len(answers[p_url][0]),
        "distributed_p50_ms": round(statistics.median(fed) * 1000, 2),
        "distributed_p95_ms": round(fed_p95 * 1000, 2),
        "cpus": os.cpu_count(),
    }
    reference = {
        "single_node_p50_ms": round(statistics.median(one) * 1000, 2),
        "single_node_p95_ms": round(one_p95 * 1000, 2),
        "what": "the same query on one node holding all N entities, same run, alternating",
    }
    report("federation_query", figures, reference, round(fed_p95 / one_p95, 2))


if __name__ == "__main__":
    main()
