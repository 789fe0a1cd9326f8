#!/usr/bin/env python3
"""Cross-object consistency checks for rendered Kubernetes manifests.

Schema validators look at one object at a time; this looks at how the objects of one
render (`kubectl kustomize DIR`) refer to each other, offline:

Generic:
- a workload's selector matches its own pod template's labels;
- a StatefulSet's serviceName is a headless Service (clusterIP: None, with
  publishNotReadyAddresses) of the same namespace that selects its pods;
- every Service, PodDisruptionBudget and NetworkPolicy selector matches some pods
  (a StatefulSet's pods also carry statefulset.kubernetes.io/pod-name: NAME-i);
- a Service's targetPort, a probe's port and a NetworkPolicy's named port exist as
  container ports (with the same protocol) in the pods they reach;
- a ServiceMonitor selects a Service that has each endpoint's named port;
- every volumeMount names a volume or a volumeClaimTemplate, and ConfigMaps and
  Secrets used by a pod exist in the render unless marked optional.

Strand (a StatefulSet whose container runs `strand-entrypoint node`):
- Guaranteed QoS with whole CPUs: cpu and memory requests equal limits, cpu an
  integer, in every container and init container;
- the listen ports in STRAND_KAFKA_ADDR / STRAND_ADMIN_ADDR are the container ports
  named kafka / admin, and there is one UDP port repl-<s> = replication port + s per
  CPU (shard);
- STRAND_PEERS lists exactly ids 0..replicas-1, id i at NAME-i.<serviceName>[.<this
  namespace>.svc...]:<replication port> (unset only for a single node);
- pod i has a NodePort Service (externalTrafficPolicy: Local) whose Kafka nodePort is
  STRAND_NODEPORT_BASE + i, the port the entrypoint advertises;
- the strand.io/config-checksum annotation names the ConfigMap the pod mounts;
- terminationGracePeriodSeconds covers the preStop waits plus the shutdown;
- a PodDisruptionBudget with maxUnavailable: 1 covers the pods;
- a StorageClass of the volume claims found in the render binds WaitForFirstConsumer
  and retains;
- the disk-probe init container and the node agree on the data directory and the
  profile path, both on the data volume.

Usage: check_consistency.py RENDER.yaml [RENDER.yaml ...]; each file is checked on
its own. Prints one line per problem (prefixed "consistency:") and exits 1 if any.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
CHECKSUM_ANNOTATION = "strand.io/config-checksum"
# Seconds the node needs after the preStop hook: SIGTERM, handover, sync, exit.
SHUTDOWN_MARGIN_S = 30
PRESTOP_DEFAULTS = {"STRAND_PRESTOP_URP_TIMEOUT_S": 120, "STRAND_PRESTOP_DRAIN_TIMEOUT_S": 90}
DEFAULT_PORTS = {"STRAND_KAFKA_ADDR": 9092, "STRAND_REPLICATION_ADDR": 9093, "STRAND_ADMIN_ADDR": 9644}


def ident(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def namespace(obj: dict) -> str | None:
    return obj.get("metadata", {}).get("namespace")


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels / matchExpressions) against labels. An empty
    selector matches everything, as in Kubernetes."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def map_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A Service's plain map selector."""
    return all(labels.get(k) == v for k, v in (selector or {}).items())


@dataclass
class PodSet:
    """The pods of one workload: their labels (per pod, for a StatefulSet) and spec."""

    workload: dict
    spec: dict
    labels_per_pod: list[dict] = field(default_factory=list)

    def containers(self, init: bool = True) -> list[dict]:
        out = list(self.spec.get("containers") or [])
        if init:
            out += list(self.spec.get("initContainers") or [])
        return out

    def named_ports(self) -> dict[str, tuple[int, str]]:
        """Named container ports of the (long-running) containers: name -> (port, protocol)."""
        ports = {}
        for c in self.containers(init=False):
            for p in c.get("ports") or []:
                if p.get("name"):
                    ports[p["name"]] = (p.get("containerPort"), p.get("protocol", "TCP"))
        return ports

    def numbered_ports(self) -> set[tuple[int, str]]:
        return {
            (p.get("containerPort"), p.get("protocol", "TCP"))
            for c in self.containers(init=False)
            for p in c.get("ports") or []
        }


