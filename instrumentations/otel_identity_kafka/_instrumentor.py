"""``KafkaIdentityInstrumentor``: confluent-kafka and kafka-python, producer and consumer.

confluent-kafka's ``Producer``/``Consumer`` are C types whose methods cannot be patched, so,
as OpenTelemetry's own instrumentation does, the module attributes are replaced by Python
subclasses whose pass-through methods are then wrapped with wrapt. If OpenTelemetry's
confluent-kafka instrumentation is installed, its subclasses are wrapped too, so clients
created after either instrumentation (in either order) carry identity.

A polled message's context stays current until the same consumer polls again or closes:
that is the span of "the user's processing code" in a poll loop. Tokens are kept per consumer
and only detached on the thread that attached them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from otel_identity import instrumentation as oii
from otel_identity.instrumentation import hold, release
from otel_identity_kafka._helpers import identity_headers, message_context
from otel_identity_kafka.package import _instruments_any

_OTEL_MODULE = "opentelemetry.instrumentation.confluent_kafka"

# (class, method) -> wrapper, per library
_CONFLUENT_PRODUCER = (("produce", "produce"),)
_CONFLUENT_CONSUMER = (("poll", "poll"), ("consume", "leave"), ("close", "leave"))


def _with_headers(args: tuple[Any, ...], kwargs: dict[str, Any], index: int) -> Any:
    if len(args) > index:
        new_args = list(args)
        new_args[index] = identity_headers(args[index])
        return tuple(new_args), kwargs
    kwargs["headers"] = identity_headers(kwargs.get("headers"))
    return args, kwargs


def _produce_wrapper(index: int) -> Any:
    def produce(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if is_instrumentation_enabled():
            try:
                args, kwargs = _with_headers(args, kwargs, index)
            except Exception:  # noqa: BLE001 - send the message as given rather than fail
                oii.log_internal_error("kafka produce")
        return wrapped(*args, **kwargs)

    return produce


def _poll(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    release(instance)  # the previous message is done with, whatever comes next
    message = wrapped(*args, **kwargs)
    if message is not None and is_instrumentation_enabled():
        error = getattr(message, "error", None)
        if not (callable(error) and error() is not None):
            hold(instance, message_context(message))
    return message


def _leave_then_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    release(instance)  # not gated: what an enabled poll attached must come off
    return wrapped(*args, **kwargs)


_WRAPPERS: dict[str, Any] = {
    # produce(topic, value, key, partition, callback, on_delivery, timestamp, headers): the C
    # keyword list has both spellings of the callback, so headers is the eighth positional.
    "produce": _produce_wrapper(7),
    "send": _produce_wrapper(3),  # KafkaProducer.send(topic, value, key, headers, ...)
    "poll": _poll,
    "leave": _leave_then_call,
}


def _confluent_classes() -> tuple[type, type]:
    import confluent_kafka.cimpl

    class IdentityProducer(confluent_kafka.cimpl.Producer):  # type: ignore[misc]
        """confluent-kafka's Producer; ``produce`` adds trace and identity headers."""

        def produce(self, *args: Any, **kwargs: Any) -> Any:
            return super().produce(*args, **kwargs)

    class IdentityConsumer(confluent_kafka.cimpl.Consumer):  # type: ignore[misc]
        """confluent-kafka's Consumer; ``poll`` makes the message's identity current."""

        def poll(self, *args: Any, **kwargs: Any) -> Any:
            return super().poll(*args, **kwargs)

        def consume(self, *args: Any, **kwargs: Any) -> Any:
            return super().consume(*args, **kwargs)

        def close(self, *args: Any, **kwargs: Any) -> Any:
            return super().close(*args, **kwargs)

    return IdentityProducer, IdentityConsumer


class KafkaIdentityInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Identity in the headers of every produced message, current while one is processed."""

    _classes: tuple[type, type] | None = None
    _originals: tuple[type, type] | None = None
    _wrapped: list[tuple[Any, str]]

    def instrumentation_dependencies(self) -> Collection[str]:
        # Any one client is enough; with none installed, report all (a conflict).
        present = [r for r in _instruments_any if get_dependency_conflicts([r]) is None]
        return present or _instruments_any

    def _instrument(self, **kwargs: Any) -> None:
        self._wrapped = []
        if importlib.util.find_spec("confluent_kafka") is not None:
            self._instrument_confluent()
        if importlib.util.find_spec("kafka") is not None:
            self._wrap("kafka.producer.kafka", "KafkaProducer.send", "send")
            self._wrap("kafka.consumer.group", "KafkaConsumer.__next__", "poll")
            self._wrap("kafka.consumer.group", "KafkaConsumer.close", "leave")

    def _wrap(self, module: Any, name: str, wrapper: str) -> None:
        wrapt.wrap_function_wrapper(module, name, _WRAPPERS[wrapper])
        owner, _, attr = name.rpartition(".")
        if isinstance(module, str):
            module = importlib.import_module(module)
        self._wrapped.append((getattr(module, owner) if owner else module, attr))

    def _instrument_confluent(self) -> None:
        import confluent_kafka.cimpl

        module: Any = importlib.import_module("confluent_kafka")

        if KafkaIdentityInstrumentor._classes is None:
            KafkaIdentityInstrumentor._classes = _confluent_classes()
        producer_cls, consumer_cls = KafkaIdentityInstrumentor._classes
        targets: list[tuple[type, tuple[tuple[str, str], ...]]] = [
            (producer_cls, _CONFLUENT_PRODUCER),
            (consumer_cls, _CONFLUENT_CONSUMER),
        ]
        if importlib.util.find_spec(_OTEL_MODULE) is not None:
            # OpenTelemetry's instrumentation swaps in subclasses of the C types that would
            # bypass ours if installed after us: wrap them as well (nothing is duplicated, a
            # client is an instance of one of the two families only).
            otel = importlib.import_module(_OTEL_MODULE)
            targets.append((otel.AutoInstrumentedProducer, _CONFLUENT_PRODUCER))
            targets.append((otel.AutoInstrumentedConsumer, _CONFLUENT_CONSUMER))
        for cls, methods in targets:
            for method, wrapper in methods:
                self._wrap(cls, method, wrapper)
        if module.Producer is confluent_kafka.cimpl.Producer:
            self._originals = (module.Producer, module.Consumer)
            module.Producer = producer_cls
            module.Consumer = consumer_cls

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, attr in reversed(getattr(self, "_wrapped", [])):
            unwrap(owner, attr)
        self._wrapped = []
        if self._originals is not None and self._classes is not None:
            module: Any = importlib.import_module("confluent_kafka")

            # Put the C types back only where ours still stand (another instrumentation may
            # have replaced them since).
            if module.Producer is self._classes[0]:
                module.Producer = self._originals[0]
            if module.Consumer is self._classes[1]:
                module.Consumer = self._originals[1]
            self._originals = None
