"""Settings: one immutable object, read from ``OTEL_IDENTITY_*`` at first use, changed in code.

    import otel_identity as oi
    oi.configure(tenant_key="org.id", required_hops=["http.server"])
    oi.get_settings().tenant_key  # 'org.id'

Nothing is read at import: the environment is consulted the first time a setting is needed,
so an application may set variables (or call ``configure``) after importing the library.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
import ipaddress
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from otel_identity._errors import ConfigurationError

InboundPolicy = Literal["trust", "verify", "strip"]
AttributeMode = Literal["id", "hash", "none"]

HOP_KINDS: frozenset[str] = frozenset(
    {
        "http.server",
        "http.client",
        "grpc.server",
        "grpc.client",
        "thread",
        "process",
        "queue.publish",
        "queue.consume",
        "task",
        "manual",
    }
)

DEFAULT_EGRESS_ALLOW: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "169.254.0.0/16",
    "fe80::/10",
    "localhost",
    "<single-label>",
    "*.svc",
    "*.svc.cluster.local",
    "*.internal",
    "*.local",
)

_ENV_PREFIX = "OTEL_IDENTITY_"


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration. Build new ones with ``configure``; never mutate."""

    resolver: str | Callable[..., Any] | None = None
    user_key: str = "user.id"
    tenant_key: str = "tenant.id"
    session_key: str = "session.id"
    roles_key: str = "user.roles"
    sig_key: str = "identity.sig"
    required_hops: frozenset[str] = frozenset(
        {"http.server", "grpc.server", "queue.consume", "task"}
    )
    anonymous_routes: tuple[str, ...] = ()
    inbound: InboundPolicy | None = None  # None: "verify" when signing keys are set, else "trust"
    signing_keys: Mapping[str, bytes] = field(default_factory=dict)
    token_ttl: int = 300
    egress_allow: tuple[str, ...] = DEFAULT_EGRESS_ALLOW
    egress_strip_all_baggage: bool = False
    span_attributes: AttributeMode = "id"

    @property
    def effective_inbound(self) -> InboundPolicy:
        if self.inbound is not None:
            return self.inbound
        return "verify" if self.signing_keys else "trust"

    @property
    def identity_keys(self) -> tuple[str, str, str, str]:
        return (self.user_key, self.tenant_key, self.session_key, self.roles_key)


_FIELDS = {f.name for f in dataclasses.fields(Settings)}
_lock = threading.Lock()
# The effective settings, None until first use. Hot paths read it in place
# (``current or get_settings()``): a call less on every span.
current: Settings | None = None
_listeners: list[Callable[[Settings | None], None]] = []


def get_settings() -> Settings:
    """The effective settings; the environment is read on the first call."""
    settings = current
    if settings is not None:
        return settings
    with _lock:
        if current is None:
            _install(_from_environment(os.environ))
        return current  # type: ignore[return-value]  # _install set it


def configure(**settings: Any) -> Settings:
    """Change settings in code; unnamed settings keep their current (or environment) value.

    Values are validated the same way as the environment's, so ``configure(required_hops=
    "http.server,thread")`` and ``configure(required_hops=["http.server", "thread"])`` agree.
    Raises ``ConfigurationError`` on an unknown name or an invalid value.
    """
    unknown = set(settings) - _FIELDS
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    base = get_settings()
    parsed = {name: _parse(name, value) for name, value in settings.items()}
    new = dataclasses.replace(base, **parsed)
    _validate(new)
    with _lock:
        _install(new)
    return new


def reset_settings() -> None:
    """Forget code changes; the environment is read again at next use (for tests)."""
    global current
    with _lock:
        current = None
        for listener in _listeners:
            listener(None)


def on_change(listener: Callable[[Settings | None], None]) -> None:
    """Call ``listener(settings)`` whenever settings change; None means 'read them again'."""
    _listeners.append(listener)


def _install(settings: Settings) -> None:
    global current
    current = settings
    for listener in _listeners:
        listener(settings)


