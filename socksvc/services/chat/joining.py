"""
A chat state joins its cluster: the node's id, the Redis link, the node
and its replica, started on the reactor's next turn (a rehearsal's state,
for --check or a reload, is shut down before that and never connects).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from typing import Any

from socksvc.services.chat.cluster import Cluster
from socksvc.services.chat.redisbus import RedisBus
from socksvc.services.chat.replica import Replica


def node_id() -> str:
    """This process's id in the cluster: host, pid and a random part (a restarted process is a new node)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


def join_cluster(state: Any, settings: Any, reactor: Any) -> Cluster:
    """Make C{state} a node of the cluster C{settings.bus} names; it connects on the next turn."""
    node = node_id()
    password = settings.bus_password_file.password if settings.bus_password_file is not None else None
    ca = settings.bus_ca_file.data if settings.bus_ca_file is not None else None
    link = RedisBus(
        reactor, settings.bus, password, ca, settings.cluster, node, settings.bus_retention, settings.node_timeout
    )
    cluster = Cluster(state, link, node)
    replica = Replica(cluster)
    state.cluster = cluster
    replica.start()
    return cluster
