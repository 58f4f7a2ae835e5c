"""Filtered (compressed, shuffled, checksummed) HDF5 inputs, decoded by drover itself.

drover reads the stored bytes of filtered chunks straight from the file and runs the
filter pipeline in reverse on its own: deflate (id 1), shuffle (2), fletcher32 (3),
zstd (32015), lz4 (32004), blosc (32001: blosclz/lz4/lz4hc/zlib/zstd, byte-shuffle or
bitshuffle), bitshuffle (32008: none/lz4/zstd). A filter it cannot decode goes through
the HDF5 library when the library has it; otherwise the workload is refused before any
work (exit 2, one line naming the filter id and the dataset). A fletcher32 mismatch is a
runtime failure (exit 1, "corrupted chunk", the file and the chunk's position).

h5py + hdf5plugin write every input and read it back; numpy on those values is the
oracle. drover runs with HDF5_PLUGIN_PATH pointing at an empty folder, so that its HDF5
library has none of the plugin filters: only drover's own decoders can read them. Each
worker logs (DROVER_LOG=drover=debug) one "opened input" line per input with
`direct=true|false` (unfiltered bytes mapped) and `decode=drover|hdf5|none` (who
decodes the filters); the expected path is checked from those lines.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from conftest import Case, Input, run_workload

BLOSC = hdf5plugin.Blosc
BLOSC_SHUFFLES = {"noshuffle": BLOSC.NOSHUFFLE, "shuffle": BLOSC.SHUFFLE, "bitshuffle": BLOSC.BITSHUFFLE}
GZIP_SHUFFLE = {"compression": "gzip", "shuffle": True}

# name -> (create_dataset keywords, the filter ids h5py must have put in the pipeline)
FILTERS: dict[str, tuple[dict, list[int]]] = {
    "gzip0": ({"compression": "gzip", "compression_opts": 0}, [1]),
    "gzip1": ({"compression": "gzip", "compression_opts": 1}, [1]),
    "gzip9": ({"compression": "gzip", "compression_opts": 9}, [1]),
    "shuffle": ({"shuffle": True}, [2]),
    "fletcher32": ({"fletcher32": True}, [3]),
    "gzip+shuffle": (GZIP_SHUFFLE, [2, 1]),
    "gzip+shuffle+fletcher32": ({**GZIP_SHUFFLE, "fletcher32": True}, [2, 1, 3]),
    "zstd": (dict(hdf5plugin.Zstd()), [32015]),
    "shuffle+zstd+fletcher32": ({**hdf5plugin.Zstd(clevel=9), "shuffle": True, "fletcher32": True}, [2, 32015, 3]),
    "lz4": (dict(hdf5plugin.LZ4()), [32004]),
    "lz4-512B-blocks": (dict(hdf5plugin.LZ4(nbytes=512)), [32004]),  # several lz4 blocks per chunk
    **{
        f"blosc-{cname}-{sname}": (dict(BLOSC(cname=cname, clevel=5, shuffle=s)), [32001])
        for cname in ("blosclz", "lz4", "lz4hc", "zlib", "zstd")
        for sname, s in BLOSC_SHUFFLES.items()
    },
    **{f"bitshuffle-{c}": (dict(hdf5plugin.Bitshuffle(cname=c)), [32008]) for c in ("none", "lz4", "zstd")},
}

# input name -> stored dtype; "f64_noise" has full-entropy mantissas, which lz4 stores
# in raw blocks and blosc cannot shrink (its chunks are then stored with the filter
# skipped, see test_chunks_that_skipped_an_optional_filter); the others compress well.
DTYPES = {"f32": "<f4", "f64": "<f8", "f64_noise": "<f8", "i16": "<i2", "u8": "u1", "i32be": ">i4"}


# --------------------------------------------------------------------------
# Helpers


def _data(rng, dtype: str, shape, noise: bool = False) -> np.ndarray:
    """Values of `dtype` that compress (quarter steps, small integer ranges) unless noise."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        x = rng.normal(20.0, 10.0, size=shape)
        return (x if noise else np.round(x * 4) / 4).astype(dt)
    lo, hi = (0, 200) if dt.kind == "u" else (-30000, 30000) if dt.itemsize == 2 else (-(10**6), 10**6)
    return rng.integers(lo, hi, size=shape).astype(dt)


