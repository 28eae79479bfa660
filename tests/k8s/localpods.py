"""Run the pods of rendered Kubernetes manifests as local processes, as a kubelet would run them.

:class:`LocalPods` takes the objects ``kubectl kustomize`` rendered and, for every pod its
StatefulSets and Deployments would create, starts each container's own ``command`` + ``args``
with its own ``env``: nothing of what runs comes from the test. What Kubernetes would provide is
substituted, and every reference must resolve, or the manifest is wrong:

* **pod names**: StatefulSet pods are ``<name>-<ordinal>``, Deployment pods
  ``<name>-local-<n>``; ``fieldRef`` env (``metadata.name``, ``metadata.namespace``,
  ``status.podIP``, ``spec.nodeName``) gets the pod's values, ``$(VAR)`` in command, args and env
  is expanded by Kubernetes' rules, and an unresolved ``$(VAR)`` is an error;
* **addresses**: every ``host:port`` in an argument or env value is rewritten to
  ``127.0.0.1:<a free port>``. The host must be ``0.0.0.0``/``::``/``localhost`` (this pod), a pod's
  IP, a pod's DNS name under its StatefulSet's governing headless Service
  (``<pod>.<service>[.<namespace>[.svc[.cluster.local]]]``), or a Service's name (its port, then
  ``targetPort``, then a pod the selector picks; a headless Service given as a bare ``host:port``
  becomes every pod's address, comma-separated — what its DNS name resolves to). The port must
  be one the target container declares. Anything else is an error;
* **volumes**: every ``volumeMount`` is a directory of its own under the test's root — emptyDir,
  the pod's PersistentVolumeClaim (kept across restarts), a Secret or ConfigMap (its files, from
  the rendered objects or from ``secrets`` for Secrets people create themselves); an absolute
  path in an argument must lie under a mount (the root filesystem is read-only);
* **commands**: ``orrery`` runs this checkout's ``python -m orrery``, ``etcd`` the machine's etcd
  (Debian's 3.4; the image has 3.5: the flags used are common to both).

Pods start as their controllers would start them (``podManagementPolicy: OrderedReady`` waits for
the previous ordinal to be Ready; ``Parallel`` does not), containers that exit are restarted
(``restartPolicy: Always``, with a short backoff), and probes (``httpGet``, ``tcpSocket``) are
performed against the pod's ports as the kubelet would. :meth:`LocalPods.terminate` is what deleting a pod does: SIGTERM, then SIGKILL after
``terminationGracePeriodSeconds``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.etcd_harness import ETCD_BINARY

__all__ = ["LocalContainer", "LocalPod", "LocalPods", "ManifestError"]

#: Options whose values start with "/" but are no paths.
NOT_PATHS = ("--etcd-prefix",)
#: Seconds between two starts of a container that keeps exiting (a kubelet backs off from 10 s).
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
#: Restarts after which a container that never became Ready counts as crash-looping (the wait
#: for readiness then fails at once instead of at its timeout).
CRASH_LOOP = 5

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ADDRESS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)"
    r":(?P<port>[0-9]{1,5})(?![0-9])"
)
_PATH = re.compile(r"(?<![A-Za-z0-9_.:/-])/[A-Za-z0-9_.\-/]*")


class ManifestError(AssertionError):
    """The manifests refer to something that does not exist (a typo), or ask for what no pod has."""


_TAKEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A free port below the ephemeral range: the processes start some time after the ports are
    chosen, and meanwhile an outgoing connection could take an ephemeral one as its source port."""
    top = min(_ephemeral_low(), 65536)
    rnd = random.Random()
    for _ in range(1000):
        port = rnd.randrange(max(1024, top - 12000), top)
        if port in _TAKEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class LocalContainer:
    """One container of a pod: its command line as run here, and its process."""

    pod: LocalPod
    spec: dict[str, Any]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log: Path = Path()
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: When the process may be started again after exiting (restartPolicy: Always).
    restart_at: float = 0.0
    #: Whether the startup probe has passed since the last start.
    started: bool = False
    #: Whether the last stop needed SIGKILL (it outlived its grace period).
    killed: bool = False

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec["name"])

    def alive(self) -> bool:
        """Whether its process runs."""
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The end of its output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"


