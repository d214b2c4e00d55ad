"""Settings: one immutable object, read from ``OTEL_IDENTITY_*`` at first use, changed in code.

    import otel_identity as oi
    oi.configure(tenant_key="org.id", required_hops=["http.server"])
    oi.get_settings().tenant_key  # 'org.id'

Nothing is read at import: the environment is consulted the first time a setting is needed,
so an application may set variables (or call ``configure``) after importing the library.

An invalid environment is refused with one clear ``ConfigurationError`` (``otel-identity
doctor`` exits 2 on it). In a running app that error is logged once, and every identity path
fails closed until it is fixed: nothing is sent, nothing is accepted, nothing raises into a
request (the request paths catch it; see ``_telemetry.log_internal_error``).
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

from otel_identity import _keys
from otel_identity._errors import ConfigurationError
from otel_identity._telemetry import log_configuration_error

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
    # HMAC keys; a Mapping whose repr shows key ids only (key material is never printed)
    signing_keys: Mapping[str, bytes] = field(default_factory=_keys.HmacKeys)
    keys_file: str | None = None  # a JWK Set, re-read as it changes (see _keys)
    token_ttl: int = 300
    queue_token_ttl: int = 86400
    egress_allow: tuple[str, ...] = DEFAULT_EGRESS_ALLOW
    egress_strip_all_baggage: bool = False
    span_attributes: AttributeMode = "id"
    # Whether any signing or verification key is configured: derived, read on every
    # outgoing hop, so computed once rather than by a property each time.
    has_keys: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        if not isinstance(self.signing_keys, _keys.HmacKeys):  # (built directly, not parsed)
            object.__setattr__(self, "signing_keys", _keys.HmacKeys(self.signing_keys))
        object.__setattr__(self, "has_keys", bool(self.signing_keys) or bool(self.keys_file))

    @property
    def effective_inbound(self) -> InboundPolicy:
        if self.inbound is not None:
            return self.inbound
        return "verify" if self.has_keys else "trust"

    @property
    def identity_keys(self) -> tuple[str, str, str, str]:
        return (self.user_key, self.tenant_key, self.session_key, self.roles_key)


_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.init}
_lock = threading.Lock()
# The effective settings, None until first use. Hot paths read it in place
# (``current or get_settings()``): a call less on every span.
current: Settings | None = None
# Why the environment was refused, once it was: the request paths ask for settings on every
# call while it stays broken, and re-reading the environment each time would cost more than
# the request. reset_settings() forgets it.
_refused: ConfigurationError | None = None


def get_settings() -> Settings:
    """The effective settings; the environment is read on the first call."""
    settings = current
    if settings is not None:
        return settings
    global _refused
    with _lock:
        if current is None:
            if _refused is not None:
                raise ConfigurationError(str(_refused))
            try:
                _install(_from_environment(os.environ))
            except ConfigurationError as exc:
                _refused = exc
                log_configuration_error(exc)
                raise
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


def environment_settings() -> Settings:
    """The settings the environment gives, validated, neither installed nor logged (for
    ``otel-identity doctor``). Raises ``ConfigurationError`` naming the variable."""
    return _from_environment(os.environ)


def validate_environment(environ: Mapping[str, str]) -> Settings:
    """The settings ``environ`` would give, validated (``ConfigurationError`` if not)."""
    return _from_environment(environ)


def reset_settings() -> None:
    """Forget code changes; the environment is read again at next use (for tests)."""
    global current, _refused
    with _lock:
        current = None
        _refused = None


def _install(settings: Settings) -> None:
    global current
    current = settings


def _from_environment(environ: Mapping[str, str]) -> Settings:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        env_name = _ENV_PREFIX + name.upper()
        raw = environ.get(env_name)
        if name == "signing_keys" and environ.get(env_name + "_FILE"):
            if raw is not None and raw.strip():
                raise ConfigurationError(f"give {env_name} or {env_name}_FILE, not both")
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
    # The keys file is read when first needed (see _keys): a bad one, found on a request
    # path, fails closed with a log line rather than raising; configure() and doctor raise.
    _validate(settings, read_keys=False)
    return settings


def _split(value: str | Iterable[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item and item.strip())


def _parse_resolver(name: str, value: Any) -> Any:
    if value is None or callable(value):
        return value
    text = str(value).strip()
    if ":" not in text:
        raise ConfigurationError(f"resolver must be 'module:function', got {text!r}")
    return text


def _parse_baggage_key(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text or any(c in text for c in ' ,;="\\') or not text.isascii():
        raise ConfigurationError(f"{name} must be a W3C baggage key, got {text!r}")
    return text


def _parse_hops(name: str, value: Any) -> frozenset[str]:
    hops = frozenset(_split(value))
    unknown = hops - HOP_KINDS
    if unknown:
        raise ConfigurationError(f"unknown hop kind(s): {', '.join(sorted(unknown))}")
    return hops


def _parse_choice(*choices: str, optional: bool = False) -> Callable[[str, Any], str | None]:
    def parse(name: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        text = str(value).strip().lower()
        if text not in choices:
            allowed = f"{', '.join(choices[:-1])} or {choices[-1]}"
            raise ConfigurationError(f"{name} must be {allowed}, got {text!r}")
        return text

    return parse


def _parse_path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    return str(os.fspath(value)).strip() or None


def _parse_egress(name: str, value: Any) -> tuple[str, ...]:
    entries = _split(value)
    for entry in entries:
        _check_egress_entry(entry)
    return entries


def _parse(name: str, value: Any) -> Any:
    parser = _PARSERS.get(name)
    if parser is None:  # pragma: no cover - guarded by the callers
        raise ConfigurationError(f"unknown setting {name!r}")
    return parser(name, value)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, value: Any) -> bool:
    """A yes/no setting: ``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``.

    Anything else is refused rather than read as false: ``maybe`` is a typo, not a choice.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {str(value)!r}")


