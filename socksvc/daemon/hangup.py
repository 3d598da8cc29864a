"""
Signals that come while the daemon starts: held, then acted on.

SIGHUP's default action ends the process, and systemd, logrotate or an admin
may send one at any time after exec. L{hold} (called at the import of
C{socksvc.tap}, the plugin's first line) catches it and only remembers it;
the daemon takes the signal over when it starts (L{take} tells it whether
one came meanwhile), and a SIGHUP held during start-up becomes one reload as
soon as every listener is bound.

SIGTERM (and SIGINT) before the reactor runs would end the process at once:
no STOPPING=1, no pidfile removed, nothing closed in order. L{hold_stop}
(from C{makeService}, for the real daemon only) holds them until the reactor
installs its own handlers; L{take_stop} then says whether one came, and the
daemon stops the usual way.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_held = False


def _remember(signum: int, frame: Any) -> None:
    global _held
    _held = True


def hold() -> bool:
    """
    Catch SIGHUP now and remember it. Only the main thread can set a
    handler: elsewhere (a test in a thread) nothing happens. True if held.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        signal.signal(signal.SIGHUP, _remember)
    except ValueError:
        return False
    return True


def take() -> bool:
    """Did a SIGHUP come while held? (Forgets it: the caller reloads once.)"""
    global _held
    came, _held = _held, False
    return came


_stop_held = False


def _remember_stop(signum: int, frame: Any) -> None:
    global _stop_held
    _stop_held = True


def hold_stop() -> bool:
    """Catch SIGTERM and SIGINT now and remember them, until the reactor installs its own handlers."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _remember_stop)
    except ValueError:
        return False
    return True


def take_stop() -> bool:
    """
    Did a SIGTERM or SIGINT come while held? Called once the reactor runs;
    if the reactor did not take the signals over (it was told not to), they
    get their default actions back, so the process can still be stopped.
    """
    global _stop_held
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is _remember_stop:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)
    came, _stop_held = _stop_held, False
    return came
