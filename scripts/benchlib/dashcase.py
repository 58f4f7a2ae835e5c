"""The dashboard's cost (issue 14): the tiny-task workload (`sum(t)`, tasks of 10
elements) on a warm server, without and with a browser on its dashboard.

- Set-up (once per case, untimed): `drover server start --dir SRV --bind 127.0.0.1:0`
  (its dashboard on 127.0.0.1 and a free port, as by default) and WORKERS workers of
  one thread each, as `drover run --workers WORKERS` would start them.
- drover: timed `drover run --connect SRV tiny.toml --json` with no browser open.
- drover+browser: headless Chromium (Debian's, through playwright-core, the e2e tests'
  driver `tests/e2e/browser/dashboard.mjs watch URL stream`) opens the dashboard on the
  task-stream tab (the page that asks the most of the server: a snapshot by server-sent
  events each second and a window of bars each second) before the clock starts and
  stays connected until the run ended; timed: the same command. The browser runs on
  this machine and competes for its two cores; its CPU time over the run is reported
  beside (on a cluster it runs on the user's laptop).

Target (from the issue): drover+browser / drover <= 1.05. Reported, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np

from .common import BENCH_DIR, OUT_DIR, ROOT, TINY_TASK, BenchError, cpu_seconds, kill_groups, log, rm, write_workload
from .contenders import compare_arrays, last_json_line
from .memory import _children

CASE = "tiny-dashboard"
CONTENDERS = ["drover", "drover+browser"]
DRIVER = ROOT / "tests" / "e2e" / "browser" / "dashboard.mjs"
TARGET = 1.05


def is_dash(case: str) -> bool:
    return case == CASE


class _State:
    def __init__(self):
        self.srv = OUT_DIR / f"{CASE}-server"
        self.procs: list[subprocess.Popen] = []
        self.url: str | None = None
        self.browser_cpu: list[float] = []


_st: _State | None = None


def workload(bench, case: str):
    t = {"x": {"file": bench.tiny.name, "dataset": "/t", "chunks": [TINY_TASK]}}
    return write_workload(BENCH_DIR / f"{CASE}-{bench.tag}.toml", t,
                          [{"expr": "sum(x)", "file": f"out/{CASE}.h5", "dataset": "/s"}])


def notes(bench, case: str) -> list[str]:
    if not is_dash(case):
        return []
    return [f"warm server + {bench.args.workers} workers x 1 thread; timed `drover run --connect SRV` of sum(t), "
            f"tasks of {TINY_TASK}; drover+browser: headless Chromium on the dashboard's stream tab throughout"]


def _wait(what: str, f, timeout: float = 30):
    end = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > end:
            raise BenchError(f"{CASE}: timed out waiting for {what}")
        time.sleep(0.1)


def setup(bench, case: str, names: list[str]) -> dict[str, str]:
    global _st
    st = _st = _State()
    shutil.rmtree(st.srv, ignore_errors=True)
    st.srv.parent.mkdir(parents=True, exist_ok=True)
    drover = bench.args.drover
    logs = st.srv.parent
    try:
        with open(logs / f"{CASE}-server.err", "wb") as e:
            st.procs.append(subprocess.Popen([drover, "server", "start", "--dir", str(st.srv), "--bind", "127.0.0.1:0"],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e,
                                             start_new_session=True))
        access = st.srv / "access.toml"
        _wait("the server's access file", access.exists)
        for i in range(bench.args.workers):
            with open(logs / f"{CASE}-worker{i}.err", "wb") as e:
                st.procs.append(subprocess.Popen([drover, "worker", "--access", str(access), "--threads", "1"],
                                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e,
                                                 start_new_session=True))

        def joined():
            p = subprocess.run([drover, "status", "--dir", str(st.srv), "--json"], capture_output=True, text=True,
                               timeout=30)
            return p.returncode == 0 and len(json.loads(p.stdout).get("workers", [])) >= bench.args.workers
        _wait("the workers to join", joined)
        p = subprocess.run([drover, "dashboard", "--dir", str(st.srv)], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise BenchError(f"{CASE}: drover dashboard: {p.stderr.strip()}")
        st.url = p.stdout.strip()
    except Exception as e:   # noqa: BLE001 - the whole case is left out
        teardown(bench, case)
        return {who: f"set-up: {type(e).__name__}: {e}" for who in names}
    errors = {}
    if "drover+browser" in names and not (shutil.which("node") and Path("/usr/bin/chromium").exists()):
        errors["drover+browser"] = "needs node and Debian's chromium (scripts/test.sh installs them)"
    return errors


def teardown(bench, case: str) -> dict:
    global _st
    st, _st = _st, None
    if st is None:
        return {}
    try:
        if st.procs and st.procs[0].poll() is None:
            subprocess.run([bench.args.drover, "server", "stop", "--dir", str(st.srv)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    kill_groups(st.procs)
    shutil.rmtree(st.srv, ignore_errors=True)
    cpu = st.browser_cpu
    return {"browser CPU seconds per run (median)": float(np.median(cpu))} if cpu else {}


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ROOT and its descendants alive now."""
    seen, todo, total = set(), [root], 0.0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(_children(pid))
    return total


