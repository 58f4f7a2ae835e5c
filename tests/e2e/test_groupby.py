"""Time groupings (issue 11 items 2 and 3): CF time coordinates decoded in every CF
calendar, found next to the variable or named with `time = "/time"`, and reductions
`by="month" | "season" | "year" | "dayofyear" | "hour"`, checked against xarray's
`groupby("time.<by>")` on files written by xarray, with blocks that cut the groups."""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from conftest import assert_refused, read_h5, run_drover, to_toml

# netCDF4-python (directly or as xarray's engine) loads its own HDF5: run last (conftest)
pytestmark = pytest.mark.loads_netcdf4



def write(path, calendar: str, start: str, periods: int, freq: str, rng, *, name="t2m", group=None, extra=None):
    if calendar in ("standard", "proleptic_gregorian") and freq != "h":
        time = pd.date_range(start, periods=periods, freq=freq)
    else:
        time = xr.date_range(start, periods=periods, freq=freq, calendar=calendar, use_cftime=True)
    data = rng.normal(285, 8, size=(periods, 5, 7))
    data[rng.random(data.shape) < 0.05] = np.nan
    da = xr.DataArray(data, dims=("time", "lat", "lon"), coords={"time": time, "lat": np.linspace(-60, 60, 5)}, name=name)
    ds = da.to_dataset()
    enc = {"time": {"units": "days since 1990-01-01" if freq != "h" else "hours since 1990-01-01 00:00:00",
                    "calendar": calendar, "dtype": "float64"},
           name: {"chunksizes": (11, 5, 7)}}
    if extra:
        enc[name].update(extra)
    ds.to_netcdf(path, encoding=enc, group=group, engine="netcdf4")
    return xr.open_dataset(path, group=group)[name].load()


def run(drover, tmp_path, inputs: dict, outputs: list[tuple[str, str]]):
    doc = {"inputs": inputs, "outputs": [{"expr": e, "file": "out.h5", "dataset": d} for e, d in outputs]}
    (tmp_path / "w.toml").write_text(to_toml(doc))
    return run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "2", "--json"])


CASES = [  # expression, xarray's computation
    ("nanmean(t2m, axis=0, by='month')", lambda t: t.groupby("time.month").mean()),
    ("mean(t2m, axis=0, by='month')", lambda t: t.groupby("time.month").mean(skipna=False)),
    ("nanmean(t2m, axis=0, by='season')", lambda t: t.groupby("time.season").mean()),
    ("nansum(t2m, axis=0, by='year')", lambda t: t.groupby("time.year").sum()),
    ("nanmax(t2m, axis=0, by='dayofyear')", lambda t: t.groupby("time.dayofyear").max()),
    ("nanstd(t2m, axis=0, by='month')", lambda t: t.groupby("time.month").std()),
    ("nanmean(t2m - 273.15, axis=0, by='season')", lambda t: (t - 273.15).groupby("time.season").mean()),
    ('count_nonzero(t2m > 290, axis=0, by="month")', lambda t: (t > 290).groupby("time.month").sum()),
]


@pytest.mark.parametrize("calendar,start", [("standard", "1999-11-20"), ("noleap", "2001-02-10"), ("360_day", "2000-12-01"),
                                             ("proleptic_gregorian", "2003-06-15"), ("all_leap", "1999-12-25"),
                                             ("julian", "2000-01-20")])
def test_grouped_reductions_equal_xarray(drover, tmp_path, rng, calendar, start):
    t = write(tmp_path / "t2m.nc", calendar, start, 800, "D", rng)
    r = run(drover, tmp_path, {"t2m": {"file": "t2m.nc", "dataset": "/t2m", "chunks": [37, 3, 7]}},
            [(e, f"/g{k}") for k, (e, _) in enumerate(CASES)])
    assert r.rc == 0, r.describe()
    assert r.json()["tasks_total"] > 40
    for k, (expr, want) in enumerate(CASES):
        got, _ = read_h5(tmp_path / "out.h5", f"/g{k}")
        w = want(t).values.astype(np.float64)
        assert got.shape == w.shape, f"{expr} ({calendar}): shape {got.shape} vs xarray {w.shape}"
        np.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=f"{expr} ({calendar})")


