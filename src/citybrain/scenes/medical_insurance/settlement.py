"""Settlement with the check before payment: validate, use the voucher, judge, pay, commit.

A terminal submits a settlement with the person's voucher token. In order:

1. the institution's transaction id: a settlement already stored with it is answered again
   (same body) or refused with 409 (another body): nothing is paid twice;
2. the body: malformed fields, unknown catalogue codes, negative amounts, amounts that are
   not quantity x price, dates in the future are 422 with every reason;
3. the voucher token: signature, window, device, person, single use (or the scan that used
   it at this institution a moment ago);
4. the rule base's `check_settlement` against the person's recent settlements (kept in
   memory, loaded from the store on first sight of the person): pass, warn or block;
5. pass and warn are paid (fund share by category, kind, grade and scheme), block is not;
6. the settlement, the voucher use and the findings are committed in one transaction
   (group commit: concurrent settlements share it) before the answer.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from citybrain.core.errors import Conflict, NotFound, Unprocessable
from citybrain.core.ids import record_id
from citybrain.governance.principal import Principal
from citybrain.node.siblings import SiblingFeed
from citybrain.scenes.medical_insurance import voucher as vouchers
from citybrain.scenes.medical_insurance import voucher_token
from citybrain.scenes.medical_insurance.group_commit import Inserts
from citybrain.scenes.medical_insurance.models import (
    Finding,
    InstitutionKind,
    Item,
    ItemKind,
    Outcome,
    Settlement,
    SettlementKind,
)
from citybrain.scenes.medical_insurance.rules import check_settlement
from citybrain.scenes.medical_insurance.service import (
    Institution,
    Scene,
    categories,
    institution,
    institutions,
    now_utc,
    rulebase,
)
from citybrain.scenes.medical_insurance.tables import findings, settlements, voucher_uses

CST = timezone(timedelta(hours=8))
# built once: the store's statement cache then serves every settlement
_INSERT_SETTLEMENT = insert(settlements)
_INSERT_USE = insert(voucher_uses)
_INSERT_FINDING = insert(findings)
# the reads of every settlement, built once with their parameters: building a select costs a
# settlement more than running it
_PAID_HISTORY = select(settlements.c.record).where(
    settlements.c.person_id == bindparam("person_id"),
    settlements.c.settled_on >= bindparam("since"),
    settlements.c.paid.is_(True),
)
_STORED_ANSWER = select(settlements.c.body_hash, settlements.c.answer).where(
    settlements.c.institution_id == bindparam("institution_id"),
    settlements.c.txn_id == bindparam("txn_id"),
)
# a terminal may settle a voucher it scanned this long ago (the scan used the token)
SCAN_GRACE = timedelta(minutes=30)
# clocks of terminals run a little ahead sometimes: "in the future" means beyond this
FUTURE_LEEWAY = timedelta(minutes=5)
_log = logging.getLogger("citybrain.medins")
MAX_PERSONS = 200_000
MAX_ANSWERS = 100_000
SHARE = {"甲": 1.0, "乙": 0.9, "丙": 0.0}
RATIO = {
    ("inpatient", "三级"): 0.75,
    ("inpatient", "二级"): 0.85,
    ("inpatient", "一级"): 0.9,
    ("inpatient", "未定级"): 0.9,
}
OUTPATIENT_RATIO = 0.5
RESIDENT_LESS = 0.1  # 居民医保 pays ten points less than 职工医保


class ItemIn(BaseModel):
    """One charged line as a terminal sends it."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=32)
    kind: ItemKind
    quantity: float
    unit_price: float
    amount: float
    service_date: date


class SettlementIn(BaseModel):
    """A settlement as a terminal submits it."""

    model_config = ConfigDict(extra="forbid")

    txn_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    voucher: str = Field(min_length=1, max_length=512)
    kind: SettlementKind
    diagnosis: str = Field("", max_length=16)
    start: datetime
    end: datetime
    person_id: str | None = Field(None, max_length=64, description="the person expected")
    items: list[ItemIn] = Field(min_length=1, max_length=2000)


class FindingOut(BaseModel):
    """One finding as the terminal is told it."""

    rule_id: str
    rule_version: int
    grade: str
    item_code: str
    reason: str


