"""NATS (nats-py, core and JetStream): identity in message headers, current in each handler.

    from otel_identity_nats import NatsIdentityInstrumentor, continue_message

    NatsIdentityInstrumentor().instrument()

    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        await nc.publish("orders", b"...")        # also request() and JetStream publish()

    async def on_order(msg):                      # nc.subscribe("orders", cb=on_order)
        oi.get_identity()                         # the publisher's identity, or None

    msg = await sub.next_msg()                    # current until the next next_msg()

For messages the instrumentor does not see (JetStream ``fetch``, ``sub.messages``), scope
each one yourself:

    for msg in await psub.fetch(10):
        with continue_message(msg):
            await handle(msg)

A subscription's callbacks run in a task that copied the subscriber's context at
``subscribe()`` time; without this, every message would see that (stale) identity.
"""

from __future__ import annotations

from otel_identity_nats._instrumentor import (
    NatsIdentityInstrumentor,
    continue_message,
    message_handler,
)

__all__ = ["NatsIdentityInstrumentor", "continue_message", "message_handler"]