def _filter_ids(ds) -> list[int]:
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def _write(path: Path, datasets: dict, libver=None) -> dict[str, np.ndarray]:
    """Write {name: (array, create_dataset kw)} and return the values h5py (with
    hdf5plugin's filters) reads back, which must equal what was written."""
    with h5py.File(path, "a", libver=libver) as f:
        for name, (arr, kw) in datasets.items():
            f.create_dataset(name, data=arr, **kw)
    back = {}
    with h5py.File(path, "r") as f:
        for name, (arr, _) in datasets.items():
            back[name] = f[name][()]
            assert back[name].dtype == arr.dtype and np.array_equal(back[name], arr, equal_nan=True), name
    return back


def _env(tmp_path: Path, plugins: bool = False, **extra: str) -> dict[str, str]:
    """Debug log on; the HDF5 library in drover sees hdf5plugin's filters only if
    `plugins`, else an empty plugin folder (it has only deflate/shuffle/fletcher32)."""
    empty = tmp_path / "no-plugins"
    empty.mkdir(exist_ok=True)
    path = hdf5plugin.PLUGIN_PATH if plugins else str(empty)
    return {"DROVER_LOG": "drover=debug", "HDF5_PLUGIN_PATH": path, **extra}


def _plain(run) -> str:
    """stderr without colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", run.stderr)


def _opened(run, field: str) -> dict[str, set[str]]:
    """input name -> the values of `field` on the workers' "opened input" lines."""
    out: dict[str, set[str]] = {}
    for line in _plain(run).splitlines():
        if "opened input" not in line:
            continue
        name, value = re.search(r"\binput=\"?([\w.-]+)", line), re.search(rf"\b{field}=\"?(\w+)", line)
        if name:
            out.setdefault(name.group(1), set()).add(value.group(1) if value else "<missing>")
    return out


def _assert_logged(run, field: str, expected: dict[str, str]) -> None:
    got = _opened(run, field)
    want = {name: {v} for name, v in expected.items()}
    assert got == want, f"`{field}=` of the opened inputs: {got}, want {want}\n{run.describe()}"


def _cases(name: str) -> list[Case]:
    """A copy, a reduction over the leading axis, a total mean, and anomalies (two stages)."""
    return [
        Case(name, f"/copy_{name}"),
        Case(f"sum({name}, axis=0)", f"/sum0_{name}"),
        Case(f"mean({name})", f"/mean_{name}"),
        Case(f"{name} - mean({name}, axis=0)", f"/anom_{name}"),
    ]


def _nothing_written(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("out.h5", ".out.h5")))


# --------------------------------------------------------------------------
# 1. Every filter and combination, every dtype


@pytest.mark.parametrize("filt", list(FILTERS))
def test_filter_pipeline_decoded_by_drover(drover, tmp_path, rng, filt):
    """One file holding the same pipeline over six dtypes; 50x37 in 16x10 chunks (edge
    chunks on both axes), blocks of 2x2 chunks. Every input is decoded by drover."""
    kw, ids = FILTERS[filt]
    arrays = {n: _data(rng, dt, (50, 37), noise=n == "f64_noise") for n, dt in DTYPES.items()}
    values = _write(tmp_path / "in.h5", {f"/{n}": (a, {"chunks": (16, 10), **kw}) for n, a in arrays.items()})
    with h5py.File(tmp_path / "in.h5", "r") as f:
        assert all(_filter_ids(f[f"/{n}"]) == ids for n in DTYPES), [_filter_ids(f[f"/{n}"]) for n in DTYPES]
    inputs = {f"x_{n}": Input("in.h5", f"/{n}", values[f"/{n}"], chunks=[32, 20]) for n in DTYPES}
    cases = [c for name in inputs for c in _cases(name)]
    run, _, _ = run_workload(drover, tmp_path, inputs, cases, env=_env(tmp_path), write_inputs=False)
    _assert_logged(run, "decode", {name: "drover" for name in inputs})


# --------------------------------------------------------------------------
# 2. Chunk geometry

GEOMETRY_FILTERS = ["gzip+shuffle+fletcher32", "blosc-zstd-shuffle", "bitshuffle-lz4"]

