"""Composition root of the web API: one FastAPI app per node, built from the domains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citybrain import __version__
from citybrain.core.config import Settings
from citybrain.core.db import check_connection, create_engine_for, upgrade
from citybrain.core.fast_lane import FastLaneMiddleware, path_lanes_of
from citybrain.core.problems import BodyLimitMiddleware, install_problem_handlers, problem
from citybrain.decisions.alerts import service as alerts_service
from citybrain.decisions.alerts.api import router as alerts_router
from citybrain.decisions.indicators import service as indicators_service
from citybrain.decisions.indicators.api import router as indicators_router
from citybrain.decisions.notify import service as notify_service
from citybrain.decisions.notify.api import router as notify_router
from citybrain.events.api import router as events_router
from citybrain.federation import events_bridge
from citybrain.federation import outbox as federation_outbox
from citybrain.federation import trust as federation_trust
from citybrain.federation.api import router as federation_router
from citybrain.geo.api import router as geo_router
from citybrain.governance.audit.api import router as audit_router
from citybrain.governance.audit.middleware import WriteAuditMiddleware
from citybrain.governance.catalog import service as catalog_service
from citybrain.governance.catalog.api import router as catalog_router
from citybrain.governance.identity import service as identity_service
from citybrain.governance.identity.api import router as identity_router
from citybrain.governance.identity.middleware import AuthMiddleware
from citybrain.governance.lineage.api import router as lineage_router
from citybrain.governance.quality.api import router as quality_router
from citybrain.governance.sharing.api import router as sharing_router
from citybrain.governance.verification.api import router as verification_router
from citybrain.hub.ngsild import lane as ngsild_lane
from citybrain.hub.ngsild import notifier
from citybrain.hub.ngsild import transient as ngsild_transient
from citybrain.hub.ngsild.api import router as ngsild_router
from citybrain.hub.ngsild.jsonld import ContextStore
from citybrain.hub.tables.api import router as tables_router
from citybrain.hub.tables.importer import import_synth_tables
from citybrain.node import service as node_service
from citybrain.node.api import router as node_router
from citybrain.node.runtime import keep_registered
from citybrain.node.workers import claim_primary, release_primary
from citybrain.plugins.manager import get_plugin_manager
from citybrain.web.api import router as dashboard_router
from citybrain.web.pages import router as web_router

MAX_BODY_BYTES = 10 * 1024 * 1024
_EMPTY_OR_DOT_SEGMENT = re.compile(r"//|/\.{1,2}(/|$)")
access_log = logging.getLogger("citybrain.access")


def prepare_node(settings: Settings) -> Engine:
    """Open and migrate the store, record the identity and register the tables; fail clearly."""
    node_service.validate_identity(code=settings.code, level=settings.level.value)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.effective_database_url)
    check_connection(engine)
    upgrade(engine)
    node_service.init_node(engine=engine, settings=settings)
    node_service.scan_datasets(engine=engine, data_dir=settings.data_dir)
    identity_service.seed_default_orgs(engine=engine)
    import_synth_tables(engine=engine, data_dir=settings.data_dir, deferred=False)
    catalog_service.ensure_builtin_entries(engine=engine, data_dir=settings.data_dir)
    return engine


def import_deferred_tables(engine: Engine, data_dir: Path, state: Any = None) -> None:
    """Import the large synthetic tables once the node serves (see importer.DEFERRED).

    Sets state.tables to "ready" (or "failed") when done, which /health reports, so callers
    that need those tables (the demo's first indicator run) can wait for them.
    """
    outcome = "failed"
    try:
        if import_synth_tables(engine=engine, data_dir=data_dir, deferred=True):
            catalog_service.ensure_builtin_entries(engine=engine, data_dir=data_dir)
        outcome = "ready"
    except Exception:  # a bad file must not stop a serving node; the log says which
        logging.getLogger("citybrain.node").exception("deferred table import failed")
    finally:
        if state is not None:
            state.tables = outcome
        # the other workers of the node read it from here (node/workers.py)
        with contextlib.suppress(OSError):
            tables_state_path(data_dir).write_text(outcome)


def tables_state_path(data_dir: Path) -> Path:
    """Where the node records whether its large tables are imported (importing|ready|failed)."""
    return data_dir / ".tables-state"


class AccessMiddleware:
    """Answer NGSI-LD paths with or without a trailing slash, and log every request.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs about a quarter of a small
    request's time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the path if needed, pass the request on, log method, path, status, time."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        # NGSI-LD clients differ on trailing slashes; the API answers both forms
        if path.startswith("/ngsi-ld/") and path.endswith("/"):
            scope["path"] = path.rstrip("/")
        # on the raw path: an id like http://x/y arrives percent-encoded and keeps its slashes
        raw = (scope.get("raw_path") or path.encode()).decode("latin-1").rstrip("/")
        if path.startswith("/ngsi-ld/") and _EMPTY_OR_DOT_SEGMENT.search(raw.split("?", 1)[0]):
            # an empty or dot segment names no resource: the request is malformed (400)
            response = problem(400, "BadRequestData", "the path has an empty or dot segment")
            await response(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        # NGSI-LD answers name the tenant they were about, as the request named it
        tenant = (
            next((v for k, v in scope.get("headers") or [] if k == b"ngsild-tenant"), None)
            if path.startswith("/ngsi-ld/")
            else None
        )

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if tenant is not None:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"ngsild-tenant", tenant)],
                    }
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                # the path only: query strings may carry personal data
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - start) * 1000, 2),
                    },
                )


