#!/usr/bin/env python3
"""deploy/kubernetes, checked by real tools and by what the server really does.

For each overlay (cpu, gpu; both include the monitoring and autoscaling components):
  1. `kubectl kustomize` renders it;
  2. every object validates with kubernetes-validate --strict at the oldest Kubernetes the
     manifests claim (1.27: native gRPC probes are GA there) and at the newest it knows; a kind
     without a Kubernetes schema must be a Prometheus Operator kind, validated against its CRD
     schema (tests/deploy/schemas) with unknown fields rejected; anything else is a failure;
  3. semantic checks (check_objects): selectors match the pod labels, probes use the numeric
     container port that --port names and the health names server/server.h defines, the grace
     period covers preStop + --shutdown-grace-seconds + a margin, the restricted Pod Security
     fields, memory-backed /dev/shm and /tmp, the GPU request and toleration, and the container's
     flags are all flags medusa-server accepts (server/main.cc and tools/engine_flags.cc, and the
     built binary's --helpfull when it is there) and do not contradict each other.

`--mutations` breaks the rendered manifests one way at a time and requires the matching check
to fire, so that none of them passes vacuously.

Exit 0: all good; 1: a failure (each printed); 77: a tool is missing (skipped, reason printed).
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys

from crd_schema import strict_crd_schema

SKIP = 77


def skip(reason):
    print(f"SKIPPED: {reason}")
    sys.exit(SKIP)


try:
    import jsonschema
    import yaml
    from kubernetes_validate import utils as kv
except ImportError as e:  # the pinned tools are not installed (scripts/setup.sh puts them in build/pytools)
    skip(f"python module missing: {e}")

SOURCE = os.environ.get("MEDUSA_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY_DIR = os.environ.get("MEDUSA_BINARY_DIR") or os.path.join(SOURCE, "build")
KUSTOMIZE_ROOT = os.path.join(SOURCE, "deploy", "kubernetes")
SCHEMAS = os.path.join(SOURCE, "tests", "deploy", "schemas")

OLDEST = "1.27.0"  # keep in step with deploy/kubernetes/base/kustomization.yaml and docs/deploying.md
NAMESPACE = "medusa"
UID = 10001  # the image's user
# Time after the drain for the last messages, the listeners' close and the exit.
SHUTDOWN_MARGIN_S = 10
# The worst model load each overlay's startup probe must wait for (the assumption stated in
# the manifests): a small model on a busy CPU node; a 13B fp16 model from a network volume.
WORST_LOAD_S = {"cpu": 600, "gpu": 1800, "cpu+tls": 600}
# The overlays, and the cpu overlay with the optional TLS component (rendered through a
# kustomization made here, as a user adds the component to an overlay).
OVERLAYS = {"cpu": {"image_tag": "cpu", "device": "cpu", "gpu": False, "tls": False},
            "gpu": {"image_tag": "cuda", "device": "cuda", "gpu": True, "tls": False},
            "cpu+tls": {"image_tag": "cpu", "device": "cpu", "gpu": False, "tls": True}}
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
               ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
               ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json"}
# Volume types the restricted Pod Security profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def newest_version():
    return kv.latest_version()


def kubectl():
    path = shutil.which("kubectl") or ("/usr/bin/kubectl" if os.path.exists("/usr/bin/kubectl") else None)
    if path is None:
        skip("kubectl is not installed (kubectl kustomize renders the manifests)")
    return path


def render(overlay):
    if "+" in overlay:
        import tempfile
        base, component = overlay.split("+")
        with tempfile.TemporaryDirectory() as tmp:
            rel = os.path.relpath(KUSTOMIZE_ROOT, tmp)  # kustomize takes no absolute paths
            with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
                yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                "resources": [f"{rel}/overlays/{base}"],
                                "components": [f"{rel}/components/{component}"]}, f)
            out = subprocess.run([kubectl(), "kustomize", tmp], capture_output=True, text=True)
    else:
        out = subprocess.run([kubectl(), "kustomize", os.path.join(KUSTOMIZE_ROOT, "overlays", overlay)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"FAIL: kubectl kustomize overlays/{overlay}:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# ---------------------------------------------------------------- schemas



_crd_cache = {}


def crd_validator(filename):
    if filename not in _crd_cache:
        with open(os.path.join(SCHEMAS, filename)) as f:
            _crd_cache[filename] = jsonschema.Draft7Validator(strict_crd_schema(json.load(f)))
    return _crd_cache[filename]


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def check_schemas(docs, versions):
    errors = []
    for obj in docs:
        crd = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
        if crd is not None:
            for e in crd_validator(crd).iter_errors(obj):
                errors.append(f"{name_of(obj)}: CRD schema {crd}: {'/'.join(map(str, e.path))}: {e.message}")
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.SchemaNotFoundError:
                errors.append(f"{name_of(obj)}: no Kubernetes {version} schema for {obj.get('apiVersion')} "
                              f"{obj.get('kind')} (an unknown kind is a failure here)")
            except kv.ValidationError as e:
                errors.append(f"{name_of(obj)}: Kubernetes {version} --strict: "
                              f"{'/'.join(map(str, e.path))}: {e.message}")
    return errors


def check_with_cli(docs, versions, workdir):
    """The kubernetes-validate command itself, on the Kubernetes objects (not the CRD kinds)."""
    exe = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    if not os.path.exists(exe):
        skip(f"{exe} is missing")
    path = os.path.join(workdir, "objects.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all([d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS], f)
    errors = []
    for version in versions:
        out = subprocess.run([exe, "--strict", "-k", version, path], capture_output=True, text=True)
        text = out.stdout + out.stderr
        if out.returncode != 0 or re.search(r"^(WARN|ERROR|INFO .*(not found|couldn't))", text, re.M):
            errors.append(f"kubernetes-validate --strict -k {version}: rc {out.returncode}\n{text}")
    return errors


# ---------------------------------------------------------------- the server's own names

def server_flags_from_source():
    """Flags medusa-server takes: those of server/main.cc and tools/engine_flags.cc (its kFlagsFiles)."""
    flags = {}
    for rel in ("server/main.cc", "tools/engine_flags.cc"):
        with open(os.path.join(SOURCE, rel)) as f:
            for kind, name in re.findall(r"ABSL_FLAG\(\s*([\w:]+)\s*,\s*(\w+)\s*,", f.read()):
                flags[name] = kind
    if "port" not in flags or "model" not in flags:
        raise SystemExit("FAIL: could not read medusa-server's flags from server/main.cc and tools/engine_flags.cc")
    return flags


def server_flags_from_binary():
    """The built binary's flags (--helpfull), or None when it is not built."""
    exe = os.path.join(BINARY_DIR, "bin", "medusa-server")
    if not os.access(exe, os.X_OK):
        return None
    out = subprocess.run([exe, "--helpfull"], capture_output=True, text=True, timeout=60)
    return set(re.findall(r"^\s+--(\w+) \(", out.stdout + out.stderr, re.M))


