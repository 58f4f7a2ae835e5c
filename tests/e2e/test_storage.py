"""How inputs are stored on disk, and drover's two ways of reading them.

Datasets stored as plain bytes (contiguous, or chunked without filters, in a file
without a user block) are read straight from a read-only map of the file; everything
else goes through the HDF5 library. `DROVER_DIRECT_READS=0` forces the library path.
Every storage form here runs both ways and both must equal numpy; the workers' debug
log says which path each input took, and that choice is checked too.
"""

from __future__ import annotations

import re
import time

import h5py
import numpy as np
import pytest

from conftest import Case, Input, run_workload

CASES = [
    Case("x", "/copy"),
    Case("x * 2 - 1", "/affine"),
    Case("sum(x, axis=0)", "/sum0"),
    Case("mean(x, axis=1)", "/mean1"),
    Case("var(x, axis=0)", "/var0"),
    Case("min(x)", "/min"),
    Case("x - mean(x, axis=0)", "/anom"),
]

PATHS = {"mapped": {}, "hdf5": {"DROVER_DIRECT_READS": "0"}}


def _run(drover, tmp_path, inputs, path, cases=CASES, **kw):
    env = {"DROVER_LOG": "drover=debug", **PATHS[path]}
    run, _, _ = run_workload(drover, tmp_path, inputs, cases, env=env, **kw)
    return run


def _logged(run, what: str) -> set[str]:
    """The `direct=` values the workers logged on their lines about `what`."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", run.stderr)
    return {m.group(1) for line in plain.splitlines() if what in line for m in [re.search(r"direct=(true|false)", line)] if m}


def _direct_flags(run) -> set[str]:
    """How the workers read the inputs: `direct=` of their "opened input" lines."""
    return _logged(run, "opened input")


STORED_RAW = {
    "chunked_f64": (np.float64, {"chunks": (8, 5)}),
    "contiguous_f64": (np.float64, {}),
    "big_endian_f64": (">f8", {"chunks": (8, 5)}),
    "big_endian_contiguous_f64": (">f8", {}),
    "big_endian_i32": (">i4", {"chunks": (6, 12)}),
    "little_endian_f32": ("<f4", {"chunks": (20, 3)}),
    "u16": (np.uint16, {"chunks": (7, 7)}),
    "i8": (np.int8, {"chunks": (20, 12)}),
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("form", sorted(STORED_RAW))
def test_stored_raw_inputs(drover, tmp_path, rng, form, path):
    dtype, h5 = STORED_RAW[form]
    x = rng.normal(40.0, 30.0, size=(21, 12)).astype(dtype)
    run = _run(drover, tmp_path, {"x": Input("in.h5", "/x", x, chunks=[8, 5], h5=h5)}, path)
    assert _direct_flags(run) == ({"true"} if path == "mapped" else {"false"}), run.describe()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_chunks_at_unaligned_file_offsets(drover, tmp_path, rng, path):
    """A 3-byte dataset written first leaves the chunks of the next one at addresses
    that are not multiples of 8: they cannot be viewed as f64 in place and are copied."""
    x = rng.normal(size=(20, 12))
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("pad", data=np.arange(3, dtype="u1"))
        d = f.create_dataset("x", data=x, chunks=(8, 12))
        offsets = [d.id.get_chunk_info(i).byte_offset for i in range(d.id.get_num_chunks())]
    assert any(o % 8 for o in offsets), f"chunks happen to be aligned: {offsets}"
    cases = [Case("sum(x, axis=0)", "/sum0"), Case("mean(x)", "/mean"), Case("x + 1", "/plus")]
    inputs = {"x": Input("in.h5", "/x", x, chunks=[8, 12])}
    run = _run(drover, tmp_path, inputs, path, cases, write_inputs=False)
    assert _direct_flags(run) == ({"true"} if path == "mapped" else {"false"}), run.describe()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_unwritten_chunks_read_as_the_fill_value(drover, tmp_path, rng, path):
    """Chunks never written have no address: those are read through HDF5, which
    supplies the dataset's fill value."""
    x = np.full((20, 12), 7.5)
    x[0:8, 0:5] = rng.normal(size=(8, 5))
    x[16:20, 10:12] = rng.normal(size=(4, 2))
    with h5py.File(tmp_path / "in.h5", "w") as f:
        d = f.create_dataset("x", shape=x.shape, chunks=(8, 5), dtype="f8", fillvalue=7.5)
        d[0:8, 0:5] = x[0:8, 0:5]
        d[16:20, 10:12] = x[16:20, 10:12]
        assert d.id.get_num_chunks() == 2
    inputs = {"x": Input("in.h5", "/x", x, chunks=[8, 5])}
    cases = [Case("x", "/copy"), Case("sum(x, axis=0)", "/sum0"), Case("max(x)", "/max")]
    run = _run(drover, tmp_path, inputs, path, cases, write_inputs=False)
    assert _direct_flags(run) == ({"true"} if path == "mapped" else {"false"}), run.describe()


