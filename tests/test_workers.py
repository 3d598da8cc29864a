"""
Worker processes: the supervisor's decisions and the pieces it is built of,
without processes (tests/test_workers_loopback.py runs the real thing).

- the config key and what "auto" means;
- the shared table: two workers' views of one table, caps on the sum, the
  slack, a dead worker's slot cleared, the shared max_rate bucket;
- the policy and the datagram guard against it;
- the accept balancer's decisions;
- restart backoff, resize, which worker is handed which socket;
- the log relay, the figures' sum, the control channel's paging.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent

from socksvc.config.loader import ConfigError
from socksvc.config.schema import AUTO_WORKERS, MAX_WORKERS, worker_count
from socksvc.core import policy as policy_module
from socksvc.daemon import balance
from socksvc.daemon.control import PAGE, listener_name, page, table_name
from socksvc.daemon.figures import merge_services
from socksvc.daemon.handout import config_memfd, handout, resize, served_by
from socksvc.daemon.logformat import FastTextObserver, JsonObserver
from socksvc.daemon.logrelay import encode, rebuild
from socksvc.daemon.shared import SOURCE_BUCKETS, Table, WorkerCounts
from socksvc.daemon.worker import read_text
from socksvc.daemon.workerproc import Backoff, describe_exit, worker_env
from socksvc.services.catalogue import loads, types
from tests.support import context, peer
from tests.support.systemd import PortsReactor

# -- [daemon] workers ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "stored"), [(1, 1), (2, 2), (256, 256), ('"auto"', AUTO_WORKERS)])
def test_workers_key(value: Any, stored: int) -> None:
    cfg = loads(f'[daemon]\nworkers = {value}\n[services.echo]\nlisten = ["tcp:0"]\n')
    assert cfg.daemon.workers == stored


@pytest.mark.parametrize(
    ("value", "why"),
    [(0, "must be 1 to 256"), (257, "must be 1 to 256"), ('"many"', "got a string"), ("true", "got a boolean")],
)
def test_bad_workers_key_is_one_line(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(f'[daemon]\nworkers = {value}\n[services.echo]\nlisten = ["tcp:0"]\n')
    assert "daemon.workers" in str(e.value) and why in str(e.value) and "\n" not in str(e.value)


def test_default_is_one_process() -> None:
    assert loads('[services.echo]\nlisten = ["tcp:0"]\n').daemon.workers == 1


def test_auto_counts_cpus() -> None:
    assert worker_count(AUTO_WORKERS, 16) == 16
    assert worker_count(AUTO_WORKERS, 1) == 1
    assert worker_count(AUTO_WORKERS, 1000) == MAX_WORKERS
    assert worker_count(3, 16) == 3


# -- the shared table ---------------------------------------------------------------


@pytest.fixture
def table() -> Any:
    t = Table.create("test")
    t.columns = 2
    yield t
    t.close()


def test_two_workers_see_one_sum(table: Table) -> None:
    a, b = WorkerCounts(table, 0), WorkerCounts(table, 1)
    a.opened("10.0.0.1")
    b.opened("10.0.0.1")
    b.opened("10.0.0.2")
    assert a.connections() == b.connections() == 3
    assert a.from_source("10.0.0.1") >= 2  # at least: another source may share the bucket
    assert table.per_worker() == [1, 2]
    b.closed("10.0.0.2")
    assert a.connections() == 2


def test_a_worker_mapping_the_same_memfd_sees_the_counts(table: Table) -> None:
    other = Table.attach(os.dup(table.fd))
    try:
        WorkerCounts(table, 1).opened("x")
        assert WorkerCounts(other, 0).connections() == 1
    finally:
        other.close()


def test_attach_refuses_a_descriptor_of_another_size() -> None:
    fd = config_memfd("not a table")
    with pytest.raises(ValueError, match="shared table is"):
        Table.attach(fd)


def test_a_dead_workers_slot_is_cleared(table: Table) -> None:
    a, b = WorkerCounts(table, 0), WorkerCounts(table, 1)
    for _ in range(5):
        b.opened("10.0.0.9")
    b.set_live(True)
    table.clear(1)
    assert a.connections() == 0 and a.from_source("10.0.0.9") == 0
    assert not table.live(1)


def test_columns_beyond_the_ones_in_use_are_not_summed(table: Table) -> None:
    WorkerCounts(table, 5).opened("x")
    assert WorkerCounts(table, 0).connections() == 0
    table.columns = 6
    assert WorkerCounts(table, 0).connections() == 1


def test_source_buckets_only_err_on_the_strict_side(table: Table) -> None:
    a = WorkerCounts(table, 0)
    sources = [f"10.{i // 256}.{i % 256}.1" for i in range(SOURCE_BUCKETS * 2)]
    for s in sources:
        a.opened(s)
    for s in sources:
        assert a.from_source(s) >= 1  # never fewer than its own


def test_least_other_reads_only_live_workers(table: Table) -> None:
    table.columns = 3
    a, b, c = (WorkerCounts(table, i) for i in range(3))
    assert a.least_other() is None
    b.opened("x")
    b.opened("x")
    b.set_live(True)
    assert a.least_other() == 2
    c.set_live(True)
    assert a.least_other() == 0
    assert a.mine() == 0


def test_shared_rate_bucket_is_spent_by_every_worker(table: Table) -> None:
    a = WorkerCounts(table, 0).rate_bucket(1.0, 3.0, 100.0)
    b = WorkerCounts(table, 1).rate_bucket(1.0, 3.0, 100.0)  # the same settings again: nothing changes
    assert [a.take(100.0), b.take(100.0), a.take(100.0), b.take(100.0)] == [True, True, True, False]
    assert b.take(101.0) and not a.take(101.0)  # one token a second, between them


def test_shared_rate_bucket_keeps_what_was_spent_across_a_reload(table: Table) -> None:
    counts = WorkerCounts(table, 0)
    bucket = counts.rate_bucket(1.0, 5.0, 0.0)
    for _ in range(5):
        assert bucket.take(0.0)
    bucket = counts.rate_bucket(2.0, 10.0, 0.0)
    assert not bucket.take(0.0)
    assert bucket.take(0.5)


# -- the policy and the datagram guard with shared counts ------------------------------


def shared_policies(table: Table, body: str = "") -> list[Any]:
    clock = Clock()
    clock.advance(1000)
    out = []
    for slot in range(2):
        ctx = context("echo", body, clock=clock)
        ctx.policy.share(WorkerCounts(table, slot))
        out.append(ctx.policy)
    return out


def test_caps_hold_for_the_sum_of_workers(table: Table) -> None:
    a, b = shared_policies(table, "max_connections = 3\nmax_per_source = 0")
    conns: list[Any] = []
    for n, pol in enumerate([a, b, a, b]):
        reason = pol.check(peer(f"10.0.0.{n}"))
        if reason is None:
            conn = _conn(f"10.0.0.{n}")
            pol.opened(conn)
            conns.append((pol, conn))
    assert len(conns) == 3  # exactly the cap, in a sequential test
    assert b.check(peer("10.0.1.1")) == policy_module.TOO_MANY
    pol, conn = conns.pop()
    pol.closed(conn, None)
    assert a.check(peer("10.0.1.1")) is None


def test_per_source_cap_holds_across_workers(table: Table) -> None:
    a, b = shared_policies(table, "max_per_source = 2")
    a.opened(_conn("192.0.2.7"))
    b.opened(_conn("192.0.2.7"))
    assert a.check(peer("192.0.2.7")) == policy_module.TOO_MANY_FROM_YOU
    assert b.check(peer("192.0.2.7")) == policy_module.TOO_MANY_FROM_YOU


def test_per_subnet_cap_holds_across_workers(table: Table) -> None:
    a, b = shared_policies(table, "max_per_source = 0\nmax_per_subnet = 2")
    for pol, host in ((a, "198.51.100.1"), (b, "198.51.100.2")):
        conn = _conn(host)
        conn.subnet = pol.subnet_of(ipaddress.ip_address(host))
        pol.opened(conn)
    ip = ipaddress.ip_address("198.51.100.3")  # the same /24
    assert a.check_ip(ip, "198.51.100.3", a.subnet_of(ip)) == policy_module.TOO_MANY_FROM_SUBNET
    other = ipaddress.ip_address("203.0.113.3")
    assert b.check_ip(other, "203.0.113.3", b.subnet_of(other)) is None


def test_the_slack_is_one_connection_per_worker(table: Table) -> None:
    """Two workers admitting at the same instant each see the other's old count: one over, at most, each."""
    a, b = shared_policies(table, "max_connections = 3")
    a.opened(_conn("10.0.0.1"))
    b.opened(_conn("10.0.0.2"))
    # Both check before either counts its connection:
    assert a.check(peer("10.0.0.3")) is None
    assert b.check(peer("10.0.0.4")) is None
    a.opened(_conn("10.0.0.3"))
    b.opened(_conn("10.0.0.4"))
    assert WorkerCounts(table, 0).connections() == 4  # cap + 1 with two workers
    assert a.check(peer("10.0.0.5")) == b.check(peer("10.0.0.5")) == policy_module.TOO_MANY