def health_names():
    with open(os.path.join(SOURCE, "server", "server.h")) as f:
        text = f.read()
    names = dict(re.findall(r'static constexpr char (k\w+)\[\] = "([^"]+)";', text))
    return names["kServiceName"], names["kLivenessName"]


# ---------------------------------------------------------------- semantic checks

def parse_args(args, known_flags, binary_flags, errors):
    flags = {}
    for arg in args:
        m = re.fullmatch(r"--([\w-]+)(?:=(.*))?", arg)
        if not m:
            errors.append(f"container argument {arg!r} is not --flag=value")
            continue
        name = m.group(1).replace("-", "_")
        value = m.group(2)
        if name not in known_flags:
            errors.append(f"--{m.group(1)}: not a medusa-server flag (server/main.cc, tools/engine_flags.cc)")
        elif binary_flags is not None and name not in binary_flags:
            errors.append(f"--{m.group(1)}: the built medusa-server does not list it in --helpfull")
        if value is None and known_flags.get(name) != "bool":
            errors.append(f"--{m.group(1)} needs a value (--{m.group(1)}=...)")
        if name in flags:
            errors.append(f"--{m.group(1)} given twice")
        flags[name] = value if value is not None else "true"
    return flags


def number(flags, name, default, errors):
    try:
        return float(flags.get(name, default))
    except ValueError:
        errors.append(f"--{name.replace('_', '-')}={flags[name]}: not a number")
        return float(default)


def is_loopback(host):
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def labels_match(selector, labels):
    """A label selector (matchLabels / matchExpressions, or a plain map) against a label set."""
    if selector is None:
        return False
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if not match and not selector.get("matchExpressions"):
        return False  # an empty selector selects everything: never what is meant here
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"] or op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None or op == "DoesNotExist" and value is not None:
            return False
    return True


