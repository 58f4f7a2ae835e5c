"""Generated inputs (issue 10 item 8): `generate = "ones" | "zeros" | "full" | "arange" |
"random" | "normal"` with shape, chunks, value, seed; dask.array's tutorial examples run
without a file; random values are the same whatever the chunking and worker count."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_refused, read_h5, run_drover, to_toml

M64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def uniform(seed: int, k: int) -> float:
    """drover's documented `random` element k (src/exec/generate.rs)."""
    return (splitmix64(splitmix64(seed) ^ ((k * 0x9E3779B97F4A7C15) & M64)) >> 11) * 2.0 ** -53


def run(drover, tmp_path, inputs: dict, outputs: list[tuple[str, str]], workers: int = 2, name: str = "w.toml"):
    doc = {"inputs": inputs, "outputs": [{"expr": e, "file": "out.h5", "dataset": d} for e, d in outputs]}
    (tmp_path / name).write_text(to_toml(doc))
    r = run_drover(drover, ["run", tmp_path / name, "--workers", str(workers), "--json"])
    return r


def test_tutorial_examples_without_files(drover, tmp_path):
    inputs = {
        "ones": {"generate": "ones", "shape": [1000, 1000], "chunks": [300, 300]},
        "x": {"generate": "random", "shape": [300, 300], "chunks": [64, 100], "seed": 42},
        "a": {"generate": "arange", "shape": [20, 30], "chunks": [7, 9]},
        "f": {"generate": "full", "shape": [30], "value": 2.5},
        "z": {"generate": "zeros", "shape": [20, 30]},
    }
    r = run(drover, tmp_path, inputs, [
        ("(ones * ones[::1, ::1]).mean()", "/ones_mean"),
        ("(x + x.T) - x.mean(axis=1)", "/x_sym"),
        ("x", "/x"),
        ("a * f + z", "/af"),
        ("a", "/a"),
    ])
    assert r.rc == 0, r.describe()
    out = tmp_path / "out.h5"
    assert read_h5(out, "/ones_mean")[0][()] == 1.0
    x, _ = read_h5(out, "/x")
    for k in (0, 1, 299, 12345, 300 * 300 - 1):
        assert x.ravel()[k] == uniform(42, k), f"random element {k}"
    np.testing.assert_allclose(read_h5(out, "/x_sym")[0], (x + x.T) - x.mean(axis=1), rtol=1e-12, atol=1e-15)
    a = np.arange(600).reshape(20, 30)
    np.testing.assert_array_equal(read_h5(out, "/af")[0], a * 2.5)
    got_a, _ = read_h5(out, "/a")
    assert got_a.dtype == np.int64, "arange is integer, as numpy's"
    np.testing.assert_array_equal(got_a, a)
    assert r.json()["bytes_read"] == 0, "generated values are not read from anywhere"


@pytest.mark.parametrize("kind", ["random", "normal"])
def test_random_values_do_not_depend_on_chunks_or_workers(drover, tmp_path, kind):
    vals = []
    for k, (chunks, workers) in enumerate([([1000, 7], 1), ([33, 50], 2), ([250, 1], 3)]):
        d = tmp_path / f"run{k}"
        d.mkdir()
        r = run(drover, d, {"v": {"generate": kind, "shape": [1000, 50], "chunks": chunks, "seed": 9}},
                [("v", "/v"), ("mean(v, axis=0)", "/m")], workers=workers)
        assert r.rc == 0, r.describe()
        vals.append((read_h5(d / "out.h5", "/v")[0], read_h5(d / "out.h5", "/m")[0]))
    for v, m in vals[1:]:
        np.testing.assert_array_equal(v, vals[0][0])
        np.testing.assert_allclose(m, vals[0][1], rtol=1e-12)
    v = vals[0][0]
    if kind == "random":
        assert v.min() >= 0 and v.max() < 1 and abs(v.mean() - 0.5) < 0.01
    else:
        assert abs(v.mean()) < 0.02 and abs(v.std() - 1) < 0.02


BAD = [
    ({"generate": "ones"}, ["[inputs.g]", "needs shape"]),
    ({"generate": "uniform", "shape": [3]}, ["\"uniform\" is not a generator", "ones, zeros, full, arange, random, normal"]),
    ({"generate": "ones", "shape": [3], "value": 1.0}, ["value = is for generate = \"full\""]),
    ({"generate": "full", "shape": [3]}, ["value = is for generate = \"full\""]),
    ({"generate": "zeros", "shape": [3], "seed": 1}, ["seed = is for random and normal"]),
    ({"generate": "ones", "shape": [3], "file": "in.h5", "dataset": "/x"}, ["both generate"]),
    ({"generate": "ones", "shape": [3, 0]}, ["shape [3, 0]", "at least 1"]),
    ({"shape": [3]}, ["no generate"]),
    ({"file": "in.h5"}, ["needs file", "and dataset"]),
]


@pytest.mark.parametrize("spec,quoted", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_generated_inputs_are_refused(drover, tmp_path, spec, quoted):
    r = run(drover, tmp_path, {"g": spec}, [("g", "/o")], workers=1)
    assert_refused(r, quoted, tmp_path / "out.h5")
