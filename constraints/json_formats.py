"""The string ``format``s a JSON Schema generator can enforce, as expressions over a string's content.

Each is a subset of what the format's RFC allows, chosen so that every string produced is valid, Python's
validators included: dates and times of RFC 3339 (February 29 in leap years only; no leap second; no year 0000),
RFC 5322 dot-atom e-mail addresses at a hostname, RFC 1123 host names (labels of 1-63 characters, 253 in all), IPv4
dotted quads, IPv6 in all RFC 4291 forms, RFC 3986 URIs and URI references (without IP-literal hosts), RFC 4122
UUIDs, RFC 6901 JSON pointers (and relative ones), ISO 8601 durations. All are ASCII and need no escape except JSON pointers, whose characters are canonical string
characters. Formats not listed here are annotations, as JSON Schema's default vocabulary says: they constrain nothing.

Example:
    >>> from decoding.constraints import rx
    >>> d = format_content("date")
    >>> rx.matches(d, "2024-02-29"), rx.matches(d, "2023-02-29")
    (True, False)
"""

from __future__ import annotations

import functools

from decoding.constraints import rx
from decoding.constraints.json_lexical import char_in

__all__ = ["FORMATS", "format_content"]

_HEX = "[0-9a-fA-F]"
_LEAP = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # year 0000: not a Python date
_DATE = (rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP}-02-29)")
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_ATOM = r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = "[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_PCHAR = r"(?:[a-zA-Z0-9._~!$&'()*+,;=:@-]|%[0-9a-fA-F]{2})"
_PCHAR_NC = r"(?:[a-zA-Z0-9._~!$&'()*+,;=@-]|%[0-9a-fA-F]{2})"  # no colon: a relative path's first segment
_TAIL = rf"(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
_AUTHORITY = rf"(?:(?:[a-zA-Z0-9._~!$&'()*+,;=:-]|%[0-9a-fA-F]{{2}})*@)?(?:{_HOST}|{_IPV4})?(?::[0-9]*)?"
_URI = rf"[a-zA-Z][a-zA-Z0-9+.-]*:(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/?(?:{_PCHAR}+(?:/{_PCHAR}*)*)?){_TAIL}"
_RELATIVE = rf"(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?|{_PCHAR_NC}+(?:/{_PCHAR}*)*|){_TAIL}"

_REGEXES = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}[Tt]{_TIME}",
    "email": rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+",
    "hostname": _HOST,
    "ipv4": _IPV4,
    "uuid": f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}",
    "uri": _URI,
    "uri-reference": f"{_URI}|{_RELATIVE}",
}
FORMATS = frozenset(_REGEXES) | {"ipv6", "url", "iri", "iri-reference", "duration", "json-pointer",
                                 "relative-json-pointer", "idn-email", "idn-hostname"}
_ALIASES = {"url": "uri", "iri": "uri", "iri-reference": "uri-reference", "idn-email": "email",
            "idn-hostname": "hostname"}  # their ASCII subsets


@functools.cache
def format_content(name: str) -> rx.Rx | None:
    """The content (between the quotes) of the strings of format ``name``; None for a format not enforced."""
    name = _ALIASES.get(name, name)
    if name == "ipv6":
        return _ipv6()
    if name == "duration":
        return _duration()
    if name == "json-pointer":
        return _json_pointer()
    if name == "relative-json-pointer":
        return rx.concat(rx.from_regex("0|[1-9][0-9]*"), rx.alt(rx.literal("#"), _json_pointer()))
    regex = _REGEXES.get(name)
    if regex is None:
        return None
    content = rx.from_regex(regex)
    if name == "hostname":
        content = rx.inter(content, rx.repeat(rx.any_byte(), 1, 253))
    return content


def _ipv6() -> rx.Rx:
    """RFC 4291: eight groups, or fewer around one ``::``; the last 32 bits possibly an IPv4 address."""
    group, colon, v4 = rx.from_regex(f"{_HEX}{{1,4}}"), rx.literal(":"), rx.from_regex(_IPV4)

    def groups(n: int) -> rx.Rx:  # n groups separated by colons
        return rx.EPSILON if n == 0 else rx.concat(group, rx.repeat(rx.concat(colon, group), n - 1, n - 1))

    forms = [groups(8), rx.concat(groups(6), colon, v4)]
    for left in range(8):  # "::" stands for one group or more
        forms += [rx.concat(groups(left), rx.literal("::"), groups(right)) for right in range(8 - left)]
    for left in range(6):
        forms += [rx.concat(groups(left), rx.literal("::"), groups(right), colon if right else rx.EPSILON, v4)
                  for right in range(6 - left)]
    return rx.alt(*forms)


def _duration() -> rx.Rx:
    """ISO 8601 durations as RFC 3339 appendix A writes them: ``PnW``, or dates and times with one part or more."""
    n = rx.from_regex("[0-9]+")
    part = lambda unit: rx.optional(rx.concat(n, rx.literal(unit)))  # noqa: E731
    date = rx.concat(part("Y"), part("M"), part("D"))
    time = rx.concat(rx.literal("T"), rx.difference(rx.concat(part("H"), part("M"), part("S")), rx.EPSILON))
    body = rx.difference(rx.concat(date, rx.optional(time)), rx.EPSILON)
    return rx.concat(rx.literal("P"), rx.alt(rx.concat(n, rx.literal("W")), body))


def _json_pointer() -> rx.Rx:
    token = rx.star(rx.alt(char_in([(0, 0x2E), (0x30, 0x7D), (0x7F, 0x10FFFF)]), rx.literal("~0"), rx.literal("~1")))
    return rx.star(rx.concat(rx.literal("/"), token))
