"""drover across several "hosts" (network namespaces, scripts/testbed/netns.sh)."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest
import tomllib

from conftest import NODES, anomaly_workload, check_anomaly, netns, run_anomaly


def three_workers(cluster, *extra) -> dict:
    for node in NODES:
        cluster.start_worker(node, *extra)
    return cluster.wait_status(lambda st: len(st["workers"]) == 3, 60, "three workers joined")


@pytest.mark.parametrize("flag,direct", [("--shared-fs", True), (None, False), ("--no-shared-fs", False)],
                         ids=["shared-fs", "default", "no-shared-fs"])
def test_three_hosts_compute_exactly_with_remote_writes_on_and_off(cluster, tmp_path, flag, direct):
    """Workers on n1, n2, n3 dial the server on the login node; the anomaly is exact.
    With --shared-fs (every node sees the same file here) the workers on the other
    hosts write the output's blocks into it themselves; by default (the testbed's file
    system is not one drover recognises as a parallel one) and with --no-shared-fs
    every block travels to the server's writer."""
    cluster.start_server("--interface", "eth0")
    access = tomllib.loads((cluster.srv / "access.toml").read_text())
    assert access["addresses"] == [f"10.77.0.1:{access['addresses'][0].rsplit(':', 1)[1]}"], access["addresses"]
    st = three_workers(cluster, *([flag] if flag else []))
    assert sorted(w["host"] for w in st["workers"]) == NODES, "each worker on its own host"
    summary = run_anomaly(cluster, tmp_path, 1)
    written, sent = summary["blocks_written_by_workers"], summary["blocks_sent_to_writer"]
    if direct:
        assert written == 30 and sent == 1, summary   # the mean's one block is the server's
    else:
        assert written == 0 and sent == 31, summary
    ran = {w["host"]: w for w in cluster.status()["workers"]}
    assert set(ran) == set(NODES)


def test_one_percent_loss_on_every_node_still_exact(cluster, tmp_path):
    """1% of packets (UDP and TCP) dropped each way on every compute node: QUIC
    resends, the result is exact, no worker is lost. Blocks travel to the writer (the
    bulk path)."""
    cluster.start_server("--interface", "eth0")
    for node in NODES:
        netns("loss", node, "1")
    three_workers(cluster, "--no-shared-fs")
    summary = run_anomaly(cluster, tmp_path, 2, steps=480)
    assert summary["workers_lost"] == 0 and summary["blocks_sent_to_writer"] == 61, summary
    # The rules dropped datagrams (the blocks sent make thousands of them: at 1%, tens).
    listing = "".join(netns("exec", node, "iptables", "-L", "-v", "-x", "-n").stdout for node in NODES)
    dropped = sum(int(l.split()[0]) for l in listing.splitlines() if "DROP" in l and "statistic" in l)
    assert dropped > 0, f"the loss rules dropped nothing:\n{listing}"


def test_one_percent_loss_and_20_ms_round_trips_still_exact(cluster, tmp_path):
    """Every compute node drops 1% of its packets each way, and reaches the server
    only through a relay on the login node that holds each datagram 10 ms each way
    (20 ms more round trip: a long network; this kernel has no netem). The bulk path
    (every block to the writer) stays exact and no worker is lost."""
    cluster.start_server("--interface", "eth0")
    relay = cluster.start_relay(10)
    for node in NODES:
        netns("loss", node, "1")
    for node in NODES:
        cluster.start_worker(node, "--no-shared-fs", "--server-address", relay, "--transport", "quic")
    st = cluster.wait_status(lambda st: len(st["workers"]) == 3, 60, "three workers joined through the relay")
    assert {w["transport"] for w in st["workers"]} == {"quic"}
    summary = run_anomaly(cluster, tmp_path, 8, steps=480)
    assert summary["workers_lost"] == 0 and summary["blocks_sent_to_writer"] == 61, summary
    # Every worker's datagrams went through the relay.
    peers = [l for l in cluster.log("relay").splitlines() if l.startswith("peer ")]
    assert sorted(l.split()[1].rsplit(":", 1)[0] for l in peers) == ["10.77.0.11", "10.77.0.12", "10.77.0.13"], peers