class SettlementAnswer(BaseModel):
    """The answer of the check before payment."""

    settlement_id: str
    txn_id: str
    institution_id: str
    outcome: Outcome
    paid: bool
    total: float
    fund_amount: float
    personal_amount: float
    findings: list[FindingOut]
    settled_at: datetime
    replayed: bool = False


def _local(moment: datetime) -> datetime:
    """Return a time as naive China Standard Time (the records' convention)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(CST).replace(tzinfo=None)


def body_hash(body: dict[str, Any]) -> str:
    """Return the hash that tells a retry (same body) from a different settlement."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def validate(scene: Scene, body: Any, *, now: datetime | None = None) -> SettlementIn:
    """Parse and check a submitted settlement; raise 422 with every reason found."""
    if not isinstance(body, dict):
        raise Unprocessable("a settlement is a JSON object", detail={"reasons": ["not an object"]})
    try:
        parsed = SettlementIn.model_validate(body)
    except ValidationError as exc:
        errors = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise Unprocessable(
            f"the settlement is malformed: {errors[0]}", detail={"reasons": errors}
        ) from None
    reasons: list[str] = []
    today = _local(now_utc(now))
    limit = today + FUTURE_LEEWAY
    start, end = _local(parsed.start), _local(parsed.end)
    if start > limit:
        reasons.append("start: is in the future")
    if end > limit:
        reasons.append("end: is in the future")
    if end < start:
        reasons.append("end: is before start")
    codes = categories(scene)
    kinds = rulebase(scene).catalogue.entries
    for n, item in enumerate(parsed.items):
        where = f"items.{n}"
        if item.code not in codes:
            reasons.append(f"{where}.code: {item.code} is not in the catalogues")
        elif (entry := kinds.get(item.code)) is not None and entry.kind != item.kind.value:
            reasons.append(f"{where}.kind: {item.code} is a {entry.kind}, not a {item.kind.value}")
        for name in ("quantity", "unit_price", "amount"):
            if getattr(item, name) < 0:
                reasons.append(f"{where}.{name}: must not be negative")
        if item.quantity == 0:
            reasons.append(f"{where}.quantity: must be more than 0")
        if abs(item.quantity * item.unit_price - item.amount) > 0.01 + 1e-6 * item.amount:
            reasons.append(f"{where}.amount: is not quantity x unit_price")
        if item.service_date > limit.date():
            reasons.append(f"{where}.service_date: is in the future")
        elif not start.date() <= item.service_date <= end.date():
            reasons.append(f"{where}.service_date: is outside start..end")
    if reasons:
        raise Unprocessable(
            f"the settlement is refused: {reasons[0]}"
            + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""),
            detail={"reasons": reasons},
        )
    return parsed


# ---------------------------------------------------------------------------------------------
# what the process keeps: recent settlements per person, answers per transaction id


@dataclass
class Memory:
    """Per-person recent paid settlements and recent answers, bounded, loaded from the store."""

    lock: threading.Lock
    history: OrderedDict[str, list[Settlement]]
    answers: OrderedDict[tuple[str, str], tuple[str, dict[str, Any]]]
    # when the store was last read for a person (Scene.shared: other workers pay too)
    checked: dict[str, datetime] = field(default_factory=dict)
    # submissions of a transaction id being settled right now: a retry waits for the first
    inflight: dict[tuple[str, str], Future[tuple[str, dict[str, Any]]]] = field(
        default_factory=dict
    )


def memory(scene: Scene) -> Memory:
    """Return the scene's settlement memory, made on first use."""
    found: Memory | None = scene.extra.get("settlement_memory")
    if found is None:
        with scene.lock:
            found = scene.extra.get("settlement_memory")
            if found is None:
                found = Memory(threading.Lock(), OrderedDict(), OrderedDict())
                scene.extra["settlement_memory"] = found
    return found


