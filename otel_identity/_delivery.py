"""A broker consumer's hop: the ``queue.consume`` context of a delivered message.

    ctx = delivery_context(message, lambda m: (m.headers, m.topic), where="kafka")
    hold(consumer, ctx)       # a poll loop: current until the consumer hands out the next one

A consumer with a block around the user's processing attaches the context for that block
(``_runtime.attached``); one that hands out a message per call (Kafka's poll, NATS's
next_msg) holds it on the consumer until the next call or close.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from otel_identity import _telemetry, names
from otel_identity._headers import headers_getter
from otel_identity._receiving import extract


def delivery_context(
    message: object, read: Callable[[Any], tuple[object, object]], *, where: str
) -> Context:
    """The ``queue.consume`` hop of one delivered message, through ``extract``.

    ``read(message)`` gives its headers (any shape above) and its route (queue, topic or
    subject, for the anonymous-route rule). A message it cannot read is logged as ``where``
    and hops without identity: an odd message object never breaks the consumer.
    """
    try:
        headers, route = read(message)
    except Exception:  # noqa: BLE001
        _telemetry.log_internal_error(where)
        headers, route = None, None
    return extract(
        headers if headers is not None else (),
        headers_getter,
        hop=names.HOP_QUEUE_CONSUME,
        route=route if isinstance(route, str) else None,
    )


# -- poll loops --------------------------------------------------------------------------------
#
# A consumer that hands out one message per call (Kafka's poll, NATS's next_msg, a
# ``for delivery in channel.consume()`` loop) has no block around the user's processing code:
# the message's context is attached when the message is handed out and stays current until
# the same consumer hands out the next one (or is closed).

_HELD = "_otel_identity_held"


def hold(owner: object, ctx: Context) -> None:
    """Attach ``ctx`` until ``release(owner)``; what ``owner`` held before is released first."""
    release(owner)
    token = otel_context.attach(ctx)
    try:
        owner.__dict__[_HELD] = (threading.get_ident(), token, ctx)
    except AttributeError:  # no place to remember it: better no identity than a stale one
        otel_context.detach(token)


def release(owner: object) -> None:
    """Detach what ``owner`` holds, if any, and only while it is still the current context:
    if the code around the loop has already unwound past it (a ``with`` block that ended
    between polls), resetting to what was current at attach time would bring that block's
    stale context back."""
    held = getattr(owner, "__dict__", {}).pop(_HELD, None)
    if (
        held is not None
        and held[0] == threading.get_ident()
        and otel_context.get_current() is held[2]
    ):
        otel_context.detach(held[1])
