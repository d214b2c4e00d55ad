"""Worst parse time of an 8 KB hostile baggage header against an ordinary one (best of 5 each).

    .venv/bin/python benchmarks/bench_baggage_parse.py

The memo is bypassed (``_baggage._parse``): what is measured is one full parse, the cost a
flood of distinct hostile headers pays per request.
"""

from __future__ import annotations

import time

from otel_identity import _baggage

KEEP = frozenset({"user.id", "tenant.id", "session.id", "user.roles", "identity.sig"})
N = 8192


def best_of(header: str, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        _baggage._parse(header, KEEP)
        best = min(best, time.perf_counter() - start)
    return best


def ordinary() -> str:
    header = ",".join(f"key{i}=value-{i}" for i in range(2000))[: N - 20]
    return header.rsplit(",", 1)[0] + ",user.id=u-42"


HOSTILE = {
    "space run in a value": "user.id=a" + " " * (N - 20) + "b",
    "tab run": "k=" + "\t" * (N - 10) + "v",
    "OWS everywhere": ("a" + " " * 20 + "=" + " \t" * 10 + "b" + " " * 20 + ";" + " x=1,")
    * (N // 80),
    "semicolons": "user.id=u" + ";" * (N - 10),
    "equals": "user.id=" + "=" * (N - 8),
    "';=' pairs": "k=" + ";=" * (N // 2 - 2),
    "tiny refused members": "a," * (N // 2),
    "commas only": "," * N,
    "tiny valid members": ",".join(f"k{i}=" for i in range(N // 6))[:N],
    "escapes": "k=" + "%41" * (N // 3 - 1),
    "bad escapes": ",".join(["k=%ZZ"] * (N // 6)),
    "ambiguous duplicates": ",".join(["user.id=a", "user.id=b"] * (N // 20)),
    "encoded controls": ",".join(["k=%00"] * (N // 6)),
    "many properties": "user.id=u" + ";p=1" * (N // 4 - 3),
}


def main() -> None:
    base = best_of(ordinary())
    print(f"{'ordinary':24} {len(ordinary()):5} chars {base * 1e6:8.0f} us")
    worst = 0.0
    for name, header in HOSTILE.items():
        took = best_of(header)
        worst = max(worst, took / base)
        print(f"{name:24} {len(header):5} chars {took * 1e6:8.0f} us  x{took / base:5.2f}")
    print(f"worst hostile / ordinary: x{worst:.2f}")


if __name__ == "__main__":
    main()