def history_of(scene: Scene, person_id: str, on: datetime) -> list[Settlement]:
    """Return the person's paid settlements of the rule base's window before `on`."""
    mem = memory(scene)
    with mem.lock:
        found = mem.history.get(person_id)
        if found is not None:
            mem.history.move_to_end(person_id)
        last = mem.checked.get(person_id)
    days = rulebase(scene).history_days
    if scene.shared:
        feed = paid_feed(scene)
        if feed is not None:
            # what the sibling workers paid arrives on the feed before their answers leave
            _take_feed(scene, feed)
            with mem.lock:
                found = mem.history.get(person_id)
        elif found is not None and last is not None:
            found = _catch_up(scene, person_id, found, last)
    if found is None:
        since = (on - timedelta(days=days + 1)).date().isoformat()
        moment = now_utc()
        with scene.engine.connect() as conn:
            rows = conn.execute(_PAID_HISTORY, {"person_id": person_id, "since": since}).all()
        found = sorted(
            (Settlement.model_validate(r.record) for r in rows), key=lambda s: s.settled_at
        )
        with mem.lock:
            # a settlement committed while we read is already in the list another thread made
            found = mem.history.setdefault(person_id, found)
            mem.checked.setdefault(person_id, moment)
            while len(mem.history) > MAX_PERSONS:
                gone, _ = mem.history.popitem(last=False)
                mem.checked.pop(gone, None)
    horizon = on - timedelta(days=days)
    return [s for s in found if s.settled_at >= horizon]


def paid_feed(scene: Scene) -> SiblingFeed | None:
    """Return this process's end of the node's paid-settlement feed (None: catch up instead)."""
    feed: SiblingFeed | None = scene.extra.get("paid_feed")
    if feed is not None and feed.pid == os.getpid():
        return feed
    if scene.extra.get("paid_feed_failed"):
        return None
    mem = memory(scene)  # made outside the scene's lock, which making it takes
    with scene.lock:
        feed = scene.extra.get("paid_feed")
        if feed is None or feed.pid != os.getpid():
            try:
                feed = SiblingFeed(scene.data_dir, "medins-paid")
            except OSError as exc:
                _log.warning("no paid-settlement feed (%s): the store is asked instead", exc)
                scene.extra["paid_feed_failed"] = True
                return None
            # a forked process starts without the parent's memory of other workers' payments
            mem.history.clear()
            scene.extra["paid_feed"] = feed
            atexit.register(feed.close)
    return feed


def _take_feed(scene: Scene, feed: SiblingFeed) -> None:
    """Add to memory the payments the sibling workers published since the last drain."""
    drained = feed.drain()
    if not drained.frames and not drained.lost:
        return
    mem = memory(scene)
    with mem.lock:
        if drained.lost:
            # a sibling's frames may be missing: forget, the store is read again per person
            mem.history.clear()
            mem.checked.clear()
            return
        for frame in drained.frames:
            person_id, _, body = frame.partition(b"\n")
            listed = mem.history.get(person_id.decode())
            if listed is None:
                continue  # not in memory: read from the store, with this payment, when needed
            record = Settlement.model_validate_json(body)
            if all(s.settlement_id != record.settlement_id for s in listed):
                listed.append(record)
                listed.sort(key=lambda s: s.settled_at)


def _publish_paid(scene: Scene, record: Settlement, record_json: dict[str, Any]) -> None:
    feed = paid_feed(scene) if scene.shared else None
    if feed is not None:
        feed.publish(record.person_id.encode() + b"\n" + orjson.dumps(record_json))


# how far back a catch-up looks before the last read: a row is stamped before its commit,
# so one committed just after that read may carry an earlier time
CATCH_UP_SLACK = timedelta(seconds=2)


def _catch_up(
    scene: Scene, person_id: str, found: list[Settlement], last: datetime
) -> list[Settlement]:
    """Add the person's payments other worker processes committed since the last read."""
    moment = now_utc()
    mem = memory(scene)
    with scene.engine.connect() as conn:
        ids = conn.execute(
            select(settlements.c.id).where(
                settlements.c.person_id == person_id,
                settlements.c.created_at >= last - CATCH_UP_SLACK,
                settlements.c.paid.is_(True),
            )
        ).scalars()
        with mem.lock:
            known = {s.settlement_id for s in mem.history.get(person_id, found)}
        unknown = [i for i in ids if i not in known]
        # only the records this worker has not seen are read and parsed
        rows = (
            conn.execute(select(settlements.c.record).where(settlements.c.id.in_(unknown))).all()
            if unknown
            else []
        )
    with mem.lock:
        current = mem.history.get(person_id, found)
        known = {s.settlement_id for s in current}
        new = [
            r
            for r in (Settlement.model_validate(row.record) for row in rows)
            if r.settlement_id not in known
        ]
        if new:
            current = sorted([*current, *new], key=lambda s: s.settled_at)
            mem.history[person_id] = current
        mem.checked[person_id] = moment
    return current


