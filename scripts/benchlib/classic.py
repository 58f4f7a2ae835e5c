"""The classic cases on uncompressed float64: reduction `mean(x, axis=0)`, anomaly
`x - mean(x, axis=0)` into a full-size output, tiny tasks `sum(t)` with tasks of 10."""

from __future__ import annotations

import time
import uuid

import h5py
import numpy as np

from .common import BENCH_DIR, TINY_HDF5_CHUNK, TINY_TASK, rm, write_workload
from .contenders import H5Target, compare_arrays, compare_files, h5py_chunks, raw_read, raw_write


def workload(bench, case: str):
    explicit = list(bench.block) if bench.args.block_rows else None
    x = {"x": {"file": bench.big.name, "dataset": "/x", "chunks": explicit}}
    t = {"x": {"file": bench.tiny.name, "dataset": "/t", "chunks": [TINY_TASK]}}
    if case == "reduction":
        return write_workload(
            BENCH_DIR / f"reduction-{bench.tag}.toml", x,
            [{"expr": "mean(x, axis=0)", "file": "out/reduction-drover.h5", "dataset": "/m"}])
    if case == "anomaly":
        return write_workload(
            BENCH_DIR / f"anomaly-{bench.tag}.toml", x,
            [{"expr": "x - mean(x, axis=0)", "file": "out/anomaly-drover.h5", "dataset": "/a"}])
    if case == "tiny":
        return write_workload(
            BENCH_DIR / f"tiny-{bench.tag}.toml", t,
            [{"expr": "sum(x)", "file": "out/tiny-drover.h5", "dataset": "/s"}])
    raise ValueError(case)


def tiny_chunks(bench, who: str, n_elements: int | None = None) -> int:
    """Chunks of 10 elements a contender runs: drover all of /t, dask a prefix."""
    total = -(-(n_elements or bench.size["tiny_n"]) // TINY_TASK)
    if who in ("drover", "decode-limit"):
        return total
    want = bench.args.tiny_threads_chunks if who == "dask-threads" else bench.args.tiny_dist_chunks
    want = want or (bench.size["tiny_threads"] if who == "dask-threads" else bench.size["tiny_dist"])
    return min(total, want)


def run_one(bench, case: str, who: str) -> dict:
    import dask
    import dask.array as da

    a = bench.args
    if who == "raw-read":
        t0 = time.perf_counter()
        n = raw_read(bench.big, bench.buf)
        return {"seconds": time.perf_counter() - t0, "bytes": n}
    if who == "raw-read+write":
        dst = bench.out_path(case, "raw")
        rm(dst)
        t0 = time.perf_counter()
        n = raw_read(bench.big, bench.buf)
        raw_write(dst, bench.buf, n)
        return {"seconds": time.perf_counter() - t0, "bytes": 2 * n}
    if who == "h5py-chunks":
        t0 = time.perf_counter()
        n = h5py_chunks(bench.big)
        return {"seconds": time.perf_counter() - t0, "bytes": n}

    threads = bench.dask_kind(who)
    if case == "reduction":
        t0 = time.perf_counter()
        with h5py.File(bench.big, "r") as f:
            x = da.from_array(bench.dask_source(bench.big, "x", f, who), chunks=bench.block)
            m = bench.dask_compute(x.mean(axis=0), who)
        return {"seconds": time.perf_counter() - t0, "result": m}
    if case == "anomaly":
        dst = bench.out_path(case, who)
        rm(dst)
        t0 = time.perf_counter()
        with h5py.File(bench.big, "r") as f:
            x = da.from_array(bench.dask_source(bench.big, "x", f, who), chunks=bench.block)
            y = x - x.mean(axis=0)
            if threads:
                with h5py.File(dst, "w") as g:
                    d = g.create_dataset("a", shape=x.shape, dtype="f8", chunks=bench.out_chunks)
                    with dask.config.set(scheduler="threads", num_workers=a.workers):
                        da.store(y, d, lock=True, scheduler="threads", num_workers=a.workers)
            else:
                from distributed import Lock

                with h5py.File(dst, "w") as g:
                    g.create_dataset("a", shape=x.shape, dtype="f8", chunks=bench.out_chunks)
                lock = Lock(f"drover-bench-{uuid.uuid4().hex}")
                stored = da.store(y, H5Target(str(dst), "a"), lock=lock, compute=False)
                bench.client.compute(stored).result()
        return {"seconds": time.perf_counter() - t0}
    if case == "tiny":
        n_chunks = tiny_chunks(bench, who)
        t0 = time.perf_counter()
        with h5py.File(bench.tiny, "r") as f:
            t = da.from_array(bench.dask_source(bench.tiny, "t", f, who, n_chunks * TINY_TASK), chunks=TINY_TASK)
            s = bench.dask_compute(t.sum(), who)
        return {"seconds": time.perf_counter() - t0, "result": float(s), "chunks": n_chunks}
    raise ValueError(case)


def after_warmup(bench, case: str, who: str) -> None:
    if case == "anomaly" and who == "drover":
        with h5py.File(bench.out_path(case, "drover"), "r") as f:
            c = f["a"].chunks
        bench.out_chunks = tuple(c) if c else None   # dask writes the same layout


def check(bench, case: str, warm: dict) -> dict:
    """After the warm-up (outputs still on disk): drover against dask, np.allclose rtol=1e-9."""
    checks = {}
    drv = bench.out_path(case, "drover")
    have_drover = "drover" in warm
    if case == "reduction" and have_drover:
        with h5py.File(drv, "r") as f:
            m = f["m"][()]
        for who in ("dask-threads", "dask.distributed"):
            if who in warm and "result" in warm[who]:
                checks[f"drover vs {who}"] = compare_arrays(m, warm[who]["result"])
    elif case == "anomaly" and have_drover:
        with h5py.File(drv, "r") as f:
            chunks = f["a"].chunks
            checks["drover output shape == input shape"] = {
                "equal": f["a"].shape == bench.shape, "shape": list(f["a"].shape),
                "chunks": list(chunks) if chunks else None}
        for who in ("dask-threads", "dask.distributed"):
            if who in warm:
                checks[f"drover vs {who}"] = compare_files(drv, "a", bench.out_path(case, who), "a")
    elif case == "tiny":
        import dask.array as da

        with h5py.File(bench.tiny, "r") as f:
            if have_drover:
                with h5py.File(drv, "r") as g:
                    s = g["s"][()]
                # dask's sum of the whole of /t (its timed runs use a prefix with tasks of 10)
                full = da.from_array(f["t"], chunks=TINY_HDF5_CHUNK).sum().compute(scheduler="threads")
                checks["drover vs dask (whole /t, chunks 4096)"] = compare_arrays(s, full)
            for who in ("dask-threads", "dask.distributed"):
                if who in warm:
                    n = warm[who]["chunks"] * TINY_TASK
                    checks[f"{who} prefix vs numpy"] = compare_arrays(warm[who]["result"], np.sum(f["t"][:n]))
    return checks


def memory_bounds(bench, case: str) -> tuple[int, int]:
    """(block bytes a worker computes on, bytes the driver must hold) for the memory target."""
    block_bytes = int(np.prod(bench.block)) * 8
    if case == "tiny":
        return TINY_TASK * 8, 8                      # a 0-d output
    if case == "reduction":
        return block_bytes, bench.shape[1] * 8       # the whole (small) reduced output
    return block_bytes, block_bytes                  # one output block in flight to the writer