@dataclass
class LocalPod:
    """One pod a controller would create."""

    name: str
    workload: dict[str, Any]
    ordinal: int
    labels: dict[str, str]
    namespace: str
    #: A stand-in for the pod's IP: a name that resolves nowhere, rewritten wherever it is used.
    ip: str
    #: containerPort → the local port it is served on (containers of a pod share its network).
    ports: dict[int, int] = field(default_factory=dict)
    #: port name → containerPort.
    port_names: dict[str, int] = field(default_factory=dict)
    containers: list[LocalContainer] = field(default_factory=list)
    #: volume name → local directory.
    volumes: dict[str, Path] = field(default_factory=dict)
    #: True while the test stops it on purpose (no automatic restart).
    held: bool = False

    @property
    def spec(self) -> dict[str, Any]:
        """The pod template's spec."""
        return dict(self.workload["spec"]["template"]["spec"])

    @property
    def component(self) -> str:
        """The ``app.kubernetes.io/component`` label."""
        return self.labels.get("app.kubernetes.io/component", "")

    def port(self, name_or_number: str | int) -> int:
        """The containerPort a probe or Service names (by name or number)."""
        if isinstance(name_or_number, int) or str(name_or_number).isdigit():
            number = int(name_or_number)
            if number not in self.ports:
                raise ManifestError(f"pod {self.name} declares no containerPort {number}")
            return number
        if name_or_number not in self.port_names:
            raise ManifestError(f"pod {self.name} has no port named {name_or_number!r}")
        return self.port_names[str(name_or_number)]

    def address(self, container_port: int) -> str:
        """``127.0.0.1:<local port>`` of one of its ports."""
        return f"127.0.0.1:{self.ports[container_port]}"

    def alive(self) -> bool:
        """Whether every container runs."""
        return all(c.alive() for c in self.containers)


