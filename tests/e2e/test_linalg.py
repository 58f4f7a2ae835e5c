"""Linear algebra (issue 10 item 7): matmul and `@`, dot, tensordot and einsum, blocked
(each task multiplies tiles, partial products summed like any reduction), compared with
numpy on operands cut into many blocks, including blocks that cut the contracted axis."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ORACLE_FUNCS, Case, Input, assert_refused, run_drover, run_workload, to_toml, write_h5

ORACLE_FUNCS.update({"matmul": np.matmul, "dot": np.dot, "tensordot": np.tensordot, "einsum": np.einsum})


def data(rng) -> dict[str, Input]:
    return {
        # blocks cut every axis, the contracted one included (a: 37 x 45, b: 45 x 29)
        "a": Input("in.h5", "/a", rng.normal(size=(37, 45)), chunks=[10, 12], h5={"chunks": (5, 6)}),
        "b": Input("in.h5", "/b", rng.normal(size=(45, 29)), chunks=[16, 7]),
        "c": Input("in.h5", "/c", rng.normal(size=(37, 45)), chunks=[9, 45]),
        "v": Input("in.h5", "/v", rng.normal(size=(45,)), chunks=[11]),
        "w": Input("in.h5", "/w", rng.normal(size=(29,)), chunks=[8]),
        # stacks of matrices, broadcast over the leading axis
        "s": Input("in.h5", "/s", rng.normal(size=(6, 8, 9)), chunks=[4, 3, 5]),
        "r": Input("in.h5", "/r", rng.normal(size=(1, 9, 5)), chunks=[1, 4, 5]),
        "t": Input("in.h5", "/t", rng.normal(280, 5, size=(12, 7, 11)), chunks=[5, 4, 6]),
        "i": Input("in.h5", "/i", rng.integers(-5, 6, size=(7, 11)).astype(np.int32), chunks=[3, 4]),
    }


CASES = [
    "a @ b",
    "matmul(a, b)",
    "a @ b @ b.T",                       # a product of a product (a const times an input)
    "(a - mean(a, axis=0)) @ b",         # a factor that is an expression with a reduction
    "a.T @ c",                           # contracting the long axis of both: (45, 37) @ (37, 45)
    "a @ v",                             # matrix times vector
    "v @ b",
    "v @ v",                             # inner product: a 0-d result
    "s @ r",                             # (6, 8, 9) @ (1, 9, 5): stacks, broadcast
    "s @ s[0].T[None, :, :][:, :, :4]",
    "dot(a, b)",
    "dot(a, v)",
    "dot(v, v)",
    "dot(s, r[0])",                      # N-D dot: sum over the last of s and second-to-last of r
    "dot(2.5, a)",                       # with a scalar: multiplication
    "tensordot(a, b, axes=1)",
    "tensordot(a, c, axes=2)",           # a full contraction: a scalar
    "tensordot(s, t[:9, :, :8], axes=((1, 2), (2, 0)))",
    "tensordot(a, b, axes=(1, 0))",
    "einsum('ij,jk->ik', a, b)",
    'einsum("ij,jk->ik", a, b)',         # double quotes, as in Python
    "einsum('ij,ij->i', a, c)",          # row-wise dot products
    "einsum('tij->ij', t)",
    "einsum('ij->ji', a)",
    "einsum('ij,jk', a, b)",             # implicit output: the labels used once, sorted
    "einsum('i,j->ij', v, w)",           # outer product: nothing summed
    "einsum('bij,bjk->bik', s, transpose(s, axes=(0, 2, 1)))",
    "einsum('tij,ij->t', t, i)",         # an integer operand
    "einsum(' i j , j k -> i k ', a, b)",
    "sum(a[:, :, None] * b[None, :, :], axis=1)",   # the same contraction written elementwise
    # Inside a larger expression: partial products over blocks that cut the contracted
    # axis, summed like any reduction (an output that is only a contraction is computed
    # whole per block and written, with no partial sums).
    "(a @ b) * 2",
    "1 + einsum('ij,ij->i', a, c)",
    "tensordot(s, t[:9, :, :8], axes=((1, 2), (2, 0))) - 1",
]


def test_contractions_equal_numpy(drover, tmp_path, rng):
    cases = [Case(e, f"/m{k}") for k, e in enumerate(CASES)]
    run, result, values = run_workload(drover, tmp_path, data(rng), cases)
    assert result["tasks_total"] > 3 * len(cases), "the operands must cross many blocks"


def test_a_larger_matmul_in_tiles_with_nan(drover, tmp_path, rng):
    """A product large enough to be cut into tiles along every axis (the planner sizes
    contraction blocks by their tiles), with NaN propagating as in numpy."""
    a = rng.normal(size=(700, 900))
    b = rng.normal(size=(900, 650))
    a[3, 17] = np.nan
    inputs = {
        "a": Input("big.h5", "/a", a, chunks=[256, 300], h5={"chunks": (64, 100)}),
        "b": Input("big.h5", "/b", b, chunks=[300, 256]),
    }
    cases = [Case("a @ b", "/ab"), Case("einsum('ij,jk->ik', a, b[:, :5])", "/ab5"), Case("(a @ b) + 0", "/ab0")]
    _, result, values = run_workload(drover, tmp_path, inputs, cases)
    for name in ("/ab", "/ab0"):
        ab = values[name]
        assert np.isnan(ab[3]).all() and not np.isnan(ab[4]).any(), f"{name}: a NaN in row 3 of a spoils row 3 only"
    assert result["tasks_total"] >= 3 * 3 * 3, result["tasks_total"]


def test_a_product_alone_is_written_from_its_blocks(drover, tmp_path, rng):
    """`a @ b` as a whole output: one task per block of the result, no partial sums and
    no reduce stage (no finalize task); the same product inside an expression is summed
    from partial products. Both equal numpy."""
    inputs = {
        "a": Input("m.h5", "/a", rng.normal(size=(300, 200)), chunks=[100, 200]),
        "b": Input("m.h5", "/b", rng.normal(size=(200, 120)), chunks=[200, 40]),
    }
    _, alone, _ = run_workload(drover, tmp_path / "alone", inputs, [Case("a @ b", "/ab")])
    assert alone["tasks_total"] == 3 * 3, alone["tasks_total"]
    _, inside, _ = run_workload(drover, tmp_path / "inside", inputs, [Case("(a @ b) * 1", "/ab")])
    assert inside["tasks_total"] > 3 * 3, inside["tasks_total"]


BAD = [
    ("a @ a", ["'@'", "(37, 45) and (37, 45)", "do not align", "45", "37"]),
    ("matmul(a, 2)", ["'matmul'", "not scalars"]),
    ("einsum('ij,jk->ik', a)", ["einsum()", "2 operand(s) but 1 were given"]),
    ("einsum('ii->i', t[0, :7, :7])", ["einsum()", "'i' repeats"]),
    ("einsum('ij,jk->il', a, b)", ["einsum()", "'l' appears in no operand"]),
    ("einsum('ijk,jk->i', a, b)", ["einsum()", "operand 0 has 3 subscripts but 2 dimensions"]),
    ("einsum('...j,jk->...k', a, b)", ["einsum()", "'...' is not supported"]),
    ("einsum(a, b)", ["einsum()", "subscripts as a string first"]),
    ("einsum('ij,kj->ik', a, b)", ["einsum", "lengths 45 and 29"]),
    ("tensordot(a, b, axes=3)", ["tensordot()", "axes=3"]),
    ("tensordot(a, b, axes=((0,), (0, 1)))", ["tensordot()", "two tuples of the same length"]),
    ("a + 'ij'", ["'ij'", "is a string"]),
    ("einsum('ij,jk->ik, a, b)", ["column 8", "not closed"]),
    ("dot(a, b, c)", ["dot()", "2 array arguments but 3"]),
]


@pytest.mark.parametrize("expr,quoted", BAD, ids=[b[0] for b in BAD])
def test_bad_contractions_are_refused_before_any_work(drover, tmp_path, rng, expr, quoted):
    write_h5(tmp_path / "in.h5", {"/a": rng.normal(size=(37, 45)), "/b": rng.normal(size=(45, 29)),
                                  "/t": rng.normal(size=(4, 8, 8))})
    (tmp_path / "w.toml").write_text(to_toml({
        "inputs": {n: {"file": "in.h5", "dataset": f"/{n}"} for n in ("a", "b", "t")},
        "outputs": [{"expr": expr, "file": "out.h5", "dataset": "/o"}],
    }))
    r = run_drover(drover, ["run", tmp_path / "w.toml", "--workers", "1"], timeout=60)
    line = assert_refused(r, quoted, tmp_path / "out.h5")
    assert expr in line, f"the expression is quoted: {line!r}"
