"""Disk faults while a run writes (issue 16): an output file system that fills up in
the middle of writing, a journal that can no longer be written, an output folder that
becomes read-only. Each run fails with one line naming the file and the error and
leaves no final output; its temporary output and journal stay so that the same
command, once the fault is gone, resumes and gives the exact result (numpy is the
oracle). The file systems are small tmpfs mounts made by the test."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import child_env, kill_group, kill_marked, new_mark, run_drover, wait_marked_gone
from test_resilience import make_slow, oracle, rows_for, wait_for_journal_records

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts tmpfs file systems (needs root)")

@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


ROWS, COLS, K = 1500, 2000, 60  # a (ROWS, COLS) f64 output of 24 MB, K sines per value


def workload(tmp: Path, out_dir: Path) -> Path:
    """A 24 MB output computed slowly enough (a few seconds) that results are journaled
    before the small file system fills, and a full reduction beside it."""
    with h5py.File(tmp / "abc.h5", "w") as f:
        f.create_dataset("a", data=np.linspace(0.1, 1.0, ROWS).reshape(ROWS, 1, 1))
        f.create_dataset("b", data=np.linspace(1.0, 2.0, COLS).reshape(1, COLS, 1))
        f.create_dataset("c", data=np.linspace(0.5, 1.5, K).reshape(1, 1, K))
    w = tmp / "w.toml"
    src = tmp / "abc.h5"
    w.write_text(
        f'[inputs.a]\nfile = "{src}"\ndataset = "/a"\nchunks = [20, 1, 1]\n'
        f'[inputs.b]\nfile = "{src}"\ndataset = "/b"\n'
        f'[inputs.c]\nfile = "{src}"\ndataset = "/c"\n'
        f'[[outputs]]\nexpr = "sum(sin(a * b * c), axis=2)"\nfile = "{out_dir / "out.h5"}"\ndataset = "/y"\n'
        f'[[outputs]]\nexpr = "sum(cos(a * b))"\nfile = "{out_dir / "out.h5"}"\ndataset = "/total"\n'
    )
    return w


def check_exact(tmp: Path, out_dir: Path) -> None:
    with h5py.File(tmp / "abc.h5") as f:
        a, b, c = f["a"][...], f["b"][...], f["c"][...]
    with h5py.File(out_dir / "out.h5") as f:
        y = f["y"][...]
        for i in range(0, ROWS, 100):
            np.testing.assert_allclose(y[i : i + 100], np.sin(a[i : i + 100] * b * c).sum(axis=2), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f["total"][()], np.cos(a * b).sum(), rtol=1e-10)


def error_lines(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if l.startswith("error: ")]


@pytest.mark.parametrize("direct", ["1", "0"], ids=["workers-write", "server-writes"])
def test_an_output_file_system_that_fills_up_fails_cleanly_and_resumes_once_space_is_freed(drover, tmp_path, direct):
    env = {"DROVER_DIRECT_WRITES": direct}
    with tmpfs(tmp_path / "out", "14m") as out:
        w = workload(tmp_path, out)
        r = run_drover(drover, ["run", w, "--workers", "2"], env=env)
        assert r.rc == 1, r.describe()
        lines = error_lines(r.stderr)
        assert len(lines) == 1, r.stderr
        assert "No space left on device" in lines[0] and str(out) in lines[0], lines[0]
        assert "free space" in lines[0] and "resume" in lines[0], f"says how to go on: {lines[0]}"
        assert not (out / "out.h5").exists(), "no final output"
        assert (out / ".out.h5.drover-journal").exists() and (out / ".out.h5.drover-tmp").exists(), \
            f"kept for the resume: {sorted(p.name for p in out.iterdir())}"
        resize(out, "64m")
        r = run_drover(drover, ["run", w, "--workers", "2", "--json"], env=env)
        assert r.rc == 0, r.describe()
        assert r.json()["tasks_resumed"] > 0, r.json()
        check_exact(tmp_path, out)
        assert sorted(p.name for p in out.iterdir()) == ["out.h5"]


def run_until_journaled(drover: Path, w: Path, journal: Path, action, env: dict | None = None, prefix: tuple = ()):
    """Start the run (its command line after `prefix`), wait until its journal holds
    records, call `action()`, and wait for the run to end. Returns (exit code, stderr)."""
    mark = new_mark()
    with tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen([*prefix, str(drover), "run", str(w), "--workers", "2"], env=child_env(mark, env),
                                stdout=subprocess.DEVNULL, stderr=err_f, start_new_session=True)
        try:
            wait_for_journal_records(journal, proc)
            action()
            proc.wait(timeout=120)
            assert not wait_marked_gone(mark, 15.0)
        finally:
            kill_group(proc)
            kill_marked(mark)
        err_f.seek(0)
        return proc.returncode, err_f.read().decode(errors="replace")


def test_a_journal_that_can_no_longer_be_written_fails_the_run_naming_it(drover, tmp_path):
    rows = rows_for(drover, tmp_path, 8.0)
    with tmpfs(tmp_path / "out", "32m") as out:
        w = make_slow(tmp_path, rows)
        w.write_text(w.read_text().replace('file = "slow.h5"', f'file = "{out / "slow.h5"}"'))
        journal = out / ".slow.h5.drover-journal"
        filler = out / "other-job.bin"

        def fill():
            # Another job takes the rest of the quota.
            with open(filler, "wb") as f:
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * (1 << 20))

        rc, err = run_until_journaled(drover, w, journal, fill)
        assert rc == 1, err
        lines = error_lines(err)
        assert len(lines) == 1, err
        assert "No space left on device" in lines[0], lines[0]
        assert not (out / "slow.h5").exists()
        assert journal.exists(), "the journal stays for the resume"
        filler.unlink()
        r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
        assert r.rc == 0, r.describe()
        assert r.json()["tasks_resumed"] > 0, r.json()
        with h5py.File(out / "slow.h5") as f:
            np.testing.assert_allclose(f["s"][...], oracle(tmp_path), rtol=1e-9)


def test_an_output_folder_made_read_only_mid_run_fails_it_naming_the_folder(drover, tmp_path):
    """Run as an unprivileged user (root writes into read-only folders)."""
    rows = rows_for(drover, tmp_path, 6.0)
    base = Path(tempfile.mkdtemp(prefix="ro-output-"))
    try:
        os.chmod(base, 0o755)
        work = base / "work"
        work.mkdir()
        w = make_slow(work, rows)
        out = base / "out"
        out.mkdir()
        w.write_text(w.read_text().replace('file = "slow.h5"', f'file = "{out / "slow.h5"}"'))
        for p in [work, out, *work.iterdir()]:
            os.chown(p, 65534, 65534)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {"HOME": str(work), "TMPDIR": str(work)}
        journal = out / ".slow.h5.drover-journal"
        rc, err = run_until_journaled(drover, w, journal, lambda: os.chmod(out, 0o555), env=env, prefix=tuple(nobody))
        assert rc == 1, err
        lines = error_lines(err)
        assert len(lines) == 1, err
        assert "Permission denied" in lines[0] and str(out) in lines[0], lines[0]
        assert not (out / "slow.h5").exists()
        os.chmod(out, 0o755)
        r = run_drover(drover, ["run", w, "--workers", "2", "--json"], env=env)
        assert r.rc == 0, r.describe()
        with h5py.File(out / "slow.h5") as f:
            np.testing.assert_allclose(f["s"][...], oracle(work), rtol=1e-9)
    finally:
        shutil.rmtree(base, ignore_errors=True)
