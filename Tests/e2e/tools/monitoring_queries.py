#!/usr/bin/env python3
"""The PromQL of conntrackr's alerting rules and Grafana dashboard, and checks of it.

    monitoring_queries.py names REPO
        every conntrackr_* metric name the rules and the dashboard use, one per line
    monitoring_queries.py check REPO METRICS-FILE
        compares them with a scrape of a running agent (its /metrics text): each conntrackr_* name must be exported
        (for histograms and summaries, NAME_bucket/_sum/_count count as exported), each label matcher on one of
        them (label="value", label!="value") must name a label and value some exported series has, and each
        `by (...)`/`without (...)` label must belong to a metric of the expression or be a target label. Prints
        one line per problem naming where the query is; exits 1 when there is any.
    monitoring_queries.py dashboard-rules REPO
        the dashboard's queries as a Prometheus rule file (Grafana's variables replaced by plain values), so that
        `promtool check rules` parses them

REPO is the repository root: deploy/prometheus/conntrackr-rules.yml and deploy/grafana/conntrackr-dashboard.json.
"""
import json
import os
import re
import sys

import yaml

RULES = os.path.join("deploy", "prometheus", "conntrackr-rules.yml")
DASHBOARD = os.path.join("deploy", "grafana", "conntrackr-dashboard.json")
# Labels Prometheus adds to every scraped series (the agent does not export them).
TARGET_LABELS = {"instance", "job", "namespace", "pod", "node", "le", "quantile"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
STRING = r'"(?:[^"\\]|\\.)*"'
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(' + STRING + ')')
SELECTOR = re.compile(r'(?<![a-zA-Z0-9_:])(conntrackr_[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?')
GROUPING = re.compile(r'\b(?:by|without)\s*\(([^)]*)\)')


def queries(repo):
    """(where, expression) for every query of the rules and the dashboard."""
    out = []
    with open(os.path.join(repo, RULES)) as f:
        rules = yaml.safe_load(f)
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            out.append((f"{RULES}: {name}", str(rule["expr"])))
    with open(os.path.join(repo, DASHBOARD)) as f:
        dashboard = json.load(f)

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append((f"{DASHBOARD}: panel '{panel.get('title')}' {target.get('refId')}", target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        for text in {query, var.get("definition")}:
            if text:
                out.append((f"{DASHBOARD}: variable '{var.get('name')}'", text))
    return out


def without_strings(expr):
    return re.sub(STRING, '""', expr)


def names(expr):
    return set(m.group(1) for m in SELECTOR.finditer(without_strings(expr)))


def unquote(s):
    return json.loads(s)


def parse_exposition(text):
    """{name: [labels dict, ...]} for every sample, and {name: type} from the TYPE lines."""
    series, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(" + NAME + r")(\{.*\})?\s+\S+", line)
        if not m:
            continue
        labels = {k: unquote(v) for k, _, v in MATCHER.findall(m.group(2) or "")}
        series.setdefault(m.group(1), []).append(labels)
    return series, types


def exported_names(series, types):
    exported = set(series)
    for name, kind in types.items():
        exported.add(name)
        if kind in ("histogram", "summary"):
            exported.update({name + "_bucket", name + "_sum", name + "_count"})
    return exported


def check(repo, metrics_file):
    with open(metrics_file) as f:
        series, types = parse_exposition(f.read())
    exported = exported_names(series, types)
    problems, used = [], set()
    for where, expr in queries(repo):
        plain = without_strings(expr)
        metrics = names(expr)
        used |= metrics
        for name in sorted(metrics - exported):
            problems.append(f"{where}: {name} is not exported by the agent")
        # Label matchers on conntrackr series, in the original text (values are strings there).
        for m in SELECTOR.finditer(expr):
            name, braces = m.group(1), m.group(2)
            if not braces or name not in series:
                continue
            for label, op, value in MATCHER.findall(braces):
                value = unquote(value)
                if label in TARGET_LABELS or op in ("=~", "!~") or "$" in value:
                    continue
                if not any(label in s for s in series[name]):
                    problems.append(f"{where}: {name} has no label '{label}'")
                elif not any(s.get(label) == value for s in series[name]):
                    values = sorted({s.get(label) for s in series[name] if label in s})
                    problems.append(f"{where}: {name}{{{label}{op}\"{value}\"}}: the agent exports {label} = "
                                    f"{', '.join(values)}")
        if not metrics & exported:
            continue
        labels_here = set(TARGET_LABELS)
        for name in metrics:
            for s in series.get(name, []):
                labels_here |= set(s)
        for m in GROUPING.finditer(plain):
            for label in filter(None, (x.strip() for x in m.group(1).split(","))):
                if label not in labels_here:
                    problems.append(f"{where}: grouping by '{label}', a label none of "
                                    f"{', '.join(sorted(metrics)) or 'its metrics'} has")
    for p in problems:
        print(f"MISSING: {p}")
    print(f"{len(used)} conntrackr metric name(s) used, {len(used & exported)} exported; "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


def dashboard_rules(repo):
    rules = []
    for i, (where, expr) in enumerate(queries(repo)):
        if not where.startswith(DASHBOARD) or "label_values(" in expr:
            continue
        for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"),
                           ("${instance}", ".*"), ("$instance", ".*")):
            expr = expr.replace(var, value)
        rules.append({"record": f"conntrackr_dashboard:query_{i}", "expr": expr})
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sys.stdout, width=1000)
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "names":
        used = set()
        for _, expr in queries(argv[2]):
            used |= names(expr)
        print("\n".join(sorted(used)))
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "dashboard-rules":
        return dashboard_rules(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
