"""Outputs that xarray opens with their coordinates (issue 11 item 5): named dimensions
from the inputs, dimension-scale coordinates with the inputs' values and attributes
(picked as the output picks its axes), a coordinate for grouped axes, the variable's
units / long_name / standard_name carried where they still hold, CF cell_methods
appended, `_FillValue` NaN, dimensions shared by the outputs of one file. xarray's own
result for the same computation is the oracle, with both of its netCDF engines, on
files written by xarray in three calendars and on real package data."""

from __future__ import annotations

from pathlib import Path

import h5py
import iris_sample_data
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from conftest import run_drover, to_toml

# netCDF4-python (as xarray's engine) loads its own HDF5: run last (conftest)
pytestmark = pytest.mark.loads_netcdf4

ENGINES = ("netcdf4", "h5netcdf")
ATTRS = {"units": "K", "long_name": "air temperature at 2 m", "standard_name": "air_temperature", "cell_methods": "area: mean"}


def write_t2m(path: Path, calendar: str, rng) -> xr.DataArray:
    """Daily t2m over 3 years with NaN holes, lat/lon coordinates with attributes."""
    periods = 3 * 365 + 40
    if calendar == "standard":
        time = pd.date_range("1999-11-20", periods=periods, freq="D")
    else:
        time = xr.date_range("1999-11-20", periods=periods, freq="D", calendar=calendar, use_cftime=True)
    data = rng.normal(285, 8, size=(periods, 6, 8))
    data[rng.random(data.shape) < 0.05] = np.nan
    lat = xr.Variable("lat", np.linspace(-62.5, 62.5, 6), {"units": "degrees_north", "standard_name": "latitude"})
    lon = xr.Variable("lon", np.arange(0.0, 360.0, 45.0, dtype=np.float32), {"units": "degrees_east", "axis": "X"})
    da = xr.DataArray(data, dims=("time", "lat", "lon"), coords={"time": time, "lat": lat, "lon": lon}, name="t2m",
                      attrs=ATTRS)
    enc = {"time": {"units": "days since 1990-01-01", "calendar": calendar, "dtype": "float64"},
           "t2m": {"chunksizes": (37, 5, 3), "zlib": True}}
    da.to_dataset().to_netcdf(path, encoding=enc, engine="netcdf4")
    with xr.open_dataset(path) as ds:
        return ds["t2m"].load()


def run_doc(drover, tmp_path: Path, doc: dict, *args: str):
    """Write `doc` as tmp_path/w.toml and run it; it must succeed."""
    (tmp_path / "w.toml").write_text(to_toml(doc))
    r = run_drover(drover, ["run", tmp_path / "w.toml", *args])
    assert r.rc == 0, r.describe()
    return r


def opened(path: Path, engine: str) -> xr.Dataset:
    with xr.open_dataset(path, engine=engine) as ds:
        return ds.load()


def assert_same_coords(got: xr.DataArray, want: xr.DataArray) -> None:
    """Same dimension names in order, and each dimension's coordinate equal to
    xarray's (values, dtype kind), or absent where xarray has none."""
    assert got.dims == want.dims, f"dims {got.dims}, xarray's {want.dims}"
    for d in want.dims:
        if d in want.indexes:
            assert d in got.coords, f"no coordinate for {d}"
            g, w = got[d].values, want[d].values
            assert g.dtype.kind == w.dtype.kind or (g.dtype.kind in "OU" and w.dtype.kind in "OU"), (d, g.dtype, w.dtype)
            assert list(g) == list(w), f"coordinate {d}: {g[:5]}..., xarray's {w[:5]}..."
        else:
            assert d not in got.coords, f"{d} has a coordinate xarray does not have"


CARRY = {k: ATTRS[k] for k in ("units", "long_name", "standard_name")}

# name, expression, xarray's computation, carried attributes, cell_methods
CASES = [
    ("mean", "nanmean(t2m, axis=0)", lambda t: t.mean("time"), CARRY, "area: mean time: mean"),
    ("clim", "clim", lambda t: t.groupby("time.month").mean(), CARRY, "area: mean time: mean"),
    ("sclim", "nanmean(t2m, axis=0, by='season')", lambda t: t.groupby("time.season").mean(), CARRY,
     "area: mean time: mean"),
    ("ymax", "nanmax(t2m, axis=0, by='year')", lambda t: t.groupby("time.year").max(), CARRY, "area: mean time: maximum"),
    ("anom", "t2m - clim[groups(t2m, 'month')]", lambda t: t.groupby("time.month") - t.groupby("time.month").mean(),
     CARRY, None),
    ("part", "t2m[::3, 1:4, ::-2]", lambda t: t.isel(time=slice(None, None, 3), lat=slice(1, 4), lon=slice(None, None, -2)),
     CARRY, None),
    ("zonal", "nanmean(t2m, axis=2)", lambda t: t.mean("lon"), CARRY, "area: mean lon: mean"),
    ("box", "nanmin(t2m[:, 2:, :4], axis=(1, 2))", lambda t: t.isel(lat=slice(2, None), lon=slice(None, 4)).min(("lat", "lon")),
     CARRY, "area: mean lat: lon: minimum"),
    ("swapped", "transpose(t2m, (2, 0, 1))[:, 5:9]", lambda t: t.transpose("lon", "time", "lat").isel(time=slice(5, 9)),
     CARRY, None),
    ("area", "nanmean(t2m, axis=(1, 2), weights=cos(deg2rad(lat))[:, None])",
     lambda t: t.weighted(np.cos(np.deg2rad(t["lat"]))).mean(("lat", "lon")), CARRY, "area: mean lat: lon: mean"),
    ("var", "nanvar(t2m, axis=0)", lambda t: t.var("time"), {}, "area: mean time: variance"),
    ("warm", "t2m > 290", lambda t: t > 290, {}, None),
]


