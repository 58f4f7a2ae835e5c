"""Compressed outputs (issue 11 item 6): `compression = "gzip"` with `level` and
`shuffle`. Workers compress whole chunks (the chunk shape tiles the blocks) and the
writer stores them with HDF5 direct chunk writes; h5py and xarray read them back
through HDF5's own filters."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

from conftest import assert_refused, run_drover, to_toml, write_h5


def run(drover, tmp_path, outputs, workers=2, inputs=None):
    doc = {"inputs": inputs or {"t": {"file": "in.h5", "dataset": "/t", "chunks": [9, 13, 29]},
                                "n": {"file": "in.h5", "dataset": "/n", "chunks": [40]}},
           "outputs": outputs}
    (tmp_path / "w.toml").write_text(to_toml(doc))
    return run_drover(drover, ["run", tmp_path / "w.toml", "--workers", str(workers), "--json"])


@pytest.fixture
def data(tmp_path, rng):
    t = rng.normal(280, 6, size=(47, 31, 29)).astype(np.float32)
    t[3, 4, 5] = np.nan
    n = rng.integers(-1000, 1000, size=(333,)).astype(np.int32)
    write_h5(tmp_path / "in.h5", {"/t": (t, {"chunks": (5, 31, 29), "compression": "gzip"}), "/n": n})
    return t.astype(np.float64), n


def test_compressed_outputs_read_back_through_hdf5_filters(drover, tmp_path, data):
    t, n = data
    outs = [
        {"expr": "t - nanmean(t, axis=0)", "file": "out.h5", "dataset": "/anom", "dtype": "f32",
         "compression": "gzip", "level": 6},
        {"expr": "t * 2", "file": "out.h5", "dataset": "/t2", "compression": "gzip", "shuffle": False},
        {"expr": "nanmean(t, axis=0)", "file": "out.h5", "dataset": "/clim", "compression": "gzip", "level": 0},
        {"expr": "t > 285", "file": "out.h5", "dataset": "/hot", "compression": "gzip", "level": 9},
        {"expr": "n * 3", "file": "out.h5", "dataset": "/n3", "dtype": "i32", "compression": "gzip"},
        {"expr": "nanmean(t)", "file": "out.h5", "dataset": "/scalar", "compression": "gzip"},   # 0-d: stored plain
        {"expr": "t - nanmean(t, axis=0)", "file": "plain.h5", "dataset": "/anom", "dtype": "f32"},
    ]
    r = run(drover, tmp_path, outs)
    assert r.rc == 0, r.describe()
    anom = t - np.nanmean(t, axis=0)
    with h5py.File(tmp_path / "out.h5") as f:
        a = f["anom"]
        assert (a.compression, a.compression_opts, a.shuffle) == ("gzip", 6, True)
        assert all(b % c == 0 for b, c in zip((9, 13, 29), a.chunks)), f"chunks {a.chunks} tile the blocks"
        np.testing.assert_array_equal(a[()], anom.astype(np.float32))
        assert (f["t2"].compression, f["t2"].shuffle) == ("gzip", False)
        np.testing.assert_array_equal(f["t2"][()], t * 2)
        np.testing.assert_allclose(f["clim"][()], np.nanmean(t, axis=0), rtol=1e-12)
        assert f["clim"].compression_opts == 0
        assert f["hot"].dtype == np.bool_ and f["hot"].compression == "gzip"
        np.testing.assert_array_equal(f["hot"][()], t > 285)
        assert f["n3"].dtype == np.int32
        np.testing.assert_array_equal(f["n3"][()], n * 3)
        assert f["scalar"].compression is None and f["scalar"].shape == ()
        np.testing.assert_allclose(f["scalar"][()], np.nanmean(t), rtol=1e-12)
    # gzip stores the anomaly in fewer bytes than the same anomaly stored plain
    with h5py.File(tmp_path / "out.h5") as f, h5py.File(tmp_path / "plain.h5") as g:
        zipped, plain = f["anom"].id.get_storage_size(), g["anom"].id.get_storage_size()
        assert zipped < 0.95 * plain, (zipped, plain)
    # xarray opens it (h5netcdf engine, HDF5's filters)
    ds = xr.open_dataset(tmp_path / "out.h5", engine="h5netcdf", phony_dims="sort")
    np.testing.assert_array_equal(ds["anom"].values, anom.astype(np.float32))


@pytest.mark.parametrize("workers", [1, 3])
def test_the_same_bytes_whatever_the_worker_count(drover, tmp_path, data, workers):
    t, _ = data
    out = [{"expr": "t - nanmean(t, axis=0)", "file": "out.h5", "dataset": "/anom", "compression": "gzip"}]
    r = run(drover, tmp_path, out, workers=workers)
    assert r.rc == 0, r.describe()
    with h5py.File(tmp_path / "out.h5") as f:
        np.testing.assert_allclose(f["anom"][()], t - np.nanmean(t, axis=0), rtol=1e-12, equal_nan=True)


BAD = [
    ({"compression": "zstd"}, ["outputs[0]", "compression = \"zstd\" is not written yet", "\"gzip\""]),
    ({"compression": "lzma"}, ["compression = \"lzma\" is not a compression"]),
    ({"compression": "gzip", "level": 12}, ["level = 12 is not a gzip level", "0 (store) to 9"]),
    ({"level": 4}, ["level or shuffle but no compression"]),
    ({"shuffle": True}, ["level or shuffle but no compression"]),
]


@pytest.mark.parametrize("extra,quoted", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_compression_is_refused_before_any_work(drover, tmp_path, data, extra, quoted):
    r = run(drover, tmp_path, [{"expr": "t * 2", "file": "out.h5", "dataset": "/o", **extra}])
    assert_refused(r, quoted, tmp_path / "out.h5")