# name -> (shape, dtype, HDF5 chunks, workload chunks or None for drover's default)
GEOMETRY = {
    "big_chunks": ((1024, 1100), "<f8", (512, 1100), None),  # 4.3 MiB chunks, default blocks
    "small_chunks": ((300, 200), "<f4", (4, 3), [100, 60]),  # 5,025 chunks (48 B: blosc skipped)
    "chunk_larger_than_block": ((200, 150), "<f4", (100, 150), [30, 50]),  # each chunk read by many blocks
    "blocks_cut_chunks": ((96, 70), "<f4", (16, 10), [24, 15]),  # block not a multiple of chunk
    "edge_chunks": ((45, 33), "<f4", (16, 10), [32, 20]),  # shape not a multiple of chunk
    "1d": ((1000,), "<f4", (64,), [200]),
    "3d": ((13, 7, 9), "<f8", (5, 7, 4), [5, 7, 8]),
    "4d": ((6, 5, 7, 8), ">i4", (3, 2, 4, 5), [3, 4, 4, 5]),
}


@pytest.mark.parametrize("filt", GEOMETRY_FILTERS)
@pytest.mark.parametrize("geom", list(GEOMETRY))
def test_chunk_geometry(drover, tmp_path, rng, geom, filt):
    """Chunks of every size against blocks of every size, 1-D to 4-D."""
    shape, dtype, chunks, blocks = GEOMETRY[geom]
    x = _write(tmp_path / "in.h5", {"/x": (_data(rng, dtype, shape), {"chunks": chunks, **FILTERS[filt][0]})})["/x"]
    inputs = {"x": Input("in.h5", "/x", x, chunks=blocks)}
    run, _, _ = run_workload(drover, tmp_path, inputs, _cases("x"), env=_env(tmp_path), write_inputs=False)
    _assert_logged(run, "decode", {"x": "drover"})


@pytest.mark.parametrize("stored", ["gzip+shuffle", "uncompressed"])
@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i2", "u1", ">i4"])
def test_large_chunks_reduced_in_their_stored_type(drover, tmp_path, rng, dtype, stored):
    """Chunks of 16,000+ elements are reduced chunk by chunk in their stored type (no
    f64 copy): plain folds go straight into the block's accumulator when the reduced
    axes lead, other reductions through partials; edge chunks (views that are not
    contiguous), an unwritten chunk (fill value), and a big-endian type (read as f64)
    must all agree with numpy. Blocks of 2 x 1 x 2 chunks; 2 workers."""
    shape, chunks = (45, 70, 300), (20, 70, 128)
    kw = {"chunks": chunks, "fillvalue": 3, **(GZIP_SHUFFLE if stored != "uncompressed" else {})}
    x = _data(rng, dtype, shape)
    x[40:45, :, 256:300] = 3  # the last corner chunk is never written
    with h5py.File(tmp_path / "in.h5", "w") as f:
        d = f.create_dataset("x", shape=shape, dtype=dtype, **kw)
        d[0:40] = x[0:40]
        d[40:45, :, 0:256] = x[40:45, :, 0:256]
        assert d.id.get_num_chunks() == 3 * 3 - 1
    cases = [
        Case("sum(x, axis=0)", "/sum0"),
        Case("mean(x, axis=(0, 1))", "/mean01"),
        Case("max(x, axis=0)", "/max0"),
        Case("min(x, axis=2)", "/min2"),
        Case("var(x, axis=0)", "/var0"),
        Case("std(x, axis=1)", "/std1"),
        Case("sum(x)", "/sum"),
        Case("x - mean(x, axis=0)", "/anom"),
    ]
    inputs = {"x": Input("in.h5", "/x", x, chunks=[40, 70, 256])}
    run, _, _ = run_workload(drover, tmp_path, inputs, cases, env=_env(tmp_path), write_inputs=False, workers=2)
    _assert_logged(run, "decode", {"x": "drover" if stored != "uncompressed" else "none"})


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("geom", ["chunk_larger_than_block", "blocks_cut_chunks"])
def test_each_chunk_decoded_once_per_worker(drover, tmp_path, rng, geom, workers):
    """Blocks smaller than chunks, or cutting them, read each chunk in parts, from
    several tasks: a worker decodes each chunk once (the workers' trace lines
    "decoded chunk" name the chunk and the worker's pid), and every chunk is decoded
    by some worker."""
    shape, dtype, chunks, blocks = GEOMETRY[geom]
    x = _write(tmp_path / "in.h5", {"/x": (_data(rng, dtype, shape), {"chunks": chunks, **GZIP_SHUFFLE})})["/x"]
    inputs = {"x": Input("in.h5", "/x", x, chunks=blocks)}
    cases = [Case("sum(x, axis=0)", "/sum0"), Case("mean(x)", "/mean")]
    env = _env(tmp_path, DROVER_LOG="drover=debug,drover::exec::hdf::reader=trace")
    run, _, _ = run_workload(drover, tmp_path, inputs, cases, env=env, write_inputs=False, workers=workers)
    decodes: dict[str, list[str]] = {}
    for line in _plain(run).splitlines():
        if "decoded chunk" in line:
            who = re.search(r"\bpid=(\d+)", line)
            chunk = re.search(r"chunk=(\[[\d, ]+\])", line)
            assert who and chunk, line
            decodes.setdefault(who.group(1), []).append(chunk.group(1))
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    assert decodes, run.describe()
    for who, seen in decodes.items():
        assert len(seen) == len(set(seen)), f"worker {who} decoded a chunk twice: {sorted(seen)}"
    assert len({c for seen in decodes.values() for c in seen}) == int(np.prod(grid))


