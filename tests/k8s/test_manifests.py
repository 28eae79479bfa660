"""The Kubernetes manifests (deploy/k8s), rendered by the real kustomize for the base and every
overlay, checked without a cluster:

* every object validates against the Kubernetes 1.37 OpenAPI schemas (``kubernetes-validate``,
  strict: an unknown field — a misspelt key — is an error). The Prometheus Operator's objects
  (ServiceMonitor, PrometheusRule) have no schema there: their metadata is validated as a core
  object's would be, and their content by the checks below (what they select and load);
* what the schemas cannot know: selectors that select, ports that exist, probes, resources and
  security settings on every container, NetworkPolicies that let exactly the intended pods reach
  each port, PodDisruptionBudgets, the host nodes' identity and storage, a grace period that
  covers the SIGTERM handoff, the monitoring objects (the PrometheusRule is alerts.yaml, the
  dashboard ConfigMap is deploy/grafana/orrery.json with Grafana's sidecar label).

The manifests are run as a cluster by tests/k8s/test_local_cluster.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orrery.hostnode_process import HANDOFF_MARGIN_S
from tests.k8s.manifests import DEPLOY, ROOT, TARGETS, objects_of, render, workloads

#: The Kubernetes version the schemas are those of.
KUBERNETES_VERSION = "1.37"
COMPONENTS = ("etcd", "controlplane", "hostnode", "gateway")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _component(o: dict[str, Any]) -> str:
    return str(o["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def _workload(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    found = [w for w in workloads(objects) if _component(w) == component]
    assert len(found) == 1, f"expected one workload of component {component}, found {len(found)}"
    return found[0]


def _pod_labels(w: dict[str, Any]) -> dict[str, str]:
    return dict(w["spec"]["template"]["metadata"].get("labels", {}))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _containers(w: dict[str, Any]) -> list[dict[str, Any]]:
    return list(w["spec"]["template"]["spec"]["containers"])


def _args(c: dict[str, Any]) -> dict[str, str]:
    """``--opt=value`` and ``--opt value`` arguments as a dict."""
    out: dict[str, str] = {}
    items = list(c.get("args", []))
    i = 0
    while i < len(items):
        a = items[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        elif a.startswith("--") and i + 1 < len(items) and not items[i + 1].startswith("--"):
            out[a] = items[i + 1]
            i += 1
        else:
            out[a] = ""
        i += 1
    return out


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(target, its rendered objects)."""
    return request.param, render(request.param)


