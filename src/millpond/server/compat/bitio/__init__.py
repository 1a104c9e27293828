"""bit.io's ``/v2beta`` developer API for the unmodified ``bitdotio`` 2.2.1 package (its
SDK and its ``bit`` CLI). The package hard-codes ``https://api.bit.io`` and
``db.bit.io:5432``: ``millpond compat bitio`` prints how to point both at millpond
(``docs/compat.md``)."""

from .router import router

__all__ = ["router"]
