"""CF decoding of inputs (issue 11 item 1).

drover decodes every input read from a file as xarray's `open_dataset` does by default
(mask_and_scale): stored values equal to `_FillValue` or to any `missing_value` become
NaN, the others `value * scale_factor + add_offset`, computed in float64;
`decode = false` on an input reads the stored values.

Every decoded result is checked against two oracles:
- an independent float64 decode in numpy of the stored values read with h5py
  (`np_decode`, relative 1e-9), and
- `xarray.open_dataset` with its default decoding, engines netcdf4 and h5netcdf, reduced
  by xarray itself in float64 (relative 1e-6: xarray decodes int16 packed with float32
  attributes into float32).

The files: CF files written here by xarray, netCDF4-python, h5netcdf and h5py (packed
int16, fills, missing values, HDF5 chunks cut by drover's blocks, gzip level 0, chunks
larger than the dataset, a variable inside a netCDF group, attributes as scalars and as
1-element arrays, fills of another type than the data, float data with fills), and real
NetCDF4 files nobody here wrote, shipped in the PyPI package iris-sample-data.

Every test asserts something that a drover ignoring the CF attributes would get wrong.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import h5netcdf
import h5py
import iris_sample_data
import numpy as np
import pytest
import xarray as xr

from conftest import assert_close, assert_refused, oracle, read_h5, run_drover, to_toml

# netCDF4-python (directly or as xarray's engine) loads its own HDF5: run last (conftest)
pytestmark = pytest.mark.loads_netcdf4


CF_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset")
ENGINES = ("netcdf4", "h5netcdf")
SAMPLE_DATA = Path(iris_sample_data.path)


# --------------------------------------------------------------------------
# Oracles


def read_stored(path: Path, dataset: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored values of a dataset and its CF attributes, as h5py reads them."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        return ds[()], {k: ds.attrs[k] for k in CF_ATTRS if k in ds.attrs}


def np_decode(stored: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """CF mask_and_scale in float64, written from the CF conventions, not from xarray:
    a stored value equal to `_FillValue` or to any `missing_value` becomes NaN (numpy's
    comparison, so a fill the stored type cannot hold exactly matches nothing, as in
    xarray and netCDF4-python), the others `value * scale_factor + add_offset`."""
    stored = np.asarray(stored)
    out = stored.astype(np.float64)
    for key in ("_FillValue", "missing_value"):
        for fv in np.ravel(attrs.get(key, [])):
            if not np.isnan(np.float64(fv)):  # a NaN fill: NaN stays NaN anyway
                out[stored == fv] = np.nan
    if "scale_factor" in attrs:
        out = out * np.float64(np.ravel(attrs["scale_factor"])[0])
    if "add_offset" in attrs:
        out = out + np.float64(np.ravel(attrs["add_offset"])[0])
    return out


def open_xr(path: Path, engine: str, group: str | None = None) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multiple fill values", calendars, ...
        return xr.open_dataset(path, engine=engine, group=group)


def xr_reductions(path: Path, var: str, engine: str, axis: int, group: str | None = None) -> dict[str, np.ndarray]:
    """xarray's own results for the outputs of `cf_outputs(axis)`: xarray decodes (its
    default open_dataset), and reduces its decoded values in float64, as drover does."""
    with open_xr(path, engine, group) as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        da = ds[var].astype("float64")
        dim = da.dims[axis]
        first = da.dims[0]
        return {
            "/x": da.values,
            "/mean": da.mean(dim, skipna=False).values,
            "/nanmean": da.mean(dim, skipna=True).values,
            "/anom": (da - da.mean(first, skipna=True)).transpose(*da.dims).values,
            "/nansum": da.sum(dim, skipna=True).values,
            "/nanmax": da.max(dim, skipna=True).values,
        }


def xr_values(path: Path, var: str, engine: str, group: str | None = None) -> np.ndarray:
    with open_xr(path, engine, group) as ds:
        return np.asarray(ds[var].values)


def numpy_result(expr: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return oracle(expr, inputs)


# --------------------------------------------------------------------------
# Runs


def cf_outputs(axis: int) -> tuple[dict[str, str], dict[str, str]]:
    """(outputs, lets) over the decoded input x and the raw input r (same dataset,
    decode = false). The anomaly is taken along axis 0 (x - its nan-mean over axis 0)."""
    outputs = {
        "/x": "x",
        "/mean": f"mean(x, axis={axis})",
        "/nanmean": f"nanmean(x, axis={axis})",
        "/anom": "x - clim",
        "/nansum": f"nansum(x, axis={axis})",
        "/nanmax": f"nanmax(x, axis={axis})",
        "/raw": "r",
        "/raw_mean": f"mean(r, axis={axis})",
    }
    return outputs, {"clim": "nanmean(x, axis=0)"}


def inline(expr: str, lets: Mapping[str, str]) -> str:
    for name, e in lets.items():
        expr = re.sub(rf"\b{name}\b", f"({e})", expr)
    return expr


def run_cf(
    drover: Path,
    workdir: Path,
    inputs: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, str],
    lets: Mapping[str, str] | None = None,
    *,
    json: bool = True,
    workers: int = 2,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Run a workload writing every output into out.h5; return (run, {dataset: values})."""
    doc: dict[str, Any] = {"inputs": {k: dict(v) for k, v in inputs.items()}}
    if lets:
        doc["let"] = dict(lets)
    doc["outputs"] = [{"expr": e, "file": "out.h5", "dataset": d} for d, e in outputs.items()]
    wl = workdir / "w.toml"
    wl.write_text(to_toml(doc))
    args = ["run", wl, "--workers", str(workers)] + (["--json"] if json else [])
    r = run_drover(drover, args)
    assert r.rc == 0, f"drover run failed\n{r.describe()}"
    assert "panicked" not in r.stderr, r.describe()
    got = {d: read_h5(workdir / "out.h5", d)[0] for d in outputs}
    if json:
        res = r.json()
        for o in res.get("outputs", []):
            assert o["dtype"] == "f64", f"outputs default to f64: {o}"
    return r, got


