"""The counted-work budget (DESIGN.md "Performance contract", issue #13), held in CI.

benchmarks/bench_work.py counts, through ``sys.settrace``, the Python calls and bytecodes that
otel-identity causes on a real gRPC unary and a real HTTP (requests -> werkzeug) round trip on
loopback, against the same round trip with OpenTelemetry's instrumentation and its own W3C
baggage step. The count is exact for a given set of installed versions: no timing, and the
typical round trip of two counts in one run must agree to the bytecode, which this test checks
before it holds the mean (bookkeeping done once in many round trips included) to the budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grpc")
pytest.importorskip("werkzeug")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_work.py"
# Bytecodes per round trip that otel-identity may add over OpenTelemetry's instrumentation
# with plain W3C baggage (issue #13).
BUDGET = {"gRPC unary": 500, "HTTP requests -> werkzeug": 900}


@pytest.fixture(scope="module")
def counts() -> dict[str, dict[str, list[dict[str, float]]]]:
    # A fresh interpreter: the count installs a tracer provider, a textmap and a trace hook.
    arguments = ["--json", "--round-trips", "40", "--warm", "60", "--repeat", "2"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, dict[str, list[dict[str, float]]]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("transport", sorted(BUDGET))
def test_counted_work_is_exact(
    counts: dict[str, dict[str, list[dict[str, float]]]], transport: str
) -> None:
    for config in ("baseline", "ours"):
        first, second = counts[transport][config]
        typical = "typical caused bytecodes"
        assert first[typical] == second[typical] > 0, (transport, config)
        # The mean differs from the typical round trip only by bookkeeping done once in many.
        assert abs(first["caused bytecodes"] - first[typical]) < 0.05 * first[typical]


@pytest.mark.parametrize("transport", sorted(BUDGET))
def test_counted_work_stays_within_budget(
    counts: dict[str, dict[str, list[dict[str, float]]]], transport: str
) -> None:
    baseline, ours = counts[transport]["baseline"][0], counts[transport]["ours"][0]
    assert baseline["caused bytecodes"] > 0  # OpenTelemetry's baggage step was counted
    added = ours["caused bytecodes"] - baseline["caused bytecodes"]
    assert added <= BUDGET[transport], (
        f"{transport}: otel-identity adds {added:+.0f} bytecodes per round trip "
        f"(budget {BUDGET[transport]:+d}); run python benchmarks/bench_work.py to see where"
    )
