"""The W3C baggage header codec: a strict parse, linear in the header's size, and an exact encoding.

    parsed = parse(environ["HTTP_BAGGAGE"], keep=frozenset({"user.id", "tenant.id"}))
    parsed.members["user.id"]                 # the decoded value, exactly as the sender set it
    header = encode({"user.id": "ada lovelace"}, keep=frozenset({"user.id"}))
    # 'user.id=ada%20lovelace'

The rules (``docs/wire-format.md`` is the reference for other languages):

* A member is ``key OWS "=" OWS value *( OWS ";" property )``. Keys are RFC 7230 tokens and are
  never percent-decoded: ``%75ser.id`` is a key of its own, not ``user.id``. Values are
  ``baggage-octet``s, percent-decoded once as UTF-8 (``+`` is a plus sign). Only OWS (space,
  tab) around the key, ``=``, the value and ``;`` is trimmed. Properties are dropped.
* A member that breaks a rule, or whose decoded value holds a control character (C0, DEL, C1),
  is refused: it is left out and its key is named in ``Parsed.refused``.
* A key given twice with equal values is one member (costing, against the limits, the bytes
  of every occurrence); with different values it is ambiguous: left out and named in
  ``Parsed.ambiguous`` (an identity key then rejects the hop).
* A header holding any character outside ASCII is garbled: a conforming sender percent-encodes
  every other octet, so such text was decoded by something (OpenTelemetry's ASGI getter falls
  back to ``unicode_escape`` for bytes that are not UTF-8, which turns ``\x75ser.id`` into
  ``user.id``) and none of its members can be trusted to be what was sent. Its identity members
  reject the hop (``Parsed.garbled``); the others are kept.
* Limits are the W3C minimums counted in bytes: 64 members, 8192 bytes. Members named in
  ``keep`` (identity) are never the ones dropped to make room.
* Encoding percent-encodes (UTF-8) every octet outside ``baggage-octet`` and also ``%`` and
  ``+``, so OpenTelemetry Python (``unquote_plus``), OpenTelemetry JS and a plain W3C decoder
  all read the exact value.

Every step is a single pass of ``str`` methods or of a regular expression made of one
character class (no backtracking), so hostile input costs what its length costs. Both
directions are memoized: identity baggage repeats across the requests of a session.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from otel_identity import _memo, _telemetry, names

MAX_MEMBERS = 64
MAX_BYTES = 8192
HEADER = "baggage"

_OWS = " \t"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_BAD_OR_CONTROL_ESCAPE = re.compile(
    r"%(?![0-9A-Fa-f]{2})|%[01][0-9A-Fa-f]|%7[Ff]|%[Cc]2%[89][0-9A-Fa-f]"
)
# C0, DEL and C1: never part of an id, and C1 is how terminals are driven.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Octets of baggage-octet that ``quote`` would escape but need not be ('%' and '+' excluded:
# they are escaped so that every decoder, with or without plus-as-space, agrees).
_SAFE = "!#$&'()*/:<=>?@[]^`{|}"
# Headers longer than this are parsed every time rather than remembered (bounded memory).
_MEMO_CHARS = 2 * MAX_BYTES
_MEMO_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one baggage list (one or several headers) holds.

    ``members``: the accepted members, key -> decoded value, in header order, within the limits.
    ``ambiguous``: keys given more than once with different values (left out of ``members``).
    ``refused``: keys of members that broke a rule (left out of ``members``).
    ``oversize``: the ``keep`` members alone did not fit the limits (they were left out too).
    ``dropped``: how many accepted members were left out to fit the limits.
    ``garbled``: the header held characters outside ASCII (see the module's rules).
    """

    # A plain dict (OpenTelemetry's ``baggage.get_all`` reads only a dict), shared by every
    # context the header is extracted into: never mutated.
    members: dict[str, str] = field(default_factory=dict)
    ambiguous: frozenset[str] = frozenset()
    refused: frozenset[str] = frozenset()
    oversize: bool = False
    dropped: int = 0
    garbled: bool = False

    def verdict(self, keys: frozenset[str]) -> str | None:
        """The reject reason for a hop whose identity members are ``keys``: ``malformed``
        when one of them was ambiguous or refused, or came in a garbled header; ``oversize``
        when they did not fit."""
        if (self.ambiguous or self.refused) and not keys.isdisjoint(self.ambiguous | self.refused):
            return names.REASON_MALFORMED
        if self.garbled and not keys.isdisjoint(self.members):
            return names.REASON_MALFORMED
        return names.REASON_OVERSIZE if self.oversize else None


