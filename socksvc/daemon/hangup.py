"""
SIGHUP from the first moment the daemon's code runs: held, then one reload.

SIGHUP's default action ends the process, and systemd, logrotate or an admin
may send one at any time after exec. L{hold} (called by C{makeService}
before it reads the config) catches it and only remembers it; the daemon
takes the signal over when it starts (L{take} tells it whether one came
meanwhile), and a SIGHUP held during start-up becomes one reload as soon as
every listener is bound.
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
