"""drover's benchmark runner: drover vs the hardware limit vs dask, same files, one run.

    bench.py [--quick] [--rounds R] [--cases CASE,...] [--drover BIN]
    bench.py --data-only [--quick] [--cases ...]   only make (or check) the data

Normally started by scripts/bench.sh, which also prepares the venv and the build.
Method (docs/PERFORMANCE.md has the long form):

* Data (scratch/bench/, fixed seed, kept when present and up to date): a float64 dataset
  /x of 8192 x 32768 (2 GiB) with HDF5 chunks 64 x 4096, and a 1-D float64 /t of
  1,500,000 elements (HDF5 chunks 4096) for tiny tasks (--quick: 1024 x 32768 and
  200,000). A climate-like float32 field (2920, 181, 360) (--quick: 365 time steps)
  stored gzip(4)+shuffle with chunks of 1, 8, 73 and 256 time steps (256 KiB, 2 MiB,
  19 MiB, 64 MiB), zstd and blosc-lz4 with 8, and as packed int16 (scale_factor,
  add_offset) gzip+shuffle with 73. 1-D float64 in HDF5 chunks of 10 elements:
  200,000 and 2,000,000 chunks.
* Cases: reduction `mean(x, axis=0)`; anomaly `x - mean(x, axis=0)` into a full-size
  output file; tiny tasks `sum(t)` with tasks of 10 elements (chunks/s); gzip-256k,
  gzip-2m, gzip-19m, gzip-64m, zstd, blosc-lz4, int16: `mean(t, axis=0)` (int16: of the
  raw integers); tiny-200k, tiny-2m: `sum(t)`, one task per HDF5 chunk of 10;
  masked-mean: `nanmean(where(t > 280, t, nan), axis=0)` of the gzip-2m field against
  dask's `da.nanmean(da.where(...))` (target: drover faster than both dask).
  tasks-true, tasks-10ms (task jobs, benchlib/taskjobs.py): 20,000 x `/bin/true` and
  2,000 x `/bin/sleep 0.01` on 2 slots: `drover submit --array 1-N --wait` on a warm
  server + 1 worker of 2 threads, `seq N | xargs -P 2 -I{} CMD`, dask `client.map` of
  `subprocess.run` on the warm LocalCluster, Parsl's HighThroughputExecutor `bash_app`
  (targets: drover >= 0.7x xargs' tasks/s, >= 10x faster than dask and Parsl;
  --quick: a tenth of the tasks).
  tiny-dashboard (benchlib/dashcase.py): the tiny workload by `drover run --connect` on a
  warm server, without and with headless Chromium on its dashboard (target: <= 1.05x).
  Groups: all, classic (reduction,anomaly,tiny), compressed, tinychunks, surface (masked-mean, matmul),
  taskjobs (tasks-true, tasks-10ms)
  (--quick leaves tiny-2m out of a group; name it to run it).
* Contenders: raw read of the file's bytes from the page cache (plain Python readinto a
  preallocated buffer: the hardware limit; for the anomaly, read + write of those bytes),
  h5py chunk-by-chunk read (second reference; compressed cases: the mean, one thread),
  drover (the whole `drover run W.toml --workers 2 --json` command, wall time measured
  here), dask threads (num_workers=2, `da.from_array(h5py_dataset)`) and
  dask.distributed on a warm LocalCluster (2 processes x 1 thread, started once outside
  any timed region, its processes stopped with SIGSTOP while the other contenders run so
  that its timers take no CPU from them; it reads through H5Source, a picklable
  stand-in for the h5py dataset). dask gets drover's block shape for /x, the HDF5 chunks for the compressed
  files. The decode limit (compressed and tiny-chunk cases): `decode_limit FILE /t
  --threads N`, every chunk decoded without HDF5 on all cores; its own `seconds`. For
  tiny tasks dask runs a prefix of /t (a rate; the whole would take minutes).
* One untimed warm-up run of every contender, result checks (drover vs dask, rtol 1e-9;
  compressed cases: drover, dask threads and distributed vs h5py's float64 mean, rtol
  1e-6), then R rounds whose contender order rotates every round; median and min.
* Peak RSS of drover's driver and each worker (drover's JSON keys when present, and
  always /proc VmHWM of the process tree sampled every 20 ms) and of dask's workers.
* A table with ratios and the issue's targets (MET / NOT MET), and
  scratch/bench/results-<timestamp>.json. Exit 0 unless something crashed or results
  differ: time is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import traceback

import h5py
import numpy as np

from .common import (ALL_CASES, BENCH_DIR, CASE_GROUPS, COMPRESSED, HDF5_CHUNK, OUT_DIR, QUICK_SKIPS, ROOT, SIZES,
                     TINY_CHUNKED, TINY_TASK, GiB, log, rm)
from . import dashcase, movement, surface, taskjobs
from .data import ensure_big, ensure_compressed, ensure_tiny, ensure_tiny_chunked
from .memory import drover_memory
from .report import analyse, stats
from .runner import Bench


def machine_info(drover: str | None, decode_limit: str | None) -> dict:
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
        import hdf5plugin

        info["hdf5plugin"] = hdf5plugin.version
    except ImportError:
        info["hdf5plugin"] = None
    try:
        import parsl

        info["parsl"] = parsl.__version__
    except ImportError:
        info["parsl"] = None
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
    for key, path in (("drover_binary", drover), ("decode_limit_binary", decode_limit)):
        if path and os.path.exists(path):
            info[key] = path
            info[key + "_mtime"] = dt.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(timespec="seconds")
    return info


def _select_cases(spec: str, quick: bool) -> list[str]:
    out: list[str] = []
    for item in (c.strip() for c in spec.split(",")):
        if not item:
            continue
        if item in CASE_GROUPS:
            names = [c for c in CASE_GROUPS[item] if not (quick and c in QUICK_SKIPS)]
        elif item in ALL_CASES:
            names = [item]
        else:
            raise ValueError(item)
        out.extend(n for n in names if n not in out)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="small data (1024 x 32768, 200,000 tiny elements, 365 time steps of the climate-like "
                         "field, tiny-2m left out): a smoke test of the harness")
    ap.add_argument("--cases", default="all",
                    help=f"comma-separated cases or groups: {','.join(ALL_CASES)}; groups "
                         f"{', '.join(CASE_GROUPS)} (default: all)")
    ap.add_argument("--drover", default=os.environ.get("DROVER_BIN", str(ROOT / "target" / "release" / "drover")),
                    help="the drover binary (default: $DROVER_BIN or target/release/drover)")
    ap.add_argument("--decode-limit", default=os.environ.get(
                        "DECODE_LIMIT_BIN", str(ROOT / "target" / "release" / "examples" / "decode_limit")),
                    help="the decode-limit binary (default: $DECODE_LIMIT_BIN or "
                         "target/release/examples/decode_limit; skipped with a note when absent)")
    ap.add_argument("--decode-threads", type=int, default=os.cpu_count() or 1,
                    help="threads of the decode limit (default: every core, %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="drover workers and dask workers/threads (default 2)")
    ap.add_argument("--block-rows", type=int, default=0,
                    help="rows per block of /x for drover and dask (default: drover's default block, mirrored "
                         "for dask)")
    ap.add_argument("--tiny-threads-chunks", type=int, default=0,
                    help="tiny chunks given to dask threads (default 20,000; quick 2,000)")
    ap.add_argument("--tiny-dist-chunks", type=int, default=0,
                    help="tiny chunks given to dask.distributed (default 2,000; quick 500)")
    ap.add_argument("--no-distributed", action="store_true", help="skip dask.distributed")
    ap.add_argument("--plugin-path", action="store_true",
                    help="point drover's HDF5_PLUGIN_PATH at hdf5plugin's filters (drover decodes "
                         "the benchmark's filters itself and needs none; off by default)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a drover run is killed")
    ap.add_argument("--data-only", action="store_true", help="only make (or check) the data, then exit")
    args = ap.parse_args(argv)
    try:
        args.cases = _select_cases(args.cases, args.quick)
    except ValueError as e:
        ap.error(f"unknown case {str(e)!r}; known: {', '.join(ALL_CASES)}; groups: {', '.join(CASE_GROUPS)}")
    if not args.cases:
        ap.error("no case selected")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.decode_threads < 1:
        ap.error("--decode-threads must be at least 1")
    return args


def make_data(args) -> None:
    size = SIZES["quick" if args.quick else "full"]
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if {"reduction", "anomaly"} & set(args.cases):
        ensure_big(size["shape"])
    if {"tiny", "tiny-dashboard"} & set(args.cases):
        ensure_tiny(size["tiny_n"])
    if set(COMPRESSED) & set(args.cases):
        try:
            import hdf5plugin  # noqa: F401
        except ImportError:
            if {"zstd", "blosc-lz4"} & set(args.cases):
                raise SystemExit("error: the zstd and blosc-lz4 cases need hdf5plugin (scripts/bench.sh installs it)")
    for case in args.cases:
        if case in COMPRESSED:
            ensure_compressed(COMPRESSED[case], size["clim_t"])
        elif case in TINY_CHUNKED:
            ensure_tiny_chunked(TINY_CHUNKED[case])
        elif surface.is_surface(case):
            surface.ensure_data(case, size)
        elif movement.is_movement(case):
            if case.endswith("-gzip"):
                movement.ensure_gzip("quick" if args.quick else "full")
            else:
                movement.ensure_data("quick" if args.quick else "full")


def main(argv=None) -> int:
    args = parse_args(argv)
    make_data(args)
    if args.data_only:
        return 0
    if not os.access(args.drover, os.X_OK):
        print(f"error: no drover binary at '{args.drover}' (build with cargo build --release, or pass --drover)",
              file=sys.stderr)
        return 2

    bench = Bench(args)
    size = bench.size
    started = dt.datetime.now()
    results = {
        "started": started.isoformat(timespec="seconds"),
        "mode": bench.tag,
        "rounds": args.rounds,
        "workers": args.workers,
        "drover_threads_per_worker": bench.threads,
        "decode_limit_threads": args.decode_threads,
        "drover_env": bench.drover_env_note,
        "shape": list(bench.shape),
        "hdf5_chunks": list(HDF5_CHUNK),
        "block": list(bench.block),
        "tiny_elements": size["tiny_n"],
        "tiny_task": TINY_TASK,
        "climate_time_steps": size["clim_t"],
        "machine": machine_info(args.drover, bench.decode_limit),
        "cases": {},
    }
    log(f"mode {bench.tag}: cases {','.join(args.cases)}; {args.rounds} rounds, {args.workers} workers; "
        f"drover {args.drover}; decode limit {bench.decode_limit or 'absent (skipped)'}; {bench.drover_env_note}")
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
                if res["runs"].get("drover") and not taskjobs.is_taskjob(case) and not dashcase.is_dash(case):
                    res["drover_memory"] = drover_memory(res["runs"]["drover"])
                if res["contender_errors"]:
                    crashed = True
            except Exception as e:   # record it, go on with the other cases
                crashed = True
                log(f"{case}: CRASHED: {e}")
                traceback.print_exc()
                res = {"error": f"{type(e).__name__}: {e}"}
            results["cases"][case] = res
    finally:
        bench.stop_cluster()
        for p in OUT_DIR.glob("*.h5"):
            rm(p)

    lines, targets, summary = analyse(bench, results)
    results["targets"] = targets
    results["summary"] = summary
    differ = [f"{c}: {k}" for c, r in results["cases"].items() for k, v in r.get("checks", {}).items()
              if not v.get("equal")]
    results["results_differ"] = differ
    results["crashed"] = crashed
    out = BENCH_DIR / f"results-{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1, default=str))

    m = results["machine"]
    print()
    print(f"drover benchmark ({bench.tag}, {args.rounds} rounds, warm page cache) - {m.get('cpu', '?')}, "
          f"{m['cpus']} cpus; drover {m.get('git', '?')}; dask {m['dask']}, h5py {m['h5py']} (HDF5 {m['hdf5']}), "
          f"hdf5plugin {m.get('hdf5plugin') or 'absent'}")
    if {"reduction", "anomaly", "tiny"} & set(args.cases):
        print(f"/x {bench.shape[0]} x {bench.shape[1]} f64 ({bench.shape[0] * bench.shape[1] * 8 / GiB:.2f} GiB), "
              f"HDF5 chunks {HDF5_CHUNK}, block {bench.block}; tiny: {size['tiny_n']:,} elements, tasks of {TINY_TASK}")
    if set(COMPRESSED) & set(args.cases):
        print(f"compressed: climate-like field ({size['clim_t']}, 181, 360); drover {bench.drover_env_note}; "
              f"decode limit on {args.decode_threads} threads")
    print()
    print("\n".join(lines))
    print()
    print(f"results: {out}")
    if differ:
        print(f"RESULTS DIFFER: {'; '.join(differ)}", file=sys.stderr)
    if crashed:
        print("a case or a contender CRASHED (see above)", file=sys.stderr)
    return 1 if (differ or crashed) else 0