EMPTY = Parsed()


def _decode(raw: str) -> str | None:
    """A value's text (percent-decoded once, UTF-8), or None when it breaks a rule."""
    if not _VALUE.fullmatch(raw):
        return None
    if "%" not in raw:
        return raw  # baggage-octets alone hold no control character
    # Bad escapes, and the escapes of every control character (C0 and DEL are one octet; C1
    # is U+0080-U+009F, %C2%80-%C2%9F in UTF-8), are refused before any decoding: the cost
    # of a flood of them stays one search.
    if _BAD_OR_CONTROL_ESCAPE.search(raw):
        return None
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(value) else value  # (belt and braces)


def _member(text: str) -> tuple[str, str | None]:
    """(key, value or None if refused) of one trimmed list member."""
    pair = text.partition(";")[0]  # properties are tolerated and dropped
    key, equals, raw = pair.partition("=")
    key = key.rstrip(_OWS)
    if not equals or not _TOKEN.fullmatch(key):
        return _short_key(key), None
    return key, _decode(raw.strip(_OWS))


def _short_key(key: str) -> str:
    # A refused key is reported, never used: bound what a hostile one costs to keep.
    return key[:64]


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _fits(used: int, count: int) -> bool:
    # ``used`` counts each member's bytes plus one separator; the last one has none.
    return used - 1 <= MAX_BYTES and count <= MAX_MEMBERS


def _fit(
    accepted: dict[str, tuple[str, int]], keep: frozenset[str]
) -> tuple[dict[str, str], bool, int]:
    """Members within the limits, ``keep`` members first: (members, oversize, dropped).

    When the ``keep`` members alone do not fit they are left out too (``oversize``)."""
    chosen = {key for key in accepted if key in keep}
    used = sum(accepted[key][1] + 1 for key in chosen)
    oversize = not _fits(used, len(chosen))
    if oversize:
        chosen, used = set(), 0
    for key, (_value, size) in accepted.items():
        if key not in keep and _fits(used + size + 1, len(chosen) + 1):
            chosen.add(key)
            used += size + 1
    members = {key: value for key, (value, _size) in accepted.items() if key in chosen}
    return members, oversize, len(accepted) - len(members)


def _members(header: str) -> tuple[dict[str, tuple[str, int]], set[str], set[str]]:
    """Every list member of ``header``: the accepted ones (key -> value and the bytes it
    costs), the keys sent with different values (ambiguous), the keys refused."""
    accepted: dict[str, tuple[str, int]] = {}
    ambiguous: set[str] = set()
    refused: set[str] = set()
    for raw in header.split(","):
        text = raw.strip(_OWS)
        if not text:
            continue  # an empty list element (",,") is no member
        key, value = _member(text)
        seen = accepted.get(key)
        if value is None:
            refused.add(key)
        elif seen is None:
            if key not in ambiguous:
                accepted[key] = (value, _size(text))
        elif seen[0] != value:
            ambiguous.add(key)
        else:  # one member, which costs the bytes of every time it was sent
            accepted[key] = (value, seen[1] + 1 + _size(text))
    for key in ambiguous:
        accepted.pop(key, None)
    return accepted, ambiguous, refused


