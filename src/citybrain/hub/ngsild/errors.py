"""NGSI-LD problem types that CityBrain's general errors do not cover."""

from __future__ import annotations

from citybrain.core.errors import CityBrainError


class LdContextNotAvailable(CityBrainError):
    """A @context referenced by URL could not be fetched (504: the remote end failed us)."""

    status = 504
    kind = "LdContextNotAvailable"


class OperationNotSupported(CityBrainError):
    """The operation is recognised but this broker does not offer it."""

    status = 422
    kind = "OperationNotSupported"


class NonexistentTenant(CityBrainError):
    """A read named a tenant that holds nothing."""

    status = 404
    kind = "NonexistentTenant"


class NotAcceptable(CityBrainError):
    """The Accept header asks for no representation this API can produce."""

    status = 406
    kind = "NotAcceptable"


class LengthRequired(CityBrainError):
    """A body was sent without Content-Length."""

    status = 411
    kind = "LengthRequired"
