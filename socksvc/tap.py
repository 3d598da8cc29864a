"""
twistd / twist plugin glue: command-line options and makeService.

C{twistd -n socksvc [--config FILE] [--check]}. Without --config the embedded
default config runs every service on 127.0.0.1. Config errors stop here with
one line and exit status 1; --check stops here either way, having bound
nothing.
"""

from __future__ import annotations

import select
import sys
from typing import Any

from twisted.python import usage

from socksvc.config.loader import ConfigError
from socksvc.daemon import reactor as socksvc_reactor
from socksvc.daemon.errors import StartupError
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import load


class Options(usage.Options):
    synopsis = "[--config FILE] [--check]"
    longdesc = (
        "Serve echo, greeting, reverse, UDP echo and chat from one TOML config. "
        "Without --config, the embedded default serves every service on 127.0.0.1."
    )
    optParameters = [
        ["config", "c", None, "the TOML config file (default: the embedded default)"],
    ]
    optFlags = [
        ["check", None, "check the config and exit 0 (valid) or 1 (invalid); binds nothing"],
    ]


def choose_reactor() -> None:
    """
    Install socksvc's reactor if the command line chose none yet.

    twistd installs a reactor while parsing its options only when given
    C{-r/--reactor}; otherwise the first import of C{twisted.internet.reactor}
    installs the platform default. Where that default would be epoll,
    L{socksvc.daemon.reactor.SocksvcReactor} (the same reactor with a leaner read
    dispatch) goes in its place. C{twist}, tests and C{twistd -r NAME} have
    installed one already and keep it.
    """
    if "twisted.internet.reactor" in sys.modules or not hasattr(select, "epoll"):
        return
    socksvc_reactor.install()


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> DaemonService:
    """Load the config, then build the service tree (nothing is bound yet)."""
    if reactor is None:
        choose_reactor()
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    path = options.get("config")
    try:
        config = load(path)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    if options.get("check"):
        listeners = sum(len(s.listens()) for s in config.services)
        services = len(config.services)
        print(
            f"socksvc: {config.source}: OK, {services} service{'s' * (services != 1)}, "
            f"{listeners} listener{'s' * (listeners != 1)}"
        )
        sys.stdout.flush()
        raise SystemExit(0)
    service = DaemonService(config, reactor)
    # twistd's own parsed options (usage.Options sets .parent on a subcommand's
    # options): where twistd sends its log decides socksvc's observer choice.
    service.twistd_options = getattr(options, "parent", None)
    return service
