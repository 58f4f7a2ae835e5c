"""Task-job cases (issue 13): many small commands, one task per index, on two slots.

- tasks-true: 20,000 x `/bin/true` (the cost of a task: launch, exit, bookkeeping).
- tasks-10ms: 2,000 x `/bin/sleep 0.01` (short tasks: how close to 2 x 10 ms of
  useful time per 10 ms of wall time).

Contenders, each with two-way parallelism, each timed from submission until every
task has ended:

- drover: a server (`drover server start --dir SRV --bind 127.0.0.1:0`) and ONE worker
  (`drover worker --access SRV/access.toml --threads 2`) started once per case, outside
  any timed region (warm, as the dask LocalCluster is); timed: the whole command
  `drover submit --dir SRV --array 1-N --stdout none --stderr none --wait -- CMD`.
  Checked: exit 0 and `drover jobs --json` counting N tasks, N succeeded.
- xargs-P2: `seq N | xargs -P 2 -I{} CMD` (no shell: xargs forks and execs CMD once
  per input line, so exactly N processes of CMD; `{}` is not used). The process-spawn
  limit of this machine with two at a time. Checked: exit 0 (xargs exits 123 when any
  command failed), and once per case, untimed, the same run with `-t` (xargs prints
  each command line it runs to stderr) counts N command lines.
- dask.distributed: the run's warm LocalCluster (2 worker processes x 1 thread);
  timed: `client.gather(client.map(lambda i: subprocess.run(CMD).returncode, range(N),
  pure=False))`. Checked: N return codes, all 0.
- parsl-htex: Parsl's HighThroughputExecutor (max_workers_per_node=2,
  cores_per_worker=1) on a LocalProvider (one block, strategy "none": the block stays
  up between rounds), loaded once per case (warm); timed: N calls of a `bash_app`
  returning CMD, then every future's result. Checked: N results, all 0. Parsl's own
  debug log file is off (initialize_logging=False), in Parsl's favour.

Targets (from the issue): drover's throughput at least 0.7x that of `xargs -P 2`, and
drover at least 10x faster than dask and than Parsl. Reported, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import OUT_DIR, BenchError, kill_groups, log
from .memory import status_kb

CASES = {
    # case: (tasks, command); --quick runs a tenth of the tasks
    "tasks-true": (20_000, ["/bin/true"]),
    "tasks-10ms": (2_000, ["/bin/sleep", "0.01"]),
}
CONTENDERS = ["drover", "xargs-P2", "dask.distributed", "parsl-htex"]
SLOTS = 2   # drover worker threads, xargs -P, dask workers x threads, Parsl workers per node


def is_taskjob(case: str) -> bool:
    return case in CASES


def n_tasks(bench, case: str) -> int:
    n = CASES[case][0]
    return n // 10 if bench.tag == "quick" else n


def command_of(case: str) -> list[str]:
    return CASES[case][1]


def notes(bench, case: str) -> list[str]:
    if not is_taskjob(case):
        return []
    n, cmd = n_tasks(bench, case), " ".join(command_of(case))
    return [f"{n:,} x `{cmd}`, {SLOTS} at a time; drover: a warm server + 1 worker (--threads {SLOTS}), "
            f"timed `drover submit --array 1-{n} --stdout none --stderr none --wait -- {cmd}`; "
            f"xargs: `seq {n} | xargs -P {SLOTS} -I{{}} {cmd}`"]


# ---- per-case set-up and tear-down: the drover server and worker, the Parsl executor

class _State:
    """What one case keeps up: the drover server and worker, Parsl's DFK and app."""

    def __init__(self, case: str):
        self.case = case
        self.srv: Path = OUT_DIR / f"{case}-drover-server"
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.logs: dict[str, Path] = {}
        self.parsl_app = None
        self.parsl_loaded = False
        self.peaks: dict = {}


_state: dict[str, _State] = {}


def _log_tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty)"


def _drover_logs(st: _State) -> str:
    return "; ".join(f"{k} stderr: {_log_tail(p)}" for k, p in st.logs.items() if k.endswith("err"))


