"""Data-movement cases (issue 12): a float64 field (2048, 256, 512) = 2 GiB stored one
time step per HDF5 chunk (--quick: 256 steps, 256 MiB), uncompressed; the `-gzip` cases
read the same values compressed (gzip level 4 + shuffle, same chunks), which drover
reads through a staging copy (each chunk decoded once) where dask and Cubed decode
each chunk per task that needs part of it.

- rechunk: time-step chunks to time-series chunks (T, 16, 16), written to HDF5. drover:
  `expr = "t"` with `chunks = [T, 16, 16]`; dask: `x.rechunk((T, 16, 16))` stored into an
  HDF5 dataset of those chunks (threads: the h5py dataset under dask's lock;
  distributed: H5Target under a distributed Lock); Cubed: `cubed.rechunk` with its
  processes executor (2 workers, allowed_mem 2 GB) written to Zarr (Cubed writes from
  parallel processes, which one HDF5 file cannot take without a lock).
- median-time: `nanmedian(t, axis=0)`. dask: `da.nanmedian` after rechunking time
  whole (dask requires it); Cubed has no median (left out, with a note).

Targets: drover faster than every contender that completes, and less peak memory than
dask. Peak memory: drover's driver and workers (sampled VmHWM); dask threads and Cubed
run in a child Python process whose tree is sampled the same way (its imports
included, as drover's runtime is); dask.distributed: its workers' VmHWM, reset before
the case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from .common import BENCH_DIR, CONTENDERS, OUT_DIR, BenchError, MiB, log, write_workload
from .contenders import H5Source, H5Target, compare_arrays
from .memory import TreeSampler

GRID = (256, 512)
STEPS = {"full": 2048, "quick": 256}
TS_CHUNK = (16, 16)            # time-series chunks: (T, 16, 16)
CASES = ["rechunk", "median-time", "rechunk-gzip", "median-time-gzip"]
NO_MEDIAN = "cubed left out: Cubed 0.27 has no median or quantile"
NOTES = {"median-time": [NO_MEDIAN], "median-time-gzip": [NO_MEDIAN]}


def is_movement(case: str) -> bool:
    return case in CASES


def data_path(bench, case: str | None = None) -> Path:
    gz = "-gzip" if case and case.endswith("-gzip") else ""
    return BENCH_DIR / f"steps-{STEPS[bench.tag]}{gz}.h5"


def base_case(case: str) -> str:
    return case.removesuffix("-gzip")


def _made_with(path: Path, spec: str) -> bool:
    """Whether `path` holds the data `spec` describes (made by an earlier run)."""
    try:
        with h5py.File(path, "r") as f:
            return f["t"].attrs.get("bench_spec") == spec
    except (OSError, KeyError):
        return False


def ensure_data(size_tag: str) -> Path:
    t = STEPS[size_tag]
    path = BENCH_DIR / f"steps-{t}.h5"
    spec = json.dumps({"t": t, "grid": GRID, "seed": 20261204, "nan": 0.001})
    if _made_with(path, spec):
        return path
    log(f"making {path.name}: ({t}, {GRID[0]}, {GRID[1]}) f64, one time step per chunk")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    rng = np.random.default_rng(20261204)
    with h5py.File(tmp, "w") as f:
        d = f.create_dataset("t", shape=(t,) + GRID, dtype="f8", chunks=(1,) + GRID)
        for i in range(0, t, 64):
            x = 280.0 + 10.0 * rng.standard_normal((min(64, t - i),) + GRID)
            x[rng.random(x.shape) < 0.001] = np.nan
            d[i:i + len(x)] = x
        d.attrs["bench_spec"] = spec
    os.replace(tmp, path)
    return path


def ensure_gzip(size_tag: str) -> Path:
    """The same values as `ensure_data`'s, gzip (level 4) + shuffle in the same chunks."""
    plain = ensure_data(size_tag)
    path = plain.with_name(plain.stem + "-gzip.h5")
    with h5py.File(plain, "r") as f:
        spec = f["t"].attrs["bench_spec"] + " gzip4+shuffle"
    if _made_with(path, spec):
        return path
    log(f"making {path.name}: {plain.name} with gzip level 4 + shuffle")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with h5py.File(plain, "r") as f, h5py.File(tmp, "w") as g:
        s = f["t"]
        d = g.create_dataset("t", shape=s.shape, dtype=s.dtype, chunks=s.chunks, compression="gzip",
                             compression_opts=4, shuffle=True)
        for i in range(0, s.shape[0], 64):
            d[i:i + 64] = s[i:i + 64]
        d.attrs["bench_spec"] = spec
    os.replace(tmp, path)
    return path