def one(docs, kind, errors):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        errors.append(f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def mounted_file(path, container, volumes):
    """The volume that holds `path` in the container, or None."""
    for m in container.get("volumeMounts", []):
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            return volumes.get(m["name"]), path[len(m["mountPath"].rstrip("/")) + 1:]
    return None, None


def restricted_errors(pod, docs):
    """The restricted Pod Security profile's fields on a pod spec (and no service-account token)."""
    errors = []
    containers = pod.get("containers", [])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        errors.append("pod securityContext.runAsNonRoot is not true")
    if psc.get("runAsUser") != UID:
        errors.append(f"pod securityContext.runAsUser is {psc.get('runAsUser')!r}, expected {UID} (the image's user)")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append("pod securityContext.seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            errors.append(f"pod {key} is set")
    for c in containers + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{where}: readOnlyRootFilesystem is not true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            errors.append(f"{where}: capabilities do not drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            errors.append(f"{where}: adds capabilities")
        if sc.get("privileged"):
            errors.append(f"{where}: privileged")
        if sc.get("runAsUser", UID) == 0 or sc.get("runAsNonRoot") is False:
            errors.append(f"{where}: runs as root")
        if "seccompProfile" in sc and sc["seccompProfile"].get("type") not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{where}: seccompProfile {sc['seccompProfile']}")
    for v in volumes.values():
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            errors.append(f"volume {v['name']}: {sorted(kinds)} is not allowed by the restricted profile")
    service_account = next((d for d in docs if d["kind"] == "ServiceAccount"
                            and d["metadata"]["name"] == pod.get("serviceAccountName", "default")), None)
    if pod.get("automountServiceAccountToken") is not False and not (
            service_account and service_account.get("automountServiceAccountToken") is False
            and "automountServiceAccountToken" not in pod):
        errors.append("the service-account token is mounted into the pod")
    return errors


def check_objects(docs, overlay):
    errors = []
    variant = OVERLAYS[overlay]
    generator_name, liveness_name = health_names()
    known_flags = server_flags_from_source()
    binary_flags = server_flags_from_binary()

    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE:
            errors.append(f"{name_of(d)}: namespace {d['metadata'].get('namespace')!r}, expected {NAMESPACE!r}")
    ns = one(docs, "Namespace", errors)
    if ns and ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        errors.append("Namespace: pod-security.kubernetes.io/enforce is not `restricted`")

    deployment = one(docs, "Deployment", errors)
    if deployment is None:
        return errors
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not labels_match(spec["selector"], pod_labels):
        errors.append("Deployment: its selector does not match its pod template's labels")
    containers = pod.get("containers", [])
    server = next((c for c in containers if c["name"] == "medusa-server"), None)
    if server is None:
        return errors + ["Deployment: no container named medusa-server"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    # The image and its variant.
    if not server.get("image", "").endswith(":" + variant["image_tag"]):
        errors.append(f"image {server.get('image')!r}: the {overlay} overlay runs the :{variant['image_tag']} image")

    # Flags.
    flags = parse_args(server.get("args", []), known_flags, binary_flags, errors)
    if server.get("command"):
        errors.append("container `command` replaces the image's entrypoint (tini -> medusa-server): use args")
    port = int(number(flags, "port", 50051, errors))
    metrics_port = int(number(flags, "metrics_port", 9464, errors))
    health_port = int(number(flags, "health_port", 0, errors))
    host = flags.get("host", "127.0.0.1")
    ports = {p.get("name"): p["containerPort"] for p in server.get("ports", [])}
    if ports.get("grpc") != port:
        errors.append(f"container port `grpc` is {ports.get('grpc')}, but --port is {port}")
    if ports.get("metrics") != metrics_port:
        errors.append(f"container port `metrics` is {ports.get('metrics')}, but --metrics-port is {metrics_port}")
    if is_loopback(host):
        errors.append(f"--host={host}: loopback, unreachable from other pods")
    if is_loopback(flags.get("metrics_host", "127.0.0.1")):
        errors.append("--metrics-host is loopback: Prometheus cannot scrape the pod")
    tls = "tls_cert_file" in flags or "tls_key_file" in flags
    if ("tls_cert_file" in flags) != ("tls_key_file" in flags):
        errors.append("--tls-cert-file and --tls-key-file go together")
    if not is_loopback(host) and not tls and "auth_token_file" not in flags and flags.get("allow_insecure") != "true":
        errors.append(f"--host={host} without TLS or --auth-token-file: medusa-server refuses to start")
    if flags.get("allow_insecure") == "true":
        errors.append("--allow-insecure: the deployment must require a token (or TLS)")
    if tls and health_port == 0:
        errors.append("TLS on --port without --health-port: the kubelet's gRPC probes speak no TLS, every probe "
                      "would fail (docs/deploying.md, TLS)")
    if tls != variant["tls"]:
        errors.append(f"{overlay}: TLS flags {'missing' if variant['tls'] else 'present'}")
    if health_port and ports.get("health") != health_port:
        errors.append(f"container port `health` is {ports.get('health')}, but --health-port is {health_port}")
    # Where the probes must go: the plaintext health port beside TLS, else the gRPC port.
    probe_port = health_port if tls and health_port else port
    for flag in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_token_file"):
        if flag in flags:
            volume, rel = mounted_file(flags[flag], server, volumes)
            if volume is None or "secret" not in volume:
                errors.append(f"--{flag.replace('_', '-')}={flags[flag]}: not on a Secret volume")
            elif "items" in volume["secret"] and rel not in [i["path"] for i in volume["secret"]["items"]]:
                errors.append(f"--{flag.replace('_', '-')}={flags[flag]}: the Secret volume has no item {rel!r}")
    if "model" not in flags:
        errors.append("--model is missing")
    else:
        volume, _ = mounted_file(flags["model"], server, volumes)
        if volume is None:
            errors.append(f"--model={flags['model']}: not on a mounted volume")
    if flags.get("device") != variant["device"]:
        errors.append(f"--device={flags.get('device')}: the {overlay} overlay runs on {variant['device']}")
    if number(flags, "max_connection_age_seconds", 0, errors) <= 0:
        errors.append("--max-connection-age-seconds is not set: client connections never rebalance to new pods")
    threads = number(flags, "threads", 0, errors)
    if overlay == "cpu" and threads == 0:
        errors.append("--threads is not set: the engine would count the node's cores, not the pod's")

    # Probes: native gRPC, numeric port == --port, the right health names.
    expected_services = {"startupProbe": generator_name, "readinessProbe": generator_name,
                         "livenessProbe": liveness_name}
    for probe_name, service in expected_services.items():
        probe = server.get(probe_name)
        if probe is None:
            errors.append(f"{probe_name} is missing")
            continue
        grpc = probe.get("grpc")
        if grpc is None:
            errors.append(f"{probe_name}: not a native gRPC probe")
            continue
        if not isinstance(grpc.get("port"), int) or grpc["port"] != probe_port:
            errors.append(f"{probe_name}: port {grpc.get('port')!r}, expected the numeric "
                          f"{'--health-port' if probe_port != port else '--port'} {probe_port}")
        if grpc.get("service") != service:
            errors.append(f"{probe_name}: service {grpc.get('service')!r}, expected {service!r}")
    startup = server.get("startupProbe", {})
    budget = startup.get("failureThreshold", 3) * startup.get("periodSeconds", 10)
    if budget < WORST_LOAD_S[overlay]:
        errors.append(f"startupProbe allows {budget} s, less than the {WORST_LOAD_S[overlay]} s worst load "
                      f"assumed for {overlay}")

    # Shutdown timing.
    pre_stop = server.get("lifecycle", {}).get("preStop", {})
    delay = None
    if "sleep" in pre_stop:
        delay = pre_stop["sleep"]["seconds"]
    elif pre_stop.get("exec", {}).get("command", [])[:1] == ["sleep"]:
        delay = float(pre_stop["exec"]["command"][1])
    if delay is None or delay <= 0:
        errors.append("preStop: no sleep before SIGTERM (endpoints would still send calls to a draining pod)")
        delay = 0
    grace = number(flags, "shutdown_grace_seconds", 30, errors)
    period = pod.get("terminationGracePeriodSeconds", 30)
    if period < delay + grace + SHUTDOWN_MARGIN_S:
        errors.append(f"terminationGracePeriodSeconds {period} < preStop {delay} + --shutdown-grace-seconds {grace} "
                      f"+ margin {SHUTDOWN_MARGIN_S}")

    errors += restricted_errors(pod, docs)

    # Memory-backed /dev/shm and /tmp (the root filesystem is read-only).
    for path in ("/dev/shm", "/tmp"):
        mount = next((m for m in server.get("volumeMounts", []) if m["mountPath"] == path), None)
        if mount is None:
            errors.append(f"{path} is not mounted")
        elif volumes.get(mount["name"], {}).get("emptyDir", {}).get("medium") != "Memory":
            errors.append(f"{path}: not a memory-backed emptyDir")
    models = next((m for m in server.get("volumeMounts", []) if m["mountPath"] == "/models"), None)
    if models is None or not models.get("readOnly"):
        errors.append("/models is not mounted read-only")

    # Resources, GPU.
    resources = server.get("resources", {})
    for part in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in resources.get(part, {}) and not (part == "limits" and res == "cpu"):
                errors.append(f"resources.{part}.{res} is not set")
    gpus = resources.get("limits", {}).get("nvidia.com/gpu")
    tolerates = any(t.get("key") == "nvidia.com/gpu" and t.get("operator") == "Exists"
                    and t.get("effect") in (None, "NoSchedule") for t in pod.get("tolerations", []))
    if variant["gpu"]:
        if gpus is None or int(gpus) < 1:
            errors.append("the gpu overlay does not request nvidia.com/gpu")
        if not tolerates:
            errors.append("the gpu overlay does not tolerate the nvidia.com/gpu taint")
    elif gpus is not None or tolerates:
        errors.append(f"the {overlay} overlay asks for a GPU or tolerates the GPU taint")

    # Topology spread.
    spread = pod.get("topologySpreadConstraints", [])
    if not spread:
        errors.append("no topologySpreadConstraints")
    for t in spread:
        if not labels_match(t.get("labelSelector"), pod_labels):
            errors.append(f"topologySpreadConstraint on {t.get('topologyKey')}: labelSelector misses the pods")

    # Service: headless, h2c, selecting the pods, ports that exist.
    service = one(docs, "Service", errors)
    if service:
        s = service["spec"]
        if s.get("clusterIP") != "None":
            errors.append("Service: not headless (clusterIP: None): clients could not balance calls over the pods")
        if not labels_match(s.get("selector"), pod_labels):
            errors.append("Service: its selector does not match the pod labels")
        grpc_port = next((p for p in s.get("ports", []) if p.get("name") == "grpc"), None)
        if grpc_port is None:
            errors.append("Service: no port named grpc")
        else:
            if not tls and grpc_port.get("appProtocol") != "kubernetes.io/h2c":
                errors.append("Service: the grpc port's appProtocol is not kubernetes.io/h2c")
            if tls and grpc_port.get("appProtocol") == "kubernetes.io/h2c":
                errors.append("Service: the grpc port says h2c (cleartext HTTP/2) but serves TLS")
            if grpc_port["port"] != port:
                errors.append(f"Service: grpc port {grpc_port['port']} differs from --port {port}")
        for p in s.get("ports", []):
            target = p.get("targetPort", p["port"])
            if target not in ports and target not in ports.values():
                errors.append(f"Service: port {p.get('name')} targets {target!r}, not a container port")

    pdb = one(docs, "PodDisruptionBudget", errors)
    if pdb and not labels_match(pdb["spec"].get("selector"), pod_labels):
        errors.append("PodDisruptionBudget: its selector does not match the pod labels")

    # NetworkPolicy: gRPC open, metrics only from the monitoring namespace, the pods selected.
    policy = one(docs, "NetworkPolicy", errors)
    if policy:
        p = policy["spec"]
        if not labels_match(p.get("podSelector"), pod_labels):
            errors.append("NetworkPolicy: its podSelector does not match the pod labels")
        rules = p.get("ingress", [])

        def rule_ports(rule):
            return {ports.get(x.get("port"), x.get("port")) for x in rule.get("ports", [])} or {"*"}

        grpc_open = any(port in rule_ports(r) and not r.get("from") for r in rules)
        if not grpc_open:
            errors.append("NetworkPolicy: the gRPC port is not open to clients")
        if health_port and not any(health_port in rule_ports(r) and not r.get("from") for r in rules):
            errors.append("NetworkPolicy: the health port is closed to the kubelet's probes")
        for r in rules:
            if metrics_port in rule_ports(r) or "*" in rule_ports(r):
                sources = r.get("from") or [{}]
                if not all(set(src) == {"namespaceSelector"}
                           and src["namespaceSelector"].get("matchLabels") == {
                               "kubernetes.io/metadata.name": "monitoring"} for src in sources):
                    errors.append("NetworkPolicy: the metrics port is reachable from outside the monitoring namespace")
        if not any(metrics_port in rule_ports(r) for r in rules):
            errors.append("NetworkPolicy: Prometheus (monitoring namespace) cannot reach the metrics port")
        for r in rules:
            for x in r.get("ports", []):
                if isinstance(x.get("port"), str) and x["port"] not in ports:
                    errors.append(f"NetworkPolicy: port name {x['port']!r} is not a container port")

    # ServiceMonitor -> Service -> metrics port.
    monitor = one(docs, "ServiceMonitor", errors)
    if monitor and service:
        if not labels_match(monitor["spec"].get("selector"), service["metadata"].get("labels", {})):
            errors.append("ServiceMonitor: its selector does not match the Service's labels")
        service_ports = {p.get("name"): p for p in service["spec"].get("ports", [])}
        for e in monitor["spec"].get("endpoints", []):
            sp = service_ports.get(e.get("port"))
            if sp is None:
                errors.append(f"ServiceMonitor: endpoint port {e.get('port')!r} is not a Service port")
            elif ports.get(sp.get("targetPort"), sp.get("targetPort")) != metrics_port:
                errors.append(f"ServiceMonitor: endpoint port {e.get('port')!r} does not lead to --metrics-port")

    # HPA: the Deployment, a Pods metric the adapter serves, a long scale-down window.
    hpa = one(docs, "HorizontalPodAutoscaler", errors)
    if hpa:
        h = hpa["spec"]
        ref = h.get("scaleTargetRef", {})
        if (ref.get("kind"), ref.get("name"), ref.get("apiVersion")) != ("Deployment", deployment["metadata"]["name"],
                                                                          "apps/v1"):
            errors.append(f"HorizontalPodAutoscaler: scaleTargetRef {ref} is not the Deployment")
        adapter_metrics = adapter_metric_names()
        pods_metrics = [m["pods"]["metric"]["name"] for m in h.get("metrics", []) if m.get("type") == "Pods"]
        if "medusa_requests_waiting" not in pods_metrics:
            errors.append("HorizontalPodAutoscaler: no Pods metric medusa_requests_waiting")
        for name in pods_metrics:
            if name not in adapter_metrics:
                errors.append(f"HorizontalPodAutoscaler: prometheus-adapter's rules do not serve {name!r}")
        window = h.get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds", 300)
        if window < 600:
            errors.append(f"HorizontalPodAutoscaler: scale-down stabilization {window} s, less than 10 minutes")
        if "replicas" in spec:
            errors.append("Deployment sets replicas under a HorizontalPodAutoscaler: each apply resets its count")
        if h.get("minReplicas", 1) < 2:
            errors.append("HorizontalPodAutoscaler: minReplicas below 2 (the PDB and a rollout need two)")
    return errors


def adapter_metric_names():
    with open(os.path.join(SOURCE, "deploy", "prometheus-adapter", "rules.yaml")) as f:
        rules = yaml.safe_load(f)
    return {r.get("name", {}).get("as") for r in rules.get("rules", [])}


# ---------------------------------------------------------------- mutations

def deployment_of(docs):
    return next(d for d in docs if d["kind"] == "Deployment")


def server_of(docs):
    return deployment_of(docs)["spec"]["template"]["spec"]["containers"][0]


def kind_of(docs, kind):
    return next(d for d in docs if d["kind"] == kind)


def set_arg(docs, name, value):
    c = server_of(docs)
    c["args"] = [a for a in c["args"] if not a.startswith(f"--{name}=")] + ([f"--{name}={value}"] if value else [])


# (name, overlay, what it does to the rendered objects, a text the failure must contain)
MUTATIONS = [
    ("unknown flag", "cpu", lambda d: server_of(d)["args"].append("--max-batch=8"), "not a medusa-server flag"),
    ("flag without value", "cpu", lambda d: server_of(d)["args"].append("--threads"), "needs a value"),
    ("probe on the wrong port", "cpu",
     lambda d: server_of(d)["readinessProbe"]["grpc"].update(port=50052), "expected the numeric --port"),
    ("port moved, probes not", "cpu", lambda d: set_arg(d, "port", "50052"), "container port `grpc` is 50051"),
    ("readiness on the liveness name", "cpu",
     lambda d: server_of(d)["readinessProbe"]["grpc"].update(service="medusa.v1.Liveness"),
     "readinessProbe: service"),
    ("liveness on the Generator", "gpu",
     lambda d: server_of(d)["livenessProbe"]["grpc"].update(service="medusa.v1.Generator"), "livenessProbe: service"),
    ("http probe", "cpu", lambda d: server_of(d).update(livenessProbe={"tcpSocket": {"port": 50051}}),
     "not a native gRPC probe"),
    ("short startup budget", "gpu", lambda d: server_of(d)["startupProbe"].update(failureThreshold=60),
     "startupProbe allows"),
    ("grace too short", "cpu", lambda d: set_arg(d, "shutdown-grace-seconds", "55"), "terminationGracePeriodSeconds"),
    ("no preStop", "cpu", lambda d: server_of(d).pop("lifecycle"), "preStop"),
    ("root", "cpu", lambda d: deployment_of(d)["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
     "runAsUser"),
    ("writable root", "gpu", lambda d: server_of(d)["securityContext"].update(readOnlyRootFilesystem=False),
     "readOnlyRootFilesystem"),
    ("capabilities kept", "cpu", lambda d: server_of(d)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     "drop ALL"),
    ("escalation", "cpu", lambda d: server_of(d)["securityContext"].pop("allowPrivilegeEscalation"),
     "allowPrivilegeEscalation"),
    ("no seccomp", "cpu", lambda d: deployment_of(d)["spec"]["template"]["spec"]["securityContext"].pop(
        "seccompProfile"), "seccompProfile"),
    ("token mounted", "cpu", lambda d: (deployment_of(d)["spec"]["template"]["spec"].pop("automountServiceAccountToken"),
                                        kind_of(d, "ServiceAccount").pop("automountServiceAccountToken")),
     "service-account token"),
    ("hostPath", "cpu", lambda d: deployment_of(d)["spec"]["template"]["spec"]["volumes"].append(
        {"name": "host", "hostPath": {"path": "/"}}), "restricted profile"),
    ("disk /tmp", "cpu", lambda d: next(v for v in deployment_of(d)["spec"]["template"]["spec"]["volumes"]
                                        if v["name"] == "tmp")["emptyDir"].pop("medium"), "/tmp: not a memory"),
    ("no GPU", "gpu", lambda d: [server_of(d)["resources"][p].pop("nvidia.com/gpu") for p in ("requests", "limits")],
     "does not request nvidia.com/gpu"),
    ("no toleration", "gpu", lambda d: deployment_of(d)["spec"]["template"]["spec"].pop("tolerations"),
     "tolerate the nvidia.com/gpu taint"),
    ("cpu image on gpu", "gpu", lambda d: server_of(d).update(image="localhost/medusa-serve:cpu"), "image"),
    ("service selector", "cpu", lambda d: kind_of(d, "Service")["spec"]["selector"].update(
        {"app.kubernetes.io/name": "other"}), "Service: its selector"),
    ("not headless", "cpu", lambda d: kind_of(d, "Service")["spec"].pop("clusterIP"), "not headless"),
    ("no h2c", "cpu", lambda d: kind_of(d, "Service")["spec"]["ports"][0].pop("appProtocol"), "appProtocol"),
    ("pdb selector", "gpu", lambda d: kind_of(d, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
        {"app.kubernetes.io/component": "models"}), "PodDisruptionBudget"),
    ("metrics open to all", "cpu", lambda d: kind_of(d, "NetworkPolicy")["spec"]["ingress"][1].pop("from"),
     "reachable from outside the monitoring namespace"),
    ("metrics closed", "cpu", lambda d: kind_of(d, "NetworkPolicy")["spec"]["ingress"].pop(1),
     "cannot reach the metrics port"),
    ("policy selector", "cpu", lambda d: kind_of(d, "NetworkPolicy")["spec"]["podSelector"].update(matchLabels={
        "app": "x"}), "NetworkPolicy: its podSelector"),
    ("metrics on loopback", "cpu", lambda d: set_arg(d, "metrics-host", "127.0.0.1"), "--metrics-host is loopback"),
    ("no token, no TLS", "cpu", lambda d: set_arg(d, "auth-token-file", None), "refuses to start"),
    ("half TLS", "cpu", lambda d: set_arg(d, "tls-cert-file", "/etc/medusa/auth/token"), "go together"),
    ("token off its Secret", "cpu", lambda d: set_arg(d, "auth-token-file", "/models/token"), "not on a Secret"),
    ("no connection age", "cpu", lambda d: set_arg(d, "max-connection-age-seconds", None),
     "--max-connection-age-seconds"),
    ("servicemonitor port", "cpu", lambda d: kind_of(d, "ServiceMonitor")["spec"]["endpoints"][0].update(port="http"),
     "ServiceMonitor: endpoint port"),
    ("hpa target", "gpu", lambda d: kind_of(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(
        name="medusa-gpu"), "scaleTargetRef"),
    ("hpa metric the adapter lacks", "cpu",
     lambda d: kind_of(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"].update(
         name="medusa_requests_running"), "do not serve"),
    ("short scale-down window", "cpu", lambda d: kind_of(d, "HorizontalPodAutoscaler")["spec"]["behavior"][
        "scaleDown"].update(stabilizationWindowSeconds=60), "scale-down stabilization"),
    ("replicas beside the HPA", "cpu", lambda d: deployment_of(d)["spec"].update(replicas=2), "resets its count"),
    ("TLS without a health port", "cpu+tls", lambda d: set_arg(d, "health-port", None), "without --health-port"),
    ("probe on the TLS port", "cpu+tls", lambda d: server_of(d)["livenessProbe"]["grpc"].update(port=50051),
     "expected the numeric --health-port"),
    ("health port moved", "cpu+tls", lambda d: set_arg(d, "health-port", "50053"), "container port `health`"),
    ("h2c over TLS", "cpu+tls", lambda d: kind_of(d, "Service")["spec"]["ports"][0].update(
        appProtocol="kubernetes.io/h2c"), "serves TLS"),
    ("health port closed", "cpu+tls", lambda d: kind_of(d, "NetworkPolicy")["spec"]["ingress"][0]["ports"].pop(),
     "health port is closed"),
    ("TLS key off its Secret", "cpu+tls", lambda d: set_arg(d, "tls-key-file", "/tmp/tls.key"), "not on a Secret"),
    # Schema-level: unknown fields and kinds.
    ("unknown Deployment field", "cpu", lambda d: server_of(d).update(livenessProbes={}), "--strict"),
    ("unknown ServiceMonitor field", "cpu",
     lambda d: kind_of(d, "ServiceMonitor")["spec"]["endpoints"][0].update(intervall="15s"), "CRD schema"),
    ("unknown kind", "cpu", lambda d: d.append({"apiVersion": "example.com/v1", "kind": "Widget",
                                                "metadata": {"name": "w", "namespace": "medusa"}}),
     "an unknown kind is a failure"),
    ("sleep action at 1.27", "cpu", lambda d: server_of(d)["lifecycle"]["preStop"].update(
        exec=None, sleep={"seconds": 10}) or server_of(d)["lifecycle"]["preStop"].pop("exec"), f"Kubernetes {OLDEST}"),
]


def run_mutations():
    rendered = {o: render(o) for o in OVERLAYS}
    failures = []
    for overlay, docs in rendered.items():
        clean = check_objects(docs, overlay) + check_schemas(docs, [OLDEST])
        if clean:
            failures.append(f"{overlay}: the unbroken manifests fail: {clean}")
    for name, overlay, mutate, expected in MUTATIONS:
        docs = copy.deepcopy(rendered[overlay])
        mutate(docs)
        errors = check_objects(docs, overlay) + check_schemas(docs, [OLDEST])
        if not any(expected in e for e in errors):
            failures.append(f"mutation {name!r} ({overlay}): no failure containing {expected!r}; got {errors}")
        else:
            print(f"ok: {name!r} -> {next(e for e in errors if expected in e)}")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"{len(MUTATIONS) - len([f for f in failures if f.startswith('mutation')])}/{len(MUTATIONS)} mutations "
          "caught")
    return 1 if failures else 0


def main():
    if "--mutations" in sys.argv[1:]:
        return run_mutations()
    import tempfile
    versions = [OLDEST, newest_version()]
    failures = []
    with tempfile.TemporaryDirectory() as workdir:
        for overlay in OVERLAYS:
            docs = render(overlay)
            kinds = sorted(f"{d['kind']}" for d in docs)
            print(f"overlays/{overlay}: {len(docs)} objects: {', '.join(kinds)}")
            errors = check_schemas(docs, versions) + check_with_cli(docs, versions, workdir) + check_objects(
                docs, overlay)
            failures += [f"overlays/{overlay}: {e}" for e in errors]
    # The helper pod that fills the model volume (applied by hand, not by the overlays).
    with open(os.path.join(KUSTOMIZE_ROOT, "models-loader.yaml")) as f:
        loader = yaml.safe_load(f)
    failures += [f"models-loader.yaml: {e}" for e in check_schemas([loader], versions)
                 + restricted_errors(loader["spec"], [])]
    binary = server_flags_from_binary()
    print(f"flags checked against server/main.cc and tools/engine_flags.cc"
          f"{' and the built medusa-server --helpfull' if binary is not None else ' (medusa-server not built)'}")
    print(f"Kubernetes schemas: {', '.join(versions)} (--strict)")
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
