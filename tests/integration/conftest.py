"""Fixtures that run a real strand-node as a subprocess.

`node` starts a fresh node (fresh data dir under target/it-*, a free port on
127.0.0.1, `--cores 2`) and stops it with SIGTERM at the end, asserting a clean
exit. Extra flags come from `@pytest.mark.node_args("--flag", "value", ...)`.
The node's stdout and stderr go to a log file whose tail is attached to the
report of a failing test; the data directory of a failing test is kept.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import kafka_wire

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "target"
LOG_TAIL_LINES = 150


def pytest_configure(config):
    config.addinivalue_line("markers", "node_args(*args): extra strand-node flags")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def binaries():
    """Copies of strand-node and strand taken once per session, so that another
    engineer's `cargo build` cannot swap the binary between a stop and a restart."""
    src_dir = Path(os.environ.get("STRAND_BIN_DIR", TARGET / "debug"))
    dst = TARGET / f"it-bin-{os.getpid()}"
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("strand-node", "strand", "strand-bench"):
        src = src_dir / name
        if not src.exists():
            pytest.exit(f"{src} is missing: run `cargo build -p strand-node -p strand-tools -p strand-bench`", 2)
        shutil.copy2(src, dst / name)
        out[name] = dst / name
    yield out
    shutil.rmtree(dst, ignore_errors=True)


class Node:
    """One strand-node process and its data directory. Survives restarts: the
    port and the data directory stay the same."""

    def __init__(self, binary, root, extra_args=()):
        self.binary = binary
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "node.log"
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.admin_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.extra_args = list(extra_args)
        self.proc = None
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------
    def start(self, ready_timeout_s=30):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRAND_")}
        env.setdefault("RUST_BACKTRACE", "1")
        args = [
            str(self.binary),
            "--data-dir", str(self.data_dir),
            "--kafka-addr", self.bootstrap,
            "--admin-addr", f"127.0.0.1:{self.admin_port}",
            "--cores", "2",
            *self.extra_args,
        ]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(
                    f"strand-node exited with {rc} during startup:\n{self.log_tail()}")
            if kafka_wire.api_versions_ok(self.port, timeout=1.0):
                return self
            time.sleep(0.05)
        raise AssertionError(
            f"strand-node did not answer ApiVersions within {ready_timeout_s}s:\n"
            f"{self.log_tail()}")

    def stop(self, timeout_s=20, check=True, settle=True):
        """SIGTERM; the node must exit with 0 within timeout_s."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        if settle:
            # A client that just closed may leave a long-poll Fetch running on the
            # node for up to fetch.wait.max.ms; let it end so that the known slow
            # shutdown with a pending cross-shard Fetch (covered by its own test)
            # does not slow every test down.
            deadline = time.monotonic() + 2
            while self.server_sockets("08") and time.monotonic() < deadline:
                time.sleep(0.05)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
            self.last_stop_s = time.monotonic() - t0
            with open(self.log_path, "ab") as log:
                log.write(f"===== exit {rc} {self.last_stop_s:.2f}s after SIGTERM\n".encode())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"strand-node did not exit within {timeout_s}s of SIGTERM:\n{self.log_tail()}")
        if check:
            assert rc == 0, f"strand-node exited with {rc} after SIGTERM:\n{self.log_tail()}"
        return rc

    def kill9(self):
        assert self.alive(), "node is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self, ready_timeout_s=30):
        if self.alive():
            self.stop()
        return self.start(ready_timeout_s)

    # -- observation -------------------------------------------------------
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def rss_bytes(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def server_sockets(self, state=None):
        """The node's TCP sockets on its Kafka port (from /proc/net/tcp), as
        (state, remote port) pairs; state is the kernel's hex code (01
        ESTABLISHED, 08 CLOSE_WAIT, 0A LISTEN). Filtered by `state` if given."""
        out = []
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, st = fields[1], fields[2], fields[3]
                if int(local.split(":")[1], 16) == self.port and st != "0A":
                    if state is None or st == state:
                        out.append((st, int(remote.split(":")[1], 16)))
        return out

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=LOG_TAIL_LINES):
        text = self.log_text().splitlines()
        # The configuration dump at each start is long and always the same.
        text = [l for l in text if not l.startswith("  ")]
        return "\n".join(text[-lines:])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    if rep.failed:
        for n in getattr(item, "strand_nodes", []):
            rep.sections.append(
                (f"strand-node log ({n.log_path})", n.log_tail()))
    return rep


@pytest.fixture
def node_factory(request, binaries):
    """Start more nodes (or nodes with special flags) inside a test."""
    nodes = []
    request.node.strand_nodes = nodes

    def make(*extra_args, start=True):
        safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
        root = TARGET / f"it-{safe}-{uuid.uuid4().hex[:8]}"
        n = Node(binaries["strand-node"], root, extra_args)
        nodes.append(n)
        if start:
            n.start()
        return n

    yield make

    errors = []
    for n in nodes:
        try:
            n.stop(check=True)
        except AssertionError as e:
            errors.append(str(e))
        if "panicked at" in n.log_text():
            errors.append(f"strand-node panicked (see {n.log_path}):\n{n.log_tail()}")
    failed = any(getattr(request.node, f"rep_{w}", None) is not None
                 and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
    if not failed and not errors and not os.environ.get("STRAND_IT_KEEP"):
        for n in nodes:
            shutil.rmtree(n.root, ignore_errors=True)
    if errors and not failed:
        pytest.fail("\n\n".join(errors))


@pytest.fixture
def node(request, node_factory):
    marker = request.node.get_closest_marker("node_args")
    extra = marker.args if marker else ()
    return node_factory(*extra)


@pytest.fixture
def cli(binaries):
    """Run the admin CLI: cli(node, "topic", "list") -> CompletedProcess."""

    def run(n, *args, timeout=30):
        return subprocess.run(
            [str(binaries["strand"]), "--bootstrap", n.bootstrap, *map(str, args)],
            capture_output=True, text=True, timeout=timeout,
        )

    return run
