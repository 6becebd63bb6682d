"""Evidence of every change to context data: one audit record per NGSI-LD write request.

Departmental tables, the catalog, sharing and identity audit their writes in detail inside
their services; NGSI-LD writes (entities, attributes, batches, subscriptions, contexts) come
at sensor rates, so they leave one record per request (who, method, path, status). The record
is written before the response starts, so an acknowledged write has its evidence even if the
node is killed; it reaches the disk with the next durable record or within 0.2 s.
"""

from __future__ import annotations

from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# a batch query and a subscription listing are reads sent as POST: the gate audits them
READS_BY_POST = (
    "/ngsi-ld/v1/entityOperations/query",
    "/ngsi-ld/v1/temporal/entityOperations/query",
)


class WriteAuditMiddleware:
    """Append an audit record for each NGSI-LD write request before it is acknowledged."""

    def __init__(self, app: ASGIApp, *, data_dir: Path, prefix: str = "/ngsi-ld/") -> None:
        self.app = app
        self.data_dir = data_dir
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; on a write, record it when the status is known."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if (
            not path.startswith(self.prefix)
            or scope["method"] not in WRITE_METHODS
            or path.startswith(READS_BY_POST)
        ):
            await self.app(scope, receive, send)
            return

        async def send_after_audit(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                principal = (scope.get("state") or {}).get("principal")
                # no fsync here, so the write to the page cache is cheap enough to do inline
                audit.append(
                    data_dir=self.data_dir,
                    principal=principal if isinstance(principal, Principal) else None,
                    action="ngsild.write",
                    resource=f"{scope['method']} {path}"[:300],
                    result="ok" if status < 400 else "refused",
                    detail={"status": status},
                    durable=False,
                )
            await send(message)

        await self.app(scope, receive, send_after_audit)