@pytest.mark.parametrize("calendar", ["standard", "noleap", "360_day"])
def test_outputs_open_in_xarray_with_its_coordinates(drover, tmp_path, rng, calendar):
    """Each output in its own file: xarray (both engines) opens it with the dimension
    names and coordinates of xarray's own result, the carried attributes, the cell
    methods, and `_FillValue` NaN."""
    t = write_t2m(tmp_path / "t2m.nc", calendar, rng)
    doc = {
        "inputs": {"t2m": {"file": "t2m.nc", "dataset": "/t2m", "chunks": [100, 4, 5]},
                   "lat": {"file": "t2m.nc", "dataset": "/lat"}},
        "let": {"clim": "nanmean(t2m, axis=0, by='month')"},
        "outputs": [{"expr": e, "file": f"{n}.nc", "dataset": f"/{n}"} for n, e, *_ in CASES],
    }
    run_doc(drover, tmp_path, doc, "--workers", "2", "--json")
    for engine in ENGINES:
        for name, expr, compute, carried, methods in CASES:
            ds = opened(tmp_path / f"{name}.nc", engine)
            got, want = ds[name], compute(t)
            assert_same_coords(got, want)
            np.testing.assert_allclose(got.values.astype(float), want.values.astype(float), rtol=1e-9, atol=1e-9,
                                       equal_nan=True, err_msg=f"{name} with {engine}")
            for k in ("units", "long_name", "standard_name"):
                assert got.attrs.get(k) == carried.get(k), f"{name}: {k} = {got.attrs.get(k)!r}"
            assert got.attrs.get("cell_methods") == methods, f"{name}: cell_methods = {got.attrs.get('cell_methods')!r}"
            if got.dtype.kind == "f":
                assert np.isnan(got.encoding["_FillValue"]), f"{name}: _FillValue {got.encoding.get('_FillValue')}"
            # the coordinates' own attributes come along
            for d in got.dims:
                if d in ("lat", "lon") or d.startswith(("lat", "lon")):
                    assert got[d].attrs.get("units", "").startswith("degrees_"), (name, d, got[d].attrs)
            if "time" in got.dims:
                assert got["time"].encoding.get("calendar") in (calendar, "proleptic_gregorian" if calendar == "standard" else calendar)


def test_outputs_of_one_file_share_their_dimensions(drover, tmp_path, rng):
    """Outputs into one file share the dimensions they agree on; an axis that differs
    (a subset) gets a dimension of its own, and xarray opens the file as one dataset."""
    t = write_t2m(tmp_path / "t2m.nc", "noleap", rng)
    doc = {
        "inputs": {"t2m": {"file": "t2m.nc", "dataset": "/t2m"}},
        "let": {"clim": "nanmean(t2m, axis=0, by='month')"},
        "outputs": [
            {"expr": "t2m - clim[groups(t2m, 'month')]", "file": "out.nc", "dataset": "/anom"},
            {"expr": "clim", "file": "out.nc", "dataset": "/clim"},
            {"expr": "nanmean(t2m, axis=0)", "file": "out.nc", "dataset": "/mean"},
            {"expr": "t2m[100:200, 1:]", "file": "out.nc", "dataset": "/part"},
            {"expr": "t2m[::7]", "file": "other.nc", "dataset": "/weekly"},
        ],
    }
    run_doc(drover, tmp_path, doc, "--json")
    for engine in ENGINES:
        ds = opened(tmp_path / "out.nc", engine)
        assert dict(ds.sizes) == {"time": t.sizes["time"], "lat": 6, "lon": 8, "month": 12, "time_2": 100, "lat_2": 5}
        assert ds["anom"].dims == ("time", "lat", "lon") and ds["clim"].dims == ("month", "lat", "lon")
        assert ds["mean"].dims == ("lat", "lon") and ds["part"].dims == ("time_2", "lat_2", "lon")
        assert list(ds["time_2"].values) == list(t["time"].values[100:200])
        assert list(ds["lat_2"].values) == list(t["lat"].values[1:])
        other = opened(tmp_path / "other.nc", engine)
        assert other["weekly"].dims == ("time", "lat", "lon"), "another file names its own dimensions"
        assert list(other["time"].values) == list(t["time"].values[::7])
    with h5py.File(tmp_path / "out.nc") as f:
        coords = sorted(k for k in f if f[k].attrs.get("CLASS") == b"DIMENSION_SCALE")
        assert coords == ["lat", "lat_2", "lon", "month", "time", "time_2"], coords
        assert f["anom"].dims[0][0].name == "/time" and f["clim"].dims[1][0] == f["anom"].dims[1][0]


