"""Prometheus rules, checked by real tools (CTest `deploy_prometheus_rules`, label `deploy`).

1. `promtool check rules` on the source (deploy/prometheus/rules/medusa.rules.yaml).
2. `promtool test rules` on deploy/prometheus/tests/*.yaml, and every recording rule and alert
   of the source is named in some test (a rule without a test is a failure).
3. The PrometheusRule (deploy/kubernetes/components/monitoring/prometheusrule.yaml) is exactly
   what scripts/gen_prometheus_rule.py makes from the source, carries the same groups, and its
   groups pass `promtool check rules` too.
4. The PrometheusRule validates against the Prometheus Operator CRD schema
   (tests/deploy/schemas/prometheusrule-v1.json: the openAPIV3Schema of prometheus-operator
   v0.93.0's monitoring.coreos.com_prometheusrules.yaml, copied unchanged from the workplace's
   shared/schemas/), with unknown fields refused (additionalProperties: false added to every
   object schema that lists its properties), so a misspelt field fails.

Exit 77 (skipped) only when promtool is not installed.
"""
import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

from crd_schema import strict_crd_schema

SOURCE_DIR = pathlib.Path(os.environ.get("MEDUSA_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
RULES = SOURCE_DIR / "deploy/prometheus/rules/medusa.rules.yaml"
TESTS = sorted((SOURCE_DIR / "deploy/prometheus/tests").glob("*.yaml"))
GENERATED = SOURCE_DIR / "deploy/kubernetes/components/monitoring/prometheusrule.yaml"
SCHEMA = SOURCE_DIR / "tests/deploy/schemas/prometheusrule-v1.json"
GENERATOR = SOURCE_DIR / "scripts/gen_prometheus_rule.py"

failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message)


def run(argv, cwd=None):
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    print("$", " ".join(str(a) for a in argv), "->", result.returncode)
    output = (result.stdout + result.stderr).strip()
    if output:
        print(output[-4000:])
    return result.returncode




def main():
    promtool = shutil.which("promtool")
    if promtool is None:
        print("SKIP: promtool not found (Debian package prometheus; scripts/setup.sh installs it)")
        return 77

    # 1 and 2: the source and its unit tests.
    if run([promtool, "check", "rules", RULES]) != 0:
        fail(f"promtool check rules {RULES}")
    if not TESTS:
        fail("no rule tests in deploy/prometheus/tests")
    for test in TESTS:
        if run([promtool, "test", "rules", test.name], cwd=test.parent) != 0:
            fail(f"promtool test rules {test}")
    source = yaml.safe_load(RULES.read_text())
    tested_exprs, tested_alerts = set(), set()
    for test_file in (yaml.safe_load(t.read_text()) for t in TESTS):
        for case in test_file.get("tests", []):
            tested_exprs.update(e["expr"].strip() for e in case.get("promql_expr_test", []))
            tested_alerts.update(a["alertname"] for a in case.get("alert_rule_test", []))
    for group in source["groups"]:
        for rule in group["rules"]:
            if "record" in rule and rule["record"] not in tested_exprs:
                fail(f"recording rule {rule['record']} has no promql_expr_test")
            if "alert" in rule:
                if rule["alert"] not in tested_alerts:
                    fail(f"alert {rule['alert']} has no alert_rule_test")
                for key in ("summary", "description", "runbook_url"):
                    if not rule.get("annotations", {}).get(key):
                        fail(f"alert {rule['alert']} lacks annotation {key}")
                if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    fail(f"alert {rule['alert']} lacks a severity")
                anchor = rule.get("annotations", {}).get("runbook_url", "").partition("#")[2]
                alerts_doc = (SOURCE_DIR / "docs/alerts.md").read_text().lower()
                if f'<a id="{anchor}"></a>' not in alerts_doc and f"## {anchor}\n" not in alerts_doc:
                    fail(f"alert {rule['alert']}: docs/alerts.md has no anchor #{anchor}")

    # Style: yamllint's defaults (long PromQL lines and annotations allowed).
    lint_config = "{extends: default, rules: {line-length: {max: 240}, document-start: disable}}"
    if run([sys.executable, "-m", "yamllint", "-s", "-d", lint_config, RULES, *TESTS, GENERATED]) != 0:
        fail("yamllint")

    # 3: the generated PrometheusRule.
    if run([sys.executable, GENERATOR, "--check"]) != 0:
        fail(f"{GENERATED} differs from what {GENERATOR.name} makes from {RULES.name}")
    generated = yaml.safe_load(GENERATED.read_text())
    if generated.get("spec", {}).get("groups") != source["groups"]:
        fail("the PrometheusRule's groups are not the source's")
    with tempfile.TemporaryDirectory() as tmp:
        extracted = pathlib.Path(tmp) / "from_prometheusrule.yaml"
        extracted.write_text(yaml.safe_dump({"groups": generated.get("spec", {}).get("groups", [])}))
        if run([promtool, "check", "rules", extracted]) != 0:
            fail("promtool check rules on the PrometheusRule's groups")

    # 4: the CRD schema.
    schema = strict_crd_schema(json.loads(SCHEMA.read_text()))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(generated), key=lambda e: list(e.path))
    for error in errors:
        fail(f"PrometheusRule schema: {'/'.join(str(p) for p in error.path)}: {error.message}")
    # The strict schema must refuse a misspelt field, or the check above proves nothing.
    misspelt = copy.deepcopy(generated)
    misspelt["spec"]["groups"][0]["rules"][0]["exprr"] = misspelt["spec"]["groups"][0]["rules"][0].pop("expr")
    if validator.is_valid(misspelt):
        fail("the schema accepted a rule with `exprr` instead of `expr`")
    print(f"schema: {GENERATED.name} valid against {SCHEMA.name}" if not errors else "schema: invalid")

    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all Prometheus rule checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
