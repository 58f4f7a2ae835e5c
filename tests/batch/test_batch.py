"""drover through real SLURM and SGE and the PBS/Torque/LSF/HTCondor emulators."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SYSTEMS, check_outputs, drover, drover_bin, make_workload, start_server, stop_server, wait_status, write_site


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
