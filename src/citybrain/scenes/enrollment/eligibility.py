"""Eligibility: the verification service's yes/no questions, asked for many applications at once.

Each criterion of a priority class is one question of `governance/verification/questions.py`
(same dataset, same meaning). They are asked under the Education Bureau's verification
grants, checked exactly as the verification service checks them (kind `verification`, the
question covered, not revoked or expired), and only yes/no leaves the departmental tables.
A batch is answered set-wise in DuckDB over the tables' current snapshots (one statement for
all questions); a few applications (a parent's submission) are answered by looking their
people up in the snapshots' key indexes, the same conditions in Python, which costs
microseconds instead of a scan. Each call leaves, in one batch append, an audit record per
question (`verify`, the dataset, the grant, its purpose, how many were asked and answered
yes) and one per application (the questions, the answers, the grant of each).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import Engine, bindparam, select

from citybrain.core.errors import Forbidden, Unprocessable
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal
from citybrain.governance.sharing import service as sharing
from citybrain.governance.sharing.models import grants as grants_table
from citybrain.governance.verification.questions import QUESTIONS
from citybrain.scenes.enrollment import sources

EDUCATION = "education"
BoolArray = npt.NDArray[np.bool_]
# up to this many applications a call looks people up by key instead of one set-wise query
SMALL_BATCH = 64


@dataclass(frozen=True)
class Criterion:
    """One fact a priority class may require, answered by one verification question."""

    name: str
    question: str | None  # None: read from the parent's own register row, not asked
    passed_zh: str
    failed_zh: str
    appeal_zh: str  # what to bring to an appeal when the answer is no


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion(
            "hukou_in_zone",
            "hukou_at_address",
            "儿童户籍在所选地址（学区内）",
            "儿童户籍不在所选地址",
            "户口簿（户籍迁入证明）",
        ),
        Criterion(
            "hukou_in_county",
            "hukou_in_county",
            "儿童户籍在本县（区）",
            "儿童户籍不在本县（区）",
            "户口簿",
        ),
        Criterion(
            "property_in_zone",
            "owns_property_in_communities",
            "父母在学区内有住宅产权",
            "未查到父母在学区内的住宅产权",
            "不动产权证书或购房合同",
        ),
        Criterion(
            "lives_in_zone",
            None,
            "家庭居住在学区内（户籍登记的居住地址）",
            "登记的居住地址不在学区内",
            "居住地址证明（居住证或租赁备案）",
        ),
        Criterion(
            "residence_permit",
            "residence_permit_valid",
            "父母持有效居住证",
            "未查到父母有效的居住证",
            "居住证",
        ),
        Criterion(
            "social_insurance",
            "social_insurance_months",
            "父母社会保险缴费月数达到要求",
            "父母社会保险缴费月数不足",
            "社保缴费记录（人社部门出具）",
        ),
    )
}


@dataclass(frozen=True)
class Facts:
    """What one application asks about: the child, the parent, the address basis, the zone."""

    application: str
    child_id: str
    parent_id: str
    county: str
    address_id: str | None
    zone_id: str
    lives_in_zone: bool = False  # the parent's registered residence lies in the zone


# the columns of an applications table given to verify_table
FACT_COLUMNS = ("application", "child_id", "parent_id", "county", "address_id", "zone_id")


@dataclass(frozen=True)
class Terms:
    """The season's parameters of the questions."""

    on_date: date  # residence permits must be valid on this day
    insurance_months: int  # social insurance months required


def questions_for(criteria: Sequence[str]) -> list[str]:
    """Return the verification questions a set of criteria needs, in a fixed order."""
    unknown = sorted(set(criteria) - set(CRITERIA))
    if unknown:
        raise Unprocessable(
            f"unknown eligibility criteria {', '.join(unknown)}; known: {', '.join(CRITERIA)}"
        )
    return sorted({q for c in criteria if (q := CRITERIA[c].question) is not None})


