"""RabbitMQ (AMQP 0-9-1) with pika and aio-pika: each delivery runs under its sender's identity.

    from otel_identity_amqp import AmqpIdentityInstrumentor, continue_message

    AmqpIdentityInstrumentor().instrument()

    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        channel.basic_publish("", "orders", body)        # pika: identity in properties.headers
        await exchange.publish(Message(body), "orders")    # aio-pika: in message.headers

    def on_message(ch, method, properties, body):        # pika basic_consume callback
        oi.get_identity()                                # the sender's identity, or None

    async def on_message(message):                       # aio-pika Queue.consume callback
        ...

    for method, properties, body in channel.consume("orders"):
        ...                                              # current until the next delivery

    async with queue.iterator() as messages:
        async for message in messages:                   # the same for aio-pika
            ...

For deliveries the instrumentor does not see (``basic_get``, ``queue.get()``, a callback
registered elsewhere), scope each one yourself:

    method, properties, body = channel.basic_get("orders")
    with continue_message(properties, route="orders"):
        handle(body)

A delivery without identity runs without any (never the previous one's) and records
``identity.missing``; a callback that raises leaves nothing behind.
"""

from __future__ import annotations

from otel_identity_amqp._helpers import continue_message, message_handler
from otel_identity_amqp._instrumentor import AmqpIdentityInstrumentor

__all__ = ["AmqpIdentityInstrumentor", "continue_message", "message_handler"]
