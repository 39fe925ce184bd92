"""A clear error when the service is imported without its extra.

``pip install quart-api`` installs the guards and their own dependencies only; the
users service (``quart_api.app``, the models, the database) needs
``pip install "quart-api[service]"``. Its modules import their third-party
dependencies inside `service_imports`, which turns "No module named 'sqlalchemy'"
into an error that names the extra to install.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["INSTALL_SERVICE", "ServiceExtraMissing", "service_imports"]

INSTALL_SERVICE = 'pip install "quart-api[service]"'


class ServiceExtraMissing(ModuleNotFoundError):
    """A dependency of the service's extra is not installed."""


@contextlib.contextmanager
def service_imports(what: str) -> Iterator[None]:
    """Re-raise a missing third-party module as `ServiceExtraMissing`, naming the extra.

    Args:
        what: the part of quart-api being imported, for the message.
    """
    try:
        yield
    except ModuleNotFoundError as error:
        if error.name is None or error.name.partition(".")[0] == "quart_api":
            raise  # our own module is missing: a broken install, not a missing extra
        raise ServiceExtraMissing(
            f"{what} needs {error.name!r}, which the service extra installs: "
            f"{INSTALL_SERVICE}. The guards (quart_api.guards) need no extra.",
            name=error.name,
        ) from error
