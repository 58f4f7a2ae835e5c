"""Shared helpers for drover's end-to-end tests.

numpy + h5py are the independent oracle: every test writes its input data with
h5py, runs the real `drover` binary as a subprocess, reads the outputs back with
h5py and compares them against numpy evaluated on the inputs cast to float64.

The binary comes from the environment variable DROVER_BIN (a relative path is
resolved against the repository root); default: <repo>/target/release/drover.

Process hygiene: every drover process a test starts gets a session of its own
(start_new_session=True) and an environment variable DROVER_E2E_MARK whose value
identifies that run.  After each run the helper looks for processes that still
carry the mark (for example worker processes of an embedded cluster that were
not stopped) and kills them by pid, so the suite never leaves processes behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import h5py
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 120.0
MARK_VAR = "DROVER_E2E_MARK"
# One value per pytest session: every process started by this suite carries
# "<SESSION_MARK>:<run id>" in its environment.
SESSION_MARK = uuid.uuid4().hex


# --------------------------------------------------------------------------
# The binary


def drover_bin() -> Path:
    raw = os.environ.get("DROVER_BIN")
    if raw:
        p = Path(raw)
        if not p.is_absolute():
            p = REPO_ROOT / p
        return p
    return REPO_ROOT / "target" / "release" / "drover"


@pytest.fixture(scope="session")
def drover() -> Path:
    """Path of the drover binary; fails (not skips) every test when it is missing."""
    p = drover_bin()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(
            f"drover binary not found or not executable: {p} "
            "(build it with `cargo build --release` or set DROVER_BIN)",
            pytrace=False,
        )
    return p


# --------------------------------------------------------------------------
# Processes


def _marked_pids(mark: str) -> list[int]:
    """Pids of live processes whose initial environment contains MARK_VAR=<mark...>."""
    needle = f"{MARK_VAR}={mark}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(needle):
                # zombies have an empty environ, so anything here is alive
                found.append(pid)
                break
    return found


def kill_marked(mark: str) -> list[int]:
    """SIGKILL every live process carrying the mark; return their pids."""
    pids = _marked_pids(mark)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def marked_pids(mark: str) -> list[int]:
    """The live processes carrying the mark now (to wait for them by pid later)."""
    return _marked_pids(mark)


def _not_yet_dead(pid: int) -> bool:
    """Whether process `pid` still exists beyond a zombie. A process being torn down
    loses its environment (its memory) before its files and mappings are released, and
    a lock it held on a file (HDF5's flock) goes only with those: until then it may
    still hold one, though `_marked_pids` no longer sees it. Its main thread can be a
    zombie while its other threads are still exiting (they share the files): only a
    zombie without other threads is done."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X") or threads > 1


def wait_marked_gone(mark: str, timeout: float, known: Iterable[int] = ()) -> list[int]:
    """Poll until no process carries the mark and every process seen carrying it (and
    every pid of `known`, taken before a kill) has finished exiting; return the
    survivors at timeout."""
    deadline = time.monotonic() + timeout
    seen = set(known)
    while True:
        seen.update(_marked_pids(mark))
        left = sorted(p for p in seen if _not_yet_dead(p))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def new_mark() -> str:
    return f"{SESSION_MARK}:{uuid.uuid4().hex}"


