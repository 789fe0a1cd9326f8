"""The Kubernetes manifests (k8s/) and the container entrypoint (deploy/entrypoint.sh).

- scripts/validate-k8s.sh passes on the real tree: yamllint, kubectl kustomize,
  kubernetes-validate --strict, checkov and the consistency checker.
- It fails on deliberately broken copies in a temp dir, one breakage per copy, and
  names the validator that caught it: each check can fail.
- strand-entrypoint derives node id, advertised address, cores and TLS files from
  what the pod spec gives it, and its preStop hook waits for zero under-replicated
  partitions before draining, against a fake admin API.

No Kubernetes API server and no strand-node binary are needed. The validation tools are
installed once (scripts/deps.sh runs `validate-k8s.sh --install-only`; the fixture
below does too, for a run of this file alone).
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "validate-k8s.sh"
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
K8S = REPO / "k8s"


@pytest.fixture(scope="module")
def tools():
    """The validators, installed once (a no-op when they are there)."""
    r = subprocess.run(
        ["bash", str(SCRIPT), "--install-only"], capture_output=True, text=True, timeout=280
    )
    assert r.returncode == 0, f"installing the validation tools failed:\n{r.stdout}\n{r.stderr}"


def validate(k8s_dir=None):
    args = ["bash", str(SCRIPT)] + ([str(k8s_dir)] if k8s_dir else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=240)
    return r.returncode, r.stdout + r.stderr


def test_real_tree_passes(tools):
    code, out = validate()
    assert code == 0, out
    assert "validate-k8s: OK" in out
    # Every overlay was rendered and checked by each validator.
    for name in ("base", "overlays/dev", "overlays/production", "overlays/production-servicemonitor"):
        assert f"kubernetes-validate --strict -k 1.37.0 ({name})" in out
        assert f"consistency ({name})" in out
    assert "Failed checks: 0" in out


# -- broken copies ------------------------------------------------------------------


def edit(root, rel, old, new, count=1):
    """Replace `old` (which must be there) by `new` in root/rel."""
    path = root / rel
    text = path.read_text()
    assert text.count(old) >= count, f"{rel} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new, count))


def broken_copy(tmp_path, breakage):
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    breakage(root)
    return root


BREAKAGES = {
    # yamllint: trailing spaces, still valid YAML that renders.
    "yamllint-trailing-spaces": (
        "yamllint",
        lambda r: edit(r, "base/poddisruptionbudget.yaml", "  maxUnavailable: 1\n", "  maxUnavailable: 1   \n"),
    ),
    # kubernetes-validate --strict: a field the PodSpec schema does not have.
    "schema-unknown-field": (
        "kubernetes-validate",
        lambda r: edit(
            r,
            "base/statefulset.yaml",
            "      enableServiceLinks: false\n",
            "      enableServiceLinks: false\n      shareProcessNamespaces: true\n",
        ),
    ),
    # kubernetes-validate: a wrong type.
    "schema-wrong-type": (
        "kubernetes-validate",
        lambda r: edit(r, "overlays/production/statefulset.yaml", "  replicas: 3\n", "  replicas: three\n"),
    ),
    # checkov: a container that may gain privileges (CKV_K8S_20).
    "checkov-privilege-escalation": (
        "checkov",
        lambda r: edit(
            r, "base/statefulset.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", 2
        ),
    ),
    # checkov: a suppression without its annotation is a finding again (CKV_K8S_31).
    "checkov-skip-removed": (
        "checkov",
        lambda r: edit(r, "base/statefulset.yaml", "    checkov.io/skip1: >-\n", "    unrelated/note: >-\n"),
    ),
    # consistency: the PodDisruptionBudget selects no pod.
    "selector-mismatch": (
        "consistency",
        lambda r: edit(
            r,
            "base/poddisruptionbudget.yaml",
            "      app.kubernetes.io/name: strand\n",
            "      app.kubernetes.io/name: strnad\n",
        ),
    ),
    # consistency: serviceName is not the headless Service.
    "wrong-service-name": (
        "consistency",
        lambda r: edit(r, "base/statefulset.yaml", "serviceName: strand-headless", "serviceName: strand"),
    ),
    # consistency: a Service targets a container port name that does not exist.
    "missing-named-port": (
        "consistency",
        lambda r: edit(
            r, "base/service-headless.yaml", "      targetPort: admin\n", "      targetPort: admin-http\n"
        ),
    ),
    # consistency: a probe uses a port name the container does not have.
    "probe-port-missing": (
        "consistency",
        lambda r: edit(
            r, "base/statefulset.yaml", "              path: /readyz\n              port: admin\n",
            "              path: /readyz\n              port: http\n",
        ),
    ),
    # consistency: a fourth replica with neither a peers entry nor a NodePort Service.
    "replicas-without-peers": (
        "consistency",
        lambda r: edit(r, "overlays/production/statefulset.yaml", "  replicas: 3\n", "  replicas: 4\n"),
    ),
    # consistency: more CPUs (shards) than declared replication ports.
    "cpus-without-ports": (
        "consistency",
        lambda r: edit(r, "overlays/production/statefulset.yaml", 'cpu: "4"', 'cpu: "6"', 2),
    ),
    # consistency: a NodePort that is not what the pod advertises.
    "nodeport-mismatch": (
        "consistency",
        lambda r: edit(r, "overlays/production/service-external.yaml", "nodePort: 30094", "nodePort: 30099"),
    ),
    # consistency: without kustomizeconfig.yaml the checksum annotation is not rewritten
    # to the hashed ConfigMap name, and a config change would not roll the pods.
    "checksum-not-rewritten": (
        "consistency",
        lambda r: edit(r, "base/kustomization.yaml", "configurations:\n  - kustomizeconfig.yaml\n", ""),
    ),
    # kustomize: a patch for an object that does not exist.
    "kustomize-bad-patch": (
        "kustomize",
        lambda r: edit(
            r, "overlays/dev/service-external.yaml", "  name: strand-0-external\n", "  name: strand-9-external\n"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_broken_copy_fails(tools, tmp_path, name):
    validator, breakage = BREAKAGES[name]
    root = broken_copy(tmp_path, breakage)
    code, out = validate(root)
    assert code != 0, f"{name}: the broken copy passed:\n{out}"
    assert f"FAIL [{validator}]" in out, f"{name}: expected a [{validator}] failure:\n{out}"
    assert "validate-k8s: FAILED" in out


def test_checkov_suppressions_give_reasons():
    """Every suppressed checkov check names its id and a reason (checkov reads
    checkov.io/skipN annotations; it splits on '=' once, so none may be in the reason)."""
    yaml = pytest.importorskip("yaml")
    found = 0
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            annotations = ((doc or {}).get("metadata") or {}).get("annotations") or {}
            for key, value in annotations.items():
                if key.startswith("checkov.io/skip"):
                    found += 1
                    assert re.fullmatch(r"CKV2?_K8S_\d+=[^=]{40,}", value.strip()), f"{path}: {key}: {value!r}"
    assert found >= 1


# -- strand-entrypoint ------------------------------------------------------------------


def affinity_cpus():
    return len(os.sched_getaffinity(0))


def run_entrypoint(args, env, timeout=30):
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )


def dry_run_settings(stdout):
    return dict(line.split("=", 1) for line in stdout.splitlines() if line.startswith("STRAND_"))


def test_entrypoint_derives_pod_settings(tmp_path):
    src, run = tmp_path / "tls-source", tmp_path / "run"
    src.mkdir()
    for f in ("ca.pem", "node-1.pem", "node-1.key", "node-2.pem", "node-2.key"):
        (src / f).write_text(f)
    r = run_entrypoint(
        ["node", "--extra-flag"],
        {
            "POD_NAME": "strand-2",
            "HOST_IP": "192.0.2.10",
            "STRAND_NODEPORT_BASE": "30092",
            "CPU_REQUEST": str(affinity_cpus()),
            "STRAND_PEERS": "0@a:9093,1@b:9093,2@c:9093",
            "STRAND_TLS_SOURCE_DIR": str(src),
            "STRAND_TLS_RUN_DIR": str(run),
            "STRAND_ENTRYPOINT_DRY_RUN": "1",
        },
    )
    assert r.returncode == 0, r.stderr
    s = dry_run_settings(r.stdout)
    assert s["STRAND_NODE_ID"] == "2"
    assert s["STRAND_ADVERTISED_KAFKA_ADDR"] == "192.0.2.10:30094"
    assert s["STRAND_CORES"] == "affinity"
    assert s["STRAND_TLS_DIR"] == str(run)
    assert (run / "node.pem").read_text() == "node-2.pem"
    assert (run / "node.key").read_text() == "node-2.key"
    assert (run / "ca.pem").read_text() == "ca.pem"
    assert (run / "node.key").stat().st_mode & 0o777 == 0o600
    assert "exec strand-node --extra-flag" in r.stdout


def test_entrypoint_without_static_cpu_manager_runs_the_requested_shards():
    r = run_entrypoint(
        ["node"],
        {
            "POD_NAME": "strand-0",
            "HOST_IP": "2001:db8::7",
            "STRAND_NODEPORT_BASE": "31092",
            "CPU_REQUEST": str(affinity_cpus() + 2),
            "STRAND_ENTRYPOINT_DRY_RUN": "1",
        },
    )
    assert r.returncode == 0, r.stderr
    s = dry_run_settings(r.stdout)
    assert s["STRAND_CORES"] == str(affinity_cpus() + 2)
    assert s["STRAND_ADVERTISED_KAFKA_ADDR"] == "[2001:db8::7]:31092"
    assert "static CPU manager" in r.stderr
    assert "STRAND_TLS_DIR" not in s  # a single node: no peers, no TLS needed


def test_entrypoint_explicit_settings_win():
    r = run_entrypoint(
        ["node"],
        {
            "STRAND_NODE_ID": "5",
            "STRAND_ADVERTISED_KAFKA_ADDR": "kafka-5.example.net:9092",
            "STRAND_CORES": "0-1",
            "STRAND_ENTRYPOINT_DRY_RUN": "1",
        },
    )
    assert r.returncode == 0, r.stderr
    s = dry_run_settings(r.stdout)
    assert (s["STRAND_NODE_ID"], s["STRAND_ADVERTISED_KAFKA_ADDR"], s["STRAND_CORES"]) == (
        "5",
        "kafka-5.example.net:9092",
        "0-1",
    )


@pytest.mark.parametrize(
    "env,message",
    [
        ({"POD_NAME": "strand", "HOST_IP": "192.0.2.1", "STRAND_NODEPORT_BASE": "30092", "CPU_REQUEST": "1"},
         "cannot take a node id"),
        ({"POD_NAME": "strand-0", "STRAND_NODEPORT_BASE": "30092", "CPU_REQUEST": "1"}, "HOST_IP"),
        ({"POD_NAME": "strand-0", "HOST_IP": "192.0.2.1", "CPU_REQUEST": "1"}, "STRAND_NODEPORT_BASE"),
        ({"POD_NAME": "strand-0", "HOST_IP": "192.0.2.1", "STRAND_NODEPORT_BASE": "30092", "CPU_REQUEST": "500m"},
         "CPU_REQUEST"),
        ({"POD_NAME": "strand-1", "HOST_IP": "192.0.2.1", "STRAND_NODEPORT_BASE": "30092", "CPU_REQUEST": "1",
          "STRAND_PEERS": "0@a:9093,1@b:9093", "STRAND_TLS_SOURCE_DIR": "/nonexistent"},
         "strand-tls Secret"),
    ],
)
def test_entrypoint_refuses_incomplete_pod_specs(env, message):
    r = run_entrypoint(["node"], {**env, "STRAND_ENTRYPOINT_DRY_RUN": "1"})
    assert r.returncode == 1
    assert message in r.stderr, r.stderr


def test_entrypoint_probes_a_new_volume_once(tmp_path):
    env = {
        "STRAND_DATA_DIR": str(tmp_path / "data"),
        "STRAND_DISK_PROFILE": str(tmp_path / "disk-profile.json"),
        "STRAND_DISK_PROBE_ARGS": "--quick",
        "STRAND_ENTRYPOINT_DRY_RUN": "1",
    }
    r = run_entrypoint(["probe"], env)
    assert r.returncode == 0, r.stderr
    data, profile = tmp_path / "data", tmp_path / "disk-profile.json"
    assert f"exec strand disk probe --dir {data} --out {profile} --quick" in r.stdout
    (tmp_path / "disk-profile.json").write_text("{}")
    r = run_entrypoint(["probe"], env)
    assert r.returncode == 0 and "exec" not in r.stdout
    assert "keeping the disk profile" in r.stderr


class FakeAdmin:
    """strand-node's admin API as the preStop hook sees it: /healthz, /metrics with a
    scripted under-replicated count, and /drain that is done after a few polls."""

    def __init__(self, urp_sequence, drain_polls_until_done=2):
        self.urp = list(urp_sequence)
        self.drain_polls = drain_polls_until_done
        self.events = []
        self.draining = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, body, ctype="text/plain"):
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/healthz":
                    self.reply(200, "ok\n")
                elif self.path == "/metrics":
                    n = fake.urp.pop(0) if len(fake.urp) > 1 else fake.urp[0]
                    fake.events.append(("metrics", n))
                    self.reply(
                        200,
                        "# TYPE strand_under_replicated_partitions gauge\n"
                        f'strand_under_replicated_partitions{{shard="0"}} {n}\n'
                        'strand_under_replicated_partitions{shard="1",topic="a b"} 0 1700000000000\n'
                        "strand_partition_leaders 7\n",
                    )
                elif self.path == "/drain":
                    fake.drain_polls -= 1
                    done = fake.draining and fake.drain_polls <= 0
                    fake.events.append(("drain-status", done))
                    body = {"draining": fake.draining, "leaders": 0 if done else 3, "done": done}
                    self.reply(200, json.dumps(body), "application/json")
                else:
                    self.reply(404, "not found\n")

            def do_POST(self):
                if self.path == "/drain":
                    fake.draining = True
                    fake.events.append(("drain", None))
                    self.reply(202, "")
                else:
                    self.reply(404, "not found\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def prestop_env(port, **extra):
    return {
        "STRAND_ADMIN_ADDR": f"0.0.0.0:{port}",
        # Two members, both served by the fake (the admin port is the same on all).
        "STRAND_PEERS": "0@127.0.0.1:9093,1@localhost:9093",
        "STRAND_PRESTOP_POLL_S": "0.1",
        **extra,
    }


@pytest.mark.skipif(shutil.which("curl") is None, reason="the preStop hook needs curl (the image has it)")
def test_prestop_waits_for_zero_under_replicated_partitions_then_drains():
    with FakeAdmin(urp_sequence=[2, 1, 1, 0], drain_polls_until_done=3) as admin:
        r = run_entrypoint(["prestop"], prestop_env(admin.port))
    assert r.returncode == 0, r.stderr
    kinds = [e[0] for e in admin.events]
    first_drain = kinds.index("drain")
    # Draining starts only after a round in which every member reported zero.
    metrics_before = [n for k, n in admin.events[:first_drain] if k == "metrics"]
    assert metrics_before[-2:] == [0, 0], admin.events
    assert all(k != "drain" for k in kinds[:first_drain])
    assert admin.events[-1] == ("drain-status", True)
    assert "drained" in r.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="the preStop hook needs curl (the image has it)")
def test_prestop_is_bounded():
    # Under-replicated forever and never drained: both waits give up on time, exit 0.
    with FakeAdmin(urp_sequence=[1], drain_polls_until_done=10**6) as admin:
        start = time.monotonic()
        r = run_entrypoint(
            ["prestop"],
            prestop_env(admin.port, STRAND_PRESTOP_URP_TIMEOUT_S="1", STRAND_PRESTOP_DRAIN_TIMEOUT_S="1"),
        )
        elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert elapsed < 15
    assert "draining anyway" in r.stderr
    assert "stopping anyway" in r.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="the preStop hook needs curl (the image has it)")
def test_prestop_returns_at_once_when_the_node_is_down():
    start = time.monotonic()
    r = run_entrypoint(["prestop"], prestop_env(1))  # nothing listens on port 1
    assert r.returncode == 0
    assert time.monotonic() - start < 10
    assert "nothing to drain" in r.stderr