class Checker:
    def __init__(self, source: str, objects: list[dict]):
        self.source = source
        self.objects = objects
        self.problems: list[str] = []
        try:
            self.podsets = self._podsets()
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.podsets = []
            self.fail(None, f"cannot read the workloads: {type(e).__name__}: {e}")

    def fail(self, obj: dict | None, message: str) -> None:
        where = ident(obj) if obj else "render"
        self.problems.append(f"consistency: {self.source}: {where}: {message}")

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def find(self, kind: str, name: str, ns: str | None) -> dict | None:
        for o in self.of_kind(kind):
            if o.get("metadata", {}).get("name") == name and namespace(o) == ns:
                return o
        return None

    def replicas(self, w: dict) -> int:
        value = (w.get("spec") or {}).get("replicas", 1)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        self.fail(w, f"spec.replicas {value!r} is not a count; checking as 1 replica")
        return 1

    def _podsets(self) -> list[PodSet]:
        sets = []
        for w in self.objects:
            if w.get("kind") not in WORKLOAD_KINDS:
                continue
            template = (w.get("spec") or {}).get("template") or {}
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            ps = PodSet(w, template.get("spec") or {})
            if w["kind"] == "StatefulSet":
                name = w["metadata"]["name"]
                for i in range(self.replicas(w)):
                    ps.labels_per_pod.append({**labels, POD_NAME_LABEL: f"{name}-{i}", POD_INDEX_LABEL: str(i)})
            else:
                ps.labels_per_pod.append(labels)
            sets.append(ps)
        return sets

    def selected(self, obj: dict, match) -> list[PodSet]:
        """The pod sets of obj's namespace with at least one pod that `match(labels)`."""
        return [
            ps
            for ps in self.podsets
            if namespace(ps.workload) == namespace(obj) and any(match(lab) for lab in ps.labels_per_pod)
        ]

    # -- generic checks ---------------------------------------------------------------
    def check_workload_selectors(self) -> None:
        for ps in self.podsets:
            sel = ps.workload["spec"].get("selector")
            template_labels = (ps.workload["spec"]["template"].get("metadata") or {}).get("labels") or {}
            if not sel or not selector_matches(sel, template_labels):
                self.fail(
                    ps.workload,
                    f"spec.selector {sel} does not match the pod template's labels {template_labels}",
                )

    def check_service_name(self) -> None:
        for ps in self.podsets:
            w = ps.workload
            if w["kind"] != "StatefulSet":
                continue
            name = w["spec"].get("serviceName")
            if not name:
                self.fail(w, "spec.serviceName is not set: it must name the headless Service")
                continue
            svc = self.find("Service", name, namespace(w))
            if svc is None:
                self.fail(w, f"spec.serviceName {name!r} is not a Service of this render and namespace")
                continue
            spec = svc.get("spec") or {}
            if spec.get("clusterIP") != "None":
                self.fail(w, f"spec.serviceName {name!r} is not a headless Service (clusterIP: None)")
            if not spec.get("publishNotReadyAddresses"):
                self.fail(
                    svc,
                    "the StatefulSet's headless Service needs publishNotReadyAddresses: true "
                    "(nodes must find each other before they are ready)",
                )
            template_labels = (w["spec"]["template"].get("metadata") or {}).get("labels") or {}
            if not spec.get("selector") or not map_selector_matches(spec.get("selector"), template_labels):
                self.fail(
                    w,
                    f"the headless Service {name!r} selector {spec.get('selector')} does not match "
                    f"the pod labels {template_labels}",
                )

    def check_services(self) -> None:
        for svc in self.of_kind("Service"):
            spec = svc.get("spec") or {}
            sel = spec.get("selector")
            if not sel:
                continue
            sets = self.selected(svc, lambda lab, sel=sel: map_selector_matches(sel, lab))
            if not sets:
                self.fail(svc, f"selector {sel} matches no pods of this render")
                continue
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                proto = port.get("protocol", "TCP")
                for ps in sets:
                    if isinstance(target, str):
                        found = ps.named_ports().get(target)
                        if found is None:
                            self.fail(
                                svc,
                                f"port {port.get('name')!r}: targetPort {target!r} is not a named container "
                                f"port of {ident(ps.workload)} (has {sorted(ps.named_ports())})",
                            )
                        elif found[1] != proto:
                            self.fail(
                                svc,
                                f"port {port.get('name')!r}: protocol {proto} but container port {target!r} "
                                f"of {ident(ps.workload)} is {found[1]}",
                            )
                    elif (target, proto) not in ps.numbered_ports():
                        self.fail(
                            svc,
                            f"port {port.get('name')!r}: targetPort {target}/{proto} is not a container port "
                            f"of {ident(ps.workload)}",
                        )

    def check_probes(self) -> None:
        for ps in self.podsets:
            for c in ps.containers():
                names = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
                for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                    probe = c.get(kind) or {}
                    for handler in ("httpGet", "tcpSocket", "grpc"):
                        port = (probe.get(handler) or {}).get("port")
                        if isinstance(port, str) and port not in names:
                            self.fail(
                                ps.workload,
                                f"container {c.get('name')!r}: {kind} uses port {port!r}, which is not one "
                                f"of its named ports {sorted(names)}",
                            )

    def check_pdbs(self) -> None:
        for pdb in self.of_kind("PodDisruptionBudget"):
            sel = (pdb.get("spec") or {}).get("selector")
            if not self.selected(pdb, lambda lab, sel=sel: selector_matches(sel, lab)):
                self.fail(pdb, f"selector {sel} matches no pods of this render")

    def check_network_policies(self) -> None:
        for np in self.of_kind("NetworkPolicy"):
            spec = np.get("spec") or {}
            sel = spec.get("podSelector")
            sets = self.selected(np, lambda lab, sel=sel: selector_matches(sel, lab))
            if not sets:
                self.fail(np, f"podSelector {sel} matches no pods of this render")
                continue
            for rule in spec.get("ingress") or []:
                for p in rule.get("ports") or []:
                    port, proto = p.get("port"), p.get("protocol", "TCP")
                    if not isinstance(port, str):
                        continue
                    for ps in sets:
                        found = ps.named_ports().get(port)
                        if found is None or found[1] != proto:
                            self.fail(
                                np,
                                f"ingress port {port!r}/{proto} is not a named container port of "
                                f"{ident(ps.workload)} (has {sorted(ps.named_ports())})",
                            )

    def check_service_monitors(self) -> None:
        for sm in self.of_kind("ServiceMonitor"):
            spec = sm.get("spec") or {}
            sel = spec.get("selector")
            ns_sel = spec.get("namespaceSelector") or {}
            namespaces = None if ns_sel.get("any") else set(ns_sel.get("matchNames") or [namespace(sm)])
            services = [
                s
                for s in self.of_kind("Service")
                if (namespaces is None or namespace(s) in namespaces)
                and selector_matches(sel, (s.get("metadata") or {}).get("labels") or {})
            ]
            if not services:
                self.fail(sm, f"selector {sel} matches no Service of this render")
                continue
            for ep in spec.get("endpoints") or []:
                port = ep.get("port")
                for s in services:
                    names = {p.get("name") for p in (s.get("spec") or {}).get("ports") or []}
                    if port not in names:
                        self.fail(
                            sm,
                            f"endpoint port {port!r} is not a port of the selected {ident(s)} (has {sorted(names)})",
                        )

    def check_volumes(self) -> None:
        for ps in self.podsets:
            w = ps.workload
            volumes = {v.get("name"): v for v in ps.spec.get("volumes") or []}
            claims = {(t.get("metadata") or {}).get("name") for t in w["spec"].get("volumeClaimTemplates") or []}
            for c in ps.containers():
                for m in c.get("volumeMounts") or []:
                    if m.get("name") not in volumes and m.get("name") not in claims:
                        self.fail(
                            w,
                            f"container {c.get('name')!r} mounts {m.get('name')!r}, which is neither a volume "
                            "nor a volumeClaimTemplate",
                        )
            for v in volumes.values():
                for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                    ref = v.get(key)
                    if ref is None:
                        continue
                    name = ref.get("name") if kind == "ConfigMap" else ref.get("secretName")
                    if not ref.get("optional") and self.find(kind, name, namespace(w)) is None:
                        self.fail(w, f"volume {v.get('name')!r} uses {kind} {name!r}, which is not in this render")

    # -- Strand ---------------------------------------------------------------------
    def strand_statefulsets(self) -> list[tuple[PodSet, dict]]:
        out = []
        for ps in self.podsets:
            if ps.workload["kind"] != "StatefulSet":
                continue
            for c in ps.containers(init=False):
                if (c.get("command") or [])[:2] == ["strand-entrypoint", "node"]:
                    out.append((ps, c))
        return out

    @staticmethod
    def env_of(container: dict) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in container.get("env") or [] if "value" in e}

    @staticmethod
    def port_of(addr: str) -> int | None:
        m = re.search(r":(\d+)$", addr or "")
        return int(m.group(1)) if m else None

    def check_strand(self) -> None:
        for ps, node in self.strand_statefulsets():
            self.check_strand_resources(ps)
            self.check_strand_ports_and_peers(ps, node)
            self.check_strand_checksum(ps)
            self.check_strand_grace(ps, node)
            self.check_strand_pdb(ps)
            self.check_strand_storage(ps)
            self.check_strand_disk_probe(ps, node)

    def check_strand_resources(self, ps: PodSet) -> None:
        for c in ps.containers():
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            for r in ("cpu", "memory"):
                if r not in req or str(req.get(r)) != str(lim.get(r)):
                    self.fail(
                        ps.workload,
                        f"container {c.get('name')!r}: {r} request {req.get(r)!r} must equal its limit "
                        f"{lim.get(r)!r} (Guaranteed QoS, for the static CPU manager)",
                    )
            cpu = str(req.get("cpu", ""))
            if not re.fullmatch(r"[1-9][0-9]*", cpu):
                self.fail(
                    ps.workload,
                    f"container {c.get('name')!r}: cpu request {cpu!r} must be a whole number of CPUs "
                    "(the static CPU manager pins only integer requests)",
                )

    def check_strand_ports_and_peers(self, ps: PodSet, node: dict) -> None:
        w = ps.workload
        env = self.env_of(node)
        named = {p.get("name"): (p.get("containerPort"), p.get("protocol", "TCP")) for p in node.get("ports") or []}
        ports = {k: self.port_of(env.get(k, "")) or d for k, d in DEFAULT_PORTS.items()}
        for var, pname in (("STRAND_KAFKA_ADDR", "kafka"), ("STRAND_ADMIN_ADDR", "admin")):
            if named.get(pname) != (ports[var], "TCP"):
                self.fail(
                    w,
                    f"{var} listens on {ports[var]} but the container port named {pname!r} is {named.get(pname)}",
                )
        cpu = str(((node.get("resources") or {}).get("requests") or {}).get("cpu", ""))
        shards = int(cpu) if cpu.isdigit() else 0
        repl = ports["STRAND_REPLICATION_ADDR"]
        want = {f"repl-{s}": (repl + s, "UDP") for s in range(shards)}
        have = {k: v for k, v in named.items() if k and k.startswith("repl-")}
        if have != want:
            self.fail(
                w,
                f"{shards} CPUs run {shards} shards on UDP {repl}..{repl + shards - 1}: expected container ports "
                f"{sorted(want)} at those ports, found {sorted(have.items())}",
            )
        name = w["metadata"]["name"]
        replicas = self.replicas(w)
        ns = namespace(w)
        svc = w["spec"].get("serviceName")
        peers = (env.get("STRAND_PEERS") or "").strip()
        if not peers:
            if replicas > 1:
                self.fail(w, f"{replicas} replicas but no STRAND_PEERS: every member must list every member")
        else:
            entries = [p.strip() for p in peers.split(",") if p.strip()]
            ids = []
            for entry in entries:
                m = re.fullmatch(r"(\d+)@([^:]+):(\d+)", entry)
                if not m:
                    self.fail(w, f"STRAND_PEERS entry {entry!r} is not ID@HOST:PORT")
                    continue
                i, host, port = int(m.group(1)), m.group(2), int(m.group(3))
                ids.append(i)
                parts = host.split(".")
                ok = len(parts) >= 2 and parts[0] == f"{name}-{i}" and parts[1] == svc
                if ok and len(parts) > 2:
                    ok = parts[2] == ns and (len(parts) == 3 or parts[3] == "svc")
                if not ok:
                    self.fail(
                        w,
                        f"STRAND_PEERS entry {entry!r}: node {i} must be {name}-{i}.{svc}[.{ns}.svc...] "
                        "(its pod's name under the headless Service, in this namespace)",
                    )
                if port != repl:
                    self.fail(w, f"STRAND_PEERS entry {entry!r}: port {port} is not the replication port {repl}")
            if sorted(ids) != list(range(replicas)):
                self.fail(
                    w,
                    f"STRAND_PEERS has ids {sorted(ids)} but replicas: {replicas} makes nodes "
                    f"{list(range(replicas))} (node id = pod ordinal)",
                )
        base = env.get("STRAND_NODEPORT_BASE")
        if base is None or not base.isdigit():
            self.fail(w, "STRAND_NODEPORT_BASE is not set: pod i advertises nodePort base + i")
            return
        for i in range(replicas):
            pod_labels = ps.labels_per_pod[i]
            services = [
                s
                for s in self.of_kind("Service")
                if namespace(s) == ns
                and (s.get("spec") or {}).get("type") == "NodePort"
                and POD_NAME_LABEL in ((s.get("spec") or {}).get("selector") or {})
                and map_selector_matches(s["spec"]["selector"], pod_labels)
            ]
            if len(services) != 1:
                self.fail(
                    w,
                    f"pod {name}-{i} needs exactly one NodePort Service selecting it "
                    f"({POD_NAME_LABEL}: {name}-{i}); found {[ident(s) for s in services]}",
                )
                continue
            s = services[0]
            if s["spec"].get("externalTrafficPolicy") != "Local":
                self.fail(s, "externalTrafficPolicy must be Local: the pod advertises its own node's IP")
            kafka = [
                p
                for p in s["spec"].get("ports") or []
                if p.get("targetPort") in ("kafka", ports["STRAND_KAFKA_ADDR"])
            ]
            expected = int(base) + i
            if not kafka or kafka[0].get("nodePort") != expected:
                got = kafka[0].get("nodePort") if kafka else None
                self.fail(
                    s,
                    f"pod {name}-{i} advertises port {expected} (STRAND_NODEPORT_BASE {base} + {i}) but the "
                    f"Service's Kafka nodePort is {got}",
                )

    def check_strand_checksum(self, ps: PodSet) -> None:
        w = ps.workload
        annotations = (w["spec"]["template"].get("metadata") or {}).get("annotations") or {}
        value = annotations.get(CHECKSUM_ANNOTATION)
        mounted = [v["configMap"].get("name") for v in ps.spec.get("volumes") or [] if v.get("configMap")]
        if value is None:
            self.fail(
                w, f"the pod template has no {CHECKSUM_ANNOTATION} annotation: config changes would not roll the pods"
            )
        elif value not in mounted or self.find("ConfigMap", value, namespace(w)) is None:
            self.fail(
                w,
                f"{CHECKSUM_ANNOTATION} is {value!r} but the pod mounts ConfigMaps {mounted}: the annotation must "
                "name the (hash-suffixed) config it runs with",
            )

    def check_strand_grace(self, ps: PodSet, node: dict) -> None:
        env = self.env_of(node)
        waits = sum(int(env.get(k) or d) for k, d in PRESTOP_DEFAULTS.items())
        grace = int(ps.spec.get("terminationGracePeriodSeconds", 30))
        if grace < waits + SHUTDOWN_MARGIN_S:
            self.fail(
                ps.workload,
                f"terminationGracePeriodSeconds {grace} < preStop waits {waits} + shutdown {SHUTDOWN_MARGIN_S}: "
                "the kubelet would kill the node mid-drain",
            )
        if (((node.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") != [
            "strand-entrypoint",
            "prestop",
        ]:
            self.fail(ps.workload, "the node container has no preStop hook running `strand-entrypoint prestop`")

    def check_strand_pdb(self, ps: PodSet) -> None:
        pdbs = [
            p
            for p in self.of_kind("PodDisruptionBudget")
            if namespace(p) == namespace(ps.workload)
            and all(selector_matches((p.get("spec") or {}).get("selector"), lab) for lab in ps.labels_per_pod)
        ]
        if not any((p.get("spec") or {}).get("maxUnavailable") == 1 for p in pdbs):
            self.fail(ps.workload, "no PodDisruptionBudget with maxUnavailable: 1 covers the pods")

    def check_strand_disk_probe(self, ps: PodSet, node: dict) -> None:
        """The init container measures the volume the node writes to, and writes the
        profile where the node reads it."""
        probes = [
            c
            for c in ps.spec.get("initContainers") or []
            if (c.get("command") or [])[:2] == ["strand-entrypoint", "probe"]
        ]
        if not probes:
            self.fail(ps.workload, "no init container runs `strand-entrypoint probe` (the disk probe)")
            return
        probe = probes[0]
        node_env, probe_env = self.env_of(node), self.env_of(probe)
        claims = {(t.get("metadata") or {}).get("name") for t in ps.workload["spec"].get("volumeClaimTemplates") or []}
        for var in ("STRAND_DATA_DIR", "STRAND_DISK_PROFILE"):
            if node_env.get(var) is None or node_env.get(var) != probe_env.get(var):
                self.fail(
                    ps.workload,
                    f"{var} is {probe_env.get(var)!r} in the disk-probe init container but {node_env.get(var)!r} "
                    "in the node container: they must name the same path",
                )
                continue
            for c in (node, probe):
                on_claim = any(
                    m.get("name") in claims and node_env[var].startswith(m.get("mountPath", "").rstrip("/") + "/")
                    for m in c.get("volumeMounts") or []
                )
                if not on_claim:
                    self.fail(
                        ps.workload,
                        f"container {c.get('name')!r}: {var} {node_env[var]!r} is not on a mounted volumeClaimTemplate",
                    )

    def check_strand_storage(self, ps: PodSet) -> None:
        for t in ps.workload["spec"].get("volumeClaimTemplates") or []:
            sc_name = (t.get("spec") or {}).get("storageClassName")
            sc = self.find("StorageClass", sc_name, None) if sc_name else None
            if sc is None:
                continue  # defined outside this render (or the cluster default)
            if sc.get("volumeBindingMode") != "WaitForFirstConsumer" or sc.get("reclaimPolicy") != "Retain":
                self.fail(
                    sc, "a local-volume StorageClass must bind WaitForFirstConsumer and have reclaimPolicy Retain"
                )

    def run(self) -> list[str]:
        for check in (
            self.check_workload_selectors,
            self.check_service_name,
            self.check_services,
            self.check_probes,
            self.check_pdbs,
            self.check_network_policies,
            self.check_service_monitors,
            self.check_volumes,
            self.check_strand,
        ):
            try:
                check()
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                # A malformed object (the schema validators name it): say which check
                # could not run rather than stop with a traceback.
                self.fail(None, f"{check.__name__} could not read the objects: {type(e).__name__}: {e}")
        return self.problems


def check_file(path: Path) -> list[str]:
    try:
        objects = [o for o in yaml.safe_load_all(path.read_text()) if isinstance(o, dict)]
    except yaml.YAMLError as e:
        return [f"consistency: {path}: not YAML: {e}"]
    return Checker(str(path), objects).run()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: check_consistency.py RENDER.yaml [RENDER.yaml ...]", file=sys.stderr)
        return 2
    problems = []
    for arg in argv:
        problems += check_file(Path(arg))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
