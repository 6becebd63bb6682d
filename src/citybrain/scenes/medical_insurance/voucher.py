"""The medical-insurance e-voucher: activation, the dynamic QR token, scanning at a terminal.

Flow: a citizen signed in with phone and one-time code activates the voucher with their ID
number on one device (identity verified against the population register, read through the
gate as the citizen, and the enrolment, read as the medical security bureau). The phone asks
for a QR token every minute (`issue_token`): signed with the node key, bound to the voucher
(so the person) and the device, valid `TOKEN_TTL` seconds. A terminal of a designated
institution scans it (`scan`): signature, window, binding and single use are checked; the
use is committed before the answer; refusals are audited and counted.

The replay store is the table `medins_voucher_uses` (a nonce is a primary key: two
processes cannot both use one token) with the nonces of the last window kept in memory, so a
replay is refused without a query and a restarted node reloads them first.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from citybrain.core.db import BUSY_TIMEOUT_MS
from citybrain.core.errors import (
    BadInput,
    CityBrainError,
    Conflict,
    Forbidden,
    NotFound,
    Unprocessable,
)
from citybrain.governance.audit import service as audit
from citybrain.governance.masking import MaskKind, mask_text
from citybrain.governance.principal import Principal, Role
from citybrain.scenes.medical_insurance import voucher_token
from citybrain.scenes.medical_insurance.service import (
    DEPARTMENT,
    Scene,
    now_utc,
    read_table,
)
from citybrain.scenes.medical_insurance.tables import voucher_counts, voucher_uses, vouchers
from citybrain.synth.idcard import is_valid_id_number

TOKEN_TTL = 60
# a terminal's clock and the phone's drift a little; a token is taken this long past its end
LEEWAY = 5
_DEVICE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
ENROLLED = "参保缴费"


class Transaction(StrEnum):
    """What a terminal scans a voucher for."""

    registration = "registration"
    outpatient = "outpatient"
    dispensing = "dispensing"
    admission = "admission"
    pharmacy = "pharmacy"


class Refusal(StrEnum):
    """Why a scanned token was refused (counted per day, audited)."""

    malformed = "malformed"
    forged = "forged"
    expired = "expired"
    replayed = "replayed"
    other_person = "other_person"
    other_device = "other_device"
    unknown_voucher = "unknown_voucher"
    inactive = "inactive"
    other_node = "other_node"


# the status each refusal answers with: a replay conflicts with the use already made
_STATUS: dict[Refusal, type[CityBrainError]] = {
    Refusal.malformed: BadInput,
    Refusal.forged: Forbidden,
    Refusal.expired: Unprocessable,
    Refusal.replayed: Conflict,
    Refusal.other_person: Forbidden,
    Refusal.other_device: Forbidden,
    Refusal.unknown_voucher: NotFound,
    Refusal.inactive: Forbidden,
    Refusal.other_node: Unprocessable,
}


class VoucherRead(BaseModel):
    """A voucher as its holder and the node see it (masked)."""

    voucher_id: str
    id_number: str = Field(description="masked")
    name: str = Field(description="masked")
    gender: str
    birth_date: str
    scheme: str
    insured_county: str
    status: str
    activated_at: datetime


class QrToken(BaseModel):
    """The payload the phone shows as a QR code, and its window."""

    token: str
    issued_at: datetime
    expires_at: datetime
    ttl: int


class PersonView(BaseModel):
    """What a terminal learns of the person behind a scanned voucher (masked)."""

    voucher_id: str
    id_number: str
    name: str
    gender: str
    age: int
    scheme: str
    insured_county: str


class ScanResult(BaseModel):
    """The answer to a scan: the person (masked) and the use that was recorded."""

    use_id: str
    institution_id: str
    transaction: Transaction
    person: PersonView
    used_at: datetime


@dataclass(frozen=True, slots=True)
class VoucherInfo:
    """A voucher as the token checks need it (kept in memory)."""

    voucher_id: str
    person_id: str
    device_tag: str
    status: str
    view: PersonView
    birth_date: date
    gender: str


class VoucherRefused(CityBrainError):
    """A scanned token was refused; `reason` is the counted Refusal."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message, detail={"voucher": reason.value})
        self.reason = reason
        self.status = _STATUS[reason].status
        self.kind = _STATUS[reason].kind