@pytest.mark.parametrize("filt", ["gzip+shuffle", "zstd", "blosc-lz4-bitshuffle"])
def test_unwritten_chunks_of_a_compressed_dataset(drover, tmp_path, rng, filt):
    """Only three of 40 chunks are stored (one of them an edge chunk written in part);
    the others have no address and read as the dataset's fill value."""
    x = np.full((37, 45), -2.5, dtype="<f4")
    with h5py.File(tmp_path / "in.h5", "w") as f:
        d = f.create_dataset("x", shape=x.shape, dtype="<f4", chunks=(8, 6), fillvalue=-2.5, **FILTERS[filt][0])
        for sl in (np.s_[0:8, 0:6], np.s_[16:24, 18:24], np.s_[32:35, 42:45]):
            x[sl] = _data(rng, "<f4", x[sl].shape)
            d[sl] = x[sl]
        assert d.id.get_num_chunks() == 3
    with h5py.File(tmp_path / "in.h5", "r") as f:
        assert np.array_equal(f["x"][()], x)
    inputs = {"x": Input("in.h5", "/x", x, chunks=[16, 12])}
    cases = _cases("x") + [Case("max(x, axis=1)", "/max1")]
    run, _, _ = run_workload(drover, tmp_path, inputs, cases, env=_env(tmp_path), write_inputs=False)
    _assert_logged(run, "decode", {"x": "drover"})


def test_chunks_that_skipped_an_optional_filter(drover, tmp_path, rng):
    """h5py adds plugin filters as optional: a chunk blosc cannot shrink (noise) is
    stored without it, and the chunk's filter mask says so (bit 1 of shuffle, blosc,
    fletcher32). Compressed and skipped chunks alternate; each must be decoded by its
    own mask."""
    x = _data(rng, "<f8", (64, 30))
    x[16:32] = rng.normal(size=(16, 30))
    x[48:64, 10:20] = rng.normal(size=(16, 10))
    kw = {"chunks": (16, 10), "shuffle": True, "fletcher32": True, **BLOSC(cname="lz4", shuffle=BLOSC.NOSHUFFLE)}
    x = _write(tmp_path / "in.h5", {"/x": (x, kw)})["/x"]
    with h5py.File(tmp_path / "in.h5", "r") as f:
        d = f["x"]
        assert _filter_ids(d) == [2, 32001, 3]
        masks = {tuple(c.chunk_offset): c.filter_mask for c in map(d.id.get_chunk_info, range(d.id.get_num_chunks()))}
    assert set(masks.values()) == {0, 0b010} and masks[(16, 0)] == masks[(48, 10)] == 0b010, masks
    inputs = {"x": Input("in.h5", "/x", x, chunks=[32, 20])}
    run, _, _ = run_workload(drover, tmp_path, inputs, _cases("x"), env=_env(tmp_path), write_inputs=False)
    _assert_logged(run, "decode", {"x": "drover"})


# --------------------------------------------------------------------------
# 3. Chunk index types

# H5D_chunk_index_t of HDF5's H5Dpublic.h
INDEX_CODES = {"v1-btree": 0, "single-chunk": 1, "implicit": 2, "fixed-array": 3, "extensible-array": 4, "v2-btree": 5}


# The newest format drover's HDF5 (1.10) reads. h5py's own HDF5 may be newer: a 2.0
# library's libver="latest" (v200) writes filtered datasets 1.10 cannot open. The new
# chunk indexes only need the low bound at 1.10, so they are the same as with "latest".
LATEST = ("v110", "v110")


