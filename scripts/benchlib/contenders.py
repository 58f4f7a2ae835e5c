"""The contenders other than dask's own calls: raw reads, h5py loops, drover, the decode
limit; the picklable HDF5 stand-ins dask.distributed needs; result comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from .common import MiB, BenchError
from .memory import TreeSampler

_plugins = None


def load_plugins() -> bool:
    """Register hdf5plugin's filters (zstd, blosc, ...) with h5py's HDF5, once per process."""
    global _plugins
    if _plugins is None:
        try:
            import hdf5plugin  # noqa: F401

            _plugins = True
        except ImportError:
            _plugins = False
    return _plugins


def plugin_path() -> str | None:
    """hdf5plugin's folder of filter plugins, for HDF5_PLUGIN_PATH (None without it)."""
    try:
        import hdf5plugin

        return str(hdf5plugin.PLUGIN_PATH)
    except ImportError:
        return None


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


def h5py_mean_chunks(path: Path, name: str = "t") -> tuple[np.ndarray, int]:
    """mean(axis=0) of a dataset chunked along axis 0 only, read HDF5 chunk by chunk
    (read_direct into one preallocated chunk buffer), summed in float64, one thread.
    Returns the mean and the decoded bytes."""
    load_plugins()
    with h5py.File(path, "r") as f:
        ds = f[name]
        n = ds.shape[0]
        ct = ds.chunks[0]
        if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
            raise BenchError(f"{path.name}: chunks {ds.chunks} do not span axes 1.. of {ds.shape}")
        buf = np.empty((ct,) + ds.shape[1:], ds.dtype)
        acc = np.zeros(ds.shape[1:], np.float64)
        for t0 in range(0, n, ct):
            k = min(ct, n - t0)
            ds.read_direct(buf, np.s_[t0 : t0 + k], np.s_[0:k])
            acc += buf[:k].sum(axis=0, dtype=np.float64)
        acc /= n
    return acc, n * int(np.prod(ds.shape[1:])) * buf.dtype.itemsize


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
            load_plugins()   # in a dask worker process: register the plugin filters first
            self._ds = h5py.File(self.path, "r")[self.dataset]
        return self._ds[key]


def run_drover(drover: str, workload: Path, workers: int, timeout: float, env: dict | None = None,
               extra: list[str] | None = None) -> dict:
    """The whole `drover run` command, wall-timed here; its JSON, and peak RSS. ENV: the
    environment (default: this process's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        argv = [drover, "run", str(workload), "--workers", str(workers), "--json"] + list(extra or [])
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
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
    summary = last_json_line(stdout)
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


def last_json_line(stdout: str):
    """The last line of `stdout` that parses as JSON (None when no line does)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def run_decode_limit(binary: str, path: Path, dataset: str, threads: int, timeout: float) -> dict:
    """`decode_limit FILE DATASET --threads N`: decodes every chunk (read raw from the page
    cache, no HDF5) with the fastest decoders on N threads and prints one JSON line
    {"seconds", "chunks", "bytes_stored", "bytes_decoded"}. Its own `seconds` is the time;
    the wall time of the command is kept beside it."""
    argv = [binary, str(path), dataset, "--threads", str(threads)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(argv)}` killed after {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    stdout = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        tail = "\n".join(p.stderr.decode(errors="replace").strip().splitlines()[-10:])
        raise BenchError(f"`{' '.join(argv)}` failed (exit code {p.returncode}):\n{tail}")
    out = last_json_line(stdout)
    if not isinstance(out, dict) or not isinstance(out.get("seconds"), (int, float)):
        raise BenchError(f"`{' '.join(argv)}` printed no JSON object with \"seconds\":\n{stdout[-2000:]}")
    return {"seconds": float(out["seconds"]), "wall_seconds": wall, "limit": out}


def compare_files(a: Path, da_: str, b: Path, db: str, rows_per_slab: int = 256, rtol: float = 1e-9) -> dict:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        x, y = fa[da_], fb[db]
        if x.shape != y.shape:
            return {"equal": False, "why": f"shapes differ: {x.shape} vs {y.shape}"}
        worst = 0.0
        if x.ndim == 0:
            xa, ya = np.asarray(x[()]), np.asarray(y[()])
            ok = bool(np.allclose(xa, ya, rtol=rtol))
            worst = float(abs(xa - ya))
        else:
            ok = True
            for r0 in range(0, x.shape[0], rows_per_slab):
                xa, ya = x[r0 : r0 + rows_per_slab], y[r0 : r0 + rows_per_slab]
                ok = ok and bool(np.allclose(xa, ya, rtol=rtol))
                worst = max(worst, float(np.max(np.abs(xa - ya))) if xa.size else 0.0)
        return {"equal": ok, "shape": list(x.shape), "max_abs_diff": worst}


def compare_arrays(a, b, rtol: float = 1e-9, equal_nan: bool = False) -> dict:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return {"equal": False, "why": f"shapes differ: {a.shape} vs {b.shape}"}
    both = ~(np.isnan(a) & np.isnan(b)) if equal_nan else np.ones(a.shape, bool)
    return {
        "equal": bool(np.allclose(a, b, rtol=rtol, equal_nan=equal_nan)),
        "shape": list(a.shape),
        "max_abs_diff": float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0,
        "max_rel_diff": _max_rel(a[both], b[both]),
        "rtol": rtol,
        **({"nan_positions": int((~both).sum())} if equal_nan else {}),
    }


def _max_rel(a, b) -> float:
    if not a.size:
        return 0.0
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(den > 0, np.abs(a - b) / den, 0.0)
    return float(np.max(rel))
