"""HTTP routes of governance/audit; thin callers of its service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request

from citybrain.core.routing import APIRouter
from citybrain.governance.audit import service
from citybrain.governance.audit.models import AuditPage, VerifyReport
from citybrain.governance.identity.deps import require_role
from citybrain.governance.principal import Principal, Role


@contextlib.asynccontextmanager
async def _checkpoint_at_shutdown(app: FastAPI) -> AsyncIterator[None]:
    """Sign a checkpoint of the last record when the node stops."""
    yield
    try:
        service.checkpoint(data_dir=app.state.settings.data_dir)
    except Exception:  # the node is stopping; the next start's appends checkpoint again
        logging.getLogger("citybrain.audit").exception("cannot write the shutdown checkpoint")


router = APIRouter(prefix="/api/audit", tags=["audit"], lifespan=_checkpoint_at_shutdown)
AUDITORS = require_role(Role.auditor, Role.bureau_admin)


def _data(request: Request) -> Path:
    data_dir: Path = request.app.state.settings.data_dir
    return data_dir


@router.get("")
def list_records(
    request: Request,
    principal: Principal = Depends(AUDITORS),
    actor: str | None = Query(None, max_length=300, description="org/role/subject"),
    org: str | None = Query(None, max_length=200),
    action: str | None = Query(None, max_length=200, description="exact, or a prefix ending in *"),
    resource: str | None = Query(None, max_length=500, description="exact, or a prefix with *"),
    grant: str | None = Query(None, max_length=200, description="grant id"),
    result: str | None = Query(None, max_length=100),
    since: datetime | None = Query(None, description="records at or after this moment"),
    until: datetime | None = Query(None, description="records before this moment"),
    after_seq: int | None = Query(None, ge=0, description="cursor: next_after_seq of a page"),
    limit: int = Query(100, ge=1, le=service.MAX_LIMIT),
) -> AuditPage:
    """Read a page of audit records matching the filters, in log order."""
    filters: dict[str, Any] = {
        "actor": actor,
        "org": org,
        "action": action,
        "resource": resource,
        "grant_id": grant,
        "result": result,
        "since": since,
        "until": until,
        "after_seq": after_seq,
    }
    page = service.query(data_dir=_data(request), limit=limit, **filters)
    # reading the evidence is itself evidence
    service.append(
        data_dir=_data(request),
        principal=principal,
        action="audit.read",
        resource="audit/log",
        result="ok",
        rows=len(page.records),
        detail={
            "filters": {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in filters.items()
                if v is not None
            },
            "limit": limit,
        },
    )
    return page


@router.get("/verify")
def verify(request: Request, principal: Principal = Depends(AUDITORS)) -> VerifyReport:
    """Re-compute the hash chain and check the signed checkpoints."""
    report = service.verify(data_dir=_data(request))
    service.append(
        data_dir=_data(request),
        principal=principal,
        action="audit.read",
        resource="audit/verify",
        result="ok" if report.ok else "broken",
        rows=report.records,
        detail={"first_broken_seq": report.first_broken_seq},
    )
    return report
