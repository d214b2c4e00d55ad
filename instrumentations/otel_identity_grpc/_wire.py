"""Egress at the wire: what a call's metadata may carry to its target, decided last.

    carrier = [("baggage", "user.id=u-1,feature=blue")]
    stripped, address = filter_metadata(carrier, "ipv4:127.0.0.2:50051")
    # carrier == [("baggage", "feature=blue")], stripped is True, address == "127.0.0.2"

Identity must never leave for a target off the egress allow list, whoever injected it: our
interceptor, OpenTelemetry's (before or after ours), or the application. So the decision is
taken on the metadata itself, as it goes to the wire, and ``identity.stripped`` is recorded
only when identity members were in it and were removed (never for identity that left).

For sync channels the filter sits under every interceptor: ``GrpcIdentityInstrumentor``
wraps the four method factories of grpc's own channel class (``grpc._channel.Channel``, a
private class, patched here alone; ``internals_known()`` says whether this grpc has it, and a
test fails loudly when an upgrade changes it). Without it (or without the instrumentor) our
client interceptors filter at their own place in the chain. This module is the one place the
gRPC package uses private core helpers (``otel_identity._*``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.baggage import get_all
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import default_getter, default_setter

from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity.instrumentation import baggage_step_displaced, identity_keys, strip_for_egress

HOP = names.HOP_GRPC_CLIENT
_BAGGAGE = "baggage"
_FACTORIES = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")

# Whether the wire filter is installed under every sync channel (set by the instrumentor).
active = False


def judge(target: str) -> tuple[bool, str]:
    """Whether identity may go to ``target``, and the ``server.address`` to report."""
    settings = oii.current_settings()
    allowed, address = oii.judge_destination(target, settings.egress_allow)
    return allowed and not baggage_step_displaced(), address


def _is_baggage(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and item[0] == _BAGGAGE


def filter_metadata(carrier: list[Any], target: str | None) -> tuple[bool, str]:
    """Remove from ``carrier`` (in place) what it may not carry to ``target``.

    Every ``baggage`` entry is decoded together (with the global propagator), identity (or
    all baggage, if so configured) removed, and what is left written back as one entry, or
    none when nothing is left. Returns whether identity members were removed, and the
    ``server.address`` of the target. Unreadable baggage goes nowhere outside the list.
    """
    if target is None:
        return False, ""
    allowed, address = judge(target)
    if allowed:
        return False, address
    values = [item[1] for item in carrier if _is_baggage(item)]
    if not values:
        return False, address
    carrier[:] = [item for item in carrier if not _is_baggage(item)]
    texts = [v for v in values if isinstance(v, str)]
    if not texts:
        return False, address
    keep = frozenset(identity_keys())
    sent, _oversize = oii.propagator_extract({_BAGGAGE: ",".join(texts)}, default_getter, keep)
    members = get_all(sent)
    stripped = not keep.isdisjoint(members)
    kept = strip_for_egress(sent, target, hop=HOP, record=False)
    remaining = get_all(kept)
    if remaining:
        encoded: dict[str, str] = {}
        oii.propagator_inject(encoded, oii.baggage_context(dict(remaining)), default_setter)
        carrier.extend((key.lower(), value) for key, value in encoded.items())
    return stripped, address


def filter_or_drop(carrier: list[Any], target: str) -> tuple[bool, str]:
    """``filter_metadata``, never raising: on an internal error no baggage goes at all."""
    try:
        return filter_metadata(carrier, target)
    except Exception:  # noqa: BLE001 - the call goes out; identity fails closed
        oii.log_internal_error("grpc.client.egress")
        carrier[:] = [item for item in carrier if not _is_baggage(item)]
        return False, oii.UNREADABLE_DESTINATION


def without_identity(ctx: Context, target: str) -> Context:
    """``ctx`` as the interceptors nearer the wire may see it for ``target``, off the list.
    Not recorded: ``filter_metadata`` says what was removed from what leaves."""
    return strip_for_egress(ctx, target, hop=HOP, record=False)


def record_stripped(address: str, span: trace.Span | None = None) -> None:
    oii.record_stripped(span if span is not None else trace.get_current_span(), HOP, address)


def filtered(metadata: Any, target: str) -> Any:
    """``metadata`` as it may go to ``target`` (the same object when nothing changes); records
    ``identity.stripped`` on the current span when identity was removed. Never raises."""
    try:
        if not metadata or judge(target)[0]:
            return metadata  # the common case: nothing to decide on the request path
        given = list(metadata)
        carrier = [tuple(i) if isinstance(i, list) and len(i) == 2 else i for i in given]
        stripped, address = filter_metadata(carrier, target)
        if not stripped and carrier == given:
            return metadata
        if stripped:
            record_stripped(address)
        return tuple(carrier)
    except Exception:  # noqa: BLE001 - the call goes out; identity fails closed
        oii.log_internal_error("grpc.client.wire")
        try:
            return tuple(i for i in metadata if not _is_baggage(tuple(i)))
        except Exception:  # noqa: BLE001
            return ()


# --- under every sync channel: grpc's own channel class -----------------------------------


def _channel_class() -> Any:
    try:
        from grpc import _channel
    except ImportError:  # pragma: no cover - every grpcio release has it
        return None
    return getattr(_channel, "Channel", None)


def internals_known() -> bool:
    """Whether this grpc has the private channel class the wire filter wraps, with its four
    method factories (a test turns a False here into a failure)."""
    cls = _channel_class()
    return cls is not None and all(callable(getattr(cls, name, None)) for name in _FACTORIES)


class CallShapes:
    """A wrapped multi-callable: each call shape of the one it wraps (``_inner``) goes through
    ``_send``; everything else is the wrapped one's."""

    __slots__ = ()
    _inner: Any

    def _send(self, invoke: Callable[..., Any], request: Any, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._send(self._inner, request, args, kwargs)

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._send(self._inner.with_call, request, args, kwargs)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._send(self._inner.future, request, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet: no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self._inner, name)


class WireCallable(CallShapes):
    """One method of a real channel: the metadata of each call filtered for the target."""

    __slots__ = ("_allowed_settings", "_allowed_textmap", "_inner", "_target")

    def __init__(self, inner: Any, target: str) -> None:
        self._inner = inner
        self._target = target
        # The settings and global textmap under which the target was last found allowed:
        # the common case is two lookups per call (settings are replaced, never changed, by
        # configure(); a textmap that displaces our baggage step is a new object).
        self._allowed_settings: object = None
        self._allowed_textmap: object = None

    def _send(self, invoke: Callable[..., Any], request: Any, args: Any, kwargs: Any) -> Any:
        settings, textmap = oii.current_settings(), propagate.get_global_textmap()
        if not active or (settings is self._allowed_settings and textmap is self._allowed_textmap):
            return invoke(request, *args, **kwargs)
        if judge(self._target)[0]:
            self._allowed_settings, self._allowed_textmap = settings, textmap
            return invoke(request, *args, **kwargs)
        # (request, timeout=None, metadata=None, ...): metadata may come positionally.
        if len(args) >= 2:
            args = (args[0], filtered(args[1], self._target), *args[2:])
        elif kwargs.get("metadata"):
            kwargs["metadata"] = filtered(kwargs["metadata"], self._target)
        return invoke(request, *args, **kwargs)


def _wrap_factory(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    inner = wrapped(*args, **kwargs)
    target = getattr(instance, "_target", None)
    if not active or not isinstance(target, str):
        return inner
    return WireCallable(inner, target)


def install() -> bool:
    """Put the filter under every sync channel; False when this grpc has no known place."""
    global active
    import wrapt

    cls = _channel_class()
    if not internals_known():
        return False
    for name in _FACTORIES:
        if getattr(getattr(cls, name), "_self_wrapper", None) is not _wrap_factory:
            wrapt.wrap_function_wrapper(cls, name, _wrap_factory)
    active = True
    return True


def uninstall() -> None:
    global active
    active = False
    cls = _channel_class()
    if cls is None:
        return
    for name in _FACTORIES:
        function: Any = getattr(cls, name, None)
        if getattr(function, "_self_wrapper", None) is _wrap_factory:
            setattr(cls, name, function.__wrapped__)
