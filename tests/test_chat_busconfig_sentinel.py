"""
The chat bus's C{redis+sentinel://} URL (docs/chat-bus.md, "Sentinel for
failover"): good forms, bad forms with their one line, describe() giving
the address back, and the round trip under hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socksvc.config.loader import ConfigError
from socksvc.services.catalogue import loads
from socksvc.services.chat.busconfig import MAX_SENTINELS, SENTINEL_PORT, BusAddress, parse_bus
from socksvc.services.chat.service import ChatSettings


def bus(url: str) -> BusAddress | None:
    """The bus a chat table with C{bus = url} has, through the loader."""
    settings: ChatSettings = (
        loads(f'[services.chat]\nlisten = ["tcp:0"]\nbus = {url!r}\n', "f.toml").service("chat").settings
    )
    return settings.bus


def error(url: str) -> str:
    """The one line a chat table with C{bus = url} gives."""
    with pytest.raises(ConfigError) as e:
        bus(url)
    line = str(e.value)
    assert "\n" not in line and line.startswith("f.toml: services.chat.bus")
    return line


def sentinel(hosts: tuple[tuple[str, int], ...], service: str, db: int = 0, user: str | None = None) -> BusAddress:
    return BusAddress(False, "", 0, "", db, user, hosts, service)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis+sentinel://s1.lan/mymaster", sentinel((("s1.lan", SENTINEL_PORT),), "mymaster")),
        (
            "redis+sentinel://s1.lan,s2.lan:26380,s3.lan/mymaster/0",
            sentinel((("s1.lan", 26379), ("s2.lan", 26380), ("s3.lan", 26379)), "mymaster"),
        ),
        ("redis+sentinel://127.0.0.1:1/m/15", sentinel((("127.0.0.1", 1),), "m", 15)),
        ("redis+sentinel://10.0.0.1:65535/m/10000", sentinel((("10.0.0.1", 65535),), "m", 10000)),
        (
            "redis+sentinel://[::1],[2001:DB8::1]:26380/my-master.eu_1",
            sentinel((("::1", 26379), ("2001:db8::1", 26380)), "my-master.eu_1"),
        ),
        ("redis+sentinel://chat@s1,s2/mym/3", sentinel((("s1", 26379), ("s2", 26379)), "mym", 3, "chat")),
        ("REDIS+SENTINEL://s1/mym/", sentinel((("s1", 26379),), "mym")),
        ("  redis+sentinel://s1/" + "m" * 64 + "  ", sentinel((("s1", 26379),), "m" * 64)),
        (
            "redis+sentinel://" + ",".join(f"s{i}" for i in range(MAX_SENTINELS)) + "/mym",
            sentinel(tuple((f"s{i}", 26379) for i in range(MAX_SENTINELS)), "mym"),
        ),
    ],
)
def test_sentinel_urls(url: str, address: BusAddress) -> None:
    assert bus(url) == address
    assert parse_bus(address.describe()) == address
    assert address.unix is False and address.tls is False


def test_describe_names_every_sentinel_with_its_port_and_no_secret() -> None:
    address = bus("redis+sentinel://chat@s1,[::1]:26380/mym/2")
    assert address is not None
    assert address.describe() == "redis+sentinel://chat@s1:26379,[::1]:26380/mym/2"
    assert str(address) == address.describe()
    assert bus("redis+sentinel://s1/mym/0") == parse_bus("redis+sentinel://s1:26379/mym")


SERVICE = "give the Sentinel service's name: redis+sentinel://HOST[:PORT][,...]/SERVICE[/DB]"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://s1", SERVICE),
        ("redis+sentinel://s1,s2:26380", SERVICE),
        ("redis+sentinel://s1/", SERVICE),
        ("redis+sentinel://s1//0", SERVICE),
        ("redis+sentinel://s1/my master", SERVICE),
        ("redis+sentinel://s1/my*master", SERVICE),
        ("redis+sentinel://s1/" + "m" * 65, SERVICE),
        ("redis+sentinel://s1/mym/10001", "db must be 0 to 10000"),
        ("redis+sentinel://s1/mym/x", "db must be 0 to 10000"),
        ("redis+sentinel://s1/mym/1/2", "db must be 0 to 10000"),
        ("redis+sentinel://s1:0/mym", "the port must be 1 to 65535"),
        ("redis+sentinel://s1,s2:65536/mym", "the port must be 1 to 65535"),
        ("redis+sentinel://s1:/mym", "the port must be 1 to 65535"),
        ("redis+sentinel://s1:x/mym", "not a Sentinel address: give HOST[:PORT]"),
        ("redis+sentinel:///mym", "no host"),
        ("redis+sentinel://s1,,s2/mym", "no host"),
        ("redis+sentinel://s_1/mym", "not a host name"),
        ("redis+sentinel://[::g]/mym", "not an IPv6 address"),
        ("redis+sentinel://b@d@s1/mym", "not a user name before @"),
        ("redis+sentinel://chat@" + "s," * MAX_SENTINELS + "s/mym", f"{MAX_SENTINELS + 1} Sentinels; at most 16"),
    ],
)
def test_bad_sentinel_urls_are_one_line(url: str, reason: str) -> None:
    line = error(url)
    assert line.startswith('f.toml: services.chat.bus = "redis+sentinel://')  # the value (cut if long), then why
    assert line.endswith(reason) or f": {reason}" in line


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1/mym?password=s3cr3t",
        "redis+sentinel://s1/mym?db=1",
        "redis+sentinel://s1/mym#s3cr3t",
    ],
)
def test_a_query_is_refused_without_showing_it(url: str) -> None:
    """A query may be C{?password=}: the line names the key, never the value."""
    line = error(url)
    assert line == (
        "f.toml: services.chat.bus: a redis+sentinel:// bus has no ?query or #fragment; give the db as /SERVICE/DB"
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:s3cr3t@s1/mym",
        "redis+sentinel://chat:s3cr3t@s1,s2:26380/mym/0",
        "redis+sentinel://c:s3/c@s/m",
    ],
)
def test_a_password_in_a_sentinel_url_is_refused_and_never_shown(url: str) -> None:
    line = error(url)
    assert "s3" not in line and "s1" not in line
    assert line.startswith("f.toml: services.chat.bus: ") and "bus_password_file" in line


# -- under hypothesis ----------------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(lambda n: not n.replace(".", "").isdigit())
hosts = names | st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(lambda a: a.compressed)
users = st.none() | st.from_regex(r"[A-Za-z0-9._~-]{1,20}", fullmatch=True)


@st.composite
def sentinel_buses(draw: st.DrawFn) -> tuple[str, BusAddress]:
    given_hosts = draw(st.lists(st.tuples(hosts, st.none() | st.integers(1, 65535)), min_size=1, max_size=16))
    service = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True))
    db = draw(st.none() | st.integers(0, 10_000))
    user = draw(users)
    parts = [(f"[{h}]" if ":" in h else h) + (f":{p}" if p is not None else "") for h, p in given_hosts]
    url = f"redis+sentinel://{user + '@' if user else ''}{','.join(parts)}/{service}"
    url += f"/{db}" if db is not None else ""
    sentinels = tuple((h, SENTINEL_PORT if p is None else p) for h, p in given_hosts)
    return url, sentinel(sentinels, service, db or 0, user)


@given(sentinel_buses())
def test_valid_sentinel_urls_round_trip(case: tuple[str, BusAddress]) -> None:
    url, address = case
    assert parse_bus(url) == address
    assert parse_bus(address.describe()) == address


@given(st.from_regex(r"redis\+sentinel://[@:/?=#,\[\]a-z0-9._~-]{0,60}", fullmatch=True))
def test_parse_sentinel_only_ever_raises_value_error(text: str) -> None:
    try:
        address = parse_bus(text)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert address is not None and parse_bus(address.describe()) == address
