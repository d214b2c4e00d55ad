"""The HTML page of ``otel-identity report --html``: one self-contained file, no network.

Coverage per service and hop kind, a service graph (inline SVG) whose edges are coloured by
the coverage of the hops across them, the hops where identity was lost with their parent span,
the work of each tenant and how much of it ran without identity, and filters (service, hop
kind, only rows under 100%). CSS and script are inline; every value is HTML-escaped::

    page = render(analyse(read(data)))
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from otel_identity._report import (
    COVERAGE_HEADER,
    NO_IDENTITY,
    TENANT_HEADER,
    Report,
    Row,
    coverage_rows,
    tenant_rows,
)

_esc = html.escape

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
main{padding:16px 24px;display:grid;gap:16px;grid-template-columns:minmax(0,1fr)}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;
overflow-x:auto}
#graph{max-width:100%;height:auto;display:block}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;min-width:60%}
th,td{padding:4px 10px;text-align:left;border-bottom:1px solid #eef0f3;white-space:nowrap}
th{font-weight:600;color:#505a6b}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333}.warn{color:#b06000}.bad{color:#c5221f;font-weight:600}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 16px;min-width:130px}
.card b{display:block;font-size:22px}
.filters{display:flex;gap:16px;align-items:center;flex-wrap:wrap}
.filters label{color:#505a6b}
svg text{font:12px system-ui,sans-serif}
svg .node rect{fill:#eef2fb;stroke:#6b7a99}
svg .dim{opacity:.15}
.hidden{display:none}
.muted{color:#6b7280}
"""

_SCRIPT = """
(function () {
  var service = document.getElementById('f-service');
  var hop = document.getElementById('f-hop');
  var under = document.getElementById('f-under');
  function apply() {
    var s = service.value, h = hop.value, u = under.checked, shown = 0, total = 0;
    document.querySelectorAll('[data-service]').forEach(function (el) {
      var keep = (!s || el.dataset.service === s || el.dataset.parent === s) &&
                 (!h || !el.dataset.hop || el.dataset.hop === h) &&
                 (!u || el.dataset.full !== '1');
      el.classList.toggle('hidden', !keep);
      if (el.closest('#coverage')) { total += 1; if (keep) { shown += 1; } }
    });
    var near = {};  // the chosen service and the services it calls or is called by
    near[s] = true;
    document.querySelectorAll('svg .edge').forEach(function (el) {
      var ends = el.dataset.nodes.split(' ');
      var touches = ends.indexOf(s) >= 0;
      if (touches) { near[ends[0]] = near[ends[1]] = true; }
      el.classList.toggle('dim', !!s && !touches);
    });
    document.querySelectorAll('svg .node').forEach(function (el) {
      el.classList.toggle('dim', !!s && !near[el.dataset.nodes]);
    });
    document.getElementById('shown').textContent = shown + ' of ' + total + ' rows shown';
  }
  [service, hop, under].forEach(function (el) { el.addEventListener('change', apply); });
  apply();
})();
"""

_NODE_W, _NODE_H, _COL_W, _ROW_H = 130, 34, 220, 64


def _grade(row: Row) -> str:
    if row.coverage >= 1:
        return "ok"
    return "warn" if row.coverage >= 0.9 else "bad"


_COLOURS = {"ok": "#137333", "warn": "#e37400", "bad": "#c5221f"}


