"""Staging copies of compressed inputs (issue 12 item 2: an intermediate layout, as the
Rechunker algorithm uses).

When a plan's tasks cut across the chunks of a compressed input (time-step chunks
rechunked into time series, a median over time of spatial blocks), each chunk would
be decoded once per task touching it. drover then copies the input once, uncompressed,
to a hidden file beside the first output, reads the copy instead, and removes it at
the end. Checked here: the results equal numpy's (and the unstaged run's, bit for bit)
for plain and CF-packed inputs on chunk grids that do not divide the shape, --explain
names the copy, the copy is gone after the run, a run killed mid-way keeps the copy
and resumes from it, and the workers stay within their memory bound on data four
times larger than it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_drover, to_toml
from test_resilience import kill_once_journaled

MiB = 1 << 20


def write_input(path: Path, data: np.ndarray, chunks: tuple[int, ...], attrs: dict | None = None) -> None:
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("t", data=data, chunks=chunks, compression="gzip", shuffle=True)
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v


def workload(d: Path, outputs: list[dict], name: str = "w.toml") -> Path:
    w = d / name
    w.write_text(to_toml({"inputs": {"t": {"file": "in.h5", "dataset": "t"}}, "outputs": outputs}))
    return w


def staging_files(d: Path) -> list[Path]:
    return sorted(d.glob(".*drover-staging-*"))


def read(path: Path, dataset: str) -> np.ndarray:
    with h5py.File(path) as f:
        return f[dataset][...]


def nan_oracle(f, *args, **kw) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return f(*args, **kw)


@pytest.mark.parametrize("packed", [False, True], ids=["f32", "int16-cf"])
def test_a_compressed_input_read_across_its_chunks_is_staged_once_and_exact(drover, tmp_path, packed):
    # (203, 37, 50) in time-step chunks: blocks of time series cut every chunk many
    # times; no chunk grid divides the shape evenly.
    rng = np.random.default_rng(11)
    shape = (203, 37, 50)
    if packed:
        stored = rng.integers(-3000, 3000, size=shape).astype(np.int16)
        stored[rng.random(shape) < 0.01] = -32767
        attrs = {"_FillValue": np.int16(-32767), "scale_factor": np.float64(0.01), "add_offset": np.float64(280.0)}
        write_input(tmp_path / "in.h5", stored, (1, 37, 50), attrs)
        t = np.where(stored == -32767, np.nan, stored.astype(np.float64) * 0.01 + 280.0)
    else:
        t = rng.normal(280.0, 5.0, size=shape).astype(np.float32)
        t[rng.random(shape) < 0.01] = np.nan
        write_input(tmp_path / "in.h5", t, (1, 37, 50))
        t = t.astype(np.float64)
    outputs = [
        {"expr": "t", "file": str(tmp_path / "ts.h5"), "dataset": "t", "chunks": [203, 4, 6]},
        {"expr": "nanmedian(t, axis=0)", "file": str(tmp_path / "med.h5"), "dataset": "m"},
        {"expr": "nancumsum(t, axis=0)", "file": str(tmp_path / "cum.h5"), "dataset": "c"},
    ]
    w = workload(tmp_path, outputs)
    # Small blocks (a low bound) make many tasks per chunk.
    bound = ["--memory-per-worker", "200MB"]

    plan = run_drover(drover, ["run", str(w), "--explain", "--json", *bound])
    assert plan.rc == 0, plan.describe()
    staged = plan.json()["staging"]
    copy = tmp_path / ".ts.h5.drover-staging-t.drover-tmp"
    assert staged == [{"input": "t", "file": str(copy), "bytes": t.size * (8 if packed else 4)}], staged
    text = run_drover(drover, ["run", str(w), "--explain", *bound])
    assert f'staging: input "t" is compressed' in text.stdout and str(copy) in text.stdout, text.stdout
    assert 'a staging copy of input "t"' in text.stdout, text.stdout

    r = run_drover(drover, ["run", str(w), "--workers", "2", *bound, "--json"], timeout=300)
    assert r.rc == 0, r.describe()
    assert [o["file"] for o in r.json()["outputs"]] == [o["file"] for o in outputs]
    assert [i["name"] for i in r.json()["inputs"]] == ["t"]
    assert staging_files(tmp_path) == [], "the staging copy is removed at the end"
    got = {o["dataset"]: read(Path(o["file"]), o["dataset"]) for o in outputs}
    np.testing.assert_array_equal(got["t"], t)
    np.testing.assert_array_equal(got["m"], nan_oracle(np.nanmedian, t, axis=0))
    np.testing.assert_allclose(got["c"], np.nancumsum(t, axis=0), rtol=1e-12)
    with h5py.File(tmp_path / "ts.h5") as f:
        assert f["t"].chunks == (203, 4, 6)

    # The same workload read without a staging copy gives the same bits.
    plan = run_drover(drover, ["run", str(w), "--explain", "--json", *bound], env={"DROVER_STAGING": "0"})
    assert plan.json()["staging"] == []
    r = run_drover(drover, ["run", str(w), "--workers", "2", *bound], env={"DROVER_STAGING": "0"}, timeout=300)
    assert r.rc == 0, r.describe()
    for o in outputs:
        np.testing.assert_array_equal(read(Path(o["file"]), o["dataset"]), got[o["dataset"]])


def test_inputs_read_along_their_chunks_or_uncompressed_are_not_staged(drover, tmp_path):
    rng = np.random.default_rng(3)
    t = rng.normal(size=(60, 30, 40))
    write_input(tmp_path / "in.h5", t, (10, 30, 40))
    # A mean over time in blocks of whole chunks decodes each chunk once.
    w = workload(tmp_path, [{"expr": "t - mean(t, axis=0)", "file": str(tmp_path / "a.h5"), "dataset": "a"}])
    plan = run_drover(drover, ["run", str(w), "--explain", "--json"])
    assert plan.rc == 0 and plan.json()["staging"] == [], plan.describe()
    # Uncompressed time-step chunks are read in parts without decoding: no copy either.
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("t", data=t, chunks=(1, 30, 40))
    w = workload(tmp_path, [{"expr": "t", "file": str(tmp_path / "ts.h5"), "dataset": "t", "chunks": [60, 2, 2]}], "u.toml")
    plan = run_drover(drover, ["run", str(w), "--explain", "--json", "--memory-per-worker", "200MB"])
    assert plan.rc == 0 and plan.json()["staging"] == [], plan.describe()


SHAPE = (640, 360, 360)  # 663 MB of f64 decoded, gzip in time-step chunks
BOUND = 150 * MiB


def test_a_killed_staged_rechunk_keeps_its_copy_resumes_from_it_and_stays_within_the_bound(drover, tmp_path):
    rng = np.random.default_rng(5)
    t = rng.normal(280.0, 5.0, size=SHAPE)
    t[rng.random(SHAPE) < 0.001] = np.nan
    assert t.nbytes >= 4 * BOUND
    write_input(tmp_path / "in.h5", t, (1, 360, 360))
    out = tmp_path / "ts.h5"
    w = workload(tmp_path, [{"expr": "t", "file": str(out), "dataset": "t", "chunks": [640, 8, 8]}])
    args = [str(drover), "run", str(w), "--workers", "1", "--threads", "1", "--memory-per-worker", f"{BOUND}", "--json"]
    copy = tmp_path / ".ts.h5.drover-staging-t.drover-tmp"
    journal = tmp_path / ".ts.h5.drover-journal"
    kill_once_journaled(args, journal, out)
    assert copy.exists(), "the staging copy is kept for the next run"
    r = run_drover(drover, args[1:], timeout=600)
    assert r.rc == 0, r.describe()
    summary = r.json()
    assert 0 < summary["tasks_resumed"] < summary["tasks_total"], summary
    peaks = summary["workers_peak_rss_bytes"]
    assert len(peaks) == 1 and 0 < peaks[0] <= BOUND, f"peak RSS {peaks[0] / MiB:.0f} MiB over {BOUND / MiB:.0f} MiB"
    with h5py.File(out) as f:
        assert f["t"].chunks == (640, 8, 8)
        for i in range(0, SHAPE[1], 90):
            np.testing.assert_array_equal(f["t"][:, i: i + 90], t[:, i: i + 90])
    assert not journal.exists() and staging_files(tmp_path) == []
