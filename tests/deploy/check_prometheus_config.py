#!/usr/bin/env python3
"""deploy/prometheus/scrape-config.yaml and deploy/prometheus-adapter/rules.yaml, checked.

- The scrape job, embedded in a minimal prometheus.yml, passes `promtool check config`.
- Its relabeling, applied (as Prometheus does: anchored regexes, keep, replace) to the pod
  target Prometheus' kubernetes_sd role `pod` makes of the rendered Deployment, keeps its
  `metrics` port only and gives the series the `namespace` and `pod` labels that
  prometheus-adapter maps back to pods; a pod of another app and the gRPC port are dropped.
- The adapter's rule serves medusa_requests_waiting (a gauge the server exports), by
  `namespace` and `pod`; its seriesQuery and its metricsQuery (templates filled in as the
  adapter fills them) parse as PromQL (promql-parser).

Exit 0: all good; 1: a failure; 77: promtool, kubectl or a Python module is missing.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

SOURCE = os.environ.get("MEDUSA_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(77)


try:
    import promql_parser
    import yaml
except ImportError as e:
    skip(f"python module missing: {e}")

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def relabel(labels, configs):
    """Prometheus' relabeling for the actions the scrape config uses; None when the target is dropped."""
    labels = dict(labels)
    for c in configs:
        value = c.get("separator", ";").join(labels.get(s, "") for s in c.get("source_labels", []))
        regex = re.compile(f"^(?:{c.get('regex', '(.*)')})$")
        action = c.get("action", "replace")
        match = regex.match(value)
        if action == "keep":
            if not match:
                return None
        elif action == "drop":
            if match:
                return None
        elif action == "replace":
            if match:
                labels[c["target_label"]] = match.expand(c.get("replacement", "$1").replace("$", "\\"))
        else:
            raise SystemExit(f"FAIL: relabel action {action!r} is not simulated here")
    return labels


