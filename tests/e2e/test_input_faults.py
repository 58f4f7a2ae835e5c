"""Input faults (issue 16): an input on a file system that returns EIO, served by a
real FUSE file system (examples/faultfs.rs) whose reads past a point fail. The run
fails once, with one line naming the input, its file and the I/O error; no worker
crashes in turn, no output is written, no process is left."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_drover, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/fuse").exists(), reason="mounts a FUSE file system (needs root and /dev/fuse)"
)


def faultfs_bin(drover: Path) -> Path:
    exe = drover.parent / "examples" / "faultfs"
    assert exe.exists(), f"{exe} is missing: scripts/test.sh builds it (cargo build --release --example faultfs)"
    return exe


@contextlib.contextmanager
def faulty(drover: Path, source: Path, mountpoint: Path, mode: str, start: int):
    """Serve `source` at mountpoint/<its name>, reads from byte `start` failing."""
    mountpoint.mkdir()
    proc = subprocess.Popen([str(faultfs_bin(drover)), str(source), str(mountpoint), mode, str(start)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "mounted", f"faultfs did not mount: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield mountpoint / source.name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


@pytest.mark.parametrize("compression", [None, "gzip"], ids=["mapped", "gzip"])
def test_an_input_whose_file_system_returns_eio_fails_the_run_once_naming_it(drover, tmp_path, compression):
    n = 4_000_000
    src = tmp_path / "x.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=np.linspace(0.0, 1.0, n), chunks=(100_000,) if compression else None,
                         compression=compression)
    size = src.stat().st_size
    with faulty(drover, src, tmp_path / "mnt", "eio", size * 2 // 3) as x:
        w = tmp_path / "w.toml"
        w.write_text(
            f'[inputs.x]\nfile = "{x}"\ndataset = "/x"\nchunks = [200000]\n'
            f'[[outputs]]\nexpr = "x * 2"\nfile = "{tmp_path / "out.h5"}"\ndataset = "/y"\n'
        )
        r = run_drover(drover, ["run", w, "--workers", "2"])
    assert r.rc == 1, r.describe()
    assert "panicked" not in r.stderr and "lost" not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, r.stderr
    assert str(x) in lines[0] and 'input "x"' in lines[0], lines[0]
    assert "I/O error" in lines[0] or "Input/output error" in lines[0], lines[0]
    assert r.leftover_pids == []
    assert not (tmp_path / "out.h5").exists()


def test_a_task_stuck_in_a_read_that_never_returns_runs_elsewhere_and_the_result_is_exact(drover, tmp_path):
    """A file server loses one read request: the worker reading it waits forever (its
    heartbeats go on). Past the task time limit its tasks run on the other worker, it
    is told to exit (which ends the stuck read), and the result is exact."""
    n, block = 4_000_000, 200_000
    src = tmp_path / "x.h5"
    x = np.linspace(0.0, 1.0, n)
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=x)
        start = f["x"].id.get_offset()
    # The middle of block 7: its first read of that byte is never answered.
    stuck_at = start + (7 * block + block // 2) * 8
    with faulty(drover, src, tmp_path / "mnt", "hang-once", stuck_at) as path:
        w = tmp_path / "w.toml"
        w.write_text(
            f'[inputs.x]\nfile = "{path}"\ndataset = "/x"\nchunks = [{block}]\n'
            f'[[outputs]]\nexpr = "x * 2 + 1"\nfile = "{tmp_path / "out.h5"}"\ndataset = "/y"\n'
            f'[[outputs]]\nexpr = "sum(x)"\nfile = "{tmp_path / "out.h5"}"\ndataset = "/total"\n'
        )
        r = run_drover(drover, ["run", w, "--workers", "2", "--json", "--task-timeout", "6s"], timeout=120)
    # The stuck worker waits in the kernel until the file server answers or goes away
    # (as on a hard-mounted NFS): gone now, it must end.
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in r.leftover_pids), 20,
             f"the stuck worker {r.leftover_pids} to end with its file server", interval=0.1)
    assert r.rc == 0, r.describe()
    summary = r.json()
    assert summary["workers_lost"] >= 1 and summary["tasks_retried"] >= 1, summary
    assert "task time limit of 6 s" in r.stderr, r.stderr[-2000:]
    with h5py.File(tmp_path / "out.h5") as f:
        np.testing.assert_array_equal(f["y"][...], x * 2 + 1)
        np.testing.assert_allclose(f["total"][()], x.sum(), rtol=1e-12)


def test_a_run_whose_every_worker_gets_stuck_fails_instead_of_waiting_forever(drover, tmp_path):
    """Every read of one byte is lost (`hang`): each worker that reads it gets stuck,
    is told to exit past the task time limit, and cannot end while its read waits in
    the kernel. With no worker left, the run fails in one line after 15 s instead of
    waiting for processes that cannot end; no output is left."""
    n, block = 1_000_000, 100_000
    src = tmp_path / "x.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=np.arange(n, dtype=np.float64))
        start = f["x"].id.get_offset()
    stuck_at = start + (3 * block + 10) * 8
    with faulty(drover, src, tmp_path / "mnt", "hang", stuck_at) as path:
        w = tmp_path / "w.toml"
        w.write_text(
            f'[inputs.x]\nfile = "{path}"\ndataset = "/x"\nchunks = [{block}]\n'
            f'[[outputs]]\nexpr = "x + 1"\nfile = "{tmp_path / "out.h5"}"\ndataset = "/y"\n'
        )
        r = run_drover(drover, ["run", w, "--workers", "2", "--task-timeout", "4s"], timeout=150)
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in r.leftover_pids), 20,
             f"the stuck workers {r.leftover_pids} to end with their file server", interval=0.1)
    assert r.rc == 1, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert lines and "no worker has been connected for 15 s" in lines[-1], r.stderr[-3000:]
    assert "panicked" not in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "out.h5").exists()


def test_a_bad_task_timeout_is_refused_quoting_it(drover, tmp_path):
    w = tmp_path / "w.toml"
    w.write_text('[inputs.x]\ngenerate = "ones"\nshape = [10]\n[[outputs]]\nexpr = "x"\nfile = "o.h5"\ndataset = "/y"\n')
    for bad in ["1x", "soon"]:
        r = run_drover(drover, ["run", w, "--task-timeout", bad])
        assert r.rc == 2, r.describe()
        assert f'"{bad}"' in r.stderr and "10x" in r.stderr, r.stderr
        assert not (tmp_path / "o.h5").exists()
