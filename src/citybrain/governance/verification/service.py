"""Verification without disclosure: yes/no answers under a verification grant, no records."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import Engine

from citybrain.core.errors import BadInput, Forbidden, NotFound
from citybrain.governance.audit import service as audit
from citybrain.governance.principal import Principal, Role
from citybrain.governance.sharing import service as sharing
from citybrain.governance.verification.questions import QUESTIONS, Question
from citybrain.hub.tables import service as tables

MAX_PARAM_LENGTH = 4000


class QuestionRead(BaseModel):
    """A question the service answers."""

    name: str
    dataset: str
    params: list[str]
    description: str


class Answer(BaseModel):
    """The answer to one question: yes or no, and the grant it was given under."""

    question: str
    answer: bool
    grant: str


def list_questions() -> list[QuestionRead]:
    """Return every question, with its dataset and parameters."""
    return [
        QuestionRead(
            name=q.name, dataset=q.dataset, params=list(q.params), description=q.description
        )
        for q in QUESTIONS.values()
    ]


def _question(name: str) -> Question:
    question = QUESTIONS.get(name)
    if question is None:
        raise NotFound(f"no verification question {name!r}; see /api/verification/questions")
    return question


def answer(
    *,
    engine: Engine,
    data_dir: Path,
    principal: Principal,
    question: str,
    params: dict[str, str],
    grant_id: str | None = None,
) -> Answer:
    """Answer one yes/no question under the caller's verification grant; refuse without one."""
    q = _question(question)
    missing = [p for p in q.params if not str(params.get(p, "")).strip()]
    extra = sorted(set(params) - set(q.params))
    if missing or extra:
        raise BadInput(
            f"question {q.name} takes {', '.join(q.params)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else "")
        )
    if any(len(str(v)) > MAX_PARAM_LENGTH for v in params.values()):
        raise BadInput(f"a parameter is longer than {MAX_PARAM_LENGTH} characters")

    def refuse(reason: str) -> Forbidden:
        audit.append(
            data_dir=data_dir,
            principal=principal,
            action="verify",
            resource=q.dataset,
            result="refused",
            detail={"question": q.name, "reason": reason},
        )
        return Forbidden(reason)

    if principal.role in (Role.citizen, Role.auditor):
        raise refuse("verification questions are asked by departments under a grant")
    grant = sharing.active_grant(
        engine=engine,
        dataset_id=q.dataset,
        org=principal.org,
        kind="verification",
        grant_id=grant_id,
    )
    if grant is None:
        raise refuse(
            f"there is no active verification grant of {principal.org} on {q.dataset}; "
            "request one at /api/sharing/requests with kind verification"
        )
    allowed = list(getattr(grant, "questions", None) or [])
    if allowed and q.name not in allowed:
        raise refuse(f"grant {grant.id} does not cover the question {q.name}")
    rows = tables.evaluate(
        engine=engine,
        data_dir=data_dir,
        tables=list(q.tables),
        sql=q.sql,
        params=[str(params[p]).strip() for p in q.params],
    )
    result = bool(rows and rows[0][0])
    audit.append(
        data_dir=data_dir,
        principal=principal,
        action="verify",
        resource=q.dataset,
        result="allowed",
        grant_id=str(grant.id),
        purpose=str(grant.purpose),
        rows=0,
        detail={"question": q.name, "answer": result},
    )
    return Answer(question=q.name, answer=result, grant=str(grant.id))
