"""Named intermediates (`[let]`, issue 10 item 10): usable in outputs and in later
entries, resolved once per run (a reduction shared by two outputs runs once), and
every bad entry refused before any work starts."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_refused, read_h5, run_drover, to_toml, write_h5


def workload(tmp_path, lets: dict[str, str], outputs: list[tuple[str, str]], rng) -> tuple:
    x = rng.normal(size=(50, 40))
    write_h5(tmp_path / "in.h5", {"/x": x})
    doc = {
        "inputs": {"x": {"file": "in.h5", "dataset": "/x", "chunks": [7, 9]}},
        "let": lets,
        "outputs": [{"expr": e, "file": "out.h5", "dataset": d} for e, d in outputs],
    }
    (tmp_path / "w.toml").write_text(to_toml(doc))
    return tmp_path / "w.toml", x


def test_intermediates_are_shared_and_equal_numpy(drover, tmp_path, rng):
    w, x = workload(
        tmp_path,
        {"clim": "mean(x, axis=0)", "anom": "x - clim", "sd": "std(anom, axis=0)"},
        [("anom / sd", "/z"), ("clim + sd", "/c"), ("anom[::-1] * 2", "/a")],
        rng,
    )
    r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    clim = x.mean(axis=0)
    anom = x - clim
    sd = anom.std(axis=0)
    for ds, want in (("/z", anom / sd), ("/c", clim + sd), ("/a", anom[::-1] * 2)):
        got, _ = read_h5(tmp_path / "out.h5", ds)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=ds)
    # 8 x 5 = 40 blocks per stage: clim's reduce stage (40 + finalize), sd's (40 +
    # finalize), the /z and /a writes (40 each), /c in the driver (1). A second copy
    # of clim or sd would add 41 tasks.
    assert r.json()["tasks_total"] == 41 + 41 + 40 + 40 + 1, r.json()


def test_an_elementwise_intermediate_is_computed_once(drover, tmp_path, rng):
    """An elementwise `[let]` used by three outputs of the same shape: one write stage
    computes it once per block and writes all three (x is read once: a copy per output
    would read it three times, and add 40 tasks each)."""
    w, x = workload(
        tmp_path,
        {"y": "sin(x) * 2 + x"},
        [("y + 1", "/p"), ("y * y", "/q"), ("where(y > 0, y, 0)", "/r"), ("cos(x) * 2 + x", "/s")],
        rng,
    )
    r = run_drover(drover, ["run", w, "--workers", "2", "--json"])
    assert r.rc == 0, r.describe()
    y = np.sin(x) * 2 + x
    for ds, want in (("/p", y + 1), ("/q", y * y), ("/r", np.where(y > 0, y, 0)), ("/s", np.cos(x) * 2 + x)):
        got, _ = read_h5(tmp_path / "out.h5", ds)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=ds)
    # /p, /q, /r: one stage of 40 blocks; /s shares nothing with them: its own 40.
    assert r.json()["tasks_total"] == 40 + 40, r.json()
    assert r.json()["bytes_read"] == 2 * x.nbytes, r.json()


BAD = [
    ({"a": "b + 1", "b": "a * 2"}, "a", ["[let] a:", "a -> b -> a", "cycle"]),
    ({"a": "a + 1"}, "a", ["[let] a:", "a -> a"]),
    ({"a": "y + 1"}, "a", ["[let] a:", "unknown name \"y\"", "column 1"]),
    ({"a": "x +"}, "a", ["[let] a:", "syntax error", "column 4"]),
    ({"x": "1"}, "x", ["[let] name \"x\"", "input name"]),
    ({"2a": "x"}, "x", ["[let] name \"2a\""]),
    ({"unused": "nope(x)"}, "x", ["[let] unused:", "unknown function \"nope\""]),
]


@pytest.mark.parametrize("lets,expr,quoted", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_intermediates_are_refused_before_any_work(drover, tmp_path, rng, lets, expr, quoted):
    w, _ = workload(tmp_path, lets, [(expr, "/o")], rng)
    r = run_drover(drover, ["run", w, "--workers", "1"], timeout=60)
    assert_refused(r, quoted, tmp_path / "out.h5")
