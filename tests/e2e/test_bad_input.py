"""Bad input: exit code 2, a clear `error: ` line quoting the bad value, no panic,
and nothing written: no output file, no stray temporary file, inputs untouched.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest

from conftest import assert_refused, run_drover, snapshot, to_toml, write_h5

# strings that must appear in stderr; a tuple means "any one of these"
Quote = str | tuple[str, ...]


@dataclasses.dataclass
class Bad:
    quoted: list[Quote]
    workload: dict | str | None = None  # dict -> TOML, str -> raw text, None -> none
    args: list[str] | None = None  # default: run workload.toml --workers 2
    extra_args: list[str] = dataclasses.field(default_factory=list)
    outputs: list[str] = dataclasses.field(default_factory=lambda: ["out.h5"])
    mentions: list[str] = dataclasses.field(default_factory=list)  # case-insensitive
    setup: Callable[[Path], None] | None = None  # extra preparation of the work dir


def base() -> dict[str, Any]:
    return {
        "inputs": {"x": {"file": "in.h5", "dataset": "/x"}},
        "outputs": [{"expr": "x + 1", "file": "out.h5", "dataset": "/y"}],
    }


def with_(mod: Callable[[dict], None]) -> dict:
    doc = base()
    mod(doc)
    return doc


def make_inputs(work: Path) -> None:
    rng = np.random.default_rng(7)
    write_h5(
        work / "in.h5",
        {
            "/x": rng.normal(size=(3, 4)),
            "/y": rng.normal(size=(5,)),
            "/grp/x3": (rng.normal(size=(6, 5, 4)), {"chunks": (3, 5, 4)}),
            "/names": np.array(["alpha", "beta"], dtype=h5py.string_dtype()),
            "/fixed_names": np.array([b"ab", b"cd"], dtype="S2"),
            "/compound": np.array(
                [(1.0, 2), (3.0, 4)], dtype=[("a", "<f8"), ("b", "<i4")]
            ),
        },
    )
    (work / "afile").write_text("a regular file, not a directory\n")
    (work / "notes.h5").write_text("this is not an HDF5 file\n")


def _set(path: list, value):
    def mod(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mod


def _del(path: list):
    def mod(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mod


def _expr(e: str):
    return _set(["outputs", 0, "expr"], e)


def _two_inputs(doc):
    doc["inputs"]["y"] = {"file": "in.h5", "dataset": "/y"}


def _dup_outputs(file2: str):
    def mod(doc):
        doc["outputs"] = [
            {"expr": "x + 1", "file": "out.h5", "dataset": "/dup"},
            {"expr": "x * 2", "file": file2, "dataset": "/dup"},
        ]
    return mod


def _good_then_bad(doc):
    doc["outputs"] = [
        {"expr": "x + 1", "file": "out.h5", "dataset": "/good"},
        {"expr": "foo(x)", "file": "out2.h5", "dataset": "/bad"},
    ]


CASES: dict[str, Callable[[], Bad]] = {
    # files and datasets
    "missing_input_file": lambda: Bad(["nope.h5"], with_(_set(["inputs", "x", "file"], "nope.h5"))),
    "input_not_hdf5": lambda: Bad(["notes.h5"], with_(_set(["inputs", "x", "file"], "notes.h5"))),
    "missing_dataset": lambda: Bad(["/missing_ds"], with_(_set(["inputs", "x", "dataset"], "/missing_ds"))),
    "missing_group_in_dataset_path": lambda: Bad(
        ["/nogroup/x"], with_(_set(["inputs", "x", "dataset"], "/nogroup/x"))),
    "dataset_is_a_group": lambda: Bad(["/grp"], with_(_set(["inputs", "x", "dataset"], "/grp"))),
    "string_dataset_vlen": lambda: Bad(["/names"], with_(_set(["inputs", "x", "dataset"], "/names"))),
    "string_dataset_fixed": lambda: Bad(
        ["/fixed_names"], with_(_set(["inputs", "x", "dataset"], "/fixed_names"))),
    "compound_dataset": lambda: Bad(["/compound"], with_(_set(["inputs", "x", "dataset"], "/compound"))),
    # expressions
    "syntax_error": lambda: Bad(["x + * 2"], with_(_expr("x + * 2")), mentions=["column"]),
    "unbalanced_parenthesis": lambda: Bad(
        ["mean(x, axis=0"], with_(_expr("mean(x, axis=0")), mentions=["column"]),
    "unknown_function": lambda: Bad(["foo"], with_(_expr("foo(x)"))),
    "unknown_name": lambda: Bad(["zz_unknown"], with_(_expr("zz_unknown + 1"))),
    "unknown_keyword_argument": lambda: Bad(["axs"], with_(_expr("mean(x, axs=0)"))),
    "shapes_do_not_broadcast": lambda: Bad(
        ["(3, 4)", "(5,)"], with_(lambda d: (_two_inputs(d), _expr("x + y")(d)))),
    "axis_out_of_range": lambda: Bad(["3"], with_(_expr("mean(x, axis=3)")), mentions=["axis"]),
    "negative_axis_out_of_range": lambda: Bad(["-3"], with_(_expr("sum(x, axis=-3)")), mentions=["axis"]),
    "axis_tuple_out_of_range": lambda: Bad(["5"], with_(_expr("sum(x, axis=(0, 5))")), mentions=["axis"]),
    "duplicate_axis": lambda: Bad(["1"], with_(_expr("sum(x, axis=(1, 1))")), mentions=["axis"]),
    "non_integer_axis": lambda: Bad(["0.5"], with_(_expr("mean(x, axis=0.5)"))),
    "reduction_result_does_not_broadcast": lambda: Bad(
        ["(6, 5, 4)", "(6, 5)"],
        with_(lambda d: (_set(["inputs", "x", "dataset"], "/grp/x3")(d), _expr("x - mean(x, axis=2)")(d)))),
    "second_output_bad_first_not_written": lambda: Bad(
        ["foo"], with_(_good_then_bad), outputs=["out.h5", "out2.h5"]),
    # chunks
    "chunks_wrong_rank": lambda: Bad(
        [("[2, 2, 2]", "(2, 2, 2)")], with_(_set(["inputs", "x", "chunks"], [2, 2, 2])), mentions=["chunk"]),
    "chunks_zero": lambda: Bad(
        [("[0, 4]", "(0, 4)")], with_(_set(["inputs", "x", "chunks"], [0, 4])), mentions=["chunk"]),
    "chunks_negative": lambda: Bad(["-1"], with_(_set(["inputs", "x", "chunks"], [-1, 4])), mentions=["chunk"]),
    "chunks_not_a_list": lambda: Bad(
        [('"10"', "'10'", "`10`")], with_(_set(["inputs", "x", "chunks"], "10"))),
    # outputs
    "no_outputs": lambda: Bad([], with_(_del(["outputs"])), mentions=["output"]),
    "empty_outputs": lambda: Bad(
        [], '[inputs.x]\nfile = "in.h5"\ndataset = "/x"\n\noutputs = []\n', mentions=["output"]),
    "duplicate_output_target": lambda: Bad(["/dup"], with_(_dup_outputs("out.h5"))),
    "duplicate_output_target_spelled_differently": lambda: Bad(["/dup"], with_(_dup_outputs("./out.h5"))),
    "output_overwrites_input": lambda: Bad(
        ["in.h5"], with_(_set(["outputs", 0, "file"], "in.h5")), outputs=[]),
    "output_overwrites_input_spelled_differently": lambda: Bad(
        ["in.h5"], with_(_set(["outputs", 0, "file"], "./in.h5")), outputs=[]),
    "output_directory_missing": lambda: Bad(
        ["nodir"], with_(_set(["outputs", 0, "file"], "nodir/out.h5")), outputs=["nodir"]),
    "output_parent_is_a_file": lambda: Bad(
        ["afile"], with_(_set(["outputs", 0, "file"], "afile/out.h5")), outputs=[]),
    "output_dtype_unknown": lambda: Bad(["f16"], with_(_set(["outputs", 0, "dtype"], "f16"))),
    "output_missing_dataset_key": lambda: Bad(["dataset"], with_(_del(["outputs", 0, "dataset"]))),
    # the workload file itself
    "invalid_toml": lambda: Bad(["workload.toml"], '[inputs.x\nfile = "in.h5"\n'),
    "unknown_key_in_input": lambda: Bad(
        ["fiel"], with_(lambda d: d["inputs"]["x"].update({"fiel": "in.h5"}))),
    "unknown_key_in_output": lambda: Bad(
        ["exprr"], with_(lambda d: d["outputs"][0].update({"exprr": "x"}))),
    "unknown_top_level_key": lambda: Bad(["worker_count"], with_(lambda d: d.update({"worker_count": 3}))),
    "workload_file_missing": lambda: Bad(
        ["does_not_exist.toml"], None, args=["run", "does_not_exist.toml", "--workers", "2"]),
    # command line
    "workers_zero": lambda: Bad(["0"], base(), extra_args=["--workers", "0"], mentions=["workers"]),
    "workers_not_a_number": lambda: Bad(["two"], base(), extra_args=["--workers", "two"]),
    "connect_dir_without_access_file": lambda: Bad(
        ["no_server_here"], base(), args=["run", "workload.toml", "--connect", "no_server_here"]),
}


def _repeated(line: str, n: int = 24) -> str | None:
    """A stretch of `n` characters that occurs twice in `line` (a cause appended to a
    message that already quotes it), or None. Quoted values (paths of a file and of its
    folder share a prefix) are left out."""
    line = re.sub(r'"[^"]*"', '""', line)
    seen = set()
    for i in range(len(line) - n + 1):
        part = line[i : i + n]
        if part in seen:
            return part
        seen.add(part)
    return None


def _check(drover: Path, tmp_path: Path, bad: Bad) -> None:
    work = tmp_path / "work"
    work.mkdir()
    make_inputs(work)
    if bad.setup is not None:
        bad.setup(work)
    if isinstance(bad.workload, dict):
        (work / "workload.toml").write_text(to_toml(bad.workload))
    elif isinstance(bad.workload, str):
        (work / "workload.toml").write_text(bad.workload)
    if bad.args is not None:
        args = bad.args
    else:
        args = ["run", "workload.toml"]
        if not any(a == "--workers" for a in bad.extra_args):
            args += ["--workers", "2"]
    args = args + bad.extra_args
    before = snapshot(tmp_path)

    run = run_drover(drover, args, cwd=work)

    assert run.rc == 2, f"expected exit code 2 (bad input)\n{run.describe()}"
    assert "panicked" not in run.stderr, f"panic on bad input\n{run.describe()}"
    assert any(line.startswith("error: ") for line in run.stderr.splitlines()), (
        f"no line starting with 'error: ' on stderr\n{run.describe()}"
    )
    for line in run.stderr.splitlines():
        if line.startswith("error: "):
            assert _repeated(line) is None, (
                f"the error line says the same thing twice: {_repeated(line)!r}\n{run.describe()}"
            )
    for q in bad.quoted:
        alts = q if isinstance(q, tuple) else (q,)
        assert any(a in run.stderr for a in alts), (
            f"stderr does not quote the bad value {' or '.join(map(repr, alts))}\n{run.describe()}"
        )
    for m in bad.mentions:
        assert m.lower() in run.stderr.lower(), f"stderr does not mention {m!r}\n{run.describe()}"
    for out in bad.outputs:
        assert not (work / out).exists(), f"bad input left {out} behind\n{run.describe()}"
    after = snapshot(tmp_path)
    created = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not created, f"bad input created files: {created}\n{run.describe()}"
    assert not removed, f"bad input removed files: {removed}\n{run.describe()}"
    assert not changed, f"bad input changed files (inputs must stay untouched): {changed}"
    assert run.leftover_pids == [], f"processes left behind: {run.leftover_pids}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(drover, tmp_path, case):
    _check(drover, tmp_path, CASES[case]())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_output_directory_read_only(drover, tmp_path):
    def setup(work: Path) -> None:
        (work / "ro").mkdir()
        (work / "ro").chmod(0o555)

    bad = Bad(["ro/out.h5"], with_(_set(["outputs", 0, "file"], "ro/out.h5")),
              outputs=["ro/out.h5"], setup=setup)
    try:
        _check(drover, tmp_path, bad)
    finally:
        if (tmp_path / "work" / "ro").exists():
            (tmp_path / "work" / "ro").chmod(0o755)


def test_error_is_one_line_with_hint_not_a_backtrace(drover, tmp_path):
    """An `error: ` line, not Rust's Debug formatting of an error or a backtrace
    (the suite runs drover with RUST_BACKTRACE=1)."""
    bad = CASES["unknown_function"]()
    work = tmp_path / "work"
    work.mkdir()
    make_inputs(work)
    (work / "workload.toml").write_text(to_toml(bad.workload))
    run = run_drover(drover, ["run", "workload.toml", "--workers", "2"], cwd=work)
    assert run.rc == 2, run.describe()
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert lines and any(l.startswith("error: ") for l in lines), run.describe()
    assert "Error {" not in run.stderr, run.describe()
    assert "stack backtrace" not in run.stderr.lower(), run.describe()


@pytest.mark.parametrize("args,flag", [
    (["run", "{w}", "--connect", "{d}"], "--connect"),
    (["status", "--dir", "{d}"], "--dir"),
])
def test_a_missing_server_folder_names_the_flag_that_was_given(drover, tmp_path, args, flag):
    """The hint names the option of the command used (run takes --connect)."""
    write_h5(tmp_path / "x.h5", {"x": np.arange(4.0)})
    w = tmp_path / "w.toml"
    w.write_text(to_toml({"inputs": {"x": {"file": "x.h5", "dataset": "/x"}},
                          "outputs": [{"expr": "x", "file": "out.h5", "dataset": "/x"}]}))
    d = tmp_path / "no-such-server"
    run = run_drover(drover, [a.format(w=w, d=d) for a in args])
    line = assert_refused(run, [str(d / "access.toml"), f"pass the right {flag}"], tmp_path / "out.h5")
    other = "--dir" if flag == "--connect" else "--connect"
    assert f"right {other}" not in line, line


@pytest.mark.parametrize("args,env,quoted", [
    (["jobs", "--transport", "udp"], {}, ["'udp'", "auto, quic or tcp"]),
    (["jobs"], {"DROVER_TRANSPORT": "udp"}, ['DROVER_TRANSPORT="udp"', "auto, quic or tcp"]),
    (["jobs", "--server-address", "login1"], {}, ['--server-address "login1"', "HOST:PORT", "ssh -L"]),
    (["status"], {"DROVER_SERVER_ADDRESS": "127.0.0.1:0"}, ['DROVER_SERVER_ADDRESS "127.0.0.1:0"', "HOST:PORT"]),
    (["worker", "--access", "{d}/access.toml", "--transport", "sctp"], {}, ["'sctp'", "auto, quic or tcp"]),
], ids=["flag", "env", "address", "address-env", "worker"])
def test_a_bad_transport_or_server_address_is_refused(drover, tmp_path, args, env, quoted):
    """How to dial (issue 15): a transport other than auto/quic/tcp, or an address
    that is not HOST:PORT, from the command line or the environment, is refused in one
    line before anything is dialled."""
    d = tmp_path / "srv"
    run = run_drover(drover, [a.format(d=d) for a in args] + ["--dir", str(d)] * (args[0] != "worker"),
                     env=env, timeout=30)
    assert_refused(run, quoted, tmp_path / "out.h5")


@pytest.mark.parametrize("args,quoted", [
    (["--advertise", "203.0.113.9"], ['"203.0.113.9"', "not an address of this host", "--bind 0.0.0.0:PORT"]),
    (["--advertise", "no-such-host.invalid"], ["no-such-host.invalid", "none of the announced addresses", "--bind 0.0.0.0:PORT"]),
    (["--bind", "0.0.0.0:0", "--port", "7000"], ["--port", "--bind"]),
], ids=["not-this-host", "unresolvable", "bind-and-port"])
def test_a_server_is_not_started_on_an_address_this_host_lacks(drover, tmp_path, args, quoted):
    """Issue 16: the server listens only on what it announces, so an announced address
    that is not this host's (TEST-NET-3 here) or that nothing resolves is refused in one
    line naming it, with the way to listen on every address; nothing is written."""
    d = tmp_path / "srv"
    run = run_drover(drover, ["server", "start", "--dir", str(d), "--no-dashboard", *args], timeout=30)
    assert_refused(run, quoted, tmp_path / "out.h5")
    assert not d.exists(), "no server folder is left"
