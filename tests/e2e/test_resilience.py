"""Faults on real processes: a worker killed mid-run, the run itself killed and resumed,
a changed input detected. numpy + h5py check every result."""

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

from conftest import (child_env, kill_group, kill_marked, marked_pids, new_mark, run_drover, spawn_logged, wait_for_access,
                      wait_marked_gone)

# Much compute from little data: (rows, 1) x (1, cols) broadcast, reduced per row.
EXPR = "sum(sin(a * b) ** 2 + cos(a + b) * exp(-a * b), axis=1)"


def make_slow(tmp: Path, rows: int, cols: int = 20000, scale: float = 1.0, compression: str | None = None) -> Path:
    a = np.linspace(0.1, 1.0, rows).reshape(rows, 1) * scale
    b = np.linspace(1.0, 2.0, cols).reshape(1, cols)
    with h5py.File(tmp / "bc.h5", "w") as f:
        f.create_dataset("a", data=a, chunks=(20, 1) if compression else None, compression=compression)
        f.create_dataset("b", data=b, chunks=(1, 1000) if compression else None, compression=compression)
    w = tmp / "slow.toml"
    w.write_text(
        '[inputs.a]\nfile = "bc.h5"\ndataset = "/a"\nchunks = [20, 1]\n'
        '[inputs.b]\nfile = "bc.h5"\ndataset = "/b"\n'
        f'[[outputs]]\nexpr = "{EXPR}"\nfile = "slow.h5"\ndataset = "/s"\n'
    )
    return w


def oracle(tmp: Path) -> np.ndarray:
    with h5py.File(tmp / "bc.h5") as f:
        a, b = f["a"][...], f["b"][...]
    out = np.empty(a.shape[0])
    for i in range(0, a.shape[0], 500):
        ai = a[i : i + 500]
        out[i : i + 500] = (np.sin(ai * b) ** 2 + np.cos(ai + b) * np.exp(-ai * b)).sum(axis=1)
    return out


