#!/usr/bin/env python3
"""Write the fuzz targets' seed corpus (fuzz/corpus/TARGET/), kept in the repository.

    .venv/bin/python scripts/fuzz_seeds.py

Seeds are real inputs of each decoder: the expressions of the e2e tests, workload
files in the forms the docs show, the site files of site-configs/, task graphs and
task-job specs, the status output of the real batch tools (as the golden tests hold
it), chunks stored by HDF5 itself with each filter drover decodes (h5py and
hdf5plugin), and, from the Rust side (`cargo test --lib write_binary_seeds --
--ignored`), protocol frames, journal records and an access file.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target: str, data: bytes | str, name: str | None = None) -> None:
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / (name or hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def expressions() -> list[str]:
    """String constants of the e2e tests that look like expressions."""
    found: set[str] = set()
    for f in sorted((ROOT / "tests" / "e2e").glob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                s = node.value
                if 0 < len(s) < 160 and "\n" not in s and any(c in s for c in "()[]+*/<>") and " " not in s.strip()[:1]:
                    prose = s.rstrip().endswith(".") or ". " in s or "'s " in s or ": " in s
                    if not s.startswith(("/", "-", "http", "drover")) and "{" not in s and not prose:
                        found.add(s)
    return sorted(found)


WORKLOADS = [
    """[inputs]
t = { file = "t.h5", dataset = "/t", chunks = [8, 181, 360], time = "time" }

[let]
clim = "mean(t.groupby('time.month'), axis=0)"

[[outputs]]
file = "anom.h5"
dataset = "/anom"
expr = "t.groupby('time.month') - clim"
dtype = "float32"
compression = "gzip"
level = 4
shuffle = true
chunks = [1, 181, 360]
""",
    """[inputs]
x = { generate = "random", shape = [1000, 1000], seed = 7, chunks = [100, 1000] }
y = { generate = "full", shape = [1000], value = 2.5 }

[[outputs]]
file = "o.h5"
dataset = "s"
expr = "sum(x * y, axis=1) / std(x)"

[[outputs]]
file = "o.h5"
dataset = "w"
expr = "where(x > 0.5, x, nan)[::2, 10:-10]"
""",
    """[inputs]
v = { file = "cf.nc", dataset = "tas", decode = true }
w = { file = "cf.nc", dataset = "pr", decode = false }

[[outputs]]
file = "m.nc"
dataset = "m"
expr = "nanmean(v, axis=(1, 2)) + w[0, 0, 0]"
dtype = "int16"
""",
]

SITES_EXTRA = [
    'scheduler = "slurm"\ncores = 8\nmemory = "16GiB"\nwalltime = "01:00:00"\nqueue = "normal"\narray = true\njob_extra_directives = ["--exclusive"]\n',
    'scheduler = "sge"\ncores = 4\nmemory = "4G"\nwalltime = "0-02:00:00"\nprologue = ["module load hdf5"]\n',
    'scheduler = "htcondor"\ncores = 1\nmemory = "2GB"\n',
]

GRAPHS = [
    """[[task]]
name = "prep"
command = ["python", "prep.py", "{task}"]
array = "1-10:2"
cores = 2
time_limit = "10m"
env = { OMP_NUM_THREADS = "2" }
stdout = "logs/prep-{task}.out"

[[task]]
name = "fit"
command = "fit --in {entry} --job {job}"
each_line = "inputs.txt"
after = ["prep"]
time_limit = "01:30:00"
""",
    "1-1000\n0-99:10\n1,5,9-12\n90s\n2h\n1-00:00:00\n{task}-{job}-{entry} {{x}}\n",
]

BATCH = [
    (0, "101 102_1 102_2 103\n101|RUNNING\n102_1|PENDING\n102_2|COMPLETING\n999|RUNNING\n"),
    (0, "5\nSubmitted batch job 5\n"),
    (1, '1234.pbs01 1235[1].pbs01 9.pbs01\n{"timestamp":1700000000,"pbs_version":"2022.1","pbs_server":"pbs01",'
        '"Jobs":{"1234.pbs01":{"Job_Name":"drover-worker","job_state":"R"},'
        '"1235[1].pbs01":{"job_state":"Q"},"1235[2].pbs01":{"job_state":"F"}}}'),
    (2, "77.torque01 78.torque01\nJob Id: 77.torque01\n    Job_Name = drover-worker\n    job_state = R\n\n"
        "Job Id: 78.torque01\n    job_state = C\n"),
    (3, """12 14.1 14.2 15 16
