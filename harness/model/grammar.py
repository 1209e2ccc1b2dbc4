"""Field grammars: the only values allowed to reach a line of haproxy.cfg or keepalived.conf.

Each grammar is a function that takes a raw value and returns it in canonical form, or raises
GrammarError saying what was expected. The character sets are explicit ASCII classes: nothing
that could end a line (newlines, CR, NUL, Unicode separators), split an argument (spaces, tabs),
open a quoted string, an escape or a comment (quotes, backslash, '#') or a brace block ever
passes, so a rendered config is safe by construction — there is no escaping step to get wrong.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from typing import Any

Grammar = Callable[[Any], Any]


class GrammarError(ValueError):
    """A value does not match its field's grammar."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _string(value: Any, max_len: int) -> str:
    if not isinstance(value, str):
        raise GrammarError(f"expected a string, got {type(value).__name__} {_shown(value)}")
    if not value:
        raise GrammarError("must not be empty")
    if len(value) > max_len:
        raise GrammarError(f"longer than {max_len} characters")
    return value


def pattern(regex: str, what: str, max_len: int = 255) -> Grammar:
    """A string made only of what `regex` (matched in full, ASCII only) allows."""
    compiled = re.compile(regex, re.ASCII)

    def check(value: Any) -> str:
        text = _string(value, max_len)
        if not compiled.fullmatch(text):
            raise GrammarError(f"{_shown(value)} is not {what}")
        return text

    return check


UUID = pattern(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a lowercase UUID", 36
)
NAME = pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a name (letters, digits, '_', '.', '-')", 64)
# HTTP token characters (RFC 9110) minus those with a meaning in haproxy's syntax: quotes and '#'
# (strings, comments) and '(', ')', ',' (sample fetch arguments) are not tokens anyway.
TOKEN = pattern(r"[A-Za-z0-9!$&*+.^_`|~-]+", "an HTTP token (letters, digits, !$&*+-.^_`|~)", 128)
# A host name or part of one (rules match prefixes and suffixes like ".example.com").
HOST_NAME = pattern(
    r"[A-Za-z0-9.][A-Za-z0-9.:-]*", "a host name or part of one (letters, digits, . : -)"
)
# A URL path: RFC 3986 path characters. '%' (percent-encoding) is left out because haproxy reads
# redirect locations as log-format strings where '%' starts a sample expression.
_PATH = r"A-Za-z0-9._~!$&()*+,;=:@/"
URL_PATH = pattern(rf"/[{_PATH}?-]*", f"an absolute URL path (/ then {_PATH}?-)", 2048)
URL = pattern(
    rf"https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{{1,5}})?(/[{_PATH}?-]*)?",
    "an http(s) URL (host name, optional port, path without '%', '#', quotes or spaces)",
    2048,
)
# ACL patterns must not start with '-': haproxy would read them as flags (-f loads a file).
PATH_FRAGMENT = pattern(
    rf"[{_PATH}][{_PATH}-]*", f"part of a URL path ({_PATH}-, not starting with '-')", 2048
)
FILE_EXTENSION = pattern(
    r"[A-Za-z0-9._][A-Za-z0-9._-]*", "a file extension (letters, digits, . _ -, no leading -)"
)
# Visible ASCII minus quotes, backslash, '#' and braces: what an ACL pattern may contain.
_VISIBLE = r"A-Za-z0-9!$%&()*+,./:;<=>?@\[\]^_`|~"
MATCH_VALUE = pattern(
    rf"[{_VISIBLE}][{_VISIBLE}-]*",
    "visible ASCII without quotes, '\\', '#', braces or a leading '-'",
)
INTERFACE = pattern(r"[A-Za-z0-9_.-]+", "an interface name", 15)
VRRP_PASSWORD = pattern(r"[A-Za-z0-9]+", "a VRRP password (letters and digits)", 8)
ABSOLUTE_PATH = pattern(
    r"(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+",
    "an absolute path (letters, digits, _ . -; no component starting with '.')",
    1024,
)
HTTP_METHOD = pattern(r"GET|HEAD|POST|PUT|DELETE|TRACE|OPTIONS|CONNECT|PATCH", "an HTTP method")
_CODE_OR_RANGE = r"[1-5][0-9]{2}(-[1-5][0-9]{2})?"
EXPECTED_CODES = pattern(
    rf"{_CODE_OR_RANGE}(,{_CODE_OR_RANGE})*", "HTTP status codes like 200, 200,202 or 200-204", 64
)


def regex(value: Any) -> str:
    """A regular expression for an ACL. Backslash is refused: haproxy's parser unescapes it
    before the regex engine sees it, so write classes like [.] instead of \\."""
    text = MATCH_VALUE(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise GrammarError(f"{_shown(value)} is not a valid regular expression: {exc}") from None
    return text


def integer(low: int, high: int) -> Grammar:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GrammarError(f"expected an integer, got {_shown(value)}")
        if not low <= value <= high:
            raise GrammarError(f"{value} is out of range [{low}, {high}]")
        return value

    return check


PORT = integer(1, 65535)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise GrammarError(f"expected true or false, got {_shown(value)}")
    return value


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address in canonical form (no IPv6 zone: it is free text)."""
    text = _string(value, 45)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise GrammarError(f"{_shown(value)} is not an IP address") from None
    if getattr(address, "scope_id", None) is not None:
        raise GrammarError(f"{_shown(value)}: IPv6 zone ids are not allowed")
    return str(address)


def cidr(value: Any) -> str:
    """A network in canonical prefix form (host bits are cleared: 10.0.0.1/8 -> 10.0.0.0/8)."""
    text = _string(value, 49)
    if "%" in text:
        raise GrammarError(f"{_shown(value)}: IPv6 zone ids are not allowed")
    try:
        return ipaddress.ip_network(text, strict=False).with_prefixlen
    except ValueError:
        raise GrammarError(f"{_shown(value)} is not a network in CIDR form") from None


def one_of(enum_type: type[enum.Enum]) -> Grammar:
    """A member of enum_type, given as the member, its name or its value."""

    def check(value: Any) -> enum.Enum:
        if isinstance(value, enum_type):
            return value
        if isinstance(value, str):
            if value in enum_type.__members__:
                return enum_type[value]
            for member in enum_type:
                if member.value == value:
                    return member
        names = ", ".join(str(member.value) for member in enum_type)
        raise GrammarError(f"{_shown(value)} is not one of {names}")

    return check


def optional(grammar: Grammar) -> Grammar:
    def check(value: Any) -> Any:
        return None if value is None else grammar(value)

    return check


def each(grammar: Grammar, max_items: int = 1000) -> Grammar:
    """A list whose every item matches grammar."""

    def check(value: Any) -> list:
        if not isinstance(value, list | tuple):
            raise GrammarError(f"expected a list, got {_shown(value)}")
        if len(value) > max_items:
            raise GrammarError(f"more than {max_items} items")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(grammar(item))
            except GrammarError as exc:
                raise GrammarError(f"item {index}: {exc}") from None
        return out

    return check


def one_of_ints(*allowed: int) -> Grammar:
    def check(value: Any) -> int:
        if isinstance(value, bool) or value not in allowed:
            raise GrammarError(f"{_shown(value)} is not one of {', '.join(map(str, allowed))}")
        return value

    return check