def test_a_three_second_outage_loses_no_worker(cluster, tmp_path):
    """A node's links go down for 3 s while tasks run, then come back: nobody is
    declared lost, nothing runs twice, the result is exact."""
    cluster.start_server("--interface", "eth0")
    st = three_workers(cluster)
    ids = sorted(w["id"] for w in st["workers"])
    wl, x = anomaly_workload(tmp_path, np.random.default_rng(3), steps=960)
    run = subprocess.Popen([str(cluster_bin()), "run", str(wl), "--connect", str(cluster.srv), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        netns("cut", "n2")
        time.sleep(3)
        netns("mend", "n2")
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    check_anomaly(tmp_path, x)
    summary = json.loads(out)
    st = cluster.status()
    assert summary["workers_lost"] == 0 and st["lost_workers"] == [], (summary, st["lost_workers"])
    assert sorted(w["id"] for w in st["workers"]) == ids, "the same three workers"


@pytest.mark.parametrize("transport", ["quic", "tcp"])
def test_a_two_minute_partition_loses_the_worker_and_the_run_goes_on(cluster, tmp_path, transport):
    """A node cut off for two minutes: the server declares its worker lost (its tasks
    run elsewhere, the result is exact), and the worker, unable to reach the server
    for longer than its death timeout, exits on its own; over QUIC, and over TCP,
    where a connection with unacknowledged bytes could otherwise hang for many
    minutes of kernel retransmissions (TCP_USER_TIMEOUT ends it)."""
    cluster.start_server("--interface", "eth0")
    for node in NODES:
        cluster.start_worker(node, *(["--transport", "tcp"] if node == "n3" and transport == "tcp" else []))
    st = cluster.wait_status(lambda st: len(st["workers"]) == 3, 60, "three workers joined")
    assert {w["host"]: w["transport"] for w in st["workers"]}["n3"] == transport, st["workers"]
    t0 = time.monotonic()
    netns("cut", "n3")
    st = cluster.wait_status(lambda st: len(st["workers"]) == 2, 60, "the cut-off worker declared lost")
    assert "n3" not in {w["host"] for w in st["workers"]}
    run_anomaly(cluster, tmp_path, 4)
    w = cluster.workers["n3"]
    w.wait(timeout=max(1.0, 120 - (time.monotonic() - t0)) + 30)
    netns("mend", "n3")
    assert w.returncode != 0 and "server" in cluster.log("worker-n3").lower(), cluster.log("worker-n3")[-2000:]


def test_the_server_announces_and_listens_on_the_chosen_interface(cluster, tmp_path):
    """--interface ib0: the access file names ib0's address, the server listens only
    there, the workers dial it; a wrong name is refused with the interfaces there."""
    cluster.start_server("--interface", "ib0")
    access = tomllib.loads((cluster.srv / "access.toml").read_text())
    port = access["addresses"][0].rsplit(":", 1)[1]
    assert access["addresses"] == [f"10.78.0.1:{port}"], access["addresses"]
    sockets = netns("exec", "login", "ss", "-u", "-l", "-n", "-p").stdout
    mine = [l for l in sockets.splitlines() if f":{port} " in l]
    assert mine and all("10.78.0.1:" in l for l in mine), sockets
    st = three_workers(cluster)
    run_anomaly(cluster, tmp_path, 5)

    bad = cluster.spawn("login", "bad-server", "server", "start", "--dir", tmp_path / "srv2", "--interface", "ib9")
    assert bad.wait(timeout=30) == 2
    msg = cluster.log("bad-server").strip()
    assert '"ib9"' in msg and "eth0" in msg and "ib0" in msg and len(msg.splitlines()) == 1, msg
    assert not (tmp_path / "srv2" / "access.toml").exists()


def listening(node: str, port: str) -> dict[str, list[str]]:
    """The local addresses of the UDP and TCP sockets listening on `port` on `node`."""
    out = {}
    for proto in ("u", "t"):
        lines = netns("exec", node, "ss", f"-{proto}", "-l", "-n", "-H").stdout.splitlines()
        out[proto] = sorted(l.split()[3].rsplit(":", 1)[0] for l in lines if l.split()[3].endswith(f":{port}"))
    return out


def test_by_default_the_server_listens_only_on_the_addresses_it_announces(cluster, tmp_path):
    """No flags: the login node's name (which it cannot resolve itself, as on many
    clusters where only other hosts' DNS knows it), then its interfaces' addresses, then
    127.0.0.1 are announced, and the QUIC and TCP sockets listen on exactly those
    addresses, never on 0.0.0.0; workers on other hosts join and compute exactly. An
    address this host does not have is refused in one line, before anything is written;
    --bind 0.0.0.0:PORT listens on every address when asked (NAT, port forwards)."""
    cluster.start_server()
    access = tomllib.loads((cluster.srv / "access.toml").read_text())
    port = access["addresses"][0].rsplit(":", 1)[1]
    assert access["addresses"] == [f"{h}:{port}" for h in ("login", "10.77.0.1", "10.78.0.1", "127.0.0.1")], access
    tcp_port = access["tcp_addresses"][0].rsplit(":", 1)[1]
    assert access["tcp_addresses"] == [f"{h}:{tcp_port}" for h in ("login", "10.77.0.1", "10.78.0.1", "127.0.0.1")]
    got = listening("login", port)
    assert got["u"] == ["10.77.0.1", "10.78.0.1", "127.0.0.1"], got
    assert listening("login", tcp_port)["t"] == ["10.77.0.1", "10.78.0.1", "127.0.0.1"], listening("login", tcp_port)
    three_workers(cluster)
    run_anomaly(cluster, tmp_path, 6)

    bad = cluster.spawn("login", "bad-server", "server", "start", "--dir", tmp_path / "srv2", "--advertise", "10.77.0.11")
    assert bad.wait(timeout=30) == 2
    msg = cluster.log("bad-server").strip()
    assert '"10.77.0.11"' in msg and "not an address of this host" in msg and "--bind 0.0.0.0:PORT" in msg, msg
    assert len(msg.splitlines()) == 1, msg
    assert not (tmp_path / "srv2").exists(), "nothing written"

    wild = cluster.spawn("login", "wild-server", "server", "start", "--dir", tmp_path / "srv3", "--bind", "0.0.0.0:0")
    deadline = time.monotonic() + 30
    while not (tmp_path / "srv3" / "access.toml").exists():
        assert wild.poll() is None and time.monotonic() < deadline, cluster.log("wild-server")
        time.sleep(0.1)
    wport = tomllib.loads((tmp_path / "srv3" / "access.toml").read_text())["addresses"][0].rsplit(":", 1)[1]
    assert listening("login", wport)["u"] == ["0.0.0.0"], listening("login", wport)
    r = cluster.drover("server", "stop", "--dir", tmp_path / "srv3", timeout=60)
    assert r.returncode == 0, r.stderr
    assert wild.wait(timeout=30) == 0


def cluster_bin():
    from conftest import drover_bin
    return drover_bin()