def check_inputs_report(result: dict, want: Mapping[str, Mapping[str, Any] | None]) -> None:
    """--json "inputs": one entry per input, decoded or not, with the CF attributes used.
    want: input name -> its CF attributes (None: not decoded)."""
    ins = result.get("inputs")
    assert isinstance(ins, list), f"--json lacks the 'inputs' list: {result}"
    by = {i.get("name"): i for i in ins}
    assert len(by) == len(ins) and set(by) == set(want), f"--json inputs {ins}, want {sorted(want)}"
    for name, attrs in want.items():
        e = by[name]
        if attrs is None:
            assert e.get("decoded") is False and e.get("cf") is None, f"{name}: {e}"
            continue
        assert e.get("decoded") is True, f"{name}: {e}"
        cf = e.get("cf")
        assert isinstance(cf, dict), f"{name}: {e}"
        want_fills = {
            float(v) for k in ("_FillValue", "missing_value") for v in np.ravel(attrs.get(k, [])) if not np.isnan(float(v))
        }
        # a NaN fill has no JSON number: null (or left out) is fine
        got_fills = {float(v) for v in cf.get("fill_values", []) if v is not None and v == v}
        assert got_fills == want_fills, f"{name}: fill_values {cf.get('fill_values')}, want {sorted(want_fills)}"
        for k in ("scale_factor", "add_offset"):
            if k in attrs:
                want_v = float(np.ravel(attrs[k])[0])
                assert cf.get(k) == pytest.approx(want_v, rel=1e-15), f"{name}: {k} {cf.get(k)}, want {want_v}"
            else:
                assert k in cf and cf[k] is None, f"{name}: {k} should be null: {cf}"


def check_cf_run(
    got: Mapping[str, np.ndarray],
    stored: np.ndarray,
    attrs: Mapping[str, Any],
    outputs: Mapping[str, str],
    lets: Mapping[str, str],
    what: str,
) -> np.ndarray:
    """Every output against numpy on the float64 decode (decoded input x) or on the
    stored values (raw input r), relative 1e-9; returns the decode."""
    dec = np_decode(stored, attrs)
    finite = np.abs(dec[np.isfinite(dec)])
    scale = float(finite.max()) if finite.size else 1.0
    for ds, expr in outputs.items():
        e = inline(expr, lets)
        if re.search(r"\br\b", e):
            expected = numpy_result(e, {"r": stored})
            assert_close(got[ds], expected, dtype="f64", what=f"{what}: {ds} = {expr} (decode = false)")
        else:
            expected = numpy_result(e, {"x": dec})
            assert_close(got[ds], expected, dtype="f64", scale=scale, what=f"{what}: {ds} = {expr}")
    return dec


def check_against_xarray(
    got: Mapping[str, np.ndarray], path: Path, var: str, axis: int, dec: np.ndarray, what: str,
    group: str | None = None,
) -> None:
    finite = np.abs(dec[np.isfinite(dec)])
    scale = float(finite.max()) if finite.size else 1.0
    for engine in ENGINES:
        for ds, want in xr_reductions(path, var, engine, axis, group).items():
            np.testing.assert_allclose(
                got[ds], want, rtol=1e-6, atol=1e-6 * scale,
                err_msg=f"{what}: {ds} vs xarray.open_dataset (engine {engine})",
            )


def assert_decoding_matters(got: Mapping[str, np.ndarray], dec: np.ndarray, stored: np.ndarray) -> None:
    """The decoded mean is not the mean of the stored values (drover would pass none of
    these tests by averaging the raw numbers), and fills did turn into NaN."""
    assert not np.allclose(got["/mean"], got["/raw_mean"], rtol=1e-6, equal_nan=True), (
        "decoded and raw means are equal: the test data does not exercise the CF attributes"
    )
    n_fill = int(np.isnan(dec).sum() - np.isnan(stored.astype(np.float64)).sum())
    if n_fill:
        assert np.isnan(got["/x"]).sum() >= n_fill, "fill values did not become NaN"


def tasks_at_least(result: dict, n: int) -> None:
    assert result["tasks_total"] >= n, f"expected small blocks (>= {n} tasks): {result}"


# --------------------------------------------------------------------------
# Generated CF files


