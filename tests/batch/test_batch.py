"""drover through real SLURM and SGE and the PBS/Torque/LSF/HTCondor emulators."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SYSTEMS, check_outputs, drover, drover_bin, make_workload, start_server, status, stop_server, wait_status, write_site


@pytest.mark.parametrize("name", SYSTEMS)
def test_run_through_the_batch_system_is_exact_and_leaves_no_job(name, system_env, tmp_path):
    s = system_env(name)
    workload, want = make_workload(tmp_path, np.random.default_rng(7))
    site = write_site(tmp_path / "site.toml", s)
    r = drover(s, "run", workload, "--site", site, "--workers", 2, "--json")
    assert r.returncode == 0, f"{name}: {r.stderr[-3000:]}"
    summary = json.loads(r.stdout)
    assert summary["tasks_retried"] == 0
    assert summary["workers"] >= 1
    check_outputs(tmp_path / "out.h5", want)
    assert s.live_jobs() == [], f"{name}: jobs left after the run"
    scripts = list((Path(s.env["HOME"]) / ".drover" / "logs").glob(f"{s.job_name}-*"))
    assert scripts, "job scripts and submit logs are kept in the log folder"


@pytest.mark.parametrize("name", SYSTEMS)
def test_array_job_brings_many_workers_from_one_submission(name, system_env, tmp_path):
    s = system_env(name)
    workload, want = make_workload(tmp_path, np.random.default_rng(8))
    site = write_site(tmp_path / "site.toml", s, array=True)
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 3)
    try:
        st = wait_status(s, server, lambda st: len(st["workers"]) >= 3)
        jobs = {w["batch_job"] for w in st["workers"]}
        assert len(jobs) == 3, f"three array elements: {jobs}"
        submits = list((server / "logs").glob("*.submit.log"))
        assert len(submits) == 1, f"one submission for the whole array, got {len(submits)}"
        r = drover(s, "run", workload, "--connect", server, "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        check_outputs(tmp_path / "out.h5", want)
    finally:
        stop_server(s, server, proc)
    assert s.wait_no_jobs() == []


def test_slurm_scales_up_and_down(system_env, tmp_path):
    s = system_env("slurm")
    workload, want = make_workload(tmp_path, np.random.default_rng(9))
    site = write_site(tmp_path / "site.toml", s)
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 1)
    try:
        wait_status(s, server, lambda st: len(st["workers"]) == 1)
        assert drover(s, "scale", 4, "--dir", server).returncode == 0
        st = wait_status(s, server, lambda st: len(st["workers"]) == 4)
        assert st["target"] == 4
        assert len([j for j in st["jobs"] if j["state"] != "gone"]) == 4
        assert len(s.live_jobs()) == 4
        r = drover(s, "run", workload, "--connect", server, "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        check_outputs(tmp_path / "out.h5", want)
        assert drover(s, "scale", 1, "--dir", server).returncode == 0
        st = wait_status(s, server, lambda st: len(st["workers"]) == 1 and len(s.live_jobs()) == 1, timeout=60)
        assert [j for j in st["jobs"] if j["state"] != "gone"][0]["workers"] == 1
    finally:
        r = stop_server(s, server, proc)
    assert r.returncode == 0, r.stderr
    assert s.live_jobs() == [], "server stop leaves the queue empty"


def test_slurm_multinode_job_starts_one_worker_per_node(system_env, tmp_path):
    s = system_env("slurm")
    workload, want = make_workload(tmp_path, np.random.default_rng(10))
    site = write_site(tmp_path / "site.toml", s, nodes=3, cores=2, processes=1)
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 3)
    try:
        st = wait_status(s, server, lambda st: len(st["workers"]) == 3)
        assert {w["node"] for w in st["workers"]} == {"n1", "n2", "n3"}
        assert len({w["batch_job"] for w in st["workers"]}) == 1, "one job"
        assert all(w["threads"] == 2 for w in st["workers"])
        r = drover(s, "run", workload, "--connect", server, "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        check_outputs(tmp_path / "out.h5", want)
    finally:
        stop_server(s, server, proc)
    assert s.live_jobs() == []


@pytest.mark.parametrize("name,queue,needle", [
    ("slurm", "nope", "invalid partition"),
    ("pbs", "nope", "Unknown queue"),
    ("lsf", "nope", "No such queue"),
])
def test_failed_submission_is_reported_in_one_line(name, queue, needle, system_env, tmp_path):
    s = system_env(name)
    workload, _ = make_workload(tmp_path, np.random.default_rng(11))
    site = write_site(tmp_path / "site.toml", s, queue=queue)
    r = drover(s, "run", workload, "--site", site, "--workers", 1)
    assert r.returncode == 1, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert len(err) == 1 and needle.lower() in err[0].lower() and "panicked" not in r.stderr, r.stderr
    assert not (tmp_path / "out.h5").exists()


def test_server_keeps_running_and_shows_failing_submissions(system_env, tmp_path):
    s = system_env("slurm")
    site = write_site(tmp_path / "site.toml", s, queue="nope")
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 1)
    try:
        st = wait_status(s, server, lambda st: st.get("submit_failure"), timeout=30)
        assert "invalid partition" in st["submit_failure"].lower()
        assert proc.poll() is None, "a failing submission never crashes the server"
    finally:
        stop_server(s, server, proc)


@pytest.mark.parametrize("workers", [1, 3])
def test_real_slurm_accepts_rendered_scripts(workers, slurm_up, tmp_path):
    for extra in ({}, {"array": True}, {"nodes": 2, "processes": 2, "cores": 2}):
        doc = {"scheduler": "slurm", "queue": "debug", "cores": 1, "memory": "700 MB", "walltime": "00:05:00", **extra}
        site = tmp_path / "s.toml"
        site.write_text("".join(f"{k} = {json.dumps(v)}\n" if not isinstance(v, bool) else f"{k} = {'true' if v else 'false'}\n" for k, v in doc.items()))
        r = subprocess.run([str(drover_bin()), "job-script", "--site", site, "--workers", str(workers), "--dir", tmp_path], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        script = tmp_path / "job.sh"
        script.write_text(r.stdout)
        (tmp_path / "logs").mkdir(exist_ok=True)
        t = subprocess.run(["sbatch", "--test-only", script], capture_output=True, text=True)
        assert t.returncode == 0 and "to start at" in t.stderr, f"{extra}: {t.stderr}"


def test_real_sge_accepts_rendered_scripts(sge_up, tmp_path):
    for extra in ({}, {"array": True, "cores": 2}, {"memory_resource": "h_vmem", "cores": 4}):
        doc = {"scheduler": "sge", "queue": "all.q", "pe": "smp", "cores": 1, "memory": "1 GiB", "walltime": "00:05:00", **extra}
        site = tmp_path / "s.toml"
        site.write_text("".join(f"{k} = {json.dumps(v)}\n" if not isinstance(v, bool) else f"{k} = {'true' if v else 'false'}\n" for k, v in doc.items()))
        r = subprocess.run([str(drover_bin()), "job-script", "--site", site, "--workers", "2", "--dir", tmp_path], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        script = tmp_path / "job.sh"
        script.write_text(r.stdout)
        t = subprocess.run(["qsub", "-w", "v", script], capture_output=True, text=True, env={**__import__("os").environ, "SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"})
        assert "verification: found suitable queue(s)" in t.stdout + t.stderr, f"{extra}: {t.stdout} {t.stderr}"


@pytest.mark.parametrize("text,needle", [
    ('scheduler = "slurm"\nqueu = "x"\n', 'did you mean "queue"'),
    ('scheduler = "slurm"\nmemory = "20 GiG"\n', '"20 GiG"'),
    ('scheduler = "slurm"\nwalltime = "1:99:00"\n', '"1:99:00"'),
    ('scheduler = "slurm"\ncores = 2\nprocesses = 4\n', "processes = 4"),
    ('scheduler = "slurn"\n', 'did you mean "slurm"'),
    ('scheduler = "sge"\nnodes = 2\n', "nodes = 2"),
    ('scheduler = "slurm"\ncores = 0\n', "cores = 0"),
    ('scheduler = "slurm"\nlsf_unit = "PB"\n', '"PB"'),
    ('scheduler = "slurm"\ncores = \n', "line 2"),
    ('scheduler = "slurm"\nshared_fs = "yes"\n', "shared_fs"),
])
def test_bad_site_files_are_refused_clearly(text, needle, tmp_path):
    site = tmp_path / "bad.toml"
    site.write_text(text)
    for argv in (["job-script", "--site", site], ["server", "start", "--dir", tmp_path / "srv", "--site", site]):
        r = subprocess.run([str(drover_bin()), *map(str, argv)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, r.stderr
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not (tmp_path / "srv").exists(), "a bad site starts nothing"


def _slow_workload(dirpath: Path, rows: int) -> tuple[Path, "callable"]:
    """Much compute from little data: a (rows, 1) x (1, 20000) broadcast. Returns the
    workload and an oracle for any rows."""
    import h5py

    a = np.linspace(0.1, 1.0, rows).reshape(rows, 1)
    b = np.linspace(1.0, 2.0, 20000).reshape(1, 20000)
    with h5py.File(dirpath / "bc.h5", "w") as f:
        f["a"] = a
        f["b"] = b
    (dirpath / "slow.toml").write_text(
        '[inputs.a]\nfile = "bc.h5"\ndataset = "/a"\nchunks = [20, 1]\n'
        '[inputs.b]\nfile = "bc.h5"\ndataset = "/b"\n'
        '[[outputs]]\nexpr = "sum(sin(a * b) ** 2 + cos(a + b) * exp(-a * b), axis=1)"\nfile = "slow.h5"\ndataset = "/s"\n'
    )
    def oracle(idx):
        ai = a[idx]
        return (np.sin(ai * b) ** 2 + np.cos(ai + b) * np.exp(-ai * b)).sum(axis=1)

    return dirpath / "slow.toml", oracle


def _calibrated_rows(s, tmp_path: Path, seconds: float) -> int:
    """Rows of the slow workload that take about `seconds` on this machine (2 workers)."""
    calib = tmp_path / "calib"
    calib.mkdir()
    workload, _ = _slow_workload(calib, 2000)
    r = drover(s, "run", workload, "--workers", 2, "--json")
    assert r.returncode == 0, r.stderr
    per_row = json.loads(r.stdout)["seconds"] / 2000
    return int(min(max(seconds / per_row, 4000), 2_000_000)) // 20 * 20


def test_slurm_walltime_drains_workers_and_replaces_jobs_without_retries(system_env, tmp_path):
    """A 1-minute walltime on a run of about two minutes: workers drain before their
    job ends, replacements arrive ahead of time, nothing is retried, the result is exact."""
    import h5py

    s = system_env("slurm")
    rows = _calibrated_rows(s, tmp_path, 130.0)
    workload, want = _slow_workload(tmp_path, rows)
    site = write_site(tmp_path / "site.toml", s, walltime="00:01:00")
    r = drover(s, "run", workload, "--site", site, "--workers", 2, "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["seconds"] > 75, f"the run must outlast the walltime (calibration off?): {summary['seconds']}"
    assert summary["tasks_retried"] == 0, summary
    assert summary["workers_drained"] >= 2, summary
    with h5py.File(tmp_path / "slow.h5") as f:
        got = f["s"][...]
    assert got.shape == (rows,) and np.isfinite(got).all()
    idx = np.random.default_rng(3).choice(rows, size=300, replace=False)
    np.testing.assert_allclose(got[idx], want(idx), rtol=1e-9)
    assert s.live_jobs() == []


def test_slurm_cancelled_job_and_killed_worker_are_replaced(system_env, tmp_path):
    """Mid-run, one worker's job is scancelled and another worker is killed -9: the pool
    submits replacements, their tasks run again, the result is exact, no job is left."""
    import h5py
    import os
    import signal as sig

    s = system_env("slurm")
    rows = _calibrated_rows(s, tmp_path, 40.0)
    workload, want = _slow_workload(tmp_path, rows)
    site = write_site(tmp_path / "site.toml", s)
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 3)
    try:
        st = wait_status(s, server, lambda st: len(st["workers"]) == 3)
        run = subprocess.Popen([str(drover_bin()), "run", str(workload), "--connect", str(server), "--json"], env=s.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        st = wait_status(s, server, lambda st: st["progress"] and st["progress"][0] > 20, timeout=60)
        victims = st["workers"][:2]
        assert s.run("scancel", victims[0]["batch_job"]).returncode == 0
        os.kill(victims[1]["pid"], sig.SIGKILL)
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        summary = json.loads(out)
        assert summary["tasks_retried"] >= 1 or summary["workers_lost"] >= 1, summary
        st = wait_status(s, server, lambda st: len(st["workers"]) == 3, timeout=60)
        lost = {l["pid"]: l for l in st["lost_workers"]}
        assert victims[1]["pid"] in lost and lost[victims[1]["pid"]]["reason"], f"status names the lost worker: {st['lost_workers']}"
        assert all(l["reason"] for l in st["lost_workers"])
        old = {v["batch_job"] for v in victims}
        assert len({w["batch_job"] for w in st["workers"]} - old) >= 2, "replacement jobs joined"
    finally:
        stop_server(s, server, proc)
    with h5py.File(tmp_path / "slow.h5") as f:
        got = f["s"][...]
    idx = np.random.default_rng(4).choice(rows, size=300, replace=False)
    np.testing.assert_allclose(got[idx], want(idx), rtol=1e-9)
    assert s.live_jobs() == []


def test_slurm_adaptive_pool_grows_on_a_burst_and_shrinks_when_idle(system_env, tmp_path):
    s = system_env("slurm")
    rows = _calibrated_rows(s, tmp_path, 30.0)
    workload, want = _slow_workload(tmp_path, rows)
    site = write_site(tmp_path / "site.toml", s)
    site.write_text(site.read_text() + "adapt = { min = 0, max = 3 }\n")
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 0)
    try:
        st = wait_status(s, server, lambda st: st["adapt"] == [0, 3])
        assert len(st["workers"]) == 0 and s.live_jobs() == [], "idle pool at min = 0"
        run = subprocess.Popen([str(drover_bin()), "run", str(workload), "--connect", str(server), "--json"], env=s.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_status(s, server, lambda st: len(st["workers"]) == 3, timeout=90)
        targets = []
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        import h5py

        with h5py.File(tmp_path / "slow.h5") as f:
            got = f["s"][...]
        idx = np.random.default_rng(5).choice(rows, size=200, replace=False)
        np.testing.assert_allclose(got[idx], want(idx), rtol=1e-9)
        # Idle now: the pool shrinks back to min after its cooldown, never growing meanwhile.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = status(s, server)
            targets.append(st["target"])
            if len(st["workers"]) == 0 and not s.live_jobs():
                break
            time.sleep(1)
        assert targets[-1] == 0 and len(st["workers"]) == 0, targets
        assert all(a >= b for a, b in zip(targets, targets[1:])), f"no oscillation while idle: {targets}"
    finally:
        stop_server(s, server, proc)
    assert s.live_jobs() == []


def test_workers_dial_the_sites_interface(system_env, tmp_path):
    s = system_env("slurm")
    workload, want = make_workload(tmp_path, np.random.default_rng(12))
    site = write_site(tmp_path / "site.toml", s, interface="lo")
    r = drover(s, "run", workload, "--site", site, "--workers", 1, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    check_outputs(tmp_path / "out.h5", want)
    bad = write_site(tmp_path / "bad.toml", s, interface="ib9")
    r = drover(s, "run", workload, "--site", bad, "--workers", 1)
    assert r.returncode == 2 and '"ib9"' in r.stderr and "lo" in r.stderr, r.stderr
    assert s.live_jobs() == []


def test_slurm_task_job_runs_every_index_once_beside_an_array_workload(system_env, tmp_path):
    """Task jobs on workers from real SLURM (issue 13): an array of 200 commands, each
    writing its index once, and a task job running while an array workload computes."""
    s = system_env("slurm")
    workload, want = make_workload(tmp_path, np.random.default_rng(13))
    site = write_site(tmp_path / "site.toml", s, cores=2)
    server = tmp_path / "srv"
    out = tmp_path / "out"
    out.mkdir()
    proc = start_server(s, server, site, 2)
    try:
        wait_status(s, server, lambda st: len(st["workers"]) == 2)
        r = drover(s, "submit", "--dir", server, "--array", "1-200", "--wait", "--",
                   "sh", "-c", f"echo $DROVER_TASK_ID >> {out}/{{task}}; echo $SLURM_JOB_ID")
        assert r.returncode == 0, r.stderr[-2000:]
        job = int(r.stdout.split()[0])
        files = sorted(out.iterdir(), key=lambda p: int(p.name))
        assert [p.name for p in files] == [str(i) for i in range(1, 201)]
        assert all(p.read_text() == f"{p.name}\n" for p in files), "every index ran exactly once"
        tasks = json.loads(drover(s, "tasks", job, "--dir", server, "--json").stdout)
        assert len(tasks) == 200 and all(t["state"] == "succeeded" and t["exit_code"] == 0 for t in tasks)
        # Each task's stdout log names the SLURM job its worker ran in.
        slurm_jobs = {(server / "jobs" / str(job) / f"{t['id']}.out").read_text().strip() for t in tasks}
        assert slurm_jobs and all(j.isdigit() for j in slurm_jobs), slurm_jobs

        r = drover(s, "submit", "--dir", server, "--array", "1-8", "--", "sleep", "1")
        assert r.returncode == 0, r.stderr
        sleeper = int(r.stdout.split()[0])
        r = drover(s, "run", workload, "--connect", server, "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        check_outputs(tmp_path / "out.h5", want)
        w = drover(s, "wait", sleeper, "--dir", server)
        assert w.returncode == 0, w.stderr
        jobs = {j["id"]: j for j in json.loads(drover(s, "jobs", "--dir", server, "--json").stdout)}
        assert jobs[sleeper]["state"] == "succeeded" and jobs[sleeper]["counts"]["succeeded"] == 8
        assert any(j["kind"] == "array" and j["state"] == "succeeded" for j in jobs.values())
    finally:
        r = stop_server(s, server, proc)
    assert r.returncode == 0, r.stderr
    assert s.wait_no_jobs() == [], "server stop leaves the queue empty"


def _dashboard_json(url: str, path: str) -> dict:
    """GET a dashboard path with its key as a Bearer token."""
    import urllib.parse
    import urllib.request

    u = urllib.parse.urlsplit(url)
    key = urllib.parse.parse_qs(u.query)["key"][0]
    req = urllib.request.Request(f"{u.scheme}://{u.netloc}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_slurm_pool_in_the_dashboard_jobs_turn_into_workers_and_tasks_flow(system_env, tmp_path):
    """The dashboard of a server with a real SLURM pool (issue 14): its batch jobs by
    state, the workers they became (each naming its job), tasks flowing; the
    metrics count the jobs by state; a browser sees it all."""
    import shutil

    s = system_env("slurm")
    site = write_site(tmp_path / "site.toml", s, cores=2)
    server = tmp_path / "srv"
    proc = start_server(s, server, site, 2)
    try:
        url = drover(s, "dashboard", "--dir", server).stdout.strip()
        assert url.startswith("http://127.0.0.1:"), url
        states: list[set[str]] = []
        deadline = time.monotonic() + 120
        while True:
            snap = _dashboard_json(url, "/api/snapshot")
            states.append({j["state"] for j in snap["pool"]["jobs"]})
            if len(snap["workers"]) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(snap["workers"]) == 2, f"workers: {snap['workers']}; pool states seen: {states}"
        pool = {j["id"]: j for j in snap["pool"]["jobs"]}
        assert len(pool) == 2 and all(j["state"] == "running" for j in pool.values()), pool
        assert {w["batch_job"] for w in snap["workers"]} == set(pool), "each worker names its SLURM job"
        assert set(pool) <= {j.split()[0] for j in s.live_jobs()}, "the jobs the dashboard shows are SLURM's"
        assert snap["pool"]["target"] == 2

        # 300 x 0.2 s on 4 slots: 15 s, so that the job still runs while the browser
        # (slow to start on a loaded machine) walks through the tabs to the task stream.
        r = drover(s, "submit", "--dir", server, "--array", "1-300", "--", "sleep", "0.2")
        assert r.returncode == 0, r.stderr
        job = int(r.stdout.split()[0])
        if shutil.which("node") and Path("/usr/bin/chromium").exists():
            shots = tmp_path / "shots"
            shots.mkdir()
            driver = Path(__file__).resolve().parent.parent / "e2e" / "browser" / "dashboard.mjs"
            p = subprocess.run(["node", str(driver), "live", url, str(shots)], capture_output=True, text=True,
                               timeout=180)
            lines = p.stdout.strip().splitlines()
            assert lines, f"the browser driver printed nothing (exit {p.returncode}): {p.stderr[-2000:]}"
            seen = json.loads(lines[-1])
            assert p.returncode == 0 and seen["ok"] and seen["workers"] == 2, (seen, p.stderr[-2000:])
        assert drover(s, "wait", job, "--dir", server).returncode == 0
        # Snapshots are published once a second: the one just after the end may not show it.
        deadline = time.monotonic() + 10
        while True:
            snap = _dashboard_json(url, "/api/snapshot")
            tasks = next(j for j in snap["jobs"] if j["id"] == job)
            if tasks["counts"]["succeeded"] == 300 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert tasks["counts"]["succeeded"] == 300 and sum(w["tasks_done"] for w in snap["workers"]) >= 300
        stream = _dashboard_json(url, "/api/stream?since=0")
        assert sum(1 for b in stream["bars"] if b["job"] == job) == 300
        assert {b["worker"] for b in stream["bars"]} == {w["id"] for w in snap["workers"]}, "both workers ran tasks"

        import urllib.parse
        import urllib.request
        u = urllib.parse.urlsplit(url)
        key = urllib.parse.parse_qs(u.query)["key"][0]
        req = urllib.request.Request(f"http://{u.netloc}/metrics", headers={"Authorization": f"Bearer {key}"})
        metrics = urllib.request.urlopen(req, timeout=10).read().decode()
        assert 'drover_batch_jobs{state="running"} 2' in metrics, [l for l in metrics.splitlines() if "batch" in l]
    finally:
        r = stop_server(s, server, proc)
    assert r.returncode == 0, r.stderr
    assert s.wait_no_jobs() == []


def test_slurm_worker_whose_job_ended_is_lost_at_once_not_after_the_idle_timeout(system_env, tmp_path):
    """A worker killed outright sends no goodbye, and its connection would time out only
    after 30 s; its SLURM job ends with it, and the next poll of the batch system tells
    the server: the worker is lost then (reason: its batch job ended), its tasks run
    elsewhere, and every task succeeds. (A lost worker's commands run again: at least
    once. This testbed's SLURM tracks processes with proctrack/linuxproc, so the
    killed worker's commands, orphaned, may finish too; with cgroups they die with
    the job.) The workers dial QUIC, as on a compute node: this testbed's nodes are
    the server's host, where the Unix link would tell the server at once."""
    import os
    import signal as sig

    s = system_env("slurm")
    site = write_site(tmp_path / "site.toml", s, cores=2, transport="quic")
    server = tmp_path / "srv"
    out = tmp_path / "out"
    out.mkdir()
    proc = start_server(s, server, site, 2)
    try:
        wait_status(s, server, lambda st: len(st["workers"]) == 2)
        r = drover(s, "submit", "--dir", server, "--array", "1-8", "--", "sh", "-c",
                   f"sleep 4; echo $DROVER_TASK_ID >> {out}/{{task}}")
        assert r.returncode == 0, r.stderr
        job = int(r.stdout.split()[0])
        st = wait_status(s, server, lambda st: sum(w["assigned"] for w in st["workers"]) >= 4, timeout=60)
        victim = next(w for w in st["workers"] if w["assigned"] > 0)
        os.kill(victim["pid"], sig.SIGKILL)
        st = wait_status(s, server, lambda st: any(l["pid"] == victim["pid"] for l in st["lost_workers"]), timeout=25)
        lost = next(l for l in st["lost_workers"] if l["pid"] == victim["pid"])
        assert f"batch job {victim['batch_job']} ended" in lost["reason"], lost
        assert lost["tasks_requeued"] >= 1 and lost["batch_job"] == victim["batch_job"], lost
        assert victim["id"] not in {w["id"] for w in st["workers"]}
        w = drover(s, "wait", job, "--dir", server, timeout=180)
        assert w.returncode == 0, w.stderr
        files = sorted(out.iterdir(), key=lambda p: int(p.name))
        assert [p.name for p in files] == [str(i) for i in range(1, 9)]
        assert all(set(p.read_text().split()) == {p.name} for p in files), "each task ran, as itself"
        tasks = json.loads(drover(s, "tasks", job, "--dir", server, "--json").stdout)
        assert all(t["state"] == "succeeded" for t in tasks) and len(tasks) == 8
    finally:
        r = stop_server(s, server, proc)
    assert r.returncode == 0, r.stderr
    assert s.wait_no_jobs() == []


