"""Floating-point events (issue 17 item 6): drover counts, per output, the divisions by
zero, invalid values and overflows of its elementwise operations, as numpy warns of
them, prints one warning line per output that had any, and lists them in --json.

The counts are checked against numpy on the same data: numpy's own warning category for
each operation (np.errstate(all="raise") names it), and the number of elements where
numpy's result is new (an inf from finite values, a NaN from non-NaN values)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import Case, Input, run_workload

ROWS, COLS = 300, 200


def data(rng) -> dict[str, np.ndarray]:
    t = rng.normal(0.0, 400.0, size=(ROWS, COLS))
    t[rng.random(t.shape) < 0.02] = np.nan     # missing values: carried, never counted
    t[rng.random(t.shape) < 0.01] = 0.0        # zeros: 0/0 is invalid, log(0) divides by zero
    return {"t": t}


# expr -> (numpy's function of t giving the result, numpy's warning category)
CASES = {
    "t ** 2 / 0": (lambda t: t ** 2 / 0, "divide"),
    "sqrt(t)": (np.sqrt, "invalid"),
    "exp(t)": (np.exp, "overflow"),
    "log(abs(t))": (lambda t: np.log(np.abs(t)), "divide"),
    "t - nanmean(t, axis=0)": (lambda t: t - np.nanmean(t, axis=0), None),
}


def short(n: int) -> str:
    """A count as the warning writes it: exact below 10,000, else 12.3K, 2.5M."""
    if n < 10_000:
        return str(n)
    return f"{n / 1e3:.1f}K" if n < 1_000_000 else f"{n / 1e6:.1f}M"


def numpy_events(f, t) -> tuple[int, int, int]:
    """(divisions by zero, invalid, overflows): elements where numpy's result is an inf
    from finite t, or a NaN from a non-NaN t; infs counted as numpy's category names
    them."""
    with np.errstate(all="ignore"):
        r = np.broadcast_to(f(t), t.shape)
    new_nan = int(np.sum(np.isnan(r) & ~np.isnan(t)))
    new_inf = int(np.sum(np.isinf(r) & np.isfinite(t)))
    return new_inf, new_nan, 0


def numpy_category(f, t) -> set[str]:
    """The categories numpy warns of for f(t), operation by operation."""
    seen = set()
    for kind, key in (("divide", "divide"), ("invalid", "invalid"), ("overflow", "over")):
        with np.errstate(all="ignore", **{key: "raise"}):
            try:
                f(t)
            except FloatingPointError:
                seen.add(kind)
    return seen


def test_events_are_counted_per_output_as_numpy_warns_of_them(drover, tmp_path, rng):
    arrays = data(rng)
    t = arrays["t"]
    inputs = {"t": Input("in.h5", "/t", t, chunks=[70, 50])}
    cases = [Case(e, f"/o{k}") for k, e in enumerate(CASES)]
    run, result, _ = run_workload(drover, tmp_path, inputs, cases)
    warnings = [l for l in run.stderr.splitlines() if l.startswith("warning: outputs[")]
    for k, (expr, (f, category)) in enumerate(CASES.items()):
        got = result["outputs"][k]["fp_events"]
        got = (got["divide_by_zero"], got["invalid"], got["overflow"])
        cats = numpy_category(f, t)
        new_inf, new_nan, _ = numpy_events(f, t)
        if category is None:
            assert got == (0, 0, 0) and not cats, (expr, got, cats)
            assert not any(f"outputs[{k}]" in w for w in warnings), warnings
            continue
        assert category in cats, (expr, cats)
        # An inf is a division by zero for divisions and logarithms, an overflow otherwise.
        want = (new_inf, new_nan, 0) if category == "divide" or "divide" in cats else (0, new_nan, new_inf)
        assert got == want, f"{expr}: drover {got}, numpy {want}"
        [line] = [w for w in warnings if w.startswith(f"warning: outputs[{k}] (\"{expr}\"): ")]
        for n, word in zip(got, ("division", "invalid value", "overflow")):
            if n:
                assert re.search(rf"\b{re.escape(short(n))} {word}", line), (line, n, word)
    assert len(warnings) == sum(1 for f, c in CASES.values() if c), warnings


@pytest.mark.parametrize("n, text", [(12_345, "12.3K divisions by zero"), (2_500_000, "2.5M divisions by zero")])
def test_large_counts_are_shortened(drover, tmp_path, n, text):
    x = np.ones(n)
    inputs = {"x": Input("x.h5", "/x", x, chunks=[1 << 20])}
    run, result, _ = run_workload(drover, tmp_path, inputs, [Case("x / 0", "/d")])
    assert result["outputs"][0]["fp_events"]["divide_by_zero"] == n
    assert f'warning: outputs[0] ("x / 0"): {text} (inf produced)' in run.stderr, run.stderr