def temperatures(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Temperatures in K with NaN holes: scattered cells, a block, and whole columns
    missing at every time step (nanmean NaN there, nansum 0)."""
    t = 285.0 + 15.0 * rng.standard_normal(shape)
    t[rng.random(shape) < 0.03] = np.nan
    t[3, 2:5, 4:9] = np.nan
    t[:, 10, 11] = np.nan
    t[:, 0, 0] = np.nan
    return t


def t2m_dataset(t: np.ndarray) -> xr.Dataset:
    nt, ny, nx = t.shape
    return xr.Dataset(
        {"t2m": (("time", "lat", "lon"), t, {"units": "K", "standard_name": "air_temperature"})},
        coords={
            "time": ("time", np.arange(nt, dtype=np.float64), {"units": "days since 2000-01-01", "calendar": "standard"}),
            "lat": ("lat", np.linspace(-60.0, 60.0, ny), {"units": "degrees_north"}),
            "lon": ("lon", np.linspace(0.0, 330.0, nx), {"units": "degrees_east"}),
        },
    )


@pytest.mark.parametrize("compression", ["zlib", "complevel0"])
def test_packed_int16_written_by_xarray(drover, tmp_path, rng, compression):
    """The usual encoding: int16 + scale_factor + add_offset + _FillValue, HDF5 chunks
    (7, 5, 9) that drover's (4, 6, 8) blocks cut across."""
    t = temperatures(rng, (30, 17, 23))
    enc = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32767, "chunksizes": (7, 5, 9)}
    enc.update({"zlib": True, "complevel": 4} if compression == "zlib" else {"zlib": True, "complevel": 0})
    f = tmp_path / "t2m.nc"
    t2m_dataset(t).to_netcdf(f, engine="netcdf4", encoding={"t2m": enc})
    stored, attrs = read_stored(f, "/t2m")
    assert stored.dtype == np.int16 and set(attrs) == {"_FillValue", "scale_factor", "add_offset"}
    with h5py.File(f) as h:
        assert h["t2m"].chunks == (7, 5, 9)
    outputs, lets = cf_outputs(0)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "t2m.nc", "dataset": "/t2m", "chunks": [4, 6, 8]},
         "r": {"file": "t2m.nc", "dataset": "/t2m", "chunks": [4, 6, 8], "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, f"xarray int16 ({compression})")
    check_against_xarray(got, f, "t2m", 0, dec, f"xarray int16 ({compression})")
    # the values themselves: xarray's decode, and the raw integers for decode = false
    np.testing.assert_allclose(got["/x"], t, rtol=0, atol=0.005 + 1e-9, err_msg="decoded values vs the data written")
    np.testing.assert_array_equal(got["/raw"], stored.astype(np.float64))
    # mean is NaN wherever a fill occurs along time; nanmean only where all are fills
    any_fill = np.any(stored == -32767, axis=0)
    all_fill = np.all(stored == -32767, axis=0)
    assert any_fill.sum() > all_fill.sum() > 0
    np.testing.assert_array_equal(np.isnan(got["/mean"]), any_fill)
    np.testing.assert_array_equal(np.isnan(got["/nanmean"]), all_fill)
    np.testing.assert_array_equal(got["/nansum"][all_fill], 0.0)
    assert_decoding_matters(got, dec, stored)
    res = r.json()
    check_inputs_report(res, {"x": attrs, "r": None})
    tasks_at_least(res, 8 * 3 * 3)


@pytest.mark.parametrize("fills", ["fill_value", "fill_and_missing_value"])
def test_packed_int16_in_large_chunks_decoded_as_folded(drover, tmp_path, rng, fills):
    """HDF5 chunks of 48,000 values and drover's default blocks: reductions of the
    input itself fold the stored int16 values, decoding each as it is folded (one fill
    value), or decode regions first (two fill values); both equal xarray's decode."""
    t = temperatures(rng, (40, 60, 80))
    enc = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32767, "chunksizes": (10, 60, 80),
           "zlib": True, "complevel": 1}
    f = tmp_path / "t2m.nc"
    ds = t2m_dataset(t)
    ds.to_netcdf(f, engine="netcdf4", encoding={"t2m": enc})
    if fills == "fill_and_missing_value":
        # cells stored as -32000 are missing too (xarray masks both)
        with h5py.File(f, "a") as h:
            v = h["t2m"][...]
            v[5, 20:30, 30:40] = -32000
            h["t2m"][...] = v
            h["t2m"].attrs["missing_value"] = np.int16(-32000)
    stored, attrs = read_stored(f, "/t2m")
    outputs, lets = cf_outputs(0)
    outputs.update({"/min": "min(x, axis=0)", "/sum": "sum(x, axis=0)", "/nanmin": "nanmin(x, axis=0)"})
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "t2m.nc", "dataset": "/t2m"}, "r": {"file": "t2m.nc", "dataset": "/t2m", "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, f"int16 in large chunks ({fills})")
    check_against_xarray(got, f, "t2m", 0, dec, f"int16 in large chunks ({fills})")
    assert_decoding_matters(got, dec, stored)
    if fills == "fill_and_missing_value":
        assert np.isnan(got["/mean"][20:30, 30:40]).all() and not np.isnan(got["/nanmean"][20:30, 30:40]).any()


def test_packed_variable_in_a_netcdf_group(drover, tmp_path, rng):
    """/forecast/surface/t2m (float32 scale_factor and add_offset: xarray decodes to
    float32) next to a different /t2m at the root."""
    t = temperatures(rng, (24, 17, 23))
    f = tmp_path / "groups.nc"
    t2m_dataset(np.full(t.shape, 300.0)).to_netcdf(f, engine="netcdf4")  # the root's t2m: another variable
    enc = {"dtype": "int16", "scale_factor": np.float32(0.05), "add_offset": np.float32(273.15),
           "_FillValue": np.int16(-32767), "chunksizes": (5, 17, 6), "zlib": True}
    t2m_dataset(t).to_netcdf(f, mode="a", group="forecast/surface", engine="netcdf4", encoding={"t2m": enc})
    stored, attrs = read_stored(f, "/forecast/surface/t2m")
    assert attrs["scale_factor"].dtype == np.float32 and attrs["add_offset"].dtype == np.float32
    assert xr_values(f, "t2m", "netcdf4", group="forecast/surface").dtype == np.float32
    outputs, lets = cf_outputs(0)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "groups.nc", "dataset": "/forecast/surface/t2m", "chunks": [5, 4, 7]},
         "r": {"file": "groups.nc", "dataset": "/forecast/surface/t2m", "chunks": [5, 4, 7], "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, "group, float32 scale_factor")
    check_against_xarray(got, f, "t2m", 0, dec, "group, float32 scale_factor", group="forecast/surface")
    # float32 attributes are used as they are stored (0.05f32, not 0.05)
    ok = ~np.isnan(dec)
    sf = np.float64(np.float32(0.05))
    assert sf != 0.05
    np.testing.assert_allclose(got["/x"][ok], stored[ok] * sf + np.float64(np.float32(273.15)), rtol=1e-15)
    assert_decoding_matters(got, dec, stored)
    check_inputs_report(r.json(), {"x": attrs, "r": None})


def stored_int16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """int16 values with the sentinels -32767, -32768 and 32767 scattered, and a
    column of -32767 at every step."""
    raw = rng.integers(-3000, 3000, shape).astype(np.int16)
    for v, frac in ((-32767, 0.03), (-32768, 0.02), (32767, 0.02)):
        raw[rng.random(shape) < frac] = v
    raw[:, 2, 3] = -32767
    return raw


# the attributes written with h5py over an xarray-written int16 variable (no attributes)
ATTR_VARIANTS = {
    "scalar_attributes": {"_FillValue": np.int16(-32767), "scale_factor": np.float64(0.02), "add_offset": np.float64(250.0)},
    "one_element_arrays": {"_FillValue": np.array([-32767], np.int16), "scale_factor": np.array([0.02]),
                           "add_offset": np.array([250.0])},
    "fill_of_other_dtypes": {"_FillValue": np.array([-32767.0]), "missing_value": np.array([-32768], np.int32),
                             "scale_factor": np.array([0.02], np.float32), "add_offset": np.array([250], np.int16)},
    "missing_values_only": {"missing_value": np.array([-32768, -32767, 32767], np.int16), "scale_factor": np.float32(0.5)},
    "fill_and_missing_values": {"_FillValue": np.int16(32767), "missing_value": np.array([-32768, -32767], np.int16),
                                "add_offset": np.float32(0.25)},
    "fill_only": {"_FillValue": np.array([-32767], np.int16)},
    "offset_only": {"add_offset": np.float64(273.15)},
}


@pytest.mark.parametrize("variant", list(ATTR_VARIANTS))
def test_attribute_forms(drover, tmp_path, rng, variant):
    """Scalars and 1-element arrays, fills of another type than the data (float64 and
    int32 fills of int16 data), several missing values, a fill alone, an offset alone."""
    raw = stored_int16(rng, (25, 11, 13))
    f = tmp_path / "x.nc"
    xr.Dataset({"x": (("t", "y", "z"), raw)}).to_netcdf(
        f, engine="netcdf4", encoding={"x": {"dtype": "int16", "_FillValue": None, "chunksizes": (6, 4, 5), "zlib": True}}
    )
    with h5py.File(f, "a") as h:
        for k, v in ATTR_VARIANTS[variant].items():
            h["x"].attrs[k] = v
    stored, attrs = read_stored(f, "/x")
    np.testing.assert_array_equal(stored, raw)
    outputs, lets = cf_outputs(0)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "x.nc", "dataset": "/x", "chunks": [7, 3, 4]},
         "r": {"file": "x.nc", "dataset": "/x", "chunks": [7, 3, 4], "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, variant)
    check_against_xarray(got, f, "x", 0, dec, variant)
    for engine in ENGINES:  # the oracle's mask is xarray's
        np.testing.assert_array_equal(np.isnan(dec), np.isnan(xr_values(f, "x", engine).astype(np.float64)))
    assert_decoding_matters(got, dec, stored)
    check_inputs_report(r.json(), {"x": attrs, "r": None})


@pytest.mark.parametrize("unlimited", ["time", "all"])
def test_gzip_level_0_and_chunks_larger_than_the_dataset(drover, tmp_path, rng, unlimited):
    """h5netcdf writes the variable with unlimited dimensions, one HDF5 chunk larger than
    the whole dataset, and a gzip filter at level 0."""
    raw = stored_int16(rng, (30, 17, 23))
    f = tmp_path / "big.nc"
    dims = ("time", "lat", "lon")
    with h5netcdf.File(f, "w") as nc:
        nc.dimensions = {"time": None, "lat": None if unlimited == "all" else 17, "lon": None if unlimited == "all" else 23}
        chunks = (64, 32, 32) if unlimited == "all" else (64, 17, 23)
        v = nc.create_variable("x", dims, np.int16, chunks=chunks, compression="gzip", compression_opts=0,
                               fillvalue=np.int16(-32767))
        for d, n in zip(dims, raw.shape):
            if nc.dimensions[d].isunlimited():
                nc.resize_dimension(d, n)
        v[...] = raw
        v.attrs["scale_factor"] = np.float32(0.25)
        v.attrs["add_offset"] = 100.0
    with h5py.File(f) as h:
        ds = h["x"]
        assert ds.shape == raw.shape and all(c > n for c, n in zip(ds.chunks, ds.shape)) == (unlimited == "all")
        assert ds.chunks[0] > ds.shape[0] and ds.compression == "gzip" and ds.compression_opts == 0
    stored, attrs = read_stored(f, "/x")
    np.testing.assert_array_equal(stored, raw)
    outputs, lets = cf_outputs(0)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "big.nc", "dataset": "/x", "chunks": [7, 5, 9]},
         "r": {"file": "big.nc", "dataset": "/x", "chunks": [7, 5, 9], "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, f"gzip 0, unlimited {unlimited}")
    check_against_xarray(got, f, "x", 0, dec, f"gzip 0, unlimited {unlimited}")
    assert_decoding_matters(got, dec, stored)
    res = r.json()
    check_inputs_report(res, {"x": attrs, "r": None})
    tasks_at_least(res, 5 * 4 * 3)


def test_missing_value_vector_written_by_netcdf4_python(drover, tmp_path, rng):
    """netCDF4-python writes the packed variable itself (a second writer besides xarray):
    _FillValue, a missing_value vector, scale_factor and add_offset in float64."""
    import netCDF4  # here, not at import: it loads its own HDF5 (conftest orders this module last)

    raw = stored_int16(rng, (20, 9, 14))
    f = tmp_path / "nc4.nc"
    with netCDF4.Dataset(f, "w") as nc:
        for d, n in zip(("time", "y", "x"), raw.shape):
            nc.createDimension(d, None if d == "time" else n)
        v = nc.createVariable("sst", "i2", ("time", "y", "x"), fill_value=np.int16(32767), chunksizes=(3, 9, 5),
                              zlib=True, complevel=1, shuffle=True)
        v.set_auto_maskandscale(False)
        v.missing_value = np.array([-32768, -32767], np.int16)
        v.scale_factor = 0.001
        v.add_offset = 15.0
        v[:] = raw
    stored, attrs = read_stored(f, "/sst")
    np.testing.assert_array_equal(stored, raw)
    outputs, lets = cf_outputs(0)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "nc4.nc", "dataset": "/sst", "chunks": [4, 4, 4]},
         "r": {"file": "nc4.nc", "dataset": "/sst", "chunks": [4, 4, 4], "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, "netCDF4-python")
    check_against_xarray(got, f, "sst", 0, dec, "netCDF4-python")
    # netCDF4-python's own mask_and_scale agrees
    with netCDF4.Dataset(f) as nc:
        own = np.ma.filled(nc["sst"][:].astype(np.float64), np.nan)
    np.testing.assert_allclose(got["/x"], own, rtol=1e-12)
    for v in (32767, -32768, -32767):
        assert np.all(np.isnan(got["/x"][stored == v])), f"stored {v} is a fill"
    assert_decoding_matters(got, dec, stored)
    check_inputs_report(r.json(), {"x": attrs, "r": None})


FLOAT_VARIANTS = ["float32_fill", "float32_data_float64_fill", "float64_default_nan_fill_and_missing_value"]


@pytest.mark.parametrize("variant", FLOAT_VARIANTS)
def test_float_data_with_fill_values(drover, tmp_path, rng, variant):
    """Float data is masked too: xarray's float32 _FillValue = -999, a float64 -999 fill
    of float32 data (exactly representable), and xarray's default float64 encoding
    (_FillValue NaN) with a missing_value of -1e30 added; stored NaNs stay NaN."""
    t = temperatures(rng, (30, 17, 23))
    f = tmp_path / "float.nc"
    if variant == "float64_default_nan_fill_and_missing_value":
        t2m_dataset(t).to_netcdf(f, engine="netcdf4", encoding={"t2m": {"chunksizes": (7, 5, 9)}})
    else:
        t2m_dataset(t).to_netcdf(f, engine="netcdf4", encoding={
            "t2m": {"dtype": "float32", "_FillValue": np.float32(-999.0), "chunksizes": (7, 5, 9), "zlib": True}})
    with h5py.File(f, "a") as h:
        ds = h["t2m"]
        vals = ds[()]
        if variant == "float64_default_nan_fill_and_missing_value":
            assert np.isnan(ds.attrs["_FillValue"]).all()
            vals[1, :, :5] = -1e30
            ds.attrs["missing_value"] = np.array([-1e30])
        else:
            assert (vals == -999).any()
            vals[2, 6:9, 6:9] = np.nan  # stored NaNs next to the fills
            if variant == "float32_data_float64_fill":
                del ds.attrs["_FillValue"]
                ds.attrs["_FillValue"] = np.float64(-999.0)
        ds[...] = vals
    stored, attrs = read_stored(f, "/t2m")
    outputs, lets = cf_outputs(0)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": "float.nc", "dataset": "/t2m", "chunks": [4, 6, 8]},
         "r": {"file": "float.nc", "dataset": "/t2m", "chunks": [4, 6, 8], "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, variant)
    check_against_xarray(got, f, "t2m", 0, dec, variant)
    assert np.isnan(dec).sum() > np.isnan(stored).sum() > 0, "fills and stored NaNs both occur"
    assert_decoding_matters(got, dec, stored)
    res = r.json()
    xin = next(i for i in res["inputs"] if i["name"] == "x")
    assert xin["decoded"] is True, xin
    check_inputs_report(res, {"x": attrs, "r": None})


def test_float64_fill_that_float32_cannot_hold_masks_nothing(drover, tmp_path, rng):
    """float32 data whose _FillValue / missing_value are float64 values no float32
    holds (-99.9, 1e20): xarray compares the stored float32 values with the float64
    fills and masks nothing, and netCDF4-python ignores such fills ("cannot be safely
    cast to variable data type"). drover must not mask the nearest float32 values."""
    import netCDF4  # here, not at import: it loads its own HDF5 (conftest orders this module last)

    t = (20.0 + rng.standard_normal((12, 6, 7))).astype(np.float32)
    t[0, 0, :] = np.float32(-99.9)
    t[1, :, 0] = np.float32(1e20)
    f = tmp_path / "f32.nc"
    xr.Dataset({"x": (("t", "y", "z"), t)}).to_netcdf(f, engine="netcdf4", encoding={"x": {"_FillValue": None}})
    with h5py.File(f, "a") as h:
        h["x"].attrs["_FillValue"] = np.float64(-99.9)
        h["x"].attrs["missing_value"] = np.array([1e20])
    stored, attrs = read_stored(f, "/x")
    assert not np.isnan(np_decode(stored, attrs)).any()
    for engine in ENGINES:
        assert not np.isnan(xr_values(f, "x", engine)).any(), f"xarray ({engine}) masks nothing here"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with netCDF4.Dataset(f) as nc:
            assert not np.ma.getmaskarray(nc["x"][:]).any(), "netCDF4-python masks nothing here"
    r, got = run_cf(drover, tmp_path, {"x": {"file": "f32.nc", "dataset": "/x", "chunks": [5, 4, 4]}},
                    {"/x": "x", "/mean": "mean(x, axis=0)"})
    np.testing.assert_array_equal(got["/x"], stored.astype(np.float64))
    np.testing.assert_allclose(got["/mean"], stored.astype(np.float64).mean(axis=0), rtol=1e-12)


def test_integer_inputs_without_cf_attributes_stay_numbers(drover, tmp_path, rng):
    """int16 / int32 / uint8 datasets without CF attributes: their values, whether
    decode is left out, true, or false; reported as not decoded."""
    a = rng.integers(-32768, 32767, (40, 30), endpoint=True).astype(np.int16)
    a[0, 0], a[1, 1] = -32767, 32767  # netCDF's default fill values, no attribute: numbers
    b = rng.integers(-(2**31), 2**31 - 1, (40, 30)).astype(np.int32)
    c = rng.integers(0, 256, (40, 30)).astype(np.uint8)
    with h5py.File(tmp_path / "ints.h5", "w") as h:
        h.create_dataset("a", data=a, chunks=(7, 9))
        h.create_dataset("b", data=b)
        h.create_dataset("c", data=c, chunks=(40, 30), compression="gzip")
    inputs = {
        "a": {"file": "ints.h5", "dataset": "/a", "chunks": [8, 8]},
        "b": {"file": "ints.h5", "dataset": "/b", "chunks": [8, 8], "decode": True},
        "c": {"file": "ints.h5", "dataset": "/c", "chunks": [8, 8], "decode": False},
    }
    outputs = {"/a": "a", "/b": "b", "/c": "c", "/sa": "sum(a, axis=0)", "/mb": "max(b, axis=1)", "/mix": "a + c"}
    r, got = run_cf(drover, tmp_path, inputs, outputs)
    arrays = {"a": a, "b": b, "c": c}
    for ds, expr in outputs.items():
        want = numpy_result(expr, arrays)
        np.testing.assert_array_equal(got[ds], want, err_msg=ds)
        assert not np.isnan(got[ds]).any()
    check_inputs_report(r.json(), {"a": None, "b": None, "c": None})


def test_text_summary_names_the_decoded_inputs(drover, tmp_path, rng):
    """Without --json, one line per decoded input listing the CF attributes present; no
    line for an input read with decode = false or one without CF attributes."""
    raw = stored_int16(rng, (10, 8, 6))
    f = tmp_path / "x.nc"
    xr.Dataset({"x": (("t", "y", "z"), raw), "plain": (("t", "y", "z"), raw.astype(np.float64))}).to_netcdf(
        f, engine="netcdf4", encoding={"x": {"dtype": "int16", "_FillValue": None}, "plain": {"_FillValue": None}})
    with h5py.File(f, "a") as h:
        h["x"].attrs["_FillValue"] = np.int16(-32767)
        h["x"].attrs["missing_value"] = np.array([-32768], np.int16)
        h["x"].attrs["scale_factor"] = np.float32(0.5)
        h["x"].attrs["add_offset"] = 10.0
    r, got = run_cf(
        drover, tmp_path,
        {"t2m": {"file": "x.nc", "dataset": "/x", "chunks": [3, 8, 6]},
         "raw": {"file": "x.nc", "dataset": "/x", "decode": False},
         "plain": {"file": "x.nc", "dataset": "/plain"}},
        {"/m": "nanmean(t2m, axis=0)", "/r": "mean(raw, axis=0)", "/p": "mean(plain, axis=0)"},
        json=False,
    )
    lines = [l for l in r.stdout.splitlines() if re.match(r"\s*input \S+: ", l)]
    assert len(lines) == 1, f"one 'input NAME: CF-decoded (...)' line, for t2m only:\n{r.stdout}"
    m = re.fullmatch(r"  input t2m: CF-decoded \(([^)]*)\)", lines[0].rstrip())
    assert m, f"unexpected summary line {lines[0]!r}"
    assert set(m.group(1).split(", ")) == {"_FillValue", "missing_value", "scale_factor", "add_offset"}, lines[0]
    dec = np_decode(raw, {"_FillValue": np.int16(-32767), "missing_value": np.array([-32768], np.int16),
                          "scale_factor": np.float32(0.5), "add_offset": 10.0})
    assert_close(got["/m"], numpy_result("nanmean(x, axis=0)", {"x": dec}), what="/m")
    assert_close(got["/r"], raw.astype(np.float64).mean(axis=0), what="/r")
    assert not np.allclose(got["/m"], got["/r"], equal_nan=True)


# --------------------------------------------------------------------------
# Refused workloads


def write_packed(tmp_path: Path) -> None:
    raw = np.arange(60, dtype=np.int16).reshape(6, 10)
    with h5py.File(tmp_path / "in.nc", "w") as h:
        d = h.create_dataset("x", data=raw)
        d.attrs["_FillValue"] = np.int16(5)
        d.attrs["scale_factor"] = 0.5


BAD_DECODE = [
    ("yes", ['[inputs.x]', 'decode = "yes"']),
    ("false", ['[inputs.x]', 'decode = "false"']),
    (1, ["[inputs.x]", "decode = 1"]),
]


@pytest.mark.parametrize("value,quoted", BAD_DECODE, ids=[repr(b[0]) for b in BAD_DECODE])
def test_non_boolean_decode_is_refused(drover, tmp_path, value, quoted):
    write_packed(tmp_path)
    doc = {"inputs": {"x": {"file": "in.nc", "dataset": "/x", "decode": value}},
           "outputs": [{"expr": "mean(x, axis=0)", "file": "out.h5", "dataset": "/m"}]}
    (tmp_path / "w.toml").write_text(to_toml(doc))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    assert_refused(r, quoted, tmp_path / "out.h5")


@pytest.mark.parametrize("value", [True, False])
def test_decode_on_a_generated_input_is_refused(drover, tmp_path, value):
    doc = {"inputs": {"g": {"generate": "ones", "shape": [4, 5], "decode": value}},
           "outputs": [{"expr": "g * 2", "file": "out.h5", "dataset": "/o"}]}
    (tmp_path / "w.toml").write_text(to_toml(doc))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    assert_refused(r, ["[inputs.g]", "decode"], tmp_path / "out.h5")


def test_unusable_cf_attribute_is_refused_and_decode_false_reads_it(drover, tmp_path):
    """A scale_factor that is not a number: refused before any work (naming the
    attribute), unless the input is read with decode = false."""
    raw = np.arange(60, dtype=np.int16).reshape(6, 10)
    with h5py.File(tmp_path / "in.nc", "w") as h:
        d = h.create_dataset("x", data=raw)
        d.attrs["scale_factor"] = "0.5"
    doc = {"inputs": {"x": {"file": "in.nc", "dataset": "/x"}},
           "outputs": [{"expr": "mean(x, axis=0)", "file": "out.h5", "dataset": "/m"}]}
    (tmp_path / "w.toml").write_text(to_toml(doc))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    assert_refused(r, ["scale_factor", "/x"], tmp_path / "out.h5")
    r, got = run_cf(drover, tmp_path, {"x": {"file": "in.nc", "dataset": "/x", "decode": False}}, {"/m": "mean(x, axis=0)"})
    np.testing.assert_allclose(got["/m"], raw.mean(axis=0), rtol=1e-12)
    check_inputs_report(r.json(), {"x": None})


# --------------------------------------------------------------------------
# Real files: iris-sample-data (NetCDF4 written by Iris, NEMO and others; not by us)

REAL = [
    # file, variable, reduction axis, drover block shape
    pytest.param("ostia_monthly.nc", "surface_temperature", 0, [10, 7, 100], id="ostia_sst"),
    pytest.param("atlantic_profiles.nc", "theta", 0, [7, 4, 5], id="atlantic_theta"),
    pytest.param("atlantic_profiles.nc", "salinity", 0, [7, 4, 5], id="atlantic_salinity"),
    pytest.param("orca2_votemper.nc", "votemper", 1, [30, 50], id="orca2_votemper"),
    pytest.param("toa_brightness_stereographic.nc", "data", 0, [40, 100], id="toa_brightness"),
    pytest.param("NEMO/nemo_1m_20150101-20150201_grid-T.nc", "tos", 1, [1, 100, 128], id="nemo_tos_gzip"),
    pytest.param("SOI_Darwin.nc", "SOI_Darwin", 0, [100], id="soi_darwin"),
]


def sample_file(tmp_path: Path, name: str) -> Path:
    """A copy of a sample file inside tmp_path (drover only reads it; the package's
    copy stays untouched whatever happens)."""
    src = SAMPLE_DATA / name
    assert src.is_file(), f"iris-sample-data lacks {name} (in {SAMPLE_DATA})"
    with open(src, "rb") as fh:
        assert fh.read(8) == b"\x89HDF\r\n\x1a\n", f"{name} is not NetCDF4/HDF5"
    dst = tmp_path / Path(name).name
    shutil.copyfile(src, dst)
    return dst


@pytest.mark.parametrize("name,var,axis,chunks", REAL)
def test_real_files_decoded_reductions(drover, tmp_path, name, var, axis, chunks):
    f = sample_file(tmp_path, name)
    stored, attrs = read_stored(f, "/" + var)
    assert "_FillValue" in attrs
    outputs, lets = cf_outputs(axis)
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": f.name, "dataset": "/" + var, "chunks": chunks},
         "r": {"file": f.name, "dataset": "/" + var, "chunks": chunks, "decode": False}},
        outputs, lets,
    )
    dec = check_cf_run(got, stored, attrs, outputs, lets, name)
    check_against_xarray(got, f, var, axis, dec, name)
    assert np.isnan(dec).any() and not np.isnan(stored).any(), "the sample's fills are real values on disk"
    assert_decoding_matters(got, dec, stored)
    check_inputs_report(r.json(), {"x": attrs, "r": None})


