#!/usr/bin/env python3
"""drover's benchmark runner: drover vs the hardware limit vs dask, same files, one run.

    bench.py [--quick] [--rounds R] [--cases reduction,anomaly,tiny] [--drover BIN]
    bench.py --data-only [--quick]          only make (or check) the data

Normally started by scripts/bench.sh, which also prepares the venv and the build.
Method (docs/PERFORMANCE.md has the long form):

* Data (scratch/bench/, fixed seed, kept when present with the right shape): a float64
  dataset /x of 8192 x 32768 (2 GiB) with HDF5 chunks 64 x 4096, and a 1-D float64
  dataset /t of 1,500,000 elements (HDF5 chunks 4096) for tiny tasks. --quick: 1024 x
  32768 and 200,000 elements.
* Cases: reduction `mean(x, axis=0)`; anomaly `x - mean(x, axis=0)` into a full-size
  output file; tiny tasks `sum(t)` with tasks of 10 elements (chunks/s).
* Contenders: raw read of the file's bytes from the page cache (plain Python readinto a
  preallocated buffer: the hardware limit; for the anomaly, read + write of those bytes),
  h5py chunk-by-chunk read (second reference), drover (the whole `drover run W.toml
  --workers 2 --json` command, wall time measured here), dask threads (num_workers=2,
  `da.from_array(h5py_dataset)`) and dask.distributed on a warm LocalCluster (2
  processes x 1 thread, started once outside any timed region; it reads through
  H5Source, a picklable stand-in for the h5py dataset). dask gets drover's block shape.
  For tiny tasks dask runs a prefix of /t (a rate; the whole would take minutes).
* One untimed warm-up run of every contender, a result check (drover vs dask, np.allclose
  rtol=1e-9), then R rounds whose contender order rotates every round; median and min.
* Peak RSS of drover's driver and each worker (drover's JSON keys when present, and
  always /proc VmHWM of the process tree sampled every 20 ms) and of dask's workers.
* A table with ratios and the issue's targets (MET / NOT MET), and
  scratch/bench/results-<timestamp>.json. Exit 0 unless something crashed or results
  differ: time is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "scratch" / "bench"
OUT_DIR = BENCH_DIR / "out"

FORMAT_VERSION = 1
SEED = 20240917
MiB = 1 << 20
GiB = 1 << 30

HDF5_CHUNK = (64, 4096)           # the file: 8192 x 32768 f64, chunks 64 x 4096
TINY_HDF5_CHUNK = (4096,)
TINY_TASK = 10                    # elements per tiny task
DROVER_DEFAULT_BLOCK_ELEMS = 8 << 20   # src/exec/plan.rs DEFAULT_BLOCK_ELEMS (64 MiB of f64)

SIZES = {
    # shape of /x, length of /t, tiny chunks given to dask threads / dask.distributed
    # (dask runs a prefix of /t: at 200-550 tasks/s the whole of it would take minutes;
    # chunks/s is a rate, so a prefix measures the same thing)
    "full": dict(shape=(8192, 32768), tiny_n=1_500_000, tiny_threads=20_000, tiny_dist=2_000),
    "quick": dict(shape=(1024, 32768), tiny_n=200_000, tiny_threads=2_000, tiny_dist=500),
}

CONTENDERS = {
    "reduction": ["raw-read", "h5py-chunks", "drover", "dask-threads", "dask.distributed"],
    "anomaly": ["raw-read+write", "drover", "dask-threads", "dask.distributed"],
    "tiny": ["drover", "dask-threads", "dask.distributed"],
}
ALL_CASES = list(CONTENDERS)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------- data


def big_path(shape) -> Path:
    return BENCH_DIR / f"x-{shape[0]}x{shape[1]}.h5"


def tiny_path(n: int) -> Path:
    return BENCH_DIR / f"tiny-{n}.h5"


def _up_to_date(path: Path, name: str, shape, chunks) -> bool:
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            return (
                ds.shape == tuple(shape)
                and ds.dtype == np.float64
                and ds.chunks == tuple(chunks)
                and ds.compression is None
                and int(ds.attrs.get("seed", -1)) == SEED
                and int(ds.attrs.get("format_version", -1)) == FORMAT_VERSION
            )
    except (OSError, KeyError):
        return False


def _write_atomically(path: Path, fill) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_big(shape) -> Path:
    """/x: 280 + 10 * N(0, 1), float64, HDF5 chunks 64 x 4096, written in row slabs."""
    path = big_path(shape)
    if _up_to_date(path, "x", shape, HDF5_CHUNK):
        log(f"data up to date: {path.name} /x {shape[0]} x {shape[1]} f64")
        return path
    rows, cols = shape
    slab = 4 * HDF5_CHUNK[0]   # 256 rows = 64 MiB at 32768 columns
    t0 = time.perf_counter()

    def fill(f):
        ds = f.create_dataset("x", shape=shape, dtype="f8", chunks=HDF5_CHUNK)
        ds.attrs["seed"] = SEED
        ds.attrs["format_version"] = FORMAT_VERSION
        rng = np.random.default_rng(SEED)
        for r0 in range(0, rows, slab):
            r1 = min(rows, r0 + slab)
            block = rng.standard_normal((r1 - r0, cols))
            block *= 10.0
            block += 280.0
            ds[r0:r1] = block
            del block

    _write_atomically(path, fill)
    log(f"wrote {path.name}: {path.stat().st_size / GiB:.2f} GiB in {time.perf_counter() - t0:.1f} s")
    return path


def ensure_tiny(n: int) -> Path:
    """/t: uniform [0, 1) float64, HDF5 chunks 4096 (the task size is set by the workload)."""
    path = tiny_path(n)
    if _up_to_date(path, "t", (n,), TINY_HDF5_CHUNK):
        log(f"data up to date: {path.name} /t ({n},) f64")
        return path

    def fill(f):
        ds = f.create_dataset("t", shape=(n,), dtype="f8", chunks=TINY_HDF5_CHUNK)
        ds.attrs["seed"] = SEED
        ds.attrs["format_version"] = FORMAT_VERSION
        ds[:] = np.random.default_rng(SEED + 1).random(n)

    _write_atomically(path, fill)
    log(f"wrote {path.name}: ({n},) f64")
    return path


def default_block(shape, chunk, target=DROVER_DEFAULT_BLOCK_ELEMS):
    """Mirror of drover's exec::geometry::default_block (a chunk multiple near 64 MiB f64)."""
    block = [max(1, min(c, s)) for c, s in zip(chunk, shape)]
    for d in reversed(range(len(shape))):
        elems = max(1, int(np.prod(block)))
        max_mult = max(1, -(-shape[d] // block[d]))
        mult = min(max(1, target // elems), max_mult)
        block[d] = min(block[d] * mult, max(1, shape[d]))
    return tuple(block)


# -------------------------------------------------------------- process memory


def _status_kb(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB from /proc/PID/status, None when the process is gone."""
    hwm = rss = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return hwm, rss


def _children(pid: int) -> set[int]:
    """Direct children of every thread of PID (cheap: /proc/PID/task/*/children)."""
    kids: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return kids


class TreeSampler(threading.Thread):
    """Peak RSS of a process and its descendants: every `interval` s, read each one's
    VmHWM (the kernel's own high-water mark, so only the last interval before a process
    exits can be missed)."""

    def __init__(self, root: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_kb: dict[int, int] = {}
        self.cmd: dict[int, str] = {}
        self._halt = threading.Event()
        self._children_file = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")

    def _tree(self) -> set[int]:
        if self._children_file:
            seen, todo = {self.root}, [self.root]
            while todo:
                for k in _children(todo.pop()):
                    if k not in seen:
                        seen.add(k)
                        todo.append(k)
            return seen
        import psutil

        try:
            return {self.root} | {c.pid for c in psutil.Process(self.root).children(recursive=True)}
        except psutil.Error:
            return {self.root}

    @staticmethod
    def _cmdline(pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return None

    def sample(self) -> None:
        for pid in sorted(self._tree(), key=lambda p: p != self.root):   # the root first
            if pid not in self.cmd:
                cmd = self._cmdline(pid)
                if cmd is None:
                    continue
                if pid != self.root and cmd == self.cmd.get(self.root):
                    continue   # forked but not yet exec'd: its memory is still the parent's
                self.cmd[pid] = cmd
            st = _status_kb(pid)
            if st is None:
                continue
            self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), st[0], st[1])

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def driver_bytes(self) -> int | None:
        kb = self.peak_kb.get(self.root)
        return None if kb is None else kb * 1024

    def worker_bytes(self) -> list[int]:
        return sorted(
            (kb * 1024 for pid, kb in self.peak_kb.items() if pid != self.root and " worker" in self.cmd.get(pid, "")),
            reverse=True,
        )


def reset_hwm(pids) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of PIDS; False when not allowed."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


# ------------------------------------------------------------------ contenders


def raw_read(path: Path, buf: bytearray) -> int:
    """Read the whole file sequentially into BUF with plain unbuffered reads."""
    mv = memoryview(buf)
    step = 16 * MiB
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(mv[n : n + step])
            if not k:
                break
            n += k
    return n


def raw_write(path: Path, buf: bytearray, n: int) -> None:
    mv = memoryview(buf)
    step = 16 * MiB
    with open(path, "wb", buffering=0) as f:
        for off in range(0, n, step):
            f.write(mv[off : min(n, off + step)])


def h5py_chunks(path: Path) -> int:
    """Read /x HDF5 chunk by chunk (read_direct into one preallocated chunk buffer)."""
    with h5py.File(path, "r") as f:
        ds = f["x"]
        rows, cols = ds.shape
        cr, cc = ds.chunks
        out = np.empty((cr, cc))
        n = 0
        for r in range(0, rows, cr):
            for c in range(0, cols, cc):
                sel = np.s_[r : min(rows, r + cr), c : min(cols, c + cc)]
                if r + cr <= rows and c + cc <= cols:
                    ds.read_direct(out, sel)
                    n += out.nbytes
                else:
                    n += ds[sel].nbytes
    return n


class H5Target:
    """A picklable da.store target for dask.distributed: each block opens the output file,
    writes its region and closes it, under the distributed lock given to da.store."""

    def __init__(self, path: str, dataset: str):
        self.path = path
        self.dataset = dataset

    def __setitem__(self, key, value):
        with h5py.File(self.path, "r+") as f:
            f[self.dataset][key] = value


class H5Source:
    """An HDF5 dataset as an array-like for da.from_array, optionally only its first
    `rows` entries along axis 0. Picklable (path and name only; the worker that holds it
    opens the file once and keeps it open), which dask.distributed needs: this dask
    pickles a graph holding an h5py Dataset whole for `da.store`, and h5py objects
    cannot be pickled. For tiny tasks, the prefix form gives dask the same h5py reads as
    `da.from_array(dset, chunks=10)` without the extra getitem task per chunk that
    slicing the dask array (`t[:n]`) would add."""

    def __init__(self, path: str, dataset: str, rows: int | None = None):
        with h5py.File(path, "r") as f:
            ds = f[dataset]
            shape, dtype = ds.shape, ds.dtype
        if rows is not None:
            shape = (min(rows, shape[0]),) + tuple(shape[1:])
        self.path, self.dataset, self.shape, self.dtype, self.ndim = path, dataset, shape, dtype, len(shape)
        self._ds = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ds"] = None
        return d

    def __getitem__(self, key):
        if self._ds is None:
            self._ds = h5py.File(self.path, "r")[self.dataset]
        return self._ds[key]


def run_drover(drover: str, workload: Path, workers: int, timeout: float) -> dict:
    """The whole `drover run` command, wall-timed here; its JSON, and peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        argv = [drover, "run", str(workload), "--workers", str(workers), "--json"]
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = TreeSampler(p.pid)
        sampler.start()
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        sampler.stop()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if p.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        why = f"killed after {timeout:.0f} s" if p.returncode == -9 else f"exit code {p.returncode}"
        raise BenchError(f"`{' '.join(argv)}` failed ({why}):\n{tail}")
    summary = None
    for line in reversed(stdout.strip().splitlines()):
        try:
            summary = json.loads(line)
            break
        except ValueError:
            continue
    if not isinstance(summary, dict):
        raise BenchError(f"`{' '.join(argv)}` printed no JSON object on stdout:\n{stdout[-2000:]}")
    mem = {
        "sampled_driver_bytes": sampler.driver_bytes(),
        "sampled_worker_bytes": sampler.worker_bytes(),
        "wait4_tree_maxrss_bytes": ru.ru_maxrss * 1024,   # max over driver and its reaped workers
        "json_driver_bytes": summary.get("driver_peak_rss_bytes"),
        "json_worker_bytes": summary.get("worker_peak_rss_bytes"),
    }
    return {"seconds": wall, "drover_seconds": summary.get("seconds"), "summary": summary, "memory": mem}


# ----------------------------------------------------------------------- cases


def toml_str(p) -> str:
    return json.dumps(str(p))   # a JSON string is a valid TOML basic string


def write_workload(path: Path, inputs: dict, outputs: list) -> Path:
    lines = []
    for name, spec in inputs.items():
        lines.append(f"[inputs.{name}]")
        lines.append(f"file = {toml_str(spec['file'])}")
        lines.append(f"dataset = {toml_str(spec['dataset'])}")
        if spec.get("chunks"):
            lines.append(f"chunks = [{', '.join(str(c) for c in spec['chunks'])}]")
        lines.append("")
    for o in outputs:
        lines.append("[[outputs]]")
        lines.append(f"expr = {toml_str(o['expr'])}")
        lines.append(f"file = {toml_str(o['file'])}")
        lines.append(f"dataset = {toml_str(o['dataset'])}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _rm(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def compare_files(a: Path, da_: str, b: Path, db: str, rows_per_slab: int = 256) -> dict:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        x, y = fa[da_], fb[db]
        if x.shape != y.shape:
            return {"equal": False, "why": f"shapes differ: {x.shape} vs {y.shape}"}
        worst = 0.0
        if x.ndim == 0:
            xa, ya = np.asarray(x[()]), np.asarray(y[()])
            ok = bool(np.allclose(xa, ya, rtol=1e-9))
            worst = float(abs(xa - ya))
        else:
            ok = True
            for r0 in range(0, x.shape[0], rows_per_slab):
                xa, ya = x[r0 : r0 + rows_per_slab], y[r0 : r0 + rows_per_slab]
                ok = ok and bool(np.allclose(xa, ya, rtol=1e-9))
                worst = max(worst, float(np.max(np.abs(xa - ya))) if xa.size else 0.0)
        return {"equal": ok, "shape": list(x.shape), "max_abs_diff": worst}


def compare_arrays(a, b) -> dict:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return {"equal": False, "why": f"shapes differ: {a.shape} vs {b.shape}"}
    return {
        "equal": bool(np.allclose(a, b, rtol=1e-9)),
        "shape": list(a.shape),
        "max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0,
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.size = SIZES["quick" if args.quick else "full"]
        self.tag = "quick" if args.quick else "full"
        self.shape = self.size["shape"]
        self.big = big_path(self.shape)
        self.tiny = tiny_path(self.size["tiny_n"])
        self.block = (args.block_rows, self.shape[1]) if args.block_rows else default_block(self.shape, HDF5_CHUNK)
        self.threads = max(1, (os.cpu_count() or 1) // args.workers)   # drover's embedded default
        self.client = None
        self.cluster = None
        self.dask_pids: list[int] = []
        self.buf: bytearray | None = None
        self.out_chunks = HDF5_CHUNK
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        self.workloads = self._workloads()

    # ---- set-up

    def _workloads(self) -> dict:
        explicit = list(self.block) if self.args.block_rows else None
        x = {"x": {"file": self.big.name, "dataset": "/x", "chunks": explicit}}
        t = {"x": {"file": self.tiny.name, "dataset": "/t", "chunks": [TINY_TASK]}}
        w = {}
        w["reduction"] = write_workload(
            BENCH_DIR / f"reduction-{self.tag}.toml", x,
            [{"expr": "mean(x, axis=0)", "file": "out/reduction-drover.h5", "dataset": "/m"}])
        w["anomaly"] = write_workload(
            BENCH_DIR / f"anomaly-{self.tag}.toml", x,
            [{"expr": "x - mean(x, axis=0)", "file": "out/anomaly-drover.h5", "dataset": "/a"}])
        w["tiny"] = write_workload(
            BENCH_DIR / f"tiny-{self.tag}.toml", t,
            [{"expr": "sum(x)", "file": "out/tiny-drover.h5", "dataset": "/s"}])
        return w

    def start_cluster(self) -> None:
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        self.cluster = LocalCluster(
            n_workers=self.args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(self.args.workers)
        self.dask_pids = sorted(self.client.run(os.getpid).values())
        log(f"dask.distributed LocalCluster up ({self.args.workers} x 1 thread, pids {self.dask_pids}) "
            f"in {time.perf_counter() - t0:.1f} s (not timed)")

    def stop_cluster(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    # ---- one run of one contender; returns {"seconds": ..., ...}

    def out_path(self, case: str, who: str) -> Path:
        return OUT_DIR / f"{case}-{who.replace('.', '-')}.h5"

    def run_one(self, case: str, who: str) -> dict:
        import dask
        import dask.array as da

        a = self.args
        if who == "drover":
            _rm(self.out_path(case, "drover"))
            return run_drover(a.drover, self.workloads[case], a.workers, a.timeout)
        if who == "raw-read":
            t0 = time.perf_counter()
            n = raw_read(self.big, self.buf)
            return {"seconds": time.perf_counter() - t0, "bytes": n}
        if who == "raw-read+write":
            dst = self.out_path(case, "raw")
            _rm(dst)
            t0 = time.perf_counter()
            n = raw_read(self.big, self.buf)
            raw_write(dst, self.buf, n)
            return {"seconds": time.perf_counter() - t0, "bytes": 2 * n}
        if who == "h5py-chunks":
            t0 = time.perf_counter()
            n = h5py_chunks(self.big)
            return {"seconds": time.perf_counter() - t0, "bytes": n}

        threads = who == "dask-threads"
        if not threads and who != "dask.distributed":
            raise ValueError(who)
        kw = {"scheduler": "threads", "num_workers": a.workers}

        def compute(expr):
            if threads:
                with dask.config.set(scheduler="threads", num_workers=a.workers):
                    return expr.compute(**kw)
            return self.client.compute(expr).result()

        def source(path: Path, name: str, f: h5py.File, rows: int | None = None):
            # dask threads: the h5py dataset itself (or a prefix of it); distributed: H5Source
            if threads and (rows is None or rows >= f[name].shape[0]):
                return f[name]
            return H5Source(str(path), name, rows)

        if case == "reduction":
            t0 = time.perf_counter()
            with h5py.File(self.big, "r") as f:
                x = da.from_array(source(self.big, "x", f), chunks=self.block)
                m = compute(x.mean(axis=0))
            return {"seconds": time.perf_counter() - t0, "result": m}
        if case == "anomaly":
            dst = self.out_path(case, who)
            _rm(dst)
            t0 = time.perf_counter()
            with h5py.File(self.big, "r") as f:
                x = da.from_array(source(self.big, "x", f), chunks=self.block)
                y = x - x.mean(axis=0)
                if threads:
                    with h5py.File(dst, "w") as g:
                        d = g.create_dataset("a", shape=x.shape, dtype="f8", chunks=self.out_chunks)
                        with dask.config.set(scheduler="threads", num_workers=a.workers):
                            da.store(y, d, lock=True, **kw)
                else:
                    from distributed import Lock

                    with h5py.File(dst, "w") as g:
                        g.create_dataset("a", shape=x.shape, dtype="f8", chunks=self.out_chunks)
                    lock = Lock(f"drover-bench-{uuid.uuid4().hex}")
                    stored = da.store(y, H5Target(str(dst), "a"), lock=lock, compute=False)
                    self.client.compute(stored).result()
            return {"seconds": time.perf_counter() - t0}
        if case == "tiny":
            n_chunks = self.tiny_chunks(who)
            t0 = time.perf_counter()
            with h5py.File(self.tiny, "r") as f:
                t = da.from_array(source(self.tiny, "t", f, n_chunks * TINY_TASK), chunks=TINY_TASK)
                s = compute(t.sum())
            return {"seconds": time.perf_counter() - t0, "result": float(s), "chunks": n_chunks}
        raise ValueError(case)

    def tiny_chunks(self, who: str) -> int:
        total = -(-self.size["tiny_n"] // TINY_TASK)
        if who == "drover":
            return total
        want = self.args.tiny_threads_chunks if who == "dask-threads" else self.args.tiny_dist_chunks
        want = want or (self.size["tiny_threads"] if who == "dask-threads" else self.size["tiny_dist"])
        return min(total, want)

    def cleanup(self, case: str, who: str) -> None:
        for p in (self.out_path(case, who), self.out_path(case, "raw")):
            _rm(p)

    # ---- checks after the warm-up (outputs still on disk)

    def check(self, case: str, warm: dict) -> dict:
        checks = {}
        drv = self.out_path(case, "drover")
        if case == "reduction":
            with h5py.File(drv, "r") as f:
                m = f["m"][()]
            for who in ("dask-threads", "dask.distributed"):
                if who in warm and "result" in warm[who]:
                    checks[f"drover vs {who}"] = compare_arrays(m, warm[who]["result"])
        elif case == "anomaly":
            with h5py.File(drv, "r") as f:
                chunks = f["a"].chunks
                checks["drover output shape == input shape"] = {"equal": f["a"].shape == self.shape, "shape": list(f["a"].shape),
                                           "chunks": list(chunks) if chunks else None}
            for who in ("dask-threads", "dask.distributed"):
                if who in warm:
                    checks[f"drover vs {who}"] = compare_files(drv, "a", self.out_path(case, who), "a")
        elif case == "tiny":
            import dask.array as da

            with h5py.File(drv, "r") as f:
                s = f["s"][()]
            with h5py.File(self.tiny, "r") as f:
                # dask's sum of the whole of /t (its timed runs use a prefix with tasks of 10)
                full = da.from_array(f["t"], chunks=TINY_HDF5_CHUNK).sum().compute(scheduler="threads")
                checks["drover vs dask (whole /t, chunks 4096)"] = compare_arrays(s, full)
                for who in ("dask-threads", "dask.distributed"):
                    if who in warm:
                        n = warm[who]["chunks"] * TINY_TASK
                        checks[f"{who} prefix vs numpy"] = compare_arrays(warm[who]["result"], np.sum(f["t"][:n]))
        return checks

    # ---- a case: warm-up, check, rounds

    def run_case(self, case: str) -> dict:
        names = list(CONTENDERS[case])
        if self.args.no_distributed:
            names = [n for n in names if n != "dask.distributed"]
        res: dict = {"contenders": names, "runs": {n: [] for n in names}, "warmup": {}}
        hwm_reset = reset_hwm(self.dask_pids) if self.dask_pids else False
        if self.dask_pids and not hwm_reset:
            res["dask_memory_note"] = "could not reset VmHWM of dask workers: peaks are since their start"

        log(f"{case}: warm-up (untimed), order {', '.join(names)}")
        warm = {}
        for who in names:
            r = self.run_one(case, who)
            warm[who] = r
            log(f"  warm-up {who}: {r['seconds']:.3f} s")
            if case == "anomaly" and who == "drover":
                with h5py.File(self.out_path(case, "drover"), "r") as f:
                    c = f["a"].chunks
                self.out_chunks = tuple(c) if c else None   # dask writes the same layout
        res["warmup"] = {k: _jsonable(v) for k, v in warm.items()}
        res["checks"] = self.check(case, warm)
        for k, v in res["checks"].items():
            log(f"  check {k}: {'equal' if v.get('equal') else 'DIFFERENT'} {v}")
        for who in names:
            self.cleanup(case, who)
        del warm
        gc.collect()

        for rnd in range(self.args.rounds):
            k = rnd % len(names)
            order = names[k:] + names[:k]
            line = []
            for who in order:
                r = self.run_one(case, who)
                self.cleanup(case, who)
                r.pop("result", None)
                res["runs"][who].append(r)
                line.append(f"{who} {r['seconds']:.3f}")
            log(f"{case} round {rnd + 1}/{self.args.rounds}: " + ", ".join(line))

        if self.dask_pids and "dask.distributed" in names:
            res["dask_worker_peak_bytes"] = [(_status_kb(p) or (0, 0))[0] * 1024 for p in self.dask_pids]
        return res


def _jsonable(r: dict) -> dict:
    out = {}
    for k, v in r.items():
        if k == "result":
            a = np.asarray(v)
            out[k] = float(a) if a.ndim == 0 else f"array{a.shape}"
        else:
            out[k] = v
    return out


# -------------------------------------------------------------------- analysis


def stats(runs: list[dict]) -> dict:
    s = [r["seconds"] for r in runs]
    d = {"median": statistics.median(s), "min": min(s), "max": max(s), "n": len(s), "all": s}
    own = [r["drover_seconds"] for r in runs if r.get("drover_seconds") is not None]
    if own:
        d["drover_own_median"] = statistics.median(own)
    return d


def drover_memory(runs: list[dict]) -> dict:
    """Peaks over all timed runs: driver, and each worker slot (largest first)."""
    driver = []
    workers: list[int] = []
    json_driver = []
    json_worker = []
    for r in runs:
        m = r["memory"]
        # The driver's own /proc VmHWM, sampled: drover's driver_peak_rss_bytes is
        # getrusage(RUSAGE_SELF).ru_maxrss, which keeps the high-water mark of the process
        # that spawned it across exec (here: this Python process, buffers included).
        d = m["sampled_driver_bytes"] if m["sampled_driver_bytes"] is not None else m["json_driver_bytes"]
        if d is not None:
            driver.append(d)
        if m["json_driver_bytes"] is not None:
            json_driver.append(m["json_driver_bytes"])
        jw = m["json_worker_bytes"]
        per = list(m["sampled_worker_bytes"])
        if isinstance(jw, list):
            per = sorted(jw, reverse=True)
            json_worker.extend(jw)
        elif isinstance(jw, (int, float)):
            json_worker.append(int(jw))
            # the JSON gives the largest worker; keep the sampled values for the others
            per = sorted([int(jw)] + per[1:], reverse=True) if per else [int(jw)]
        for i, b in enumerate(per):
            if i < len(workers):
                workers[i] = max(workers[i], b)
            else:
                workers.append(b)
    src = "driver: /proc VmHWM sampled every 20 ms; workers: " + (
        "drover --json worker_peak_rss_bytes (largest) + sampled VmHWM" if json_worker else "sampled VmHWM")
    return {
        "driver_peak_bytes": max(driver) if driver else None,
        "worker_peak_bytes": workers,
        "json_driver_peak_bytes": max(json_driver) if json_driver else None,
        "json_worker_peak_bytes": max(json_worker) if json_worker else None,
        "source": src,
    }


def mib(b) -> str:
    return "-" if b is None else f"{b / MiB:.1f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def analyse(bench: Bench, results: dict) -> tuple[list[str], list[dict]]:
    """The printed table and the target verdicts."""
    lines = []
    targets = []
    a = bench.args
    block_bytes = int(np.prod(bench.block)) * 8
    lines.append(f"{'case':<10} {'contender':<18} {'median s':>9} {'min s':>9} {'runs':>5}  notes")
    for case, res in results["cases"].items():
        if "error" in res and not res.get("stats"):
            lines.append(f"{case:<10} CRASHED: {res['error'].splitlines()[0]}")
            continue
        for who, st in res["stats"].items():
            note = ""
            if who in ("raw-read", "h5py-chunks", "raw-read+write"):
                b = res["runs"][who][0].get("bytes", 0)
                note = f"{b / GiB:.2f} GiB, {b / st['median'] / 1e9:.1f} GB/s"
            if who == "drover" and "drover_own_median" in st:
                note = f"drover's own `seconds` median {st['drover_own_median']:.3f}"
            if case == "tiny":
                ch = res["runs"][who][0]["chunks"] if who != "drover" else bench.tiny_chunks("drover")
                note = (note + "; " if note else "") + f"{ch} chunks, {ch / st['median']:,.0f} chunks/s"
            lines.append(f"{case:<10} {who:<18} {st['median']:>9.3f} {st['min']:>9.3f} {st['n']:>5}  {note}")

    def ratio_line(case, label, value, target_text, ok):
        lines.append(f"  {case:<10} {label:<34} {value:>12}   {target_text:<18} {verdict(ok)}")
        targets.append({"case": case, "what": label, "value": value, "target": target_text, "verdict": verdict(ok)})

    lines.append("")
    lines.append("ratios (medians; drover = the whole `drover run` command):")
    cases = results["cases"]

    def med(case, who):
        try:
            return cases[case]["stats"][who]["median"]
        except KeyError:
            return None

    if "reduction" in cases:
        d = med("reduction", "drover")
        raw, h5c = med("reduction", "raw-read"), med("reduction", "h5py-chunks")
        thr, dist = med("reduction", "dask-threads"), med("reduction", "dask.distributed")
        if d and raw:
            r = d / raw
            ratio_line("reduction", "drover / raw-read", f"{r:.2f}x", "<= 1.5x", r <= 1.5)
        if d and h5c:
            ratio_line("reduction", "drover / h5py-chunks", f"{d / h5c:.2f}x", "(reference)", None)
        if d and dist:
            r = dist / d
            ratio_line("reduction", "dask.distributed / drover", f"{r:.2f}x", ">= 4x", r >= 4)
        if d and thr:
            r = thr / d
            ratio_line("reduction", "dask-threads / drover", f"{r:.2f}x", ">= 1.5x", r >= 1.5)
    if "anomaly" in cases:
        d = med("anomaly", "drover")
        raw = med("anomaly", "raw-read+write")
        thr, dist = med("anomaly", "dask-threads"), med("anomaly", "dask.distributed")
        if d and raw:
            ratio_line("anomaly", "drover / raw-read+write", f"{d / raw:.2f}x", "(reference)", None)
        if d and dist:
            ratio_line("anomaly", "dask.distributed / drover", f"{dist / d:.2f}x", "(no target)", None)
        if d and thr:
            ratio_line("anomaly", "dask-threads / drover", f"{thr / d:.2f}x", "(no target)", None)
    if "tiny" in cases and "stats" in cases["tiny"]:
        rates = {}
        for who, st in cases["tiny"]["stats"].items():
            ch = bench.tiny_chunks(who)
            rates[who] = ch / st["median"]
        if "drover" in rates:
            r = rates["drover"]
            ratio_line("tiny", "drover chunks/s", f"{r:,.0f}", ">= 100,000", r >= 100_000)
        for who in ("dask-threads", "dask.distributed"):
            if who in rates:
                ratio_line("tiny", f"{who} chunks/s", f"{rates[who]:,.0f}", "(anchor)", None)
        if "drover" in rates and "dask.distributed" in rates:
            r = rates["drover"] / rates["dask.distributed"]
            ratio_line("tiny", "drover / dask.distributed (rate)", f"{r:,.1f}x", ">= 100x", r >= 100)
        if "drover" in rates and "dask-threads" in rates:
            ratio_line("tiny", "drover / dask-threads (rate)", f"{rates['drover'] / rates['dask-threads']:,.1f}x",
                       "(no target)", None)

    lines.append("")
    lines.append(f"peak memory (RSS, MiB; drover block {bench.block} f64 = {mib(block_bytes)} MiB, "
                 f"{bench.threads} thread(s) per worker, {a.workers} workers):")
    for case, res in cases.items():
        mem = res.get("drover_memory")
        if not mem:
            continue
        if case == "tiny":
            case_block = TINY_TASK * 8
            held = 8   # a 0-d output
        elif case == "reduction":
            case_block = block_bytes
            held = bench.shape[1] * 8   # the whole (small) reduced output
        else:
            case_block = block_bytes
            held = block_bytes          # one output block in flight to the writer
        wbound = 2 * case_block * bench.threads + 64 * MiB
        dbound = 2 * held + 64 * MiB
        ws = mem["worker_peak_bytes"]
        lines.append(f"  {case:<10} drover driver {mib(mem['driver_peak_bytes'])}, workers "
                     f"{', '.join(mib(w) for w in ws) or '-'}  ({mem['source']})")
        jd = mem.get("json_driver_peak_bytes")
        if jd is not None and mem["driver_peak_bytes"] and jd > 1.25 * mem["driver_peak_bytes"] + 8 * MiB:
            lines.append(f"  {case:<10} (drover's own driver_peak_rss_bytes says {mib(jd)}: ru_maxrss inherited "
                         f"from the launching process across exec, not the driver's)")
        dk = res.get("dask_worker_peak_bytes")
        if dk:
            lines.append(f"  {case:<10} dask.distributed workers {', '.join(mib(w) for w in dk)}")
        if ws:
            ratio_line(case, "drover worker peak RSS (max)", f"{mib(max(ws))} MiB",
                       f"<= {mib(wbound)} MiB", max(ws) <= wbound)
        if mem["driver_peak_bytes"] is not None:
            ratio_line(case, "drover driver peak RSS", f"{mib(mem['driver_peak_bytes'])} MiB",
                       f"<= {mib(dbound)} MiB", mem["driver_peak_bytes"] <= dbound)

    lines.append("")
    lines.append("result checks (np.allclose rtol=1e-9, once per case after the warm-up):")
    for case, res in cases.items():
        for k, v in res.get("checks", {}).items():
            diff = f"  (max |diff| {v['max_abs_diff']:.3g})" if "max_abs_diff" in v else ""
            lines.append(f"  {case:<10} {k:<44} {'equal' if v.get('equal') else 'DIFFERENT'}{diff}")
    return lines, targets


# ------------------------------------------------------------------------ main


def machine_info(drover: str | None) -> dict:
    import dask
    import distributed

    info = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            info["mem_total_kb"] = int(f.readline().split()[1])
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        info["git"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        pass
    if drover and os.path.exists(drover):
        info["drover_binary"] = drover
        info["drover_binary_mtime"] = dt.datetime.fromtimestamp(os.path.getmtime(drover)).isoformat(timespec="seconds")
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="small data (1024 x 32768, 200,000 tiny elements): a smoke test of the harness")
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help=f"comma-separated subset of {','.join(ALL_CASES)} (default: all)")
    ap.add_argument("--drover", default=os.environ.get("DROVER_BIN", str(ROOT / "target" / "release" / "drover")),
                    help="the drover binary (default: $DROVER_BIN or target/release/drover)")
    ap.add_argument("--workers", type=int, default=2, help="drover workers and dask workers/threads (default 2)")
    ap.add_argument("--block-rows", type=int, default=0,
                    help="rows per block for drover and dask (default: drover's default block, mirrored for dask)")
    ap.add_argument("--tiny-threads-chunks", type=int, default=0,
                    help="tiny chunks given to dask threads (default 20,000; quick 2,000)")
    ap.add_argument("--tiny-dist-chunks", type=int, default=0,
                    help="tiny chunks given to dask.distributed (default 2,000; quick 500)")
    ap.add_argument("--no-distributed", action="store_true", help="skip dask.distributed")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a drover run is killed")
    ap.add_argument("--data-only", action="store_true", help="only make (or check) the data, then exit")
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in args.cases if c not in ALL_CASES]
    if bad:
        ap.error(f"unknown case(s) {', '.join(repr(b) for b in bad)}; known: {', '.join(ALL_CASES)}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if {"reduction", "anomaly"} & set(args.cases):
        ensure_big(size["shape"])
    if "tiny" in args.cases:
        ensure_tiny(size["tiny_n"])
    if args.data_only:
        return 0
    if not os.access(args.drover, os.X_OK):
        print(f"error: no drover binary at '{args.drover}' (build with cargo build --release, or pass --drover)",
              file=sys.stderr)
        return 2

    bench = Bench(args)
    started = dt.datetime.now()
    results = {
        "started": started.isoformat(timespec="seconds"),
        "mode": bench.tag,
        "rounds": args.rounds,
        "workers": args.workers,
        "drover_threads_per_worker": bench.threads,
        "shape": list(bench.shape),
        "hdf5_chunks": list(HDF5_CHUNK),
        "block": list(bench.block),
        "tiny_elements": size["tiny_n"],
        "tiny_task": TINY_TASK,
        "machine": machine_info(args.drover),
        "cases": {},
    }
    log(f"mode {bench.tag}: /x {bench.shape} f64, block {bench.block}, {args.rounds} rounds, "
        f"{args.workers} workers; drover {args.drover}")
    crashed = False
    try:
        if "anomaly" in args.cases or "reduction" in args.cases:
            bench.buf = bytearray(os.path.getsize(bench.big))
        if not args.no_distributed:
            bench.start_cluster()
        for case in args.cases:
            try:
                res = bench.run_case(case)
                res["stats"] = {who: stats(runs) for who, runs in res["runs"].items() if runs}
                if res["runs"].get("drover"):
                    res["drover_memory"] = drover_memory(res["runs"]["drover"])
            except Exception as e:   # record it, go on with the other cases
                crashed = True
                log(f"{case}: CRASHED: {e}")
                traceback.print_exc()
                res = {"error": f"{type(e).__name__}: {e}"}
            results["cases"][case] = res
    finally:
        bench.stop_cluster()
        for p in OUT_DIR.glob("*.h5"):
            _rm(p)

    lines, targets = analyse(bench, results)
    results["targets"] = targets
    differ = [f"{c}: {k}" for c, r in results["cases"].items() for k, v in r.get("checks", {}).items()
              if not v.get("equal")]
    results["results_differ"] = differ
    results["crashed"] = crashed
    out = BENCH_DIR / f"results-{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1, default=str))

    m = results["machine"]
    print()
    print(f"drover benchmark ({bench.tag}, {args.rounds} rounds, warm page cache) - {m.get('cpu', '?')}, "
          f"{m['cpus']} cpus; drover {m.get('git', '?')}; dask {m['dask']}, h5py {m['h5py']} (HDF5 {m['hdf5']})")
    print(f"/x {bench.shape[0]} x {bench.shape[1]} f64 ({bench.shape[0] * bench.shape[1] * 8 / GiB:.2f} GiB), "
          f"HDF5 chunks {HDF5_CHUNK}, block {bench.block}; tiny: {size['tiny_n']:,} elements, tasks of {TINY_TASK}")
    print()
    print("\n".join(lines))
    print()
    print(f"results: {out}")
    if differ:
        print(f"RESULTS DIFFER: {'; '.join(differ)}", file=sys.stderr)
    if crashed:
        print("a case CRASHED (see above)", file=sys.stderr)
    return 1 if (differ or crashed) else 0


if __name__ == "__main__":
    sys.exit(main())