def _remember(
    scene: Scene,
    record: Settlement | None,
    key: tuple[str, str],
    entry: tuple[str, dict[str, Any]],
) -> None:
    mem = memory(scene)
    with mem.lock:
        if record is not None:
            listed = mem.history.get(record.person_id)
            if listed is not None:
                listed.append(record)
        mem.answers[key] = entry
        while len(mem.answers) > MAX_ANSWERS:
            mem.answers.popitem(last=False)


def _stored_answer(scene: Scene, key: tuple[str, str]) -> tuple[str, dict[str, Any]] | None:
    mem = memory(scene)
    with mem.lock:
        found = mem.answers.get(key)
    if found is not None:
        return found
    with scene.engine.connect() as conn:
        row = conn.execute(_STORED_ANSWER, {"institution_id": key[0], "txn_id": key[1]}).first()
    return (row.body_hash, row.answer) if row is not None else None


def _replay(stored: tuple[str, dict[str, Any]], digest: str, txn_id: str) -> SettlementAnswer:
    if stored[0] != digest:
        raise Conflict(
            f"transaction {txn_id} was settled already with a different body; "
            "a new settlement needs a new transaction id"
        )
    return SettlementAnswer.model_validate({**stored[1], "replayed": True})


# ---------------------------------------------------------------------------------------------
# the fund's share


def fund_share(
    scene: Scene, items: tuple[Item, ...], *, kind: str, grade: str, scheme: str
) -> float:
    """Return what the fund pays: eligible amounts by category times the kind's ratio."""
    cats = categories(scene)
    eligible = sum(i.amount * SHARE.get(cats.get(i.code, "丙"), 0.0) for i in items)
    ratio = RATIO.get((kind, grade), 0.9) if kind == "inpatient" else OUTPATIENT_RATIO
    if scheme == "居民医保":
        ratio -= RESIDENT_LESS
    return round(max(0.0, eligible * ratio), 2)


# ---------------------------------------------------------------------------------------------
# submitting


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _voucher(
    scene: Scene, principal: Principal, parsed: SettlementIn, institution_id: str, at: datetime
) -> tuple[vouchers.Checked, bool]:
    """Check the token; return it and whether a scan at this institution used it already."""
    moment = at.timestamp()
    try:
        checked = vouchers.check(scene, parsed.voucher, person_id=parsed.person_id, now=moment)
    except vouchers.VoucherRefused as exc:
        if exc.reason is not vouchers.Refusal.expired:
            raise
        scanned = _scan_of(scene, parsed.voucher, institution_id, at)
        if scanned is None:
            raise
        # valid when it was scanned here: the scan is the moment the person was present
        checked = vouchers.check(
            scene, parsed.voucher, person_id=parsed.person_id, now=scanned.timestamp()
        )
        return checked, True
    try:
        vouchers.claim(scene, checked, now=moment)
    except vouchers.VoucherRefused:
        if _scan_of(scene, parsed.voucher, institution_id, at) is None:
            raise
        return checked, True
    return checked, False


def _scan_of(scene: Scene, token: str, institution_id: str, at: datetime) -> datetime | None:
    """Return when this institution scanned the token, if it did so lately and has not settled."""
    try:
        claims = voucher_token.verify(scene.public, token)
    except voucher_token.TokenRefused:
        return None
    with scene.engine.connect() as conn:
        row = conn.execute(
            select(voucher_uses.c.used_at).where(
                voucher_uses.c.nonce == claims.nonce,
                voucher_uses.c.institution_id == institution_id,
                voucher_uses.c.settlement_id.is_(None),
            )
        ).first()
    if row is None:
        return None
    used = row.used_at if row.used_at.tzinfo else row.used_at.replace(tzinfo=UTC)
    return used if at - used <= SCAN_GRACE else None


