#!/usr/bin/env python3
"""Structural checks of the Grafana dashboard, and its queries for the live test.

Grafana does not run here, so this checks what Grafana would need: the
dashboard parses, has a current schemaVersion, a `datasource` variable of
type prometheus that every panel and variable uses, `client_id` and
`pool_host` label_values variables, unique panel ids and refIds, panels
inside the 24-column grid without overlaps, heatmaps fed by `_bucket` series
in heatmap format, and the panels the issue asks for.

`queries()` returns every PromQL expression in the dashboard with the
variables substituted, for live_test.py to run against a real Prometheus.

Usage: dashboard_check.py [DASHBOARD.json]   (exit 1 and a list on failure)
Stdlib only.
"""

import json
import os
import re
import sys

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grafana", "stratum-proxy.json")

# Grafana 11.0 writes schemaVersion 39, Grafana 12 writes 41.
MIN_SCHEMA_VERSION = 39
DATASOURCE_REF = "${datasource}"
GRID_COLUMNS = 24

# Variable values used when the queries are run outside Grafana. Grafana's
# $__rate_interval is at least four scrape intervals; the live test scrapes
# every second, so 1m is well above that and below its run time.
SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "client_id": ".*",
    "pool_host": ".*",
}

# Grafana unit ids this dashboard may use (from Grafana's value-format
# categories); a typo there silently shows raw numbers.
KNOWN_UNITS = {"short", "none", "percentunit", "Hs", "Bps", "bytes", "s", "dateTimeAsIso"}

# (what the issue asks for, a regex one of the dashboard's expressions must match)
REQUIRED = [
    ("hashrate per client", r"sum by \(client_id\) \(rate\(stratum_accepted_difficulty_total.*\* 2\^32"),
    ("accepted shares", r"stratum_accepted_shares_total"),
    ("rejected shares with reasons", r"sum by \([^)]*reason[^)]*\) \(rate\(stratum_rejected_shares_total"),
    ("difficulty", r"stratum_current_difficulty"),
    ("active connections", r"stratum_active_connections"),
    ("bytes sent", r"stratum_bytes_sent_total"),
    ("bytes received", r"stratum_bytes_received_total"),
    ("latency heatmap", r"sum by \(le\) \(rate\(stratum_request_response_seconds_bucket"),
    ("connection durations", r"stratum_connection_duration_seconds_bucket"),
]


def load(path=DEFAULT_PATH):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def panels(dash):
    """Every panel, rows' nested panels included."""
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:
            yield q


