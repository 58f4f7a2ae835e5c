"""Operations along axes that need many blocks at once (issue 12 items 3-6): order
statistics, scans, windows and sort, against numpy on data that crosses many blocks,
with NaNs, along first, middle and last axes, on chunk grids that do not divide the
shape. Order statistics, sort, differences and rolling minima/maxima are compared
bit for bit; sums and products to numpy's rounding."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from conftest import ORACLE_FUNCS, Case, Input, assert_refused, oracle_natural, run_drover, run_workload, to_toml, write_h5


def _rolling(method: str):
    def f(a, window, axis=None):
        if axis is None:
            axis = 0
        return getattr(sliding_window_view(a, window, axis=axis), method)(axis=-1)

    return f


ORACLE_FUNCS.update({
    name: getattr(np, name)
    for name in (
        "median nanmedian quantile nanquantile percentile nanpercentile "
        "cumsum cumprod nancumsum nancumprod diff sort"
    ).split()
})
ORACLE_FUNCS.update({f"rolling_{m}": _rolling(m) for m in ("sum", "mean", "min", "max")})
ORACLE_FUNCS["rolling_std"] = lambda a, window, axis=None, ddof=0: sliding_window_view(
    a, window, axis=0 if axis is None else axis
).std(axis=-1, ddof=ddof)


def data(rng) -> dict[str, Input]:
    t = rng.normal(280, 5, size=(37, 11, 23))
    t[rng.random(t.shape) < 0.03] = np.nan
    t[:, 4, 6] = np.nan  # an all-NaN lane along axis 0
    i = rng.integers(-50, 50, size=(29, 13)).astype(np.int32)
    return {
        # blocks of 5 x 4 x 7 over HDF5 chunks of 3 time steps: nothing divides
        "t": Input("in.h5", "/t", t, chunks=[5, 4, 7], h5={"chunks": (3, 11, 23)}),
        "s": Input("in.h5", "/s", rng.normal(size=(101,)), chunks=[9]),
        "i": Input("in.h5", "/i", i, chunks=[4, 6]),
    }


ORDER = [
    "median(t, axis=0)",
    "median(t, axis=1)",
    "median(t, axis=2)",
    "nanmedian(t, axis=0)",
    "nanmedian(t, axis=(0, 2))",
    "nanmedian(t, axis=1, keepdims=True)",
    "quantile(t, 0.9, axis=0)",
    "nanquantile(t, (0.1, 0.5, 0.99), axis=1)",
    "percentile(t, 75, axis=2)",
    "nanpercentile(t, (5, 33, 95), axis=0)",
    "nanquantile(t, q=0.25, axis=-1)",
    "nanpercentile(t, q=[1, 50.5], axis=(1, 2))",
    "median(s)",
    "median(i, axis=0)",
    "quantile(i, 1, axis=1)",
    "nanquantile(i * 0.5, (0, 1), axis=0)",
    "sort(t, axis=0)",
    "sort(t, axis=1)[:, :3]",
    "sort(i)",
    "diff(t, axis=0)",
    "diff(t, n=2, axis=1)",
    "diff(t)",
    "diff(i, 3, axis=0)",
    "diff(i > 0, axis=0)",
    "rolling_min(t, window=4, axis=2)",
    "rolling_max(t, window=7, axis=0)",
    "rolling_max(i, window=5, axis=1)",
]

ROUNDED = [
    "cumsum(t, axis=0)",
    "nancumsum(t, axis=1)",
    "nancumsum(t, axis=2)",
    "cumprod(1 + 0.001 * (t - 280), axis=0)",
    "nancumprod(1 + 0.001 * (t - 280), axis=1)",
    "cumsum(s)",
    "nancumsum(t)",
    "cumsum(i, axis=0)",
    "nanmean(nancumsum(t, axis=0), axis=0)",
    "t - nanmedian(t, axis=0)",
    "rolling_mean(t, window=5, axis=0)",
    "rolling_sum(t, 3, axis=1)",
    "rolling_std(t, window=6, axis=0)",
    "rolling_std(t, window=6, axis=2, ddof=1)",
    "rolling_mean(s, window=10)",
    "rolling_sum(i, window=6, axis=0)",
    "rolling_mean(diff(t, axis=0), window=3, axis=0)",
]


def test_order_statistics_sort_and_differences_equal_numpy_bit_for_bit(drover, tmp_path, rng):
    inputs = data(rng)
    cases = [Case(e, f"/o{k}") for k, e in enumerate(ORDER)]
    run, result, values = run_workload(drover, tmp_path, inputs, cases)
    assert result["tasks_total"] > 5 * len(cases), "the operands must cross many blocks"
    arrays = {n: inp.data for n, inp in inputs.items()}
    for c in cases:
        want = oracle_natural(c.expr, arrays)
        np.testing.assert_array_equal(values[c.dataset], want.astype(values[c.dataset].dtype), err_msg=c.expr)


def test_scans_and_windows_equal_numpy(drover, tmp_path, rng):
    cases = [Case(e, f"/r{k}") for k, e in enumerate(ROUNDED)]
    run, result, values = run_workload(drover, tmp_path, data(rng), cases)
    assert result["tasks_total"] > 5 * len(cases), "the operands must cross many blocks"


def test_a_scan_carries_block_totals_instead_of_reading_the_prefix(drover, tmp_path, rng):
    """cumsum along a long axis in 20 blocks reads the input about twice (once for the
    segment totals, once for the scan), not the quadratic prefix of every block."""
    x = rng.normal(size=(2000, 50))
    inputs = {"x": Input("x.h5", "/x", x, chunks=[100, 50])}
    _, result, _ = run_workload(drover, tmp_path, inputs, [Case("cumsum(x, axis=0)", "/c")])
    assert result["bytes_read"] <= 2 * x.nbytes, (result["bytes_read"], x.nbytes)


def test_an_anomaly_from_the_median_computes_each_lane_once(drover, tmp_path, rng):
    """`t - nanmedian(t, axis=0)`: blocks take the time axis whole, so each lane's
    median is computed once and the input is read twice (the lanes, then t), not once
    per time block."""
    t = rng.normal(size=(120, 40, 30))
    inputs = {"t": Input("t.h5", "/t", t, chunks=[10, 40, 30], h5={"chunks": (10, 40, 30)})}
    _, result, _ = run_workload(drover, tmp_path, inputs, [Case("t - nanmedian(t, axis=0)", "/a")])
    assert result["bytes_read"] <= 2 * t.nbytes, (result["bytes_read"], t.nbytes)


def test_windows_are_labelled_by_their_last_step(drover, tmp_path, rng):
    """xarray's rolling (center=False) and diff label a window by its last step."""
    import xarray as xr

    t = rng.normal(size=(30, 4))
    ds = xr.Dataset(
        {"v": (("time", "x"), t, {"units": "K"})},
        coords={"time": np.arange(30) * 10.0, "x": np.arange(4.0)},
    )
    ds.to_netcdf(tmp_path / "in.nc", engine="h5netcdf")
    wl = tmp_path / "w.toml"
    wl.write_text(to_toml({
        "inputs": {"v": {"file": "in.nc", "dataset": "v"}},
        "outputs": [
            {"expr": "rolling_mean(v, window=5, axis=0)", "file": "out.nc", "dataset": "r"},
            {"expr": "diff(v, axis=0)", "file": "diff.nc", "dataset": "d"},
            {"expr": "median(v, axis=0)", "file": "out.nc", "dataset": "m"},
        ],
    }))
    run = run_drover(drover, ["run", str(wl), "--workers", "1"])
    assert run.rc == 0, run.describe()
    out = xr.open_dataset(tmp_path / "out.nc", engine="h5netcdf")
    want = ds.v.rolling(time=5).mean().isel(time=slice(4, None))
    np.testing.assert_array_equal(out.r["time"].values, want["time"].values)
    np.testing.assert_allclose(out.r.values, want.values, rtol=1e-12)
    d = xr.open_dataset(tmp_path / "diff.nc", engine="h5netcdf")
    np.testing.assert_array_equal(d.d["time"].values, ds.v.diff("time")["time"].values)
    d.close()
    assert out.m.attrs.get("units") == "K" and "time: median" in out.m.attrs.get("cell_methods", "")
    out.close()


