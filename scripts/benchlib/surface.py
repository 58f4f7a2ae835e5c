"""Cases of the expression surface (issue 10), against dask threads and
dask.distributed. Target: drover faster than both.

- masked-mean: a masked mean over time of the climate-like field
  (`nanmean(where(t > 280, t, nan), axis=0)`, the gzip-2m file; dask:
  `da.nanmean(da.where(...))`).
- matmul: `a @ b` of two 3000 x 3000 float64 matrices stored in HDF5 chunks of
  500 x 500 (dask: `da.from_array(..., chunks=(1000, 1000))`, `a @ b`, computed into
  memory; drover writes its result to a file, which dask's timing leaves out).
- gzip-anomaly: `t - mean(t, axis=0)` of the gzip-2m field written as float32 with
  gzip level 4 and shuffle in chunks (16, 181, 360): drover with 2 workers, drover with
  1 worker of 1 thread (`--workers 1 --threads 1`; target: 2 workers at least 1.8x
  faster), and dask threads and
  dask.distributed writing the same compressed output through xarray's `to_netcdf`
  (h5netcdf, same chunks, level and shuffle; dask chunks of 16 steps)."""

from __future__ import annotations

import time

import h5py
import numpy as np

from .common import BENCH_DIR, CHECK_RTOL, COMPRESSED, default_block, write_workload
from .contenders import compare_arrays
from .data import compressed_path, ensure_compressed

THRESHOLD = 280.0
SURFACE = {"masked-mean": COMPRESSED["gzip-2m"], "matmul": None,   # case -> the stored field it reads
           "gzip-anomaly": COMPRESSED["gzip-2m"]}
GZ_CHUNKS = (16, 181, 360)
DROVER_EXPR = f"nanmean(where(t > {THRESHOLD}, t, nan), axis=0)"
MATMUL_N = 3000
MATMUL_CHUNKS = (500, 500)
MATMUL_DASK_CHUNKS = (1000, 1000)


def is_surface(case: str) -> bool:
    return case in SURFACE


def matmul_path():
    return BENCH_DIR / f"matmul-{MATMUL_N}.h5"


def ensure_data(case: str, size: dict) -> None:
    if case != "matmul":
        ensure_compressed(SURFACE[case], size["clim_t"])
        return
    path = matmul_path()
    if path.exists():
        return
    rng = np.random.default_rng(20261202)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        for name in ("a", "b"):
            f.create_dataset(name, data=rng.normal(size=(MATMUL_N, MATMUL_N)), chunks=MATMUL_CHUNKS)
    tmp.rename(path)


def index_dataset(case: str) -> str:
    return "a" if case == "matmul" else "t"


def data_path(bench, case: str):
    if case == "matmul":
        return matmul_path()
    return compressed_path(SURFACE[case], bench.size["clim_t"])


def workload(bench, case: str):
    p = data_path(bench, case)
    if case == "matmul":
        inputs = {n: {"file": p.name, "dataset": f"/{n}"} for n in ("a", "b")}
        outputs = [{"expr": "a @ b", "file": f"out/{case}-drover.h5", "dataset": "/m"}]
    elif case == "gzip-anomaly":
        inputs = {"t": {"file": p.name, "dataset": "/t"}}
        outputs = [{"expr": "t - mean(t, axis=0)", "file": f"out/{case}-drover.h5", "dataset": "/anom",
                    "dtype": "f32", "compression": "gzip", "level": 4, "shuffle": True}]
    else:
        inputs = {"t": {"file": p.name, "dataset": "/t"}}
        outputs = [{"expr": DROVER_EXPR, "file": f"out/{case}-drover.h5", "dataset": "/m"}]
    return write_workload(BENCH_DIR / f"{case}-{bench.tag}.toml", inputs, outputs)


def reference(case: str, path) -> np.ndarray:
    if case == "matmul":
        with h5py.File(path, "r") as f:
            return f["a"][()] @ f["b"][()]
    return masked_mean_reference(path)


def masked_mean_reference(path) -> np.ndarray:
    """The masked mean by a plain loop over the HDF5 chunks with numpy (one thread)."""
    with h5py.File(path, "r") as f:
        t = f["t"]
        s = np.zeros(t.shape[1:])
        n = np.zeros(t.shape[1:])
        step = t.chunks[0]
        for i in range(0, t.shape[0], step):
            x = t[i:i + step].astype(np.float64)
            m = x > THRESHOLD
            s += np.where(m, x, 0.0).sum(axis=0)
            n += m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / n


def _gzip_anomaly(bench, case: str, who: str) -> dict:
    """dask writing the compressed anomaly through xarray's to_netcdf (h5netcdf)."""
    import dask
    import dask.array as da
    import xarray as xr

    from .contenders import run_drover

    if who == "drover-1w":
        bench.out_path(case, "drover").unlink(missing_ok=True)
        return run_drover(bench.args.drover, bench.workload(case), 1, bench.args.timeout, env=bench.drover_env,
                          extra=["--threads", "1"])
    path = data_path(bench, case)
    out = bench.out_path(case, who)
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        x = da.from_array(bench.dask_source(path, "t", f, who), chunks=GZ_CHUNKS).astype(np.float64)
        anom = (x - x.mean(axis=0)).astype(np.float32)
        ds = xr.Dataset({"anom": (("time", "lat", "lon"), anom)})
        enc = {"anom": {"compression": "gzip", "compression_opts": 4, "shuffle": True, "chunksizes": GZ_CHUNKS}}
        if bench.dask_kind(who):
            with dask.config.set(scheduler="threads", num_workers=bench.args.workers):
                ds.to_netcdf(out, engine="h5netcdf", encoding=enc)
        else:
            with bench.client.as_current():
                ds.to_netcdf(out, engine="h5netcdf", encoding=enc)
    return {"seconds": time.perf_counter() - t0}