def missing_grants(*, engine: Engine, questions: Sequence[str]) -> list[str]:
    """Name every question the Education Bureau holds no active verification grant for."""
    missing = []
    for name in questions:
        question = QUESTIONS[name]
        grant = sharing.active_grant(
            engine=engine, dataset_id=question.dataset, org=EDUCATION, kind="verification"
        )
        if grant is None or (grant.questions and name not in grant.questions):
            missing.append(f"{name} (on {question.dataset})")
    return missing


@dataclass(frozen=True)
class HeldGrant:
    """The verification grant a question is asked under."""

    id: str
    dataset: str
    purpose: str
    questions: tuple[str, ...]


# every active verification grant of an org on some datasets, newest first (as active_grant)
_ACTIVE = (
    select(
        grants_table.c.id,
        grants_table.c.dataset_id,
        grants_table.c.purpose,
        grants_table.c.questions,
    )
    .where(
        grants_table.c.grantee_org == bindparam("org"),
        grants_table.c.kind == "verification",
        grants_table.c.dataset_id.in_(bindparam("datasets", expanding=True)),
        grants_table.c.revoked_at.is_(None),
        grants_table.c.expires_at > bindparam("moment"),
        grants_table.c.granted_at <= bindparam("moment"),
    )
    .order_by(grants_table.c.granted_at.desc(), grants_table.c.id.desc())
)


def _grants(
    *, engine: Engine, data_dir: Path, principal: Principal, names: Sequence[str]
) -> dict[str, HeldGrant]:
    """Return the grant of each question, or refuse as the verification service does.

    One query for all the questions' datasets; each dataset's newest active grant counts,
    exactly as `sharing.active_grant` picks it, so a revocation stops the next call at once.
    """
    if not names:
        return {}
    moment = sharing.clock()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    datasets = sorted({QUESTIONS[q].dataset for q in names})
    newest: dict[str, HeldGrant] = {}
    with engine.connect() as conn:
        for row in conn.execute(
            _ACTIVE, {"org": principal.org, "datasets": datasets, "moment": moment}
        ):
            if row.dataset_id not in newest:
                newest[row.dataset_id] = HeldGrant(
                    str(row.id), row.dataset_id, str(row.purpose), tuple(row.questions or ())
                )
    held: dict[str, HeldGrant] = {}
    for name in names:
        question = QUESTIONS[name]
        grant = newest.get(question.dataset)
        reason = None
        if grant is None:
            reason = (
                f"there is no active verification grant of {principal.org} on "
                f"{question.dataset}; request one at /api/sharing/requests with kind verification"
            )
        elif grant.questions and name not in grant.questions:
            reason = f"grant {grant.id} does not cover the question {name}"
        if reason is not None or grant is None:
            audit.append(
                data_dir=data_dir,
                principal=principal,
                action="verify",
                resource=question.dataset,
                result="refused",
                detail={"question": name, "reason": reason},
            )
            raise Forbidden(str(reason))
        held[name] = grant
    return held


# one set-wise statement per question: the ids (f.i) of the applications answered yes; each
# says what the question of the same name in governance/verification/questions.py says
_SETWISE: dict[str, str] = {
    "hukou_at_address": (
        "select distinct f.i from f join public_security.residents r "
        "on r.id_number = f.child_id and r.address_id = f.address_id "
        "where r.hukou_county = r.residence_county"
    ),
    "hukou_in_county": (
        "select distinct f.i from f join public_security.residents r "
        "on r.id_number = f.child_id and r.hukou_county = f.county"
    ),
    "owns_property_in_communities": (
        "select distinct f.i from f join natural_resources.property_registry p "
        "on p.owner_id_number = f.parent_id "
        "join public_security.addresses a on a.address_id = p.address_id "
        "join zc on zc.zone_id = f.zone_id and zc.community_code = a.community_code "
        "where p.usage in ('住宅', '商住')"
    ),
    "social_insurance_months": (
        "select distinct f.i from f join human_resources.social_insurance s "
        "on s.id_number = f.parent_id where s.months_contributed >= $months"
    ),
    "residence_permit_valid": (
        "select distinct f.i from f join public_security.residence_permits p "
        "on p.id_number = f.parent_id where cast(p.valid_until as date) >= $on_date"
    ),
}


