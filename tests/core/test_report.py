"""``otel-identity report``: coverage from exported spans (console JSON and OTLP JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_identity import _report
from otel_identity._cli import main


def otlp_doc() -> dict[str, object]:
    def attr(key: str, value: str) -> dict[str, object]:
        return {"key": key, "value": {"stringValue": value}}

    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", "api")]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "t1",
                                "spanId": "a",
                                "name": "GET /orders",
                                "kind": 2,
                                "attributes": [attr("user.id", "u"), attr("tenant.id", "t")],
                            },
                            {
                                "traceId": "t1",
                                "spanId": "b",
                                "parentSpanId": "a",
                                "name": "orders process",
                                "kind": "SPAN_KIND_CONSUMER",
                                "events": [
                                    {
                                        "name": "identity.missing",
                                        "attributes": [attr("identity.hop", "queue.consume")],
                                    }
                                ],
                            },
                            {
                                "traceId": "t2",
                                "spanId": "c",
                                "name": "/shop.Orders/Get",
                                "kind": 2,
                                "attributes": [attr("rpc.system", "grpc")],
                                "events": [
                                    {
                                        "name": "identity.rejected",
                                        "attributes": [
                                            attr("identity.hop", "grpc.server"),
                                            attr("identity.reject_reason", "bad_signature"),
                                        ],
                                    }
                                ],
                            },
                        ]
                    }
                ],
            }
        ]
    }


def test_otlp_json_lines_give_coverage_per_service_and_hop() -> None:
    report = _report.analyse(_report.load(json.dumps(otlp_doc()) + "\n"))
    assert report.rows[("api", "http.server")].coverage == 1.0
    consume = report.rows[("api", "queue.consume")]
    assert (consume.hops, consume.present, consume.missing) == (1, 0, 1)
    grpc = report.rows[("api", "grpc.server")]
    assert grpc.rejected == 1 and grpc.reasons["bad_signature"] == 1
    lost = [(span.name, parent.name if parent else None) for span, parent in report.lost]
    assert lost == [("orders process", "GET /orders"), ("/shop.Orders/Get", None)]


def test_demo_export_round_trips_through_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = tmp_path / "spans.jsonl"
    page = tmp_path / "report.html"
    assert main(["demo", "--export", str(spans)]) == 0
    capsys.readouterr()
    assert main(["report", str(spans), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split()[2:6] for line in out.splitlines()[2:6]}
    assert rows[("worker", "queue.consume")] == ["4", "3", "1", "0"]
    assert rows[("workflows", "grpc.server")] == ["1", "1", "0", "0"]
    assert rows[("reports", "http.server")] == ["1", "1", "0", "0"]
    assert "identity lost on 1 hop(s)" in out
    assert "process cleanup" in page.read_text()


def test_unreadable_report_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "absent.json")]) == 2


@given(st.text(max_size=300))
def test_any_input_is_read_or_refused_with_value_error(text: str) -> None:
    try:  # text with control characters is taken for protobuf, and may not be valid protobuf
        loaded = _report.read(text.encode("utf-8", "surrogatepass"))
    except ValueError:
        return
    assert loaded.skipped >= 0


@given(
    st.lists(st.sampled_from(["banner line", "", "{not json", "[1, 2]", '{"a": 1}']), max_size=6)
)
def test_non_span_lines_around_spans_are_skipped_and_the_spans_kept(noise: list[str]) -> None:
    span = json.dumps(otlp_doc())
    loaded = _report.read(("\n".join([*noise, span, *noise]) + "\n").encode())
    assert len(loaded.spans) == len(list(_report._otlp_spans(otlp_doc())))