def test_every_target_renders(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    assert objects, f"{target} renders nothing"
    seen: set[tuple[str, str, str]] = set()
    for o in objects:
        key = (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        assert key not in seen, f"{target}: {key} twice"
        seen.add(key)
    # Every overlay runs the whole cluster.
    for component in COMPONENTS:
        _workload(objects, component)
    if target.startswith("overlays/"):
        namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
        assert len(namespaces) == 1 and None not in namespaces, f"{target}: objects in {namespaces}"
        assert [n["metadata"]["name"] for n in objects_of(objects, "Namespace")] == list(namespaces)


def test_every_object_validates_against_the_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    unchecked = []
    for o in objects:
        what = f"{target}: {o['kind']} {o['metadata']['name']}"
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert o["apiVersion"].startswith("monitoring.coreos.com/"), f"{what}: no schema for {o['apiVersion']}"
            unchecked.append(o["kind"])
            # The metadata is a core object's; the spec is checked in test_monitoring_objects.
            as_core = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": o["metadata"]}
            kubernetes_validate.validate(as_core, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{what}: {e.message} at {'.'.join(map(str, e.path))}") from None
        assert _DNS_LABEL.match(o["metadata"]["name"]) and len(o["metadata"]["name"]) <= 63, what
    assert set(unchecked) <= {"ServiceMonitor", "PrometheusRule"}


def test_the_schema_check_catches_a_misspelt_field() -> None:
    """The validation above is strict: a typo in a key is not silently ignored."""
    hostnode = copy.deepcopy(_workload(render("base"), "hostnode"))
    container = _containers(hostnode)[0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hostnode, KUBERNETES_VERSION, strict=True)


def test_containers_have_probes_resources_and_run_unprivileged(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    for w in workloads(objects):
        spec = w["spec"]["template"]["spec"]
        where = f"{target}: {w['kind']} {w['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0, f"{where}: runs as root"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: mounts an API token it never uses"
        declared = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        volumes = {v["name"] for v in spec.get("volumes", [])} | {
            t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])
        }
        for c in spec["containers"]:
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{where}: image {image} is not pinned to a tag"
            assert c.get("command"), f"{where}/{c['name']}: no command (the role must be explicit)"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}/{c['name']}: {kind}"
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, f"{where}/{c['name']}: no {probe}"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = (c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket") or {}).get("port")
                if port is not None:
                    assert port in declared or port in declared.values(), f"{where}: {probe} on undeclared port {port}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{where}/{c['name']}: mounts unknown volume {m['name']}"


def test_services_and_disruption_budgets_select_the_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    for svc in objects_of(objects, "Service"):
        where = f"{target}: Service {svc['metadata']['name']}"
        backends = [w for w in workloads(objects) if _selects(svc["spec"].get("selector", {}), _pod_labels(w))]
        assert backends, f"{where} selects no pods"
        for port in svc["spec"]["ports"]:
            target_port = port.get("targetPort", port["port"])
            for w in backends:
                ports = [p for c in _containers(w) for p in c.get("ports", [])]
                assert any(target_port in (p.get("name"), p["containerPort"]) for p in ports), (
                    f"{where}: targetPort {target_port} is no port of {w['metadata']['name']}"
                )
    for pdb in objects_of(objects, "PodDisruptionBudget"):
        where = f"{target}: PodDisruptionBudget {pdb['metadata']['name']}"
        selected = [w for w in workloads(objects) if _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(w))]
        assert len(selected) == 1, f"{where} selects {len(selected)} workloads"
        replicas = int(selected[0]["spec"].get("replicas", 1))
        # One pod at a time may go (a drain can proceed; a majority stays).
        assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"], where
        assert replicas >= 1
    for component in COMPONENTS:
        assert any(
            _selects(p["spec"]["selector"]["matchLabels"], _pod_labels(_workload(objects, component)))
            for p in objects_of(objects, "PodDisruptionBudget")
        ), f"{target}: no PodDisruptionBudget for {component}"
    for w in objects_of(objects, "StatefulSet"):
        governing = [s for s in objects_of(objects, "Service") if s["metadata"]["name"] == w["spec"]["serviceName"]]
        assert governing and governing[0]["spec"].get("clusterIP") == "None", f"{target}: {w['metadata']['name']}"
        # Peers must resolve each other before they are Ready (etcd's bootstrap, a node catching up).
        assert governing[0]["spec"].get("publishNotReadyAddresses") is True, f"{target}: {w['metadata']['name']}"
        assert w["spec"].get("podManagementPolicy") == "Parallel", f"{target}: {w['metadata']['name']}"


class _Pod:
    """A pod as NetworkPolicies see it: labels, namespace, ports by name."""

    def __init__(self, labels: dict[str, str], namespace: str, ports: dict[str, int]) -> None:
        self.labels, self.namespace, self.ports = labels, namespace, ports


def _allowed(policies: list[dict[str, Any]], src: _Pod, dst: _Pod, port_name: str) -> bool:
    """Whether ingress NetworkPolicies let ``src`` connect to ``dst``'s port ``port_name``."""
    selecting = [
        p for p in policies
        if p["metadata"].get("namespace", "") == dst.namespace
        and _selects(p["spec"]["podSelector"].get("matchLabels", {}), dst.labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]  # fmt: skip
    if not selecting:
        return True  # not isolated
    number = dst.ports[port_name]
    for p in selecting:
        for rule in p["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(q.get("port") in (port_name, number) for q in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                ns_sel = peer.get("namespaceSelector")
                pod_sel = peer.get("podSelector")
                ns_ok = (ns_sel is not None and not ns_sel.get("matchLabels")) or (
                    ns_sel is None and src.namespace == dst.namespace
                )
                pod_ok = pod_sel is None or _selects(pod_sel.get("matchLabels", {}), src.labels) or pod_sel == {}
                if ns_ok and pod_ok:
                    return True
    return False


def test_network_policies_let_only_the_intended_pods_in(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    policies = objects_of(objects, "NetworkPolicy")
    pods: dict[str, _Pod] = {}
    for component in COMPONENTS:
        w = _workload(objects, component)
        ports = {p["name"]: p["containerPort"] for c in _containers(w) for p in c.get("ports", [])}
        pods[component] = _Pod(_pod_labels(w), w["metadata"].get("namespace", ""), ports)
    elsewhere = _Pod({"app.kubernetes.io/name": "prometheus"}, "monitoring", {})
    same_ns_stranger = _Pod({"app": "something-else"}, pods["hostnode"].namespace, {})
    expected = {
        ("hostnode", "grpc"): {"gateway", "controlplane", "hostnode"},
        ("controlplane", "grpc"): {"gateway", "hostnode"},
        ("etcd", "client"): {"gateway", "controlplane", "hostnode", "etcd"},
        ("etcd", "peer"): {"etcd"},
    }
    for (dst, port), allowed in expected.items():
        for src in COMPONENTS:
            assert _allowed(policies, pods[src], pods[dst], port) == (src in allowed), (
                f"{target}: {src} → {dst}:{port} should be {'allowed' if src in allowed else 'refused'}"
            )
        for stranger in (elsewhere, same_ns_stranger):
            assert not _allowed(policies, stranger, pods[dst], port), f"{target}: a stranger reaches {dst}:{port}"
    for source in (*pods.values(), elsewhere, same_ns_stranger):
        assert _allowed(policies, source, pods["gateway"], "http"), f"{target}: the public API is not public"
        for dst in COMPONENTS:
            assert _allowed(policies, source, pods[dst], "metrics"), f"{target}: Prometheus cannot scrape {dst}"


def test_host_nodes_are_their_pods_and_leave_within_the_grace_period(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    w = _workload(objects, "hostnode")
    assert w["kind"] == "StatefulSet"
    spec = w["spec"]["template"]["spec"]
    (c,) = _containers(w)
    args = _args(c)
    env = {e["name"]: e for e in c.get("env", [])}
    assert args["--node-id"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    headless = w["spec"]["serviceName"]
    grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    assert args["--advertise-addr"] == f"$(POD_NAME).{headless}:{grpc_port}"
    assert args["--listen-addr"] == f"0.0.0.0:{grpc_port}"
    claims = {t["metadata"]["name"] for t in w["spec"]["volumeClaimTemplates"]}
    data_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == args["--data-dir"])
    assert data_mount["name"] in claims, f"{target}: the data directory is not on a PersistentVolumeClaim"
    handoff = float(args["--handoff-timeout"])
    grace = float(spec["terminationGracePeriodSeconds"])
    assert handoff > 0 and handoff + HANDOFF_MARGIN_S <= grace, (
        f"{target}: --handoff-timeout {handoff:g} + {HANDOFF_MARGIN_S:g} s of shutdown exceeds "
        f"terminationGracePeriodSeconds {grace:g}: the kubelet would SIGKILL a node still handing over"
    )
    # Every Orrery process is told the same etcd and prefix, and gets a metrics address.
    etcd_svc = _workload(objects, "etcd")["spec"]["serviceName"]
    for component in ("controlplane", "hostnode", "gateway"):
        a = _args(_containers(_workload(objects, component))[0])
        assert a["--etcd"].startswith(f"{etcd_svc}:") and a["--etcd-prefix"] == "/orrery", component
        assert a["--metrics-addr"].endswith(":9100"), component


def test_every_orrery_process_gets_the_cluster_secret_from_a_secret_people_create(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Gateways, control planes and host nodes read the same cluster secret file (proto/auth.py),
    mounted read-only from the Secret orrery-cluster-secret, which the manifests do not contain
    (no generated or committed secret: the README has people create it with kubectl)."""
    target, objects = rendered
    for component in ("controlplane", "hostnode", "gateway"):
        w = _workload(objects, component)
        (c,) = _containers(w)
        path = {e["name"]: e.get("value") for e in c.get("env", [])}["ORRERY_CLUSTER_SECRET_FILE"]
        mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
        assert mount.get("readOnly") is True, f"{target} {component}: {mount}"
        volume = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "orrery-cluster-secret", f"{target} {component}: {volume}"
        assert path.rsplit("/", 1)[1] == "cluster-secret" and volume["secret"]["defaultMode"] & 0o007 == 0
    assert not [o for o in objects if o["kind"] == "Secret"], f"{target} renders a Secret"


def test_monitoring_objects(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, objects = rendered
    monitors = objects_of(objects, "ServiceMonitor")
    if not monitors:
        pytest.skip(f"{target} has no monitoring objects")
    (monitor,) = monitors
    services = [
        s for s in objects_of(objects, "Service")
        if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
    ]  # fmt: skip
    scraped = set()
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        for s in services:
            assert any(p.get("name") == endpoint["port"] for p in s["spec"]["ports"]), s["metadata"]["name"]
            scraped |= {
                _component(w) for w in workloads(objects) if _selects(s["spec"]["selector"], _pod_labels(w))
            }
    assert scraped == set(COMPONENTS), f"{target}: the ServiceMonitor scrapes {scraped}"
    # The alert rules are deploy/prometheus/alerts.yaml's, every rule complete.
    (rule,) = objects_of(objects, "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], "run `make k8s-rules`"
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"], r
    # The dashboard, labelled for Grafana's sidecar.
    (dashboard,) = [c for c in objects_of(objects, "ConfigMap") if c["metadata"]["name"] == "orrery-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name, text), = dashboard["data"].items()
    assert json.loads(text) == json.loads((DEPLOY / "grafana" / name).read_text())
    assert {"title", "uid", "panels"} <= set(json.loads(text))
    # The ServiceMonitor and rules carry the label kube-prometheus-stack selects them by.
    assert monitor["metadata"]["labels"].get("release") and rule["metadata"]["labels"].get("release")


def test_some_target_carries_the_monitoring_objects() -> None:
    assert any(objects_of(render(t), "ServiceMonitor") for t in TARGETS)


def test_the_prometheus_rule_is_generated_from_alerts_yaml() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "k8s_prometheusrule.py"), "--check"], capture_output=True, text=True
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
