"""The Grafana dashboard (deploy/grafana/medusa-dashboard.json), checked against the real server.

--static (CTest `deploy_dashboard_queries`): the dashboard's variables are what Grafana needs
  (a `datasource` variable of type datasource for Prometheus; `model` and `pod` query variables
  over label_values), and every panel expression, with the variables replaced by concrete
  values, parses with promql-parser and names only metrics that a real medusa-server exports
  (read from its /metrics after one Medusa request, since labelled families such as
  medusa_requests_total{status} appear with their first series; histograms as
  _bucket/_sum/_count) or that the recording rules define. The rules' own expressions are held
  to the same list, and the exposition passes `promtool check metrics`.

--e2e (CTest `deploy_dashboard_e2e`): a real medusa-server (SmolLM2-135M-Instruct with its shipped
  Medusa heads), a real Prometheus on loopback scraping it every second with the recording rules
  loaded, a short `medusa bench` run with Medusa and one without (so both step modes, and so the
  measured overhead, have data); then every panel's expressions through Prometheus's HTTP API:
  each must return at least one finite value. Failures name the panel.

Exit 77 (skipped) only when a tool is absent: prometheus, or the model files (scripts/setup.sh).
"""
import argparse
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import promql_parser
import yaml

SOURCE_DIR = pathlib.Path(os.environ.get("MEDUSA_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BINARY_DIR = pathlib.Path(os.environ.get("MEDUSA_BINARY_DIR", SOURCE_DIR / "build"))
DASHBOARD = SOURCE_DIR / "deploy/grafana/medusa-dashboard.json"
RULES = SOURCE_DIR / "deploy/prometheus/rules/medusa.rules.yaml"
SERVER = BINARY_DIR / "bin/medusa-server"
CLI = BINARY_DIR / "bin/medusa"
SMOLLM2 = SOURCE_DIR / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HEADS = SOURCE_DIR / "heads/SmolLM2-135M-Instruct.medusa.safetensors"
SMOLLM2_TREE = SOURCE_DIR / "heads/SmolLM2-135M-Instruct.medusa.tree8.json"
# The labels Kubernetes service discovery attaches to a target, given to the local target so
# that the dashboard's $pod and the rules' (namespace, pod) grouping work as in a cluster.
POD = "medusa-0"
NAMESPACE = "test"
# Grafana's $__rate_interval is at least four scrape intervals: 4 s here.
RATE_INTERVAL = "4s"

BENCH_PROMPTS = [
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three colours of the rainbow.",
    "What is the capital of France? Answer briefly.",
]


def free_ports(count):
    # All held open at once, so that the kernel cannot hand the same port out twice.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port():
    return free_ports(1)[0]


def http_get(url, timeout=5, error_body=False):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read().decode()
    except urllib.error.HTTPError as e:  # Prometheus answers a bad query with 400 and a JSON error
        return e.read().decode() if error_body else None
    except OSError:
        return None


def panels_of(dashboard):
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def regex_value(value):
    # As Grafana puts a variable into a regex matcher: regex metacharacters escaped, with the
    # backslash itself escaped for PromQL's double-quoted string.
    return re.sub(r"[\\.+*?()|\[\]{}^$]", lambda m: "\\\\" + m.group(0), value)


def substitute(expr, model):
    values = {"pod": POD, "model": regex_value(model), "__rate_interval": RATE_INTERVAL, "__interval": "1s",
              "__range": "1m", "datasource": "prometheus"}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)


def metric_names(node, names):
    """Every metric an expression reads (its vector selectors' names)."""
    if isinstance(node, promql_parser.VectorSelector):
        name = node.name
        if not name:
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    name = matcher.value
        names.add(name)
        return names
    for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (int, float, str)):
            metric_names(child, names)
    for arg in getattr(node, "args", None) or []:
        metric_names(arg, names)
    return names