# ---------------------------------------------------------------------------------------------
# activation


def _check_citizen(principal: Principal) -> str:
    if principal.role is not Role.citizen or not principal.phone:
        raise Forbidden("only a citizen signed in with phone and one-time code holds a voucher")
    return principal.phone


def _check_device(device_id: str) -> str:
    if not isinstance(device_id, str) or not _DEVICE.match(device_id):
        raise BadInput("device_id must be 8 to 128 letters, digits, '-' or '_'")
    return device_id


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _read(row: Any) -> VoucherRead:
    return VoucherRead(
        voucher_id=row.voucher_id,
        id_number=row.id_masked,
        name=row.name_masked,
        gender=row.gender,
        birth_date=row.birth_date,
        scheme=row.scheme,
        insured_county=row.insured_county,
        status=row.status,
        activated_at=row.activated_at,
    )


def activate(
    scene: Scene,
    *,
    principal: Principal,
    id_number: str,
    device_id: str,
    now: datetime | None = None,
) -> VoucherRead:
    """Activate (or move to a new device) the voucher of the signed-in citizen."""
    phone = _check_citizen(principal)
    device = _check_device(device_id)
    id_number = (id_number or "").strip().upper()
    if not is_valid_id_number(id_number):
        raise BadInput("id_number is not a valid 18-character resident ID number")
    moment = now_utc(now)
    # identity: the register must hold this ID number with the phone that signed in; the
    # citizen reads only rows of their own phone, so another person's number finds nothing
    residents = read_table(
        scene, "public_security/residents", principal=principal, filters=[f"id_number=={id_number}"]
    )
    if not residents:
        _refuse_activation(scene, principal, "identity not verified")
        raise Forbidden(
            "identity not verified: this ID number is not registered with the phone you signed "
            "in with"
        )
    enrolled = read_table(
        scene, f"{DEPARTMENT}/insured_persons", filters=[f"id_number=={id_number}"]
    )
    if not enrolled or enrolled[0].get("status") != ENROLLED:
        _refuse_activation(scene, principal, "not enrolled")
        raise Unprocessable(
            "this person is not enrolled (or the enrolment is suspended) in basic medical "
            f"insurance at node {scene.code}"
        )
    person = enrolled[0]
    birth = date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    values = {
        "person_id": str(person["person_id"]),
        "id_masked": mask_text(MaskKind.id_number, id_number),
        "name_masked": mask_text(MaskKind.name, str(residents[0].get("name") or "")),
        "gender": "男" if int(id_number[16]) % 2 else "女",
        "birth_date": birth.isoformat(),
        "insured_county": str(person.get("insured_county") or ""),
        "scheme": str(person.get("scheme") or ""),
        "phone_hmac": scene.phone_hmac(phone),
        "device_tag": voucher_token.device_tag(device),
        "status": "active",
        "updated_at": moment,
    }
    with scene.engine.begin() as conn:
        existing = conn.execute(
            select(vouchers.c.voucher_id).where(vouchers.c.person_id == values["person_id"])
        ).first()
        if existing is None:
            voucher_id = "V" + uuid.uuid4().hex[:20]
            conn.execute(
                insert(vouchers).values(voucher_id=voucher_id, activated_at=moment, **values)
            )
        else:
            voucher_id = existing.voucher_id
            # a new device replaces the old one: its tokens stop working at once
            conn.execute(
                update(vouchers).where(vouchers.c.voucher_id == voucher_id).values(**values)
            )
        row = conn.execute(select(vouchers).where(vouchers.c.voucher_id == voucher_id)).one()
    _cache(scene).entries.pop(voucher_id, None)
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action="medins.voucher.activate",
        resource=f"voucher:{voucher_id}",
        result="ok",
        detail={"rebound": existing is not None},
    )
    return _read(row)


def _refuse_activation(scene: Scene, principal: Principal, reason: str) -> None:
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action="medins.voucher.activate",
        resource="voucher",
        result="refused",
        detail={"reason": reason},
    )
    count(scene, "activation_refused")