def _from_environment(environ: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        env_name = _ENV_PREFIX + name.upper()
        raw = environ.get(env_name)
        if name == "signing_keys" and raw is None and environ.get(env_name + "_FILE"):
            path = environ[env_name + "_FILE"]
            try:
                with open(path, encoding="utf-8") as handle:
                    raw = handle.read().strip()
            except OSError as exc:
                raise ConfigurationError(f"{env_name}_FILE: cannot read {path!r}: {exc}") from exc
        if raw is None or raw.strip() == "":
            continue
        try:
            values[name] = _parse(name, raw)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{env_name}: {exc}") from exc
    settings = Settings(**values)
    _validate(settings)
    return settings


def _split(value: str | Iterable[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item and item.strip())


def _parse(name: str, value: Any) -> Any:
    if name == "resolver":
        if value is None or callable(value):
            return value
        text = str(value).strip()
        if ":" not in text:
            raise ConfigurationError(f"resolver must be 'module:function', got {text!r}")
        return text
    if name in ("user_key", "tenant_key", "session_key", "roles_key", "sig_key"):
        text = str(value).strip()
        if not text or any(c in text for c in ' ,;="\\') or not text.isascii():
            raise ConfigurationError(f"{name} must be a W3C baggage key, got {text!r}")
        return text
    if name == "required_hops":
        hops = frozenset(_split(value))
        unknown = hops - HOP_KINDS
        if unknown:
            raise ConfigurationError(f"unknown hop kind(s): {', '.join(sorted(unknown))}")
        return hops
    if name == "anonymous_routes":
        return _split(value)
    if name == "inbound":
        if value is None:
            return None
        text = str(value).strip().lower()
        if text not in ("trust", "verify", "strip"):
            raise ConfigurationError(f"inbound must be trust, verify or strip, got {text!r}")
        return text
    if name == "signing_keys":
        return _parse_keys(value)
    if name == "token_ttl":
        try:
            ttl = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"token_ttl must be whole seconds, got {value!r}") from None
        if ttl <= 0:
            raise ConfigurationError("token_ttl must be positive")
        return ttl
    if name == "egress_allow":
        entries = _split(value)
        for entry in entries:
            _check_egress_entry(entry)
        return entries
    if name == "egress_strip_all_baggage":
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    if name == "span_attributes":
        text = str(value).strip().lower()
        if text not in ("id", "hash", "none"):
            raise ConfigurationError(f"span_attributes must be id, hash or none, got {text!r}")
        return text
    raise ConfigurationError(f"unknown setting {name!r}")  # pragma: no cover - guarded above


def import_object(spec: str) -> Any:
    """The object named ``module:attribute.path`` (what ``OTEL_IDENTITY_*`` callables name).

    Raises whatever importing or looking up raises; callers decide how loud a bad setting is.
    """
    module_name, _, attr = spec.partition(":")
    target: Any = importlib.import_module(module_name.strip())
    for part in attr.strip().split("."):
        if part:
            target = getattr(target, part)
    return target


def _parse_keys(value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        items = []
        for entry in _split(value):
            kid, sep, encoded = entry.partition(":")
            if not sep:
                raise ConfigurationError("signing_keys entries must be 'kid:base64key'")
            items.append((kid.strip(), encoded.strip()))
    keys: dict[str, bytes] = {}
    for kid, raw in items:
        if not kid or "." in kid or not kid.isascii():
            raise ConfigurationError(f"signing key id {kid!r} must be ASCII without '.'")
        if isinstance(raw, bytes):
            key = raw
        else:
            try:
                key = base64.b64decode(str(raw), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigurationError(f"signing key {kid!r} is not valid base64") from None
        if len(key) < 16:
            raise ConfigurationError(f"signing key {kid!r} is shorter than 16 bytes")
        keys[kid] = key
    return keys


def _check_egress_entry(entry: str) -> None:
    if entry == "<single-label>" or entry.startswith("*."):
        return
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(f"egress_allow: {entry!r} is not a valid CIDR") from None


def _validate(settings: Settings) -> None:
    keys = (*settings.identity_keys, settings.sig_key)
    if len(set(keys)) != len(keys):
        raise ConfigurationError("identity baggage keys must be distinct")
    if settings.inbound == "verify" and not settings.signing_keys:
        raise ConfigurationError("inbound='verify' needs signing_keys")