def exported_names(exposition):
    """Metric names in a text exposition: every family's # TYPE (histograms expanded), every sample."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update({name + "_bucket", name + "_sum", name + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


class Server:
    def __init__(self, args, log):
        self.port, self.metrics_port = free_ports(2)
        argv = [str(SERVER), *args, f"--port={self.port}", f"--metrics-port={self.metrics_port}", "--threads=2"]
        print("$", " ".join(argv))
        self.log = log
        self.process = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def metrics(self):
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def wait_serving(self, timeout):
        # medusa_model_info is set once health is SERVING (server/server.cc).
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"medusa-server exited {self.process.returncode}:\n{pathlib.Path(self.log).read_text()}")
            text = self.metrics()
            if text and "medusa_model_info{" in text:
                return text
            time.sleep(0.2)
        raise RuntimeError(f"medusa-server not serving after {timeout} s:\n{pathlib.Path(self.log).read_text()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Prometheus:
    def __init__(self, workdir, target_port):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        rules = workdir / "medusa.rules.yaml"
        shutil.copy(RULES, rules)
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{
                "job_name": "medusa",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"],
                                    "labels": {"pod": POD, "namespace": NAMESPACE}}],
            }],
        }))
        argv = [shutil.which("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        print("$", " ".join(argv))
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(argv, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while http_get(f"http://127.0.0.1:{self.port}/-/ready") is None:
            if time.time() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"Prometheus not ready:\n{self.log.read_text()}")
            time.sleep(0.2)

    def query(self, expr):
        body = http_get(f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.parse.quote(expr)}", error_body=True)
        if body is None:
            return None, "no reply"
        reply = json.loads(body)
        if reply.get("status") != "success":
            return None, reply.get("error", body)
        return reply["data"]["result"], None

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def check_structure(dashboard, failures):
    if dashboard.get("schemaVersion", 0) < 36:
        failures.append(f"schemaVersion {dashboard.get('schemaVersion')}: older than Grafana 9")
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        failures.append("no `datasource` variable of type datasource for prometheus")
    for name in ("model", "pod"):
        var = variables.get(name, {})
        query = var.get("query", {})
        query = query.get("query", "") if isinstance(query, dict) else query
        if var.get("type") != "query" or not query.startswith("label_values("):
            failures.append(f"`{name}` is not a label_values query variable")
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                failures.append(f"panel {panel['title']!r}: target {target.get('refId')} ignores $datasource")


def recorded_names():
    rules = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def expressions(dashboard, model):
    """(panel title, expression) for every panel target and variable query, variables replaced."""
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], substitute(target["expr"], model)


def variable_metrics(dashboard):
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query
        match = re.match(r"label_values\((\w+)", query or "")
        if match:
            yield var["name"], match.group(1)


def static_check():
    for path in (SERVER, CLI, SMOLLM2, SMOLLM2_HEADS, SMOLLM2_TREE):
        if not path.exists():
            print(f"SKIP: {path} is missing (build medusa-server and medusa; scripts/setup.sh puts the models)")
            return 77
    dashboard = json.loads(DASHBOARD.read_text())
    failures = []
    check_structure(dashboard, failures)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server([f"--model={SMOLLM2}", f"--heads={SMOLLM2_HEADS}", f"--tree={SMOLLM2_TREE}"],
                        pathlib.Path(tmp) / "server.log")
        try:
            server.wait_serving(120)
            # One greedy Medusa request: the labelled families get their first series.
            client = subprocess.run([str(CLI), "client", f"--addr=127.0.0.1:{server.port}", "--chat", "--prompt",
                                     BENCH_PROMPTS[0], "--max-tokens=32", "--ignore-eos", "--json"],
                                    capture_output=True, text=True, timeout=120)
            if client.returncode != 0:
                raise RuntimeError(f"medusa client exited {client.returncode}: {client.stderr}")
            exposition = server.metrics()
        finally:
            server.stop()
    # The exposition itself passes Prometheus' own lint (naming, types, help).
    promtool = shutil.which("promtool")
    if promtool:
        lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
        if lint.returncode != 0:
            failures.append(f"promtool check metrics: {lint.stdout}{lint.stderr}")
    exported = exported_names(exposition)
    for family in ("medusa_requests_total", "medusa_draft_tokens_accepted_total", "medusa_batch_size_bucket"):
        if family not in exported:
            failures.append(f"{family} not in the server's /metrics after a Medusa request")
    recorded = recorded_names()
    known = exported | recorded
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in sorted(metric_names(promql_parser.parse(rule["expr"]), set())):
                if name not in known and name != "up":  # `up`: Prometheus' own, per target
                    failures.append(f"rule {rule.get('record') or rule.get('alert')}: {name} is not exported")
    print(f"{len(exported)} exported names, {len(known) - len(exported)} recorded")
    count = 0
    for title, expr in expressions(dashboard, "SmolLM2"):
        count += 1
        try:
            tree = promql_parser.parse(expr)
        except Exception as e:  # promql-parser raises its own error types
            failures.append(f"panel {title!r}: does not parse: {expr}: {e}")
            continue
        for name in sorted(metric_names(tree, set())):
            if name not in known:
                failures.append(f"panel {title!r}: {name} is neither exported by medusa-server nor recorded")
    for var, metric in variable_metrics(dashboard):
        if metric not in exported:
            failures.append(f"variable {var}: {metric} is not exported by medusa-server")
    for f in failures:
        print("FAIL:", f)
    print(f"{count} expressions checked, {len(failures)} failure(s)")
    return 1 if failures else 0


def bench(server, prompts, extra):
    argv = [str(CLI), "bench", f"--addr=127.0.0.1:{server.port}", f"--prompts={prompts}", "--concurrency=2",
            "--requests=6", "--max-tokens=40", "--ignore-eos", "--json", *extra]
    print("$", " ".join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    print(result.stdout.strip() or result.stderr.strip())
    if result.returncode != 0:
        raise RuntimeError(f"medusa bench exited {result.returncode}: {result.stderr}")
    summary = json.loads(result.stdout)
    if summary["errors"] != 0:
        raise RuntimeError(f"medusa bench had errors: {summary}")
    return summary


def e2e_check(keep=None):
    if shutil.which("prometheus") is None:
        print("SKIP: prometheus not found (Debian package prometheus; scripts/setup.sh installs it)")
        return 77
    for path in (SERVER, CLI, SMOLLM2, SMOLLM2_HEADS, SMOLLM2_TREE):
        if not path.exists():
            print(f"SKIP: {path} is missing (build medusa-server and medusa; scripts/setup.sh puts the models)")
            return 77
    dashboard = json.loads(DASHBOARD.read_text())
    started = time.time()
    tmp = pathlib.Path(keep) if keep else pathlib.Path(tempfile.mkdtemp(prefix="medusa-dashboard-"))
    tmp.mkdir(parents=True, exist_ok=True)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n" for p in BENCH_PROMPTS))
    server = Server([f"--model={SMOLLM2}", f"--heads={SMOLLM2_HEADS}", f"--tree={SMOLLM2_TREE}"], tmp / "server.log")
    prometheus = None
    failures = []
    try:
        exposition = server.wait_serving(120)
        model = re.search(r'medusa_model_info\{model="([^"]*)"', exposition).group(1)
        prometheus = Prometheus(tmp, server.metrics_port)
        print(f"server and Prometheus up after {time.time() - started:.1f} s; model {model!r}")
        bench(server, prompts, [])
        bench(server, prompts, ["--no-medusa"])
        # Traffic goes on while the panels are read, as on a live dashboard: a panel of rates
        # over a few seconds reads NaN (0/0) once the server is idle, and a fast machine is
        # idle again before the first rule evaluation.
        stop_traffic = threading.Event()

        def traffic():
            while not stop_traffic.is_set():
                bench(server, prompts, [])
                bench(server, prompts, ["--no-medusa"])

        traffic_thread = threading.Thread(target=traffic, daemon=True)
        traffic_thread.start()
        # Every panel, polled until it has a finite value (scrapes and rule evaluations are
        # every second; 1m rates need two scrapes).
        pending = list(dict.fromkeys(expressions(dashboard, model)))
        deadline = time.time() + 30
        results = {}
        while pending and time.time() < deadline:
            still = []
            for title, expr in pending:
                result, error = prometheus.query(expr)
                values = [float(r["value"][1]) for r in result or []]
                results[(title, expr)] = (values, error)
                if not any(math.isfinite(v) for v in values):
                    still.append((title, expr))
            pending = still
            if pending:
                time.sleep(1)
        stop_traffic.set()
        traffic_thread.join()
        for (title, expr), (values, error) in results.items():
            ok = any(math.isfinite(v) for v in values)
            print(f"{'ok  ' if ok else 'FAIL'} {title}: {expr} -> {error or [round(v, 4) for v in values][:6]}")
        for title, expr in pending:
            failures.append(f"panel {title!r}: no finite value from {expr}: {results[(title, expr)]}")
        for var, metric in variable_metrics(dashboard):
            result, error = prometheus.query(metric)
            if not result:
                failures.append(f"variable {var}: {metric} has no series ({error})")
    except Exception as e:
        failures.append(f"{type(e).__name__}: {e}")
    finally:
        if prometheus:
            prometheus.stop()
        server.stop()
    if failures:
        for log in (tmp / "server.log", tmp / "prometheus.log"):
            if log.exists():
                print(f"--- {log.name} (last 3000 characters)\n{log.read_text()[-3000:]}")
    for f in failures:
        print("FAIL:", f)
    print(f"e2e took {time.time() - started:.1f} s, {len(failures)} failure(s)")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser()
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--static", action="store_true")
    mode.add_argument("--e2e", action="store_true")
    parser.add_argument("--keep", help="e2e: keep the server, Prometheus and their data in this folder")
    args = parser.parse_args()
    return static_check() if args.static else e2e_check(args.keep)


if __name__ == "__main__":
    sys.exit(main())
