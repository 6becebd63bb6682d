"""HTTP routes of the verification service: yes/no questions, never records."""

from __future__ import annotations

from fastapi import Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from citybrain.core.routing import APIRouter
from citybrain.governance.identity.deps import current_principal
from citybrain.governance.principal import Principal
from citybrain.governance.verification import service

router = APIRouter(prefix="/api/verification", tags=["verification"])


class Ask(BaseModel):
    """A question's parameters, and optionally the grant to ask under."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, str] = Field(max_length=10)
    grant: str | None = Field(None, max_length=64)


@router.get("/questions")
def questions(principal: Principal = Depends(current_principal)) -> list[service.QuestionRead]:
    """List the questions this node answers."""
    _ = principal
    return service.list_questions()


@router.post("/{question}")
def ask(
    request: Request,
    body: Ask,
    question: str = Path(pattern=r"^[a-z_]{1,64}$"),
    principal: Principal = Depends(current_principal),
) -> service.Answer:
    """Answer one yes/no question under the caller's verification grant."""
    return service.answer(
        engine=request.app.state.engine,
        data_dir=request.app.state.settings.data_dir,
        principal=principal,
        question=question,
        params=body.params,
        grant_id=body.grant,
    )