def test_a_tuple_of_quantiles_gets_a_quantile_coordinate_as_in_xarray(drover, tmp_path, rng):
    """xarray's quantile with a list of q labels its leading axis `quantile` with the q
    values (fractions); drover's does the same, for percentiles too (q / 100), and a
    selection of that axis keeps the values it picks."""
    import xarray as xr

    t = rng.normal(size=(40, 3, 5))
    ds = xr.Dataset({"v": (("time", "y", "x"), t)}, coords={"time": np.arange(40.0), "x": np.arange(5.0) * 2})
    ds.to_netcdf(tmp_path / "in.nc", engine="h5netcdf")
    wl = tmp_path / "w.toml"
    wl.write_text(to_toml({
        "inputs": {"v": {"file": "in.nc", "dataset": "v"}},
        "outputs": [
            {"expr": "quantile(v, (0.1, 0.5, 0.9), axis=0)", "file": "q.nc", "dataset": "q"},
            {"expr": "percentile(v, (25, 75), axis=0)", "file": "p.nc", "dataset": "p"},
            {"expr": "quantile(v, (0.1, 0.5, 0.9), axis=0)[::2]", "file": "s.nc", "dataset": "s"},
        ],
    }))
    run = run_drover(drover, ["run", str(wl), "--workers", "1"])
    assert run.rc == 0, run.describe()
    want = ds.v.quantile([0.1, 0.5, 0.9], dim="time")
    with xr.open_dataset(tmp_path / "q.nc", engine="h5netcdf") as q:
        assert q.q.dims == want.dims == ("quantile", "y", "x"), q.q.dims
        np.testing.assert_array_equal(q.q["quantile"].values, want["quantile"].values)
        np.testing.assert_array_equal(q.q["x"].values, want["x"].values)
        np.testing.assert_allclose(q.q.values, want.values, rtol=1e-12)
    with xr.open_dataset(tmp_path / "p.nc", engine="h5netcdf") as p:
        np.testing.assert_allclose(p.p["quantile"].values, [0.25, 0.75], rtol=0, atol=1e-15)
    with xr.open_dataset(tmp_path / "s.nc", engine="h5netcdf") as s:
        np.testing.assert_array_equal(s.s["quantile"].values, [0.1, 0.9])


