"""Message headers of every shape: one getter and one setter for every broker.

Message brokers hand headers over in a handful of shapes; the getter and setter here read and
write all of them, so every queue integration goes through ``oi.inject``/``oi.extract`` with the
same pair:

    headers: list[tuple[str, bytes]] = []                      # Kafka style
    oi.inject(headers, headers_setter, hop="queue.publish")
    ...
    with oi.continue_from(msg_headers, headers_getter, hop="queue.consume"):
        handle(message)

Shapes: a mapping of ``str`` or ``bytes`` values (a value may also be a list of them), and a
sequence of ``(key, value)`` pairs whose keys and values are ``str`` or ``bytes`` (Kafka; a key
may repeat: the first wins on read, a write replaces every earlier entry). Bytes are decoded as
UTF-8 with replacement, anything else is ignored: headers come from the wire and a hostile
value must never raise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Literal

from opentelemetry.propagators.textmap import Getter, Setter

from otel_identity import _telemetry

ValueType = Literal["auto", "str", "bytes"]


def header_text(value: object) -> str | None:
    """A header value as text: ``str`` as is, ``bytes`` decoded leniently, anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return None


def _key_text(key: object) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "replace")
    return None


def _values(value: object) -> list[str] | None:
    text = header_text(value)
    if text is not None:
        return [text]
    if isinstance(value, (list, tuple)):
        texts = [t for t in (header_text(v) for v in value) if t is not None]
        return texts or None
    return None


def _pairs(carrier: object) -> Iterator[tuple[str, object]]:
    """(key, value) of a sequence of pairs; malformed entries are skipped, never raised on."""
    if not isinstance(carrier, (list, tuple)):
        return
    for entry in carrier:
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            key = _key_text(entry[0])
            if key is not None:
                yield key, entry[1]


class HeadersGetter(Getter[Any]):
    """Reads any header shape (see the module docstring). Keys match exactly, then ignoring
    case: some brokers and proxies capitalise header names on the way."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        try:
            return self._get(carrier, key)
        except Exception:  # noqa: BLE001 - a hostile carrier (odd __getitem__, say) must not raise
            _telemetry.log_internal_error("HeadersGetter.get")
            return None

    def keys(self, carrier: Any) -> list[str]:
        try:
            if isinstance(carrier, Mapping):
                return [k for k in (_key_text(k) for k in carrier) if k is not None]
            return [key for key, _ in _pairs(carrier)]
        except Exception:  # noqa: BLE001
            _telemetry.log_internal_error("HeadersGetter.keys")
            return []

    @staticmethod
    def _get(carrier: Any, key: str) -> list[str] | None:
        if isinstance(carrier, Mapping):
            if key in carrier:
                return _values(carrier[key])
            folded = key.lower()
            for name, value in carrier.items():
                name_text = _key_text(name)
                if name_text is not None and name_text.lower() == folded:
                    return _values(value)
            return None
        fallback: object = None
        found = False
        folded = key.lower()
        for name, value in _pairs(carrier):
            if name == key:
                return _values(value)
            if not found and name.lower() == folded:
                fallback, found = value, True
        return _values(fallback) if found else None


class HeadersSetter(Setter[Any]):
    """Writes into a mutable mapping or a list of pairs.

    ``value_type`` chooses what a value is written as: ``"str"``, ``"bytes"``, or ``"auto"``
    (default): like the carrier's existing values, else ``str`` in a mapping and ``bytes`` in
    a list (Kafka clients take bytes). A carrier that cannot be written to is logged, once,
    and left alone: publishing must not fail because of identity.
    """

    def __init__(self, value_type: ValueType = "auto") -> None:
        if value_type not in ("auto", "str", "bytes"):
            raise ValueError("value_type must be 'auto', 'str' or 'bytes'")
        self.value_type: ValueType = value_type

    def set(self, carrier: Any, key: str, value: str) -> None:
        try:
            if isinstance(carrier, MutableMapping):
                carrier[key] = self._encode(value, carrier.values(), as_bytes=False)
            elif isinstance(carrier, list):
                self._set_pair(carrier, key, value)
            else:
                _telemetry.log_once(
                    logging.WARNING,
                    ("carrier", type(carrier).__name__),
                    "otel-identity: cannot write headers into a %s; pass a dict or a list",
                    type(carrier).__name__,
                )
        except Exception:  # noqa: BLE001
            _telemetry.log_internal_error("HeadersSetter.set")

    def _encode(self, value: str, existing: Iterable[object], *, as_bytes: bool) -> str | bytes:
        mode = self.value_type
        if mode == "auto":
            for old in existing:
                if isinstance(old, (bytes, bytearray)):
                    as_bytes = True
                    break
                if isinstance(old, str):
                    as_bytes = False
                    break
        elif mode == "bytes":
            as_bytes = True
        else:
            as_bytes = False
        return value.encode("utf-8") if as_bytes else value

    def _set_pair(self, carrier: list[Any], key: str, value: str) -> None:
        encoded = self._encode(value, (v for _, v in _pairs(carrier)), as_bytes=True)
        first: int | None = None
        index = 0
        while index < len(carrier):
            entry = carrier[index]
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and _key_text(entry[0]) == key:
                if first is None:
                    first = index
                    carrier[index] = (key, encoded)
                else:
                    del carrier[index]
                    continue
            index += 1
        if first is None:
            carrier.append((key, encoded))


headers_getter = HeadersGetter()
headers_setter = HeadersSetter()
text_headers_setter = HeadersSetter("str")
bytes_headers_setter = HeadersSetter("bytes")
