"""``otel-identity report`` reads what people export from, and every format of one run gives
the same tables: the demo's spans go out through OpenTelemetry's own exporters (OTLP/HTTP
protobuf, OTLP/HTTP JSON, Zipkin v2 JSON, console) to a receiver on loopback, and each capture
is reported."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.json.http.trace_exporter import (
    OTLPSpanExporter as OTLPJsonSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from otel_identity import _otlp_proto
from otel_identity._cli import main
from otel_identity_demo import run

BANNER = " * Serving Flask app 'web'\n * Debug mode: off\n"


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An HTTP server on loopback that keeps every POST body with its path."""
    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def delimited(bodies: list[bytes]) -> bytes:
    out = bytearray()
    for body in bodies:
        size = len(body)
        while size > 0x7F:
            out.append((size & 0x7F) | 0x80)
            size >>= 7
        out.append(size)
        out += body
    return bytes(out)


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One demo run, captured through every exporter; format name -> file."""
    tmp = tmp_path_factory.mktemp("captures")
    consoles: list[io.StringIO] = []

    def console() -> SpanExporter:
        consoles.append(io.StringIO())
        return ConsoleSpanExporter(out=consoles[-1])

    with receiver() as (url, received):
        exporters: list[Callable[[], SpanExporter]] = [
            lambda: OTLPSpanExporter(endpoint=f"{url}/v1/traces"),
            lambda: OTLPJsonSpanExporter(endpoint=f"{url}/json/v1/traces"),
            lambda: ZipkinExporter(endpoint=f"{url}/api/v2/spans"),
            console,
        ]
        assert run(io.StringIO(), exporters=exporters) == 0
    protobuf = [body for path, body in received if path == "/v1/traces"]
    otlp_json = [body for path, body in received if path == "/json/v1/traces"]
    zipkin = [body for path, body in received if path == "/api/v2/spans"]
    assert protobuf and otlp_json and zipkin
    files = {
        "otlp-protobuf": delimited(protobuf),
        "otlp-protobuf-one-request": protobuf[0],
        "otlp-json": b"\n".join(otlp_json),
        "zipkin": b"\n".join(zipkin),
        "console": "".join(c.getvalue() for c in consoles).encode(),
        "console-with-app-output": (
            BANNER + "".join(c.getvalue() + "WARNING: a development server\n" for c in consoles)
        ).encode(),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in files}


def report(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["report", str(path), *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_every_export_format_of_one_run_gives_the_same_report(
    captures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {
        name: report(captures[name], capsys)
        for name in ("otlp-protobuf", "otlp-json", "zipkin", "console")
    }
    assert {status for status, _, _ in outputs.values()} == {0}
    texts = {name: out for name, (_, out, _) in outputs.items()}
    assert len(set(texts.values())) == 1, texts
    text = texts["console"]
    assert "worker     queue.consume  4     3         1        0         75%" in text
    assert "acme           5     0" in text
    assert "(no identity)  1     1" in text
    assert "identity lost on 1 hop(s)" in text
    assert "worker/'process cleanup' [queue.consume] after legacy-cron/'publish cleanup'" in text


def test_one_otlp_request_per_file_is_read(
    captures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = report(captures["otlp-protobuf-one-request"], capsys)
    assert status == 0
    (request,) = _otlp_proto.requests(captures["otlp-protobuf-one-request"].read_bytes())
    spans = sum(len(s["spans"]) for r in request["resourceSpans"] for s in r["scopeSpans"])
    assert f"{spans} spans read" in out


def test_a_console_capture_with_the_apps_own_output_skips_and_counts_those_lines(
    captures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, clean, _ = report(captures["console"], capsys)
    status, mixed, _ = report(captures["console-with-app-output"], capsys)
    assert status == 0
    assert mixed.split("\n\n")[:2] == clean.split("\n\n")[:2]  # both tables
    warnings = captures["console-with-app-output"].read_text().count("WARNING")
    assert f"; {2 + warnings} non-span line(s) skipped;" in mixed  # the banner's two lines too


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"", "no spans found"), (b'{"hello": "world"}\n', "no spans found (1 line"),
     (b"just a log line\n", "no spans found (1 line"),
     (b"\x0a\x02\x12\x00", "no spans found")],
)  # fmt: skip
def test_a_file_without_spans_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    path = tmp_path / "export"
    path.write_bytes(content)
    status, out, err = report(path, capsys)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and why in err


def test_malformed_protobuf_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.pb"
    path.write_bytes(b"\x0a\xff\xff\xff\x7f\x00\x01")
    status, _, err = report(path, capsys)
    assert status == 2
    assert err.startswith(f"cannot read {path}:") and err.count("\n") == 1


def test_html_to_a_path_that_cannot_be_written_is_one_line_and_status_2(
    captures: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = report(captures["console"], capsys, "--html", str(tmp_path / "no" / "x.html"))
    assert status == 2
    assert err.count("\n") == 1 and "cannot write" in err


def test_an_unknown_option_prints_the_reports_own_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--bogus", "spans.json"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: otel-identity report")
    assert "unrecognized arguments: --bogus" in err
