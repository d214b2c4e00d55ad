"""``otel-identity dashboards --out DIR``: the Prometheus rules and the Grafana dashboard.

The files ship in the package (``otel_identity/dashboards/``) and are built on the metrics in
DESIGN.md "Telemetry names"::

    otel-identity dashboards --out deploy/monitoring
    promtool check rules deploy/monitoring/otel-identity-*.yml

``docs/dashboards.md`` shows the PromQL behind each panel and the traces queries.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

RULES = "otel-identity-rules.yml"
ALERTS = "otel-identity-alerts.yml"
DASHBOARD = "otel-identity-dashboard.json"
FILES = (RULES, ALERTS, DASHBOARD)


def read(name: str) -> str:
    """The text of one shipped file (one of ``FILES``)."""
    if name not in FILES:
        raise ValueError(f"no dashboard file {name!r}; there are {', '.join(FILES)}")
    return (resources.files("otel_identity") / "dashboards" / name).read_text(encoding="utf-8")


def write(out: str | Path) -> list[Path]:
    """Write every shipped file into ``out`` (made if missing); the paths written."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        path = directory / name
        path.write_text(read(name), encoding="utf-8")
        written.append(path)
    return written