def test_hourly_data_by_hour_and_a_named_time_coordinate_in_a_group(drover, tmp_path, rng):
    t = write(tmp_path / "h.nc", "standard", "2001-03-01", 24 * 9 + 5, "h", rng, group="/fc")
    r = run(drover, tmp_path, {"x": {"file": "h.nc", "dataset": "/fc/t2m", "chunks": [10, 5, 7], "time": "/fc/time"},
                               "y": {"file": "h.nc", "dataset": "/fc/t2m", "chunks": [13, 5, 7]}},
            [("nanmean(x, axis=0, by='hour')", "/h"), ("nanmean(y, axis=0, by='hour')", "/h2"),
             ("nanmin(y, axis=0, by='dayofyear')", "/d")])
    assert r.rc == 0, r.describe()
    w = t.groupby("time.hour").mean().values
    np.testing.assert_allclose(read_h5(tmp_path / "out.h5", "/h")[0], w, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(read_h5(tmp_path / "out.h5", "/h2")[0], w, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(read_h5(tmp_path / "out.h5", "/d")[0], t.groupby("time.dayofyear").min().values,
                               rtol=1e-12, equal_nan=True)


def test_packed_int16_monthly_climatology(drover, tmp_path, rng):
    """The usual ERA5-like encoding: int16 packed with a fill value, decoded then grouped."""
    t = write(tmp_path / "p.nc", "standard", "2000-01-01", 366 * 2, "D", rng,
              extra={"dtype": "int16", "scale_factor": 0.01, "add_offset": 285.0, "_FillValue": -32767})
    r = run(drover, tmp_path, {"t2m": {"file": "p.nc", "dataset": "/t2m", "chunks": [45, 5, 7]}},
            [("nanmean(t2m, axis=0, by='month')", "/clim")])
    assert r.rc == 0, r.describe()
    got = read_h5(tmp_path / "out.h5", "/clim")[0]
    want = t.astype(np.float64).groupby("time.month").mean().values
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.nanmax(got) > 200, "decoded kelvins, not packed integers"


BAD = [
    ("nanmean(t2m, axis=0, by='week')", {}, ["by=\"week\" is not a grouping", "\"month\""]),
    ("nanmean(t2m, axis=1, by='month')", {}, ["time axis", "at axis 0, not at the reduced axis 1"]),
    ("nanmean(t2m, axis=(0, 1), by='month')", {}, ["groups one axis"]),
    ("nanmean(t2m[:20], axis=0, by='month')", {}, ["not an input or an elementwise expression"]),
    ("argmax(t2m, axis=0, by='month')", {}, ["argmax()", "unexpected keyword argument 'by'"]),
    ("nanmean(t2m, axis=0, by=3)", {}, ["by= takes a string"]),
    ("nanmean(t2m, axis=0, by='month')", {"time": "/nope"}, ["time = \"/nope\" is not a dataset"]),
    ("nanmean(t2m, axis=0, by='month')", {"time": "/lat"}, ["time coordinate \"/lat\" has no units attribute"]),
]


@pytest.mark.parametrize("expr,extra,quoted", BAD, ids=[f"{b[0]}{b[1]}" for b in BAD])
def test_bad_groupings_are_refused_before_any_work(drover, tmp_path, rng, expr, extra, quoted):
    write(tmp_path / "t2m.nc", "standard", "2000-01-01", 40, "D", rng)
    r = run(drover, tmp_path, {"t2m": {"file": "t2m.nc", "dataset": "/t2m", **extra}}, [(expr, "/o")])
    assert_refused(r, quoted, tmp_path / "out.h5")


@pytest.mark.parametrize("attrs,quoted", [
    ({"units": "months since 2000-01-01"}, ["\"months since 2000-01-01\"", "unit \"months\""]),
    ({"units": "days since 2000-01-01", "calendar": "lunar"}, ["calendar \"lunar\"", "360_day"]),
    ({"units": "days since yesterday"}, ["\"yesterday\""]),
])
def test_undecodable_time_units_are_quoted(drover, tmp_path, rng, attrs, quoted):
    import h5py
    write(tmp_path / "t2m.nc", "standard", "2000-01-01", 40, "D", rng)
    with h5py.File(tmp_path / "t2m.nc", "a") as f:
        for k, v in attrs.items():
            f["time"].attrs[k] = np.bytes_(v)
    r = run(drover, tmp_path, {"t2m": {"file": "t2m.nc", "dataset": "/t2m"}}, [("nanmean(t2m, axis=0, by='month')", "/o")])
    assert_refused(r, quoted, tmp_path / "out.h5")
    # without by=, the same file reduces fine: the time axis is only needed for groupings
    r = run(drover, tmp_path, {"t2m": {"file": "t2m.nc", "dataset": "/t2m"}}, [("nanmean(t2m, axis=0)", "/o")])
    assert r.rc == 0, r.describe()


@pytest.mark.parametrize("calendar", ["standard", "noleap", "360_day"])
def test_monthly_and_seasonal_anomalies_equal_xarray(drover, tmp_path, rng, calendar):
    t = write(tmp_path / "t2m.nc", calendar, "2000-01-01", 3 * 365 + 20, "D", rng)
    doc = {
        "inputs": {"t2m": {"file": "t2m.nc", "dataset": "/t2m", "chunks": [29, 5, 4]}},
        "let": {"clim": "nanmean(t2m, axis=0, by='month')", "sclim": "nanmean(t2m, axis=0, by='season')"},
        "outputs": [
            {"expr": "t2m - clim[groups(t2m, 'month')]", "file": "out.h5", "dataset": "/anom"},
            {"expr": "t2m - take(sclim, groups(t2m, \"season\"), axis=0)", "file": "out.h5", "dataset": "/sanom"},
            {"expr": "(t2m - clim[groups(t2m, 'month')])[10:500:7, 1:]", "file": "out.h5", "dataset": "/part"},
            {"expr": "clim", "file": "out.h5", "dataset": "/clim"},
        ],
    }
    (tmp_path / "w.toml").write_text(to_toml(doc))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    clim = t.groupby("time.month").mean()
    anom = (t.groupby("time.month") - clim).values
    sanom = (t.groupby("time.season") - t.groupby("time.season").mean()).values
    out = tmp_path / "out.h5"
    np.testing.assert_allclose(read_h5(out, "/anom")[0], anom, rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(read_h5(out, "/sanom")[0], sanom, rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(read_h5(out, "/part")[0], anom[10:500:7, 1:], rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(read_h5(out, "/clim")[0], clim.values, rtol=1e-12, equal_nan=True)
    assert np.nanmax(np.abs(read_h5(out, "/anom")[0])) < 60, "an anomaly, not the field"


BAD_TAKE = [
    ("t2m[t2m]", ["column 5", "integer-array indexing takes groups", "integer constants"]),
    ("take(t2m, groups(t2m, 'month'), axis=0)", ["take()", "picks rows of a reduction result"]),
    ("nanmean(t2m, axis=0, by='season')[groups(t2m, 'month')]", ["index 1 is out of bounds for axis 0 with size 1"]),
    ("groups(t2m, 'month')", ["groups()", "is an index array"]),
    ("take(nanmean(t2m, axis=0, by='month'), groups(t2m, 'month'))", ["take()", "axis= as one integer"]),
    ("nanmean(t2m, axis=0, by='month')[groups(t2m)]", ["groups() takes an array and a grouping"]),
]


@pytest.mark.parametrize("expr,quoted", BAD_TAKE, ids=[b[0] for b in BAD_TAKE])
def test_bad_index_arrays_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    write(tmp_path / "t2m.nc", "standard", "2000-01-01", 40, "D", rng)
    r = run(drover, tmp_path, {"t2m": {"file": "t2m.nc", "dataset": "/t2m"}}, [(expr, "/o")])
    line = assert_refused(r, quoted, tmp_path / "out.h5")
    assert expr in line
