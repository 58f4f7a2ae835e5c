"""The benchmark's data in scratch/bench/: made once with a fixed seed, kept while up to date.

Classic files (reduction, anomaly, tiny): /x 280 + 10 N(0, 1) f64 and /t uniform f64,
checked by shape, chunks, dtype and their `seed` / `format_version` attributes.
Compressed files: one climate-like f32 field (time, 181, 360) written in several
layouts; tiny-chunk files: 1-D f64 in HDF5 chunks of 10 elements. Those carry a
`bench_spec` attribute (JSON of everything that made them) and are remade when it
differs. Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from .common import (BENCH_DIR, CLIM_GRID, DATA_VERSION, FORMAT_VERSION, GiB, HDF5_CHUNK,
                     INT16_OFFSET, INT16_SCALE, MiB, SEED, TINY_HDF5_CHUNK, TINY_TASK, Compressed, log)

# ------------------------------------------------------------------ classic files


def big_path(shape) -> Path:
    return BENCH_DIR / f"x-{shape[0]}x{shape[1]}.h5"


def tiny_path(n: int) -> Path:
    return BENCH_DIR / f"tiny-{n}.h5"


def _up_to_date(path: Path, name: str, shape, chunks) -> bool:
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            return (
                ds.shape == tuple(shape)
                and ds.dtype == np.float64
                and ds.chunks == tuple(chunks)
                and ds.compression is None
                and int(ds.attrs.get("seed", -1)) == SEED
                and int(ds.attrs.get("format_version", -1)) == FORMAT_VERSION
            )
    except (OSError, KeyError):
        return False


def _write_atomically(path: Path, fill) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_big(shape) -> Path:
    """/x: 280 + 10 * N(0, 1), float64, HDF5 chunks 64 x 4096, written in row slabs."""
    path = big_path(shape)
    if _up_to_date(path, "x", shape, HDF5_CHUNK):
        log(f"data up to date: {path.name} /x {shape[0]} x {shape[1]} f64")
        return path
    rows, cols = shape
    slab = 4 * HDF5_CHUNK[0]   # 256 rows = 64 MiB at 32768 columns
    t0 = time.perf_counter()

    def fill(f):
        ds = f.create_dataset("x", shape=shape, dtype="f8", chunks=HDF5_CHUNK)
        ds.attrs["seed"] = SEED
        ds.attrs["format_version"] = FORMAT_VERSION
        rng = np.random.default_rng(SEED)
        for r0 in range(0, rows, slab):
            r1 = min(rows, r0 + slab)
            block = rng.standard_normal((r1 - r0, cols))
            block *= 10.0
            block += 280.0
            ds[r0:r1] = block
            del block

    _write_atomically(path, fill)
    log(f"wrote {path.name}: {path.stat().st_size / GiB:.2f} GiB in {time.perf_counter() - t0:.1f} s")
    return path


def ensure_tiny(n: int) -> Path:
    """/t: uniform [0, 1) float64, HDF5 chunks 4096 (the task size is set by the workload)."""
    path = tiny_path(n)
    if _up_to_date(path, "t", (n,), TINY_HDF5_CHUNK):
        log(f"data up to date: {path.name} /t ({n},) f64")
        return path

    def fill(f):
        ds = f.create_dataset("t", shape=(n,), dtype="f8", chunks=TINY_HDF5_CHUNK)
        ds.attrs["seed"] = SEED
        ds.attrs["format_version"] = FORMAT_VERSION
        ds[:] = np.random.default_rng(SEED + 1).random(n)

    _write_atomically(path, fill)
    log(f"wrote {path.name}: ({n},) f64")
    return path


# ------------------------------------------------- files described by a bench_spec


def _spec_matches(path: Path, spec: dict) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f["t"].attrs.get("bench_spec") == json.dumps(spec, sort_keys=True)
    except (OSError, KeyError):
        return False


# the climate-like field: smooth structure (latitude, land-sea-like longitude waves, a
# seasonal cycle of opposite sign in the two hemispheres, a diurnal cycle following the
# sun) plus weather noise; 6-hourly steps (2920 = two years); kelvin, float32
FIELD = {
    "kind": "climate-like f32, 6-hourly",
    "base": "288 - 40 sin^2(lat) + 4 cos(lon) cos(lat) + 2 sin(3 lon) cos(2 lat)",
    "season": "15 sin(lat) cos(2 pi (t/4 - 15) / 365.25)",
    "diurnal": "3 cos(lat) cos(2 pi t / 4 + lon)",
    "noise_sigma": 3.0,
    "quantum": None,
}


def climate_field(t0: int, t1: int) -> np.ndarray:
    """Time steps [t0, t1) of the field, float32 (t1 - t0, 181, 360). Each step's noise
    comes from its own generator (seeded by SEED and t), so any slab gives the same values."""
    nlat, nlon = CLIM_GRID
    lat = np.deg2rad(np.linspace(90.0, -90.0, nlat))[:, None]
    lon = np.deg2rad(np.arange(nlon, dtype=np.float64))[None, :]
    base = 288.0 - 40.0 * np.sin(lat) ** 2 + 4.0 * np.cos(lon) * np.cos(lat) + 2.0 * np.sin(3 * lon) * np.cos(2 * lat)
    out = np.empty((t1 - t0, nlat, nlon), np.float32)
    for i, t in enumerate(range(t0, t1)):
        season = 15.0 * np.sin(lat) * np.cos(2 * np.pi * (t / 4 - 15) / 365.25)
        diurnal = 3.0 * np.cos(lat) * np.cos(2 * np.pi * t / 4 + lon)
        noise = np.random.default_rng([SEED, t]).standard_normal((nlat, nlon))
        out[i] = base + season + diurnal + FIELD["noise_sigma"] * noise
    return out


def compressed_path(case: Compressed, t: int) -> Path:
    return BENCH_DIR / f"clim-{t}-{case.name}.h5"


def _filter_kwargs(case: Compressed) -> dict:
    if case.filter == "gzip":
        return {"compression": "gzip", "compression_opts": case.opts["level"], "shuffle": case.opts["shuffle"]}
    import hdf5plugin

    if case.filter == "zstd":
        return dict(hdf5plugin.Zstd(clevel=case.opts["clevel"]))
    if case.filter == "blosc-lz4":
        shuffle = {"byte": hdf5plugin.Blosc.SHUFFLE, "bit": hdf5plugin.Blosc.BITSHUFFLE,
                   "none": hdf5plugin.Blosc.NOSHUFFLE}[case.opts["shuffle"]]
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=case.opts["clevel"], shuffle=shuffle))
    raise ValueError(case.filter)


def ensure_compressed(case: Compressed, t: int) -> Path:
    """The field, T time steps, stored as CASE says, dataset /t; written in slabs of whole
    chunks (a partial compressed chunk would be read, decoded and re-encoded by HDF5)."""
    path = compressed_path(case, t)
    shape = (t,) + CLIM_GRID
    chunks = case.chunks(t)
    spec = {"version": DATA_VERSION, "seed": SEED, "shape": list(shape), "chunks": list(chunks),
            "dtype": case.dtype, "filter": case.filter, "opts": case.opts, "field": FIELD}
    if case.dtype == "i2":
        spec["packing"] = {"scale_factor": INT16_SCALE, "add_offset": INT16_OFFSET}
    if _spec_matches(path, spec):
        log(f"data up to date: {path.name} /t {shape} {case.dtype} {case.filter}, chunks {chunks}")
        return path
    slab = chunks[0] * max(1, 256 // chunks[0])
    t0 = time.perf_counter()

    def fill(f):
        ds = f.create_dataset("t", shape=shape, dtype=case.dtype, chunks=chunks, **_filter_kwargs(case))
        for s0 in range(0, t, slab):
            s1 = min(t, s0 + slab)
            v = climate_field(s0, s1)
            if case.dtype == "i2":
                v = np.round((v.astype(np.float64) - INT16_OFFSET) / INT16_SCALE).astype(np.int16)
            ds[s0:s1] = v
            del v
        if case.dtype == "i2":
            ds.attrs["scale_factor"] = np.float32(INT16_SCALE)
            ds.attrs["add_offset"] = np.float32(INT16_OFFSET)
            ds.attrs["units"] = "K"
        ds.attrs["bench_spec"] = json.dumps(spec, sort_keys=True)

    log(f"writing {path.name}: /t {shape} {case.dtype} {case.filter}, chunks {chunks} ...")
    _write_atomically(path, fill)
    raw = int(np.prod(shape)) * np.dtype(case.dtype).itemsize
    with h5py.File(path, "r") as f:
        stored = f["t"].id.get_storage_size()
    log(f"wrote {path.name}: {stored / MiB:.0f} MiB stored, {raw / MiB:.0f} MiB raw "
        f"(ratio {raw / stored:.2f}x) in {time.perf_counter() - t0:.1f} s")
    return path


def tiny_chunked_path(n_chunks: int) -> Path:
    return BENCH_DIR / f"tinyc-{n_chunks}x{TINY_TASK}.h5"


def ensure_tiny_chunked(n_chunks: int) -> Path:
    """/t: uniform [0, 1) float64 of N_CHUNKS x 10 elements in HDF5 chunks of 10 elements
    (uncompressed; h5py's default file format, so a version-1 B-tree chunk index)."""
    path = tiny_chunked_path(n_chunks)
    n = n_chunks * TINY_TASK
    spec = {"version": DATA_VERSION, "seed": SEED + 2, "shape": [n], "chunks": [TINY_TASK], "dtype": "f8",
            "values": "uniform [0, 1)"}
    if _spec_matches(path, spec):
        log(f"data up to date: {path.name} /t ({n},) f64, {n_chunks} chunks of {TINY_TASK}")
        return path
    t0 = time.perf_counter()

    def fill(f):
        ds = f.create_dataset("t", shape=(n,), dtype="f8", chunks=(TINY_TASK,))
        rng = np.random.default_rng(SEED + 2)
        step = 1 << 20   # a multiple of nothing in particular: chunks of 10 do not straddle writes badly
        step -= step % TINY_TASK
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            ds[s0:s1] = rng.random(s1 - s0)
        ds.attrs["bench_spec"] = json.dumps(spec, sort_keys=True)

    log(f"writing {path.name}: ({n},) f64 in {n_chunks} chunks of {TINY_TASK} ...")
    _write_atomically(path, fill)
    log(f"wrote {path.name}: {path.stat().st_size / MiB:.0f} MiB in {time.perf_counter() - t0:.1f} s")
    return path


def chunk_index(path: Path, name: str = "t") -> dict:
    """What the file's chunk index holds: allocated chunks, their stored bytes, and the
    decoded bytes of those chunks (whole chunks, edge chunks included)."""
    with h5py.File(path, "r") as f:
        ds = f[name]
        sizes = []
        try:
            ds.id.chunk_iter(lambda info: sizes.append(info.size))
        except AttributeError:   # an h5py or HDF5 without chunk_iter
            sizes = [ds.id.get_chunk_info(i).size for i in range(ds.id.get_num_chunks())]
        chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
        filters = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ds._filters.items()}
        return {
            "file": path.name,
            "shape": list(ds.shape),
            "dtype": str(ds.dtype),
            "chunks": list(ds.chunks),
            "filters": filters,
            "n_chunks": len(sizes),
            "bytes_stored": int(sum(sizes)),
            "bytes_decoded": len(sizes) * chunk_bytes,
            "bytes_raw": int(np.prod(ds.shape)) * ds.dtype.itemsize,
            "file_bytes": path.stat().st_size,
        }