def substitute(expr, values=SUBSTITUTIONS):
    """Replace $var and ${var} (longest names first, so $__rate_interval is
    not taken for $__rate...)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name])
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _m, v=values[name]: v, expr)
    return expr


def queries(dash, values=SUBSTITUTIONS):
    """[(where, kind, expr)]: kind is 'panel' (an instant query is enough to
    prove it executes and has data) or 'label_values' (metric selector,
    label) for a variable."""
    out = []
    for p in panels(dash):
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                out.append((f'panel {p.get("id")} "{p.get("title")}" {t.get("refId")}', "panel", substitute(t["expr"], values)))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q or "")
            if m:
                out.append((f'variable {v["name"]}', "label_values", (substitute(m.group(1), values), m.group(2))))
            else:
                out.append((f'variable {v["name"]}', "panel", substitute(q, values)))
    return out


def check(dash):
    errors = []
    err = errors.append
    sv = dash.get("schemaVersion")
    if not isinstance(sv, int) or sv < MIN_SCHEMA_VERSION:
        err(f"schemaVersion {sv!r} is older than Grafana 11 ({MIN_SCHEMA_VERSION})")
    for key in ("uid", "title"):
        if not dash.get(key):
            err(f"dashboard has no {key}")
    if dash.get("id") is not None:
        err("id must be null in a dashboard meant for import")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err("no `datasource` variable of type datasource with query prometheus")
    for name, metric_label in (("client_id", "client_id"), ("pool_host", "pool_host")):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            err(f"no `{name}` query variable")
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not re.fullmatch(r"\s*label_values\(.*,\s*" + metric_label + r"\s*\)\s*", q or ""):
            err(f"variable {name}: query {q!r} is not label_values(..., {metric_label})")
        if (v.get("datasource") or {}).get("uid") != DATASOURCE_REF:
            err(f"variable {name} does not use the datasource variable")
        if v.get("includeAll") and v.get("allValue") != ".*":
            err(f"variable {name}: includeAll needs allValue '.*' for =~ matchers")
    for name, v in variables.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or ""):
            err(f"bad variable name {name!r}")

    ids = set()
    cells = {}
    for p in panels(dash):
        pid = p.get("id")
        title = p.get("title")
        where = f'panel {pid} "{title}"'
        if not isinstance(pid, int) or pid in ids:
            err(f"{where}: id missing or duplicated")
        ids.add(pid)
        if not title:
            err(f"{where}: no title")
        g = p.get("gridPos") or {}
        try:
            x, y, w, h = (int(g[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            err(f"{where}: gridPos incomplete")
            continue
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > GRID_COLUMNS:
            err(f"{where}: gridPos {g} outside the {GRID_COLUMNS}-column grid")
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    err(f"{where}: overlaps {cells[(cx, cy)]}")
                    break
                cells[(cx, cy)] = where
            else:
                continue
            break
        if p.get("type") == "row":
            continue
        fc = p.get("fieldConfig") or {}
        units = [(fc.get("defaults") or {}).get("unit")]
        for o in fc.get("overrides") or []:
            units += [prop.get("value") for prop in o.get("properties", []) if prop.get("id") == "unit"]
        for u in units:
            if u is not None and u not in KNOWN_UNITS:
                err(f"{where}: unknown unit {u!r}")
        if (p.get("datasource") or {}).get("uid") != DATASOURCE_REF:
            err(f"{where}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            err(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            err(f"{where}: refIds missing or duplicated: {refs}")
        for t in targets:
            if (t.get("datasource") or {}).get("uid") != DATASOURCE_REF:
                err(f"{where} {t.get('refId')}: target datasource is not ${{datasource}}")
            expr = t.get("expr") or ""
            if not expr.strip():
                err(f"{where} {t.get('refId')}: empty expr")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                err(f"{where} {t.get('refId')}: unbalanced brackets in {expr!r}")
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
                if var not in variables and var not in SUBSTITUTIONS:
                    err(f"{where}: unknown variable ${var}")
            if p.get("type") == "heatmap":
                if t.get("format") != "heatmap" or "_bucket" not in expr or "by (le)" not in expr:
                    err(f"{where}: heatmap target must be `sum by (le) (rate(..._bucket[...]))` with format heatmap")
        if p.get("type") == "heatmap" and (p.get("options") or {}).get("calculate") is not False:
            err(f"{where}: heatmap from histogram buckets must not recalculate (options.calculate false)")

    exprs = [e for _, kind, e in queries(dash, {}) if kind == "panel"]
    for what, pattern in REQUIRED:
        if not any(re.search(pattern, e) for e in exprs):
            err(f"no panel for {what} (/{pattern}/)")
    return errors


def main(argv):
    path = argv[1] if len(argv) > 1 else DEFAULT_PATH
    try:
        dash = load(path)
    except (OSError, ValueError) as e:
        print(f"dashboard_check: {path}: {e}", file=sys.stderr)
        return 1
    errors = check(dash)
    for e in errors:
        print(f"dashboard_check: {e}", file=sys.stderr)
    n = len(queries(dash))
    if errors:
        print(f"dashboard_check: {path}: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"dashboard_check: {os.path.basename(path)} OK: schemaVersion {dash['schemaVersion']}, "
          f"{sum(1 for p in panels(dash) if p.get('type') != 'row')} panels, {n} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