def _background(app: FastAPI, settings: Settings) -> list[asyncio.Task[None]]:
    """Start the node's background work: imports, notifications, outbox, schedules."""
    tasks: list[asyncio.Task[None]] = []
    tables_state_path(settings.data_dir).write_text("importing")
    tasks.append(
        asyncio.create_task(
            asyncio.to_thread(
                import_deferred_tables, app.state.engine, settings.data_dir, app.state
            )
        )
    )
    if settings.alarm_subscriptions:
        from citybrain.events.alarms import ensure_alarm_subscriptions

        # device alarms reach the event centre the standard way: hub subscriptions
        ensure_alarm_subscriptions(
            engine=app.state.engine,
            store=app.state.ngsild_contexts,
            base_url=settings.effective_public_url,
            issuer=settings.code,
        )
    tasks.append(
        asyncio.create_task(
            notifier.run(
                engine=app.state.engine,
                store=app.state.ngsild_contexts,
                data_dir=settings.data_dir,
                self_url=settings.effective_public_url,
                issuer=settings.code,
            )
        )
    )
    # transient NGSI-LD entities leave the store once they expire (clause 4.22)
    tasks.append(asyncio.create_task(ngsild_transient.run(app.state.engine)))
    tasks.append(
        asyncio.create_task(federation_outbox.run(engine=app.state.engine, settings=settings))
    )
    tasks.append(asyncio.create_task(events_bridge.run(engine=app.state.engine, settings=settings)))
    every = settings.indicator_schedule_seconds
    if every > 0:
        tasks.append(
            asyncio.create_task(
                indicators_service.run_schedule(
                    engine=app.state.engine,
                    settings=settings,
                    every=every,
                    first_after=min(60.0, every),
                )
            )
        )
    tasks.append(
        asyncio.create_task(notify_service.run(engine=app.state.engine, settings=settings))
    )
    tasks.append(
        asyncio.create_task(alerts_service.run(engine=app.state.engine, settings=settings))
    )
    if settings.parent_url:
        tasks.append(
            asyncio.create_task(keep_registered(engine=app.state.engine, settings=settings))
        )
    return tasks


async def _warm(app: FastAPI) -> None:
    """Let the plugins load what their busiest routes need before the first request."""
    try:
        await asyncio.to_thread(get_plugin_manager().hook.citybrain_warm, app=app)
    except Exception:  # a plugin that cannot warm loads on first use, as before
        logging.getLogger("citybrain.node").warning("a plugin could not warm", exc_info=True)


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    elect_primary: bool = False,
    warm: bool = False,
) -> FastAPI:
    """Build the app of one node; pass an engine already prepared by prepare_node to reuse it.

    elect_primary: one of several workers; background work runs only in the one that takes
    the node's primary lock (node/workers.py).
    warm: let the plugins load what their busiest routes need as soon as the node starts, in
    the background (`citybrain serve`; an app in a test loads on first use instead).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine if engine is not None else prepare_node(settings)
        app.state.ngsild_contexts = ContextStore(folder=settings.data_dir / ".ngsild" / "contexts")
        # with several worker processes, one of them (the primary) does the background work
        primary = claim_primary(settings.data_dir) if elect_primary else True
        app.state.tables = None if not primary else "importing"
        tasks = _background(app, settings) if primary else []
        if warm:
            # in the background: the node answers at once (the demo starts 17 on two cores)
            tasks.append(asyncio.create_task(_warm(app)))
        logging.getLogger("citybrain.node").info(
            "node started", extra={"code": settings.code, "level": settings.level.value}
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if elect_primary:
                release_primary(settings.data_dir)
            app.state.engine.dispose()
            logging.getLogger("citybrain.node").info("node stopped", extra={"code": settings.code})

    app = FastAPI(
        title=f"CityBrain node {settings.code}",
        version=__version__,
        description="A CityBrain node: hub, governance, federation, decisions and scenes.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    # innermost first: write auditing sees the principal authentication found, and
    # authentication sees the body limit's and the access log's rewrites
    # innermost: the lanes plugins register (core/fast_lane.py) see the principal and are
    # audited like every other request
    app.add_middleware(FastLaneMiddleware)
    app.add_middleware(WriteAuditMiddleware, data_dir=settings.data_dir)
    app.add_middleware(
        AuthMiddleware,
        data_dir=settings.data_dir,
        issuer=settings.code,
        anonymous_role=settings.anonymous_role,
        api_key_resolver=lambda key: identity_service.resolve_api_key(
            engine=app.state.engine, issuer=settings.code, key=key
        ),
        peer_resolver=lambda token: federation_trust.resolve_peer_token(
            engine=app.state.engine, code=settings.code, token=token
        ),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)

    app.add_middleware(AccessMiddleware)

    app.include_router(node_router)
    app.include_router(geo_router)
    app.include_router(tables_router)
    app.include_router(ngsild_router)
    # a sensor's single-attribute update, thousands a second: past FastAPI's layers
    path_lanes_of(app)[("PATCH", "/ngsi-ld/v1/entities/")] = ngsild_lane.partial_update
    for router in (
        identity_router,
        catalog_router,
        sharing_router,
        verification_router,
        audit_router,
        quality_router,
        lineage_router,
        federation_router,
        events_router,
        indicators_router,
        dashboard_router,
        notify_router,
        alerts_router,
    ):
        app.include_router(router)
    get_plugin_manager().hook.citybrain_routes(app=app)
    app.include_router(web_router)
    return app
