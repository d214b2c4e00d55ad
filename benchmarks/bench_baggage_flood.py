"""20,000 hostile baggage headers through ``extract`` and the propagator: identities admitted,
log records written, control characters in the log (issue 12, defects 8, 9 and 12).

    .venv/bin/python benchmarks/bench_baggage_flood.py
"""

from __future__ import annotations

import logging
import random
import re
import sys
import time
from pathlib import Path

from opentelemetry.context import Context

import otel_identity as oi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.hostile_baggage import random_hostile_header  # (after the path is set)

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # (a newline ends a record)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def main(count: int = 20_000) -> None:
    records = Records()
    logging.getLogger().addHandler(records)
    rng = random.Random(count)
    propagator = oi.IdentityBaggagePropagator()
    admitted = 0
    start = time.perf_counter()
    for _ in range(count):
        header = random_hostile_header(rng)
        ctx = oi.extract({"baggage": header}, hop="http.server", context=Context())
        admitted += oi.get_identity(ctx) is not None
        propagator.extract({"baggage": header}, context=Context())
    took = time.perf_counter() - start
    text = "\n".join(records.lines)
    print(f"{count} hostile headers in {took:.1f} s: {admitted} identities admitted")
    print(f"log: {len(records.lines)} records, {len(text)} bytes, ", end="")
    print(f"{len(CONTROL.findall(text))} control characters")
    for line in records.lines:
        print("  " + line)


if __name__ == "__main__":
    main()
