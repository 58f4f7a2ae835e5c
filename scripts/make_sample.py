#!/usr/bin/env python3
"""Write a synthetic daily near-surface temperature field to HDF5 for drover demos.

    make_sample.py --out scratch/quickstart/t2m.h5 [--shape 730,181,360] [--chunks 73,181,360]

The dataset /t2m (float32, kelvin, dims time x lat x lon) is a latitude-dependent
mean, a seasonal cycle of opposite phase in the two hemispheres, a small land-sea
like longitude pattern, and Gaussian day-to-day noise. Coordinates /time, /lat and
/lon are written beside it. The file is written under a temporary name and renamed
when complete; an existing file with the same shape, chunks and seed is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers")
    if len(vals) != 3 or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be three positive integers")
    return vals


def up_to_date(path: Path, shape, chunks, seed: int) -> bool:
    try:
        with h5py.File(path, "r") as f:
            ds = f["t2m"]
            return (
                ds.shape == tuple(shape)
                and ds.dtype == np.float32
                and ds.chunks == tuple(chunks)
                and int(ds.attrs.get("seed", -1)) == seed
                and int(ds.attrs.get("format_version", -1)) == FORMAT_VERSION
            )
    except (OSError, KeyError):
        return False


def generate(path: Path, shape, chunks, seed: int, gzip: bool) -> None:
    nt, ny, nx = shape
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, ny)
    lon = np.linspace(0.0, 360.0, nx, endpoint=False)
    day = np.arange(nt, dtype=np.float64)
    lat_r = np.deg2rad(lat)[:, None]
    lon_r = np.deg2rad(lon)[None, :]
    # annual mean: warm tropics, cold poles; a wavenumber-2 "continents" pattern
    base = 300.0 - 45.0 * np.sin(lat_r) ** 2 + 3.0 * np.cos(2 * lon_r) * np.cos(lat_r)
    # seasonal amplitude grows poleward, opposite phase across the equator
    amp = 15.0 * np.sin(lat_r)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    kw = {"chunks": tuple(chunks)}
    if gzip:
        kw.update(compression="gzip", compression_opts=1, shuffle=True)
    try:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("t2m", shape=shape, dtype=np.float32, **kw)
            ds.attrs["units"] = "K"
            ds.attrs["long_name"] = "synthetic 2 m temperature (daily)"
            ds.attrs["seed"] = seed
            ds.attrs["format_version"] = FORMAT_VERSION
            f.create_dataset("time", data=day).attrs["units"] = "days since 2000-01-01"
            f.create_dataset("lat", data=lat).attrs["units"] = "degrees_north"
            f.create_dataset("lon", data=lon).attrs["units"] = "degrees_east"
            step = chunks[0]
            for t0 in range(0, nt, step):
                t1 = min(nt, t0 + step)
                season = np.cos(2 * np.pi * (day[t0:t1] - 200.0) / 365.25)[:, None, None]
                block = base[None] + amp[None] * season
                noise = rng.standard_normal((t1 - t0, ny, nx), dtype=np.float32)
                block = (block + 3.0 * noise).astype(np.float32)
                ds[t0:t1] = block
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", type=parse_ints, default=(730, 181, 360))
    ap.add_argument("--chunks", type=parse_ints, default=(73, 181, 360))
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--gzip", action="store_true", help="gzip level 1 + shuffle")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = ap.parse_args(argv)
    chunks = tuple(min(c, s) for c, s in zip(args.chunks, args.shape))
    out: Path = args.out
    if not args.force and up_to_date(out, args.shape, chunks, args.seed):
        print(f"sample data up to date: {out} /t2m {args.shape} float32")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    generate(out, args.shape, chunks, args.seed, args.gzip)
    size = out.stat().st_size
    print(
        f"wrote {out}: /t2m {args.shape} float32, chunks {chunks}, "
        f"{size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
