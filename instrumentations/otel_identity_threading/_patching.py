"""Patches that stay reversible whatever else patches the same attribute, in any order.

``opentelemetry.instrumentation.utils.unwrap`` restores ``attr.__wrapped__`` of whatever is
outermost: with ``ThreadingInstrumentor`` on the same attribute, uninstrumenting out of load
order would remove the other instrumentor's wrapper and leave ours (or the reverse). So our
wrapper always sits *beneath* every other wrapt wrapper of the attribute, the position a later
``wrap_function_wrapper`` leaves it in anyway, and is spliced out of the chain wherever it is
(as ``wrapt.unwrap_object`` does). The other side's ``unwrap`` then always removes its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from wrapt import FunctionWrapper, wrap_function_wrapper

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

# wrapt's C and pure-Python proxies share this base; ``BaseObjectProxy`` is wrapt >= 2 only.
_PROXY_TYPES: tuple[type, ...] = (FunctionWrapper,)
try:
    from wrapt import BaseObjectProxy

    _PROXY_TYPES = (BaseObjectProxy,)
except ImportError:  # pragma: no cover - wrapt 1.x
    from wrapt import ObjectProxy

    _PROXY_TYPES = (ObjectProxy,)


def _is_proxy(obj: object) -> bool:
    return isinstance(obj, _PROXY_TYPES)


def _chain(owner: type, name: str) -> list[Any]:
    """The wrapt wrappers of ``owner.name``, outermost first (plain objects end the walk)."""
    chain: list[Any] = []
    node = owner.__dict__.get(name)
    while node is not None and _is_proxy(node) and len(chain) < 64:
        chain.append(node)
        node = getattr(node, "__wrapped__", None)
    return chain


def is_ours(node: object, wrapper: Wrapper) -> bool:
    return _is_proxy(node) and getattr(node, "_self_wrapper", None) is wrapper


def find(owner: type, name: str, wrapper: Wrapper) -> Any:
    """Our wrapper in the chain of ``owner.name``, or None."""
    return next((n for n in _chain(owner, name) if is_ours(n, wrapper)), None)


def wrap_beneath(owner: type, name: str, wrapper: Wrapper) -> None:
    """Wrap ``owner.name`` with ``wrapper``, beneath any wrapt wrapper already there."""
    chain = _chain(owner, name)
    if any(is_ours(n, wrapper) for n in chain):
        return
    if not chain:
        wrap_function_wrapper(owner, name, wrapper)
        return
    if is_ours(chain[-1].__wrapped__, wrapper):  # reached through a wrapper we already hold
        return
    deepest = chain[-1]
    deepest.__wrapped__ = FunctionWrapper(deepest.__wrapped__, wrapper)


def unwrap_ours(owner: type, name: str, wrapper: Wrapper) -> bool:
    """Remove ``wrapper`` from ``owner.name`` wherever it sits; False if it could not be."""
    chain = _chain(owner, name)
    for position, node in enumerate(chain):
        if not is_ours(node, wrapper):
            continue
        if position == 0:
            unwrap(owner, name)
            if owner.__dict__.get(name) is not node.__wrapped__:  # unwrap bound it on the way
                setattr(owner, name, node.__wrapped__)
        else:
            chain[position - 1].__wrapped__ = node.__wrapped__
        return True
    # Not found: someone replaced the attribute wholesale (then our wrapper is gone with it),
    # or a non-wrapt patch sits on top of ours (then callers disable it through a flag).
    return False
