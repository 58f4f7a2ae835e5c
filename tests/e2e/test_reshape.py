"""reshape (issue 10 item 2): numpy's C-order reshape of any expression, computed block
by block (each block of the result reads the box of its operand that holds its
elements), compared with numpy on operands cut into many blocks; layouts that would
need unbounded blocks are refused before any work."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import ORACLE_FUNCS, Case, Input, assert_refused, run_drover, run_workload, to_toml, write_h5

ORACLE_FUNCS.update({"reshape": np.reshape})


def data(rng) -> dict[str, Input]:
    t = rng.normal(280, 5, size=(24, 9, 13))
    t[5, 2, 3] = np.nan
    return {
        # time steps in blocks of 4 (HDF5 chunks of 2), fields cut too
        "t": Input("in.h5", "/t", t, chunks=[4, 5, 13], h5={"chunks": (2, 9, 13)}),
        "x": Input("in.h5", "/x", rng.normal(size=(30, 14)), chunks=[7, 14]),
        "s": Input("in.h5", "/s", rng.normal(size=(120,)), chunks=[25]),
        "i": Input("in.h5", "/i", rng.integers(-9, 9, size=(12, 10)).astype(np.int16), chunks=[5, 10]),
    }


CASES = [
    # splits of the leading axis: years x months, the climatologist's reshape
    "reshape(t, (2, 12, 9, 13))",
    "nanmean(reshape(t, (2, 12, 9, 13)), axis=0)",
    "t.reshape(4, 6, 9, 13)[:, 2]",
    "reshape(t, (-1, 3, 9, 13)).sum(axis=1)",
    # merges: fields flattened, everything flattened
    "reshape(t, (24, 117))",
    "reshape(t, (24, -1)) - mean(reshape(t, (24, -1)), axis=0)",
    "reshape(x, (-1,))",
    "reshape(x, shape=(420,))[::7]",
    # splits and merges at once, odd factors, length-1 axes
    "reshape(x, (5, 6, 2, 7))",
    "reshape(x, (6, 70))",
    "reshape(x, (14, 30))",
    "reshape(s, (4, 1, 30))",
    "reshape(s, (2, 3, 4, 5))[1, :, ::2]",
    "x.reshape(2, 15, 14).T",
    # of expressions, views, reductions and integers
    "reshape(t - mean(t, axis=0), (2, 12, 117))",
    "reshape(t.T, (13, -1))",
    "reshape(x[::2, 1:], (5, 39))",
    "reshape(mean(t, axis=0), (-1,))",
    "reshape(i, (4, 30)) * 2",
    "reshape(s, (12, 10)) + i",
]


def test_reshapes_equal_numpy(drover, tmp_path, rng):
    cases = [Case(e, f"/r{k}") for k, e in enumerate(CASES)]
    run, result, values = run_workload(drover, tmp_path, data(rng), cases)
    assert result["tasks_total"] > 3 * len(cases), "the operands must cross many blocks"


def test_a_reshape_reads_each_byte_once(drover, tmp_path, rng):
    """Years x days split of a long time axis: each block of the result is one box of
    the input, so the run reads the input once (blocks follow the input's)."""
    t = rng.normal(size=(730, 20, 30))
    inputs = {"t": Input("big.h5", "/t", t, chunks=[73, 20, 30], h5={"chunks": (73, 20, 30)})}
    cases = [Case("reshape(t, (2, 365, 20, 30)) * 1", "/y")]
    _, result, values = run_workload(drover, tmp_path, inputs, cases)
    assert result["bytes_read"] == t.nbytes, (result["bytes_read"], t.nbytes)
    assert result["tasks_total"] == 10, result["tasks_total"]


def test_the_tutorial_arange_reshape(drover, tmp_path):
    """dask.array's `da.arange(15).reshape(3, 5)`, on a generated input."""
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {"a": {"generate": "arange", "shape": [15], "chunks": [4]}},
        "outputs": [{"expr": "a.reshape(3, 5)", "file": "out.h5", "dataset": "/a"},
                    {"expr": "reshape(a, (5, 3)).T", "file": "out.h5", "dataset": "/b"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "2"], timeout=60)
    assert r.rc == 0, r.describe()
    with h5py.File(tmp_path / "out.h5") as f:
        a, b = f["/a"][()], f["/b"][()]
    assert np.array_equal(a, np.arange(15).reshape(3, 5)) and a.dtype == np.int64
    assert np.array_equal(b, np.arange(15).reshape(5, 3).T)


BAD = [
    ("reshape(x, (7, -1))", ["reshape()", "cannot reshape an array of size 20 (shape (4, 5)) into shape (7, -1)"]),
    ("reshape(x, (-1, -1))", ["reshape()", "only specify one unknown dimension"]),
    ("reshape(x, (2, -2, 5))", ["reshape()", "negative dimension -2"]),
    ("reshape(x)", ["reshape()", "the new shape", "reshape(x, (3, 4))"]),
    ("reshape(x, (2, 10), order='F')", ["reshape()", "unexpected keyword argument 'order'", "accepted: shape"]),
    ("x.reshape(4, y)", ["reshape()", "the new shape"]),
]


@pytest.mark.parametrize("expr,quoted", BAD, ids=[b[0] for b in BAD])
def test_bad_reshapes_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    write_h5(tmp_path / "in.h5", {"/x": rng.normal(size=(4, 5)), "/y": rng.normal(size=(5,))})
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {"x": {"file": "in.h5", "dataset": "/x"}, "y": {"file": "in.h5", "dataset": "/y"}},
        "outputs": [{"expr": expr, "file": "out.h5", "dataset": "/o"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    line = assert_refused(r, quoted, tmp_path / "out.h5")
    assert expr in line, f"the expression is quoted: {line!r}"


def test_an_unworkable_reshape_is_refused(drover, tmp_path):
    """A transposition of the row length of a 42 M-element array (6000 x 7001 into
    7001 x 6000, read in blocks of 100 rows) has no blocks that map to whole rows of
    both shapes short of the whole array: refused, naming both shapes and the fix."""
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {"g": {"generate": "ones", "shape": [6000, 7001], "chunks": [100, 7001]}},
        "outputs": [{"expr": "reshape(g, (7001, 6000))", "file": "out.h5", "dataset": "/o"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    assert_refused(r, ["reshape of shape (6000, 7001) into (7001, 6000)", "cannot be cut into bounded blocks",
                       "chunks="], tmp_path / "out.h5")