def facts_table(facts: Sequence[Facts]) -> pa.Table:
    """Return applications' facts as the table verify_table takes."""
    return pa.table(
        {
            "application": [x.application for x in facts],
            "child_id": [x.child_id for x in facts],
            "parent_id": [x.parent_id for x in facts],
            "county": [x.county for x in facts],
            "address_id": pa.array([x.address_id for x in facts], pa.string()),
            "zone_id": [x.zone_id for x in facts],
            "lives_in_zone": pa.array([x.lives_in_zone for x in facts], pa.bool_()),
        }
    )


def zones_table(zones: Mapping[str, Sequence[str]]) -> pa.Table:
    """Return catchment zones (zone id -> community codes) as one row per community."""
    return pa.table(
        {
            "zone_id": [z for z, cs in zones.items() for _ in cs],
            "community_code": [c for cs in zones.values() for c in cs],
        }
    )


def _digest(applications: pa.ChunkedArray) -> str:
    """A digest of the applications asked about, so the audit record names them."""
    h = hashlib.sha256()
    for chunk in applications.chunks:
        h.update(b"\n".join(v.encode() for v in chunk.to_pylist()) + b"\n")
    return h.hexdigest()[:32]


def verify(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    facts: Sequence[Facts],
    zones: Mapping[str, Sequence[str]],
    criteria: Sequence[str],
    terms: Terms,
    season: str,
    durable: bool = True,
    by_key: bool | None = None,
) -> dict[str, BoolArray]:
    """Answer each criterion for each application (yes/no arrays, in the order of `facts`)."""
    return verify_table(
        engine=engine,
        data_dir=data_dir,
        principal=principal,
        facts=facts_table(facts),
        zones=zones_table(zones),
        criteria=criteria,
        terms=terms,
        season=season,
        durable=durable,
        by_key=by_key,
    )


def _sql_for(engine: Engine, data_dir: Path, question: str) -> str:
    """The question's set-wise SQL over the current snapshots of its tables."""
    sql = _SETWISE[question]
    for dataset in QUESTIONS[question].tables:
        relation, _owner = sources.snapshot(engine=engine, data_dir=data_dir, dataset=dataset)
        sql = sql.replace(dataset.replace("/", ".") + " ", f'"{relation}" ')
    return sql