def _record(
    scene: Scene,
    parsed: SettlementIn,
    inst: Institution,
    info: vouchers.VoucherInfo,
    settlement_id: str,
    settled_at: datetime,
) -> Settlement:
    # built from the validated submission and the voucher's record: no second validation
    items = tuple(
        Item.model_construct(
            code=i.code,
            kind=i.kind,
            quantity=i.quantity,
            unit_price=i.unit_price,
            amount=i.amount,
            service_date=i.service_date,
        )
        for i in parsed.items
    )
    start = _local(parsed.start)
    total = round(sum(i.amount for i in items), 2)
    fund = fund_share(
        scene, items, kind=parsed.kind.value, grade=inst.grade, scheme=info.view.scheme
    )
    return Settlement.model_construct(
        settlement_id=settlement_id,
        person_id=info.person_id,
        institution_id=inst.institution_id,
        institution_kind=InstitutionKind(inst.kind),
        institution_grade=inst.grade,
        city_code=inst.county_code[:4] + "00",
        county_code=inst.county_code,
        kind=parsed.kind,
        diagnosis=parsed.diagnosis,
        sex=info.gender,
        age=_age(info.birth_date, start.date()),
        start=start,
        end=_local(parsed.end),
        settled_at=_local(settled_at),
        total=total,
        fund_paid=min(fund, total),
        items=items,
    )


def _finding_row(f: Finding, record: Settlement, source: str, at: datetime) -> dict[str, Any]:
    amount = sum(i.amount for i in record.items if not f.item_code or i.code == f.item_code)
    return {
        "id": record_id("F"),
        "finding_key": f"{source}:{f.rule_id}:{f.settlement_id}:{f.item_code}"[:200],
        "source": source,
        "rule_id": f.rule_id,
        "rule_version": str(f.rule_version),
        "grade": f.grade.value,
        "outcome": f.grade.value,
        "settlement_id": f.settlement_id,
        "institution_id": f.institution_id,
        "person_id": f.person_id,
        "amount": round(amount, 2),
        "reason": f.reason,
        "detail": {"item_code": f.item_code, "kind": record.kind.value},
        "found_at": at,
        "case_id": None,
    }


@dataclass
class _Pending:
    """A checked settlement waiting for its commit."""

    write: Callable[[Connection], Any]
    answer: SettlementAnswer
    answer_json: dict[str, Any]
    record: Settlement | None
    record_json: dict[str, Any]
    key: tuple[str, str]
    digest: str
    nonce: str
    scanned: bool


def _prepare(
    scene: Scene,
    *,
    principal: Principal,
    institution_id: str,
    body: Any,
    now: datetime | None = None,
    digest: str | None = None,
) -> SettlementAnswer | _Pending:
    """Do everything but the commit: an answer for a retry, else the write to commit.

    `digest`: the body's hash, when the caller has it already.
    """
    moment = now_utc(now)
    inst = institution(scene, institution_id)
    if digest is None:
        digest = body_hash(body) if isinstance(body, dict) else ""
    parsed = validate(scene, body, now=moment)
    try:
        checked, scanned = _voucher(scene, principal, parsed, institution_id, moment)
    except vouchers.VoucherRefused as exc:
        stored = _stored_answer(scene, (institution_id, parsed.txn_id))
        if stored is not None:
            return _replay(stored, digest, parsed.txn_id)
        raise vouchers.refused(scene, principal, exc, what="settle") from None
    settlement_id = record_id("S")
    record = _record(scene, parsed, inst, checked.voucher, settlement_id, moment)
    history = history_of(scene, record.person_id, record.settled_at)
    verdict = check_settlement(rulebase(scene), record, history)
    paid = verdict.outcome is not Outcome.block
    fund = record.fund_paid if paid else 0.0
    answer = SettlementAnswer(
        settlement_id=settlement_id,
        txn_id=parsed.txn_id,
        institution_id=institution_id,
        outcome=verdict.outcome,
        paid=paid,
        total=record.total,
        fund_amount=fund,
        personal_amount=round(record.total - fund, 2) if paid else record.total,
        findings=[
            FindingOut(
                rule_id=f.rule_id,
                rule_version=f.rule_version,
                grade=f.grade.value,
                item_code=f.item_code,
                reason=f.reason,
            )
            for f in verdict.findings
        ],
        settled_at=moment,
    )
    answer_json = answer.model_dump(mode="json")
    record_json = record.model_dump(mode="json")
    row = {
        "id": settlement_id,
        "institution_id": institution_id,
        "txn_id": parsed.txn_id,
        "body_hash": digest,
        "person_id": record.person_id,
        "voucher_id": checked.voucher.voucher_id,
        "nonce": checked.claims.nonce,
        "kind": record.kind.value,
        "settled_on": record.settled_at.date().isoformat(),
        "outcome": verdict.outcome.value,
        "paid": paid,
        "total_amount": record.total,
        "fund_amount": fund,
        "record": record_json,
        "answer": answer_json,
        "created_at": moment,
    }
    found_rows = [_finding_row(f, record, "before_payment", moment) for f in verdict.findings]
    use = vouchers.use_row(
        checked,
        institution_id=institution_id,
        kind=record.kind.value,
        at=moment,
        settlement_id=settlement_id,
    )

    done = {
        "audit": "settle",
        "id": settlement_id,
        "institution": institution_id,
        "txn": parsed.txn_id,
        "outcome": verdict.outcome.value,
    }
    write: Callable[[Connection], Any]
    if scanned:

        def write(conn: Connection) -> dict[str, str]:
            conn.execute(_INSERT_SETTLEMENT, row)
            attached = conn.execute(
                update(voucher_uses)
                .where(
                    voucher_uses.c.nonce == use["nonce"],
                    voucher_uses.c.settlement_id.is_(None),
                )
                .values(settlement_id=settlement_id)
            ).rowcount
            if attached != 1:
                raise IntegrityError("voucher use", {}, Exception("the scan was settled already"))
            if found_rows:
                conn.execute(_INSERT_FINDING, found_rows)
            return done

    else:
        # plain inserts: the settlements of one commit go in one executemany per table
        write = Inserts(
            [(_INSERT_SETTLEMENT, [row]), (_INSERT_USE, [use]), (_INSERT_FINDING, found_rows)],
            result=done,
        )
    return _Pending(
        write=write,
        answer=answer,
        answer_json=answer_json,
        record=record if paid else None,
        record_json=record_json,
        key=(institution_id, parsed.txn_id),
        digest=digest,
        nonce=use["nonce"],
        scanned=scanned,
    )


