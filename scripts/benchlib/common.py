"""Constants, the case registry, paths, and small helpers shared by the benchmark."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH_DIR = ROOT / "scratch" / "bench"
OUT_DIR = BENCH_DIR / "out"

FORMAT_VERSION = 1                # of the classic files (/x, /t); bump to remake them
DATA_VERSION = 1                  # of the compressed and tiny-chunk files (their `bench_spec`)
SEED = 20240917
MiB = 1 << 20
GiB = 1 << 30

# ---- the classic cases: /x (reduction, anomaly) and /t (tiny)

HDF5_CHUNK = (64, 4096)           # the file: 8192 x 32768 f64, chunks 64 x 4096
TINY_HDF5_CHUNK = (4096,)
TINY_TASK = 10                    # elements per tiny task
DROVER_DEFAULT_BLOCK_ELEMS = 8 << 20   # src/exec/plan.rs DEFAULT_BLOCK_ELEMS (64 MiB of f64)

SIZES = {
    # shape of /x, length of /t, tiny chunks given to dask threads / dask.distributed
    # (dask runs a prefix of /t: at 200-550 tasks/s the whole of it would take minutes;
    # chunks/s is a rate, so a prefix measures the same thing); time steps of the
    # climate-like field of the compressed cases
    "full": dict(shape=(8192, 32768), tiny_n=1_500_000, tiny_threads=20_000, tiny_dist=2_000, clim_t=2920),
    "quick": dict(shape=(1024, 32768), tiny_n=200_000, tiny_threads=2_000, tiny_dist=500, clim_t=365),
}

# ---- the compressed cases: one climate-like f32 field (time, lat, lon), several layouts

CLIM_GRID = (181, 360)            # 1-degree global grid


@dataclass(frozen=True)
class Compressed:
    """One compressed case: how the field is stored."""
    name: str
    chunk_t: int                  # HDF5 chunks are (chunk_t, 181, 360)
    filter: str                   # "gzip", "zstd", "blosc-lz4"
    dtype: str = "f4"             # "f4", or "i2" (packed: scale_factor / add_offset)
    opts: dict = field(default_factory=dict)

    def chunks(self, t: int) -> tuple[int, int, int]:
        return (min(self.chunk_t, t),) + CLIM_GRID


GZIP = {"level": 4, "shuffle": True}
COMPRESSED = {c.name: c for c in [
    Compressed("gzip-256k", 1, "gzip", opts=GZIP),
    Compressed("gzip-2m", 8, "gzip", opts=GZIP),
    Compressed("gzip-19m", 73, "gzip", opts=GZIP),
    Compressed("gzip-64m", 256, "gzip", opts=GZIP),
    Compressed("zstd", 8, "zstd", opts={"clevel": 3}),
    Compressed("blosc-lz4", 8, "blosc-lz4", opts={"clevel": 5, "shuffle": "byte"}),
    Compressed("int16", 73, "gzip", dtype="i2", opts=GZIP),
]}
# packing of the int16 case (CF conventions: value = raw * scale_factor + add_offset)
INT16_SCALE = 0.01
INT16_OFFSET = 270.0

# ---- the tiny-chunk cases: 1-D f64 stored in HDF5 chunks of TINY_TASK elements

TINY_CHUNKED = {"tiny-200k": 200_000, "tiny-2m": 2_000_000}   # number of HDF5 chunks

# ---- contenders per case (the warm-up and round 1 run them in this order)

CONTENDERS = {
    "reduction": ["raw-read", "h5py-chunks", "drover", "dask-threads", "dask.distributed"],
    "anomaly": ["raw-read+write", "drover", "dask-threads", "dask.distributed"],
    "tiny": ["drover", "dask-threads", "dask.distributed"],
}
for _c in COMPRESSED:
    CONTENDERS[_c] = ["h5py-chunks", "decode-limit", "drover", "dask-threads", "dask.distributed"]
for _c in TINY_CHUNKED:
    CONTENDERS[_c] = ["decode-limit", "drover", "dask-threads", "dask.distributed"]

# the expression-surface cases (surface.py)
CONTENDERS["masked-mean"] = ["drover", "dask-threads", "dask.distributed"]
CONTENDERS["matmul"] = ["drover", "dask-threads", "dask.distributed"]
CONTENDERS["gzip-anomaly"] = ["drover", "drover-1w", "dask-threads", "dask.distributed"]
# the data-movement cases (movement.py)
CONTENDERS["rechunk"] = ["drover", "dask-threads", "dask.distributed", "cubed"]
CONTENDERS["median-time"] = ["drover", "dask-threads", "dask.distributed"]
CONTENDERS["rechunk-gzip"] = ["drover", "dask-threads", "dask.distributed", "cubed"]
CONTENDERS["median-time-gzip"] = ["drover", "dask-threads", "dask.distributed"]
# the task-job cases (taskjobs.py): N commands on 2 slots
CONTENDERS["tasks-true"] = ["drover", "xargs-P2", "dask.distributed", "parsl-htex"]
CONTENDERS["tasks-10ms"] = ["drover", "xargs-P2", "dask.distributed", "parsl-htex"]
# the dashboard's cost (dashcase.py): tiny tasks on a warm server, without and with a browser
CONTENDERS["tiny-dashboard"] = ["drover", "drover+browser"]

CLASSIC_CASES = ["reduction", "anomaly", "tiny"]
ALL_CASES = list(CONTENDERS)
CASE_GROUPS = {
    "all": ALL_CASES,
    "classic": CLASSIC_CASES,
    "compressed": list(COMPRESSED),
    "tinychunks": list(TINY_CHUNKED),
    "surface": ["masked-mean", "matmul", "gzip-anomaly"],
    "movement": ["rechunk", "median-time", "rechunk-gzip", "median-time-gzip"],
    "taskjobs": ["tasks-true", "tasks-10ms"],
}
QUICK_SKIPS = {"tiny-2m"}         # left out of a group under --quick (name it to run it)

# targets of the compressed and tiny-chunk cases (from the issue)
TARGET_DASK_OVER_DROVER = 1.5     # dask (threads, distributed) time / drover time, at least
TARGET_DROVER_OVER_LIMIT = 1.3    # drover time / decode-limit time, at most
TARGET_TINY_RATE = 100_000        # chunks/s, at least
CHECK_RTOL = 1e-6                 # compressed cases: f32 / int16 input, means in f64


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


def rm(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def toml_str(p) -> str:
    return json.dumps(str(p))   # a JSON string is a valid TOML basic string


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return f"[{', '.join(_toml_value(x) for x in v)}]"
    return toml_str(str(v))


def write_workload(path: Path, inputs: dict, outputs: list) -> Path:
    """A workload file: every key of each input and output spec, in order."""
    lines = []
    for name, spec in inputs.items():
        lines.append(f"[inputs.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items() if v is not None]
        lines.append("")
    for o in outputs:
        lines.append("[[outputs]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in o.items() if v is not None]
        lines.append("")
    path.write_text("\n".join(lines))
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


def mib(b) -> str:
    return "-" if b is None else f"{b / MiB:.1f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def jsonable(r: dict) -> dict:
    out = {}
    for k, v in r.items():
        if k == "result":
            a = np.asarray(v)
            out[k] = float(a) if a.ndim == 0 else f"array{a.shape}"
        else:
            out[k] = v
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process `pid`, all its threads, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill_groups(procs) -> None:
    """SIGKILL the process group of each Popen (started with start_new_session=True)
    and reap it."""
    import os
    import signal
    import subprocess

    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