def pod_target(deployment, port_name, namespace, pod_name):
    """The labels kubernetes_sd role `pod` gives one container port of a pod of `deployment`."""
    labels = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod_name}
    for k, v in deployment["spec"]["template"]["metadata"]["labels"].items():
        labels["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k)] = v
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = next(p for p in container["ports"] if p["name"] == port_name)
    labels.update({"__meta_kubernetes_pod_container_name": container["name"],
                   "__meta_kubernetes_pod_container_port_name": port_name,
                   "__address__": f"10.0.0.7:{port['containerPort']}"})
    return labels


def main():
    promtool = shutil.which("promtool")
    kubectl = shutil.which("kubectl") or ("/usr/bin/kubectl" if os.path.exists("/usr/bin/kubectl") else None)
    if promtool is None:
        skip("promtool is not installed (Debian package prometheus)")
    if kubectl is None:
        skip("kubectl is not installed")

    with open(os.path.join(SOURCE, "deploy", "prometheus", "scrape-config.yaml")) as f:
        scrape = yaml.safe_load(f)
    jobs = scrape.get("scrape_configs", [])
    check(len(jobs) == 1 and jobs[0].get("job_name") == "medusa", "scrape-config.yaml: one job, `medusa`")
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "prometheus.yml")

        def promtool_check(scrape_configs):
            with open(config, "w") as f:
                yaml.safe_dump({"global": {"scrape_interval": "15s"}, "scrape_configs": scrape_configs}, f)
            out = subprocess.run([promtool, "check", "config", config], capture_output=True, text=True)
            print(out.stdout + out.stderr)
            return out

        out = promtool_check(jobs)
        if out.returncode != 0 and "field kubernetes_sd_configs not found" in out.stdout + out.stderr:
            # Debian builds Prometheus without Kubernetes discovery (no client-go): this promtool
            # cannot read the block. Check the rest of the job with it, the block's fields below.
            print("this promtool has no kubernetes_sd_configs (Debian's build): checking the job with "
                  "static_configs in its place; the discovery block is checked field by field")
            stand_in = [{k: v for k, v in job.items() if k != "kubernetes_sd_configs"} for job in jobs]
            for job in stand_in:
                job["static_configs"] = [{"targets": ["10.0.0.7:9464"]}]
            out = promtool_check(stand_in)
        check(out.returncode == 0, f"promtool check config: rc {out.returncode}")

    job = jobs[0]
    check([c.get("role") for c in job.get("kubernetes_sd_configs", [])] == ["pod"],
          "the job discovers pods (kubernetes_sd_configs role pod)")
    # Prometheus' kubernetes_sd_config fields (docs: configuration/#kubernetes_sd_config), for
    # the promtool that cannot read them.
    sd_fields = {"role", "api_server", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
                 "basic_auth", "authorization", "oauth2", "proxy_url", "follow_redirects", "enable_http2",
                 "tls_config", "no_proxy", "proxy_from_environment", "proxy_connect_header"}
    for c in job.get("kubernetes_sd_configs", []):
        check(set(c) <= sd_fields, f"kubernetes_sd_configs: unknown fields {sorted(set(c) - sd_fields)}")
        check(set(c.get("namespaces", {})) <= {"own_namespace", "names"},
              f"kubernetes_sd_configs.namespaces: unknown fields {sorted(c.get('namespaces', {}))}")
    rendered = subprocess.run([kubectl, "kustomize", os.path.join(SOURCE, "deploy", "kubernetes", "overlays", "cpu")],
                              capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    namespace = deployment["metadata"]["namespace"]
    names = [c.get("namespaces", {}).get("names") for c in job["kubernetes_sd_configs"]]
    check(names == [[namespace]], f"the job looks in namespace {namespace!r}, got {names}")

    relabels = job.get("relabel_configs", [])
    kept = relabel(pod_target(deployment, "metrics", namespace, "medusa-abc-1"), relabels)
    if check(kept is not None, "the medusa pod's metrics port is dropped by the relabeling"):
        check(kept.get("namespace") == namespace and kept.get("pod") == "medusa-abc-1",
              f"the kept target lacks namespace/pod labels: {kept}")
        check(kept["__address__"].endswith(":9464"), f"the kept target is not the metrics port: {kept}")
    check(relabel(pod_target(deployment, "grpc", namespace, "medusa-abc-1"), relabels) is None,
          "the gRPC port is scraped too")
    other = dict(pod_target(deployment, "metrics", namespace, "other-1"))
    other["__meta_kubernetes_pod_label_app_kubernetes_io_name"] = "other"
    check(relabel(other, relabels) is None, "another app's pod with a `metrics` port is scraped")

    # prometheus-adapter.
    with open(os.path.join(SOURCE, "deploy", "prometheus-adapter", "rules.yaml")) as f:
        rules = yaml.safe_load(f).get("rules", [])
    with open(os.path.join(SOURCE, "server", "metrics.cc")) as f:
        exported = set(re.findall(r'"(medusa_[a-z_]+)"', f.read()))
    check("medusa_requests_waiting" in exported, "server/metrics.cc no longer exports medusa_requests_waiting")
    served = {}
    for rule in rules:
        served[rule["name"]["as"]] = rule
        series = rule["seriesQuery"]
        try:
            selector = promql_parser.parse(series)
        except Exception as e:  # promql_parser raises its own error types
            failures.append(f"adapter seriesQuery {series!r} does not parse: {e}")
            continue
        metric = getattr(selector, "name", None)
        check(metric in exported, f"adapter seriesQuery selects {metric!r}, which the server does not export")
        check(re.fullmatch(rule["name"]["matches"], metric or "") is not None,
              f"adapter name.matches {rule['name']['matches']!r} does not match {metric!r}")
        overrides = rule.get("resources", {}).get("overrides", {})
        check(overrides.get("namespace", {}).get("resource") == "namespace"
              and overrides.get("pod", {}).get("resource") == "pod",
              "adapter rule does not map the namespace and pod labels to their resources")
        # What the adapter sends Prometheus for `kubectl get --raw .../pods/*/medusa_requests_waiting`.
        query = (rule["metricsQuery"].replace("<<.Series>>", metric or "x")
                 .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"medusa-a|medusa-b"')
                 .replace("<<.GroupBy>>", "pod"))
        check("<<" not in query, f"adapter metricsQuery has a template this check does not fill: {query}")
        try:
            promql_parser.parse(query)
        except Exception as e:
            failures.append(f"adapter metricsQuery {query!r} does not parse: {e}")
    check("medusa_requests_waiting" in served, "prometheus-adapter serves no medusa_requests_waiting")

    for f in failures:
        print(f"FAIL: {f}")
    print("scrape config, relabeling and prometheus-adapter rules: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