def _start_drover(bench, st: _State) -> None:
    import shutil

    shutil.rmtree(st.srv, ignore_errors=True)
    st.srv.mkdir(parents=True)
    drover = bench.args.drover
    for name in ("server.out", "server.err", "worker.out", "worker.err"):
        st.logs[name] = st.srv.parent / f"{st.case}-drover-{name}"
    t0 = time.perf_counter()
    with open(st.logs["server.out"], "wb") as o, open(st.logs["server.err"], "wb") as e:
        st.server = subprocess.Popen([drover, "server", "start", "--dir", str(st.srv), "--bind", "127.0.0.1:0"],
                                     stdin=subprocess.DEVNULL, stdout=o, stderr=e, start_new_session=True)
    access = st.srv / "access.toml"
    deadline = time.monotonic() + 30
    while "listening on" not in st.logs["server.err"].read_text(errors="replace"):
        if st.server.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"drover server did not start (exit {st.server.poll()}): {_drover_logs(st)}")
        time.sleep(0.05)
    if not access.exists():
        raise BenchError(f"drover server printed its address but {access} is missing: {_drover_logs(st)}")
    with open(st.logs["worker.out"], "wb") as o, open(st.logs["worker.err"], "wb") as e:
        st.worker = subprocess.Popen([drover, "worker", "--access", str(access), "--threads", str(SLOTS)],
                                     stdin=subprocess.DEVNULL, stdout=o, stderr=e, start_new_session=True)
    # warm: wait until the server sees the worker
    while True:
        if st.worker.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"drover worker did not join (exit {st.worker.poll()}): {_drover_logs(st)}")
        p = subprocess.run([drover, "status", "--dir", str(st.srv), "--json"], capture_output=True, text=True,
                           timeout=30)
        if p.returncode == 0:
            try:
                if len(json.loads(p.stdout).get("workers", [])) >= 1:
                    break
            except ValueError:
                pass
        time.sleep(0.1)
    log(f"{st.case}: drover server (pid {st.server.pid}) + 1 worker of {SLOTS} threads (pid {st.worker.pid}) "
        f"up in {time.perf_counter() - t0:.1f} s (not timed); folder {st.srv}")


def _stop_drover(bench, st: _State) -> None:
    procs = [p for p in (st.server, st.worker) if p is not None]
    for who, p in (("server", st.server), ("worker", st.worker)):
        if p is not None and p.poll() is None:
            kb = status_kb(p.pid)
            if kb:
                st.peaks[f"drover {who} peak RSS bytes"] = kb[0] * 1024
    try:
        if st.server is not None and st.server.poll() is None:
            subprocess.run([bench.args.drover, "server", "stop", "--dir", str(st.srv)], capture_output=True,
                           timeout=30)
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{st.case}: drover pid {p.pid} still running after `server stop`: killing its group")
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"{st.case}: drover server stop: {e}")
    finally:
        kill_groups(procs)


def _parsl_cmd(i: int, cmd: str) -> str:
    """The body of the Parsl bash_app: the command line to run (i only makes calls distinct)."""
    return cmd


def _start_parsl(bench, st: _State) -> None:
    import parsl
    from parsl import bash_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
    from parsl.providers import LocalProvider

    t0 = time.perf_counter()
    bindir = os.path.dirname(sys.executable)   # the venv's bin: interchange.py, process_worker_pool.py
    scripts = str(Path(__file__).resolve().parent.parent)   # so that workers can import benchlib
    htex = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=SLOTS,
        cores_per_worker=1,
        launch_cmd=DEFAULT_LAUNCH_CMD.replace("process_worker_pool.py",
                                              os.path.join(bindir, "process_worker_pool.py"), 1),
        interchange_launch_cmd=[os.path.join(bindir, "interchange.py")],
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                               worker_init=f"export PYTHONPATH={scripts}${{PYTHONPATH:+:$PYTHONPATH}}"),
    )
    config = Config(executors=[htex], run_dir=str(OUT_DIR / "parsl-runinfo"), strategy="none",
                    initialize_logging=False, retries=0)
    parsl.load(config)
    st.parsl_loaded = True
    st.parsl_app = bash_app(executors=["htex"])(_parsl_cmd)
    # warm: both workers up and running apps
    futs = [st.parsl_app(i, "/bin/true") for i in range(4 * SLOTS)]
    for f in futs:
        if f.result(timeout=120) != 0:
            raise BenchError("parsl warm-up bash_app returned non-zero")
    log(f"{st.case}: Parsl HighThroughputExecutor up ({SLOTS} workers per node, LocalProvider, "
        f"parsl {parsl.__version__}) in {time.perf_counter() - t0:.1f} s (not timed)")


def _stop_parsl(st: _State) -> None:
    if not st.parsl_loaded:
        return
    import parsl

    try:
        parsl.dfk().cleanup()
    except Exception as e:   # noqa: BLE001 - report, go on
        log(f"{st.case}: parsl cleanup: {e}")
    finally:
        parsl.clear()
        st.parsl_loaded = False


