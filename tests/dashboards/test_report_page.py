"""The report's HTML page in a real headless browser (Debian's chromium and chromium-driver,
driven by Selenium with the driver's path given: Selenium Manager never downloads anything).

The page is the demo's report: it must load without console errors, show the same numbers as
the terminal table, filter, and leave a screenshot (copied to $OTEL_IDENTITY_ARTIFACTS when
that is set).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_identity._cli import main
from tests.services import need_tool


@dataclass
class Page:
    path: Path
    terminal: str


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Page:
    tmp = tmp_path_factory.mktemp("page")
    spans, html = tmp / "spans.jsonl", tmp / "report.html"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo", "--export", str(spans)]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(spans), "--html", str(html)]) == 0
    return Page(html, out.getvalue())


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    chromium = need_tool("chromium", "chromium")
    driver_path = need_tool("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # belt and braces: the driver path is given below
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--window-size=1100,1250",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def loaded(browser: object, page: Page) -> object:
    browser.get(page.path.as_uri())  # type: ignore[attr-defined]
    return browser


def terminal_rows(text: str, header: str) -> list[list[str]]:
    """A table of the terminal report (the one whose header starts with ``header``)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def page_rows(driver: object, table: str, visible_only: bool = False) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")  # type: ignore[attr-defined]
    return [
        [cell.get_attribute("textContent").strip() for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in rows
        if not visible_only or row.is_displayed()
    ]


def test_the_page_is_self_contained(page: Page) -> None:
    text = page.path.read_text()
    assert not re.search(r"\b(src|href)\s*=", text)
    assert "@import" not in text and "url(http" not in text


def test_the_page_loads_without_console_errors(loaded: object) -> None:
    from selenium.webdriver.common.by import By

    assert loaded.find_element(By.ID, "shown").text == "3 of 3 rows shown"  # type: ignore[attr-defined]
    logs = loaded.get_log("browser")  # type: ignore[attr-defined]
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []


def test_the_numbers_on_the_page_are_the_terminal_tables(loaded: object, page: Page) -> None:
    from selenium.webdriver.common.by import By

    assert page_rows(loaded, "coverage") == terminal_rows(page.terminal, "service")
    assert page_rows(loaded, "tenants") == terminal_rows(page.terminal, "tenant")
    lost = int(re.search(r"identity lost on (\d+) hop", page.terminal).group(1))  # type: ignore[union-attr]
    assert loaded.find_element(By.ID, "total-lost").text == str(lost)  # type: ignore[attr-defined]
    assert len(page_rows(loaded, "lost")) == lost
    spans = re.search(r"(\d+) spans read", page.terminal).group(1)  # type: ignore[union-attr]
    assert loaded.find_element(By.ID, "total-spans").text == spans  # type: ignore[attr-defined]


def test_the_service_graph_colours_each_edge_by_its_coverage(loaded: object) -> None:
    from selenium.webdriver.common.by import By

    edges = {
        edge.get_attribute("data-nodes"): edge.find_element(By.TAG_NAME, "path").get_attribute(
            "stroke"
        )
        for edge in loaded.find_elements(By.CSS_SELECTOR, "#graph .edge")  # type: ignore[attr-defined]
    }
    green, red = "#137333", "#c5221f"
    assert edges == {
        "web reports": green,
        "reports workflows": green,
        "workflows worker": green,
        "legacy-cron worker": red,
    }


def test_filters_change_what_is_shown(loaded: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(loaded.find_element(By.ID, "f-service")).select_by_value("worker")  # type: ignore[attr-defined]
    assert [r[:2] for r in page_rows(loaded, "coverage", visible_only=True)] == [
        ["worker", "queue.consume"]
    ]
    assert loaded.find_element(By.ID, "shown").text == "1 of 3 rows shown"  # type: ignore[attr-defined]
    assert len(page_rows(loaded, "lost", visible_only=True)) == 1
    dimmed = {
        e.get_attribute("data-nodes")
        for e in loaded.find_elements(By.CSS_SELECTOR, "#graph .dim")  # type: ignore[attr-defined]
    }
    assert dimmed == {"web", "reports", "web reports", "reports workflows"}

    Select(loaded.find_element(By.ID, "f-service")).select_by_value("reports")  # type: ignore[attr-defined]
    assert page_rows(loaded, "lost", visible_only=True) == []

    Select(loaded.find_element(By.ID, "f-service")).select_by_value("")  # type: ignore[attr-defined]
    loaded.find_element(By.ID, "f-under").click()  # type: ignore[attr-defined]
    assert [r[0] for r in page_rows(loaded, "coverage", visible_only=True)] == ["worker"]


def test_a_screenshot_is_written_as_an_artifact(loaded: object, tmp_path: Path) -> None:
    shot = tmp_path / "otel-identity-report.png"
    assert loaded.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = os.environ.get("OTEL_IDENTITY_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
