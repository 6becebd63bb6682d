"""Typed errors shared by every domain; the API maps them to problem details in one place."""

from __future__ import annotations


class CityBrainError(Exception):
    """Base of every error CityBrain reports to a user."""

    status = 400
    kind = "BadRequestData"

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class BadInput(CityBrainError):
    """The request or command arguments are malformed or out of range."""

    status = 400
    kind = "BadRequestData"


class InvalidRequest(CityBrainError):
    """The request is well formed but not acceptable."""

    status = 400
    kind = "InvalidRequest"


class NotFound(CityBrainError):
    """The named resource does not exist."""

    status = 404
    kind = "ResourceNotFound"


class Conflict(CityBrainError):
    """The resource exists already or is in a state that forbids the change."""

    status = 409
    kind = "AlreadyExists"


class Unprocessable(CityBrainError):
    """The input parses but breaks a rule of the domain."""

    status = 422
    kind = "UnprocessableEntity"


class TooLarge(CityBrainError):
    """The request body is larger than the limit."""

    status = 413
    kind = "RequestEntityTooLarge"


class Unauthorized(CityBrainError):
    """The request carries no valid credentials."""

    status = 401
    kind = "Unauthorized"


class Forbidden(CityBrainError):
    """The caller is known but not allowed to do this."""

    status = 403
    kind = "Forbidden"


class TooManyRequests(CityBrainError):
    """The caller has tried too often; it may try again after a while."""

    status = 429
    kind = "TooManyRequests"


class ServiceUnavailable(CityBrainError):
    """A service the node depends on cannot be reached."""

    status = 503
    kind = "ServiceUnavailable"
