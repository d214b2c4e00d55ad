"""gRPC metadata as a propagation carrier: the one Getter/Setter pair for this transport.

Metadata is a sequence of ``(key, value)`` pairs: keys are lower case, a key may repeat, and
values of ``-bin`` keys are bytes. The propagators only ever ask for text keys, so bytes values
are skipped rather than decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.propagators.textmap import Getter, Setter

Metadata = Iterable[Any]  # pairs; Any because grpc hands out its own tuple types


def pairs(metadata: Metadata | None) -> list[Any]:
    """The caller's metadata as a list we may edit: pairs given as lists become tuples, any
    other item is kept as it is (grpc reports it to the caller as it would without us)."""
    if not metadata:
        return []
    return [tuple(item) if isinstance(item, list) and len(item) == 2 else item for item in metadata]


class MetadataGetter(Getter[Metadata]):
    """Reads text values of a key; tolerates any shape of input without raising."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        found = []
        try:
            # grpc hands the server well-formed pairs: the common case, one pass (a loop, not
            # a comprehension: that would be one more call per read before Python 3.12).
            for k, v in carrier:
                if k == key and type(v) is str:
                    found.append(v)
        except (TypeError, ValueError):
            found = [
                item[1]
                for item in carrier
                if isinstance(item, (tuple, list))
                and len(item) == 2
                and item[0] == key
                and isinstance(item[1], str)
            ]
        return found or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [
            item[0]
            for item in carrier
            if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
        ]


class MetadataSetter(Setter[list[Any]]):
    """Writes one value per key: an earlier value of the same key (injected by someone else,
    or sent by the caller) is replaced, so the receiver never sees two baggage headers."""

    def set(self, carrier: list[Any], key: str, value: str) -> None:
        key = key.lower()
        carrier[:] = [
            item
            for item in carrier
            if not (isinstance(item, tuple) and len(item) == 2 and item[0] == key)
        ]
        carrier.append((key, value))


getter = MetadataGetter()
setter = MetadataSetter()


def header(metadata: Metadata, key: str) -> str:
    """The text values of ``key`` in ``metadata`` as one header, joined with "," as a list of
    header lines is ("" when there is none): what ``getter.get`` reads."""
    values = getter.get(metadata, key)
    return ",".join(values) if values else ""