def test_max_rate_holds_for_the_sum(table: Table) -> None:
    a, b = shared_policies(table, "max_rate = 1\nmax_rate_burst = 2")
    got = [p.check(peer("10.0.0.1")) for p in (a, b, a, b)]
    assert got == [None, None, policy_module.RATE_EXCEEDED, policy_module.RATE_EXCEEDED]


def test_udp_rate_is_split_between_workers(table: Table) -> None:
    ctx = context("echo", "rate_per_source = 10\nburst = 10\nrate_exempt = []")
    counts = WorkerCounts(table, 0)
    counts.serving = 2
    ctx.policy.share(counts)
    guard = ctx.state.guard
    guard.reconfigure(ctx.settings)
    assert guard.limiter.rate == 5 and guard.limiter.burst == 5
    allowed = sum(guard.check("192.0.2.1", 40000) is None for _ in range(20))
    assert allowed == 5


def test_a_split_burst_keeps_at_least_one_token() -> None:
    from socksvc.util.ratelimit import SourceLimiter

    limiter = SourceLimiter(1.0, 1, 10, share=4)
    assert limiter.burst == 1.0 and limiter.rate == 0.25


def _conn(host: str) -> Any:
    from socksvc.core.protocols import Tracked
    from socksvc.util.addresses import peer_ip, source_key

    conn = Tracked()
    conn.source = source_key(peer_ip(peer(host)))
    conn.transport = None
    return conn