class LocalPods:
    """Every pod of the rendered ``objects``, run from ``root`` (see the module docstring)."""

    def __init__(
        self,
        objects: list[dict[str, Any]],
        root: Path,
        *,
        secrets: dict[str, dict[str, bytes]] | None = None,
    ) -> None:
        self.objects = objects
        self.root = root
        self.extra_secrets = secrets or {}
        self.services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
        self.pods: list[LocalPod] = []
        for w in objects:
            if w["kind"] not in ("StatefulSet", "Deployment"):
                continue
            for i in range(int(w["spec"].get("replicas", 1))):
                self.pods.append(self._plan_pod(w, i))
        self._dns: dict[str, LocalPod] = {}
        for pod in self.pods:
            for name in self._pod_dns_names(pod):
                self._dns[name] = pod
        self._by_ip = {p.ip: p for p in self.pods}
        for pod in self.pods:
            for c in pod.containers:
                self._plan_container(c)

    # --- planning -------------------------------------------------------------------------------

    def _plan_pod(self, w: dict[str, Any], i: int) -> LocalPod:
        meta = w["metadata"]
        name = f"{meta['name']}-{i}" if w["kind"] == "StatefulSet" else f"{meta['name']}-local-{i}"
        template = w["spec"]["template"]
        labels = dict(template["metadata"].get("labels", {}))
        selector = w["spec"]["selector"].get("matchLabels", {})
        if not _labels_match(selector, labels):
            raise ManifestError(f"{w['kind']} {meta['name']}: its selector {selector} does not match its pods' labels {labels}")
        pod = LocalPod(name, w, i, labels, meta.get("namespace", "default"), f"{name}.pod-ip.invalid")
        for c in template["spec"]["containers"]:
            for p in c.get("ports", []):
                number = int(p["containerPort"])
                if number in pod.ports:
                    raise ManifestError(f"pod {name}: containerPort {number} declared twice")
                pod.ports[number] = _free_port()
                if "name" in p:
                    pod.port_names[p["name"]] = number
            pod.containers.append(LocalContainer(pod, c))
        pod_dir = self.root / "pods" / name
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for claim in claims:
            pod.volumes[claim] = self.root / "pvc" / f"{claim}-{name}"
        for v in template["spec"].get("volumes", []):
            pod.volumes[v["name"]] = self._volume(pod_dir, v)
        for d in pod.volumes.values():
            d.mkdir(parents=True, exist_ok=True)
        return pod

    def _volume(self, pod_dir: Path, v: dict[str, Any]) -> Path:
        where = pod_dir / "volumes" / v["name"]
        if "emptyDir" in v:
            return where
        if "persistentVolumeClaim" in v:
            return self.root / "pvc" / v["persistentVolumeClaim"]["claimName"]
        if "secret" in v:
            files = self._secret(v["secret"]["secretName"], optional=bool(v["secret"].get("optional")))
        elif "configMap" in v:
            files = self._config_map(v["configMap"]["name"])
        else:
            raise ManifestError(f"volume {v['name']}: only emptyDir, persistentVolumeClaim, secret and configMap run here")
        where.mkdir(parents=True, exist_ok=True)
        for fname, data in files.items():
            (where / fname).write_bytes(data)
        return where

    def _secret(self, name: str, *, optional: bool = False) -> dict[str, bytes]:
        import base64

        for o in self.objects:
            if o["kind"] == "Secret" and o["metadata"]["name"] == name:
                out = {k: base64.b64decode(v) for k, v in (o.get("data") or {}).items()}
                out.update({k: v.encode() for k, v in (o.get("stringData") or {}).items()})
                return out
        if name in self.extra_secrets:
            return self.extra_secrets[name]
        if optional:
            return {}
        raise ManifestError(f"Secret {name} is neither rendered nor one the test creates (as a person would)")

    def _config_map(self, name: str) -> dict[str, bytes]:
        for o in self.objects:
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name:
                return {k: str(v).encode() for k, v in (o.get("data") or {}).items()}
        raise ManifestError(f"ConfigMap {name} is not among the rendered objects")

    def _pod_dns_names(self, pod: LocalPod) -> list[str]:
        if pod.workload["kind"] != "StatefulSet":
            return []
        service_name = pod.workload["spec"].get("serviceName", "")
        svc = self.services.get(service_name)
        if svc is None:
            raise ManifestError(f"StatefulSet {pod.workload['metadata']['name']}: no Service {service_name!r} governs it")
        if svc["spec"].get("clusterIP") != "None":
            raise ManifestError(f"Service {service_name} governs a StatefulSet but is not headless")
        if not _labels_match(svc["spec"].get("selector", {}), pod.labels):
            raise ManifestError(f"Service {service_name} does not select the pods of the StatefulSet it governs")
        base = f"{pod.name}.{service_name}"
        return [base, f"{base}.{pod.namespace}", f"{base}.{pod.namespace}.svc", f"{base}.{pod.namespace}.svc.cluster.local"]

    def _service(self, host: str) -> dict[str, Any] | None:
        for name, svc in self.services.items():
            ns = svc["metadata"].get("namespace", "default")
            if host in (name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
                return svc
        return None

    def backends(self, service_name: str) -> list[LocalPod]:
        """The pods a Service selects."""
        svc = self.services[service_name]
        pods = [p for p in self.pods if _labels_match(svc["spec"].get("selector", {}), p.labels)]
        if not pods:
            raise ManifestError(f"Service {service_name} selects no pod")
        return pods

    def service_address(self, service_name: str, port: int | str) -> list[str]:
        """The local addresses behind one port (number or name) of a Service, one per pod."""
        svc = self.services.get(service_name)
        if svc is None:
            raise ManifestError(f"no Service {service_name}")
        for sp in svc["spec"]["ports"]:
            if sp["port"] == port or sp.get("name") == port:
                target = sp.get("targetPort", sp["port"])
                return [p.address(p.port(target)) for p in self.backends(service_name)]
        raise ManifestError(f"Service {service_name} has no port {port}")

    def _plan_container(self, c: LocalContainer) -> None:
        pod = c.pod
        env = self._env(c)
        command = [self._expand(x, env, c) for x in c.spec.get("command", [])]
        args = [self._expand(x, env, c) for x in c.spec.get("args", [])]
        if not command:
            raise ManifestError(f"{pod.name}/{c.name}: no command (the image's entrypoint cannot be run here)")
        mounts = self._mounts(c)
        args = [self._rewrite(a, pod, mounts, f"{pod.name}/{c.name} argument {a!r}") for a in args]
        env = {k: self._rewrite(v, pod, mounts, f"{pod.name}/{c.name} env {k}") for k, v in env.items()}
        program = Path(command[0]).name
        if program == "orrery":
            argv = [sys.executable, "-m", "orrery", *command[1:], *args]
        elif program == "etcd":
            argv = [ETCD_BINARY, *command[1:], *args]
        else:
            raise ManifestError(f"{pod.name}/{c.name}: runs {command[0]!r}, which this test cannot run locally")
        c.argv = argv
        c.env = env
        c.log = self.root / "logs" / f"{pod.name}.{c.name}.log"

    def _env(self, c: LocalContainer) -> dict[str, str]:
        pod = c.pod
        env: dict[str, str] = {}
        for src in c.spec.get("envFrom", []):
            if "configMapRef" in src:
                data = {k: v.decode() for k, v in self._config_map(src["configMapRef"]["name"]).items()}
            elif "secretRef" in src:
                data = {k: v.decode() for k, v in self._secret(src["secretRef"]["name"]).items()}
            else:
                raise ManifestError(f"{pod.name}/{c.name}: envFrom {src} is not supported here")
            env.update({src.get("prefix", "") + k: v for k, v in data.items()})
        for e in c.spec.get("env", []):
            if "value" in e:
                env[e["name"]] = self._expand(str(e["value"]), env, c)
                continue
            ref = e.get("valueFrom", {})
            if "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                values = {
                    "metadata.name": pod.name,
                    "metadata.namespace": pod.namespace,
                    "status.podIP": pod.ip,
                    "spec.nodeName": "local-node",
                    "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
                }
                if path not in values:
                    raise ManifestError(f"{pod.name}/{c.name}: env {e['name']} from unknown field {path}")
                env[e["name"]] = values[path]
            elif "secretKeyRef" in ref:
                ks = ref["secretKeyRef"]
                env[e["name"]] = self._secret(ks["name"])[ks["key"]].decode()
            elif "configMapKeyRef" in ref:
                kc = ref["configMapKeyRef"]
                env[e["name"]] = self._config_map(kc["name"])[kc["key"]].decode()
            elif "resourceFieldRef" in ref:
                env[e["name"]] = "1"
            else:
                raise ManifestError(f"{pod.name}/{c.name}: env {e['name']} has no value this test understands")
        return env

    def _expand(self, text: str, env: dict[str, str], c: LocalContainer) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1)
            if name not in env:
                raise ManifestError(f"{c.pod.name}/{c.name}: $({name}) in {text!r} names no env variable of the container")
            return env[name]

        return _VAR.sub(one, text)

    def _mounts(self, c: LocalContainer) -> list[tuple[str, Path]]:
        out: list[tuple[str, Path]] = []
        for m in c.spec.get("volumeMounts", []):
            if m["name"] not in c.pod.volumes:
                raise ManifestError(f"{c.pod.name}/{c.name}: mounts volume {m['name']!r}, which the pod does not have")
            local = c.pod.volumes[m["name"]] / m.get("subPath", "")
            local.mkdir(parents=True, exist_ok=True)
            out.append((m["mountPath"].rstrip("/") or "/", local))
        return sorted(out, key=lambda x: -len(x[0]))

    def _rewrite(self, text: str, pod: LocalPod, mounts: list[tuple[str, Path]], what: str) -> str:
        text = _ADDRESS.sub(lambda m: self._address(m, pod, what), text)
        option = text.split("=", 1)[0] if text.startswith("--") else ""
        if option in NOT_PATHS:
            return text

        def path(m: re.Match[str]) -> str:
            p = m.group(0)
            if p.startswith(str(self.root)):
                return p  # already local (an address rewritten above cannot look like this)
            for mount, local in mounts:
                if p == mount or p.startswith(mount + "/"):
                    return str(local) + p[len(mount) :]
            raise ManifestError(f"{what}: the path {p} is on no volume (the root filesystem is read-only)")

        return _PATH.sub(path, text)

    def _address(self, m: re.Match[str], pod: LocalPod, what: str) -> str:
        host, port, scheme = m.group("host"), int(m.group("port")), m.group("scheme") or ""
        if host in ("0.0.0.0", "[::]", "127.0.0.1", "localhost", "[::1]", pod.ip):
            target: LocalPod | None = pod
        else:
            target = self._by_ip.get(host) or self._dns.get(host)
        if target is not None:
            if port not in target.ports:
                raise ManifestError(f"{what}: pod {target.name} declares no containerPort {port}")
            return scheme + target.address(port)
        svc = self._service(host)
        if svc is None:
            raise ManifestError(f"{what}: {host!r} is neither a pod nor a Service of these manifests")
        addresses = self.service_address(svc["metadata"]["name"], port)
        if svc["spec"].get("clusterIP") == "None" and not scheme:
            return ",".join(addresses)  # a headless Service's name resolves to every pod
        return scheme + addresses[0]

    # --- running --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every pod a controller would start now (OrderedReady waits its turn)."""
        for pod in self.pods:
            if self._may_start(pod):
                for c in pod.containers:
                    if c.popen is None:
                        self._spawn(c)

    def _may_start(self, pod: LocalPod) -> bool:
        w = pod.workload
        if pod.held:
            return False
        if w["kind"] == "StatefulSet" and w["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady":
            earlier = [p for p in self.pods if p.workload is w and p.ordinal < pod.ordinal]
            return all(self.ready(p) for p in earlier)
        return True

    def _spawn(self, c: LocalContainer) -> None:
        c.log.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log, "ab") as out:
            out.write(f"--- start {' '.join(c.argv)}\n".encode())
            out.flush()
            c.popen = subprocess.Popen(
                c.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **c.env}, start_new_session=True,
            )  # fmt: skip
        c.started = False

    def supervise(self) -> None:
        """Start what may start, and restart containers that exited (restartPolicy: Always)."""
        now = time.monotonic()
        for pod in self.pods:
            if pod.held:
                continue
            for c in pod.containers:
                if c.popen is None:
                    if self._may_start(pod):
                        self._spawn(c)
                elif c.popen.poll() is not None:
                    if c.restart_at == 0.0:
                        c.restart_at = now + RESTART_BACKOFF_S[min(c.restarts, len(RESTART_BACKOFF_S) - 1)]
                    elif now >= c.restart_at:
                        c.restarts += 1
                        c.restart_at = 0.0
                        self._spawn(c)

    def probe(self, pod: LocalPod, c: LocalContainer, kind: str) -> tuple[bool, str]:
        """Perform one of the container's probes (``readinessProbe``, ``livenessProbe``,
        ``startupProbe``) now: (passed, what was checked)."""
        spec = c.spec.get(kind)
        if spec is None:
            return True, "no probe"
        if not c.alive():
            return False, "not running"
        if "httpGet" in spec:
            get = spec["httpGet"]
            port_ref = get["port"]
            number = pod.port(port_ref)
            return _http_ok(pod.address(number), get.get("path", "/"))
        if "tcpSocket" in spec:
            return _tcp_ok(pod.address(pod.port(spec["tcpSocket"]["port"])))
        raise ManifestError(f"{pod.name}/{c.name}: {kind} of a kind this test cannot perform: {spec}")

    def ready(self, pod: LocalPod) -> bool:
        """Whether every container runs, passed its startup probe, and passes its readiness probe."""
        for c in pod.containers:
            if not c.alive():
                return False
            if not c.started:
                if not self.probe(pod, c, "startupProbe")[0]:
                    return False
                c.started = True
            if not self.probe(pod, c, "readinessProbe")[0]:
                return False
        return True

    def wait_ready(self, timeout: float, pods: list[LocalPod] | None = None) -> None:
        """Supervise until every pod (or ``pods``) is Ready; fail after ``timeout`` (a bound for
        broken manifests, not a speed test) with what is not ready and its output."""
        deadline = time.monotonic() + timeout
        want = pods if pods is not None else self.pods
        while True:
            self.supervise()
            waiting = [p for p in want if not self.ready(p)]
            if not waiting:
                return
            looping = [p for p in waiting if any(c.restarts >= CRASH_LOOP for c in p.containers)]
            if looping:
                raise AssertionError("crash-looping:\n" + "\n".join(self.describe(p) for p in looping))
            if time.monotonic() > deadline:
                raise AssertionError("not Ready:\n" + "\n".join(self.describe(p) for p in waiting))
            time.sleep(0.2)

    def describe(self, pod: LocalPod) -> str:
        """A pod's state, probes and output, for failure messages."""
        lines = [f"== pod {pod.name}"]
        for c in pod.containers:
            code = None if c.popen is None else c.popen.poll()
            lines.append(f"-- {c.name}: {'running' if c.alive() else f'exited {code}'}, restarts {c.restarts}")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                with contextlib.suppress(ManifestError):
                    lines.append(f"   {kind}: {self.probe(pod, c, kind)}")
            lines.append(f"   argv: {c.argv}")
            lines.append(c.log_tail())
        return "\n".join(lines)

    def terminate(self, pod: LocalPod, *, hold: bool = True) -> tuple[list[int | None], float]:
        """Delete the pod as the kubelet would: SIGTERM each container, SIGKILL whatever still runs
        after ``terminationGracePeriodSeconds``. Returns (exit codes — None where it had to be
        killed —, seconds taken). ``hold``: not restarted until :meth:`release`."""
        pod.held = hold
        grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
        t0 = time.monotonic()
        for c in pod.containers:
            if c.alive():
                assert c.popen is not None
                c.popen.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for c in pod.containers:
            if c.popen is None:
                codes.append(0)
                continue
            try:
                codes.append(c.popen.wait(max(0.0, grace - (time.monotonic() - t0))))
                c.killed = False
            except subprocess.TimeoutExpired:
                c.popen.kill()
                c.popen.wait()
                c.killed = True
                codes.append(None)
        return codes, time.monotonic() - t0

    def release(self, pod: LocalPod) -> None:
        """Let a terminated pod be created again (same name, same volumes)."""
        pod.held = False
        for c in pod.containers:
            c.popen = None
            c.restart_at = 0.0
        self.supervise()

    def close(self) -> None:
        """Stop everything: SIGTERM to every container at once (as deleting the namespace does),
        SIGKILL after each pod's grace period."""
        for pod in self.pods:
            pod.held = True
            for c in pod.containers:
                if c.alive():
                    assert c.popen is not None
                    c.popen.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        for pod in self.pods:
            grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
            for c in pod.containers:
                if c.popen is None or c.popen.returncode is not None:
                    continue
                try:
                    c.popen.wait(max(0.0, grace - (time.monotonic() - t0)))
                    c.killed = False
                except subprocess.TimeoutExpired:
                    c.popen.kill()
                    c.popen.wait()
                    c.killed = True

    def __enter__(self) -> LocalPods:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def of(self, component: str) -> list[LocalPod]:
        """The pods of one ``app.kubernetes.io/component``."""
        return [p for p in self.pods if p.component == component]

    def containers(self) -> Iterator[tuple[LocalPod, LocalContainer]]:
        """Every (pod, container)."""
        for p in self.pods:
            for c in p.containers:
                yield p, c


def _http_ok(address: str, path: str) -> tuple[bool, str]:
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return 200 <= r.status < 400, f"GET {path}: {r.status}"
    except urllib.error.HTTPError as e:
        return False, f"GET {path}: {e.code} {e.read()[:200]!r}"
    except OSError as e:
        return False, f"GET {path}: {e}"


def _tcp_ok(address: str) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True, f"TCP {address}: open"
    except OSError as e:
        return False, f"TCP {address}: {e}"
