"""
tests/support/redis: a real redis-server for the chat bus tests: it starts
and answers, restart() loses the data (or keeps it when asked), kill() is a
crash, a password is required when set, and one run inside a Lab namespace
is reachable from the root namespace on its lab address.
"""

from __future__ import annotations

import os

import pytest

from tests.support.netns import Lab
from tests.support.redis import RedisServer, ReplyError, command, installed, redis

needs_redis = pytest.mark.skipif(not installed(), reason="redis-server not installed")


def test_it_answers_on_its_socket_its_port_and_through_redis_cli(redis_server: RedisServer) -> None:
    assert redis_server.call("PING") == "PONG"
    assert redis_server.call_tcp("PING") == "PONG"
    assert redis_server.cli("PING") == "PONG"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    assert redis_server.call("SET", "k", "v") == "OK"
    assert redis_server.cli("GET", "k") == "v"
    assert redis_server.call("CONFIG", "GET", "save") == [b"save", b""]
    assert redis_server.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]


def test_restart_is_a_new_empty_process_on_the_same_addresses(redis_server: RedisServer) -> None:
    redis_server.call("XADD", "log", "*", "k", "v")
    pid, port = redis_server.pid, redis_server.port
    redis_server.restart()
    assert redis_server.pid != pid and redis_server.port == port
    assert redis_server.call("EXISTS", "log") == 0
    assert redis_server.call_tcp("PING") == "PONG"


def test_restart_can_keep_the_data(redis_server: RedisServer) -> None:
    redis_server.call("SET", "k", "v")
    redis_server.restart(keep_data=True)
    assert redis_server.call("GET", "k") == b"v"


def test_kill_is_a_crash_and_a_restart_follows(redis_server: RedisServer) -> None:
    pid = redis_server.pid
    assert pid is not None
    redis_server.kill()
    assert not redis_server.running() and not redis_server.ping()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        redis_server.call_tcp("PING", timeout=2)
    redis_server.restart()
    assert redis_server.call_tcp("PING") == "PONG"


def test_stats_are_numbers_that_grow(redis_server: RedisServer) -> None:
    before = redis_server.stats()
    assert set(before) == {"used_memory", "total_commands_processed", "total_net_input_bytes"}
    for i in range(10):
        redis_server.call("SET", f"k{i}", "x" * 100)
    after = redis_server.stats()
    assert after["total_commands_processed"] >= before["total_commands_processed"] + 10
    assert after["total_net_input_bytes"] > before["total_net_input_bytes"] + 1000
    assert redis_server.info("server")["redis_mode"] == "standalone"


@needs_redis
def test_unix_only_and_a_password() -> None:
    with redis(tcp=False, password="s3 cret") as server:
        assert server.port is None and server.url == f"unix://{server.unix_path}"
        assert server.call("PING") == "PONG"
        assert server.cli("PING") == "PONG"
        with pytest.raises(ReplyError, match="NOAUTH"):
            command(server.unix_path, "PING")


@needs_redis
def test_a_server_in_a_lab_namespace_is_reached_on_its_lab_address() -> None:
    with Lab(2) as lab, redis(prefix=lab.exec_prefix(1), bind=lab.address(1)) as server:
        assert server.url == f"redis://{lab.address(1)}:{server.port}"
        assert server.call_tcp("PING") == "PONG"
        done = lab.run(0, "redis-cli", "-h", lab.address(1), "-p", str(server.port), "PING")
        assert done.stdout.strip() == "PONG"
        lab.link_down(1)
        with pytest.raises(OSError):
            server.call_tcp("PING", timeout=1)
        lab.link_up(1)
        assert server.call_tcp("PING") == "PONG"