# -- the accept balancer ----------------------------------------------------------------


def test_allowance() -> None:
    assert balance.allowance(5, None) is None  # nobody else serves it
    assert balance.allowance(0, 0) is None  # nobody holds anything (greetings): the loop takes all it can
    assert balance.allowance(1, 0) == balance.MARGIN - 1
    assert balance.allowance(9, 7) == 0
    assert balance.allowance(3, 7) == 6


def test_holding_back_then_accepting_anyway() -> None:
    h = balance.Holding()
    assert h.step(0.0, 3) == (3, 0.0)
    take, hold = h.step(10.0, 0)
    assert take == 0 and hold == 0.0  # first look again on the next reactor turn
    take, hold = h.step(10.001, 0)
    assert take == 0 and hold == pytest.approx(0.002)
    assert h.step(10.0 + balance.PATIENCE, 0) == (1, 0.0)  # nobody took it: accept one
    assert h.step(10.0 + balance.PATIENCE * 2, -1) == (2, 0.0)  # still stuck: two
    assert h.step(10.0 + balance.PATIENCE * 3, 0) == (4, 0.0)
    assert h.step(11.0, 2) == (2, 0.0)  # balanced again: back to normal
    assert h.step(11.0, 0) == (0, 0.0)


def test_balance_makes_a_subclass_of_the_ports_own_class() -> None:
    from twisted.internet import tcp

    from socksvc.daemon.quickport import QuickPort

    for cls in (tcp.Port, QuickPort):
        port = cls.__new__(cls)
        port.numberAccepts = 100
        assert balance.balance(port, object(), Clock()) == balance.ENABLED  # type: ignore[arg-type]
        if balance.ENABLED:
            assert isinstance(port, cls) and isinstance(port, balance.BalancedPort)
            assert not balance.balance(port, object(), Clock())  # type: ignore[arg-type]


# -- the supervisor's decisions ---------------------------------------------------------


