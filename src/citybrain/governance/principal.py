"""Who is asking: the principal every request, command and scene acts as."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """Roles a principal may hold on a node."""

    bureau_admin = "bureau_admin"  # the Big Data Bureau: runs the node, approves important data
    steward = "steward"  # a department's data steward: publishes, requests, approves its own
    operator = "operator"  # operations-centre staff and department case handlers
    auditor = "auditor"  # reads the audit log, nothing else
    citizen = "citizen"  # a resident signed in with phone and one-time code
    grid_worker = "grid_worker"  # a community grid worker signed in with phone and code
    service = "service"  # a system of a department (connectors, scripts), client credentials
    node = "node"  # another CityBrain node (parent or child) calling this one


GOVERNMENT_ROLES = frozenset(
    {Role.bureau_admin, Role.steward, Role.operator, Role.service, Role.node}
)
BUREAU_ORG = "bureau"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: subject, organisation, role, and the node that vouches."""

    subject: str  # user id, service-account id, "citizen:<phone>", "node:<code>", "script"
    org: str  # organisation id: a department of this node ("education") or "node-<code>"
    role: Role
    issuer: str  # code of the node that issued the credential
    token_id: str | None = None
    phone: str | None = None  # citizens only: the verified phone number
    anonymous: bool = False  # True when CITYBRAIN_ANONYMOUS_ROLE stood in for a token

    @property
    def is_government(self) -> bool:
        """Return True for departments, the bureau, services and nodes (not citizens)."""
        return self.role in GOVERNMENT_ROLES

    def label(self) -> str:
        """Return a log-safe label: the phone of a citizen is never shown in full."""
        subject = self.subject
        if self.phone and self.phone in subject:
            subject = subject.replace(self.phone, self.phone[:3] + "****" + self.phone[-4:])
        return f"{self.org}/{self.role.value}/{subject}"


SYSTEM = Principal(subject="system", org=BUREAU_ORG, role=Role.bureau_admin, issuer="local")
