"""The interop tests run their Python side on the HTTP tests' loopback servers."""

from __future__ import annotations

from tests.otel_identity_http.conftest import wsgi_server

__all__ = ["wsgi_server"]
