"""When UDP does not get through (issue 15, item 7): workers behind a firewall that
drops UDP fall back to TLS over TCP by themselves, or use it when told; a client
reaches the server through a TCP port forward (socat here, `ssh -L` at a site)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import tomllib

from conftest import NODES, drover_bin, netns, run_anomaly


def test_workers_behind_a_udp_firewall_use_tcp_and_the_run_is_exact(cluster, tmp_path):
    """n1 and n2 drop every UDP datagram: n1's worker (transport auto) gets no QUIC
    answer and falls back to TCP, n2's is told `--transport tcp`; n3 passes UDP and
    stays on QUIC. Every block travels to the writer (--no-shared-fs), over both
    transports; the anomaly is exact. A worker told `--transport quic` behind the
    firewall never reaches the server and says so."""
    cluster.start_server("--interface", "eth0")
    access = tomllib.loads((cluster.srv / "access.toml").read_text())
    quic_port = access["addresses"][0].rsplit(":", 1)[1]
    assert access["tcp_addresses"] == [f"10.77.0.1:{quic_port}"], "TCP on the same port number, announced"
    netns("block-udp", "n1")
    netns("block-udp", "n2")
    cluster.start_worker("n1", "--no-shared-fs")
    cluster.start_worker("n2", "--no-shared-fs", "--transport", "tcp")
    cluster.start_worker("n3", "--no-shared-fs")
    st = cluster.wait_status(lambda st: len(st["workers"]) == 3, 60, "three workers joined")
    via = {w["host"]: w["transport"] for w in st["workers"]}
    assert via == {"n1": "tcp", "n2": "tcp", "n3": "quic"}, via
    # The TCP connections are real: the login node holds them with n1 and n2.
    sockets = netns("exec", "login", "ss", "-t", "-n", "state", "established").stdout
    for node, octet in (("n1", 11), ("n2", 12)):
        assert f"10.77.0.{octet}:" in sockets, f"no TCP connection from {node}:\n{sockets}"

    summary = run_anomaly(cluster, tmp_path, 7, steps=480)
    assert summary["blocks_sent_to_writer"] == 61 and summary["blocks_written_by_workers"] == 0, summary
    st = cluster.status()
    assert len(st["workers"]) == 3 and st["workers_lost"] == 0, st
    done = {w["host"]: w for w in st["workers"]}
    assert set(done) == set(NODES)

    quic_only = cluster.spawn("n1", "worker-quic-only", "worker", "--access", cluster.srv / "access.toml",
                              "--threads", 1, "--transport", "quic", "--death-timeout", 5)
    assert quic_only.wait(timeout=60) != 0
    log = cluster.log("worker-quic-only")
    errors = [l for l in log.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the server" in errors[0] and "TCP" not in errors[0], log[-2000:]
    assert len(cluster.status()["workers"]) == 3, "the QUIC-only worker never joined"


def tcp_bytes_received_from(octet: int) -> int:
    """Bytes the login node received on its established TCP connections from
    10.77.0.<octet> (`ss -i`)."""
    out = netns("exec", "login", "ss", "-t", "-n", "-i", "-H", "state", "established").stdout
    lines, total = out.splitlines(), 0
    for line, info in zip(lines, lines[1:]):
        fields = line.split()
        if not line[:1].isspace() and len(fields) >= 4 and fields[3].startswith(f"10.77.0.{octet}:"):
            total += int(re.search(r"bytes_received:(\d+)", info).group(1)) if "bytes_received:" in info else 0
    return total


def test_remote_workers_send_their_blocks_over_a_tcp_lane_beside_quic(cluster, tmp_path):
    """Workers on other hosts that must send their blocks (--no-shared-fs) open a
    second link, TLS over TCP, once they have sent 8 MiB of results over a QUIC
    connection that loses (almost) nothing, and send their results there from then on
    (TCP costs far less CPU per byte); tasks and
    heartbeats stay on QUIC. n3 (transport auto) takes such a lane; n2, told
    `--transport quic`, keeps everything on QUIC; n1 drops all TCP, so its lane's dial
    gets no answer and its results stay on QUIC. The anomaly is exact, every block
    travels to the writer, no worker is lost."""
    cluster.start_server("--interface", "eth0")
    netns("block-tcp", "n1")
    cluster.start_worker("n1", "--no-shared-fs")
    cluster.start_worker("n2", "--no-shared-fs", "--transport", "quic")
    cluster.start_worker("n3", "--no-shared-fs")
    st = cluster.wait_status(lambda st: len(st["workers"]) == 3, 60, "three workers joined")
    assert {w["transport"] for w in st["workers"]} == {"quic"}, "no lane before any result"
    # 2,880 steps of 24 KB: each worker sends some 23 MB, the first 8 MiB over QUIC.
    summary = run_anomaly(cluster, tmp_path, 11, steps=2880)
    assert summary["blocks_sent_to_writer"] == 361 and summary["workers_lost"] == 0, summary
    st = cluster.status()
    via = {w["host"]: w["transport"] for w in st["workers"]}
    assert via == {"n1": "quic", "n2": "quic", "n3": "quic+tcp"}, via
    # The lane is a real TCP connection from n3; n1 and n2 have none.
    lane = tcp_bytes_received_from(13)
    assert lane > 0 and tcp_bytes_received_from(11) == 0 and tcp_bytes_received_from(12) == 0, lane
    # A second run finds the lane open: n3's blocks (about a third of 120 blocks of
    # 192 KB) all travel over it.
    (tmp_path / "again").mkdir()
    summary = run_anomaly(cluster, tmp_path / "again", 12, steps=960)
    assert summary["blocks_sent_to_writer"] == 121 and summary["workers_lost"] == 0, summary
    more = tcp_bytes_received_from(13) - lane
    assert more > 3_000_000, f"the lane carried {more} bytes in the second run\n{cluster.log('worker-n3')[-3000:]}"
    assert tcp_bytes_received_from(11) == 0 and tcp_bytes_received_from(12) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (scripts/test.sh installs it)")
def test_a_client_reaches_the_server_through_a_tcp_port_forward(cluster, tmp_path):
    """Only TCP crosses a port forward (here socat on this host to the login node's TCP
    port, as `ssh -L` would): a client dialling its local end with --server-address
    submits and waits for a task job with --transport tcp, and lists the jobs with the
    default transport (QUIC gets no answer there, TCP does) or DROVER_SERVER_ADDRESS."""
    cluster.start_server("--interface", "eth0")
    cluster.start_worker("n1")
    cluster.wait_status(lambda st: len(st["workers"]) == 1, 60, "the worker joined")
    access = tomllib.loads((cluster.srv / "access.toml").read_text())
    target = access["tcp_addresses"][0]
    port = free_port()
    fwd = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:{target}"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the port forward did not listen"
                time.sleep(0.1)
        local = f"127.0.0.1:{port}"
        r = cluster.drover("--server-address", local, "--transport", "tcp", "submit", "--dir", cluster.srv,
                           "--array", "1-20", "--wait", "--", "true", timeout=120)
        assert r.returncode == 0 and "succeeded: 20 tasks" in r.stderr + r.stdout, (r.stdout, r.stderr)
        r = cluster.drover("jobs", "--dir", cluster.srv, "--json", "--server-address", local, timeout=120)
        assert r.returncode == 0, r.stderr
        jobs = json.loads(r.stdout)
        assert [j["counts"]["succeeded"] for j in jobs] == [20], jobs
        env = {**os.environ, "DROVER_SERVER_ADDRESS": local, "DROVER_TRANSPORT": "tcp"}
        r = subprocess.run([str(drover_bin()), "status", "--dir", str(cluster.srv), "--json"], capture_output=True,
                           text=True, timeout=60, env=env)
        assert r.returncode == 0 and len(json.loads(r.stdout)["workers"]) == 1, r.stderr
        # With the forward gone, the same command fails in one line naming both tries.
        os.killpg(fwd.pid, signal.SIGKILL)
        fwd.wait(timeout=10)
        r = cluster.drover("jobs", "--dir", cluster.srv, "--server-address", local, timeout=120)
        errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
        assert r.returncode == 1 and len(errors) == 1 and local in errors[0] and "TCP" in errors[0], r.stderr
    finally:
        try:
            os.killpg(fwd.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        fwd.wait(timeout=10)
