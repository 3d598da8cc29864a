"""
The catalogue: every service type socksvc knows, by name.

Adding a service is one module in socksvc/services/ and one line here (see
docs/adding-a-service.md). The config loader is given this catalogue (config
never imports the services), so L{load} and L{loads} are the loader with it.
"""

from __future__ import annotations

from typing import Any

from socksvc.config import loader
from socksvc.config.loader import Config
from socksvc.core.service import ServiceType, catalogue_of
from socksvc.services import chargen, daytime, discard, echo, greeting, reverse
from socksvc.services import time as time_service
from socksvc.services.chat import service as chat
from socksvc.services.mail.pop3 import service as pop3
from socksvc.services.mail.smtp import service as smtp

TYPES: dict[str, ServiceType[Any, Any]] = catalogue_of(
    [
        echo.SERVICE_TYPE,
        greeting.SERVICE_TYPE,
        reverse.SERVICE_TYPE,
        chat.SERVICE_TYPE,
        discard.SERVICE_TYPE,
        daytime.SERVICE_TYPE,
        chargen.SERVICE_TYPE,
        time_service.SERVICE_TYPE,
        smtp.SERVICE_TYPE,
        pop3.SERVICE_TYPE,
    ]
)


def types() -> dict[str, ServiceType[Any, Any]]:
    """Every service type, by name."""
    return TYPES


def load(path: str | None) -> Config:
    """Read and check a config file (None: the embedded default) against this catalogue."""
    return loader.load(path, TYPES)


def loads(text: str, source: str = "<config>", base_dir: str | None = None) -> Config:
    """
    Check config text against this catalogue; C{source} names it in error
    lines; relative paths start at C{base_dir} (None: the working directory).
    """
    return loader.loads(text, source, TYPES, base_dir)