@pytest.mark.parametrize(
    "expr, quoted",
    [
        ("quantile(t, 1.5, axis=0)", ["q=1.5", "[0, 1]"]),
        ("percentile(t, (5, 101), axis=0)", ["q=101", "[0, 100]"]),
        ("quantile(t, axis=0)", ["quantile", "q"]),
        ("median(t, axis=0, method=\"nearest\")", ["method"]),
        ("quantile(t, 0.5, axis=0, method=\"nearest\")", ["linear"]),
        ("rolling_mean(t, window=40, axis=0)", ["window=40", "37"]),
        ("rolling_mean(t, window=3)", ["axis="]),
        ("rolling_sum(t, axis=0)", ["window="]),
        ("rolling_std(t, window=3, axis=0, ddof=3)", ["ddof"]),
        ("diff(t, n=37, axis=0)", ["n=37", "37"]),
        ("diff(t, n=-1)", ["n=-1"]),
        ("cumsum(t, axis=3)", ["axis 3"]),
        ("median(t, axis=5)", ["axis"]),
        ("sort(t, axis=None)", ["axis=None"]),
        ("argsort(t, axis=0)", ["argsort", "not supported", "sort(x, axis=k)"]),
        ("partition(t, 3, axis=0)", ["partition", "not supported"]),
        ("mediam(t, axis=0)", ["mediam", "did you mean \"median\"", "nanquantile", "rolling_std"]),
    ],
)
def test_bad_calls_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    inputs = data(rng)
    write_h5(tmp_path / "in.h5", {"t": inputs["t"].data})
    wl = tmp_path / "w.toml"
    wl.write_text(to_toml({
        "inputs": {"t": {"file": "in.h5", "dataset": "t"}},
        "outputs": [{"expr": expr, "file": "out.h5", "dataset": "o"}],
    }))
    run = run_drover(drover, ["run", str(wl), "--workers", "1"])
    assert_refused(run, quoted + [expr], tmp_path / "out.h5")


def test_a_lane_larger_than_a_task_may_hold_is_refused_with_its_size(drover, tmp_path):
    """A median over 40 M generated elements at once cannot run in bounded tasks."""
    wl = tmp_path / "w.toml"
    wl.write_text(to_toml({
        "inputs": {"g": {"generate": "random", "shape": [40_000_000], "seed": 1}},
        "outputs": [{"expr": "median(g)", "file": "out.h5", "dataset": "m"}],
    }))
    run = run_drover(drover, ["run", str(wl), "--workers", "1"])
    line = assert_refused(run, ["median", "40000000 elements", "305 MiB", "256 MiB"], tmp_path / "out.h5")
    assert "fewer or shorter axes" in line, line