def my_voucher(scene: Scene, *, principal: Principal) -> VoucherRead:
    """Return the signed-in citizen's voucher, or 404."""
    phone = _check_citizen(principal)
    with scene.engine.connect() as conn:
        row = conn.execute(
            select(vouchers).where(vouchers.c.phone_hmac == scene.phone_hmac(phone))
        ).first()
    if row is None:
        raise NotFound("no voucher is activated for this phone; activate it first")
    return _read(row)


def issue_token(
    scene: Scene,
    *,
    principal: Principal,
    device_id: str,
    ttl: int = TOKEN_TTL,
    now: datetime | None = None,
) -> QrToken:
    """Sign a fresh QR token for the citizen's voucher on the device it is bound to."""
    voucher = my_voucher(scene, principal=principal)
    if not 10 <= ttl <= 300:
        raise BadInput("ttl must be between 10 and 300 seconds")
    tag = voucher_token.device_tag(_check_device(device_id))
    info = voucher_info(scene, voucher.voucher_id)
    if info is None or info.status != "active":
        raise Forbidden("the voucher is not active")
    if info.device_tag != tag:
        raise Forbidden("the voucher is bound to another device; activate it again on this one")
    issued = int(now_utc(now).timestamp())
    token = voucher_token.sign(
        scene.key,
        issuer=scene.code,
        voucher_id=voucher.voucher_id,
        device=tag,
        issued_at=issued,
        ttl=ttl,
    )
    return QrToken(
        token=token,
        issued_at=datetime.fromtimestamp(issued, UTC),
        expires_at=datetime.fromtimestamp(issued + ttl, UTC),
        ttl=ttl,
    )


# ---------------------------------------------------------------------------------------------
# the voucher cache and the replay store


# how often a process asks the store which vouchers changed: an activation or a new device
# made by another process of the node takes effect here within this time
POLL_SECONDS = 0.5
# a change is stamped before its commit, which may wait this long for the store's lock
CHANGE_SLACK = timedelta(seconds=BUSY_TIMEOUT_MS / 1000 + 2)
MAX_CACHED = 200_000
# built once: building the select cost more than running it
_VOUCHER_BY_ID = select(vouchers).where(vouchers.c.voucher_id == bindparam("voucher_id"))
_CHANGED_SINCE = select(vouchers.c.voucher_id).where(vouchers.c.updated_at >= bindparam("since"))


@dataclass
class _VoucherCache:
    """The vouchers this process has read, and when it last asked the store what changed."""

    entries: dict[str, VoucherInfo | None]
    polled: float  # monotonic seconds
    since: datetime  # the store's clock at that poll


def _cache(scene: Scene) -> _VoucherCache:
    cache: _VoucherCache | None = scene.extra.get("vouchers")
    if cache is None:
        cache = scene.extra.setdefault(
            "vouchers", _VoucherCache({}, time.monotonic(), datetime.now(UTC))
        )
    return cache


def _forget_changed(scene: Scene, cache: _VoucherCache) -> None:
    """Drop from the cache the vouchers changed since the last poll (with the commit slack)."""
    polled = time.monotonic()
    if polled - cache.polled < POLL_SECONDS:
        return
    moment = datetime.now(UTC)
    with scene.engine.connect() as conn:
        changed = conn.execute(_CHANGED_SINCE, {"since": cache.since - CHANGE_SLACK}).scalars()
        # a voucher read while its change committed is dropped again by the next polls
        for voucher_id in changed:
            cache.entries.pop(voucher_id, None)
    cache.polled, cache.since = polled, moment


def voucher_info(scene: Scene, voucher_id: str) -> VoucherInfo | None:
    """Return a voucher's binding and masked view, kept in the process until it changes.

    Every settlement checks the voucher: reading it from the store each time cost as much
    as the rules. The cache asks the store twice a second which vouchers changed.
    """
    cache = _cache(scene)
    _forget_changed(scene, cache)
    if voucher_id in cache.entries:
        return cache.entries[voucher_id]
    with scene.engine.connect() as conn:
        row = conn.execute(_VOUCHER_BY_ID, {"voucher_id": voucher_id}).first()
    info = None
    if row is not None:
        birth = date.fromisoformat(row.birth_date)
        info = VoucherInfo(
            voucher_id=row.voucher_id,
            person_id=row.person_id,
            device_tag=row.device_tag,
            status=row.status,
            birth_date=birth,
            gender=row.gender,
            view=PersonView(
                voucher_id=row.voucher_id,
                id_number=row.id_masked,
                name=row.name_masked,
                gender=row.gender,
                age=_age(birth, datetime.now(UTC).date()),
                scheme=row.scheme,
                insured_county=row.insured_county,
            ),
        )
    if len(cache.entries) > MAX_CACHED:
        cache.entries.clear()
    cache.entries[voucher_id] = info
    return info


