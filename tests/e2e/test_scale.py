"""The server with many workers (issue 15): 2,000 simulated workers over real QUIC
from the load generator (examples/loadgen.rs; the 10,000-worker figures come from
scripts/bench_scale.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from conftest import (REPO_ROOT, child_env, kill_group, kill_marked, new_mark, run_drover, spawn_logged, wait_for,
                      wait_for_access)

LOADGEN = REPO_ROOT / "target" / "release" / "examples" / "loadgen"
BROWSER = REPO_ROOT / "tests" / "e2e" / "browser" / "dashboard.mjs"
SHOTS = REPO_ROOT / "tests" / "e2e" / "screenshots"


def status(drover, srv) -> dict:
    r = run_drover(drover, ["status", "--dir", srv, "--json"], timeout=120)
    assert r.rc == 0, r.describe()
    return json.loads(r.stdout)


def test_two_thousand_workers_join_run_tiny_tasks_and_vanish(drover, tmp_path):
    assert LOADGEN.exists(), f"{LOADGEN} is missing: scripts/test.sh builds it (cargo build --release --example loadgen)"
    logs, srv = tmp_path / "logs", tmp_path / "srv"
    logs.mkdir()
    mark = new_mark()
    server = spawn_logged(drover, ["server", "start", "--dir", srv, "--bind", "127.0.0.1:0"], logs, "server",
                          child_env(mark))
    gens = []
    try:
        access = wait_for_access(server, srv, logs)
        for n in (1500, 500):
            p = subprocess.Popen([str(LOADGEN), "--access", str(access), "--workers", str(n)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                 env=child_env(mark))
            gens.append(p)
            first = json.loads(p.stdout.readline() or "{}")
            assert first.get("event") == "registered" and first["workers"] == n and first["failed"] == 0, \
                (first, p.stderr.read()[-2000:] if p.poll() is not None else "")
        st = wait_for(lambda: (s := status(drover, srv)) and len(s["workers"]) == 2000 and s, 60,
                      "2,000 workers in drover status", interval=0.5)
        assert len({w["host"] for w in st["workers"]}) == 2000 and len({w["id"] for w in st["workers"]}) == 2000
        # The dashboard's workers table holds them all, sorts, and keeps up.
        url = run_drover(drover, ["dashboard", "--dir", srv], timeout=30).stdout.strip()
        SHOTS.mkdir(exist_ok=True)
        p = subprocess.run(["node", str(BROWSER), "workers", url, str(SHOTS)], capture_output=True, text=True,
                           timeout=180)
        seen = json.loads((p.stdout.strip().splitlines() or ["{}"])[-1])
        assert p.returncode == 0 and seen.get("ok") and seen["rows"] == 2000, (seen, p.stderr[-2000:])
        assert (SHOTS / "workers-workers.png").stat().st_size > 10_000

        r = run_drover(drover, ["submit", "--dir", srv, "--array", "1-20000", "--stdout", "none", "--stderr", "none",
                                "--wait", "--json", "--", "true"], timeout=300)
        assert r.rc == 0, r.describe()
        jobs = json.loads(run_drover(drover, ["jobs", "--dir", srv, "--json"], timeout=60).stdout)
        assert jobs[0]["counts"]["succeeded"] == 20000 and jobs[0]["state"] == "succeeded", jobs

        # 500 vanish at once, without a word: noticed, and only they.
        os.killpg(gens[1].pid, signal.SIGKILL)
        gens[1].wait(timeout=30)
        wait_for(lambda: len(status(drover, srv)["workers"]) == 1500, 120, "the 500 vanished workers noticed",
                 interval=1.0)
        # The rest leave cleanly when told.
        out, _ = gens[0].communicate(input="", timeout=60)
        done = json.loads(out.strip().splitlines()[-1])
        assert done["event"] == "done" and done["tasks"] > 0, done
        wait_for(lambda: len(status(drover, srv)["workers"]) == 0, 60, "the others gone", interval=0.5)
    finally:
        for p in gens:
            kill_group(p)
        if server.poll() is None:
            run_drover(drover, ["server", "stop", "--dir", srv], timeout=60)
        kill_group(server)
        kill_marked(mark)
