"""A memory bound per worker (issue 12 items 1, 2 and 7): plans sized to
--memory-per-worker, every worker's measured peak RSS within it on data four times
larger, plans that cannot fit refused with their numbers, output chunks (a rechunk)
that resumes after a kill, and --explain."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import (assert_refused, child_env, kill_group, kill_marked, new_mark, run_drover, spawn_logged, to_toml,
                      wait_for_access)
from test_resilience import kill_once_journaled

MiB = 1 << 20
BOUND = 150 * MiB
SHAPE = (640, 360, 360)  # 663 MB of f64, one time step per HDF5 chunk


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A file 4.2x larger than BOUND, written one time step per chunk."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(7)
    t = rng.normal(280.0, 5.0, size=SHAPE)
    t[rng.random(SHAPE) < 0.001] = np.nan
    assert t.nbytes >= 4 * BOUND
    with h5py.File(d / "in.h5", "w") as f:
        f.create_dataset("t", data=t, chunks=(1, SHAPE[1], SHAPE[2]))
    return d, t


def workload(d: Path, outputs: list[dict], name: str = "w.toml", chunks: list[int] | None = None) -> Path:
    t = {"file": "in.h5", "dataset": "t"}
    if chunks:
        t["chunks"] = chunks
    w = d / name
    w.write_text(to_toml({"inputs": {"t": t}, "outputs": outputs}))
    return w


def assert_within(summary: dict, bound: int, workers: int) -> None:
    peaks = summary["workers_peak_rss_bytes"]
    assert len(peaks) == workers, summary
    assert all(0 < p <= bound for p in peaks), f"peak RSS {[p / MiB for p in peaks]} MiB over the bound {bound / MiB} MiB"


def test_a_median_over_time_and_a_rechunk_of_data_4x_the_bound_stay_within_it(drover, big, tmp_path):
    d, t = big
    w = workload(d, [
        {"expr": "nanmedian(t, axis=0)", "file": str(tmp_path / "med.h5"), "dataset": "m"},
        {"expr": "t", "file": str(tmp_path / "ts.h5"), "dataset": "t", "chunks": [640, 8, 8]},
    ])
    r = run_drover(drover, ["run", str(w), "--workers", "2", "--memory-per-worker", f"{BOUND}", "--json"], timeout=600)
    assert r.rc == 0, r.describe()
    summary = r.json()
    assert_within(summary, BOUND, 2)
    with h5py.File(tmp_path / "med.h5") as f:
        np.testing.assert_array_equal(f["m"][...], np.nanmedian(t, axis=0))
    with h5py.File(tmp_path / "ts.h5") as f:
        assert f["t"].chunks == (640, 8, 8)
        for i in range(0, SHAPE[1], 90):
            np.testing.assert_array_equal(f["t"][:, i : i + 90], t[:, i : i + 90])


def test_the_planner_makes_blocks_smaller_under_a_smaller_bound(drover, big):
    d, _ = big
    w = workload(d, [{"expr": "t - nanmean(t, axis=0)", "file": "a.h5", "dataset": "a"}], name="plan.toml")
    plans = {}
    for bound in ("8 GiB", "150 MiB"):
        r = run_drover(drover, ["run", str(w), "--workers", "2", "--memory-per-worker", bound, "--explain", "--json"])
        assert r.rc == 0, r.describe()
        plans[bound] = r.json()
        mem = plans[bound]["memory"]
        assert mem["per_worker_bytes"] <= mem["bound_bytes"], mem
        assert bound in mem["bound_source"], mem
    tasks = {b: sum(s["tasks"] for s in p["stages"]) for b, p in plans.items()}
    assert tasks["150 MiB"] > tasks["8 GiB"], tasks
    assert not (d / "a.h5").exists(), "--explain runs nothing"


def test_explain_shows_stages_tasks_bytes_and_memory_against_the_bound(drover, big):
    d, t = big
    w = workload(d, [{"expr": "median(t, axis=0)", "file": "m.h5", "dataset": "m"}], name="explain.toml")
    r = run_drover(drover, ["run", str(w), "--workers", "2", "--memory-per-worker", "1 GiB", "--explain"])
    assert r.rc == 0, r.describe()
    lines = r.stdout.splitlines()
    assert lines[0].startswith("plan: 1 stage on the workers"), r.stdout
    assert "task peak" in lines[1] and "reads" in lines[1], r.stdout
    assert 'outputs[0] ("median(t, axis=0)")' in lines[2], r.stdout
    # The median reads the whole input once.
    assert f"{t.nbytes / MiB:.1f} MiB" in lines[2], r.stdout
    assert lines[-1].startswith("memory per worker: base") and "bound 1024.0 MiB (--memory-per-worker 1 GiB): fits" in lines[-1], r.stdout
    assert not (d / "m.h5").exists(), "--explain runs nothing"
    j = run_drover(drover, ["run", str(w), "--workers", "2", "--memory-per-worker", "1 GiB", "--explain", "--json"]).json()
    [stage] = j["stages"]
    assert stage["read_bytes"] == t.nbytes and stage["tasks"] >= 1, stage
    assert 0 < stage["task_peak_bytes"] <= j["memory"]["per_thread_bytes"] <= j["memory"]["per_worker_bytes"], j


@pytest.mark.parametrize(
    "args, chunks, quoted",
    [
        (["--memory-per-worker", "80MB"], None, ["needs", "per worker, more than the bound of 76.3 MiB", "--memory-per-worker 80MB"]),
        # The whole input as one block: no smaller blocks to make.
        (["--memory-per-worker", "600MB"], [640, 360, 360], ["more than the bound of 572.2 MiB", "smaller chunks="]),
    ],
)
def test_plans_that_cannot_fit_are_refused_with_their_numbers(drover, big, tmp_path, args, chunks, quoted):
    d, _ = big
    w = workload(d, [{"expr": "t * 2", "file": str(tmp_path / "o.h5"), "dataset": "o"}], name="refuse.toml", chunks=chunks)
    r = run_drover(drover, ["run", str(w), "--workers", "2", *args])
    line = assert_refused(r, quoted, tmp_path / "o.h5")
    assert "MiB" in line and "thread" in line, line


@pytest.mark.parametrize(
    "value, quoted",
    [("lots", ["'lots'", "--memory-per-worker", 'like "64 GiB"']), ("5 parsecs", ["'5 parsecs'", 'unknown unit "parsecs"'])],
)
def test_a_bad_memory_size_is_refused(drover, big, value, quoted):
    d, _ = big
    w = workload(d, [{"expr": "t", "file": "x.h5", "dataset": "x"}], name="size.toml")
    r = run_drover(drover, ["run", str(w), "--memory-per-worker", value])
    assert r.rc == 2, r.describe()
    assert all(q in r.stderr for q in quoted), r.stderr
    assert not (d / "x.h5").exists()


@pytest.mark.parametrize(
    "chunks, quoted",
    [([0, 8, 8], ["chunks = [0, 8, 8]", "positive"]), ([8, 8], ["chunks = [8, 8]", "(640, 360, 360)", "one chunk length per dimension"])],
)
def test_bad_output_chunks_are_refused(drover, big, tmp_path, chunks, quoted):
    d, _ = big
    w = workload(d, [{"expr": "t", "file": str(tmp_path / "c.h5"), "dataset": "c", "chunks": chunks}], name="chunks.toml")
    assert_refused(run_drover(drover, ["run", str(w)]), quoted, tmp_path / "c.h5")


def test_a_killed_rechunk_resumes_from_its_temporary_file(drover, big, tmp_path):
    d, t = big
    out = tmp_path / "ts.h5"
    w = workload(d, [{"expr": "t", "file": str(out), "dataset": "t", "chunks": [640, 4, 360], "compression": "gzip"}], name="resume.toml")
    args = [str(drover), "run", str(w), "--workers", "1", "--threads", "1", "--memory-per-worker", f"{BOUND}", "--json"]
    journal = tmp_path / ".ts.h5.drover-journal"
    kill_once_journaled(args, journal, out)
    r = run_drover(drover, args[1:], timeout=600)
    assert r.rc == 0, r.describe()
    summary = r.json()
    assert 0 < summary["tasks_resumed"] < summary["tasks_total"], summary
    assert_within(summary, BOUND, 1)
    with h5py.File(out) as f:
        assert f["t"].chunks == (640, 4, 360) and f["t"].compression == "gzip"
        for i in range(0, SHAPE[1], 90):
            np.testing.assert_array_equal(f["t"][:, i : i + 90], t[:, i : i + 90])
    assert not journal.exists() and not list(tmp_path.glob(".ts.h5.drover-tmp*"))


def test_a_worker_with_its_own_bound_runs_fewer_tasks_at_once(drover, big, tmp_path):
    """A server without a bound plans 64 MiB blocks; a worker of 2 threads told
    --memory-per-worker 300MB runs one task at a time, says so, and stays within it."""
    d, t = big
    w = workload(d, [{"expr": "t * 2", "file": str(tmp_path / "o.h5"), "dataset": "o"}], name="own.toml")
    mark = new_mark()
    env = {**child_env(mark), "DROVER_LOG": "info"}
    srv, logs = tmp_path / "srv", tmp_path / "logs"
    logs.mkdir()
    procs = [spawn_logged(drover, ["server", "start", "--dir", srv], logs, "server", env)]
    try:
        access = wait_for_access(procs[0], srv, logs)
        procs.append(spawn_logged(drover, ["worker", "--access", access, "--threads", 2, "--memory-per-worker", "300MB"],
                                  logs, "worker", env))
        r = run_drover(drover, ["run", str(w), "--connect", str(srv), "--json"], timeout=300)
        assert r.rc == 0, r.describe()
        assert_within(r.json(), 300_000_000, 1)
        log = (logs / "worker.err").read_text()
        assert "running fewer tasks at once to stay within --memory-per-worker" in log and "tasks=1" in log, log[-3000:]
        with h5py.File(tmp_path / "o.h5") as f:
            np.testing.assert_array_equal(f["o"][::50], t[::50] * 2)
        assert run_drover(drover, ["server", "stop", "--dir", srv]).rc == 0
    finally:
        for p in procs:
            kill_group(p)
        kill_marked(mark)
