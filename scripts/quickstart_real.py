#!/usr/bin/env python3
"""The quickstart's real-data step (used by scripts/quickstart.sh): a monthly
climatology and anomaly of OSTIA sea surface temperature, a real NetCDF4 file shipped
in the PyPI package iris-sample-data (float32 with a _FillValue over land, a gregorian
time coordinate). Prints a few values next to xarray's for the same computation, read
back with xarray: drover's output carries the coordinates, units and cell methods.

    quickstart_real.py prepare DIR     write DIR/real.toml, print its path
    quickstart_real.py show DIR        print values from DIR/real.nc and xarray's
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import iris_sample_data
import numpy as np
import xarray as xr

SRC = Path(iris_sample_data.path) / "ostia_monthly.nc"

WORKLOAD = f"""[inputs.sst]
file = "{SRC}"
dataset = "/surface_temperature"

[let]
clim = "nanmean(sst, axis=0, by='month')"

[[outputs]]
expr = "clim"
file = "real.nc"
dataset = "/sst_clim"

[[outputs]]
expr = "sst - clim[groups(sst, 'month')]"
file = "real.nc"
dataset = "/sst_anomaly"
"""


def main() -> int:
    what, out = sys.argv[1], Path(sys.argv[2])
    if what == "prepare":
        (out / "real.toml").write_text(WORKLOAD)
        print(out / "real.toml")
        return 0
    sst = xr.open_dataset(SRC)["surface_temperature"].astype(np.float64)
    clim = sst.groupby("time.month").mean()
    anom = (sst.groupby("time.month") - clim).values
    with xr.open_dataset(out / "real.nc") as ds:
        ds = ds.load()
    c, a = ds["sst_clim"].values, ds["sst_anomaly"].values
    j, k = 9, 200  # an ocean point
    print(f"\nreal data: {SRC.name} (iris-sample-data), surface_temperature {tuple(sst.shape)}, "
          f"{int(np.isnan(sst.values).sum())} fill values decoded to NaN")
    cl = ds["sst_clim"]
    print(f"  drover's output, opened with xarray: sst_clim{cl.dims}, units {cl.attrs.get('units')!r}, "
          f"cell_methods {cl.attrs.get('cell_methods')!r}")
    print(f"  monthly climatology at latitude {float(cl.latitude[j]):.2f}, longitude {float(cl.longitude[k]):.2f} (K):")
    print("    month   drover      xarray")
    for m in range(min(4, c.shape[0])):
        print(f"    {int(cl.month[m]):5d}  {c[m, j, k]:9.4f}  {clim.values[m, j, k]:9.4f}")
    print(f"  anomaly, first 4 steps there (K): drover {np.round(a[:4, j, k], 4).tolist()}, xarray {np.round(anom[:4, j, k], 4).tolist()}")
    same = np.allclose(c, clim.values, rtol=1e-9, equal_nan=True) and np.allclose(a, anom, rtol=1e-9, atol=1e-9, equal_nan=True)
    same = same and list(cl.month.values) == list(clim.month.values) and list(ds.time.values) == list(sst.time.values)
    print(f"  drover equals xarray everywhere (rtol 1e-9): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
