"""The compressed cases (`mean(t, axis=0)` of a climate-like f32 field stored gzip+shuffle
with four chunk sizes, zstd, blosc-lz4, and packed int16) and the tiny-chunk cases
(`sum(t)` of 1-D f64 stored in HDF5 chunks of 10 elements, 200,000 or 2,000,000 chunks)."""

from __future__ import annotations

import time

import h5py
import numpy as np

from .classic import tiny_chunks
from .common import BENCH_DIR, CHECK_RTOL, COMPRESSED, TINY_CHUNKED, TINY_TASK, default_block, write_workload
from .contenders import compare_arrays, h5py_mean_chunks, run_decode_limit
from .data import compressed_path, tiny_chunked_path


def is_new(case: str) -> bool:
    return case in COMPRESSED or case in TINY_CHUNKED


def data_path(bench, case: str):
    if case in COMPRESSED:
        return compressed_path(COMPRESSED[case], bench.size["clim_t"])
    return tiny_chunked_path(TINY_CHUNKED[case])


def n_elements(case: str) -> int:
    return TINY_CHUNKED[case] * TINY_TASK


def workload(bench, case: str):
    p = data_path(bench, case)
    if case in COMPRESSED:
        # drover's default block (a multiple of the HDF5 chunk near 8 M elements). The
        # int16 file is CF-packed (scale_factor, add_offset); the case measures the
        # stored values against the decode limit, as h5py and dask read them, so CF
        # decoding is off.
        inputs = {"t": {"file": p.name, "dataset": "/t", "decode": False}}
        outputs = [{"expr": "mean(t, axis=0)", "file": f"out/{case}-drover.h5", "dataset": "/m"}]
    else:
        inputs = {"x": {"file": p.name, "dataset": "/t", "chunks": [TINY_TASK]}}
        outputs = [{"expr": "sum(x)", "file": f"out/{case}-drover.h5", "dataset": "/s"}]
    return write_workload(BENCH_DIR / f"{case}-{bench.tag}.toml", inputs, outputs)


def run_one(bench, case: str, who: str) -> dict:
    import dask.array as da

    path = data_path(bench, case)
    if who == "decode-limit":
        r = run_decode_limit(bench.decode_limit, path, "/t", bench.args.decode_threads, bench.args.timeout)
        if case in TINY_CHUNKED:
            r["chunks"] = tiny_chunks(bench, who, n_elements(case))
        return r
    if who == "h5py-chunks":
        t0 = time.perf_counter()
        m, n = h5py_mean_chunks(path)
        return {"seconds": time.perf_counter() - t0, "bytes": n, "result": m}

    if case in COMPRESSED:
        t0 = time.perf_counter()
        with h5py.File(path, "r") as f:
            x = da.from_array(bench.dask_source(path, "t", f, who), chunks=f["t"].chunks)
            # in float64, as drover computes (for int16 that is numpy's default anyway)
            m = bench.dask_compute(x.mean(axis=0, dtype=np.float64), who)
        return {"seconds": time.perf_counter() - t0, "result": m}
    n_chunks = tiny_chunks(bench, who, n_elements(case))
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        t = da.from_array(bench.dask_source(path, "t", f, who, n_chunks * TINY_TASK), chunks=TINY_TASK)
        s = bench.dask_compute(t.sum(), who)
    return {"seconds": time.perf_counter() - t0, "result": float(s), "chunks": n_chunks}


def _coverage(limit: dict, index: dict) -> dict:
    """Did the decode limit decode the chunks the HDF5 chunk index holds?"""
    got = {k: limit.get(k) for k in ("chunks", "bytes_stored", "bytes_decoded")}
    want = {"chunks": index["n_chunks"], "bytes_stored": index["bytes_stored"],
            "bytes_decoded": index["bytes_decoded"]}
    same = got["chunks"] == want["chunks"] and got["bytes_stored"] == want["bytes_stored"]
    return {"equal": bool(same), "decode_limit": got, "hdf5_index": want,
            "note": "chunks and bytes_stored must match; bytes_decoded is informative"}


def check(bench, case: str, warm: dict) -> dict:
    """Results against h5py's (compressed: rtol 1e-6 on float64 means; tiny: rtol 1e-9 on
    the sum), and the decode limit's chunk count and stored bytes against the HDF5 index."""
    checks = {}
    path = data_path(bench, case)
    drv = bench.out_path(case, "drover")
    index = bench.case_info.get(case)
    if case in COMPRESSED:
        if "h5py-chunks" in warm:
            ref = warm["h5py-chunks"]["result"]
        else:
            ref, _ = h5py_mean_chunks(path)
        if "drover" in warm:
            with h5py.File(drv, "r") as f:
                checks["drover vs h5py (mean in f64)"] = compare_arrays(f["m"][()], ref, rtol=CHECK_RTOL)
        for who in ("dask-threads", "dask.distributed"):
            if who in warm:
                checks[f"{who} vs h5py (mean in f64)"] = compare_arrays(warm[who]["result"], ref, rtol=CHECK_RTOL)
    else:
        with h5py.File(path, "r") as f:
            t = f["t"][()]
        if "drover" in warm:
            with h5py.File(drv, "r") as f:
                checks["drover vs numpy (whole /t via h5py)"] = compare_arrays(f["s"][()], np.sum(t))
        for who in ("dask-threads", "dask.distributed"):
            if who in warm:
                n = warm[who]["chunks"] * TINY_TASK
                checks[f"{who} prefix vs numpy"] = compare_arrays(warm[who]["result"], np.sum(t[:n]))
        del t
    if "decode-limit" in warm and index:
        checks["decode-limit covers the HDF5 chunks"] = _coverage(warm["decode-limit"]["limit"], index)
    return checks


def memory_bounds(bench, case: str) -> tuple[int, int]:
    """(block bytes a worker computes on, bytes the driver must hold) for the memory target."""
    if case in TINY_CHUNKED:
        return TINY_TASK * 8, 8
    info = bench.case_info[case]
    block = default_block(info["shape"], info["chunks"])
    return int(np.prod(block)) * 8, int(np.prod(info["shape"][1:])) * 8


def block_of(bench, case: str):
    if case in TINY_CHUNKED:
        return (TINY_TASK,)
    info = bench.case_info[case]
    return default_block(info["shape"], info["chunks"])