def test_real_ostia_time_slices_and_area_means(drover, tmp_path):
    """OSTIA monthly SST (54 months, land = _FillValue 1e20): the first 24 months, their
    nan-mean climatology, and the nan-mean over the grid for each month."""
    f = sample_file(tmp_path, "ostia_monthly.nc")
    stored, attrs = read_stored(f, "/surface_temperature")
    outputs = {
        "/first24": "x[:24]",
        "/clim24": "nanmean(x[:24], axis=0)",
        "/anom24": "x[:24] - nanmean(x[:24], axis=0)",
        "/area": "nanmean(x, axis=(1, 2))",
        "/yearly": "nanmean(x[12:24], axis=0) - nanmean(x[:12], axis=0)",
        "/raw_area": "mean(r, axis=(1, 2))",
    }
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": f.name, "dataset": "/surface_temperature", "chunks": [6, 9, 144]},
         "r": {"file": f.name, "dataset": "/surface_temperature", "chunks": [6, 9, 144], "decode": False}},
        outputs,
    )
    check_cf_run(got, stored, attrs, outputs, {}, "ostia slices")
    for engine in ENGINES:
        with open_xr(f, engine) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            da = ds["surface_temperature"].astype("float64")
            first = da.isel(time=slice(0, 24))
            want = {
                "/first24": first.values,
                "/clim24": first.mean("time").values,
                "/anom24": (first - first.mean("time")).values,
                "/area": da.mean(("latitude", "longitude")).values,
                "/yearly": (da.isel(time=slice(12, 24)).mean("time") - da.isel(time=slice(0, 12)).mean("time")).values,
            }
        for ds_name, w in want.items():
            np.testing.assert_allclose(got[ds_name], w, rtol=1e-6, atol=1e-6 * 320, err_msg=f"{ds_name} ({engine})")
    assert np.all((got["/area"] > 270) & (got["/area"] < 310)), "area means in K over sea points only"
    assert np.all(got["/raw_area"] > 1e18), "the raw values average the 1e20 land fills in"