def _parse(header: str, keep: frozenset[str]) -> Parsed:
    accepted, ambiguous, refused = _members(header)
    if refused or ambiguous:
        _telemetry.log_limited(
            "baggage.refused",
            "otel-identity: baggage members refused or ambiguous (first key %s); left out",
            _telemetry.short(min(refused | ambiguous)),
        )
    if _fits(sum(size + 1 for _value, size in accepted.values()), len(accepted)):
        members, oversize, dropped = {k: v for k, (v, _s) in accepted.items()}, False, 0
    else:
        members, oversize, dropped = _fit(accepted, keep)
    if not (members or ambiguous or refused or oversize):
        return EMPTY
    garbled = not header.isascii()
    return Parsed(members, frozenset(ambiguous), frozenset(refused), oversize, dropped, garbled)


_parsed: dict[tuple[str, frozenset[str]], Parsed] = {}
_last_long = threading.local()  # .entry: (header, keep, Parsed)


def parse(headers: str | Sequence[str] | None, keep: frozenset[str] = frozenset()) -> Parsed:
    """The members of one baggage header, or of several (one list), for limits keeping ``keep``.

    Never raises for any text; memoized for headers of ordinary size.
    """
    if not headers:
        return EMPTY
    if not isinstance(headers, str):
        # Several header lines are one list: joined, they are that list (and one memo key).
        headers = ",".join(h for h in headers if isinstance(h, str))
        if not headers:
            return EMPTY
    cached = _parsed.get((headers, keep))
    if cached is not None:
        return cached
    if len(headers) > _MEMO_CHARS:
        # Too long to keep in the table, but the same request may ask again (OpenTelemetry's
        # middleware, then ours): this thread's last long header is kept, one per thread.
        last = getattr(_last_long, "entry", None)
        if last is not None and last[1] == keep and last[0] == headers:
            return last[2]  # type: ignore[no-any-return]
        result = _parse(headers, keep)
        _last_long.entry = (headers, keep, result)
        return result
    return _memo.remember(_parsed, (headers, keep), _parse(headers, keep), _MEMO_ENTRIES)


def encode_member(key: str, value: object) -> str | None:
    """``key=value`` exactly encoded, or None for a member ``parse`` would refuse."""
    text = value if isinstance(value, str) else str(value)
    if not _TOKEN.fullmatch(key) or _CONTROL.search(text):
        return None
    try:
        return f"{key}={quote(text, safe=_SAFE, encoding='utf-8', errors='strict')}"
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
        return None


def member_size(key: str, value: object) -> int:
    """Bytes ``key=value`` takes in the header (0 for a member that cannot be sent)."""
    encoded = encode_member(key, value) if isinstance(key, str) else None
    return 0 if encoded is None else len(encoded)


def _encode(items: Iterable[tuple[str, object]], keep: frozenset[str]) -> str | None:
    accepted: dict[str, tuple[str, int]] = {}
    for key, value in items:
        member = encode_member(key, value) if isinstance(key, str) else None
        if member is not None:
            accepted[key] = (member, len(member))
    if _fits(sum(size + 1 for _text, size in accepted.values()), len(accepted)):
        members = [text for text, _size in accepted.values()]
    else:
        members = list(_fit(accepted, keep)[0].values())
    return ",".join(members) or None


_encoded: dict[tuple[tuple[tuple[str, object], ...], frozenset[str]], str | None] = {}
_MISSING = object()


def encode(members: Mapping[str, object], keep: frozenset[str] = frozenset()) -> str | None:
    """The header for ``members`` (None when nothing can be sent), within the limits, members
    named in ``keep`` kept first. Members ``parse`` would refuse are left out. Memoized."""
    try:
        key = (tuple(members.items()), keep)
        cached = _encoded.get(key, _MISSING)
    except TypeError:  # an unhashable value set by other code: encoded every time
        return _encode(members.items(), keep)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    return _memo.remember(_encoded, key, _encode(key[0], keep))