def _index_layouts(shape, chunks):
    """index -> (libver, create_dataset kw). HDF5 picks the chunk index from the file
    format bounds and the dataset: v1 B-tree for the earliest format; from 1.10 on,
    a fixed array for a fixed shape, an extensible array for one unlimited dimension,
    a v2 B-tree for two, the single-chunk index when one chunk is the whole dataset,
    and the implicit index (addresses computed, no index stored) for an unfiltered
    dataset with fixed shape whose chunks are allocated early."""
    early = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    early.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return {
        "v1-btree": ("earliest", {"chunks": chunks, "maxshape": (None, None)}),
        "fixed-array": (LATEST, {"chunks": chunks}),
        "extensible-array": (LATEST, {"chunks": chunks, "maxshape": (None, shape[1])}),
        "v2-btree": (LATEST, {"chunks": chunks, "maxshape": (None, None)}),
        "single-chunk": (LATEST, {"chunks": shape}),
        "implicit": (LATEST, {"chunks": chunks, "dcpl": early}),
    }


def _chunk_index_type(ds) -> int | None:
    """H5Dget_chunk_index_type through the HDF5 library h5py has loaded (None when that
    library is not found or lacks the function: then the docstring above is the claim)."""
    libs = [ln.split()[-1] for ln in open("/proc/self/maps") if re.search(r"/libhdf5(_serial)?(-[0-9a-f]+)?\.so", ln)]
    if not libs:
        return None
    fn = getattr(ctypes.CDLL(libs[0]), "H5Dget_chunk_index_type", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int)]
    out = ctypes.c_int(-1)
    assert fn(ds.id.id, ctypes.byref(out)) >= 0
    return out.value


@pytest.mark.parametrize("reads", ["default", "library"])
@pytest.mark.parametrize("stored", ["gzip+shuffle", "uncompressed"])
@pytest.mark.parametrize("index", list(INDEX_CODES))
def test_chunk_index_types(drover, tmp_path, rng, index, stored, reads):
    """Every chunk index HDF5 writes, compressed and not, through drover's own reads
    and with DROVER_DIRECT_READS=0 (the library's). 1,200 chunks: the fixed array
    pages its entries (more than 1,024), the B-trees have several levels."""
    if index == "implicit" and stored != "uncompressed":
        pytest.skip("HDF5 uses the implicit index only for unfiltered datasets")
    shape, chunks = (200, 150), (5, 5)
    libver, kw = _index_layouts(shape, chunks)[index]
    filters = GZIP_SHUFFLE if stored != "uncompressed" else {}
    x = _write(tmp_path / "in.h5", {"/x": (_data(rng, "<f8", shape), {**kw, **filters})}, libver=libver)["/x"]
    with h5py.File(tmp_path / "in.h5", "r") as f:
        code = _chunk_index_type(f["x"])
        assert code in (None, INDEX_CODES[index]), f"HDF5 chose index {code}, not {index}"
    extra = {"DROVER_DIRECT_READS": "0"} if reads == "library" else {}
    inputs = {"x": Input("in.h5", "/x", x, chunks=[40, 60])}
    run, _, _ = run_workload(drover, tmp_path, inputs, _cases("x"), env=_env(tmp_path, **extra), write_inputs=False)
    if reads == "library":
        _assert_logged(run, "direct", {"x": "false"})
    elif stored == "uncompressed":
        _assert_logged(run, "direct", {"x": "true"})
        _assert_logged(run, "decode", {"x": "none"})
    else:
        _assert_logged(run, "decode", {"x": "drover"})


# --------------------------------------------------------------------------
# 4. A fletcher32 mismatch


