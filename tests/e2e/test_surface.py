"""The numpy surface of expressions (issue 10): comparisons and logic with Python's
precedence, the elementwise functions, NaN-aware and counting reductions, constants.
Each result is compared with numpy (the expression evaluated by Python over numpy),
on data that crosses many blocks, with NaN where the operation cares."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import Case, Input, assert_refused, oracle, run_drover, run_workload, to_toml, write_h5


def field(rng, shape=(13, 11, 7)) -> np.ndarray:
    t = rng.uniform(0.0, 1.0, size=shape)
    t[2, 3, 4] = np.nan
    t[7, 0, 6] = np.nan
    t[:, 5, 3] = np.nan  # an all-NaN slice along axis 0
    t[4, 4, :] = np.nan  # and along axis 2
    t[0, 0, 0] = 0.0
    t[12, 10, 1] = 0.5   # a value equal to a threshold below
    return t


def inputs(rng) -> dict[str, Input]:
    return {
        "t": Input("in.h5", "/t", field(rng), chunks=[5, 4, 3], h5={"chunks": (3, 4, 2)}),
        "i": Input("in.h5", "/i", rng.integers(-9, 10, size=(13, 11), dtype=np.int32), chunks=[4, 5]),
    }


ELEMENTWISE = [
    "where(t > 0.5, t, 0)",
    "where(isnan(t), -1, t)",
    "(t > 0.2) & (t < 0.8)",
    "(t < 0.1) | ~(t < 0.9)",
    "(t > 0.5) + (t > 0.7)",          # numpy: booleans add as logical or
    "(t > 0.5) * (t < 0.8)",          # and multiply as logical and
    "(t > 0.5) + 1",                  # a boolean and an integer add as integers
    "logical_and(t > 0.1, t < 0.9) + logical_xor(t > 0.5, t > 0.7)",
    "logical_or(t > 0.9, isnan(t)) + logical_not(t > 0.5) * 2",
    "t == 0.5",
    "t != t",
    "t <= 0.5",
    "t >= 0.5",
    "t % 0.3 - (-t) % 0.3",
    "t // 0.25 + (-t) // 0.25",
    "floor(t * 10) + ceil(t * 3) - trunc(-t * 5) + round(t * 4)",
    "sign(t - 0.5)",
    "clip(t, 0.2, 0.7)",
    "minimum(t, 0.5) + maximum(t, 0.4)",
    "fmin(t, 0.5) + fmax(t, 0.4)",
    "arctan2(t - 0.5, 0.25) + hypot(t, 2)",
    "tan(t) + arcsin(t) + arccos(t) + arctan(t)",
    "sinh(t) + cosh(t) + tanh(t)",
    "log10(t + 1) + log2(t + 1) + log1p(t) + expm1(t)",
    "deg2rad(t * 90) + rad2deg(t)",
    "square(t) + absolute(-t) + negative(t)",
    "isnan(t) + 2 * isfinite(t) + 4 * isinf(1 / (t - 0.5))",
    "t * pi + e - 2",
    "where(t < inf, 1, nan)",
    "i // 4 + i % 4",                 # integers: numpy's floor division and remainder
    "~(i > 3) & (i != 0)",
    "power(i, 2) + add(i, 1) * subtract(i, 1) + divide(i, 3)",
    "less(i, 0) + less_equal(i, 0) + greater(i, 0) + greater_equal(i, 0) + equal(i, 0) + not_equal(i, 1)",
]

REDUCTIONS = [
    "sum(t > 0.5, axis=0)",                 # hot-day count
    "count_nonzero(t > 0.5, axis=0)",
    "count_nonzero(t)",
    "prod(1 + t / 10, axis=0)",
    "nansum(t, axis=0)",
    "nansum(t)",
    "nanmean(t, axis=0)",                   # with an all-NaN column: NaN, as numpy
    "nanmean(t, axis=(0, 2))",
    "nanmean(t)",
    "nanmin(t, axis=0)",
    "nanmax(t, axis=2)",
    "nanmin(t, axis=(1, 2))",
    "nanprod(1 + t / 10, axis=2)",
    "any(t > 0.99, axis=0)",
    "all(t > 0.01, axis=2)",
    "all(t >= 0)",
    "any(isnan(t), axis=(0, 1))",
    "t - nanmean(t, axis=0)",               # a NaN-skipping anomaly
    "sum(where(isnan(t), 0, t), axis=0) / count_nonzero(~isnan(t), axis=0)",  # masked mean by hand
    "max(where(t > 0.5, t, -1), axis=1)",
    "nanmean(where(t > 0.3, t, nan), axis=0)",  # a masked mean
    "sum(i > 0, axis=1) + prod(where(i == 0, 1, sign(i)), axis=1)",
]


MORE_REDUCTIONS = [
    "nanvar(t, axis=0)",
    "nanstd(t, axis=(0, 2), ddof=1)",
    "var(t, axis=1, ddof=1)",
    "std(where(isnan(t), 0, t))",
    "argmax(i, axis=0)",                    # integers: ties everywhere, first wins
    "argmin(i, axis=1)",
    "argmax(i)",                            # over the flattened array
    "argmin(t, axis=0)",                    # NaN wins, as numpy's argmin
    "argmax(t)",
    "nanargmin(t[:, :4], axis=2)",        # (t[4, 4, :] is all NaN)
    "nanargmax(where(isnan(t), -1, t), axis=0)",
    "t - nanmean(t, axis=0, keepdims=True)",
    "sum(i, axis=1, keepdims=True) * i",
    "nanmax(t, axis=(0, 2), keepdims=True)",
    "norm(i)",
    "norm(where(isnan(t), 0, t), axis=2)",
    "norm(i, axis=(0, 1), keepdims=True)",
    "i.argmax(axis=1) + i.T.sum(axis=0)",
]

HISTOGRAMS = [
    "histogram(t, bins=10, range=(0, 1))",       # NaN ignored; 0.5 sits on an edge
    "histogram(t, bins=7, range=(0.25, 0.8))",   # values outside not counted
    "histogram(t * 10 - 5, bins=100, range=[-5, 5])",
    "histogram(i, bins=19, range=(-9, 9))",      # 9 is on the closed last edge
    "histogram(where(t > 0.5, t, nan), bins=3, range=(0.5, 1.0)) / 2",
]

GROUPS = {
    "elementwise": ELEMENTWISE,
    "reductions": REDUCTIONS,
    "more_reductions": MORE_REDUCTIONS,
    "histograms": HISTOGRAMS,
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_operations_equal_numpy(drover, tmp_path, rng, group):
    exprs = GROUPS[group]
    cases = [Case(e, f"/o{k}") for k, e in enumerate(exprs)]
    data = inputs(rng)
    for c in cases:  # an infinite expected value would make the tolerance infinite
        assert not np.isinf(oracle(c.expr, {n: i.data for n, i in data.items()})).any(), c.expr
    run, result, values = run_workload(drover, tmp_path, data, cases)
    assert result["tasks_total"] > len(cases), "the data must cross many blocks"


def test_nan_aware_reductions_of_all_nan_slices(drover, tmp_path, rng):
    """numpy's answers on slices with no valid value: nansum 0, nanprod 1, nanmean,
    nanmin and nanmax NaN; checked explicitly, not only through the oracle."""
    cases = [Case(f"{op}(t, axis=0)", f"/{op}") for op in ("nansum", "nanprod", "nanmean", "nanmin", "nanmax")]
    _, _, got = run_workload(drover, tmp_path, inputs(rng), cases)
    assert got["/nansum"][5, 3] == 0.0
    assert got["/nanprod"][5, 3] == 1.0
    for op in ("nanmean", "nanmin", "nanmax"):
        assert np.isnan(got[f"/{op}"][5, 3]), op
        assert np.isfinite(got[f"/{op}"][0, 0]), op


def test_arg_ties_across_blocks_take_the_first(drover, tmp_path):
    s = np.zeros(40)
    s[[7, 23, 31]] = 5.0    # the maximum, in three different blocks
    s[[2, 30]] = -5.0
    m = np.zeros((9, 12))
    m[[1, 6], 4] = 3.0      # ties down a column, across row blocks
    inputs = {"s": Input("in.h5", "/s", s, chunks=[8]), "m": Input("in.h5", "/m", m, chunks=[2, 5])}
    cases = [Case("argmax(s)", "/amax"), Case("argmin(s)", "/amin"), Case("argmax(m, axis=0)", "/col"),
             Case("argmax(m)", "/flat")]
    _, _, got = run_workload(drover, tmp_path, inputs, cases)
    assert got["/amax"][()] == 7 and got["/amin"][()] == 2
    assert got["/col"][4] == 1 and got["/flat"][()] == 1 * 12 + 4


def test_nanargmax_of_an_all_nan_slice_is_a_clear_runtime_error(drover, tmp_path, rng):
    t = field(rng)  # column [:, 5, 3] is all NaN
    inputs = {"t": Input("in.h5", "/t", t, chunks=[5, 4, 3])}
    run, _, _ = run_workload(drover, tmp_path, inputs, [Case("nanargmax(t, axis=0)", "/a")], check=False)
    assert_refused(run, ["all-NaN slice at result position [5, 3]", "nanargmax"], tmp_path / "out.h5", rc=1,
                   single=False)


def test_histogram_edge_values_land_like_numpy(drover, tmp_path):
    edges = np.linspace(-5, 5, 101)
    v = np.concatenate([edges, edges + 1e-12, edges - 1e-12, [np.nan, np.inf, -np.inf, 5.0, -5.0]])
    inputs = {"v": Input("in.h5", "/v", v, chunks=[17])}
    _, _, got = run_workload(drover, tmp_path, inputs, [Case("histogram(v, bins=100, range=(-5, 5))", "/h")])
    np.testing.assert_array_equal(got["/h"], np.histogram(v, bins=100, range=(-5, 5))[0])


BAD = [
    ("histogram(t, bins=0, range=(0, 1))", ["histogram()", "bins= takes a positive integer"]),
    ("histogram(t, bins=5, range=(1, 1))", ["range=(1, 1) must have lo < hi"]),
    ("histogram(t, bins=5, range=(2, 1.5))", ["lo < hi"]),
    ("histogram(t, bins=5)", ["needs range=(lo, hi)"]),
    ("histogram(t, bins=5, range=(0, 1), density=1)", ["unexpected keyword argument 'density'", "accepted: bins, range"]),
    ("argmax(t, axis=(0, 1))", ["argmax()", "one axis or none"]),
    ("mean(t, ddof=1)", ["mean()", "unexpected keyword argument 'ddof'", "accepted: axis, keepdims"]),
    ("var(t, ddof=-1)", ["var()", "non-negative integer"]),
    ("sum(t, keepdims=1)", ["keepdims= takes True or False"]),
    ("t & (t > 0.5)", ["'&' at column 3", "boolean", "floating-point"]),
    ("~t", ["'~' at column 1", "boolean"]),
    ("~i", ["'~' at column 1", "integer"]),
    ("(t > 0.5) - (t > 0.7)", ["'-' at column 11", "subtract"]),
    ("-(t > 0.5)", ["'-' at column 1", "negate"]),
    ("0 < t < 1", ["column 7", "chained", "(a < b) & (b < c)"]),
    ("where(t > 0.5, t)", ["where() at column 1", "3 arguments (condition, x, y)", "2 were given"]),
    ("clip(t, 0)", ["clip() at column 1", "a_min", "2 were given"]),
    ("nanmeen(t, axis=0)", ["\"nanmeen\"", "did you mean \"nanmean\""]),
    ("!t", ["column 1", "~"]),
    ("isnan(t, axis=0)", ["isnan()", "no axis"]),
    ("nansum(t, axis=3)", ["axis 3", "nansum()"]),
    ("t // ", ["column 6"]),
]


@pytest.mark.parametrize("expr,quoted", BAD, ids=[b[0] for b in BAD])
def test_bad_expressions_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    write_h5(tmp_path / "in.h5", {"/t": field(rng), "/i": np.arange(12, dtype=np.int32).reshape(3, 4)})
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {"t": {"file": "in.h5", "dataset": "/t"}, "i": {"file": "in.h5", "dataset": "/i"}},
        "outputs": [{"expr": expr, "file": "out.h5", "dataset": "/o"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    line = assert_refused(r, quoted, tmp_path / "out.h5")
    assert expr.strip() in line or "nanmeen" in expr, f"the expression is quoted: {line!r}"


def test_output_dtypes_default_like_numpy_and_cast_like_astype(drover, tmp_path, rng):
    """Comparisons default to bool and counts/indices to int64 (checked for every case
    above through the oracle's own dtype); here explicit dtypes: numpy's astype
    (truncation toward zero, nonzero to True), compared exactly."""
    cases = [
        Case("where(isnan(t), 0, t) * 100 - 50", "/i16", dtype="i16"),
        Case("i + 9", "/u8", dtype="u8"),
        Case("count_nonzero(t > 0.5, axis=0)", "/i32", dtype="i32"),
        Case("i * 1000000", "/i64", dtype="i64"),
        Case("where(isnan(t), 0, t) - 0.5", "/bool", dtype="bool"),
        Case("t > 0.5", "/f32", dtype="f32"),
        Case("argmax(i, axis=1)", "/u64", dtype="uint64"),
        Case("i", "/f64", dtype="f64"),
    ]
    run, result, got = run_workload(drover, tmp_path, inputs(rng), cases)
    assert got["/i16"].dtype == np.int16 and got["/bool"].dtype == np.bool_


@pytest.mark.parametrize("expr,dtype,quoted", [
    ("t", "i64", ["the value NaN", "i64"]),       # NaN cannot be an integer
    ("i * 100", "i8", ["cannot be stored as i8"]),  # out of range
    ("i", "u16", ["the value -", "u16"]),         # negative into unsigned
    ("1 / (i - i)", "i32", ["inf", "i32"]),       # infinite
])
def test_a_value_an_integer_dtype_cannot_hold_fails_the_run(drover, tmp_path, rng, expr, dtype, quoted):
    run, _, _ = run_workload(drover, tmp_path, inputs(rng), [Case(expr, "/o", dtype=dtype)], check=False)
    assert_refused(run, ["outputs[0]", "/o", *quoted], tmp_path / "out.h5", rc=1, single=False)