FILTERED = {
    "gzip": {"chunks": (8, 5), "compression": "gzip"},
    "shuffle": {"chunks": (8, 5), "shuffle": True},
    "fletcher32": {"chunks": (8, 5), "fletcher32": True},
}


@pytest.mark.parametrize("form", sorted(FILTERED))
def test_filtered_inputs_go_through_hdf5(drover, tmp_path, rng, form):
    x = rng.normal(size=(21, 12))
    run = _run(drover, tmp_path, {"x": Input("in.h5", "/x", x, chunks=[8, 5], h5=FILTERED[form])}, "mapped")
    assert _direct_flags(run) == {"false"}, run.describe()


def test_file_with_a_user_block_goes_through_hdf5(drover, tmp_path, rng):
    x = rng.normal(size=(21, 12))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[8, 5], h5={"chunks": (8, 5)})}
    run = _run(drover, tmp_path, inputs, "mapped", h5_file_kw={"userblock_size": 512})
    assert _direct_flags(run) == {"false"}, run.describe()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_reductions_over_leading_trailing_and_middle_axes(drover, tmp_path, rng, path):
    """The in-place reductions take contiguous fast paths for leading and trailing
    axes and ndarray's general folds otherwise; edge chunks are partial."""
    x = rng.normal(5.0, 2.0, size=(13, 7, 9))
    x[4, 3, 2] = np.nan
    cases = [
        Case("sum(x, axis=0)", "/s0"),
        Case("sum(x, axis=(0, 1))", "/s01"),
        Case("mean(x, axis=2)", "/m2"),
        Case("mean(x, axis=(1, 2))", "/m12"),
        Case("std(x, axis=1)", "/sd1"),
        Case("var(x, axis=(0, 1))", "/v01"),
        Case("max(x, axis=0)", "/mx0"),
        Case("min(x, axis=2)", "/mn2"),
        Case("sum(x)", "/s"),
    ]
    inputs = {"x": Input("in.h5", "/x", x, chunks=[5, 7, 4], h5={"chunks": (5, 7, 4)})}
    _run(drover, tmp_path, inputs, path, cases)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_large_contiguous_input_read_in_pieces(drover, tmp_path, rng, path):
    """A contiguous dataset is one storage cell: blocks read spans of it (large spans
    are prefaulted), in pieces that are not aligned to anything stored."""
    x = rng.normal(100.0, 5.0, size=(700, 1500))
    cases = [Case("mean(x, axis=0)", "/m0"), Case("sum(x, axis=1)", "/s1"), Case("x - mean(x, axis=0)", "/anom")]
    run = _run(drover, tmp_path, {"x": Input("in.h5", "/x", x, chunks=[300, 1100])}, path, cases)
    assert _direct_flags(run) == ({"true"} if path == "mapped" else {"false"}), run.describe()


def _output_flags(run) -> set[str]:
    """How the workers write the outputs: `direct=` of their "output blocks" lines."""
    return _logged(run, "output blocks")


@pytest.mark.parametrize("writes", ["workers", "driver"])
def test_large_output_from_three_workers(drover, tmp_path, rng, writes):
    """Output blocks of 4 MiB from three workers. Workers on the driver's host write
    their blocks straight into the output file's chunks; with DROVER_DIRECT_WRITES=0
    every block crosses QUIC to the driver's writer, more than its budget of received
    bytes (16 MiB) at once, so workers are held back through flow control. Either
    way every block must arrive exactly once, and edge chunks (4100 is not a multiple
    of 64) are padded, not spilled."""
    x = rng.normal(0.0, 1.0, size=(4100, 2048))
    cases = [Case("x - mean(x, axis=0)", "/anom"), Case("x * 2", "/twice", dtype="f32")]
    inputs = {"x": Input("in.h5", "/x", x, chunks=[256, 2048], h5={"chunks": (64, 2048)})}
    env = {"DROVER_LOG": "drover=debug"}
    if writes == "driver":
        env["DROVER_DIRECT_WRITES"] = "0"
    t0 = time.monotonic()
    run, result, _ = run_workload(drover, tmp_path, inputs, cases, workers=3, env=env)
    wall = time.monotonic() - t0
    assert result["tasks_retried"] == 0, run.describe()
    assert _output_flags(run) == ({"true"} if writes == "workers" else set()), run.describe()
    # The writer's working time is counted, and lies within the run's.
    assert 0 < result["writer_busy_seconds"] < wall, (result["writer_busy_seconds"], wall)


def test_blocks_not_made_of_whole_output_chunks_go_to_the_driver(drover, tmp_path, rng):
    """Output chunks follow the input's HDF5 chunks (7 rows) while blocks are 10 rows:
    a chunk would be shared by two workers, so no worker writes into the file."""
    x = rng.normal(size=(40, 30))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[10, 30], h5={"chunks": (7, 30)})}
    run = _run(drover, tmp_path, inputs, "mapped", [Case("x + 1", "/plus")])
    assert _output_flags(run) == set(), run.describe()