def test_inputs_without_dimensions_and_unknown_axes_get_plain_dimensions(drover, tmp_path):
    """A plain HDF5 input (no dimension scales), a generated input and a reshape: the
    outputs still open in xarray, with numbered dimensions and no invented coordinate."""
    x = np.arange(24.0).reshape(6, 4)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = x
        f["x"].attrs["units"] = "m"
    doc = {
        "inputs": {"x": {"file": "x.h5", "dataset": "/x"}, "g": {"generate": "arange", "shape": [5]}},
        "outputs": [
            {"expr": "mean(x, axis=0)", "file": "out.nc", "dataset": "/m"},
            {"expr": "reshape(x, (3, 8))", "file": "out.nc", "dataset": "/r"},
            {"expr": "g * 2", "file": "out.nc", "dataset": "/g"},
            {"expr": "x[1:3]", "file": "out.nc", "dataset": "/s"},
        ],
    }
    run_doc(drover, tmp_path, doc, "--json")
    for engine in ENGINES:
        ds = opened(tmp_path / "out.nc", engine)
        assert ds["m"].dims == ("dim_1",) and ds["m"].attrs["units"] == "m" and ds["m"].attrs["cell_methods"] == "dim_0: mean"
        # numbered by their axis, renamed where one of the same name differs in length
        assert ds["r"].dims == ("dim_0", "dim_1_2"), ds["r"].dims
        assert ds["g"].dims == ("dim_0_2",) and "units" not in ds["g"].attrs, ds["g"].dims
        assert ds["s"].dims == ("dim_0_3", "dim_1"), ds["s"].dims
        assert not ds.coords, f"no coordinate invented: {list(ds.coords)}"
        np.testing.assert_array_equal(ds["r"].values, x.reshape(3, 8))
        np.testing.assert_array_equal(ds["s"].values, x[1:3])


def test_real_file_climatology_and_anomaly_open_with_xarrays_coordinates(drover, tmp_path):
    """E1_north_america.nc from iris-sample-data (Met Office HadCM3 run, 360_day
    calendar, float32 latitude/longitude with bounds): mean, monthly climatology,
    seasonal means and the monthly anomaly open in xarray with xarray's coordinates."""
    src = Path(iris_sample_data.path) / "E1_north_america.nc"
    assert src.is_file(), f"iris-sample-data lacks {src.name}"
    t = xr.open_dataset(src)["air_temperature"].load()
    t64 = t.astype("float64", keep_attrs=True)  # xarray keeps float32; drover computes in float64
    doc = {
        "inputs": {"t": {"file": str(src), "dataset": "/air_temperature", "chunks": [50, 37, 20]}},
        "let": {"clim": "nanmean(t, axis=0, by='month')"},
        "outputs": [
            {"expr": "nanmean(t, axis=0)", "file": "mean.nc", "dataset": "/t"},
            {"expr": "clim", "file": "clim.nc", "dataset": "/t"},
            {"expr": "nanmean(t, axis=0, by='season')", "file": "seas.nc", "dataset": "/t"},
            {"expr": "t - clim[groups(t, 'month')]", "file": "anom.nc", "dataset": "/t"},
        ],
    }
    run_doc(drover, tmp_path, doc, "--workers", "2", "--json")
    want = {
        "mean": t64.mean("time"),
        "clim": t64.groupby("time.month").mean(),
        "seas": t64.groupby("time.season").mean(),
        "anom": t64.groupby("time.month") - t64.groupby("time.month").mean(),
    }
    for engine in ENGINES:
        for name, w in want.items():
            got = opened(tmp_path / f"{name}.nc", engine)["t"]
            assert_same_coords(got, w)
            np.testing.assert_allclose(got.values, w.values, rtol=1e-9, atol=1e-9, equal_nan=True)
            assert got.attrs["units"] == t.attrs["units"] and got.attrs["standard_name"] == "air_temperature"
            if name != "anom":
                assert got.attrs["cell_methods"] == f"{t.attrs['cell_methods']} time: mean", got.attrs
            assert got["latitude"].attrs["units"] == t["latitude"].attrs["units"]
            assert "bounds" not in got["latitude"].attrs, "bounds name a variable the output does not have"