def steps(bench) -> int:
    return STEPS[bench.tag]


def out_chunks(bench) -> tuple[int, int, int]:
    return (steps(bench),) + TS_CHUNK


def workload(bench, case: str):
    p = data_path(bench, case)
    inputs = {"t": {"file": p.name, "dataset": "/t"}}
    if base_case(case) == "rechunk":
        outputs = [{"expr": "t", "file": f"out/{case}-drover.h5", "dataset": "/t", "chunks": list(out_chunks(bench))}]
    else:
        outputs = [{"expr": "nanmedian(t, axis=0)", "file": f"out/{case}-drover.h5", "dataset": "/m"}]
    return write_workload(BENCH_DIR / f"{case}-{bench.tag}.toml", inputs, outputs)


# ---- contenders in a child process (dask threads, Cubed): timed inside, memory sampled outside

def child_main(argv: list[str]) -> None:
    """`python -m benchlib.movement CASE WHO SRC OUT STEPS WORKERS`: one contender, prints
    {"seconds": ...} (timed after the imports)."""
    case, who, src, out, t, workers = base_case(argv[0]), argv[1], argv[2], argv[3], int(argv[4]), int(argv[5])
    chunks = (t,) + TS_CHUNK
    if who == "dask-threads":
        import dask
        import dask.array as da

        t0 = time.perf_counter()
        with h5py.File(src, "r") as f, dask.config.set(scheduler="threads", num_workers=workers):
            x = da.from_array(f["t"], chunks=(1,) + GRID)
            if case == "rechunk":
                with h5py.File(out, "w") as g:
                    d = g.create_dataset("t", shape=x.shape, dtype=x.dtype, chunks=chunks)
                    da.store(x.rechunk(chunks), d, lock=True)
            else:
                m = da.nanmedian(x.rechunk({0: -1, 1: "auto", 2: "auto"}), axis=0).compute()
                np.save(out, m)
        print(json.dumps({"seconds": time.perf_counter() - t0}))
        return
    if who == "cubed":
        import cubed

        t0 = time.perf_counter()
        spec = cubed.Spec(work_dir=str(Path(out).parent / "cubed-work"), allowed_mem="2GB",
                          executor_name="processes", executor_options={"max_workers": workers})
        x = cubed.from_array(H5Source(src, "t"), chunks=(1,) + GRID, spec=spec)
        cubed.to_zarr(cubed.rechunk(x, chunks), out)
        print(json.dumps({"seconds": time.perf_counter() - t0}))
        return
    raise SystemExit(f"unknown contender {who}")


def _child(bench, case: str, who: str) -> dict:
    out = bench.out_path(case, who)
    if who == "cubed":
        out = out.with_suffix(".zarr")
    elif base_case(case) == "median-time":
        out = out.with_suffix(".npy")
    argv = [sys.executable, "-m", "benchlib.movement", case, who, str(data_path(bench, case)), str(out),
            str(steps(bench)), str(bench.args.workers)]
    wall0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=str(Path(__file__).resolve().parent.parent), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    sampler = TreeSampler(p.pid)
    sampler.start()
    timer = threading.Timer(bench.args.timeout, p.kill)
    timer.start()
    try:
        stdout, stderr = p.communicate()
    finally:
        timer.cancel()
        sampler.stop()
    if p.returncode != 0:
        tail = " | ".join(stderr.decode(errors="replace").strip().splitlines()[-6:])
        raise BenchError(f"{who} failed (exit {p.returncode}): {tail}")
    r = json.loads(stdout.decode().strip().splitlines()[-1])
    peaks = [kb * 1024 for kb in sampler.peak_kb.values()]
    r.update({"wall_seconds": time.perf_counter() - wall0, "peak_bytes": max(peaks, default=0),
              "peak_sum_bytes": sum(peaks), "output": str(out)})
    return r


