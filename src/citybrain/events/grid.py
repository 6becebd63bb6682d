"""Grid workers on their phones: sign-in with a one-time code, their grid, their reports."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import Engine

from citybrain.core.errors import CityBrainError, Forbidden, NotFound
from citybrain.governance.audit import service as audit
from citybrain.governance.identity import service as identity
from citybrain.governance.identity.models import TokenResponse
from citybrain.governance.identity.tokens import issue_token
from citybrain.governance.principal import Principal, Role
from citybrain.hub.tables import service as tables

GRID_ORG = "city_management"  # grid management belongs to the City Management Bureau
GRID_TTL = 8 * 3600  # one working shift
WORKERS = "city_management/grid_workers"
GRIDS = "city_management/grids"


class GridWorker(BaseModel):
    """A grid worker as their own phone sees them: their id, grid and its centre."""

    worker_id: str
    grid_code: str
    grid_name: str | None
    community_code: str | None
    centroid_lon: float | None
    centroid_lat: float | None


def _lookup(*, engine: Engine, data_dir: Path, where: str, value: str) -> GridWorker | None:
    try:
        rows = tables.evaluate(
            engine=engine,
            data_dir=data_dir,
            tables=[WORKERS, GRIDS],
            sql=(
                "select w.worker_id, w.grid_code, g.name, g.community_code, g.centroid_lon, "
                "g.centroid_lat from city_management.grid_workers w "
                "left join city_management.grids g on g.grid_code = w.grid_code "
                f"where w.{where} = ? order by w.worker_id limit 1"
            ),
            params=[value],
        )
    except CityBrainError:
        # a node without grid tables has no grid workers
        return None
    if not rows:
        return None
    worker_id, grid_code, name, community, lon, lat = rows[0]
    return GridWorker(
        worker_id=worker_id,
        grid_code=grid_code,
        grid_name=name,
        community_code=community,
        centroid_lon=lon,
        centroid_lat=lat,
    )


def sign_in(
    *,
    engine: Engine,
    data_dir: Path,
    issuer: str,
    phone: str,
    code: str,
    now: datetime | None = None,
) -> TokenResponse:
    """Sign a grid worker in with the code sent to their phone; 403 if the phone is no worker's."""
    phone = identity.consume_otp(engine=engine, data_dir=data_dir, phone=phone, code=code, now=now)
    worker = _lookup(engine=engine, data_dir=data_dir, where="phone", value=phone)
    resource = f"grid_worker:{identity.mask_phone(phone)}"
    if worker is None:
        audit.append(
            data_dir=data_dir,
            principal=None,
            action="signin",
            resource=resource,
            result="refused",
            detail={"grant": "otp", "reason": "not a grid worker of this node"},
        )
        raise Forbidden("this phone is not registered to a grid worker of this node")
    principal = Principal(
        subject=f"grid:{worker.worker_id}",
        org=GRID_ORG,
        role=Role.grid_worker,
        issuer=issuer,
        phone=phone,
    )
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="signin",
        resource=resource,
        result="ok",
        detail={"grant": "otp", "grid": worker.grid_code},
    )
    token = issue_token(
        data_dir=data_dir,
        issuer=issuer,
        subject=principal.subject,
        org=principal.org,
        role=principal.role,
        ttl=GRID_TTL,
        phone=phone,
    )
    return TokenResponse(access_token=token, expires_in=GRID_TTL)


def me(*, engine: Engine, data_dir: Path, principal: Principal) -> GridWorker:
    """Return the signed-in grid worker's grid; 403 for anyone else."""
    if principal.role != Role.grid_worker or not principal.subject.startswith("grid:"):
        raise Forbidden("this is the grid workers' page; sign in with a grid worker's phone")
    worker_id = principal.subject.removeprefix("grid:")
    worker = _lookup(engine=engine, data_dir=data_dir, where="worker_id", value=worker_id)
    if worker is None:
        raise NotFound(f"grid worker {worker_id} is no longer registered on this node")
    return worker