def _as_date(value: Any) -> date | None:
    """A value as DuckDB's cast to date reads it (dates, timestamps, ISO text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        return date.fromisoformat(value[:10])
    return None


def _answer_by_key(
    *,
    engine: Engine,
    data_dir: Path,
    facts: pa.Table,
    zones: pa.Table,
    names: Sequence[str],
    terms: Terms,
) -> dict[str, BoolArray]:
    """Answer the questions for a few applications by key lookups in the snapshots.

    Each condition is the set-wise statement's of the same name (NULL never matches).
    """
    rows = facts.select(list(FACT_COLUMNS)).to_pylist()
    wanted = {r["zone_id"] for r in rows}
    communities: dict[str, set[str]] = {}
    for zone_id, community in zip(
        zones.column("zone_id").to_pylist(), zones.column("community_code").to_pylist(), strict=True
    ):
        if zone_id in wanted:
            communities.setdefault(zone_id, set()).add(community)

    seen: dict[str, sources.Snapshot] = {}

    def snap(dataset: str) -> sources.Snapshot:
        # one snapshot per table for the whole call, as the set-wise statement reads
        found = seen.get(dataset)
        if found is None:
            found = seen[dataset] = sources.current(
                engine=engine, data_dir=data_dir, dataset=dataset
            )
        return found

    def hukou_at_address(f: dict[str, Any]) -> bool:
        return f["address_id"] is not None and any(
            r["address_id"] == f["address_id"]
            and r["hukou_county"] is not None
            and r["hukou_county"] == r["residence_county"]
            for r in snap("public_security/residents").lookup("id_number", f["child_id"])
        )

    def hukou_in_county(f: dict[str, Any]) -> bool:
        return f["county"] is not None and any(
            r["hukou_county"] == f["county"]
            for r in snap("public_security/residents").lookup("id_number", f["child_id"])
        )

    def owns_property(f: dict[str, Any]) -> bool:
        zone = communities.get(f["zone_id"], set())
        addresses = snap("public_security/addresses")
        for p in snap("natural_resources/property_registry").lookup(
            "owner_id_number", f["parent_id"]
        ):
            if p["usage"] in ("住宅", "商住") and p["address_id"] is not None:
                if any(
                    a["community_code"] in zone
                    for a in addresses.lookup("address_id", p["address_id"])
                ):
                    return True
        return False

    def insurance(f: dict[str, Any]) -> bool:
        return any(
            s["months_contributed"] is not None
            and s["months_contributed"] >= terms.insurance_months
            for s in snap("human_resources/social_insurance").lookup("id_number", f["parent_id"])
        )

    def permit(f: dict[str, Any]) -> bool:
        return any(
            (until := _as_date(p["valid_until"])) is not None and until >= terms.on_date
            for p in snap("public_security/residence_permits").lookup("id_number", f["parent_id"])
        )

    asks = {
        "hukou_at_address": hukou_at_address,
        "hukou_in_county": hukou_in_county,
        "owns_property_in_communities": owns_property,
        "social_insurance_months": insurance,
        "residence_permit_valid": permit,
    }
    return {q: np.array([asks[q](f) for f in rows], dtype=np.bool_) for q in names}


def _answer_setwise(
    *,
    engine: Engine,
    data_dir: Path,
    facts: pa.Table,
    zones: pa.Table,
    names: Sequence[str],
    terms: Terms,
) -> dict[str, BoolArray]:
    """Answer the questions for a table of applications in one DuckDB statement."""
    n = facts.num_rows
    f = facts.select(list(FACT_COLUMNS)).append_column("i", pa.array(np.arange(n, dtype=np.int64)))
    sqls = {q: _sql_for(engine, data_dir, q) for q in names}
    answers: dict[str, BoolArray] = {}
    con = sources.cursor()
    try:
        con.register("f", f)
        con.register("zc", zones)
        # one statement for every question: one execution instead of one per question
        union = " union all ".join(
            f"select {k} as q, i from ({sqls[q]})" for k, q in enumerate(names)
        )
        params: dict[str, Any] = {}
        if "$months" in union:
            params["months"] = terms.insurance_months
        if "$on_date" in union:
            params["on_date"] = terms.on_date
        found = con.execute(union, params).fetchnumpy()
        which = np.asarray(found["q"], dtype=np.int64)
        rows = np.asarray(found["i"], dtype=np.int64)
        for k, q in enumerate(names):
            mask = np.zeros(n, dtype=np.bool_)
            mask[rows[which == k]] = True
            answers[q] = mask
    finally:
        con.close()
    return answers


def _evidence(
    *,
    principal: Principal,
    facts: pa.Table,
    names: Sequence[str],
    answers: dict[str, BoolArray],
    grants: dict[str, HeldGrant],
    season: str,
) -> Iterator[dict[str, Any]]:
    """The call's audit records: one per question asked, then one per application."""
    n = facts.num_rows
    moment = audit.timestamp()  # one call, one moment for all its records
    applications = facts["application"]
    for q in names:
        mask = answers[q]
        detail: dict[str, Any] = {"question": q, "season": season, "asked": n}
        if n == 1:
            detail.update(application=str(applications[0]), answer=bool(mask[0]))
        else:
            detail.update(yes=int(mask.sum()), applications_sha256=_digest(applications))
        grant = grants[q]
        yield audit.entry(
            principal=principal,
            action="verify",
            resource=QUESTIONS[q].dataset,
            result="allowed",
            grant_id=grant.id,
            purpose=grant.purpose,
            rows=0,
            detail=detail,
            at=moment,
        )
    held = {q: grants[q].id for q in names}
    purposes = {grants[q].purpose for q in names}
    purpose = purposes.pop() if len(purposes) == 1 else None
    columns = [answers[q].tolist() for q in names]
    counties = facts["county"].to_pylist()
    for i, application in enumerate(applications.to_pylist()):
        yield audit.entry(
            principal=principal,
            action="verify",
            resource=f"enrollment/{season}",
            result="allowed",
            purpose=purpose,
            rows=0,
            detail={
                "application": application,
                "season": season,
                "county": counties[i],
                "answers": {q: column[i] for q, column in zip(names, columns, strict=True)},
                "grants": held,
            },
            at=moment,
        )


