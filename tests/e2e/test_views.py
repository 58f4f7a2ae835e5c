"""Indexing and axis rearrangement (issue 10 items 1 and 2): numpy basic indexing on
any sub-expression, offset slices combined across block edges, transposes, moveaxis,
squeeze and expand_dims, each compared with numpy on data crossing many blocks."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import Case, Input, assert_refused, run_drover, run_workload, to_toml, write_h5


def data(rng) -> dict[str, Input]:
    return {
        "x": Input("in.h5", "/x", rng.normal(size=(31, 31)), chunks=[7, 6], h5={"chunks": (5, 4)}),
        "t": Input("in.h5", "/t", rng.normal(280, 5, size=(23, 9, 13)), chunks=[4, 5, 6]),
        "u": Input("in.h5", "/u", rng.normal(size=(6, 5, 7, 4)), chunks=[4, 3, 5, 3]),
        "s": Input("in.h5", "/s", rng.normal(size=(101,)), chunks=[9]),
        "lat": Input("in.h5", "/lat", np.linspace(-80, 80, 9), chunks=[4]),
        "ones": Input("in.h5", "/ones", np.ones((15, 15)), chunks=[4, 4]),
    }


CASES = [
    # dask.array's tutorial examples, in drover's spelling
    "(x + x.T) - x.mean(axis=1)",
    "(ones * ones[::1, ::1]).mean()",
    # offset slices across block edges: differences and stencils, 1-D to 3-D
    "s[1:] - s[:-1]",
    "s[2:] - 2 * s[1:-1] + s[:-2]",
    "x[1:, 1:] - x[:-1, :-1]",
    "t[2:] - 2 * t[1:-1] + t[:-2]",
    "t[:, 1:, :] - t[:, :-1, :]",
    "(s[1:] + s[:-1])[::2]",
    # steps, negative steps, integers dropping axes, ellipsis, None
    "s[::-1]",
    "s[-1:2:-3]",
    "x[::2, ::-3]",
    "t[0]",
    "t[-1, :, 4]",
    "t[..., 3]",
    "t[3, ...]",
    "u[1, ..., ::2]",
    "x[None, 3:9]",
    "t[:, None, 2, :]",
    "t * cos(deg2rad(lat[:, None]))",    # a 1-D coordinate broadcast over a field
    "t[5:15][2:8:2, 1:]",
    # reductions of views, views of reductions
    "sum(x[10:20], axis=0)",
    "mean(t[:, 2:7, ::2], axis=(0, 2))",
    "mean(t, axis=0)[::-1, 1:]",
    "t - mean(t[5:], axis=0)",
    # transposes and axis moves
    "x.T",
    "transpose(t)",
    "transpose(u, axes=(2, 0, 3, 1))",
    "transpose(u, (3, 1, 0, 2))",         # the axes as numpy takes them positionally
    "transpose(t - mean(t, axis=0))",     # a transposed anomaly
    "t.T - mean(t, axis=2).T[None, :, :]",
    "moveaxis(u, 0, -1)",
    "moveaxis(u, -1, 1)[1:, ::2]",
    "squeeze(t[:, 3:4, :])",
    "squeeze(x[None, :, :, None], axis=(0, 3))",
    "expand_dims(s, 0) * expand_dims(s, axis=1)",
    "x.T.T + x[:, ::-1][:, ::-1]",
]


def test_views_equal_numpy(drover, tmp_path, rng):
    cases = [Case(e, f"/v{k}") for k, e in enumerate(CASES)]
    inputs = data(rng)
    run, result, values = run_workload(drover, tmp_path, inputs, cases)
    assert result["tasks_total"] > 3 * len(cases), "the data must cross many blocks"


def test_a_slice_reads_only_what_it_touches(drover, tmp_path, rng):
    big = rng.normal(size=(4000, 500))
    inputs = {"big": Input("big.h5", "/big", big, chunks=[100, 500], h5={"chunks": (50, 500)})}
    cases = [Case("big[1000:1010] * 2", "/part")]
    _, result, _ = run_workload(drover, tmp_path, inputs, cases)
    slice_bytes = 10 * 500 * 8
    assert result["bytes_read"] <= 2 * slice_bytes, (
        f"x[1000:1010] read {result['bytes_read']} bytes for a {slice_bytes}-byte slice"
    )


BAD = [
    ("x[31]", ["column 3", "index 31 is out of bounds for axis 0 with size 31"]),
    ("x[0, -32]", ["column 6", "index -32", "size 31"]),
    ("x[0, 0, 0]", ["column 9", "too many indices", "2 dimensions"]),
    ("x[::0]", ["column 3", "step cannot be zero"]),
    ("x[5:2]", ["selects no elements"]),
    ("x[..., ...]", ["single ellipsis"]),
    ("x[a]", ["column 3", "integer constant"]),
    ("x.foo", ["'.foo'", ".T"]),
    ("transpose(x, axes=(0, 0))", ["transpose()", "not a permutation"]),
    ("transpose(t, axes=(0, 1))", ["not a permutation"]),
    ("squeeze(x, axis=0)", ["squeeze()", "length 31"]),
    ("moveaxis(t, 0, 3)", ["destination axis 3 is out of range"]),
    ("sum(x, axs=0)", ["sum()", "unexpected keyword argument 'axs'", "accepted: axis"]),
    ("sin(x, out=1)", ["sin()", "unexpected keyword argument 'out'"]),
    ("x[1:] - x", ["shapes (30, 31) and (31, 31) do not broadcast"]),
]


@pytest.mark.parametrize("expr,quoted", BAD, ids=[b[0] for b in BAD])
def test_bad_views_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    write_h5(tmp_path / "in.h5", {"/x": rng.normal(size=(31, 31)), "/t": rng.normal(size=(4, 5, 6))})
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {"x": {"file": "in.h5", "dataset": "/x"}, "t": {"file": "in.h5", "dataset": "/t"}},
        "outputs": [{"expr": expr, "file": "out.h5", "dataset": "/o"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    line = assert_refused(r, quoted, tmp_path / "out.h5")
    assert expr in line, f"the expression is quoted: {line!r}"