def test_real_nemo_fill_and_missing_value_gzip(drover, tmp_path):
    """NEMO ocean output: tos (1, 330, 360), gzip level 9, _FillValue and missing_value
    both 1e20 (float32); three monthly files, each its own input."""
    names = [f"NEMO/nemo_1m_2015{m:02d}01-2015{m + 1:02d}01_grid-T.nc" for m in (1, 2, 3)]
    files = [sample_file(tmp_path, n) for n in names]
    inputs = {f"m{k}": {"file": p.name, "dataset": "/tos", "chunks": [1, 64, 100]} for k, p in enumerate(files)}
    outputs = {
        "/spring": "(nanmean(m0, axis=0) + nanmean(m1, axis=0) + nanmean(m2, axis=0)) / 3",
        "/zonal": "nanmean(m0[0], axis=1)",
        "/global": "nanmean(m1, axis=(1, 2))",
        "/warm": "nanmax(m2, axis=(1, 2))",
        "/cold": "nanmin(m2, axis=(1, 2))",
        "/ocean": "sum(where(isnan(m0), 0.0, 1.0), axis=(1, 2))",
    }
    r, got = run_cf(drover, tmp_path, inputs, outputs)
    decs, attrs_all = {}, {}
    for k, p in enumerate(files):
        stored, attrs = read_stored(p, "/tos")
        assert {"_FillValue", "missing_value"} <= set(attrs)
        with h5py.File(p) as h:
            assert h["tos"].compression == "gzip"
        decs[f"m{k}"] = np_decode(stored, attrs)
        attrs_all[f"m{k}"] = attrs
        for engine in ENGINES:
            np.testing.assert_array_equal(decs[f"m{k}"], xr_values(p, "tos", engine).astype(np.float64))
    for ds_name, expr in outputs.items():
        assert_close(got[ds_name], numpy_result(expr, decs), what=f"NEMO {ds_name} = {expr}")
    assert -3 < float(got["/cold"][0]) and float(got["/warm"][0]) < 40, "SST in degC, not the 1e20 fill"
    assert 0 < int(got["/ocean"][0]) < 330 * 360
    check_inputs_report(r.json(), attrs_all)