def verify_table(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    facts: pa.Table,
    zones: pa.Table,
    criteria: Sequence[str],
    terms: Terms,
    season: str,
    durable: bool = True,
    by_key: bool | None = None,
) -> dict[str, BoolArray]:
    """Answer each criterion for a table of applications (FACT_COLUMNS and lives_in_zone).

    Refuses (403, with a refused audit record) when a grant is missing; durable=False leaves
    the records' fsync to the caller's next durable record. `by_key` forces the lookup path
    (True) or the set-wise one (False); by default a call of up to SMALL_BATCH looks up.
    """
    names = questions_for(criteria)
    grants = _grants(engine=engine, data_dir=data_dir, principal=principal, names=names)
    n = facts.num_rows
    answers: dict[str, BoolArray] = {q: np.zeros(n, dtype=np.bool_) for q in names}
    if n and names:
        small = n <= SMALL_BATCH if by_key is None else by_key
        answer = _answer_by_key if small else _answer_setwise
        answers = answer(
            engine=engine, data_dir=data_dir, facts=facts, zones=zones, names=names, terms=terms
        )
    if names:
        audit.append_many(
            data_dir=data_dir,
            records=_evidence(
                principal=principal,
                facts=facts,
                names=names,
                answers=answers,
                grants=grants,
                season=season,
            ),
            durable=durable,
        )
    out: dict[str, BoolArray] = {}
    lives = (
        facts["lives_in_zone"].to_numpy(zero_copy_only=False).astype(np.bool_)
        if "lives_in_zone" in facts.column_names
        else np.zeros(n, dtype=np.bool_)
    )
    for c in criteria:
        question = CRITERIA[c].question
        if question is None:
            out[c] = lives
        else:
            out[c] = answers.get(question, np.zeros(n, dtype=np.bool_))
    return out


@dataclass(frozen=True)
class Outcome:
    """A child's priority class (index in the county's order, or None) and why."""

    priority_class: int | None
    class_name: str | None
    reason: str
    failed: list[str]  # criteria answered no of the best class the child came closest to


def classify(checks: dict[str, bool], classes: Sequence[tuple[str, Sequence[str]]]) -> Outcome:
    """Place a child in the first class whose criteria all hold, with the reason in words."""
    for index, (name, needed) in enumerate(classes):
        if all(checks.get(c, False) for c in needed):
            because = "；".join(CRITERIA[c].passed_zh for c in needed) or "无附加条件"
            return Outcome(index, name, f"{name}：{because}", [])
    # none holds: report the class missing the fewest criteria, so the parent knows what failed
    best = min(classes, key=lambda nc: sum(not checks.get(c, False) for c in nc[1]), default=None)
    failed = [c for c in (best[1] if best else []) if not checks.get(c, False)]
    words = "；".join(
        f"{CRITERIA[c].failed_zh}（申诉请提供{CRITERIA[c].appeal_zh}）" for c in failed
    )
    return Outcome(None, None, f"未满足任何类别的条件：{words}" if words else "未满足条件", failed)
