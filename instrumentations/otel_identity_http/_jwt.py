"""``jwt_identity``: identity from a verified JWT bearer token (PyJWT), as an auth source.

    app = IdentityASGIMiddleware(app, auth=[
        jwt_identity(key=PUBLIC_KEY, algorithms=["RS256"], audience="orders", issuer=ISSUER,
                     tenant_claim="org_id", roles_claim="realm_access.roles"),
    ])

A request without a bearer token is left alone (``None``); a token that fails verification
gives no identity and an ``identity.rejected`` event with the reason, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import otel_identity as oi
from otel_identity import instrumentation as oii
from otel_identity import names
from otel_identity_http._server import AuthResult, Rejected, RequestView

MAX_TOKEN_CHARS = 8192


def _claim(claims: Mapping[str, Any], path: str | None) -> Any:
    """A claim by name, or by dotted path into nested objects (``realm_access.roles``)."""
    if not path:
        return None
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return str(value)
    raise TypeError("claim is not a string")


def _roles(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # OAuth "scope" style: space separated
        return tuple(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError("roles claim is not a list of strings")


def _pyjwt() -> Any:
    """PyJWT, or an error that names the extra to install."""
    try:
        import jwt
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"jwt_identity needs PyJWT ({exc.name!r} is not installed): "
            "pip install 'otel-identity[http-jwt]'",
            name=exc.name,
        ) from exc
    return jwt


def jwt_identity(
    *,
    algorithms: Collection[str],
    key: Any = None,
    keys: Mapping[str, Any] | None = None,
    audience: str | Collection[str] | None = None,
    issuer: str | Collection[str] | None = None,
    user_claim: str = "sub",
    tenant_claim: str | None = "tenant_id",
    roles_claim: str | None = "roles",
    session_claim: str | None = "sid",
    required_claims: Collection[str] = ("exp",),
    leeway: float = 0.0,
    header: str = "authorization",
    scheme: str = "bearer",
) -> Callable[[RequestView], AuthResult]:
    """An auth source reading ``Authorization: Bearer <jwt>`` and verifying it with PyJWT.

    ``key`` verifies every token; ``keys`` maps a ``kid`` (token header) to its key, for key
    rotation (a token naming no known ``kid`` is rejected as ``unknown_key``). ``algorithms``
    is required, so a token cannot choose its own. Claims map to the identity by name or dotted
    path: ``user_claim`` (default ``sub``), ``tenant_claim``, ``roles_claim`` (a list, or a
    space-separated string), ``session_claim``. The identity is marked ``verified``.
    """
    jwt = _pyjwt()
    if key is None and not keys:
        raise ValueError("jwt_identity needs key= or keys=")
    if not algorithms:
        raise ValueError("jwt_identity needs algorithms=")
    return _JwtSource(
        jwt,
        key=key,
        keys=keys,
        decode_options={
            "algorithms": list(algorithms),
            "audience": audience
            if audience is None or isinstance(audience, str)
            else list(audience),
            "issuer": issuer if issuer is None or isinstance(issuer, str) else list(issuer),
            "leeway": leeway,
            "options": {"require": list(required_claims)},
        },
        claims=(user_claim, tenant_claim, session_claim, roles_claim),
        header=header,
        prefix=scheme.lower() + " ",
    )


class _JwtSource:
    """The auth source ``jwt_identity`` makes: one verification per request."""

    __name__ = "jwt_identity"

    def __init__(
        self,
        jwt: Any,
        *,
        key: Any,
        keys: Mapping[str, Any] | None,
        decode_options: dict[str, Any],
        claims: tuple[str, str | None, str | None, str | None],
        header: str,
        prefix: str,
    ) -> None:
        self._jwt = jwt
        self._key = key
        self._keys = keys
        self._decode_options = decode_options
        self._claims = claims
        self._header = header
        self._prefix = prefix
        # The verdict on each kind of failure, the first that matches (else ``malformed``).
        self._reasons = (
            (jwt.ExpiredSignatureError, names.REASON_EXPIRED),
            (jwt.InvalidSignatureError, names.REASON_BAD_SIGNATURE),
            (
                (
                    jwt.InvalidAudienceError,
                    jwt.InvalidIssuerError,
                    jwt.ImmatureSignatureError,
                    jwt.InvalidAlgorithmError,
                ),
                names.REASON_UNTRUSTED,
            ),
        )

    def __call__(self, request: RequestView) -> AuthResult:
        value = request.header(self._header)
        prefix = self._prefix
        if not value or value[: len(prefix)].lower() != prefix:
            return None
        token = value[len(prefix) :].strip()
        if len(token) > MAX_TOKEN_CHARS:
            return Rejected(names.REASON_OVERSIZE)
        claims = self._decode(token)
        return claims if isinstance(claims, Rejected) else self._identity(claims)

    def _decode(self, token: str) -> dict[str, Any] | Rejected:
        """The verified claims of ``token``, or why it was rejected."""
        jwt = self._jwt
        try:
            verify_key = self._key
            if self._keys:
                kid = jwt.get_unverified_header(token).get("kid")
                if not isinstance(kid, str) or kid not in self._keys:
                    return Rejected(names.REASON_UNKNOWN_KEY)
                verify_key = self._keys[kid]
            return jwt.decode(token, verify_key, **self._decode_options)  # type: ignore[no-any-return]
        except jwt.PyJWTError as exc:
            kinds = (reason for kind, reason in self._reasons if isinstance(exc, kind))
            return Rejected(next(kinds, names.REASON_MALFORMED))
        except Exception as exc:  # noqa: BLE001 - e.g. a key of the wrong type: config, not input
            oii.log_once(
                logging.WARNING,
                ("jwt_identity", type(exc).__name__),
                "otel-identity: jwt_identity could not verify a token (%s); check its key",
                type(exc).__name__,
            )
            return Rejected(names.REASON_MALFORMED)

    def _identity(self, claims: Mapping[str, Any]) -> AuthResult:
        user_claim, tenant_claim, session_claim, roles_claim = self._claims
        try:
            identity = oi.Identity(
                user_id=_text(_claim(claims, user_claim)),
                tenant_id=_text(_claim(claims, tenant_claim)),
                session_id=_text(_claim(claims, session_claim)),
                roles=_roles(_claim(claims, roles_claim)),
                verified=True,
            )
        except TypeError:
            return Rejected(names.REASON_MALFORMED)
        return None if identity.is_empty else identity