def _run(bench) -> dict:
    argv = [bench.args.drover, "run", "--connect", str(_st.srv), str(workload(bench, CASE)), "--json"]
    rm(OUT_DIR / f"{CASE}.h5")
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=bench.args.timeout, env=bench.drover_env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed (exit {p.returncode}): {p.stderr.strip()[-1500:]}")
    summary = last_json_line(p.stdout)
    with h5py.File(OUT_DIR / f"{CASE}.h5", "r") as f:
        result = float(f["s"][()])
    return {"seconds": wall, "drover_seconds": (summary or {}).get("seconds"), "result": result}


def run_one(bench, case: str, who: str) -> dict:
    if who == "drover":
        return _run(bench)
    browser = subprocess.Popen(["node", str(DRIVER), "watch", _st.url, "stream"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = browser.stdout.readline()
        if '"ready"' not in line:
            raise BenchError(f"{CASE}: the browser did not open the dashboard: {line.strip()} "
                             f"{browser.stderr.read()[-1500:] if browser.poll() is not None else ''}")
        time.sleep(2)   # its start-up done before the clock starts
        cpu0 = _tree_cpu(browser.pid)
        r = _run(bench)
        r["browser_cpu_seconds"] = _tree_cpu(browser.pid) - cpu0
        _st.browser_cpu.append(r["browser_cpu_seconds"])
        out, err = browser.communicate(timeout=60)   # closes its stdin: the driver leaves
        seen = json.loads(out.strip().splitlines()[-1])
        if not seen.get("ok"):
            raise BenchError(f"{CASE}: the page failed while connected: {seen.get('errors')} {err[-1500:]}")
        return r
    finally:
        if browser.poll() is None:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(timeout=10)


def check(bench, case: str, warm: dict) -> dict:
    with h5py.File(bench.tiny, "r") as f:
        want = np.sum(f["t"][()])
    return {f"{who} vs numpy": compare_arrays(np.float64(r["result"]), want) for who, r in warm.items()}


def memory_bounds(bench, case: str) -> tuple[int, int]:
    return TINY_TASK * 8, 8


def summary(case: str, res: dict, med, add) -> dict:
    d, b = med(case, "drover"), med(case, "drover+browser")
    row = {"drover": d, "drover+browser": b}
    cpu = [r.get("browser_cpu_seconds") for r in res.get("runs", {}).get("drover+browser", [])]
    cpu = [c for c in cpu if c is not None]
    if d and b:
        row["ratio"] = b / d
        add(case, "drover+browser / drover", f"{b / d:.3f}x", f"<= {TARGET}x", b / d <= TARGET)
    if cpu:
        row["browser_cpu_seconds_median"] = float(np.median(cpu))
        add(case, "browser CPU s per run (median)", f"{np.median(cpu):.2f}", "(same machine)", None)
    return row