def _html_table(name: str, head: str, rows: list[str]) -> str:
    return (
        f"<table id='{name}'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _options(values: Iterable[str]) -> str:
    return "".join(f"<option value='{_esc(v)}'>{_esc(v)}</option>" for v in sorted(set(values)))


def _coverage_table(report: Report) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in COVERAGE_HEADER)
    body = []
    rows = [row for _, row in sorted(report.rows.items())]
    for cells, row in zip(coverage_rows(report), rows, strict=True):
        service, hop = cells[0], cells[1]
        tds = [f"<td>{_esc(service)}</td>", f"<td>{_esc(hop)}</td>"]
        tds += [f"<td class='num'>{_esc(c)}</td>" for c in cells[2:-1]]
        tds.append(f"<td class='num {_grade(row)}'>{_esc(cells[-1])}</td>")
        full = "1" if row.coverage >= 1 else "0"
        body.append(
            f"<tr data-service='{_esc(service)}' data-hop='{_esc(hop)}' data-full='{full}'>"
            + "".join(tds)
            + "</tr>"
        )
    return (
        f"<table id='coverage'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _depths(services: list[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Column of each service: the longest chain of callers before it (cycles cut)."""
    depth = dict.fromkeys(services, 0)
    edges = [(a, b) for a, b in edges if a != b]
    for _ in services:  # at most one pass per service: a cycle cannot push forever
        changed = False
        for a, b in edges:
            if depth[b] < depth[a] + 1 <= len(services):
                depth[b] = depth[a] + 1
                changed = True
        if not changed:
            break
    # A service nobody calls sits just left of the first service it calls, not in column 0
    # (a cron job feeding the last service would otherwise cross the whole graph).
    called = {b for _, b in edges}
    for a in depth:
        targets = [depth[b] for x, b in edges if x == a]
        if a not in called and targets:
            depth[a] = max(0, min(targets) - 1)
    return depth


def _graph(report: Report) -> str:
    services = sorted({s for s, _ in report.rows} | {s for edge in report.edges for s in edge})
    if not report.edges:
        return "<p class='muted'>No calls between services in this file.</p>"
    depth = _depths(services, report.edges)
    place: dict[str, tuple[int, int]] = {}
    per_column: dict[int, int] = {}
    for service in sorted(services, key=lambda s: (depth[s], s)):
        column = depth[service]
        place[service] = (20 + column * _COL_W, 20 + per_column.get(column, 0) * _ROW_H)
        per_column[column] = per_column.get(column, 0) + 1
    width = 40 + (max(depth.values()) + 1) * _COL_W
    height = 40 + max(per_column.values()) * _ROW_H
    parts = [
        (
            f"<svg id='graph' xmlns='http://www.w3.org/2000/svg' width='{width}' "
            f"height='{height}' viewBox='0 0 {width} {height}' role='img' "
            "aria-label='service graph'><defs>"
        )
    ]
    for grade, colour in _COLOURS.items():
        parts.append(
            f"<marker id='arrow-{grade}' viewBox='0 0 10 10' refX='10' refY='5' "
            f"markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
            f"<path d='M0,0 L10,5 L0,10 z' fill='{colour}'/></marker>"
        )
    parts.append("</defs>")
    for (a, b), row in sorted(report.edges.items()):
        parts.append(_edge(place[a], place[b], a, b, row))
    for service, (x, y) in sorted(place.items()):
        parts.append(
            f"<g class='node' data-nodes='{_esc(service)}'>"
            f"<rect x='{x}' y='{y}' width='{_NODE_W}' height='{_NODE_H}' rx='6'/>"
            f"<text x='{x + _NODE_W / 2}' y='{y + 22}' text-anchor='middle'>{_esc(service)}</text>"
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _edge(start: tuple[int, int], end: tuple[int, int], a: str, b: str, row: Row) -> str:
    grade = _grade(row)
    x1, y1 = float(start[0] + _NODE_W), start[1] + _NODE_H / 2
    x2, y2 = float(end[0]), end[1] + _NODE_H / 2
    if x2 <= x1:  # same column or backwards: go round below
        x2 = end[0] + _NODE_W / 2
        y2 = end[1] + _NODE_H
    bend = max(40.0, abs(x2 - x1) / 2)
    label = f"{row.present}/{row.hops} · {row.coverage:.0%}"
    return (
        f"<g class='edge' data-nodes='{_esc(a)} {_esc(b)}' data-coverage='{row.coverage:.4f}'>"
        f"<title>{_esc(a)} → {_esc(b)}: {row.present} of {row.hops} hops with identity</title>"
        f"<path d='M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}' fill='none' "
        f"stroke='{_COLOURS[grade]}' stroke-width='2.5' marker-end='url(#arrow-{grade})'/>"
        f"<text x='{(x1 + x2) / 2}' y='{(y1 + y2) / 2 - 6}' text-anchor='middle' "
        f"fill='{_COLOURS[grade]}'>{_esc(label)}</text></g>"
    )


def _lost(report: Report) -> str:
    if not report.lost:
        return "<p class='ok'>Identity reached every hop that required it.</p>"
    rows = []
    for span, parent in report.lost:
        why = "missing" if span.event("identity.missing") is not None else "rejected"
        came = (
            f"<td>{_esc(parent.service)}</td><td>{_esc(parent.name)}</td>"
            f"<td>{'yes' if parent.has_identity else 'no'}</td>"
            if parent is not None
            else "<td colspan='3' class='muted'>(no parent in the file)</td>"
        )
        parent_service = _esc(parent.service) if parent is not None else ""
        rows.append(
            f"<tr data-service='{_esc(span.service)}' data-parent='{parent_service}' "
            f"data-hop='{_esc(str(span.hop))}' data-full='0'><td>{_esc(span.service)}</td>"
            f"<td>{_esc(span.name)}</td><td>{_esc(str(span.hop))}</td><td class='bad'>{why}</td>"
            f"{came}</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("service", "span", "hop", "identity", "parent service", "parent span",
                  "parent had identity")
    )  # fmt: skip
    return _html_table("lost", head, rows)


def _tenants(report: Report) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in TENANT_HEADER)
    rows = []
    for tenant, hops, without in tenant_rows(report):
        grade = "ok" if without == "0" else "bad"
        name = f"<i>{_esc(tenant)}</i>" if tenant == NO_IDENTITY else _esc(tenant)
        rows.append(
            f"<tr><td>{name}</td><td class='num'>{hops}</td>"
            f"<td class='num {grade}'>{without}</td></tr>"
        )
    return (
        f"<table id='tenants'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _cards(report: Report) -> str:
    hops = sum(r.hops for r in report.rows.values())
    present = sum(r.present for r in report.rows.values())
    coverage = present / hops if hops else 1.0
    grade = _grade(Row(hops=hops, present=present))
    cards = [
        ("coverage", f"<b class='{grade}' id='total-coverage'>{coverage:.0%}</b>"),
        ("receiving hops", f"<b id='total-hops'>{hops}</b>"),
        ("lost hops", f"<b id='total-lost'>{len(report.lost)}</b>"),
        ("spans read", f"<b id='total-spans'>{report.spans}</b>"),
    ]
    return "<div class='cards'>" + "".join(
        f"<div class='card'>{value}{_esc(label)}</div>" for label, value in cards
    ) + "</div>"  # fmt: skip


def render(report: Report) -> str:
    services = [s for s, _ in report.rows]
    hops = [h for _, h in report.rows]
    skipped = f", {report.skipped} non-span line(s) skipped" if report.skipped else ""
    source = f" from {_esc(report.format)}" if report.format else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>otel-identity coverage</title><style>{_CSS}</style></head><body>"
        "<header><h1>Identity coverage</h1>"
        f"<div class='muted'>{report.spans} spans read{source}{skipped}</div></header><main>"
        f"<section>{_cards(report)}</section>"
        "<section class='filters'><label>service <select id='f-service'>"
        f"<option value=''>all</option>{_options(services)}</select></label>"
        "<label>hop kind <select id='f-hop'>"
        f"<option value=''>all</option>{_options(hops)}</select></label>"
        "<label><input type='checkbox' id='f-under'> only under 100%</label>"
        "<span id='shown' class='muted'></span></section>"
        "<section><h2>Coverage per service and hop kind</h2>"
        f"{_coverage_table(report)}</section>"
        f"<section><h2>Service graph</h2>{_graph(report)}</section>"
        f"<section><h2>Where identity was lost ({len(report.lost)})</h2>"
        f"{_lost(report)}</section>"
        "<section><h2>Work per tenant</h2>"
        f"{_tenants(report)}<p class='muted'>A hop belongs to the tenant of its trace; "
        f"<i>{NO_IDENTITY}</i> is work whose trace never carried one.</p></section>"
        f"</main><script>{_SCRIPT}</script></body></html>\n"
    )