def child_env(mark: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env[MARK_VAR] = mark
    env.setdefault("RUST_BACKTRACE", "1")
    if extra:
        env.update(extra)
    return env


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a process started with start_new_session=True, and its group."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            # the leader is gone, members of its group may not be
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@dataclasses.dataclass
class Run:
    args: list[str]
    rc: int
    stdout: str
    stderr: str
    leftover_pids: list[int]  # marked processes still alive after exit (then killed)
    timed_out: bool = False

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.args)}\nexit code: {self.rc}"
            f"{' (TIMED OUT)' if self.timed_out else ''}\n"
            f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
        )

    def json(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(
                f"--json stdout is not exactly one JSON object ({e})\n{self.describe()}"
            ) from None
        assert isinstance(obj, dict), f"--json output is not an object\n{self.describe()}"
        return obj


def run_drover(
    drover: Path,
    args: Sequence[str | os.PathLike],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    leftover_grace: float = 10.0,
) -> Run:
    """Run drover to completion in a session of its own; never leaves processes behind."""
    argv = [str(drover), *map(str, args)]
    mark = new_mark()
    # Files, not pipes: a leftover child holding a pipe open would make us wait
    # for it instead of noticing it.
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
            cwd=cwd,
            env=child_env(mark, env),
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:
                kill_group(proc, grace=2.0)
        leftovers = wait_marked_gone(mark, leftover_grace) if not timed_out else []
        kill_marked(mark)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    return Run(
        args=argv,
        rc=proc.returncode if not timed_out else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        leftover_pids=leftovers,
        timed_out=timed_out,
    )


@pytest.fixture(scope="session", autouse=True)
def _no_processes_left_behind():
    yield
    kill_marked(SESSION_MARK)


# --------------------------------------------------------------------------
# TOML writing (tomllib only reads)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError("no nan/inf in workloads")
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes (\" \\ \n \uXXXX) are valid TOML basic-string escapes
        return json.dumps(v, ensure_ascii=True)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def to_toml(doc: Mapping[str, Any]) -> str:
    """Serialise the subset of TOML used by workloads and access files.

    Top level: scalars/arrays, tables of tables (inputs.x) and arrays of tables
    (outputs)."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for k, v in doc.items():
        if isinstance(v, Mapping) or (
            isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v)
        ):
            tables.append((k, v))
        else:
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
    for k, v in tables:
        if isinstance(v, Mapping):
            scalars = {a: b for a, b in v.items() if not isinstance(b, Mapping)}
            subs = {a: b for a, b in v.items() if isinstance(b, Mapping)}
            if scalars or not subs:
                lines.append("")
                lines.append(f"[{toml_key(k)}]")
                lines += [f"{toml_key(a)} = {toml_value(b)}" for a, b in scalars.items()]
            for a, b in subs.items():
                lines.append("")
                lines.append(f"[{toml_key(k)}.{toml_key(a)}]")
                lines += [f"{toml_key(c)} = {toml_value(d)}" for c, d in b.items()]
        else:
            for item in v:
                lines.append("")
                lines.append(f"[[{toml_key(k)}]]")
                lines += [f"{toml_key(c)} = {toml_value(d)}" for c, d in item.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def write_workload(
    path: Path,
    inputs: Mapping[str, Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    doc: dict[str, Any] = dict(extra or {})
    if inputs:
        doc["inputs"] = {name: dict(spec) for name, spec in inputs.items()}
    if outputs:
        doc["outputs"] = [dict(o) for o in outputs]
    path.write_text(to_toml(doc))
    return path


# --------------------------------------------------------------------------
# Data


def write_h5(path: Path, datasets: Mapping[str, Any], mode: str = "a", file_kw: Mapping[str, Any] | None = None) -> Path:
    """Write datasets into an HDF5 file.

    datasets maps a dataset path to either an array or (array, create_dataset kwargs),
    e.g. {"/grp/x": (arr, {"chunks": (10, 7), "compression": "gzip", "shuffle": True})}.
    file_kw are h5py.File keywords (for example userblock_size).
    """
    with h5py.File(path, mode, **(file_kw or {})) as f:
        for name, spec in datasets.items():
            if isinstance(spec, tuple):
                arr, kw = spec
            else:
                arr, kw = spec, {}
            if name in f:
                del f[name]
            f.create_dataset(name, data=arr, **kw)
    return path


def read_h5(path: Path, dataset: str) -> tuple[np.ndarray, dict]:
    """Return (values, info) where info has the dataset's dtype, chunks and shape."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        info = {"dtype": ds.dtype, "chunks": ds.chunks, "shape": ds.shape}
        values = ds[()]
    return np.asarray(values), info


@pytest.fixture(scope="session", autouse=True)
def _tmpdir_inside_pytest(tmp_path_factory):
    """drover's embedded cluster keeps a private folder in TMPDIR and removes it when it
    ends, even on SIGTERM; a run killed with SIGKILL (as some tests do on purpose)
    cannot. TMPDIR points inside pytest's temporary tree, so nothing is left in /tmp."""
    d = tmp_path_factory.mktemp("tmpdir")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(d)
    yield
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


# --------------------------------------------------------------------------
# Oracle


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


ORACLE_FUNCS: dict[str, Callable] = {
    "sum": lambda a, axis=None, **kw: np.sum(a, axis=_axis(axis), **kw),
    "mean": lambda a, axis=None, **kw: np.mean(a, axis=_axis(axis), **kw),
    "min": lambda a, axis=None, **kw: np.min(a, axis=_axis(axis), **kw),
    "max": lambda a, axis=None, **kw: np.max(a, axis=_axis(axis), **kw),
    "var": lambda a, axis=None, **kw: np.var(a, axis=_axis(axis), **kw),
    "std": lambda a, axis=None, **kw: np.std(a, axis=_axis(axis), **kw),
    "abs": np.abs,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "sin": np.sin,
    "cos": np.cos,
}
# Every other operation drover knows has numpy's name and meaning (ops.rs, reduce.rs).
ORACLE_FUNCS.update({
    name: getattr(np, name)
    for name in (
        "add subtract multiply divide power remainder floor_divide less less_equal greater "
        "greater_equal equal not_equal logical_and logical_or logical_xor logical_not minimum maximum "
        "fmin fmax arctan2 hypot negative absolute square expm1 log10 log2 log1p tan arcsin arccos "
        "arctan sinh cosh tanh deg2rad rad2deg floor ceil trunc round sign isnan isinf isfinite "
        "where clip prod nansum nanmean nanmin nanmax nanprod count_nonzero any all pi e nan inf "
        "transpose moveaxis squeeze expand_dims nanvar nanstd argmin argmax nanargmin nanargmax"
    ).split()
})
ORACLE_FUNCS["norm"] = np.linalg.norm
# drover's histogram() is numpy's counts (without the edges numpy also returns).
ORACLE_FUNCS["histogram"] = lambda a, bins=10, range=None: np.histogram(a, bins=bins, range=range)[0]


def oracle(expr: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """numpy's float64 result of a drover expression.

    drover's expression language is a numpy-like subset of Python expression
    syntax (same precedence: ** binds tighter than unary minus, and is right
    associative), so Python's own evaluator with numpy functions is the oracle.
    """
    # No builtins but the import hook numpy's array methods (x.mean()) use inside.
    return np.asarray(oracle_natural(expr, inputs), dtype=np.float64)


def oracle_natural(expr: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """numpy's result of a drover expression in numpy's own dtype (inputs as float64,
    as drover computes): bool for comparisons, int64 for counts and indices."""
    ns: dict[str, Any] = {"__builtins__": {"__import__": __import__}}
    ns.update(ORACLE_FUNCS)
    for name, arr in inputs.items():
        ns[name] = np.asarray(arr).astype(np.float64)
    with np.errstate(all="ignore"):
        return np.asarray(eval(expr, ns))  # noqa: S307 - test-authored


# numpy's dtype names, as drover reports them
NUMPY_DTYPE_NAMES = {"float64": "f64", "float32": "f32", "int8": "i8", "int16": "i16", "int32": "i32",
                     "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64"}


def default_dtype(natural: np.ndarray) -> str:
    """drover's default output dtype for a result numpy gives in `natural`'s dtype."""
    if natural.dtype == np.bool_:
        return "bool"
    if np.issubdtype(natural.dtype, np.integer):
        return "i64"
    return "f64"


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    dtype: str = "f64",
    scale: float | None = None,
    atol: float | None = None,
    what: str = "",
) -> None:
    """rtol 1e-9 for f64 (1e-6 against the oracle cast to f32 for f32).

    An absolute tolerance relative to `scale` (the magnitude of the values the
    result was computed from) absorbs cancellation, e.g. x - mean(x) near 0."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != numpy's {expected.shape}"
    )
    if scale is None:
        finite = expected[np.isfinite(expected)]
        scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    dtype = NUMPY_DTYPE_NAMES.get(dtype, dtype)
    if dtype not in ("f32", "f64"):
        want = np.dtype("bool" if dtype == "bool" else dtype.replace("i", "int").replace("u", "uint"))
        assert actual.dtype == want, f"{what}: dtype {actual.dtype}, want {want}"
        np.testing.assert_array_equal(actual, expected.astype(want), err_msg=what)
        return
    if dtype == "f32":
        assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}, want float32"
        exp32 = expected.astype(np.float32)
        tol = 1e-6 * scale if atol is None else atol
        np.testing.assert_allclose(
            actual.astype(np.float64), exp32.astype(np.float64), rtol=1e-6, atol=tol,
            err_msg=what,
        )
    else:
        assert actual.dtype == np.float64, f"{what}: dtype {actual.dtype}, want float64"
        tol = 1e-12 * max(scale, 1e-300) if atol is None else atol
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=tol, err_msg=what)


# --------------------------------------------------------------------------
# Workload runner


@dataclasses.dataclass
class Case:
    """One output of a workload, with its expected (oracle) values."""

    expr: str
    dataset: str
    file: str = "out.h5"
    dtype: str | None = None  # None: leave the key out (default f64)
    atol: float | None = None

    def output_spec(self) -> dict[str, Any]:
        spec = {"expr": self.expr, "file": self.file, "dataset": self.dataset}
        if self.dtype is not None:
            spec["dtype"] = self.dtype
        return spec


@dataclasses.dataclass
class Input:
    file: str
    dataset: str
    data: np.ndarray  # values as stored (any dtype)
    chunks: list[int] | None = None  # workload `chunks`
    h5: dict | None = None  # create_dataset kwargs (HDF5 chunks, compression...)

    def spec(self) -> dict[str, Any]:
        s: dict[str, Any] = {"file": self.file, "dataset": self.dataset}
        if self.chunks is not None:
            s["chunks"] = list(self.chunks)
        return s


def check_json(result: dict, cases: Sequence[Case], workdir: Path, run: Run,
               dtypes: Mapping[str, str] | None = None) -> None:
    for key, typ in (("tasks_total", int), ("tasks_retried", int), ("bytes_read", int)):
        assert key in result, f"--json lacks {key!r}: {result}\n{run.describe()}"
        assert isinstance(result[key], typ) and not isinstance(result[key], bool), (
            f"--json {key!r} is not an int: {result[key]!r}"
        )
    assert "seconds" in result and isinstance(result["seconds"], (int, float)), result
    assert result["seconds"] >= 0
    assert result["tasks_total"] > 0, result
    assert result["tasks_retried"] >= 0, result
    assert result["bytes_read"] > 0, result
    outs = result.get("outputs")
    assert isinstance(outs, list), f"--json 'outputs' is not a list: {result}"
    by_target = {}
    for o in outs:
        for k in ("file", "dataset", "shape", "dtype"):
            assert k in o, f"--json output entry lacks {k!r}: {o}"
        f = Path(o["file"])
        if not f.is_absolute():
            f = workdir / f
        by_target[(os.path.realpath(f), "/" + o["dataset"].lstrip("/"))] = o
    assert len(outs) == len(cases), f"--json lists {len(outs)} outputs, workload has {len(cases)}"
    for c in cases:
        key = (os.path.realpath(workdir / c.file), "/" + c.dataset.lstrip("/"))
        assert key in by_target, f"--json outputs lack {key}: {outs}"
        o = by_target[key]
        want = c.dtype or (dtypes or {}).get(c.dataset, "f64")
        want = NUMPY_DTYPE_NAMES.get(want, want)  # drover reports its own names
        assert o["dtype"] == want, f"{c.expr!r}: dtype {o['dtype']}, want {want}"
        assert isinstance(o["shape"], list) and all(
            isinstance(n, int) and not isinstance(n, bool) for n in o["shape"]
        ), o


def run_workload(
    drover: Path,
    workdir: Path,
    inputs: Mapping[str, Input],
    cases: Sequence[Case],
    *,
    workers: int | None = 2,
    extra_args: Sequence[str] = (),
    check: bool = True,
    workload_name: str = "workload.toml",
    env: Mapping[str, str] | None = None,
    h5_file_kw: Mapping[str, Any] | None = None,
    write_inputs: bool = True,
) -> tuple[Run, dict | None, dict[str, np.ndarray]]:
    """Write inputs + workload into workdir, run `drover run --json`, compare every
    output with the oracle.  Returns (run, json, {dataset: values}).

    write_inputs=False: the test wrote the input files itself (Input.data is then only
    the oracle's copy of the values)."""
    workdir.mkdir(parents=True, exist_ok=True)
    per_file: dict[str, dict] = {}
    for inp in inputs.values():
        per_file.setdefault(inp.file, {})[inp.dataset] = (
            (inp.data, inp.h5) if inp.h5 else inp.data
        )
    for fname, dsets in per_file.items() if write_inputs else ():
        write_h5(workdir / fname, dsets, mode="a", file_kw=h5_file_kw)
    wl = write_workload(
        workdir / workload_name,
        {name: inp.spec() for name, inp in inputs.items()},
        [c.output_spec() for c in cases],
    )
    args = ["run", str(wl), "--json"]
    if workers is not None:
        args += ["--workers", str(workers)]
    args += list(extra_args)
    run = run_drover(drover, args, env=env)
    if not check:
        return run, None, {}
    assert run.rc == 0, f"drover run failed\n{run.describe()}"
    assert "panicked" not in run.stderr, run.describe()
    result = run.json()
    arrays = {n: inp.data for n, inp in inputs.items()}
    naturals = {c.dataset: oracle_natural(c.expr, arrays) for c in cases}
    dtypes = {c.dataset: c.dtype or default_dtype(naturals[c.dataset]) for c in cases}
    check_json(result, cases, workdir, run, dtypes)
    values = {}
    arrays = {n: inp.data for n, inp in inputs.items()}
    scale = max(
        [1.0] + [float(np.max(np.abs(a.astype(np.float64)))) for a in arrays.values() if a.size]
    )
    json_by_ds = {"/" + o["dataset"].lstrip("/"): o for o in result["outputs"]}
    for c in cases:
        expected = oracle(c.expr, arrays)
        got, info = read_h5(workdir / c.file, c.dataset)
        what = f"expr {c.expr!r} -> {c.file}:{c.dataset}"
        s = max(scale, float(np.max(np.abs(expected))) if expected.size else 0.0)
        assert_close(got, expected, dtype=dtypes[c.dataset], scale=s, atol=c.atol, what=what)
        if expected.ndim > 0:
            assert info["chunks"] is not None, f"{what}: output dataset is not chunked"
        o = json_by_ds.get("/" + c.dataset.lstrip("/"))
        if o is not None:
            assert list(o["shape"]) == list(expected.shape), (
                f"{what}: --json shape {o['shape']} != {list(expected.shape)}"
            )
        values[c.dataset] = got
    return run, result, values


def assert_refused(run: Run, quoted: Sequence[str], unwritten: Path, rc: int = 2, single: bool = True) -> str:
    """A refused (or failed) run: exit code `rc`, no panic, an `error: ` line (the only
    one when `single`) quoting every string of `quoted`, and `unwritten` not created.
    Returns that line."""
    errors = [l for l in run.stderr.splitlines() if l.startswith("error: ")]
    assert run.rc == rc, f"exit code {run.rc}, want {rc}\n{run.describe()}"
    assert errors and (len(errors) == 1 or not single), run.describe()
    assert "panicked" not in run.stderr, run.describe()
    line = errors[-1]
    for q in quoted:
        assert q in line, f"{q!r} not in {line!r}"
    assert not unwritten.exists(), f"{unwritten} was written by a refused run"
    return line


# --------------------------------------------------------------------------
# Files


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under root -> content hash ('dir' for directories)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            snap[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for fn in filenames:
            p = Path(dirpath) / fn
            snap[os.path.relpath(p, root)] = sha256(p) if p.is_file() else "special"
    return snap


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
    fail_fast: Callable[[], str | None] | None = None,
) -> Any:
    """Poll cond() until it returns a truthy value; fail with `what` at timeout.

    fail_fast() may return an error message to stop waiting early (e.g. the
    process we are waiting for has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if fail_fast is not None:
            msg = fail_fast()
            if msg:
                pytest.fail(f"{what}: {msg}", pytrace=False)
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def spawn_logged(drover: Path, args: Sequence[Any], logs: Path, name: str, env: Mapping[str, str]) -> subprocess.Popen:
    """drover ARGS in a session of its own, its output in logs/NAME.out and NAME.err
    (the caller kills its group: kill_group)."""
    with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
        return subprocess.Popen([str(drover), *map(str, args)], env=dict(env), stdout=out, stderr=err,
                                start_new_session=True)


def wait_for_access(server: subprocess.Popen, srv: Path, logs: Path, name: str = "server") -> Path:
    """The access file of `drover server start --dir SRV` once it exists."""
    access = srv / "access.toml"
    wait_for(access.exists, 30.0, f"{access}",
             fail_fast=lambda: (logs / f"{name}.err").read_text() if server.poll() is not None else None)
    return access


def iter_lines(text: str) -> Iterable[str]:
    return (line for line in text.splitlines())


# --------------------------------------------------------------------------
# Test order


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "loads_netcdf4: the module loads netCDF4-python, whose wheel brings its own HDF5 library; "
        "such modules run last (see pytest_collection_modifyitems)",
    )


def pytest_collection_modifyitems(config, items):
    """Modules that load netCDF4-python run after the others. Its wheel loads a second
    HDF5 library into this process; after that, h5py's HDF5 misbehaves for the rest of
    the session (hdf5plugin's blosc filter fails at dataset creation, chunk queries
    return -1), which broke test_filters when it ran after test_cf."""
    items.sort(key=lambda item: item.get_closest_marker("loads_netcdf4") is not None)
