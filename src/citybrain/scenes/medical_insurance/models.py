"""Settlement records, findings and verdicts of the medical-insurance scene: the shared contract.

Contract (the analytics and the settlement service both rely on it):

- A `Settlement` is one settlement of care at one designated institution: an outpatient
  visit, an inpatient stay (settled at discharge) or a pharmacy purchase. `start`/`end` are
  the period of care (an outpatient visit lasts `OUTPATIENT_MINUTES`), `settled_at` is when it
  was paid. Times are naive local time (Asia/Shanghai); dates of items are local dates.
  `items` are its charged lines; `total` is the sum of their amounts.
- The same fields, one row per settlement, are the departmental table
  `medical_security/settlements` (items flattened into `medical_security/settlement_items`
  with the settlement's id and the line number), which the batch sweep reads.
- `check_settlement(rulebase, settlement, history)` in `rules.py` judges one settlement
  before payment against the person's earlier settlements (`history`, any order, those
  within the rule base's `history_days` of `settled_at`; more are ignored). It returns a
  `Verdict`: `block` if any finding's grade is block, `warn` if any is warn, else `pass`.
- A `Finding` names the rule (id and version), its grade, the settlement, the person, the
  institution and, for item rules, the item code (empty otherwise). A settlement has at most
  one finding per (rule, item code). The batch sweep gives the same findings for every
  settlement whose earlier settlements it sees: rules about two settlements (duplicates,
  repeats, readmissions, time conflicts, voucher lending, cash-out) always flag the later one
  (by `settled_at`, then `settlement_id`), which is the one the check before payment sees.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

OUTPATIENT_MINUTES = 30


class SettlementKind(StrEnum):
    """What was settled."""

    outpatient = "outpatient"
    inpatient = "inpatient"
    pharmacy = "pharmacy"


class InstitutionKind(StrEnum):
    """The kind of a designated institution."""

    hospital = "hospital"
    clinic = "clinic"
    pharmacy = "pharmacy"


class ItemKind(StrEnum):
    """What an item is in the catalogues."""

    drug = "drug"
    service = "service"
    consumable = "consumable"


class Outcome(StrEnum):
    """The answer before payment."""

    pass_ = "pass"
    warn = "warn"
    block = "block"


class Grade(StrEnum):
    """What a rule's finding does before payment."""

    warn = "warn"
    block = "block"


class Item(BaseModel):
    """One charged line of a settlement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1, max_length=32)
    kind: ItemKind
    quantity: float = Field(gt=0, le=100_000)
    unit_price: float = Field(ge=0, le=10_000_000)
    amount: float = Field(ge=0, le=100_000_000)
    service_date: date


class Settlement(BaseModel):
    """One settlement of care at one institution, with its charged items."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    settlement_id: str = Field(min_length=1, max_length=64)
    person_id: str = Field(min_length=1, max_length=64)
    institution_id: str = Field(min_length=1, max_length=64)
    institution_kind: InstitutionKind
    institution_grade: str = Field(max_length=8)
    city_code: str = Field(pattern=r"^37\d{2}00$")
    county_code: str = Field(pattern=r"^37\d{4}$")
    kind: SettlementKind
    diagnosis: str = Field(max_length=16)
    sex: str = Field(pattern=r"^(男|女)$")
    age: int = Field(ge=0, le=130)
    start: datetime
    end: datetime
    settled_at: datetime
    total: float = Field(ge=0)
    fund_paid: float = Field(ge=0)
    items: tuple[Item, ...] = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> Settlement:
        if self.end < self.start:
            raise ValueError("end is before start")
        if self.settled_at < self.start:
            raise ValueError("settled_at is before start")
        if self.fund_paid > self.total + 0.01:
            raise ValueError("fund_paid is more than total")
        return self


class Finding(BaseModel):
    """One rule's finding on one settlement (and item)."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    rule_version: int
    grade: Grade
    settlement_id: str
    person_id: str
    institution_id: str
    item_code: str = ""
    reason: str

    def key(self) -> tuple[str, str, str]:
        """Identity of a finding: rule, settlement and item."""
        return (self.rule_id, self.settlement_id, self.item_code)


class Verdict(BaseModel):
    """The answer of the check before payment."""

    outcome: Outcome
    findings: list[Finding]
