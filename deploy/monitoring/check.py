"""Offline checks of the alerting rules and the dashboard, run by
deploy/validate.sh (with the PyYAML of its virtualenv and Debian's promtool):

  1. the PrometheusRule is the one generated from rules.yml;
  2. `promtool check rules` on rules.yml;
  3. `promtool test rules` on rules.test.yml, against a copy of the rules
     without annotations (the tests are about when alerts fire);
  4. every alert has a severity, a summary, a description and a runbook_url
     whose anchor is a heading of README.md;
  5. the dashboard parses, every panel has a datasource and queries, and
     every query parses (promtool, with Grafana's variables filled in);
  6. every metric the rules, their tests and the dashboard name is one that
     src/metrics.rs registers (with its type's suffixes), every label they
     match on is one of its labels, and every label value they match is one
     the gateway's source gives that label; every recording rule they name
     is defined.

(tests/api/monitoring.rs checks the same names against a running gateway's
/metrics.) Prints one PASS or FAIL line per check; exits 1 on any FAIL.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

MONITORING = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(MONITORING)
REPO = os.path.dirname(DEPLOY)
RULES = os.path.join(MONITORING, "rules.yml")
TESTS = os.path.join(MONITORING, "rules.test.yml")
COMPONENT = os.path.join(DEPLOY, "kubernetes", "components", "monitoring")
DASHBOARD = os.path.join(COMPONENT, "zenlayer-gateway-dashboard.json")
SEVERITIES = {"critical", "warning"}
# Labels the scrape adds to every series (Kubernetes service discovery).
TARGET_LABELS = {"namespace", "job", "pod", "instance"}
RUNBOOK_BASE = "https://git.example.com/platform/zenlayer-gateway/-/blob/main/README.md#"

results = []


def check(name, problems):
    results.append((name, problems))
    if problems:
        for p in problems:
            print(f"FAIL  {name}: {p}")
    else:
        print(f"PASS  {name}")


def read(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def promtool(*args, cwd=None):
    run = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)
    return run.returncode, (run.stdout + run.stderr).strip()


# --- what the gateway exports, read from its source ----------------------

def exported():
    """{series name: set of label names} as src/metrics.rs registers them."""
    src = read("src/metrics.rs")
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', src).group(1)
    fields = dict(re.findall(r"^\s+(\w+): ([\w<>, ]+),$", src.split("struct Inner {")[1].split("}")[0], re.M))
    structs = {name: set(re.findall(r"^\s+(\w+): String,$", body, re.M))
               for name, body in re.findall(r"struct (\w+Labels) \{(.*?)\}", src, re.S)}
    series = {}
    for name, unit, var in re.findall(
            r'registry\.register(?:_with_unit)?\(\s*"(\w+)",\s*"[^"]*",\s*(Unit::Seconds,\s*)?(\w+)\.clone\(\)', src):
        kind = fields[var]
        labels = set()
        for struct in re.findall(r"(\w+Labels)", kind):
            labels |= structs[struct]
        base = f"{prefix}_{name}" + ("_seconds" if unit else "")
        if "Counter" in kind:
            series[base + "_total"] = labels
        elif "Histogram" in kind:
            series[base + "_bucket"] = labels | {"le"}
            series[base + "_sum"] = labels
            series[base + "_count"] = labels
        elif "Gauge" in kind:
            series[base] = labels
        else:
            raise SystemExit(f"check.py: cannot tell the type of {var}: {kind}")
    return series


def label_values():
    """{label: values the source gives it}; a label absent here is free."""
    def found(path, pattern, flags=0):
        return set(re.findall(pattern, read(path), flags))

    record = found("src/audit/mod.rs", r'self\.measured\("(\w+)"') \
        | found("src/rpc/release.rs", r'self\.conclude\("(\w+)"')
    confirmation = set()
    for pair in re.findall(r'let label = if verdict\.confirmed \{\s*"(\w+)"\s*\} else \{\s*"(\w+)"',
                           read("src/audit/follow_up.rs")):
        confirmation |= set(pair)
    start, count = re.search(r"exponential_buckets\(([\d.]+), 2\.0, (\d+)\)", read("src/metrics.rs")).groups()
    buckets = {repr(float(start) * 2 ** i) for i in range(int(count))} | {"+Inf"}
    return {
        "grpc_code": found("src/rpc/codes.rs", r'Code::\w+ => "([A-Z_]+)"'),
        "decision": found("src/decision.rs", r'Self::\w+ => "([a-z]+)"'),
        "outcome": found("src/audit/record.rs", r'Self::\w+ => "([a-z]+)"'),
        "record": record,
        "confirmation": confirmation,
        "le": buckets,
    }


# --- what the rules and the dashboard use ---------------------------------

NAME = re.compile(r"\b(zenlayer_gateway[a-z0-9_:]*)")
SELECTOR = re.compile(r"\b(zenlayer_gateway[a-z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def usage(expr, where, series, recorded, values):
    problems = []
    for name in NAME.findall(expr):
        if name not in series and name not in recorded:
            problems.append(f"{where}: {name} is neither exported by the gateway nor recorded by rules.yml")
    for name, body in SELECTOR.findall(expr):
        labels = series.get(name)
        for m in filter(None, (s.strip() for s in body.split(","))):
            matched = MATCHER.fullmatch(m)
            if not matched:
                problems.append(f"{where}: cannot read matcher {m!r} of {name}")
                continue
            label, op, value = matched.groups()
            if "$" in value or label in TARGET_LABELS:
                continue
            if labels is not None and label not in labels:
                problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(labels)})")
            known = values.get(label)
            if known is None:
                continue
            alternatives = value.split("|") if op in ("=~", "!~") else [value]
            for alt in alternatives:
                if re.search(r"[.*+?()\[\]]", alt):
                    continue
                if alt not in known:
                    problems.append(f"{where}: {label}={alt!r} is never exported (known: {sorted(known)})")
    return problems


def main():
    rules_doc = yaml.safe_load(open(RULES))
    rules = [r for g in rules_doc["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    series = exported()
    values = label_values()

    gen = subprocess.run([sys.executable, os.path.join(MONITORING, "generate"), "--check"],
                         capture_output=True, text=True)
    check("PrometheusRule generated from rules.yml", [gen.stderr.strip()] if gen.returncode else [])

    rc, out = promtool("check", "rules", RULES)
    check("promtool check rules rules.yml", [out] if rc else [])

    with tempfile.TemporaryDirectory() as tmp:
        bare = yaml.safe_load(open(RULES))
        for g in bare["groups"]:
            for r in g["rules"]:
                r.pop("annotations", None)
        with open(os.path.join(tmp, "rules.yml"), "w") as f:
            yaml.safe_dump(bare, f, sort_keys=False)
        shutil.copy(TESTS, os.path.join(tmp, "rules.test.yml"))
        rc, out = promtool("test", "rules", "rules.test.yml", cwd=tmp)
        tests_doc = yaml.safe_load(open(TESTS))
        tested = {t["alertname"] for case in tests_doc["tests"] for t in case.get("alert_rule_test", [])
                  if t.get("exp_alerts")}
        quiet = {t["alertname"] for case in tests_doc["tests"] for t in case.get("alert_rule_test", [])
                 if not t.get("exp_alerts")}
        problems = [out] if rc else []
        for r in rules:
            if "alert" in r:
                if r["alert"] not in tested:
                    problems.append(f"{r['alert']} has no test in which it fires")
                if r["alert"] not in quiet:
                    problems.append(f"{r['alert']} has no test in which it stays quiet")
        check(f"promtool test rules rules.test.yml ({len(tests_doc['tests'])} cases)", problems)

    anchors = set()
    for line in read("README.md").splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    problems = []
    for r in rules:
        if "alert" not in r:
            continue
        name, labels, notes = r["alert"], r.get("labels") or {}, r.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} is not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not str(notes.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        url = notes.get("runbook_url", "")
        if not url.startswith(RUNBOOK_BASE) or url[len(RUNBOOK_BASE):] not in anchors:
            problems.append(f"{name}: runbook_url {url!r} is not a heading of README.md")
        if not re.fullmatch(r"ZenlayerGateway[A-Za-z]+", name):
            problems.append(f"{name}: alert names start with ZenlayerGateway")
    check(f"alerts have severity, summary, description and a README runbook ({sum('alert' in r for r in rules)} alerts)", problems)

    problems = []
    for r in rules:
        problems += usage(r["expr"], r.get("alert") or r.get("record"), series, recorded, values)
    for case in tests_doc["tests"]:
        for s in case.get("input_series", []):
            problems += usage(s["series"], f"test {case['name']!r}", series, set(), values)
    check("rules and tests use only exported metrics, labels and label values", problems)

    problems = []
    try:
        dash = json.load(open(DASHBOARD))
    except (OSError, ValueError) as e:
        check("dashboard parses", [str(e)])
        return
    exprs = []
    ids = set()
    for p in dash.get("panels", []):
        if p.get("id") in ids:
            problems.append(f"panel id {p.get('id')} is used twice")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        title = p.get("title") or f"panel {p.get('id')}"
        ds = p.get("datasource") or {}
        if ds.get("type") != "prometheus" or not ds.get("uid"):
            problems.append(f"{title}: no Prometheus datasource")
        if not isinstance(p.get("gridPos"), dict):
            problems.append(f"{title}: no gridPos")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{title}: no query")
        for t in targets:
            expr = (t.get("expr") or "").strip()
            if not expr:
                problems.append(f"{title}: target {t.get('refId')} has no expr")
                continue
            if not NAME.search(expr):
                problems.append(f"{title}: {expr!r} names no gateway metric")
            exprs.append((title, expr))
            problems += usage(expr, title, series, recorded, values)
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            problems += usage(v.get("definition", ""), f"variable {v.get('name')}", series, recorded, values)
    # Every query must parse: Grafana's variables filled in, each becomes a
    # recording rule that promtool checks.
    filled = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
              "$namespace": ".*", "$job": ".*"}
    doc = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, (title, expr) in enumerate(exprs):
        for var, value in filled.items():
            expr = expr.replace(var, value)
        doc["groups"][0]["rules"].append({"record": f"dashboard:query:{i}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(doc, f)
        f.flush()
        rc, out = promtool("check", "rules", f.name)
        if rc:
            problems.append(f"a query does not parse: {out}")
    check(f"dashboard: parses, {len(exprs)} queries over exported metrics with datasources", problems)


main()
sys.exit(1 if any(p for _, p in results) else 0)