def test_fletcher32_mismatch_fails_the_run(drover, tmp_path, rng):
    """One byte of the stored (compressed) chunk at element offset [16, 5] (grid index
    [2, 1]) is flipped in the file: exit 1, "corrupted chunk" with the file and the
    chunk, and no output file."""
    x = _write(tmp_path / "in.h5", {"/x": (_data(rng, "<f8", (40, 30)), {"chunks": (8, 5), "compression": "gzip", "fletcher32": True})})["/x"]
    with h5py.File(tmp_path / "in.h5", "r") as f:
        d = f["x"]
        assert _filter_ids(d) == [1, 3]
        infos = [d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks())]
        info = next(c for c in infos if tuple(c.chunk_offset) == (16, 5))
    with open(tmp_path / "in.h5", "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)  # inside the deflate stream, before the checksum
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    with h5py.File(tmp_path / "in.h5", "r") as f:  # the library agrees that it is corrupt
        with pytest.raises(OSError):
            f["x"][16:24, 5:10]
        assert np.array_equal(f["x"][0:16], x[0:16])
    inputs = {"x": Input("in.h5", "/x", x, chunks=[16, 10])}
    cases = [Case("sum(x, axis=0)", "/sum0"), Case("x", "/copy")]
    run, _, _ = run_workload(drover, tmp_path, inputs, cases, env=_env(tmp_path), write_inputs=False, check=False)
    assert run.rc == 1, run.describe()
    err = _plain(run)
    lines = [ln for ln in err.splitlines() if "corrupted chunk" in ln]
    assert lines, run.describe()
    assert any("in.h5" in ln for ln in lines), run.describe()
    position = r"\b16,\s*5\b|\b2,\s*1\b|\b16:\d+,\s*5:\d+"  # element offset, grid index or region
    assert any(re.search(position, ln) for ln in lines), f"no chunk position in {lines}"
    assert "panicked" not in err, run.describe()
    assert _nothing_written(tmp_path) == [], run.describe()


# --------------------------------------------------------------------------
# 5. Filters nobody can decode, and the library's fallback

UNDECODABLE = {"lzf": ({"compression": "lzf"}, 32000), "bzip2": (dict(hdf5plugin.BZip2()), 307)}


@pytest.mark.parametrize("filt", list(UNDECODABLE))
def test_filter_neither_drover_nor_the_library_decodes(drover, tmp_path, rng, filt):
    """LZF (h5py's own filter) and bzip2 (hdf5plugin), with no plugin folder for the
    library: refused before any work, exit 2, one line naming the id and the dataset."""
    kw, fid = UNDECODABLE[filt]
    values = _write(tmp_path / "in.h5", {"/grp/packed": (_data(rng, "<f4", (30, 20)), {"chunks": (10, 10), **kw})})
    with h5py.File(tmp_path / "in.h5", "r") as f:
        assert _filter_ids(f["/grp/packed"]) == [fid]
    inputs = {"x": Input("in.h5", "/grp/packed", values["/grp/packed"])}
    run, _, _ = run_workload(drover, tmp_path, inputs, [Case("x", "/copy")], env=_env(tmp_path), write_inputs=False, check=False)
    assert run.rc == 2, run.describe()
    lines = [ln for ln in _plain(run).splitlines() if re.search(rf"\b{fid}\b", ln) and "grp/packed" in ln]
    assert lines, f"no line names filter {fid} and /grp/packed\n{run.describe()}"
    assert "panicked" not in run.stderr, run.describe()
    assert _nothing_written(tmp_path) == [], run.describe()


def test_filter_only_the_library_decodes(drover, tmp_path, rng):
    """bzip2 with hdf5plugin's folder as HDF5_PLUGIN_PATH: drover hands the chunks to
    the library (decode=hdf5), with the same values."""
    values = _write(tmp_path / "in.h5", {"/x": (_data(rng, "<f8", (40, 30)), {"chunks": (8, 5), **hdf5plugin.BZip2()})})
    inputs = {"x": Input("in.h5", "/x", values["/x"], chunks=[16, 10])}
    run, _, _ = run_workload(drover, tmp_path, inputs, _cases("x"), env=_env(tmp_path, plugins=True), write_inputs=False)
    _assert_logged(run, "decode", {"x": "hdf5"})
    _assert_logged(run, "direct", {"x": "false"})


# --------------------------------------------------------------------------
# 6. Many blocks over several workers


@pytest.mark.parametrize("workers", [2, 3])
def test_many_blocks_over_several_workers(drover, tmp_path, rng, workers):
    """gzip+shuffle f32, 24 MiB in 512 KiB chunks, 12 blocks per stage: the mean, std
    and row sums read x in one reduce stage, anomalies and the f32 copy are written by
    two more, so each worker decodes chunks over several rounds of blocks."""
    x = _write(tmp_path / "in.h5", {"/x": (_data(rng, "<f4", (3000, 2048)), {"chunks": (64, 2048), **GZIP_SHUFFLE})})["/x"]
    inputs = {"x": Input("in.h5", "/x", x, chunks=[256, 2048])}
    cases = [
        Case("x - mean(x, axis=0)", "/anom"),
        Case("std(x, axis=0)", "/std0"),
        Case("sum(x, axis=1)", "/sum1"),
        Case("x * 2", "/twice", dtype="f32"),
    ]
    run, result, _ = run_workload(drover, tmp_path, inputs, cases, workers=workers, env=_env(tmp_path), write_inputs=False)
    assert result["tasks_total"] >= 3 * 12, result
    assert result["tasks_retried"] == 0, run.describe()
    _assert_logged(run, "decode", {"x": "drover"})
