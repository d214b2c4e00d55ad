"""Importing an instrumentation package without its extra: never a bare "No module named ...".

Each case runs in a fresh interpreter whose import of the library is blocked (``sys.modules``
holds None for it, which makes ``import`` raise ModuleNotFoundError as if it were absent).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, sys
    for name in sys.argv[2].split(","):
        sys.modules[name] = None
    try:
        __import__(sys.argv[1])
    except ImportError as exc:
        print(json.dumps({"type": type(exc).__name__, "message": str(exc), "name": exc.name}))
    else:
        print(json.dumps(None))
    """
)


def _import_without(package: str, *blocked: str) -> dict[str, str] | None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, package, ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, str] | None = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("package", "blocked", "extra"),
    [
        ("otel_identity_flask", "flask", "flask"),
        ("otel_identity_flask", "flask_login", "flask"),
        ("otel_identity_grpc", "grpc", "grpc"),
        ("otel_identity_demo", "grpc", "demo"),
        ("otel_identity_demo", "requests", "demo"),
    ],
)
def test_a_package_that_needs_its_library_names_the_extra_to_install(
    package: str, blocked: str, extra: str
) -> None:
    error = _import_without(package, blocked)
    assert error is not None
    assert f"pip install 'otel-identity[{extra}]'" in error["message"]
    assert repr(blocked) in error["message"]
    # ModuleNotFoundError, with the missing module's name: opentelemetry-instrument skips such
    # an entry point quietly (a plain ImportError would log a traceback at every start).
    assert error["type"] == "ModuleNotFoundError"
    assert error["name"] == blocked


@pytest.mark.parametrize(
    ("package", "blocked"),
    [
        ("otel_identity_celery", ["celery"]),
        ("otel_identity_kafka", ["confluent_kafka", "kafka"]),
        ("otel_identity_amqp", ["pika", "aio_pika"]),
        ("otel_identity_nats", ["nats"]),
        ("otel_identity_http", ["jwt", "django", "starlette", "flask", "requests", "httpx"]),
        ("otel_identity_threading", []),
    ],
)
def test_packages_that_load_their_library_lazily_import_without_it(
    package: str, blocked: list[str]
) -> None:
    assert _import_without(package, *blocked) is None


def test_jwt_identity_without_pyjwt_names_the_extra() -> None:
    probe = (
        "import sys; sys.modules['jwt'] = None\n"
        "from otel_identity_http import jwt_identity\n"
        "try:\n"
        "    jwt_identity(key='k' * 32, algorithms=['HS256'])\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'otel-identity[http-jwt]'" in done.stdout