def test_slurm_job_of_a_frozen_worker_is_cancelled_through_slurm_and_replaced(system_env, tmp_path):
    """A worker frozen with SIGSTOP (a hung node: no heartbeats, and it cannot obey an
    order to exit) is declared lost once it has been silent too long; its tasks run
    elsewhere, and once no worker of its SLURM job has come back within the grace
    period, the server cancels that job with scancel and the pool submits a new one:
    the frozen process is gone, every task succeeded once, and no job is left."""
    import os
    import signal as sig

    s = system_env("slurm")
    site = write_site(tmp_path / "site.toml", s, cores=2)
    server = tmp_path / "srv"
    out = tmp_path / "out"
    out.mkdir()
    proc = start_server(s, server, site, 2)
    victim = None
    try:
        st = wait_status(s, server, lambda st: len(st["workers"]) == 2)
        r = drover(s, "submit", "--dir", server, "--array", "1-12", "--", "sh", "-c",
                   f"sleep 3; echo $DROVER_TASK_ID >> {out}/{{task}}")
        assert r.returncode == 0, r.stderr
        job = int(r.stdout.split()[0])
        st = wait_status(s, server, lambda st: all(w["assigned"] > 0 for w in st["workers"]), timeout=60)
        victim = st["workers"][0]
        os.kill(victim["pid"], sig.SIGSTOP)
        st = wait_status(s, server, lambda st: any(l["pid"] == victim["pid"] for l in st["lost_workers"]), timeout=60)
        lost = next(l for l in st["lost_workers"] if l["pid"] == victim["pid"])
        # Its connection times out (the site's death timeout of 20 s gives a 10 s idle
        # timeout) before the server's heartbeat timeout of 30 s.
        assert lost["reason"] and lost["batch_job"] == victim["batch_job"], lost
        # Nothing else ends that job (10 minutes of walltime): only the server's scancel.
        st = wait_status(s, server, lambda st: any(j["id"] == victim["batch_job"] and j["abandoned"]
                                                   for j in st["jobs"]), timeout=40)
        wait_status(s, server, lambda st: not any(l.split()[0] == victim["batch_job"] for l in s.live_jobs()), timeout=60)
        st = wait_status(s, server, lambda st: len(st["workers"]) == 2
                         and victim["batch_job"] not in {w["batch_job"] for w in st["workers"]}, timeout=90)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{victim['pid']}").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not Path(f"/proc/{victim['pid']}").exists(), "SLURM killed the frozen worker with its job"
        w = drover(s, "wait", job, "--dir", server, timeout=180)
        assert w.returncode == 0, w.stderr
        tasks = json.loads(drover(s, "tasks", job, "--dir", server, "--json").stdout)
        assert len(tasks) == 12 and all(t["state"] == "succeeded" for t in tasks), tasks
        files = sorted(out.iterdir(), key=lambda p: int(p.name))
        assert [p.name for p in files] == [str(i) for i in range(1, 13)]
    finally:
        if victim is not None and Path(f"/proc/{victim['pid']}").exists():
            os.kill(victim["pid"], sig.SIGKILL)
        r = stop_server(s, server, proc)
    assert r.returncode == 0, r.stderr
    assert s.wait_no_jobs() == []