def test_real_soi_darwin_series(drover, tmp_path):
    """SOI at Darwin, 1776 months, float32 with _FillValue -99.9 (a float32 fill, as the
    data): the first 24 months and the long-term nan-mean."""
    f = sample_file(tmp_path, "SOI_Darwin.nc")
    stored, attrs = read_stored(f, "/SOI_Darwin")
    outputs = {"/first24": "x[:24]", "/all": "nanmean(x)", "/mean": "mean(x)", "/last": "nanmean(x[-120:])",
               "/raw": "mean(r)"}
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": f.name, "dataset": "/SOI_Darwin", "chunks": [50]},
         "r": {"file": f.name, "dataset": "/SOI_Darwin", "chunks": [50], "decode": False}},
        outputs,
    )
    check_cf_run(got, stored, attrs, outputs, {}, "SOI")
    for engine in ENGINES:
        x = xr_values(f, "SOI_Darwin", engine).astype(np.float64)
        np.testing.assert_array_equal(got["/first24"], x[:24])
        np.testing.assert_allclose(got["/all"], np.nanmean(x), rtol=1e-9)
    assert np.isnan(got["/mean"]), "12 months are missing: the plain mean is NaN"
    assert abs(float(got["/all"])) < 1 and float(got["/raw"]) < float(got["/all"]) - 0.3
    check_inputs_report(r.json(), {"x": attrs, "r": None})