def rows_for(drover: Path, tmp: Path, seconds: float) -> int:
    """Calibrate: rows of the slow workload that take about `seconds` here."""
    cal = tmp / "cal"
    cal.mkdir()
    w = make_slow(cal, 1000)
    r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    per_row = max(r.json()["seconds"], 0.01) / 1000
    return max(int(seconds / per_row) // 20 * 20, 2000)


def lock_holders(path: Path) -> list[str]:
    """The file locks (/proc/locks) held on `path`, each with its owner's state."""
    st = path.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    with open("/proc/locks") as fh:
        for line in fh:
            f = line.split()
            if len(f) > 5 and f[5] == dev:
                try:
                    with open(f"/proc/{f[4]}/stat") as s:
                        who = s.read().rsplit(")", 1)[0] + ")"
                except OSError:
                    who = "gone"
                found.append(f"{' '.join(f[1:5])} ({who})")
    return found


def wait_unlocked(path: Path, timeout: float) -> None:
    """Until nobody holds a lock on `path` (a process still exiting may), or fail
    naming the holders."""
    deadline = time.monotonic() + timeout
    while holders := lock_holders(path):
        assert time.monotonic() < deadline, f"{path} is still locked {timeout} s after its readers ended: {holders}"
        time.sleep(0.05)


def wait_for_journal_records(journal: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the running `proc` has durably recorded some results in `journal`
    (the file grows past its header line), so that killing it leaves work to resume."""
    header = len(b"DROVER-JOURNAL 1\n") + 64 + 1
    deadline = time.monotonic() + timeout
    while not (journal.exists() and journal.stat().st_size > header + 64):
        assert proc.poll() is None, "the run ended before recording anything"
        assert time.monotonic() < deadline, "no results were journaled"
        time.sleep(0.05)


def kill_once_journaled(args: list[str], journal: Path, out: Path) -> None:
    """Run `args` (a drover command line), SIGKILL it once it has journaled results,
    and check what a killed run leaves: no output, its journal, and none of its
    processes (orphaned workers exit on their own within their death timeout)."""
    mark = new_mark()
    proc = subprocess.Popen(args, env=child_env(mark), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_journal_records(journal, proc)
        assert proc.poll() is None, "the run must still be going when it is killed"
        workers = marked_pids(mark)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not out.exists(), "no final output from a killed run"
        assert journal.exists()
        survivors = wait_marked_gone(mark, 40.0, known=workers)
        assert survivors == [], f"workers outlived their death timeout: {survivors}"
    finally:
        kill_group(proc)
        kill_marked(mark)


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def run_with_three_workers(drover: Path, tmp: Path, mark: str) -> subprocess.Popen:
    """`drover run slow.toml --workers 3 --json`, returned once its three workers run
    and results are being recorded (every worker holds queued tasks then)."""
    w = make_slow(tmp, rows_for(drover, tmp, 8.0))
    proc = subprocess.Popen([str(drover), "run", str(w), "--workers", "3", "--json"], env=child_env(mark),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 20
    while len(children_of(proc.pid)) < 3:
        if time.monotonic() > deadline or proc.poll() is not None:
            kill_group(proc)
            raise AssertionError("workers did not start")
        time.sleep(0.05)
    wait_for_journal_records(tmp / ".slow.h5.drover-journal", proc)
    return proc


def test_a_worker_killed_mid_run_is_replaced_by_the_others(drover, tmp_path):
    mark = new_mark()
    proc = run_with_three_workers(drover, tmp_path, mark)
    try:
        victim = children_of(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
        kill_marked(mark)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["tasks_retried"] >= 1, f"the killed worker's tasks ran again: {summary}"
    assert summary["workers_lost"] >= 1, summary
    with h5py.File(tmp_path / "slow.h5") as f:
        np.testing.assert_allclose(f["s"][...], oracle(tmp_path), rtol=1e-9)


def test_workers_draining_before_their_walltime_lose_nothing(drover, tmp_path):
    """Two workers with a 20 s walltime drain 10 s in, while tasks stream to them, and a
    third carries on: they hand back what they hold, leave before their walltime, and no
    task runs twice (a task on its way to a draining worker is handed back too)."""
    rows = rows_for(drover, tmp_path, 22.0)
    w = make_slow(tmp_path, rows)
    mark = new_mark()
    env = child_env(mark)
    srv = tmp_path / "srv"
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn(name: str, args: list) -> subprocess.Popen:
        return spawn_logged(drover, args, logs, name, env)

    server = spawn("server", ["server", "start", "--dir", srv])
    procs = [server]
    try:
        access = wait_for_access(server, srv, logs)
        started = time.monotonic()
        draining = [spawn(f"drain{i}", ["worker", "--access", access, "--threads", 1, "--walltime", 20]) for i in range(2)]
        steady = spawn("steady", ["worker", "--access", access, "--threads", 2])
        procs += [*draining, steady]
        run = subprocess.Popen([str(drover), "run", str(w), "--connect", str(srv), "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(run)
        left: dict[int, float] = {}
        while run.poll() is None and time.monotonic() - started < 300:
            for i, p in enumerate(draining):
                if i not in left and p.poll() is not None:
                    left[i] = time.monotonic() - started
            time.sleep(0.1)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err[-3000:]
        summary = json.loads(out)
        assert summary["seconds"] > 11, f"the run must outlast the drain at 10 s (calibration off?): {summary}"
        for i, p in enumerate(draining):
            assert p.wait(timeout=30) == 0, (logs / f"drain{i}.err").read_text()[-3000:]
        assert sorted(left) == [0, 1] and max(left.values()) < 19, f"the draining workers left at {left} s, walltime 20 s"
        assert steady.poll() is None, "the worker without a walltime left"
        assert summary["workers_drained"] == 2, summary
        assert summary["tasks_retried"] == 0, summary
        assert summary["workers_lost"] == 0, summary
        with h5py.File(tmp_path / "slow.h5") as f:
            np.testing.assert_allclose(f["s"][...], oracle(tmp_path), rtol=1e-9)
        stop = run_drover(drover, ["server", "stop", "--dir", srv])
        assert stop.rc == 0, stop.describe()
        assert server.wait(timeout=30) == 0
    finally:
        for p in procs:
            kill_group(p)
        kill_marked(mark)


def test_a_killed_run_leaves_no_output_and_resumes(drover, tmp_path):
    rows = rows_for(drover, tmp_path, 10.0)
    w = make_slow(tmp_path, rows)
    journal = tmp_path / ".slow.h5.drover-journal"
    kill_once_journaled([str(drover), "run", str(w), "--workers", "2", "--json"], journal, tmp_path / "slow.h5")
    r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    summary = r.json()
    assert summary["tasks_resumed"] > 0, summary
    assert summary["tasks_resumed"] < summary["tasks_total"], summary
    assert summary["tasks_retried"] == 0
    with h5py.File(tmp_path / "slow.h5") as f:
        np.testing.assert_allclose(f["s"][...], oracle(tmp_path), rtol=1e-9)
    assert not journal.exists() and not list(tmp_path.glob(".slow.h5.drover-tmp")), "journal and temp removed on success"


@pytest.mark.parametrize("change", ["input", "expression"])
def test_a_changed_workload_or_input_starts_fresh(drover, tmp_path, change):
    rows = rows_for(drover, tmp_path, 8.0)
    w = make_slow(tmp_path, rows)
    mark = new_mark()
    proc = subprocess.Popen([str(drover), "run", str(w), "--workers", "2"], env=child_env(mark),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_journal_records(tmp_path / ".slow.h5.drover-journal", proc)
        workers = marked_pids(mark)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # every worker gone, its HDF5 file lock with it, before bc.h5 is rewritten
        assert wait_marked_gone(mark, 40.0, known=workers) == []
    finally:
        kill_group(proc)
        kill_marked(mark)
    assert (tmp_path / ".slow.h5.drover-journal").exists()
    if change == "input":
        before = (tmp_path / "bc.h5").stat().st_mtime_ns
        wait_unlocked(tmp_path / "bc.h5", 10.0)
        make_slow(tmp_path, rows, scale=1.5)  # same shape, new values and mtime
        st = (tmp_path / "bc.h5").stat()
        if st.st_mtime_ns == before:  # a coarse clock: make the change visible
            os.utime(tmp_path / "bc.h5", ns=(st.st_atime_ns, before + 1_000_000))
    else:
        w.write_text(w.read_text().replace("cos(a + b)", "cos(a - b)"))
    r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    assert r.json()["tasks_resumed"] == 0, "stale results must not be mixed in"
    with h5py.File(tmp_path / "bc.h5") as f:
        a, b = f["a"][...], f["b"][...]
    with h5py.File(tmp_path / "slow.h5") as f:
        got = f["s"][...]
    idx = np.arange(0, rows, max(rows // 200, 1))
    ai = a[idx]
    inner = np.cos(ai + b) if change == "input" else np.cos(ai - b)
    np.testing.assert_allclose(got[idx], (np.sin(ai * b) ** 2 + inner * np.exp(-ai * b)).sum(axis=1), rtol=1e-9)


def error_lines(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if l.startswith("error: ")]


def disturb_mid_run(drover: Path, w: Path, action, env: dict | None = None, timeout: float = 60.0):
    """Start `drover run W --workers 2`, wait until it has journaled results, call
    `action(proc)`, and wait for the run to end and its processes to go (they are
    killed in any case). Returns (exit code, stderr, processes still alive after 15 s)."""
    mark = new_mark()
    proc = subprocess.Popen([str(drover), "run", str(w), "--workers", "2"], env=child_env(mark, env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_journal_records(w.parent / ".slow.h5.drover-journal", proc)
        action(proc)
        _, err = proc.communicate(timeout=timeout)
        survivors = wait_marked_gone(mark, 15.0)
    finally:
        kill_group(proc)
        kill_marked(mark)
    return proc.returncode, err, survivors


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_stops_its_workers_and_removes_its_files(drover, tmp_path, sig):
    """`timeout`, `kill` or Ctrl-C on `drover run`: the embedded cluster's workers stop,
    its private folder (in TMPDIR) is removed, no final output appears, and the journal
    stays for a resume."""
    rows = rows_for(drover, tmp_path, 10.0)
    w = make_slow(tmp_path, rows)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    journal = tmp_path / ".slow.h5.drover-journal"

    def interrupt(proc):
        assert [p.name for p in tmp.iterdir()] != [], "the embedded server keeps its folder in TMPDIR"
        os.kill(proc.pid, sig)

    rc, err, survivors = disturb_mid_run(drover, w, interrupt, env={"TMPDIR": str(tmp)}, timeout=30)
    assert rc == 1, f"exit code {rc} after {sig.name}\n{err[-3000:]}"
    assert "panicked" not in err, err[-3000:]
    errors = error_lines(err)
    assert errors and sig.name in errors[-1], f"no error line naming {sig.name}:\n{err[-3000:]}"
    assert survivors == [], f"processes left after {sig.name}: {survivors}"
    assert list(tmp.iterdir()) == [], f"left in TMPDIR: {list(tmp.iterdir())}"
    assert not (tmp_path / "slow.h5").exists(), "no final output from an interrupted run"
    assert journal.exists(), "the journal stays for a resume"


def test_a_run_killed_with_sigkill_takes_its_workers_along_and_the_next_run_sweeps_its_folder(drover, tmp_path):
    """SIGKILL on `drover run` (nothing can run in it): its embedded workers get SIGTERM
    from the kernel as their parent dies (not after their death timeout of 10 s), and
    the private folder it could not remove is removed by the next run."""
    rows = rows_for(drover, tmp_path, 10.0)
    w = make_slow(tmp_path, rows)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    killed_at = []

    def kill(proc):
        assert len(children_of(proc.pid)) == 2, "two embedded workers"
        killed_at.append(time.monotonic())
        os.kill(proc.pid, signal.SIGKILL)

    mark = new_mark()
    proc = subprocess.Popen([str(drover), "run", str(w), "--workers", "2"], env=child_env(mark, {"TMPDIR": str(tmp)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_journal_records(w.parent / ".slow.h5.drover-journal", proc)
        workers = children_of(proc.pid)
        kill(proc)
        proc.wait(timeout=10)
        survivors = wait_marked_gone(mark, 4.0)
        gone_after = time.monotonic() - killed_at[0]
    finally:
        kill_group(proc)
        kill_marked(mark)
    assert survivors == [], f"workers {workers} still alive {gone_after:.1f} s after their parent was killed"
    left = [p.name for p in tmp.iterdir()]
    assert len(left) == 1 and left[0].startswith("drover-"), f"the killed run's folder: {left}"
    # the next run (any workload) removes it, and its own
    x = tmp_path / "next"
    x.mkdir()
    with h5py.File(x / "x.h5", "w") as f:
        f["x"] = np.arange(10.0)
    (x / "w.toml").write_text('[inputs.x]\nfile = "x.h5"\ndataset = "/x"\n[[outputs]]\nexpr = "sum(x)"\nfile = "o.h5"\ndataset = "/s"\n')
    r = run_drover(drover, ["run", x / "w.toml"], env={"TMPDIR": str(tmp)})
    assert r.rc == 0, r.describe()
    assert list(tmp.iterdir()) == [], f"left in TMPDIR after the next run: {list(tmp.iterdir())}"


@pytest.mark.parametrize("compression", [None, "gzip"], ids=["mapped", "gzip"])
def test_an_input_truncated_during_a_run_fails_it_with_a_clear_error(drover, tmp_path, compression):
    """Someone truncates (or rewrites) an input while a run reads it: the run stops with
    one error line naming the file and what changed, writes no output, and leaves no
    process behind; mapped reads must not turn into a crash loop."""
    rows = rows_for(drover, tmp_path, 10.0)
    w = make_slow(tmp_path, rows, compression=compression)
    src = tmp_path / "bc.h5"
    size = src.stat().st_size
    rc, err, survivors = disturb_mid_run(drover, w, lambda proc: os.truncate(src, 4096))
    assert rc == 1, f"exit code {rc}\n{err[-3000:]}"
    assert "panicked" not in err, err[-3000:]
    errors = error_lines(err)
    assert errors, f"no error line:\n{err[-3000:]}"
    line = errors[-1]
    assert "changed during the run" in line and str(src) in line, line
    assert f"was {size} bytes" in line and "now 4096 bytes" in line, line
    assert survivors == [], f"processes left: {survivors}"
    assert not (tmp_path / "slow.h5").exists(), "no final output from a failed run"


def test_a_worker_stopped_with_sigstop_is_declared_lost_and_its_tasks_run_elsewhere(
        drover, tmp_path):
    """A hung worker (issue 16, item 4): SIGSTOP freezes one of three workers mid-run,
    heartbeats included. The server declares it lost after the heartbeat timeout, its
    tasks run on the others, and the result is exact; the run takes the stuck worker
    along at its end (one still there is resumed with SIGCONT and must leave)."""
    mark = new_mark()
    proc = run_with_three_workers(drover, tmp_path, mark)
    victim = None
    try:
        victim = children_of(proc.pid)[0]
        os.kill(victim, signal.SIGSTOP)
        # The run ends without the frozen worker: after the heartbeat timeout its tasks
        # are handed to the others.
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=150)
        print(f"run ended {time.monotonic() - t0:.1f} s after the SIGSTOP: {out.strip()[:400]}")
        # An embedded run takes its workers along at its end (SIGKILL reaches a stopped
        # process); one still there is resumed and must leave by itself.
        if Path(f"/proc/{victim}").exists():
            os.kill(victim, signal.SIGCONT)
            deadline = time.monotonic() + 20
            while Path(f"/proc/{victim}").exists() and open(f"/proc/{victim}/stat").read().split(")")[1].split()[0] != "Z":
                assert time.monotonic() < deadline, "the resumed worker did not exit"
                time.sleep(0.1)
    finally:
        if victim is not None:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        kill_group(proc)
        kill_marked(mark)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["workers_lost"] >= 1 and summary["tasks_retried"] >= 1, summary
    with h5py.File(tmp_path / "slow.h5") as f:
        np.testing.assert_allclose(f["s"][...], oracle(tmp_path), rtol=1e-9)