def run_one(bench, case: str, who: str) -> dict:
    if who in ("dask-threads", "cubed"):
        return _child(bench, case, who)
    # dask.distributed on the warm cluster
    import dask.array as da
    from distributed import Lock

    src = data_path(bench, case)
    t0 = time.perf_counter()
    x = da.from_array(H5Source(str(src), "t"), chunks=(1,) + GRID)
    if base_case(case) == "rechunk":
        out = bench.out_path(case, who)
        chunks = out_chunks(bench)
        with h5py.File(out, "w") as g:
            g.create_dataset("t", shape=x.shape, dtype=x.dtype, chunks=chunks)
        lock = Lock(f"drover-bench-{uuid.uuid4().hex}")
        stored = da.store(x.rechunk(chunks), H5Target(str(out), "t"), lock=lock, compute=False)
        bench.client.compute(stored).result()
        return {"seconds": time.perf_counter() - t0}
    m = bench.dask_compute(da.nanmedian(x.rechunk({0: -1, 1: "auto", 2: "auto"}), axis=0), who)
    return {"seconds": time.perf_counter() - t0, "result": m}


def _median_reference(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        d = f["t"]
        return np.concatenate([np.nanmedian(d[:, i:i + 32, :], axis=0) for i in range(0, d.shape[1], 32)])


def check(bench, case: str, warm: dict) -> dict:
    src = data_path(bench, case)
    checks = {}
    if base_case(case) == "median-time":
        ref = _median_reference(src)
        for who, r in warm.items():
            if who == "drover":
                with h5py.File(bench.out_path(case, who), "r") as f:
                    got = f["m"][()]
            elif "result" in r:
                got = r["result"]
            else:
                got = np.load(r["output"])
            checks[f"{who} vs numpy nanmedian (exact)"] = compare_arrays(got, ref, rtol=0.0, equal_nan=True)
        return checks
    with h5py.File(src, "r") as f:
        d = f["t"]
        picks = [np.s_[:, 0:16, 0:16], np.s_[:, 100:140, 200:260], np.s_[:, -16:, -16:]]
        want = [d[p] for p in picks]
    for who, r in warm.items():
        if who == "cubed":
            import zarr

            z = zarr.open(r["output"], mode="r")
            got = [z[p] for p in picks]
            layout = f"zarr chunks {z.chunks}"
        else:
            with h5py.File(bench.out_path(case, who), "r") as f:
                got = [f["t"][p] for p in picks]
                layout = f"chunks {f['t'].chunks}"
        checks[f"{who} vs the input (3 columns; {layout})"] = compare_arrays(
            np.concatenate([g.ravel() for g in got]), np.concatenate([w.ravel() for w in want]), rtol=0.0, equal_nan=True)
    return checks


def cleanup(bench, case: str, who: str) -> None:
    import shutil

    for p in (bench.out_path(case, who), bench.out_path(case, who).with_suffix(".npy"),
              bench.out_path(case, who).with_suffix(".zarr"), OUT_DIR / "cubed-work"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def peak_of(res: dict, who: str) -> int | None:
    """The contender's peak memory over the timed runs: the sum over its processes."""
    if who == "drover":
        mem = res.get("drover_memory") or {}
        ws = mem.get("worker_peak_bytes") or []
        return (mem.get("driver_peak_bytes") or 0) + sum(ws) if ws else None
    if who == "dask.distributed":
        dk = res.get("dask_worker_peak_bytes")
        return sum(dk) if dk else None
    runs = res.get("runs", {}).get(who, [])
    return max((r.get("peak_sum_bytes", 0) for r in runs), default=None)


def summary(case: str, res: dict, med, add) -> dict:
    d = med(case, "drover")
    row = {"drover": d}
    oks = []
    mem = {w: peak_of(res, w) for w in CONTENDERS[case] if w in res.get("stats", {})}
    for who in CONTENDERS[case][1:]:
        v = med(case, who)
        row[who] = v
        if d and v:
            oks.append(v / d > 1.0)
            add(case, f"{who} / drover", f"{v / d:.2f}x", "> 1x (faster)", oks[-1])
        if mem.get("drover") and mem.get(who):
            ok = mem["drover"] < mem[who] if who.startswith("dask") else None
            if ok is not None:
                oks.append(ok)
            add(case, f"peak memory drover / {who}", f"{mem['drover'] / MiB:.0f}/{mem[who] / MiB:.0f} MiB",
                "< dask" if ok is not None else "(reference)", ok)
    row["peak_bytes"] = mem
    row["verdict"] = "MET" if oks and all(oks) else ("NOT MET" if False in oks else "n/a")
    return row


if __name__ == "__main__":
    child_main(sys.argv[1:])
