"""Eligibility: the verification service's yes/no questions, asked for many applications at once.

Each criterion of a priority class is one question of `governance/verification/questions.py`
(same dataset, same meaning). They are asked under the Education Bureau's verification
grants, checked exactly as the verification service checks them (kind `verification`, the
question covered, not revoked or expired), and only yes/no leaves the departmental tables.
The answers are computed set-wise in DuckDB over the tables' current snapshots, so one
submission or 2.6 million cost one query per question; each question asked leaves an audit
record (`verify`, the dataset, the grant, its purpose, how many were asked and answered yes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import Engine

from citybrain.core.errors import Forbidden, Unprocessable
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal
from citybrain.governance.sharing import service as sharing
from citybrain.governance.sharing.models import GrantRead
from citybrain.governance.verification.questions import QUESTIONS
from citybrain.scenes.enrollment import sources

EDUCATION = "education"
BoolArray = npt.NDArray[np.bool_]


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


def _grant(*, engine: Engine, data_dir: Path, principal: Principal, name: str) -> GrantRead:
    """Return the grant a question is asked under, or refuse as the verification service does."""
    question = QUESTIONS[name]
    grant = sharing.active_grant(
        engine=engine, dataset_id=question.dataset, org=principal.org, kind="verification"
    )
    reason = None
    if grant is None:
        reason = (
            f"there is no active verification grant of {principal.org} on {question.dataset}; "
            "request one at /api/sharing/requests with kind verification"
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
    return grant


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
    )


def _sql_for(engine: Engine, data_dir: Path, question: str) -> str:
    """The question's set-wise SQL over the current snapshots of its tables."""
    sql = _SETWISE[question]
    for dataset in QUESTIONS[question].tables:
        relation, _owner = sources.snapshot(engine=engine, data_dir=data_dir, dataset=dataset)
        sql = sql.replace(dataset.replace("/", ".") + " ", f'"{relation}" ')
    return sql


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
) -> dict[str, BoolArray]:
    """Answer each criterion for a table of applications (FACT_COLUMNS and lives_in_zone).

    Refuses (403, with a refused audit record) when a grant is missing; durable=False leaves
    the records' fsync to the caller's next durable record.
    """
    names = questions_for(criteria)
    grants = {
        q: _grant(engine=engine, data_dir=data_dir, principal=principal, name=q) for q in names
    }
    n = facts.num_rows
    answers: dict[str, BoolArray] = {}
    if n:
        f = facts.select(list(FACT_COLUMNS)).append_column(
            "i", pa.array(np.arange(n, dtype=np.int64))
        )
        sqls = {q: _sql_for(engine, data_dir, q) for q in names}
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
    for k, q in enumerate(names):
        mask = answers.get(q, np.zeros(0, dtype=np.bool_))
        detail: dict[str, Any] = {"question": q, "season": season, "asked": n}
        if n == 1:
            detail.update(application=str(facts["application"][0]), answer=bool(mask[0]))
        else:
            detail.update(yes=int(mask.sum()), applications_sha256=_digest(facts["application"]))
        grant = grants[q]
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="verify",
            resource=QUESTIONS[q].dataset,
            result="allowed",
            grant_id=str(grant.id),
            purpose=str(grant.purpose),
            rows=0,
            detail=detail,
            durable=durable and k == len(names) - 1,
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