def setup(bench, case: str, names: list[str]) -> dict[str, str]:
    """Start what the case's contenders keep warm; {contender: error} for those that failed."""
    st = _state[case] = _State(case)
    errors = {}
    if "drover" in names:
        try:
            _start_drover(bench, st)
        except Exception as e:   # noqa: BLE001 - that contender is left out
            errors["drover"] = f"set-up: {type(e).__name__}: {e}"
            _stop_drover(bench, st)
    if "parsl-htex" in names:
        try:
            _start_parsl(bench, st)
        except Exception as e:   # noqa: BLE001
            errors["parsl-htex"] = f"set-up: {type(e).__name__}: {e}"
            _stop_parsl(st)
    if "dask.distributed" in names and bench.client is None:
        errors["dask.distributed"] = "no LocalCluster (--no-distributed?)"
    return errors


def teardown(bench, case: str) -> dict:
    """Stop the drover server and worker and Parsl; what was measured of them on the way."""
    st = _state.pop(case, None)
    if st is None:
        return {}
    try:
        _stop_parsl(st)
    finally:
        _stop_drover(bench, st)
    return dict(st.peaks)


# ---- one timed run of one contender

def _run_drover(bench, case: str) -> dict:
    st = _state[case]
    n, cmd = n_tasks(bench, case), command_of(case)
    if st.server is None or st.server.poll() is not None or st.worker is None or st.worker.poll() is not None:
        raise BenchError(f"drover server or worker is not running: {_drover_logs(st)}")
    argv = [bench.args.drover, "submit", "--dir", str(st.srv), "--array", f"1-{n}", "--stdout", "none",
            "--stderr", "none", "--wait", "--"] + cmd
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=bench.args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(argv)}` did not end in {bench.args.timeout:.0f} s; "
                         f"{_drover_logs(st)}") from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exit {p.returncode}: stdout {p.stdout.strip()!r}, stderr "
                         f"{p.stderr.strip()!r}; {_drover_logs(st)}")
    try:
        job = int(p.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        raise BenchError(f"`drover submit` printed no job id: {p.stdout!r}") from None
    q = subprocess.run([bench.args.drover, "jobs", "--dir", str(st.srv), "--json"], capture_output=True, text=True,
                       timeout=60)
    rows = [j for j in json.loads(q.stdout) if j.get("id") == job] if q.returncode == 0 else []
    if not rows:
        raise BenchError(f"`drover jobs --json` does not list job {job}: {q.stdout[-500:]!r} {q.stderr[-500:]!r}")
    row = rows[0]
    ok = row.get("tasks") == n and row.get("counts", {}).get("succeeded") == n and row.get("state") == "succeeded"
    if not ok:
        raise BenchError(f"drover job {job}: expected {n} tasks succeeded, got {row}")
    return {"seconds": wall, "tasks": n, "job": row, "submit_stderr": p.stderr.strip()}


def _xargs_argv(n: int, cmd: list[str], trace: bool = False) -> tuple[list[str], list[str]]:
    return ["seq", str(n)], ["xargs", "-P", str(SLOTS)] + (["-t"] if trace else []) + ["-I{}"] + cmd


def _run_xargs(bench, case: str, trace: bool = False) -> dict:
    n, cmd = n_tasks(bench, case), command_of(case)
    seq_argv, xargs_argv = _xargs_argv(n, cmd, trace)
    t0 = time.perf_counter()
    seq = subprocess.Popen(seq_argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        x = subprocess.run(xargs_argv, stdin=seq.stdout, capture_output=True, timeout=bench.args.timeout)
    finally:
        seq.stdout.close()
        seq.wait()
    wall = time.perf_counter() - t0
    if x.returncode != 0 or seq.returncode != 0:
        raise BenchError(f"`seq {n} | {' '.join(xargs_argv)}` exit {seq.returncode}/{x.returncode}: "
                         f"{x.stderr.decode(errors='replace')[-500:]}")
    r = {"seconds": wall, "tasks": n}
    if trace:
        r["traced_commands"] = sum(1 for ln in x.stderr.decode(errors="replace").splitlines()
                                   if ln.strip() == " ".join(cmd))
    return r


def _run_dask(bench, case: str) -> dict:
    from distributed import wait

    n, cmd = n_tasks(bench, case), command_of(case)
    t0 = time.perf_counter()
    futs = bench.client.map(lambda i, cmd=cmd: subprocess.run(cmd).returncode, range(n), pure=False)
    with bench.client.as_current():   # wait() looks up the current client
        done = wait(futs, timeout=bench.args.timeout)
    if done.not_done:
        bench.client.cancel(futs)
        raise BenchError(f"dask: {len(done.not_done)} of {n} tasks not done after {bench.args.timeout:.0f} s")
    codes = bench.client.gather(futs)
    wall = time.perf_counter() - t0
    del futs
    bad = sum(1 for c in codes if c != 0)
    if len(codes) != n or bad:
        raise BenchError(f"dask: {len(codes)} results, {bad} non-zero (want {n}, all 0)")
    return {"seconds": wall, "tasks": n}


def _run_parsl(bench, case: str) -> dict:
    st = _state[case]
    n, cmd = n_tasks(bench, case), command_of(case)
    line = " ".join(cmd)
    t0 = time.perf_counter()
    deadline = time.monotonic() + bench.args.timeout
    futs = [st.parsl_app(i, line) for i in range(n)]
    codes = [f.result(timeout=max(1.0, deadline - time.monotonic())) for f in futs]
    wall = time.perf_counter() - t0
    bad = sum(1 for c in codes if c != 0)
    if len(codes) != n or bad:
        raise BenchError(f"parsl: {len(codes)} results, {bad} non-zero (want {n}, all 0)")
    return {"seconds": wall, "tasks": n}


def run_one(bench, case: str, who: str) -> dict:
    try:
        if who == "drover":
            return _run_drover(bench, case)
        if who == "xargs-P2":
            return _run_xargs(bench, case)
        if who == "dask.distributed":
            return _run_dask(bench, case)
        if who == "parsl-htex":
            return _run_parsl(bench, case)
    except BenchError:
        raise
    except Exception as e:   # noqa: BLE001 - a failed contender, not a crashed harness
        raise BenchError(f"{who}: {type(e).__name__}: {e}") from e
    raise ValueError(who)


def check(bench, case: str, warm: dict) -> dict:
    """Every contender ran N tasks, all exit 0 (each run checks itself; these are the warm-up's)."""
    n, cmd = n_tasks(bench, case), command_of(case)
    checks = {}
    for who, r in warm.items():
        if who == "drover":
            c = r["job"]["counts"]
            checks["drover: tasks succeeded (drover jobs)"] = {
                "equal": r["job"]["tasks"] == n and c["succeeded"] == n, "tasks": r["job"]["tasks"],
                "counts": c}
        elif who == "xargs-P2":
            t = _run_xargs(bench, case, trace=True)   # untimed: the command lines xargs ran
            checks["xargs-P2: exit 0, commands run (-t)"] = {
                "equal": t["traced_commands"] == n, "commands": t["traced_commands"], "want": n}
        else:
            checks[f"{who}: return codes all 0"] = {"equal": r.get("tasks") == n, "tasks": r.get("tasks")}
    return checks


# ---- the report

def rate(res: dict, who: str) -> float | None:
    st = res.get("stats", {}).get(who)
    runs = res.get("runs", {}).get(who)
    if not st or not runs:
        return None
    return runs[0]["tasks"] / st["median"]


def note(case: str, res: dict, who: str) -> str:
    r = rate(res, who)
    return f"{res['runs'][who][0]['tasks']:,} tasks, {r:,.0f} tasks/s" if r else ""


def kept_up_line(res: dict) -> str | None:
    """The drover server's and worker's peak RSS over the case (read before they stopped)."""
    k = res.get("kept_up") or {}
    parts = [f"{w.removesuffix(' peak RSS bytes')} {b / (1 << 20):.1f} MiB" for w, b in k.items()]
    return "peak RSS over the case: " + ", ".join(parts) if parts else None


def summary(case: str, res: dict, add) -> dict:
    rates = {w: rate(res, w) for w in res.get("stats", {})}
    d = rates.get("drover")
    row = {"tasks_per_s": rates, "tasks": {w: r[0]["tasks"] for w, r in res.get("runs", {}).items() if r},
           "command": " ".join(command_of(case))}
    oks = []
    x = rates.get("xargs-P2")
    if d and x:
        oks.append(d / x >= 0.7)
        add(case, "drover / xargs-P2 (throughput)", f"{d / x:.2f}x", ">= 0.7x", oks[-1])
    for who in ("dask.distributed", "parsl-htex"):
        v = rates.get(who)
        if d and v:
            oks.append(d / v >= 10)
            add(case, f"{who} / drover", f"{d / v:.1f}x", ">= 10x", oks[-1])
    row["verdict"] = "MET" if oks and all(oks) else ("NOT MET" if False in oks else "n/a")
    return row