class ReplayStore:
    """Nonces of the tokens used within the last window, in memory, loaded from the store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, float] = {}
        self.pruned = 0.0

    def claim(self, nonce: str, expires: float, now: float) -> bool:
        """Mark a nonce used; False when it was used already (in this process or loaded)."""
        with self.lock:
            if nonce in self.seen:
                return False
            self.seen[nonce] = expires
            if now - self.pruned > 10:
                horizon = now - LEEWAY
                self.seen = {n: e for n, e in self.seen.items() if e >= horizon}
                self.pruned = now
            return True

    def release(self, nonce: str) -> None:
        """Forget a claim whose durable write failed for another reason than a replay."""
        with self.lock:
            self.seen.pop(nonce, None)


def replay_store(scene: Scene) -> ReplayStore:
    """Return the node's replay store, loading the nonces still in their window on first use."""
    store: ReplayStore | None = scene.extra.get("replay")
    if store is not None:
        return store
    with scene.lock:
        store = scene.extra.get("replay")
        if store is None:
            store = ReplayStore()
            horizon = datetime.now(UTC) - timedelta(seconds=LEEWAY)
            with scene.engine.connect() as conn:
                for nonce, expires in conn.execute(
                    select(voucher_uses.c.nonce, voucher_uses.c.expires_at).where(
                        voucher_uses.c.expires_at >= horizon
                    )
                ):
                    at = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
                    store.seen[nonce] = at.timestamp()
            scene.extra["replay"] = store
    return store


def count(scene: Scene, name: str, by: int = 1, *, conn: Connection | None = None) -> None:
    """Add to a daily counter of the scene (refusals, scans, settlements)."""
    day = datetime.now(UTC).date().isoformat()

    def bump(c: Connection) -> None:
        done = c.execute(
            update(voucher_counts)
            .where(voucher_counts.c.day == day, voucher_counts.c.name == name)
            .values(count=voucher_counts.c.count + by)
        ).rowcount
        if not done:
            try:
                with c.begin_nested():
                    c.execute(insert(voucher_counts).values(day=day, name=name, count=by))
            except IntegrityError:
                c.execute(
                    update(voucher_counts)
                    .where(voucher_counts.c.day == day, voucher_counts.c.name == name)
                    .values(count=voucher_counts.c.count + by)
                )

    if conn is not None:
        bump(conn)
        return
    with scene.engine.begin() as c:
        bump(c)


def counts(scene: Scene, *, days: int = 30) -> dict[str, int]:
    """Return the scene's counters summed over the last `days` days."""
    since = (datetime.now(UTC).date() - timedelta(days=days - 1)).isoformat()
    totals: dict[str, int] = {}
    with scene.engine.connect() as conn:
        for name, value in conn.execute(
            select(voucher_counts.c.name, voucher_counts.c.count).where(
                voucher_counts.c.day >= since
            )
        ):
            totals[name] = totals.get(name, 0) + int(value)
    return dict(sorted(totals.items()))


# ---------------------------------------------------------------------------------------------
# checking a token


@dataclass(frozen=True, slots=True)
class Checked:
    """A token that passed every check but single use, and the voucher it names."""

    claims: voucher_token.VoucherClaims
    voucher: VoucherInfo


