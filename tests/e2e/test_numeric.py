"""Numeric end-to-end tests: drover's outputs against numpy's float64 results.

Each test writes inputs with h5py, runs `drover run --json --workers 2` on the
embedded local cluster and compares every output dataset with the oracle in
conftest.py.  Several expressions share one workload (one output dataset each)
to keep the number of cluster start-ups low.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import Case, Input, read_h5, run_drover, run_workload, write_h5, write_workload

# --------------------------------------------------------------------------
# dtypes

INT_EDGES = {
    "i8": (np.int8, [-128, 127, -1, 0]),
    "i16": (np.int16, [-32768, 32767, -1, 0]),
    "i32": (np.int32, [-(2**31), 2**31 - 1, -1, 0]),
    "i64": (np.int64, [-(2**40), 2**40, -1, 0]),
    "u8": (np.uint8, [0, 255, 254, 1]),
    "u16": (np.uint16, [0, 65535, 1, 2]),
    "u32": (np.uint32, [0, 2**32 - 1, 1, 2]),
    "u64": (np.uint64, [0, 2**40, 2**52, 1]),
}


def _dtype_data(name: str, rng: np.random.Generator, shape=(13, 9)) -> np.ndarray:
    if name in ("f32", "f64"):
        dt = np.float32 if name == "f32" else np.float64
        a = rng.normal(50.0, 20.0, size=shape).astype(dt)
        a.flat[0] = np.finfo(dt).tiny * 4  # a subnormal-adjacent value survives conversion
        return a
    dt, edges = INT_EDGES[name]
    info = np.iinfo(dt)
    lo = max(info.min, -1000)
    hi = min(info.max, 1000)
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    a.flat[: len(edges)] = np.array(edges, dtype=dt)
    return a


@pytest.mark.parametrize("dt", ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64"])
def test_input_dtypes_are_converted_to_float64(drover, tmp_path, rng, dt):
    x = _dtype_data(dt, rng)
    inputs = {"x": Input("in.h5", "/x", x, chunks=[5, 4], h5={"chunks": (4, 4)})}
    cases = [
        Case("x", "/identity"),
        Case("x * x", "/square"),  # would overflow in the native integer type
        Case("x - 1", "/minus_one"),  # would wrap for unsigned types
        Case("sum(x)", "/sum_all"),  # would overflow an 8/16-bit accumulator
        Case("mean(x, axis=0)", "/mean0"),
        Case("x / 3", "/third"),  # no integer division
        Case("-x", "/neg"),  # unsigned negation
    ]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# storage layouts and chunk grids

LAYOUTS = {
    "contiguous": ({}, None),
    "contiguous_workload_chunks": ({}, [10, 7]),
    "gzip_shuffle_misaligned": ({"chunks": (8, 8), "compression": "gzip", "compression_opts": 4, "shuffle": True}, [10, 7]),
    "gzip_shuffle_default_chunks": ({"chunks": (8, 8), "compression": "gzip", "shuffle": True}, None),
    "gzip_only": ({"chunks": (16, 5), "compression": "gzip", "compression_opts": 9}, [16, 5]),
    "shuffle_only": ({"chunks": (5, 23), "shuffle": True}, [12, 23]),
    "h5_chunks_not_dividing": ({"chunks": (10, 7)}, None),
    "h5_and_workload_chunks_not_dividing": ({"chunks": (10, 7)}, [10, 7]),
    "single_row_chunks": ({"chunks": (1, 23)}, [1, 23]),
    "workload_chunks_larger_than_shape": ({"chunks": (37, 23)}, [100, 100]),
    "single_element_chunks": ({}, [1, 1]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_storage_layouts_and_chunk_grids(drover, tmp_path, rng, layout):
    h5kw, chunks = LAYOUTS[layout]
    x = rng.normal(10.0, 3.0, size=(37, 23))
    inputs = {"x": Input("in.h5", "/x", x, chunks=chunks, h5=h5kw)}
    cases = [
        Case("x * 2 + 1", "/affine"),
        Case("sum(x, axis=0)", "/sum0"),
        Case("mean(x, axis=1)", "/mean1"),
        Case("x - mean(x, axis=0)", "/anom"),
        Case("max(x)", "/max"),
        Case("std(x, axis=0)", "/std0"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


def test_compressed_float32_input(drover, tmp_path, rng):
    x = rng.normal(280.0, 8.0, size=(30, 11, 13)).astype(np.float32)
    inputs = {"t": Input("in.h5", "/t", x, chunks=[7, 11, 5],
                         h5={"chunks": (10, 11, 13), "compression": "gzip", "shuffle": True})}
    cases = [Case("t - mean(t, axis=0)", "/anom"), Case("var(t, axis=0)", "/var0")]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# dimensionality

NDIM = {
    1: ((50,), [7], (9,)),
    2: ((12, 9), [5, 4], (3, 9)),
    3: ((6, 5, 4), [4, 2, 3], (2, 5, 4)),
    4: ((4, 3, 5, 6), [3, 2, 2, 4], (2, 3, 5, 3)),
}


@pytest.mark.parametrize("ndim", sorted(NDIM))
def test_dimensionality(drover, tmp_path, rng, ndim):
    shape, chunks, h5chunks = NDIM[ndim]
    x = rng.normal(0.0, 5.0, size=shape)
    inputs = {"x": Input("in.h5", "/x", x, chunks=chunks, h5={"chunks": h5chunks})}
    cases = [
        Case("x + 1", "/plus1"),
        Case("sum(x, axis=0)", "/sum0"),
        Case("mean(x, axis=-1)", "/mean_last"),
        Case("max(x)", "/max_all"),
        Case("x - mean(x, axis=0)", "/anom"),
        Case("min(x, axis=0)", "/min0"),
    ]
    if ndim >= 2:
        cases.append(Case(f"sum(x, axis=(0, {ndim - 1}))", "/sum_first_last"))
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# reductions

AXES = [
    ("0", "a0"),
    ("1", "a1"),
    ("2", "a2"),
    ("-1", "am1"),
    ("-3", "am3"),
    ("(0, 2)", "a02"),
    ("(1, -1)", "a1m1"),
    ("(2, 0)", "a20"),
    ("(0, 1, 2)", "a012"),
    (None, "all"),
]


@pytest.mark.parametrize("op", ["sum", "mean", "min", "max", "var", "std"])
def test_reductions_every_axis_form(drover, tmp_path, rng, op):
    x = rng.normal(3.0, 2.0, size=(7, 6, 5))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[3, 4, 2], h5={"chunks": (2, 6, 5)})}
    cases = []
    for axis, tag in AXES:
        expr = f"{op}(x)" if axis is None else f"{op}(x, axis={axis})"
        cases.append(Case(expr, f"/{op}_{tag}"))
    _, result, values = run_workload(drover, tmp_path, inputs, cases)
    # no axis: a 0-d dataset
    assert values[f"/{op}_all"].shape == ()
    shapes = {"/" + o["dataset"].lstrip("/"): o["shape"] for o in result["outputs"]}
    assert shapes[f"/{op}_all"] == []


def test_reductions_4d_tuple_axes(drover, tmp_path, rng):
    x = rng.uniform(-4, 9, size=(5, 4, 3, 6))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[2, 3, 2, 4])}
    cases = [
        Case("mean(x, axis=(0, 3))", "/mean03"),
        Case("var(x, axis=(1, 2))", "/var12"),
        Case("std(x, axis=(-1, -4))", "/std_neg"),
        Case("min(x, axis=(0, 1, 3))", "/min013"),
        Case("sum(x, axis=(0, 1, 2, 3))", "/sum_all_axes"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


def test_one_element_axis_tuple(drover, tmp_path, rng):
    x = rng.uniform(-4, 9, size=(5, 4, 3))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[2, 3, 2])}
    run_workload(drover, tmp_path, inputs, [Case("max(x, axis=(2,))", "/max2")])


def test_var_std_are_numerically_stable(drover, tmp_path, rng):
    # A large offset with small spread: a naive E[x^2] - E[x]^2 loses every digit.
    x = 1e6 + rng.normal(0.0, 1.0, size=(200, 10))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[16, 10], h5={"chunks": (16, 10)})}
    cases = [
        Case("var(x, axis=0)", "/var0", atol=0.0),
        Case("std(x, axis=0)", "/std0", atol=0.0),
        Case("var(x)", "/var_all", atol=0.0),
        Case("std(x, axis=(0, 1))", "/std_all", atol=0.0),
    ]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# multi-stage expressions


def test_anomaly_and_standardisation(drover, tmp_path, rng):
    days = np.arange(24)[:, None, None]
    x = 280 + 10 * np.sin(2 * np.pi * days / 24) + rng.normal(0, 2, size=(24, 7, 6))
    inputs = {"x": Input("t.h5", "/t2m", x, chunks=[5, 4, 6], h5={"chunks": (6, 7, 6)})}
    cases = [
        Case("x - mean(x, axis=0)", "/anom"),
        Case("x - mean(x, axis=0)", "/anom32", dtype="f32"),
        Case("(x - mean(x, axis=0)) / std(x, axis=0)", "/zscore"),
        Case("mean(x - mean(x, axis=0), axis=0)", "/anom_mean", atol=1e-9),
        Case("sum((x - mean(x, axis=0)) ** 2, axis=0) / 24", "/var_by_hand"),
        Case("max(x, axis=0) - min(x, axis=0)", "/range"),
        Case("x / sum(x)", "/fraction"),
        Case("mean(x, axis=0) - mean(mean(x, axis=0))", "/clim_anom"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# broadcasting


def test_broadcasting_between_inputs(drover, tmp_path, rng):
    inputs = {
        "x": Input("a.h5", "/x", rng.uniform(1, 5, size=(6, 5, 4)), chunks=[4, 3, 4]),
        "y": Input("b.h5", "/y", rng.uniform(1, 5, size=(5, 4)), chunks=[2, 3]),
        "z": Input("a.h5", "/z", rng.uniform(1, 5, size=(4,))),
        "w": Input("b.h5", "/w", rng.uniform(1, 5, size=(6, 1, 4)), chunks=[5, 1, 3]),
        "v": Input("b.h5", "/v", rng.uniform(1, 5, size=(1, 5, 1))),
    }
    cases = [
        Case("x + y", "/x_plus_y"),
        Case("x * z", "/x_times_z"),
        Case("y - z", "/y_minus_z"),
        Case("x / w", "/x_over_w"),
        Case("x + v", "/x_plus_v"),
        Case("w * v", "/w_times_v"),  # (6,1,4) x (1,5,1) -> (6,5,4)
        Case("x + y + z", "/three"),
        Case("y - mean(x, axis=0)", "/y_minus_clim"),
        Case("mean(x, axis=0) * z", "/clim_times_z"),
        Case("sum(x * y, axis=(1, 2)) / sum(y)", "/weighted"),
        Case("x * 2", "/scalar"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


def test_same_dataset_under_two_names_with_different_chunks(drover, tmp_path, rng):
    x = rng.normal(size=(17, 11))
    inputs = {
        "a": Input("in.h5", "/x", x, chunks=[5, 5], h5={"chunks": (4, 4)}),
        "b": Input("in.h5", "/x", x, chunks=[7, 3], h5={"chunks": (4, 4)}),
    }
    cases = [Case("a - b", "/zero"), Case("a * b + mean(b, axis=0)", "/mix")]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# elementwise functions, powers, unary minus, numbers


def test_elementwise_functions(drover, tmp_path, rng):
    x = rng.uniform(0.1, 3.0, size=(19, 8))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[6, 5])}
    cases = [
        Case("abs(x - 1.5)", "/abs"),
        Case("sqrt(x)", "/sqrt"),
        Case("exp(x)", "/exp"),
        Case("log(x)", "/log"),
        Case("sin(x)", "/sin"),
        Case("cos(x)", "/cos"),
        Case("log(exp(x))", "/log_exp"),
        Case("sqrt(abs(-x))", "/sqrt_abs_neg"),
        Case("exp(-x) * sin(3 * x)", "/damped"),
        Case("mean(log(x), axis=0)", "/mean_log"),
        Case("sin(x) ** 2 + cos(x) ** 2", "/one"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


def test_power_and_unary_minus(drover, tmp_path, rng):
    x = rng.uniform(0.5, 2.0, size=(9, 7))
    y = rng.uniform(0.5, 2.0, size=(9, 7))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[4, 4]), "y": Input("in.h5", "/y", y)}
    cases = [
        Case("x ** 2", "/sq"),
        Case("x ** 0.5", "/root"),
        Case("2 ** x", "/two_pow"),
        Case("x ** y", "/x_pow_y"),
        Case("x ** -1", "/recip"),
        Case("-x", "/neg"),
        Case("-(x + 1) * 3", "/neg_paren"),
        Case("x - -1", "/minus_neg"),
        Case("- -x", "/double_neg"),
        Case("-mean(x, axis=0)", "/neg_mean"),
        Case("(x + y) ** 2", "/paren_sq"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


def test_operator_precedence_and_numbers(drover, tmp_path, rng):
    """numpy/Python precedence: ** binds tighter than unary minus and is right
    associative; - and / are left associative."""
    x = rng.uniform(0.5, 2.0, size=(8, 6))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[3, 6])}
    cases = [
        Case("-x ** 2", "/neg_pow"),  # -(x ** 2)
        Case("2 ** x ** 0.5", "/pow_right_assoc"),  # 2 ** (x ** 0.5)
        Case("x - 1 - 2", "/sub_left_assoc"),
        Case("x / 2 / 4", "/div_left_assoc"),
        Case("1 + 2 * x", "/mul_before_add"),
        Case("(1 + 2) * x", "/parens"),
        Case("1.5e2 * x + 1e-3", "/sci_numbers"),
        Case("x * 0.25 + 3", "/decimal"),
        Case("2 * x ** 2 / 4", "/mixed"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# outputs


def test_f32_outputs(drover, tmp_path, rng):
    x = rng.normal(280.0, 10.0, size=(16, 12, 10))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[5, 12, 10])}
    cases = [
        Case("x * 1.1", "/scaled32", dtype="f32"),
        Case("x - mean(x, axis=0)", "/anom32", dtype="f32"),
        Case("mean(x)", "/mean32", dtype="f32"),
        Case("mean(x, axis=0)", "/mean64", dtype="f64"),  # explicit default
    ]
    _, result, values = run_workload(drover, tmp_path, inputs, cases)
    for ds in ("/scaled32", "/anom32", "/mean32"):
        _, info = read_h5(tmp_path / "out.h5", ds)
        assert info["dtype"] == np.float32, f"{ds} stored as {info['dtype']}"
    _, info = read_h5(tmp_path / "out.h5", "/mean64")
    assert info["dtype"] == np.float64


def test_several_outputs_several_files_and_groups(drover, tmp_path, rng):
    x = rng.normal(5.0, 1.0, size=(10, 8, 6))
    inputs = {"x": Input("data.h5", "/grp/sub/data", x, chunks=[3, 8, 4],
                         h5={"chunks": (5, 4, 6), "compression": "gzip", "shuffle": True})}
    cases = [
        Case("x - mean(x, axis=0)", "/results/deep/anom", file="res_a.h5"),
        Case("mean(x, axis=0)", "/results/deep/clim", file="res_a.h5"),
        Case("std(x, axis=0)", "/results/spread", file="res_a.h5"),
        Case("sum(x)", "/total", file="res_a.h5"),
        Case("max(x, axis=(1, 2))", "/maxima", file="res_b.h5"),
        Case("x * 2", "/g/doubled", file="res_b.h5", dtype="f32"),
    ]
    run_workload(drover, tmp_path, inputs, cases)


def test_json_summary(drover, tmp_path, rng):
    x = rng.normal(size=(40, 30))  # contiguous, uncompressed f64
    inputs = {"x": Input("in.h5", "/x", x, chunks=[10, 30])}
    cases = [Case("x + 1", "/y"), Case("sum(x)", "/s")]
    run, result, _ = run_workload(drover, tmp_path, inputs, cases)
    # every input element must have been read at least once
    assert result["bytes_read"] >= x.nbytes, result
    assert result["tasks_total"] >= 1
    assert run.stdout.strip().startswith("{") and run.stdout.strip().endswith("}")
    assert "panicked" not in run.stderr


def test_relative_paths_resolve_against_workload_directory(drover, tmp_path, rng):
    x = rng.normal(size=(9, 4))
    (tmp_path / "data").mkdir()
    (tmp_path / "wl").mkdir()
    (tmp_path / "elsewhere").mkdir()
    write_h5(tmp_path / "data" / "in.h5", {"/x": x})
    wl = write_workload(
        tmp_path / "wl" / "w.toml",
        {"x": {"file": "../data/in.h5", "dataset": "/x"}},
        [{"expr": "x * 3", "file": "out.h5", "dataset": "/y"}],
    )
    # a relative workload path (from the cwd), relative paths inside it (from its directory)
    run = run_drover(drover, ["run", "../wl/w.toml", "--workers", "2", "--json"],
                     cwd=tmp_path / "elsewhere")
    assert run.rc == 0, run.describe()
    assert not (tmp_path / "elsewhere" / "out.h5").exists()
    got, _ = read_h5(tmp_path / "wl" / "out.h5", "/y")
    np.testing.assert_allclose(got, x * 3, rtol=1e-9)


def test_absolute_paths(drover, tmp_path, rng):
    x = rng.normal(size=(9, 4))
    write_h5(tmp_path / "in.h5", {"/x": x})
    (tmp_path / "wl").mkdir()
    wl = write_workload(
        tmp_path / "wl" / "w.toml",
        {"x": {"file": str(tmp_path / "in.h5"), "dataset": "/x"}},
        [{"expr": "x - 1", "file": str(tmp_path / "abs_out.h5"), "dataset": "/y"}],
    )
    run = run_drover(drover, ["run", wl, "--workers", "2"])
    assert run.rc == 0, run.describe()
    got, _ = read_h5(tmp_path / "abs_out.h5", "/y")
    np.testing.assert_allclose(got, x - 1, rtol=1e-9)


def test_input_names_with_digits_and_underscores(drover, tmp_path, rng):
    inputs = {
        "t2m": Input("in.h5", "/t2m", rng.normal(280, 5, size=(6, 5))),
        "sea_ice_1": Input("in.h5", "/ice", rng.uniform(0, 1, size=(6, 5))),
    }
    cases = [Case("t2m * (1 - sea_ice_1)", "/open_water_t"), Case("t2m - mean(t2m, axis=0)", "/anom")]
    run_workload(drover, tmp_path, inputs, cases)


# --------------------------------------------------------------------------
# the embedded cluster


def test_default_worker_count_and_no_processes_left(drover, tmp_path, rng):
    """No --workers: one worker per core; every worker is gone after the run."""
    x = rng.normal(size=(30, 20))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[4, 20])}
    run, _, _ = run_workload(drover, tmp_path, inputs, [Case("x - mean(x, axis=0)", "/a")], workers=None)
    assert run.leftover_pids == [], (
        f"processes of the embedded cluster still running 10 s after drover exited: "
        f"{run.leftover_pids}\n{run.describe()}"
    )


def test_single_worker_and_no_processes_left(drover, tmp_path, rng):
    x = rng.normal(size=(30, 20))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[7, 6])}
    run, _, _ = run_workload(drover, tmp_path, inputs, [Case("std(x, axis=1)", "/s")], workers=1)
    assert run.leftover_pids == [], run.describe()


def test_many_tasks_few_megabytes(drover, tmp_path, rng):
    """A few MB, hundreds of blocks: exercises scheduling and the output writer."""
    days = np.arange(96)[:, None, None]
    x = (280 + 10 * np.cos(2 * np.pi * days / 96) + rng.normal(0, 3, size=(96, 64, 80))).astype(np.float32)
    inputs = {"t": Input("t.h5", "/t2m", x, chunks=[8, 16, 20],
                         h5={"chunks": (8, 32, 40), "compression": "gzip", "shuffle": True})}
    cases = [
        Case("t - mean(t, axis=0)", "/anom", dtype="f32"),
        Case("mean(t, axis=0)", "/clim"),
        Case("std(t, axis=0)", "/spread"),
        Case("mean(t, axis=(1, 2))", "/series"),
    ]
    run, result, _ = run_workload(drover, tmp_path, inputs, cases)
    assert run.leftover_pids == [], run.describe()
    assert result["tasks_total"] > 1, result
