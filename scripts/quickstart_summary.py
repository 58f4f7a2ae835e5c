#!/usr/bin/env python3
"""Print a short human summary of a quickstart run (used by scripts/quickstart.sh).

    quickstart_summary.py DIR

DIR holds t2m.h5 (the input), workload.toml and result.json (drover's --json
output). Shows the output files, datasets, shapes and a few values, spot-checks
them against numpy on the input, and reports time and throughput.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: quickstart_summary.py DIR", file=sys.stderr)
        return 2
    d = Path(argv[0]).resolve()
    result = json.loads((d / "result.json").read_text())
    workload = tomllib.loads((d / "workload.toml").read_text())
    exprs = {(o["file"], "/" + o["dataset"].lstrip("/")): o["expr"] for o in workload["outputs"]}

    secs = float(result["seconds"])
    nbytes = int(result["bytes_read"])
    print()
    print("drover quickstart: what was computed")
    print(f"  input   {d / 't2m.h5'}  /t2m  (daily temperature, time x lat x lon)")
    print(f"  tasks   {result['tasks_total']} ({result['tasks_retried']} retried)")
    print(f"  read    {nbytes / 1e6:.0f} MB in {secs:.2f} s"
          + (f"  ({nbytes / 1e9 / secs:.2f} GB/s)" if secs > 0 else ""))
    print()

    with h5py.File(d / "t2m.h5", "r") as f:
        t2m = f["t2m"]
        # a few grid points to check against numpy on the input
        points = [(0, 0), (t2m.shape[1] // 2, t2m.shape[2] // 3), (t2m.shape[1] - 1, t2m.shape[2] - 1)]
        series = {p: t2m[:, p[0], p[1]].astype(np.float64) for p in points}
        day0 = t2m[0].astype(np.float64)

    worst = 0.0
    for o in result["outputs"]:
        path = Path(o["file"])
        if not path.is_absolute():
            path = d / path
        ds_name = "/" + o["dataset"].lstrip("/")
        expr = next((e for (fn, ds), e in exprs.items() if ds == ds_name), "?")
        with h5py.File(path, "r") as f:
            ds = f[ds_name]
            print(f"  {path.name}:{ds_name}  = {expr}")
            print(f"      shape {ds.shape}, {ds.dtype}, chunks {ds.chunks}")
            for (i, j) in points[:2]:
                if ds.ndim == 2:
                    v = float(ds[i, j])
                    ref = (np.mean if "mean" in expr else np.std)(series[(i, j)])
                    print(f"      at lat index {i:3d}, lon index {j:3d}: {v:10.4f}  (numpy: {ref:10.4f})")
                    worst = max(worst, abs(v - ref) / max(abs(ref), 1e-30))
                elif ds.ndim == 3:
                    v = float(ds[0, i, j])
                    ref = day0[i, j] - np.mean(series[(i, j)])
                    print(f"      day 0 at lat index {i:3d}, lon index {j:3d}: {v:9.4f}  (numpy: {ref:9.4f})")
                    worst = max(worst, abs(v - ref) / max(abs(day0[i, j]), 1e-30))
    print()
    ok = worst < 1e-5  # the anomaly is stored as f32
    print(f"  spot check against numpy: {'OK' if ok else 'MISMATCH'} (worst relative difference {worst:.1e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