def test_backoff_doubles_to_thirty_seconds_and_resets_after_a_stable_minute() -> None:
    b = Backoff()
    assert [b.after(0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.after(61.0) == 1
    assert b.after(10.0) == 2


class _Proc:
    def __init__(self, slot: int, started_at: float) -> None:
        self.slot = slot
        self.pid = 1000 + slot
        self.started_at = started_at
        self.stopping = False


def test_supervisor_replaces_dead_workers_with_backoff_on_a_clock() -> None:
    from twisted.internet.error import ProcessTerminated
    from twisted.python.failure import Failure

    from socksvc.daemon import systemd
    from socksvc.daemon.supervisor import SupervisorService

    text = '[daemon]\nworkers = 2\n[services.echo]\nlisten = ["tcp:0"]\n'
    clock = Clock()
    sup = SupervisorService(loads(text), clock, text=text, notifier=systemd.Notifier(None), handle_signals=False)
    started: list[tuple[int, float]] = []
    sup._start_worker = lambda slot: started.append((slot, clock.seconds()))  # type: ignore[method-assign]
    sup.serving = True
    killed = Failure(ProcessTerminated(signal=9))
    t = 0.0
    for expected in (1, 2, 4, 8, 16, 30, 30):
        clock.advance(0.5)  # it dies half a second after it started: a crash loop
        sup._worker_ended(_Proc(1, clock.seconds() - 0.5), killed)  # type: ignore[arg-type]
        t = clock.seconds()
        clock.advance(expected - 0.01)
        assert started[-1:] != [(1, pytest.approx(t + expected))]
        clock.advance(0.02)
        assert started[-1] == (1, pytest.approx(t + expected, abs=0.02))
    clock.advance(120)
    sup._worker_ended(_Proc(1, clock.seconds() - 61), killed)  # type: ignore[arg-type]
    clock.advance(1)
    assert started[-1] == (1, clock.seconds())  # a worker that ran a stable minute is back in 1 s
    # A worker stopped on purpose (a reload asked for fewer) is not replaced.
    stopped = _Proc(0, 0.0)
    stopped.stopping = True
    sup._worker_ended(stopped, killed)  # type: ignore[arg-type]
    assert not clock.getDelayedCalls()
    for table in sup.tables.values():
        table.close()


def test_resize() -> None:
    assert resize({0, 1}, 4) == ([2, 3], [])
    assert resize({0, 1, 2, 3}, 2) == ([], [2, 3])
    assert resize({1}, 2) == ([0], [])  # slot 0 is dead and due to restart elsewhere: started here
    assert resize(set(), 1) == ([0], [])


class _Port:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class _Listener:
    def __init__(self, spec: Any, fds: list[int]) -> None:
        self.spec = spec
        self.ports = [_Port(fd) for fd in fds]


class _Instance:
    def __init__(self, config: Any, listeners: list[_Listener]) -> None:
        self.name = config.name
        self.config = config
        self.stype = types()[config.type]
        self._listeners = listeners

    def listeners(self) -> list[_Listener]:
        return self._listeners


def test_handout_gives_chat_to_worker_0_only() -> None:
    cfg = loads('[services.echo]\nlisten = ["tcp:0", "tcp:0", "udp:0"]\n[services.chat]\nlisten = ["tcp:0"]\n')
    echo, chat = cfg.services
    instances = [
        _Instance(echo, [_Listener(s, [10 + i]) for i, s in enumerate(echo.listen)]),
        _Instance(chat, [_Listener(chat.listen[0], [20])]),
    ]
    w0 = dict(handout(instances, 0))
    w1 = dict(handout(instances, 1))
    assert listener_name("chat", "tcp:0", 0, 0) in w0 and listener_name("chat", "tcp:0", 0, 0) not in w1
    # The same spec twice: told apart by occurrence.
    assert w1[listener_name("echo", "tcp:0", 0, 0)] == 10
    assert w1[listener_name("echo", "tcp:0", 1, 0)] == 11
    assert w1[listener_name("echo", "udp:0", 0, 0)] == 12
    assert served_by(instances[1], 0) and not served_by(instances[1], 1)
    # A reload's new listeners only.
    assert handout(instances, 1, [instances[0].listeners()[2]]) == [(listener_name("echo", "udp:0", 0, 0), 12)]


def test_handout_gives_chat_with_a_bus_to_every_worker() -> None:
    """With a bus every worker is a node of the chat's cluster: each is handed chat's sockets (irc's, web's too)."""
    cfg = loads(
        '[services.chat]\nlisten = ["tcp:0"]\nirc = ["tcp:0"]\nbus = "redis://127.0.0.1"\n'
        '[services.pop3]\nlisten = ["tcp:0"]\n'
    )
    chat, pop3 = cfg.services
    instances = [
        _Instance(chat, [_Listener(spec, [20 + i]) for i, (_key, _index, spec) in enumerate(chat.listens())]),
        _Instance(pop3, [_Listener(pop3.listen[0], [30])]),
    ]
    for slot in range(4):
        given = dict(handout(instances, slot))
        assert given[listener_name("chat", "tcp:0", 0, 0)] == 20
        assert given[listener_name("chat", "tcp:0", 1, 0)] == 21  # irc's
        assert (listener_name("pop3", "tcp:0", 0, 0) in given) == (slot == 0)  # pop3 stays with worker 0
        assert served_by(instances[0], slot)


def test_config_text_travels_whole() -> None:
    text = "# ünïcode\n" + "x" * (3 << 20)
    assert read_text(config_memfd(text)) == text


def test_worker_environment() -> None:
    env = worker_env({"LISTEN_FDS": "2", "NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "HOME": "/h"}, "1234", 99)
    assert env["PYTHONHASHSEED"] == "1234" and env["SOCKSVC_SUPERVISOR"] == "99" and env["HOME"] == "/h"
    assert not {"LISTEN_FDS", "NOTIFY_SOCKET", "WATCHDOG_USEC"} & set(env)


def test_describe_exit() -> None:
    from twisted.internet.error import ProcessDone, ProcessTerminated
    from twisted.python.failure import Failure

    assert describe_exit(Failure(ProcessDone(0))) == "exited with status 0"
    assert describe_exit(Failure(ProcessTerminated(3))) == "exited with status 3"
    assert describe_exit(Failure(ProcessTerminated(signal=9))) == "killed by SIGKILL"


# -- logs, figures, paging ----------------------------------------------------------------


def _relayed(emit: Any, worker: int = 1, text: bool = True) -> Any:
    events: list[Any] = []
    publisher = LogPublisher(events.append)
    emit(Logger(namespace="socksvc", observer=publisher))
    assert len(events) == 1
    return rebuild(encode(events[0]), worker, text)


def test_relayed_event_keeps_its_message_and_fields() -> None:
    event = _relayed(
        lambda log: log.info(
            "{service}: {peer} closed after {duration:.3f}s{_why}",
            event="close",
            service="echo",
            peer="127.0.0.1:5",
            duration=0.25,
            _why=" (idle)",
        )
    )
    assert formatEvent(event) == "echo: 127.0.0.1:5 closed after 0.250s (idle)"
    assert event["worker"] == 1 and event["log_level"] is LogLevel.info
    line = FastTextObserver(_Lines()).format(event)
    assert line is not None and "[socksvc#info w1] echo: 127.0.0.1:5 closed" in line


def test_relayed_event_in_json_has_a_worker_field() -> None:
    event = _relayed(lambda log: log.warn("{service}: hello", event="x", service="echo", n=3), worker=0, text=False)
    record = json.loads(JsonObserver(_Lines()).format(event))
    assert record["worker"] == 0 and record["level"] == "warning" and record["message"] == "echo: hello"
    assert record["n"] == 3 and "system" not in record


def test_relayed_failure_keeps_its_traceback() -> None:
    def fail(log: Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.failure("it broke")

    event = _relayed(fail)
    line = FastTextObserver(_Lines()).format(event)
    assert line is not None and "it broke" in line and "ValueError: boom" in line
    record = json.loads(JsonObserver(_Lines()).format(event))
    assert "ValueError: boom" in record["traceback"]


def test_what_the_supervisor_says_itself_is_not_repeated() -> None:
    assert _relayed(lambda log: log.info("x: listening on y", event="listen")) is None
    assert _relayed(lambda log: log.info("reloaded", event="reloaded")) is None
    assert _relayed(lambda log: log.error("reload failed", event="reload")) is not None


def test_a_worker_formats_lines_itself_when_the_supervisor_writes_socksvcs_own() -> None:
    from socksvc.daemon.logrelay import Relay

    sent: list[tuple[str, bool]] = []
    relay = Relay(lambda text: sent.append((text, False)))
    relay.lines("text", 1, lambda line, urgent: sent.append((line, urgent)))
    log = Logger(namespace="socksvc", observer=relay)
    log.info("{service}: {peer} closed", event="close", service="echo", peer="127.0.0.1:5")
    log.warn("{service}: trouble", event="x", service="echo")
    log.info("echo: listening on tcp 127.0.0.1:1", event="listen")  # the supervisor says it, once
    assert len(sent) == 2
    assert "[socksvc#info w1] echo: 127.0.0.1:5 closed\n" in sent[0][0] and not sent[0][1]
    assert "[socksvc#warn w1] echo: trouble" in sent[1][0] and sent[1][1]  # urgent: flushed at once
    sent.clear()
    relay.lines("json", 0, lambda line, urgent: sent.append((line, urgent)))
    log.info("{service}: hi", event="x", service="echo")
    record = json.loads(sent[0][0])
    assert record["worker"] == 0 and record["message"] == "echo: hi" and "system" not in record


def test_each_worker_logs_its_share_of_the_close_lines(table: Table) -> None:
    a, _b = shared_policies(table, "log_close_rate = 100\nlog_close_burst = 10")
    assert a.close_log._bucket.rate == 100  # one worker serving: the whole ceiling
    counts = WorkerCounts(table, 0)
    counts.serving = 4
    a.share(counts)
    assert a.close_log._bucket.rate == 25 and a.close_log._bucket.burst == 2  # 10 / 4, rounded


def test_huge_events_are_cut_to_fit() -> None:
    event = _relayed(lambda log: log.info("{big}", big="x" * (PAGE * 2)))
    assert event is not None and len(json.dumps(event, default=str)) < PAGE


def test_stray_output_becomes_a_line() -> None:
    event = rebuild("Traceback (most recent call last):", 2, True)
    assert event is not None and formatEvent(event) == "Traceback (most recent call last):" and event["worker"] == 2


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


def test_merged_figures_keep_the_daemon_wide_cap() -> None:
    one = {
        "name": "echo", "listeners": ["tcp 127.0.0.1:1"], "connections": 3, "limit": 10, "peak": 3, "accepted": 9,
        "refused": {"max_connections": 1}, "bytes_in": 5, "bytes_out": 5,
        "duration": {"bounds": [1.0], "counts": [1, 0], "sum": 0.5}, "counters": {"n": 1},
    }  # fmt: skip
    (echo,) = merge_services([[one], [dict(one)]])
    assert echo["limit"] == 10  # max_connections holds for the daemon, not per worker
    assert echo["connections"] == 6 and echo["refused"] == {"max_connections": 2} and echo["counters"] == {"n": 2}


def test_supervisor_status_line() -> None:
    from socksvc.daemon import systemd
    from socksvc.daemon.supervisor import SupervisorService

    text = '[daemon]\nworkers = 2\n[services.echo]\nlisten = ["tcp:0"]\n[services.chat]\nlisten = ["tcp:0"]\n'
    sup = SupervisorService(loads(text), Clock(), text=text, notifier=systemd.Notifier(None), handle_signals=False)
    assert sup.status() == "0 of 2 workers up; no figures yet"
    sup.figures = [{"name": "echo", "connections": 4}, {"name": "chat", "connections": 1, "chat": {"members": 1}}]
    assert sup.status() == "0 of 2 workers up; 5 connections: echo 4, chat 1 (1 user)"
    for table in sup.tables.values():
        table.close()


def test_paging_splits_big_answers() -> None:
    items = [{"name": f"s{i}", "pad": "x" * 1000} for i in range(200)]
    got: list[Any] = []
    start = 0
    pages = 0
    while start >= 0:
        text, start = page(items, start)
        assert len(text.encode()) <= PAGE
        got += json.loads(text)
        pages += 1
    assert got == items and pages > 1


# -- a reload across workers: all or nothing ------------------------------------------------


class _Reactor(PortsReactor):
    """A memory reactor whose ports have a descriptor (a fake one) and can stop reading."""

    def _port(self, kind: str, interface: str) -> Any:
        port = super()._port(kind, interface)
        number = self.next_port
        port.__class__ = type(
            "FdPort", (port.__class__,), {"fileno": lambda self: number, "stopReading": lambda self: None}
        )
        return port


class _Worker:
    """A worker as the supervisor sees it, answering from a script."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.pid = 100 + slot
        self.ready = True
        self.starting = None
        self.generation = 0
        self.refuse = False
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.signals: list[str] = []

    def call(self, command: Any, **kw: Any) -> Any:
        from twisted.internet import defer

        from socksvc.daemon.control import Refused

        self.calls.append((command.__name__, kw))
        if command.__name__ == "Prepare" and self.refuse:
            return defer.fail(Refused(f"worker {self.slot} says no"))
        return defer.succeed({})

    def commands(self) -> list[str]:
        return [name for name, _ in self.calls if name != "Adopt"]

    def adopted(self) -> list[str]:
        return [kw["name"] for name, kw in self.calls if name == "Adopt"]

    def signal(self, name: str) -> None:
        self.signals.append(name)


def test_a_reload_one_worker_refuses_changes_nothing_anywhere(tmp_path: Any) -> None:
    from socksvc.daemon import systemd
    from socksvc.daemon.supervisor import SupervisorService

    first = '[daemon]\nworkers = 2\n[services.echo]\nlisten = ["tcp:0"]\n[services.chat]\nlisten = ["tcp:0"]\n'
    second = first + '[services.greeting]\nlisten = ["tcp:0"]\n'
    path = tmp_path / "socksvc.toml"
    path.write_text(first)
    reactor = _Reactor()
    sup = SupervisorService(
        loads(first, str(path)), reactor, text=first, notifier=systemd.Notifier(None), handle_signals=False
    )
    sup.privilegedStartService()
    workers = {0: _Worker(0), 1: _Worker(1)}
    sup.procs = workers  # type: ignore[assignment]
    path.write_text(second)
    workers[1].refuse = True
    results: list[bool] = []
    sup.reload().addCallback(results.append)
    assert results == [False]
    assert "worker 1 says no" in (sup.last_reload_error or "")
    for w in workers.values():
        assert w.commands() == ["Prepare", "Abort"]  # both prepared, neither committed
    assert [i.name for i in sup.instances()] == ["echo", "chat"] and set(sup.tables) == {"echo", "chat"}
    bound = len(reactor.listening)

    workers[1].refuse = False
    for w in workers.values():
        w.calls.clear()
    sup.reload().addCallback(results.append)
    assert results == [False, True]
    assert [i.name for i in sup.instances()] == ["echo", "chat", "greeting"] and "greeting" in sup.tables
    assert len(reactor.listening) == bound + 1
    for w in workers.values():
        assert w.commands() == ["Prepare", "Commit"]
        names = w.adopted()
        assert table_name("greeting") in names and listener_name("greeting", "tcp:0", 0, 0) in names
        assert listener_name("echo", "tcp:0", 0, 0) not in names  # only what is new is handed over
        assert w.generation == 1
    for table in sup.tables.values():
        table.close()


def test_a_worker_that_stops_answering_is_killed_and_the_watchdog_waits() -> None:
    from twisted.internet import defer

    from socksvc.daemon import systemd
    from socksvc.daemon.supervisor import SupervisorService
    from socksvc.daemon.watch import HEARTBEAT, MISSES

    text = '[daemon]\nworkers = 2\n[services.echo]\nlisten = ["tcp:0"]\n'
    clock = Clock()
    sup = SupervisorService(loads(text), clock, text=text, notifier=systemd.Notifier(None), handle_signals=False)
    fine, hung = _Worker(0), _Worker(1)
    hung.call = lambda command, **kw: defer.Deferred()  # type: ignore[method-assign]
    for w in (fine, hung):
        w.heartbeat_pending = 0  # type: ignore[attr-defined]
        w.last_answer = 0.0  # type: ignore[attr-defined]
    sup.procs = {0: fine, 1: hung}  # type: ignore[dict-item]
    assert sup.healthy()
    sup._heartbeat()
    clock.advance(HEARTBEAT)
    sup._heartbeat()
    assert not sup.healthy()  # one heartbeat unanswered: systemd's watchdog is not fed
    for _ in range(MISSES):
        clock.advance(HEARTBEAT)
        sup._heartbeat()
    assert hung.signals == ["KILL"] and fine.signals == []
    for table in sup.tables.values():
        table.close()
