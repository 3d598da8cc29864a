"""
twistd / twist plugin glue: command-line options and makeService.

C{twistd -n --pidfile= socksvc [--config FILE] [--check]}. Without --config
the embedded default config runs every service on 127.0.0.1. Config errors
stop here with one line and exit status 1; --check stops here either way,
having bound nothing, after everything a start would check (files read,
every service made on a scratch state), so its OK means the start cannot
fail for config reasons.
"""

from __future__ import annotations

# ruff: noqa: E402
# SIGHUP is held from the first line of the daemon's own code: the imports
# below take most of the daemon's first second, and SIGHUP's default action
# would end the process (see socksvc.daemon.hangup).
from socksvc.daemon import hangup

hangup.hold()

import select
import sys
from typing import Any

from twisted.python import usage

from socksvc.config.loader import DEFAULT_CONFIG, DEFAULT_SOURCE, Config, ConfigError, config_dir, read_text
from socksvc.config.schema import worker_count
from socksvc.daemon import reactor as socksvc_reactor
from socksvc.daemon.errors import StartupError
from socksvc.daemon.handout import cpus
from socksvc.daemon.instance import rehearsal_failure, rehearse
from socksvc.daemon.service import DaemonService
from socksvc.daemon.supervisor import SupervisorService
from socksvc.services.catalogue import loads, types


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


def will_daemonize(options: Options | dict[str, Any]) -> bool:
    """Is twistd about to fork into the background (its own options, C{options.parent}, without -n)?"""
    parent = getattr(options, "parent", None)
    return isinstance(parent, dict) and "nodaemon" in parent and not parent["nodaemon"]


def rehearse_config(config: Config) -> None:
    """Every service made on a scratch state (L{rehearse}); L{StartupError} with one line if one cannot be."""
    for svc in config.services:
        try:
            rehearse(types()[svc.type], svc)
        except Exception as e:
            raise StartupError(f"{config.source}: {rehearsal_failure(svc.name, e)}") from None


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> DaemonService:
    """
    Load the config and build the service tree: the daemon itself, or with
    C{[daemon] workers} above 1 the supervisor of that many worker processes
    (docs/workers.md). Nothing is bound yet, unless twistd is about to
    daemonize: then every listener binds now, so that a failure is reported
    by the launching process (L{DaemonService.bind_now}).
    """
    real = reactor is None
    if reactor is None:
        choose_reactor()
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    path = options.get("config")
    try:
        text = read_text(path) if path is not None else DEFAULT_CONFIG
        config = loads(text, path or DEFAULT_SOURCE, config_dir(path) if path is not None else None)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    rehearse_config(config)
    if options.get("check"):
        listeners = sum(len(s.listens()) for s in config.services)
        services = len(config.services)
        print(
            f"socksvc: {config.source}: OK, {services} service{'s' * (services != 1)}, "
            f"{listeners} listener{'s' * (listeners != 1)}"
        )
        sys.stdout.flush()
        raise SystemExit(0)
    if real:
        # Until the reactor runs, SIGTERM would end the process without its
        # usual stop (STOPPING=1, pidfile, sockets): held, then acted on.
        hangup.hold_stop()
    workers = worker_count(config.daemon.workers, cpus())
    service = (
        SupervisorService(config, reactor, text=text, workers=workers)
        if workers > 1
        else DaemonService(config, reactor)
    )
    # twistd's own parsed options (usage.Options sets .parent on a subcommand's
    # options): where twistd sends its log decides socksvc's observer choice.
    service.twistd_options = getattr(options, "parent", None)
    if will_daemonize(options):
        service.bind_now()
    return service