def check(
    scene: Scene, token: str, *, person_id: str | None = None, now: float | None = None
) -> Checked:
    """Check signature, issuer, window, voucher and device binding (and person); no use."""
    moment = time.time() if now is None else now
    try:
        claims = voucher_token.verify(scene.public, token)
    except voucher_token.TokenRefused as exc:
        raise VoucherRefused(Refusal(exc.reason), exc.message) from None
    if claims.issuer != scene.code:
        raise VoucherRefused(
            Refusal.other_node,
            f"the e-voucher was issued by node {claims.issuer}; this node is {scene.code}",
        )
    if moment > claims.expires_at + LEEWAY:
        raise VoucherRefused(
            Refusal.expired,
            f"the e-voucher code expired {int(moment - claims.expires_at)} s ago; "
            "ask the person to refresh it",
        )
    if claims.issued_at > moment + LEEWAY:
        raise VoucherRefused(Refusal.forged, "the e-voucher code is dated in the future")
    info = voucher_info(scene, claims.voucher_id)
    if info is None:
        raise VoucherRefused(Refusal.unknown_voucher, "no such e-voucher on this node")
    if info.status != "active":
        raise VoucherRefused(Refusal.inactive, "the e-voucher is not active")
    if info.device_tag != claims.device_tag:
        raise VoucherRefused(
            Refusal.other_device,
            "the code comes from a device the e-voucher is no longer bound to",
        )
    if person_id is not None and person_id != info.person_id:
        raise VoucherRefused(Refusal.other_person, "the e-voucher belongs to another person")
    return Checked(claims=claims, voucher=info)


def claim(scene: Scene, checked: Checked, *, now: float | None = None) -> None:
    """Use a checked token once in this process (the store's key enforces it across them)."""
    moment = time.time() if now is None else now
    if not replay_store(scene).claim(checked.claims.nonce, checked.claims.expires_at, moment):
        raise VoucherRefused(Refusal.replayed, "the e-voucher code has been used already")


def use_row(
    checked: Checked, *, institution_id: str, kind: str, at: datetime, settlement_id: str | None
) -> dict[str, Any]:
    """Return the replay-store row of one use of a token."""
    return {
        "nonce": checked.claims.nonce,
        "voucher_id": checked.voucher.voucher_id,
        "institution_id": institution_id,
        "kind": kind,
        "used_at": at,
        "expires_at": datetime.fromtimestamp(checked.claims.expires_at, UTC),
        "settlement_id": settlement_id,
    }


def refused(
    scene: Scene, principal: Principal | None, exc: VoucherRefused, *, what: str
) -> VoucherRefused:
    """Audit and count a refusal, and return it to raise."""
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action=f"medins.voucher.{what}",
        resource="voucher",
        result="refused",
        detail={"reason": exc.reason.value},
    )
    count(scene, f"refused_{exc.reason.value}")
    return exc


def scan(
    scene: Scene,
    *,
    principal: Principal,
    institution_id: str,
    token: str,
    transaction: Transaction,
    now: datetime | None = None,
) -> ScanResult:
    """Check and use a scanned token; answer the person (masked) once the use is committed."""
    moment = now_utc(now)
    try:
        checked = check(scene, token, now=moment.timestamp())
        claim(scene, checked, now=moment.timestamp())
    except VoucherRefused as exc:
        raise refused(scene, principal, exc, what="scan") from None
    row = use_row(
        checked,
        institution_id=institution_id,
        kind=transaction.value,
        at=moment,
        settlement_id=None,
    )

    def write(conn: Connection) -> None:
        conn.execute(insert(voucher_uses).values(**row))

    try:
        scene.writer.run(write)
    except IntegrityError:
        # another process of this node used the same token first
        raise refused(
            scene,
            principal,
            VoucherRefused(Refusal.replayed, "the e-voucher code has been used already"),
            what="scan",
        ) from None
    except Exception:
        replay_store(scene).release(checked.claims.nonce)
        raise
    audit.append(
        data_dir=scene.data_dir,
        principal=principal,
        action="medins.voucher.scan",
        resource=f"voucher:{checked.voucher.voucher_id}",
        result="ok",
        detail={"institution": institution_id, "transaction": transaction.value},
        durable=False,
    )
    return ScanResult(
        use_id=checked.claims.nonce,
        institution_id=institution_id,
        transaction=transaction,
        person=checked.voucher.view,
        used_at=moment,
    )


def forget_expired_uses(scene: Scene, *, older_than_days: int = 7) -> int:
    """Delete replay rows long past their window and not tied to a settlement."""
    horizon = datetime.now(UTC) - timedelta(days=older_than_days)
    with scene.engine.begin() as conn:
        return int(
            conn.execute(
                delete(voucher_uses).where(
                    voucher_uses.c.expires_at < horizon, voucher_uses.c.settlement_id.is_(None)
                )
            ).rowcount
        )
