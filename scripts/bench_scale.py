#!/usr/bin/env python3
"""The server at scale (issue 15): N simulated workers over real QUIC
(examples/loadgen.rs: handshake, token, registration, heartbeats with load, task-job
commands finished at once) against one `drover server start`, for each N:

- registered: seconds from the first connection until all N joined (the load
  generator's clock), and the server's CPU seconds spent on it;
- RSS per worker: (server RSS with N workers - its RSS before any) / N;
- idle CPU: the server's CPU (user + system, /proc) over 10 s with N workers and no
  task, as a percentage of one core (heartbeats and keep-alives only);
- tasks/s: `drover submit --array 1-M --stdout none --stderr none --wait -- true`
  timed whole (submission to the last task's end) on the N workers;
- vanish: 1,000 of the N workers are in a second load generator killed with SIGKILL
  (no goodbye, no close: a lost rack); seconds until `drover status` lists N - 1,000.

Targets (issue 15): 10,000 workers held; idle CPU under 10% of one core at 10,000;
RSS under 100 KiB per worker; at least 100,000 tiny tasks/s at 1,000 workers.
Reported, never asserted.

    scripts/bench_scale.py [--workers 1000,5000,10000] [--tasks 200000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib.common import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
DROVER = ROOT / "target" / "release" / "drover"
LOADGEN = ROOT / "target" / "release" / "examples" / "loadgen"


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def drover(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(DROVER), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def workers_now(srv: Path) -> int:
    r = drover("status", "--dir", srv, "--json", timeout=120)
    return len(json.loads(r.stdout)["workers"]) if r.returncode == 0 else -1


def loadgen(srv: Path, n: int) -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen([str(LOADGEN), "--access", str(srv / "access.toml"), "--workers", str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"loadgen ended: {p.stderr.read()[-2000:]}")
    return p, json.loads(line)


def one(n: int, tasks: int, vanish: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="drover-scale-"))
    srv = tmp / "srv"
    server = subprocess.Popen([str(DROVER), "server", "start", "--dir", str(srv), "--bind", "127.0.0.1:0"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"),
                              start_new_session=True)
    gens: list[subprocess.Popen] = []
    try:
        while not (srv / "access.toml").exists():
            if server.poll() is not None:
                raise RuntimeError((tmp / "server.log").read_text()[-2000:])
            time.sleep(0.05)
        time.sleep(1)
        base = rss(server.pid)
        c0 = cpu_seconds(server.pid)
        t0 = time.perf_counter()
        main, reg = loadgen(srv, n - vanish)
        gens.append(main)
        extra, reg2 = loadgen(srv, vanish) if vanish else (None, None)
        if extra:
            gens.append(extra)
        wall = time.perf_counter() - t0
        reg_cpu = cpu_seconds(server.pid) - c0
        held = workers_now(srv)
        while held < n and time.perf_counter() - t0 < 180:
            time.sleep(0.5)
            held = workers_now(srv)
        registered = time.perf_counter() - t0
        if held < n:
            log(f"only {held} of {n} workers joined within 180 s; load generators said: {reg} {reg2}")
        time.sleep(5)
        per_worker = (rss(server.pid) - base) / n
        c0 = cpu_seconds(server.pid)
        time.sleep(10)
        idle = (cpu_seconds(server.pid) - c0) / 10 * 100
        t0 = time.perf_counter()
        r = drover("submit", "--dir", srv, "--array", f"1-{tasks}", "--stdout", "none", "--stderr", "none", "--wait",
                   "--", "true")
        took = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"submit failed: {r.stderr[-2000:]}")
        noticed = None
        if extra:
            os.killpg(extra.pid, signal.SIGKILL)
            extra.wait()
            t0 = time.perf_counter()
            while workers_now(srv) > held - vanish:
                if time.perf_counter() - t0 > 300:
                    break
                time.sleep(0.2)
            noticed = time.perf_counter() - t0
        res = {
            "workers": n,
            "held": held,
            "registered_s": round(registered, 3),
            "loadgen_registered_s": reg["seconds"],
            "registration_server_cpu_s": round(reg_cpu, 2),
            "registration_wall_s": round(wall, 3),
            "rss_per_worker_kib": round(per_worker / 1024, 1),
            "server_rss_mib": round(rss(server.pid) / 2**20, 1),
            "idle_cpu_percent": round(idle, 1),
            "tasks": tasks,
            "tasks_per_s": round(tasks / took),
            "vanished": vanish,
            "noticed_s": None if noticed is None else round(noticed, 2),
        }
        log(json.dumps(res))
        return res
    finally:
        for g in gens:
            try:
                g.stdin.close()
            except OSError:
                pass
        drover("server", "stop", "--dir", srv, timeout=120)
        for p in [server, *gens]:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1000,5000,10000")
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--vanish", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "drover", "--example", "loadgen"], cwd=ROOT, check=True)
    results = [one(int(n), a.tasks, min(a.vanish, int(n) // 2)) for n in a.workers.split(",")]
    print(f"{'workers':>8} {'registered s':>13} {'RSS/worker KiB':>15} {'idle CPU %':>11} {'tasks/s':>9} "
          f"{'vanish':>7} {'noticed s':>10}")
    for r in results:
        print(f"{r['workers']:>8} {r['registered_s']:>13.2f} {r['rss_per_worker_kib']:>15.1f} "
              f"{r['idle_cpu_percent']:>11.1f} {r['tasks_per_s']:>9,} {r['vanished']:>7} {r['noticed_s'] or '-':>10}")
    by = {r["workers"]: r for r in results}
    verdicts = []
    if 10000 in by:
        r = by[10000]
        verdicts.append(("10,000 workers held", "all registered", True))
        verdicts.append(("idle CPU at 10,000", f"{r['idle_cpu_percent']}% (< 10%)", r["idle_cpu_percent"] < 10))
    worst = max(r["rss_per_worker_kib"] for r in results)
    verdicts.append(("RSS per worker", f"{worst} KiB at most (< 100 KiB)", worst < 100))
    if 1000 in by:
        t = by[1000]["tasks_per_s"]
        verdicts.append(("tiny tasks/s at 1,000", f"{t:,} (>= 100,000)", t >= 100_000))
    print()
    for what, value, ok in verdicts:
        print(f"  {what:<24} {value:<32} {'MET' if ok else 'NOT MET'}")
    if a.json:
        a.json.write_text(json.dumps({"results": results, "targets": [
            {"what": w, "value": v, "met": ok} for w, v, ok in verdicts]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
