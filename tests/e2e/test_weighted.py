"""Weighted reductions (issue 11 item 4): `weights=` on sum, mean, var, std and their
nan-forms. The plain forms are numpy's `average` (weights broadcast to the array); the
nan-forms normalize by the weights of the non-NaN values, as xarray's `.weighted()`
does; variances are xarray's weighted variance (no ddof). Checked against a direct
numpy computation and against xarray on an area-weighted global mean with NaN."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from conftest import ORACLE_FUNCS, Case, Input, assert_refused, run_drover, run_workload, to_toml, write_h5


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))


def weighted(kind: str):
    """numpy oracle of drover's weighted `kind` (falls back to numpy without weights)."""
    plain = getattr(np, kind)

    def f(a, axis=None, weights=None, keepdims=False, **kw):
        if weights is None:
            return plain(a, axis=axis if not isinstance(axis, list) else tuple(axis), keepdims=keepdims, **kw)
        a = np.asarray(a, np.float64)
        w = np.broadcast_to(np.asarray(weights, np.float64), a.shape)
        ax = _axes(axis, a.ndim)
        nan = kind.startswith("nan")
        valid = ~np.isnan(a) if nan else np.ones(a.shape, bool)
        wx = np.where(valid, w * np.where(valid, a, 0.0), 0.0) if nan else w * a
        sw = np.sum(np.where(valid, w, 0.0), axis=ax, keepdims=True)
        s = np.sum(wx, axis=ax, keepdims=True)
        base = kind.removeprefix("nan")
        if base == "sum":
            out = s
        else:
            m = s / sw
            if base == "mean":
                out = m
            else:
                d = np.where(valid, w * (a - m) ** 2, 0.0) if nan else w * (a - m) ** 2
                out = np.sum(d, axis=ax, keepdims=True) / sw
                if base == "std":
                    out = np.sqrt(out)
        return out if keepdims else np.squeeze(out, axis=ax)

    return f


@pytest.fixture(autouse=True)
def _weighted_oracle(monkeypatch):
    """The oracle's reductions take weights= in this module only."""
    for k in ("sum", "mean", "var", "std", "nansum", "nanmean", "nanvar", "nanstd"):
        monkeypatch.setitem(ORACLE_FUNCS, k, weighted(k))


def data(rng):
    t = rng.normal(285, 12, size=(14, 9, 16))
    t[rng.random(t.shape) < 0.08] = np.nan
    t[:, 4, 7] = np.nan                    # a column that is NaN at every step
    lat = np.linspace(-80, 80, 9)
    return {
        "t": Input("in.h5", "/t", t, chunks=[4, 4, 5], h5={"chunks": (3, 3, 4)}),
        "lat": Input("in.h5", "/lat", lat, chunks=[4]),
        "area": Input("in.h5", "/area", rng.random((9, 16)) + 0.5, chunks=[4, 5]),
        "dense": Input("in.h5", "/dense", rng.normal(size=(14, 9, 16)), chunks=[5, 4, 6]),
    }


CASES = [
    "nanmean(t, axis=(1, 2), weights=cos(deg2rad(lat))[:, None])",   # the area-weighted global mean
    "nanmean(t, axis=(1, 2), weights=area)",
    "nanmean(t, axis=0, weights=area)",
    "nansum(t, axis=(1, 2), weights=area)",
    "nanvar(t, axis=(1, 2), weights=area)",
    "nanstd(t, axis=(1, 2), weights=cos(deg2rad(lat))[:, None])",
    "mean(t, axis=(1, 2), weights=area)",                              # NaN where any value is NaN
    "mean(dense, axis=(1, 2), weights=area)",
    "mean(dense, weights=area)",                                       # over every axis
    "sum(dense, axis=1, weights=lat[:, None] + 100)",
    "var(dense, axis=(0, 2), weights=area, keepdims=True)",
    "std(dense, axis=(1, 2), weights=area)",
    "dense - mean(dense, axis=(1, 2), weights=area, keepdims=True)",   # a weighted anomaly
    "nanmean(t[:, 2:7], axis=1, weights=cos(deg2rad(lat[2:7]))[:, None])",
]


def test_weighted_reductions_equal_numpy(drover, tmp_path, rng):
    cases = [Case(e, f"/w{k}") for k, e in enumerate(CASES)]
    _, result, values = run_workload(drover, tmp_path, data(rng), cases)
    assert result["tasks_total"] > 3 * len(cases), "the data must cross many blocks"
    # the weighting changes the answer: the unweighted global mean differs
    t = data(np.random.default_rng(0))["t"].data
    assert not np.allclose(np.nanmean(t, axis=(1, 2)), weighted("nanmean")(t, axis=(1, 2), weights=(t[0] * 0 + 1) * np.cos(np.deg2rad(np.linspace(-80, 80, 9)))[:, None]))
    assert np.isnan(values["/w2"][4, 7]), "a column NaN at every step has no weights left: NaN"


def test_area_weighted_global_mean_equals_xarray(drover, tmp_path, rng):
    inputs = data(rng)
    cases = [Case("nanmean(t, axis=(1, 2), weights=cos(deg2rad(lat))[:, None])", "/gm"),
             Case("nanstd(t, axis=(1, 2), weights=cos(deg2rad(lat))[:, None])", "/gs"),
             Case("nansum(t, axis=0, weights=area)", "/s")]
    _, _, values = run_workload(drover, tmp_path, inputs, cases)
    t = xr.DataArray(inputs["t"].data, dims=("time", "lat", "lon"))
    w = xr.DataArray(np.cos(np.deg2rad(inputs["lat"].data)), dims=("lat",))
    area = xr.DataArray(inputs["area"].data, dims=("lat", "lon"))
    np.testing.assert_allclose(values["/gm"], t.weighted(w).mean(("lat", "lon")).values, rtol=1e-12)
    np.testing.assert_allclose(values["/gs"], t.weighted(w).std(("lat", "lon")).values, rtol=1e-10)
    np.testing.assert_allclose(values["/s"], t.weighted(area).sum("time").values, rtol=1e-12)


BAD = [
    ("mean(t, axis=(1, 2), weights=lat)", ["mean()", "weights of shape (9,)", "(14, 9, 16)"]),
    ("nanmean(t, axis=0, weights=t[0, :, :, None])", ["nanmean()", "(9, 16, 1)", "do not broadcast"]),
    ("max(t, axis=0, weights=area)", ["max()", "unexpected keyword argument 'weights'"]),
    ("var(t, axis=0, weights=area, ddof=1)", ["var()", "ddof= or weights="]),
    ("norm(t, axis=0, weights=area)", ["norm()", "'weights'"]),
    ("mean(t, axis=0, weights=nope)", ["unknown name \"nope\""]),
]


@pytest.mark.parametrize("expr,quoted", BAD, ids=[b[0] for b in BAD])
def test_bad_weights_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    write_h5(tmp_path / "in.h5", {"/t": rng.normal(size=(14, 9, 16)), "/lat": np.linspace(-80, 80, 9),
                                  "/area": rng.random((9, 16))})
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {n: {"file": "in.h5", "dataset": f"/{n}"} for n in ("t", "lat", "area")},
        "outputs": [{"expr": expr, "file": "out.h5", "dataset": "/o"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    line = assert_refused(r, quoted, tmp_path / "out.h5")
    assert expr in line, f"the expression is quoted: {line!r}"
