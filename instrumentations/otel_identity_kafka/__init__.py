"""Kafka: producers send identity in message headers; consumers run each message under it.

OpenTelemetry's Kafka instrumentations link the consumer's span to the producer but never make
the producer's context (baggage, so identity) current in the code that processes the message.
This package does, for confluent-kafka and kafka-python:

    from otel_identity_kafka import KafkaIdentityInstrumentor, continue_message

    KafkaIdentityInstrumentor().instrument()     # before creating producers and consumers

    with oi.use_identity(user_id="u-1", tenant_id="acme"):
        producer.produce("orders", value)        # headers carry trace and identity

    while running:
        msg = consumer.poll(1.0)                 # instrumented: msg's identity is now current,
        handle(msg)                              # until the next poll() or close()

Without the instrumentor, or for ``consume()`` batches and other clients, scope it yourself:

    for msg in consumer.consume(100, 1.0):
        with continue_message(msg):              # identity of this message, or none at all
            handle(msg)

    @message_handler                              # the same, as a decorator of fn(msg, ...)
    def handle(msg): ...

    producer.produce("orders", value, headers=identity_headers())   # uninstrumented producer

A message without identity runs without any (never the previous message's) and records
``identity.missing``; a handler that raises leaves nothing behind.
"""

from __future__ import annotations

from otel_identity_kafka._helpers import (
    continue_message,
    identity_headers,
    message_handler,
    message_headers,
)
from otel_identity_kafka._instrumentor import KafkaIdentityInstrumentor

__all__ = [
    "KafkaIdentityInstrumentor",
    "continue_message",
    "identity_headers",
    "message_handler",
    "message_headers",
]
