"""Reverse: LF/CRLF lines, grapheme-aware reversal, invalid UTF-8, max_line."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from socksvc.services.reverse import ZWJ, clusters, reverse_line, reverse_text
from tests.support import connect, context, pumped


def test_lf_and_crlf_lines_answer_in_kind() -> None:
    proto, transport = connect(context("reverse"))
    proto.dataReceived(b"abc\nxyz\r\n")
    assert transport.value() == b"cba\nzyx\r\n"
    proto.dataReceived(b"hel")
    proto.dataReceived(b"lo\r")
    assert transport.value() == b"cba\nzyx\r\n"
    proto.dataReceived(b"\n\n")
    assert transport.value() == b"cba\nzyx\r\nolleh\r\n\n"
    assert proto.touched
    assert proto.bytes_in == 17
    assert proto.bytes_out == len(transport.value())


@pytest.mark.parametrize(
    ("text", "reversed_"),
    [
        ("abc", "cba"),
        ("cafe\u0301", "e\u0301fac"),  # combining acute stays on its e
        ("caf\u00e9", "\u00e9fac"),  # precomposed
        ("x\U0001f468\u200d\U0001f469\u200d\U0001f467y", "y\U0001f468\u200d\U0001f469\u200d\U0001f467x"),  # ZWJ family
        ("\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea", "\U0001f1e9\U0001f1ea\U0001f1eb\U0001f1f7"),  # FR DE -> DE FR
        ("\U0001f44d\U0001f3fdok", "ko\U0001f44d\U0001f3fd"),  # skin tone modifier
        ("\u2764\ufe0f!", "!\u2764\ufe0f"),  # variation selector
        ("\u0928\u092e\u0938\u094d\u0924\u0947", "\u0924\u0947\u0938\u094d\u092e\u0928"),  # Devanagari signs stay
        ("", ""),
    ],
)
def test_grapheme_aware_reversal(text: str, reversed_: str) -> None:
    assert reverse_text(text) == reversed_
    assert reverse_text(reversed_) == text


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert reverse_line(b"ab\xffc") == "c\ufffdba".encode()
    proto, transport = connect(context("reverse"))
    proto.dataReceived(b"\xc3\n\xe2\x82\n")
    assert transport.value() == "\ufffd\n\ufffd\n".encode()
    assert not transport.disconnecting


@given(st.binary(max_size=64))
def test_any_bytes_give_valid_utf8(line: bytes) -> None:
    out = reverse_line(line)
    text = out.decode("utf-8")  # never raises
    assert sorted(text) == sorted(line.decode("utf-8", "replace"))


# -- what holds of grapheme reversal -----------------------------------------


def _is_base(ch: str) -> bool:
    return clusters("a" + ch) == ["a", ch] and ch != ZWJ and not 0x1F1E6 <= ord(ch) <= 0x1F1FF


bases = st.characters(exclude_categories=("Cs", "Mn", "Mc", "Me")).filter(_is_base)
marks = st.characters(categories=("Mn", "Me")) | st.sampled_from(["\ufe0f", "\U0001f3fb", "\U000e0067"])
emoji = st.sampled_from(["\U0001f468", "\U0001f469", "\U0001f467", "\u2764", "\U0001f3f3"])
flags = st.tuples(st.integers(0x1F1E6, 0x1F1FF), st.integers(0x1F1E6, 0x1F1FF)).map(lambda p: chr(p[0]) + chr(p[1]))
zwj_sequences = st.lists(emoji, min_size=2, max_size=4).map(ZWJ.join)
grapheme = st.tuples(bases, st.lists(marks, max_size=3)).map(lambda t: t[0] + "".join(t[1])) | flags | zwj_sequences


@given(st.lists(grapheme, max_size=12))
def test_reversal_reverses_user_perceived_characters(graphemes: list[str]) -> None:
    text = "".join(graphemes)
    assert clusters(text) == graphemes
    assert reverse_text(text) == "".join(reversed(graphemes))
    assert reverse_text(reverse_text(text)) == text


@given(st.lists(grapheme, max_size=12))
def test_reversing_nfc_text_twice_gives_it_back(graphemes: list[str]) -> None:
    text = unicodedata.normalize("NFC", "".join(graphemes))
    assert reverse_text(reverse_text(text)) == text


@given(st.text(max_size=40))
def test_reversal_is_a_permutation_of_code_points(text: str) -> None:
    out = reverse_text(text)
    assert sorted(out) == sorted(text)
    assert len(clusters(out)) <= len(text)


def test_where_twice_is_not_identity() -> None:
    """
    Text that does not start a character properly cannot round-trip: a
    leading combining mark attaches to the letter it lands after, and an odd
    run of regional indicators pairs differently from the other end. The
    code points survive all the same.
    """
    assert reverse_text("\u0301a") == "a\u0301"
    assert reverse_text(reverse_text("\u0301a")) == "a\u0301"
    odd = "\U0001f1e6\U0001f1e7\U0001f1e8"
    assert reverse_text(reverse_text(odd)) != odd
    assert sorted(reverse_text(reverse_text(odd))) == sorted(odd)


# -- max_line ----------------------------------------------------------------


def test_a_long_line_gets_one_error_line_then_close() -> None:
    proto, transport = connect(context("reverse", "max_line = 5"))
    proto.dataReceived(b"abc\nabcdef\nnever\n")
    assert transport.value() == b"cba\nerror: line longer than 5 bytes\r\n"
    assert transport.disconnecting
    assert transport.producer is None
    assert transport.producerState == "paused"  # nothing more is read
    proto.dataReceived(b"more\n")
    assert transport.value() == b"cba\nerror: line longer than 5 bytes\r\n"
    assert proto.bytes_out == len(transport.value())


def test_max_line_is_exact() -> None:
    proto, transport = connect(context("reverse", "max_line = 5"))
    proto.dataReceived(b"abcde\nabcde\r\n")
    assert transport.value() == b"edcba\nedcba\r\n"
    proto.dataReceived(b"abcdef\n")
    assert transport.value().endswith(b"error: line longer than 5 bytes\r\n")


def test_a_line_that_never_ends_is_cut_off_without_waiting_for_its_end() -> None:
    proto, transport = connect(context("reverse", "max_line = 100"))
    for _ in range(10):
        proto.dataReceived(b"x" * 30)
    assert transport.value() == b"error: line longer than 100 bytes\r\n"
    assert transport.disconnecting
    assert len(proto.splitter._buf) <= 101


def test_a_256_kib_line_of_combining_marks() -> None:
    """
    One letter and 131071 combining marks (256 KiB) is one character:
    it comes back as it went. Growing the cluster a mark at a time was
    quadratic; no timing is asserted, the suite's runtime covers it.
    """
    text = "\u00e9" + "\u0301" * 131071
    assert clusters(text) == [text]
    line = text.encode()
    assert len(line) == 256 * 1024
    proto, transport = connect(context("reverse", f"max_line = {1 << 20}\ninput_byte_rate = 0"))
    proto.dataReceived(line + b"\n")
    assert transport.value() == line + b"\n"
    assert clusters("ab" + text) == ["a", "b", text]


def test_default_max_line_is_4096() -> None:
    proto, transport = connect(context("reverse"))
    proto.dataReceived(b"y" * 4096 + b"\n")
    assert transport.value() == b"y" * 4096 + b"\n"
    proto.dataReceived(b"y" * 4097 + b"\n")
    assert transport.value().endswith(b"error: line longer than 4096 bytes\r\n")


def test_half_close_answers_then_closes() -> None:
    proto, transport = connect(context("reverse"))
    proto.dataReceived(b"abc\n")
    proto.readConnectionLost()
    assert transport.value() == b"cba\n"
    assert transport.disconnecting
    proto.writeConnectionLost()
    assert transport.disconnected


def test_half_close_answers_an_unterminated_last_line() -> None:
    """`printf abc | nc HOST 7071` gets "cba" back: the last line needs no LF."""
    proto, transport = connect(context("reverse"))
    proto.dataReceived(b"one\r\ntw")
    proto.dataReceived(b"o")
    proto.readConnectionLost()
    assert transport.value() == b"eno\r\nowt\n"
    assert transport.disconnecting


def test_half_close_with_an_over_long_last_line_gets_the_error() -> None:
    proto, transport = connect(context("reverse", "max_line = 4"))
    proto.dataReceived(b"abcde")
    proto.readConnectionLost()
    assert transport.value() == b"error: line longer than 4 bytes\r\n"
    assert transport.disconnecting


def test_iosim_lines() -> None:
    clock = Clock()
    ctx: Any = context("reverse", clock=clock)
    _server, client, pump = pumped(ctx)
    assert client.transport is not None
    for piece in (b"h\xc3", b"\xa9llo\r", b"\nw", b"orld\n"):
        client.transport.write(piece)
        pump.flush()
    assert client.received == "oll\u00e9h\r\ndlrow\n".encode()


# -- the fast path: one regex, the same clusters ------------------------------

cluster_text = st.lists(
    st.characters()
    | marks
    | emoji
    | st.sampled_from([ZWJ, "\U0001f1eb", "\U0001f1f7", "\U0001f3fd", "\ufe0f", "a", "\u00e9"]),
    max_size=24,
).map("".join)


@given(cluster_text)
def test_the_regex_finds_the_reference_clusters(text: str) -> None:
    from socksvc.services.reverse import _CLUSTER

    assert _CLUSTER.findall(text) == clusters(text)
    assert reverse_text(text) == "".join(reversed(clusters(text)))


def test_no_extending_character_outside_the_planes_scanned() -> None:
    """_EXTENDING scans planes 0, 1 and 14: nothing _extends() accepts is anywhere else."""
    from socksvc.services.reverse import _EXTENDING, _extends

    scanned = set(range(0x20000)) | set(range(0xE0000, 0xE1000))
    assert not [cp for cp in range(0x110000) if cp not in scanned and _extends(chr(cp))]
    assert len(_EXTENDING) > 2000