def _finish(
    scene: Scene, principal: Principal, pending: _Pending, error: BaseException | None
) -> SettlementAnswer:
    """Answer after the commit, or turn its failure into the right answer."""
    if isinstance(error, IntegrityError):
        if not pending.scanned:
            vouchers.replay_store(scene).release(pending.nonce)
        stored = _stored_answer(scene, pending.key)
        if stored is not None:
            # the same transaction id committed by a concurrent request a moment ago
            return _replay(stored, pending.digest, pending.key[1])
        again = vouchers.VoucherRefused(
            vouchers.Refusal.replayed, "the e-voucher code has been used for another settlement"
        )
        raise vouchers.refused(scene, principal, again, what="settle") from None
    if error is not None:
        if not pending.scanned:
            vouchers.replay_store(scene).release(pending.nonce)
        raise error
    _remember(scene, pending.record, pending.key, (pending.digest, pending.answer_json))
    if pending.record is not None:
        # before the answer leaves: a retry or the next visit may reach another worker
        _publish_paid(scene, pending.record, pending.record_json)
    return pending.answer


_Entry = tuple[str, Any]


def _enter(scene: Scene, key: tuple[str, str] | None) -> _Entry:
    """Say how to go on: ("answer", stored), ("wait", future of the first) or ("own", future)."""
    if key is None:
        return ("own", None)
    mem = memory(scene)
    with mem.lock:
        # answers of this process are in memory; older ones are looked up only when the
        # token is refused or the transaction id is taken (a retry always meets one of them)
        remembered = mem.answers.get(key)
        if remembered is not None:
            return ("answer", remembered)
        running = mem.inflight.get(key)
        if running is not None:
            return ("wait", running)
        mine: Future[tuple[str, dict[str, Any]]] = Future()
        mem.inflight[key] = mine
        return ("own", mine)


def _leave(
    scene: Scene,
    key: tuple[str, str] | None,
    mine: Future[tuple[str, dict[str, Any]]] | None,
    outcome: SettlementAnswer | BaseException,
    digest: str,
    answer_json: dict[str, Any] | None = None,
) -> None:
    """Hand the outcome to submissions of the same transaction id that waited for it."""
    if key is None or mine is None:
        return
    mem = memory(scene)
    with mem.lock:
        mem.inflight.pop(key, None)
    if isinstance(outcome, BaseException):
        mine.set_exception(outcome)
    else:
        if answer_json is None:
            answer_json = outcome.model_dump(mode="json", exclude={"replayed"})
        mine.set_result((digest, answer_json))


