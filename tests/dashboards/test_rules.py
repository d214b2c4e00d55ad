"""The shipped Prometheus rules and Grafana dashboard: valid for promtool, proven by its unit
tests (each alert fires and stays quiet when it should), and written by the CLI."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from otel_identity import _dashboards
from otel_identity._cli import main
from tests.services import need_tool

HERE = Path(__file__).parent
SHIPPED = Path(_dashboards.__file__).parent / "dashboards"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = need_tool("promtool", "prometheus")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=HERE
    )


def test_promtool_checks_the_rules() -> None:
    done = promtool(
        "check", "rules", str(SHIPPED / _dashboards.RULES), str(SHIPPED / _dashboards.ALERTS)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout
    assert "SUCCESS: 3 rules found" in done.stdout


@pytest.mark.parametrize("test_file", ["rules.test.yml", "alerts.test.yml"])
def test_promtool_unit_tests_pass(test_file: str) -> None:
    done = promtool("test", "rules", test_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are not vacuous: the same tests against a weakened alert fail."""
    alerts = (SHIPPED / _dashboards.ALERTS).read_text().replace("< 0.95", "< 0.5")
    (tmp_path / "alerts.yml").write_text(alerts)
    test = (HERE / "alerts.test.yml").read_text()
    test = test.replace("../../otel_identity/dashboards/otel-identity-alerts.yml", "alerts.yml")
    (tmp_path / "alerts.test.yml").write_text(test)
    done = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert done.returncode != 0
    assert "OtelIdentityCoverageLow" in done.stdout + done.stderr


def test_the_dashboard_takes_its_datasource_from_a_variable() -> None:
    model = json.loads(_dashboards.read(_dashboards.DASHBOARD))
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in model["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    assert '"uid": "${datasource}"' in _dashboards.read(_dashboards.DASHBOARD)


def test_every_panel_query_reads_a_recording_rule_that_exists() -> None:
    rules = set(re.findall(r"record: (\S+)", _dashboards.read(_dashboards.RULES)))
    model = json.loads(_dashboards.read(_dashboards.DASHBOARD))
    exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", [])]
    assert len(exprs) == 9
    for expr in exprs:
        used = set(re.findall(r"otel_identity:[a-z_0-9:]+", expr))
        assert used, expr
        assert used <= rules, expr


def test_the_dashboards_command_writes_the_shipped_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboards", "--out", str(tmp_path / "monitoring")]) == 0
    out = capsys.readouterr().out
    for name in _dashboards.FILES:
        assert (tmp_path / "monitoring" / name).read_text() == (SHIPPED / name).read_text()
        assert f"wrote {tmp_path / 'monitoring' / name}" in out


def test_the_dashboards_command_says_in_one_line_when_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["dashboards", "--out", str(blocker / "sub")]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "cannot write" in out


def test_the_docs_show_the_promql_of_every_panel() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "dashboards.md").read_text()
    model = json.loads(_dashboards.read(_dashboards.DASHBOARD))
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert expr in docs or expr.replace("|", "\\|") in docs, (panel["title"], expr)
    for rule in re.findall(r"record: (\S+)", _dashboards.read(_dashboards.RULES)):
        assert rule.split(":")[1] in docs, rule
