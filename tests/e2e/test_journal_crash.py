"""Crash consistency of the run journal (issue 16): a run killed at many points of its
writing, torn and corrupted journal records, each time resumed by the same command;
the final result is exact (numpy is the oracle)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np

from conftest import child_env, kill_group, kill_marked, new_mark, run_drover, wait_marked_gone
from test_resilience import EXPR, oracle, rows_for

HEADER = len(b"DROVER-JOURNAL 1\n") + 64 + 1


def make_two_outputs(tmp: Path, rows: int, cols: int = 20000) -> Path:
    """The slow workload with a second output: a full reduction, whose partials are
    journaled as they arrive (the first output's blocks are journaled once written)."""
    a = np.linspace(0.1, 1.0, rows).reshape(rows, 1)
    b = np.linspace(1.0, 2.0, cols).reshape(1, cols)
    with h5py.File(tmp / "bc.h5", "w") as f:
        f.create_dataset("a", data=a)
        f.create_dataset("b", data=b)
    w = tmp / "slow.toml"
    w.write_text(
        '[inputs.a]\nfile = "bc.h5"\ndataset = "/a"\nchunks = [20, 1]\n'
        '[inputs.b]\nfile = "bc.h5"\ndataset = "/b"\n'
        f'[[outputs]]\nexpr = "{EXPR}"\nfile = "slow.h5"\ndataset = "/s"\n'
        '[[outputs]]\nexpr = "sum(cos(a * b) ** 2)"\nfile = "slow.h5"\ndataset = "/total"\n'
    )
    return w


def check_exact(tmp: Path) -> None:
    with h5py.File(tmp / "bc.h5") as f:
        a, b = f["a"][...], f["b"][...]
    with h5py.File(tmp / "slow.h5") as f:
        np.testing.assert_allclose(f["s"][...], oracle(tmp), rtol=1e-9)
        total = sum(float((np.cos(a[i : i + 500] * b) ** 2).sum()) for i in range(0, a.shape[0], 500))
        np.testing.assert_allclose(f["total"][()], total, rtol=1e-9)


def run_and_kill(drover: Path, w: Path, after: float) -> int:
    """Start the run, SIGKILL it and its workers `after` seconds after its journal
    first holds a record (or at once with `after` < 0); returns the journal's size."""
    journal = w.parent / ".slow.h5.drover-journal"
    mark = new_mark()
    proc = subprocess.Popen([str(drover), "run", str(w), "--workers", "2"], env=child_env(mark),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if after >= 0:
            deadline = time.monotonic() + 60
            while not (journal.exists() and journal.stat().st_size > HEADER):
                assert time.monotonic() < deadline, "no results were journaled"
                if proc.poll() is not None:
                    return 0
                time.sleep(0.01)
            time.sleep(after)
        # The whole node dies: the run and its workers at once.
        os.killpg(proc.pid, signal.SIGKILL)
        kill_marked(mark)
        proc.wait(timeout=10)
        assert not wait_marked_gone(mark, 10.0)
    finally:
        kill_group(proc)
        kill_marked(mark)
    assert not (w.parent / "slow.h5").exists(), "no final output from a killed run"
    return journal.stat().st_size if journal.exists() else 0


def test_a_run_killed_at_many_points_of_its_journal_resumes_exactly(drover, tmp_path):
    rows = rows_for(drover, tmp_path, 8.0)
    w = make_two_outputs(tmp_path, rows)
    journal = tmp_path / ".slow.h5.drover-journal"
    # Killed before and while the journal is created, and at spread points of its
    # appends: every kill lands on some write of a run in progress.
    sizes = [run_and_kill(drover, w, after) for after in (-1, 0.0, 0.01, 0.05, 0.15, 0.3, 0.6, 1.0)]
    assert max(sizes) > HEADER, f"the runs journaled nothing: {sizes}"
    r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    assert r.json()["tasks_resumed"] > 0, r.json()
    assert r.json()["tasks_retried"] == 0, r.json()
    check_exact(tmp_path)
    assert not journal.exists() and not list(tmp_path.glob(".slow.h5.drover-tmp"))


def test_torn_and_corrupted_journal_records_are_cut_off_and_recomputed(drover, tmp_path):
    rows = rows_for(drover, tmp_path, 8.0)
    w = make_two_outputs(tmp_path, rows)
    journal = tmp_path / ".slow.h5.drover-journal"
    rnd = random.Random(16)
    for damage in ("torn", "flipped", "garbage"):
        size = run_and_kill(drover, w, 1.0)
        assert size > HEADER + 64, f"{damage}: too little was journaled to damage ({size} bytes)"
        data = bytearray(journal.read_bytes())
        if damage == "torn":
            # The process died in the middle of an append: the file ends inside a record.
            del data[rnd.randrange(HEADER + 1, len(data)) :]
        elif damage == "flipped":
            # A record whose bytes changed on disk: its checksum no longer matches.
            data[rnd.randrange(HEADER, len(data))] ^= 0x5A
        else:
            data += bytes(rnd.randrange(256) for _ in range(300))
        journal.write_bytes(bytes(data))
        r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
        assert r.rc == 0, f"{damage}: {r.describe()}"
        assert r.json()["tasks_retried"] == 0
        check_exact(tmp_path)
        (tmp_path / "slow.h5").unlink()