<?xml version='1.0'?>
<job_info>
  <queue_info>
    <job_list state="running"><JB_job_number>12</JB_job_number><state>r</state><slots>2</slots></job_list>
    <job_list state="running"><JB_job_number>14</JB_job_number><state>r</state><tasks>1</tasks></job_list>
  </queue_info>
  <job_info>
    <job_list state="pending"><JB_job_number>14</JB_job_number><state>qw</state><tasks>2-3:1</tasks></job_list>
    <job_list state="pending"><JB_job_number>15</JB_job_number><state>Eqw</state></job_list>
  </job_info>
</job_info>"""),
    (3, '12\nYour job-array 12.1-4:1 ("drover-worker") has been submitted\n'),
    (4, '5678 5679[1] 5680\n{"COMMAND":"bjobs","JOBS":3,"RECORDS":[{"JOBID":"5678","JOBINDEX":"0","STAT":"RUN"},'
        '{"JOBID":"5679","JOBINDEX":"1","STAT":"PEND"},{"ERROR":"Job <5680> is not found"}]}'),
    (4, "5678\nJob <5678> is submitted to queue <normal>.\n"),
    (5, '77.0 77.1 78\n[{"ClusterId":77,"ProcId":0,"JobStatus":2},{"ClusterId":77,"ProcId":1,"JobStatus":1},'
        '{"ClusterId":78,"ProcId":0,"JobStatus":5}]'),
    (5, "77\nSubmitting job(s)...\n3 job(s) submitted to cluster 77.\n"),
]


def chunks() -> None:
    """Chunks as HDF5 stores them, with the header src/fuzzing.rs::chunk reads:
    [element size code, filters 1|2 << 4, filter 3 | mask << 4, size lo, size hi]."""
    import h5py
    import hdf5plugin
    import numpy as np

    # Filter codes of the target: 0 deflate, 1 shuffle, 2 fletcher32, 3 blosc, 4 lz4,
    # 5 bitshuffle+lz4 (13: +zstd), 6 zstd, 7 none.
    cases = [
        ("gzip+shuffle", dict(compression="gzip", compression_opts=4, shuffle=True)),
        ("gzip", dict(compression="gzip")),
        ("fletcher32+gzip", dict(compression="gzip", fletcher32=True)),
        ("blosc", dict(**hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))),
        ("lz4", dict(**hdf5plugin.LZ4())),
        ("bitshuffle-lz4", dict(**hdf5plugin.Bitshuffle(cname="lz4"))),
        ("zstd", dict(**hdf5plugin.Zstd())),
    ]
    codes = {1: 0, 2: 1, 3: 2, 32001: 3, 32004: 4, 32008: 5, 32015: 6}
    rng = np.random.default_rng(3)
    for dtype, code in [(np.float32, 2), (np.int16, 1), (np.float64, 3)]:
        data = np.cumsum(rng.normal(size=(64, 32)), axis=0).astype(dtype)
        for name, opts in cases:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "c.h5"
                with h5py.File(p, "w") as f:
                    f.create_dataset("x", data=data, chunks=(16, 32), **opts)
                with h5py.File(p, "r") as f:
                    mask, stored = f["x"].id.read_direct_chunk((0, 0))
                    dcpl = f["x"].id.get_create_plist()
                    fl = [codes[dcpl.get_filter(i)[0]] for i in range(dcpl.get_nfilters())] + [7, 7]
            size = 16 * 32 * np.dtype(dtype).itemsize
            head = bytes([code, fl[0] | fl[1] << 4, fl[2] | (mask & 0xF) << 4, size & 0xFF, size >> 8])
            put("chunk", head + stored, f"{name}-{np.dtype(dtype).name}")


def main() -> None:
    for e in expressions():
        put("expr", e)
    for i, w in enumerate(WORKLOADS):
        put("workload", w, f"workload{i}.toml")
    for f in sorted((ROOT / "site-configs").glob("*.toml")):
        put("site", f.read_bytes(), f.name)
    for i, s in enumerate(SITES_EXTRA):
        put("site", s, f"extra{i}.toml")
    for i, g in enumerate(GRAPHS):
        put("tasks", g, f"tasks{i}")
    for i, (which, text) in enumerate(BATCH):
        put("batch_status", bytes([which]) + text.encode(), f"status{i}")
    chunks()
    subprocess.run(
        ["cargo", "test", "--release", "--lib", "write_binary_seeds", "--", "--ignored", "--quiet"],
        cwd=ROOT,
        check=True,
    )
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name:16} {len(list(d.iterdir())):4} seeds")


if __name__ == "__main__":
    sys.exit(main())