@pytest.mark.parametrize("name,var,chunks", [
    pytest.param("A1B_north_america.nc", "air_temperature", [12, 20, 25], id="a1b_float32_360day"),
    pytest.param("vlstr_type.nc", "wind", [40, 1, 1], id="vlstr_int32"),
])
def test_real_files_without_cf_attributes_are_read_as_stored(drover, tmp_path, name, var, chunks):
    """No _FillValue / missing_value / scale_factor / add_offset: decode = true (the
    default, or said) is harmless; the input is reported as not decoded."""
    f = sample_file(tmp_path, name)
    stored, attrs = read_stored(f, "/" + var)
    assert attrs == {}
    outputs = {"/x": "x", "/m": "mean(x[:24], axis=0)", "/s": "sum(y, axis=0)", "/diff": "max(abs(x - y))"}
    r, got = run_cf(
        drover, tmp_path,
        {"x": {"file": f.name, "dataset": "/" + var, "chunks": chunks},
         "y": {"file": f.name, "dataset": "/" + var, "chunks": chunks, "decode": True}},
        outputs,
    )
    s = stored.astype(np.float64)
    np.testing.assert_array_equal(got["/x"], s)
    np.testing.assert_allclose(got["/m"], s[:24].mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(got["/s"], s.sum(axis=0), rtol=1e-9)
    assert float(got["/diff"]) == 0.0
    for engine in ENGINES:
        np.testing.assert_array_equal(got["/x"], xr_values(f, var, engine).astype(np.float64))
    check_inputs_report(r.json(), {"x": None, "y": None})
