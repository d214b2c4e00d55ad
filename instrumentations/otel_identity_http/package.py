"""What this instrumentation works with (mirrors the ``http`` extra of pyproject.toml).

The server side works with any WSGI or ASGI application; the client side patches whichever of
requests, httpx, urllib3 and aiohttp are installed, and the standard library's ``http.client``
(under urllib.request). None of them is required, so no dependency
check is made at ``instrument()`` (a missing library is simply not patched).
"""

from __future__ import annotations

_instruments: tuple[str, ...] = ()

# Libraries patched when present (informational; see _client.py and _server_instrumentor.py).
_supports: tuple[str, ...] = (
    "requests >= 2.20",
    "httpx >= 0.23",
    "urllib3 >= 2.0",
    "aiohttp >= 3.9",
    "flask >= 2.3",
    "starlette >= 0.27",
    "django >= 4.2",
    "pyjwt >= 2.8",
)

# OpenTelemetry's span instrumentation for each library this boundary serves (any one listed
# will do; the otel-identity extra ``_extra`` brings them): without it no span of this
# boundary is exported under opentelemetry-instrument, so no identity attribute and no
# identity.missing either.
# ``otel-identity doctor`` warns when a library is installed and none of its span
# instrumentations is.
_spans: dict[str, tuple[str, ...]] = {
    "flask": ("opentelemetry-instrumentation-flask",),
    "django": ("opentelemetry-instrumentation-django",),
    "starlette": (
        "opentelemetry-instrumentation-starlette",
        "opentelemetry-instrumentation-fastapi",
        "opentelemetry-instrumentation-asgi",
    ),
    "requests": ("opentelemetry-instrumentation-requests",),
    "httpx": ("opentelemetry-instrumentation-httpx",),
    "urllib3": ("opentelemetry-instrumentation-urllib3",),
    "aiohttp": ("opentelemetry-instrumentation-aiohttp-client",),
}
_extra = "http"
