"""The multi-host tests: "hosts" are network namespaces of this machine
(scripts/testbed/netns.sh): a login node running the server and compute nodes n1..n3
running workers, each with its own addresses and host name, all seeing this machine's
files as a cluster's shared file system. Clients run here, reaching the nodes over the
testbed's bridges. The testbed is brought up once for the session and always torn
down; every process a test starts is killed with its process group at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
NETNS = REPO / "scripts" / "testbed" / "netns.sh"
NODES = ["n1", "n2", "n3"]


def drover_bin() -> Path:
    raw = os.environ.get("DROVER_BIN")
    p = Path(raw) if raw else REPO / "target" / "release" / "drover"
    return p if p.is_absolute() else REPO / p


def netns(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(NETNS), *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"netns.sh {' '.join(args)} failed: {r.stderr[-2000:]}")
    return r


@pytest.fixture(scope="session")
def testbed():
    if os.geteuid() != 0 or not Path("/usr/sbin/ip").exists() and not Path("/sbin/ip").exists():
        pytest.skip("the netns testbed needs root and iproute2 (scripts/test.sh runs these tests as root)")
    netns("up", str(len(NODES)))
    try:
        yield
    finally:
        netns("down", check=False)


class Cluster:
    """Processes started on the testbed's nodes; all killed at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.srv = tmp / "srv"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.procs: list[subprocess.Popen] = []
        self.server: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}

    def spawn(self, node: str, name: str, *args) -> subprocess.Popen:
        return self.spawn_program(node, name, drover_bin(), *args)

    def spawn_program(self, node: str, name: str, program: Path, *args) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")
        p = subprocess.Popen([str(NETNS), "exec", node, str(program), *map(str, args)], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def start_relay(self, delay_ms: int) -> str:
        """A delay relay on the login node in front of the server's QUIC port
        (examples/delay_relay.rs): peers dialling the address returned get `delay_ms`
        added each way."""
        access = tomllib.loads((self.srv / "access.toml").read_text())
        upstream = access["addresses"][0]
        relay = REPO / "target" / "release" / "examples" / "delay_relay"
        assert relay.exists(), f"{relay} is not built (cargo build --release --example delay_relay)"
        p = self.spawn_program("login", "relay", relay, f"{upstream.rsplit(':', 1)[0]}:0", upstream, delay_ms)
        deadline = time.monotonic() + 10
        while "listening on" not in self.log("relay"):
            assert p.poll() is None and time.monotonic() < deadline, f"relay: {self.log('relay')}"
            time.sleep(0.05)
        return self.log("relay").split("listening on", 1)[1].split()[0]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def start_server(self, *extra) -> dict:
        self.server = self.spawn("login", "server", "server", "start", "--dir", self.srv, *extra)
        deadline = time.monotonic() + 30
        while not (self.srv / "access.toml").exists():
            assert self.server.poll() is None, f"server exited: {self.log('server')}"
            assert time.monotonic() < deadline, f"no access file: {self.log('server')}"
            time.sleep(0.1)
        return self.status()

    def start_worker(self, node: str, *extra) -> subprocess.Popen:
        p = self.spawn(node, f"worker-{node}", "worker", "--access", self.srv / "access.toml", "--threads", 1, *extra)
        self.workers[node] = p
        return p

    def drover(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(drover_bin()), *map(str, args)], capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict:
        r = self.drover("status", "--dir", self.srv, "--json", timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_status(self, pred, timeout: float = 60, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            st = self.status()
            if pred(st):
                return st
            time.sleep(0.3)
        raise AssertionError(f"not reached within {timeout} s: {what}; last status {json.dumps(st)[:2000]}")

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None and (self.srv / "access.toml").exists():
            try:
                self.drover("server", "stop", "--dir", self.srv, timeout=60)
                self.server.wait(timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def cluster(testbed, tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
        for node in ["login", *NODES]:
            netns("mend", node, check=False)
            netns("clear", node, check=False)


def anomaly_workload(tmp: Path, rng: np.random.Generator, steps: int = 240) -> tuple[Path, np.ndarray]:
    """x (steps, 60, 50) float64 in blocks of 8 steps; outputs the anomaly (written
    block by block: by the workers or through the writer) and the mean."""
    x = rng.normal(280.0, 12.0, size=(steps, 60, 50))
    with h5py.File(tmp / "in.h5", "w") as f:
        f.create_dataset("t", data=x, chunks=(8, 60, 50))
    wl = tmp / "w.toml"
    wl.write_text('[inputs.t]\nfile = "in.h5"\ndataset = "/t"\nchunks = [8, 60, 50]\n'
                  '[[outputs]]\nexpr = "t - mean(t, axis=0)"\nfile = "out.h5"\ndataset = "/anom"\n'
                  '[[outputs]]\nexpr = "mean(t, axis=0)"\nfile = "out.h5"\ndataset = "/mean"\n')
    return wl, x


def check_anomaly(tmp: Path, x: np.ndarray) -> None:
    with h5py.File(tmp / "out.h5", "r") as f:
        np.testing.assert_allclose(f["anom"][()], x - x.mean(axis=0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(f["mean"][()], x.mean(axis=0), rtol=1e-12)


def run_anomaly(cluster: Cluster, tmp: Path, seed: int, steps: int = 240) -> dict:
    """`drover run --connect` of the anomaly workload on the cluster's server; the
    outputs checked against numpy; returns the run's JSON summary."""
    wl, x = anomaly_workload(tmp, np.random.default_rng(seed), steps=steps)
    r = cluster.drover("run", wl, "--connect", cluster.srv, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    check_anomaly(tmp, x)
    return json.loads(r.stdout)