def _key_of(body: Any, institution_id: str) -> tuple[tuple[str, str] | None, str]:
    txn = body.get("txn_id") if isinstance(body, dict) else None
    key = (institution_id, txn) if isinstance(txn, str) else None
    return key, body_hash(body) if isinstance(body, dict) else ""


def submit(
    scene: Scene,
    *,
    principal: Principal,
    institution_id: str,
    body: Any,
    now: datetime | None = None,
) -> SettlementAnswer:
    """Settle one submission of a terminal, answering only after it is committed."""
    key, digest = _key_of(body, institution_id)
    while True:
        how, value = _enter(scene, key)
        if how == "answer":
            return _replay(value, digest, str(body["txn_id"]))
        if how == "wait":
            try:
                stored = value.result()
            except Exception:  # noqa: BLE001 - the first failed: this one tries on its own
                continue
            return _replay(stored, digest, str(body["txn_id"]))
        try:
            answer = _settle_now(scene, principal, institution_id, body, now)
        except BaseException as exc:
            _leave(scene, key, value, exc, digest)
            raise
        _leave(scene, key, value, answer, digest)
        return answer


def _settle_now(
    scene: Scene, principal: Principal, institution_id: str, body: Any, now: datetime | None
) -> SettlementAnswer:
    prepared = _prepare(
        scene, principal=principal, institution_id=institution_id, body=body, now=now
    )
    if isinstance(prepared, SettlementAnswer):
        return prepared
    try:
        scene.writer.run(prepared.write)
    except Exception as exc:  # noqa: BLE001 - _finish answers or raises what fits
        return _finish(scene, principal, prepared, exc)
    return _finish(scene, principal, prepared, None)


async def submit_async(
    scene: Scene,
    *,
    principal: Principal,
    institution_id: str,
    body: Any,
    now: datetime | None = None,
) -> SettlementAnswer:
    """The same as submit for the event loop: the commit is awaited, not waited for."""
    key, digest = _key_of(body, institution_id)
    while True:
        how, value = _enter(scene, key)
        if how == "answer":
            return _replay(value, digest, str(body["txn_id"]))
        if how == "wait":
            try:
                stored = await asyncio.wrap_future(value)
            except Exception:  # noqa: BLE001 - the first failed: this one tries on its own
                continue
            return _replay(stored, digest, str(body["txn_id"]))
        try:
            prepared = _prepare(
                scene,
                principal=principal,
                institution_id=institution_id,
                body=body,
                now=now,
                digest=digest,
            )
            computed: dict[str, Any] | None = None
            if isinstance(prepared, SettlementAnswer):
                answer = prepared
            else:
                try:
                    await scene.writer.run_async(prepared.write)
                except Exception as exc:  # noqa: BLE001 - _finish answers or raises what fits
                    answer = _finish(scene, principal, prepared, exc)
                else:
                    answer = _finish(scene, principal, prepared, None)
                if answer is prepared.answer:
                    computed = prepared.answer_json  # serialised once, in _prepare
        except BaseException as exc:
            _leave(scene, key, value, exc, digest)
            raise
        _leave(scene, key, value, answer, digest, computed)
        return answer


def warm(scene: Scene) -> bool:
    """Load what a check before payment reads, on a node with the scene's data; True if so."""
    try:
        institutions(scene)
        rulebase(scene)
    except Unprocessable:
        return False  # no institutions or catalogues: settlements are refused anyway
    categories(scene)
    vouchers.replay_store(scene)
    if scene.shared:
        paid_feed(scene)
    return True


def get_settlement(scene: Scene, *, settlement_id: str) -> dict[str, Any]:
    """Return one stored settlement (its record and answer), or 404."""
    with scene.engine.connect() as conn:
        row = conn.execute(select(settlements).where(settlements.c.id == settlement_id)).first()
    if row is None:
        raise NotFound(f"no settlement {settlement_id}")
    return {"record": row.record, "answer": row.answer, "paid": row.paid, "outcome": row.outcome}