def run_one(bench, case: str, who: str) -> dict:
    import dask.array as da

    if case == "gzip-anomaly":
        return _gzip_anomaly(bench, case, who)
    path = data_path(bench, case)
    t0 = time.perf_counter()
    if case == "matmul":
        with h5py.File(path, "r") as f:
            a = da.from_array(bench.dask_source(path, "a", f, who), chunks=MATMUL_DASK_CHUNKS)
            b = da.from_array(bench.dask_source(path, "b", f, who), chunks=MATMUL_DASK_CHUNKS)
            m = bench.dask_compute(a @ b, who)
        return {"seconds": time.perf_counter() - t0, "result": m}
    with h5py.File(path, "r") as f:
        x = da.from_array(bench.dask_source(path, "t", f, who), chunks=f["t"].chunks).astype(np.float64)
        m = bench.dask_compute(da.nanmean(da.where(x > THRESHOLD, x, np.nan), axis=0), who)
    return {"seconds": time.perf_counter() - t0, "result": m}


def _check_gzip_anomaly(bench, case: str, warm: dict) -> dict:
    """Time slices of every contender's output against numpy (h5py, float64)."""
    path = data_path(bench, case)
    with h5py.File(path, "r") as f:
        t = f["t"]
        total = np.zeros(t.shape[1:])
        for i in range(0, t.shape[0], 64):
            total += t[i:i + 64].astype(np.float64).sum(axis=0)
        mean = total / t.shape[0]
        picks = [slice(0, 16), slice(t.shape[0] // 2, t.shape[0] // 2 + 16), slice(t.shape[0] - 16, t.shape[0])]
        want = {k: (t[s].astype(np.float64) - mean).astype(np.float32) for k, s in enumerate(picks)}
    checks = {}
    for who in warm:
        if who == "drover-1w":
            continue
        with h5py.File(bench.out_path(case, who), "r") as f:
            d = f["anom"]
            got = np.concatenate([d[s] for s in picks])
            filt = f"gzip {d.compression_opts}, shuffle {d.shuffle}, chunks {d.chunks}"
        ref = np.concatenate([want[k] for k in range(len(picks))])
        checks[f"{who} vs numpy (3 time slices; {filt})"] = compare_arrays(got, ref, rtol=CHECK_RTOL)
    return checks


def check(bench, case: str, warm: dict) -> dict:
    if case == "gzip-anomaly":
        return _check_gzip_anomaly(bench, case, warm)
    ref = reference(case, data_path(bench, case))
    what = "numpy a @ b" if case == "matmul" else "numpy loop (masked mean)"
    checks = {}
    if "drover" in warm:
        with h5py.File(bench.out_path(case, "drover"), "r") as f:
            checks[f"drover vs {what}"] = compare_arrays(f["m"][()], ref, rtol=CHECK_RTOL, equal_nan=True)
    for who in ("dask-threads", "dask.distributed"):
        if who in warm:
            checks[f"{who} vs numpy loop"] = compare_arrays(warm[who]["result"], ref, rtol=CHECK_RTOL, equal_nan=True)
    return checks


def memory_bounds(bench, case: str) -> tuple[int, int]:
    if case == "matmul":
        # tiles of each factor up to 8 M elements (exec::gemm::tile_block); the driver
        # holds the product.
        return (8 << 20) * 8 * 3, MATMUL_N * MATMUL_N * 8 * 2
    info = bench.case_info[case]
    block = default_block(info["shape"], info["chunks"])
    held = int(np.prod(info["shape"][1:])) * 8 * 2
    if case == "gzip-anomaly":
        # A compressed output's blocks are sent to the driver (its writer writes them as
        # ready chunks): as for the classic anomaly, the driver must hold one output
        # block, at most its float32 size before compression.
        held += int(np.prod(block)) * 4
    return int(np.prod(block)) * 8, held


def block_of(bench, case: str):
    if case == "matmul":
        return MATMUL_CHUNKS
    info = bench.case_info[case]
    return default_block(info["shape"], info["chunks"])


def summary(case: str, med, add) -> dict:
    d, thr, dist = med(case, "drover"), med(case, "dask-threads"), med(case, "dask.distributed")
    row = {"drover": d, "dask-threads": thr, "dask.distributed": dist}
    oks = []
    one = med(case, "drover-1w")
    if d and one:
        row["drover-1w"] = one
        oks.append(one / d >= 1.8)
        add(case, "drover 1 worker / 2 workers", f"{one / d:.2f}x", ">= 1.8x", oks[-1])
    for who, v in (("dask-threads", thr), ("dask.distributed", dist)):
        if d and v:
            oks.append(v / d > 1.0)
            add(case, f"{who} / drover", f"{v / d:.2f}x", "> 1x (faster)", oks[-1])
    row["verdict"] = "MET" if oks and all(oks) else ("NOT MET" if False in oks else "n/a")
    return row