def parse_seconds(name: str, value: Any) -> int:
    """A positive whole number of seconds."""
    # (bool is an int subclass, and int() truncates a float: neither is a whole second)
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigurationError(f"{name} must be whole seconds, got {value!r}")
    try:
        seconds = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be whole seconds, got {value!r}") from None
    if seconds <= 0:
        raise ConfigurationError(f"{name} must be positive, got {seconds}")
    return seconds


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


def _parse_keys(value: Any) -> _keys.HmacKeys:
    if value is None:
        return _keys.HmacKeys()
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
    for index, (kid, raw) in enumerate(items):
        if not _keys.valid_kid(kid):
            # (the entry is not echoed: a key pasted in the wrong place must not be printed)
            raise ConfigurationError(
                f"signing key id #{index + 1} must match {_keys.KID_PATTERN.pattern}"
            )
        if kid in keys:
            raise ConfigurationError(f"duplicate signing key id {kid!r}")
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
    return _keys.HmacKeys(keys)


def _check_egress_entry(entry: str) -> None:
    if "://" in entry:
        # A URL names a host; the list holds hosts (a common slip: pasting an endpoint).
        from urllib.parse import urlsplit

        host = urlsplit(entry).hostname or "the host"
        raise ConfigurationError(
            f"egress_allow: {entry!r} is a URL; list the host ({host!r}), "
            "a '*.suffix' pattern or a CIDR"
        )
    if entry == "<single-label>" or entry.startswith("*."):
        return
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"egress_allow: {entry!r} is not a valid CIDR (address/prefix length)"
            ) from None


def _validate(settings: Settings, *, read_keys: bool = True) -> None:
    keys = (*settings.identity_keys, settings.sig_key)
    if len(set(keys)) != len(keys):
        raise ConfigurationError("identity baggage keys must be distinct")
    if settings.inbound == "verify" and not settings.has_keys:
        raise ConfigurationError("inbound='verify' needs signing_keys or keys_file")
    if read_keys:
        _keys.load(settings)  # a bad keys file or a duplicate key id: an error here


# How each setting is read from code or the environment (a value of the right type passes).
_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "resolver": _parse_resolver,
    **dict.fromkeys(
        ("user_key", "tenant_key", "session_key", "roles_key", "sig_key"), _parse_baggage_key
    ),
    "required_hops": _parse_hops,
    "anonymous_routes": lambda _name, value: _split(value),
    "inbound": _parse_choice("trust", "verify", "strip", optional=True),
    "signing_keys": lambda _name, value: _parse_keys(value),
    "token_ttl": parse_seconds,
    "queue_token_ttl": parse_seconds,
    "keys_file": _parse_path,
    "egress_allow": _parse_egress,
    "egress_strip_all_baggage": parse_bool,
    "span_attributes": _parse_choice("id", "hash", "none"),
}
