"""Task jobs (issue 13) on real processes: `drover submit` of command-line tasks to a
running server (`--array`, `--each-line`, placeholders, logs, time limits, retries),
`drover jobs`, `drover tasks`, `drover wait` and `drover cancel`; a worker killed mid-task,
a task job next to an array workload, and the refusals of bad input.

Every test starts its own `drover server start --dir SRV` and workers of 2 threads
(`drover worker --access SRV/access.toml --threads 2`), all carrying the test's mark, and
kills them (and any task they left) in a finally block. Tasks that must be found in /proc
get `--env DROVER_TEST_TAG=<uuid>`: every process of theirs has it in its environment."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import select
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import (Case, Input, Run, assert_refused, child_env, kill_group, kill_marked, new_mark, run_drover,
                      run_workload, spawn_logged, to_toml, wait_for, wait_for_access)

# Seconds a client command (submit, jobs, tasks, cancel, status) may take.
CLI_TIMEOUT = 60.0
STATES = ("waiting", "running", "succeeded", "failed", "timeout", "cancelled")
MARKER = "--- drover"


# --------------------------------------------------------------------------
# Helpers


def json_list(run: Run) -> list[Any]:
    try:
        v = json.loads(run.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"--json stdout is not one JSON value ({e})\n{run.describe()}") from None
    assert isinstance(v, list), f"--json output is not a list\n{run.describe()}"
    return v


def job_id(run: Run) -> int:
    """The job id `drover submit` prints (a bare integer line, the first)."""
    lines = run.stdout.splitlines()
    assert lines and re.fullmatch(r"\d+", lines[0].strip()), f"submit printed no job id first\n{run.describe()}"
    return int(lines[0])


def tagged(tag: str) -> dict[int, dict[str, str]]:
    """Live processes (pid -> environment) with DROVER_TEST_TAG=<tag> in their environment.
    Zombies have an empty environ: a process waiting to be reaped counts as gone."""
    needle = f"DROVER_TEST_TAG={tag}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                items = fh.read().split(b"\0")
        except OSError:
            continue
        if needle in items:
            env = dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)
            found[int(entry)] = env
    return found


def tagged_task_ids(tag: str) -> set[int]:
    """The DROVER_TASK_ID of every live tagged process."""
    return {int(env["DROVER_TASK_ID"]) for env in tagged(tag).values() if env.get("DROVER_TASK_ID", "").isdigit()}


def wait_tagged_gone(tag: str, timeout: float) -> dict[int, dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        left = tagged(tag)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def states(tasks: dict[int, dict]) -> dict[int, str]:
    return {i: t["state"] for i, t in sorted(tasks.items())}


def assert_one_line_refusal(run: Run, quoted: list[str], base: Path) -> str:
    """Exit 2, one `error: ` line quoting every string of `quoted`, and nothing else on stderr."""
    line = assert_refused(run, quoted, base / "never-written")
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert lines == [line], f"more than one line on stderr\n{run.describe()}"
    return line


@dataclasses.dataclass
class Cluster:
    """A server in `srv` and its workers; every process carries `mark`."""

    drover: Path
    srv: Path
    logs: Path
    mark: str
    server: subprocess.Popen
    workers: list[subprocess.Popen] = dataclasses.field(default_factory=list)

    @property
    def access(self) -> Path:
        return self.srv / "access.toml"

    def add_worker(self, threads: int = 2) -> subprocess.Popen:
        name = f"worker{len(self.workers)}"
        p = spawn_logged(self.drover, ["worker", "--access", self.access, "--threads", threads], self.logs, name,
                         child_env(self.mark))
        self.workers.append(p)
        return p

    def log_tail(self) -> str:
        parts = []
        for f in sorted(self.logs.glob("*.err")):
            parts.append(f"--- {f.name} ---\n{f.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def _server_gone(self) -> str | None:
        if self.server.poll() is not None:
            return f"the server exited ({self.server.returncode})\n{self.log_tail()}"
        return None

    def cli(self, *args: Any, timeout: float = CLI_TIMEOUT) -> Run:
        return run_drover(self.drover, args, timeout=timeout)

    def status(self) -> dict:
        r = self.cli("status", "--dir", self.srv, "--json")
        assert r.rc == 0, r.describe()
        return r.json()

    def wait_workers(self, n: int, timeout: float = 60.0) -> None:
        wait_for(lambda: len(self.status()["workers"]) >= n, timeout, f"{n} workers connected", interval=0.2,
                 fail_fast=self._server_gone)

    def submit(self, *opts: Any, cmd: list[Any], timeout: float = CLI_TIMEOUT) -> Run:
        return self.cli("submit", "--dir", self.srv, *opts, "--", *cmd, timeout=timeout)

    def submit_ok(self, *opts: Any, cmd: list[Any], timeout: float = CLI_TIMEOUT) -> int:
        """Submit, expect exit 0 (with --wait: every task succeeded), return the job id."""
        r = self.submit(*opts, cmd=cmd, timeout=timeout)
        assert r.rc == 0, f"{r.describe()}\n{self.log_tail()}"
        if "--wait" not in opts:
            assert len(r.stdout.splitlines()) == 1, f"submit prints one line, the job id\n{r.describe()}"
        return job_id(r)

    def tasks(self, job: int, state: str | None = None) -> list[dict]:
        args: list[Any] = ["tasks", job, "--dir", self.srv, "--json"]
        if state is not None:
            args += ["--state", state]
        r = self.cli(*args)
        assert r.rc == 0, r.describe()
        return json_list(r)

    def by_id(self, job: int) -> dict[int, dict]:
        tasks = self.tasks(job)
        by = {int(t["id"]): t for t in tasks}
        assert len(by) == len(tasks), f"task ids listed twice: {[t['id'] for t in tasks]}"
        return by

    def jobs(self) -> list[dict]:
        r = self.cli("jobs", "--dir", self.srv, "--json")
        assert r.rc == 0, r.describe()
        return json_list(r)

    def job(self, job: int) -> dict:
        jobs = self.jobs()
        found = [j for j in jobs if int(j["id"]) == job]
        assert len(found) == 1, f"job {job} in drover jobs --json: {jobs}"
        return found[0]

    def wait(self, *jobs: int, timeout: float = 120.0) -> Run:
        return self.cli("wait", *jobs, "--dir", self.srv, timeout=timeout)

    def cancel(self, job: int, *opts: Any) -> None:
        r = self.cli("cancel", job, *opts, "--dir", self.srv)
        assert r.rc == 0, f"{r.describe()}\n{self.log_tail()}"

    def wait_tasks(self, job: int, cond: Callable[[dict[int, dict]], bool], timeout: float, what: str) -> dict[int, dict]:
        """Poll `drover tasks JOB --json` until cond(tasks by id) holds; return those tasks."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.by_id(job)
            if cond(tasks):
                return tasks
            gone = self._server_gone()
            if gone:
                pytest.fail(f"{what}: {gone}", pytrace=False)
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}; task states: {states(tasks)}\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.2)

    def task_log(self, job: int, task: int, stream: str) -> Path:
        """The default log of a task: SRV/jobs/JOB/TASK.out or .err."""
        return self.srv / "jobs" / str(job) / f"{task}.{stream}"


@contextlib.contextmanager
def cluster(drover: Path, base: Path, workers: int = 1, threads: int = 2) -> Iterator[Cluster]:
    """`drover server start --dir BASE/srv` and `workers` workers of `threads` threads,
    connected before the body runs; the server is stopped after a body that passed, and
    every process is killed in any case."""
    mark = new_mark()
    srv, logs = base / "srv", base / "logs"
    logs.mkdir(parents=True)
    server = spawn_logged(drover, ["server", "start", "--dir", srv], logs, "server", child_env(mark))
    c = Cluster(drover, srv, logs, mark, server)
    try:
        wait_for_access(server, srv, logs)
        for _ in range(workers):
            c.add_worker(threads)
        if workers:
            c.wait_workers(workers)
        yield c
        if server.poll() is None:  # (a test may have killed it on purpose)
            stop = run_drover(drover, ["server", "stop", "--dir", srv], timeout=CLI_TIMEOUT)
            assert stop.rc == 0, f"{stop.describe()}\n{c.log_tail()}"
            assert server.wait(timeout=30) == 0, c.log_tail()
    finally:
        for p in [server, *c.workers]:
            kill_group(p)
        kill_marked(mark)


# --------------------------------------------------------------------------
# Arrays, entries, logs, options


def test_an_array_of_a_thousand_tasks_runs_each_index_once(drover, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with cluster(drover, tmp_path, workers=2) as c:
        job = c.submit_ok("--array", "1-1000", "--wait",
                          cmd=["sh", "-c", f"echo $DROVER_TASK_ID > {shlex.quote(str(out))}/{{task}}.txt"],
                          timeout=600)
        files = {p.name: p.read_text() for p in out.iterdir()}
        assert sorted(files) == sorted(f"{i}.txt" for i in range(1, 1001)), f"{len(files)} files"
        wrong = {n: v for n, v in files.items() if v != f"{n[:-4]}\n"}
        assert not wrong, f"files not holding their own index: {dict(list(wrong.items())[:5])}"

        j = c.job(job)
        assert (j["kind"], j["state"], j["tasks"]) == ("tasks", "succeeded", 1000), j
        assert j["counts"] == {s: (1000 if s == "succeeded" else 0) for s in STATES}, j

        tasks = c.tasks(job)
        assert len(tasks) == 1000
        assert sorted(int(t["id"]) for t in tasks) == list(range(1, 1001))
        worker_ids = {w["id"] for w in c.status()["workers"]}
        for t in tasks:
            assert t["state"] == "succeeded" and t["exit_code"] == 0 and t["signal"] is None, t
            assert isinstance(t["worker"], int) and t["worker"] in worker_ids, t
            assert isinstance(t["host"], str) and t["host"], t
            assert isinstance(t["seconds"], (int, float)) and t["seconds"] >= 0, t
            assert isinstance(t["started"], (int, float)) and t["started"] >= 0, t
            assert t["requeues"] == 0, t
        assert len({t["worker"] for t in tasks}) == 2, "both workers ran tasks of a 1000-task array"
        assert [t["id"] for t in c.tasks(job, state="failed")] == []
        assert len(c.tasks(job, state="succeeded")) == 1000
        w = c.wait(job)
        assert w.rc == 0, w.describe()


def test_each_line_gives_every_task_its_entry_and_default_logs(drover, tmp_path):
    entries = ["alpha", "two words", "/data/run 7/file.nc", "x=1,y=2", "last"]
    lines = tmp_path / "entries.txt"
    lines.write_text("\n".join(entries) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    script = ('printf "%s\\n%s\\n%s\\n" "$DROVER_ENTRY" "$1" "$DROVER_JOB_ID" > "$2"; '
              'echo "stdout of $DROVER_TASK_ID"; echo "stderr of $DROVER_TASK_ID" >&2')
    with cluster(drover, tmp_path) as c:
        r = c.submit("--each-line", lines, "--json",
                     cmd=["sh", "-c", script, "sh", "{entry}", f"{out}/{{job}}-{{task}}.txt"])
        assert r.rc == 0, r.describe()
        obj = r.json()
        assert set(obj) >= {"job", "tasks"} and obj["tasks"] == 5, obj
        job = int(obj["job"])
        w = c.wait(job)
        assert w.rc == 0, f"{w.describe()}\n{c.log_tail()}"

        for i, e in enumerate(entries):
            f = out / f"{job}-{i}.txt"
            assert f.exists(), f"task {i}: no {f.name} ({sorted(p.name for p in out.iterdir())})"
            assert f.read_text() == f"{e}\n{e}\n{job}\n", f"task {i}: DROVER_ENTRY / {{entry}} / DROVER_JOB_ID"
            assert c.task_log(job, i, "out").read_text() == f"stdout of {i}\n"
            assert c.task_log(job, i, "err").read_text() == f"stderr of {i}\n"
        tasks = c.by_id(job)
        assert sorted(tasks) == [0, 1, 2, 3, 4], "the trailing newline makes no sixth task"
        assert {i: t["entry"] for i, t in tasks.items()} == dict(enumerate(entries))
        assert all(t["state"] == "succeeded" for t in tasks.values()), states(tasks)


def test_options_name_cwd_env_logs_cores_and_index_lists(drover, tmp_path):
    """--name shows in drover jobs; --priority and --cores are accepted; --cwd, --env K=V
    (twice, a value with '='), a --stdout template and --stderr none; an --array list
    with a step makes exactly those task ids."""
    work = tmp_path / "work"
    work.mkdir()
    logdir = tmp_path / "tasklogs"
    script = ('pwd -P > where-$DROVER_TASK_ID; echo "$GREETING|$OTHER|$DROVER_JOB_ID|$DROVER_TASK_ID"; '
              'echo to-stderr >&2')
    with cluster(drover, tmp_path) as c:
        job = c.submit_ok("--name", "nightly-report", "--priority", "5", "--cores", "2", "--cwd", work,
                          "--env", "GREETING=hello world", "--env", "OTHER=x=y", "--array", "2,5,9-11:2",
                          "--stdout", f"{logdir}/{{job}}-{{task}}.log", "--stderr", "none",
                          cmd=["sh", "-c", script])
        w = c.wait(job)
        assert w.rc == 0, f"{w.describe()}\n{c.log_tail()}"
        ids = [2, 5, 9, 11]
        assert sorted(c.by_id(job)) == ids
        j = c.job(job)
        assert (j["name"], j["kind"], j["state"], j["tasks"]) == ("nightly-report", "tasks", "succeeded", 4), j
        for i in ids:
            assert (work / f"where-{i}").read_text().strip() == os.path.realpath(work), "--cwd"
            log = logdir / f"{job}-{i}.log"
            assert log.read_text() == f"hello world|x=y|{job}|{i}\n", "--stdout template, stderr discarded"
            assert not c.task_log(job, i, "err").exists(), "--stderr none writes no log"
            assert not c.task_log(job, i, "out").exists(), "--stdout elsewhere writes no default log"


# --------------------------------------------------------------------------
# How tasks end


def test_exit_codes_signals_and_a_missing_program(drover, tmp_path):
    with cluster(drover, tmp_path) as c:
        r = c.submit("--array", "0-5", "--wait", cmd=["sh", "-c", "exit $DROVER_TASK_ID"], timeout=120)
        assert r.rc == 1, f"--wait with failed tasks exits 1\n{r.describe()}"
        job = job_id(r)
        tasks = c.by_id(job)
        assert sorted(tasks) == list(range(6))
        assert (tasks[0]["state"], tasks[0]["exit_code"], tasks[0]["signal"]) == ("succeeded", 0, None), tasks[0]
        for i in range(1, 6):
            assert (tasks[i]["state"], tasks[i]["exit_code"], tasks[i]["signal"]) == ("failed", i, None), tasks[i]
        failed = c.tasks(job, state="failed")
        assert sorted(int(t["id"]) for t in failed) == [1, 2, 3, 4, 5]
        assert all(t["state"] == "failed" for t in failed)
        assert [int(t["id"]) for t in c.tasks(job, state="succeeded")] == [0]
        assert c.tasks(job, state="timeout") == []
        j = c.job(job)
        assert j["state"] == "failed" and j["counts"]["succeeded"] == 1 and j["counts"]["failed"] == 5, j

        ok = c.submit_ok("--wait", cmd=["true"])
        assert c.wait(ok).rc == 0
        both = c.wait(ok, job)
        assert both.rc == 1, f"wait on a good and a failed job\n{both.describe()}"

        r = c.submit("--wait", cmd=["sh", "-c", "kill -9 $$"], timeout=120)
        assert r.rc == 1, r.describe()
        (t,) = c.tasks(job_id(r))
        assert (t["state"], t["exit_code"], t["signal"]) == ("failed", None, 9), t

        program = f"drover-e2e-no-such-program-{uuid.uuid4().hex[:8]}"
        r = c.submit("--wait", cmd=[program, "--flag"], timeout=120)
        assert r.rc == 1, r.describe()
        missing = job_id(r)
        (t,) = c.tasks(missing)
        assert (t["state"], t["exit_code"], t["signal"]) == ("failed", 127, None), t
        err = c.task_log(missing, int(t["id"]), "err")
        assert err.exists() and program in err.read_text(), f"{err}: {err.read_text() if err.exists() else 'missing'}"


def test_wait_as_completed_reports_each_task_as_it_finishes(drover, tmp_path):
    go = tmp_path / "go"
    # Held until `go` exists, then task 1 ends at once, task 2 after 2 s, task 3 after 4 s.
    script = (f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done; "
              "sleep $(( (DROVER_TASK_ID - 1) * 2 )); exit $(( DROVER_TASK_ID % 2 ))")
    with cluster(drover, tmp_path, workers=2) as c:
        job = c.submit_ok("--array", "1-3", cmd=["sh", "-c", script])
        proc = subprocess.Popen([str(drover), "wait", str(job), "--dir", str(c.srv), "--as-completed", "--json"],
                                env=child_env(c.mark), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            time.sleep(1.0)
            go.touch()
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "no line from wait --as-completed within 60 s of the first task's end"
            first = proc.stdout.readline()
            assert proc.poll() is None, "wait --as-completed printed the first task only when all had ended"
            rest, err = proc.communicate(timeout=120)
        finally:
            kill_group(proc)
        assert proc.returncode == 1, f"a task failed: exit 1\n{first}{rest}\n{err}"
        lines = [json.loads(l) for l in (first + rest).splitlines() if l.strip()]
        assert [int(l["id"]) for l in lines] == [1, 2, 3], lines
        for l in lines:
            assert int(l["job"]) == job and l["signal"] is None, l
        assert [(l["state"], l["exit_code"]) for l in lines] == [("failed", 1), ("succeeded", 0), ("failed", 1)]


def test_a_time_limit_stops_the_whole_process_group(drover, tmp_path):
    """The task and its background child ignore SIGTERM: both are gone after the limit."""
    tag = uuid.uuid4().hex
    with cluster(drover, tmp_path) as c:
        started = time.monotonic()
        job = c.submit_ok("--time-limit", "2s", "--env", f"DROVER_TEST_TAG={tag}",
                          cmd=["sh", "-c", 'trap "" TERM; sleep 60 & sleep 60; wait'])
        wait_for(lambda: len(tagged(tag)) >= 2, 30, "the task's processes (found by their tag)")
        tasks = c.wait_tasks(job, lambda ts: all(t["state"] not in ("waiting", "running") for t in ts.values()),
                             40, "the task to end at its time limit")
        took = time.monotonic() - started
        (t,) = tasks.values()
        assert (t["state"], t["exit_code"]) == ("timeout", None), t
        assert took < 20, f"a 2 s limit ended the task only after {took:.1f} s"
        assert 1.5 <= t["seconds"] < 15, t
        left = wait_tagged_gone(tag, 5)
        assert not left, f"processes of the timed-out task survive: {sorted(left)}"
        j = c.job(job)
        assert j["counts"]["timeout"] == 1 and j["state"] == "failed", j
        w = c.wait(job)
        assert w.rc == 1, w.describe()


# --------------------------------------------------------------------------
# Cancel


def test_cancel_kills_the_running_task_and_its_children(drover, tmp_path):
    tag = uuid.uuid4().hex
    with cluster(drover, tmp_path) as c:
        job = c.submit_ok("--env", f"DROVER_TEST_TAG={tag}", cmd=["sh", "-c", "sleep 300 & sleep 300; wait"])
        c.wait_tasks(job, lambda ts: [t["state"] for t in ts.values()] == ["running"], 30, "the task running")
        wait_for(lambda: len(tagged(tag)) >= 2, 30, "both sleeps of the task (found by their tag)")
        assert c.job(job)["state"] == "running"
        c.cancel(job)
        left = wait_tagged_gone(tag, 20)
        assert not left, f"processes of the cancelled task survive: {sorted(left)}"
        tasks = c.wait_tasks(job, lambda ts: all(t["state"] == "cancelled" for t in ts.values()), 20,
                             "the task cancelled")
        (t,) = tasks.values()
        assert t["exit_code"] is None, t
        j = c.job(job)
        assert j["state"] == "cancelled" and j["counts"]["cancelled"] == 1, j
        w = c.wait(job)
        assert w.rc == 1, w.describe()


def test_cancel_some_tasks_then_the_job(drover, tmp_path):
    """Six tasks on 2 workers x 2 threads: four run, two wait. Cancelling one running and
    one waiting task stops only that one's processes and frees its slot; cancelling the
    job then stops the rest."""
    tag = uuid.uuid4().hex
    with cluster(drover, tmp_path, workers=2) as c:
        job = c.submit_ok("--array", "1-6", "--env", f"DROVER_TEST_TAG={tag}", cmd=["sh", "-c", "sleep 300"])
        tasks = c.wait_tasks(job, lambda ts: sum(t["state"] == "running" for t in ts.values()) == 4, 60,
                             "four tasks running")
        running = sorted(i for i, t in tasks.items() if t["state"] == "running")
        waiting = sorted(i for i, t in tasks.items() if t["state"] == "waiting")
        assert len(waiting) == 2, states(tasks)
        wait_for(lambda: tagged_task_ids(tag) >= set(running), 30, f"processes of tasks {running}")
        victim, skipped = running[0], waiting[0]
        c.cancel(job, "--tasks", f"{victim},{skipped}")

        c.wait_tasks(job, lambda ts: ts[victim]["state"] == "cancelled" and ts[skipped]["state"] == "cancelled", 20,
                     f"tasks {victim} and {skipped} cancelled")
        wait_for(lambda: victim not in tagged_task_ids(tag), 20, f"task {victim}'s process gone")
        # the freed slot goes to the task still waiting
        tasks = c.wait_tasks(job, lambda ts: ts[waiting[1]]["state"] == "running", 30,
                             f"task {waiting[1]} running in the freed slot")
        for i in running[1:]:
            assert tasks[i]["state"] == "running", states(tasks)
        assert tagged_task_ids(tag) >= set(running[1:]), "the other tasks were left alone"
        assert skipped not in tagged_task_ids(tag), "a cancelled waiting task never starts"
        j = c.job(job)
        assert j["state"] == "running" and j["counts"]["cancelled"] == 2 and j["counts"]["running"] == 4, j

        c.cancel(job)
        left = wait_tagged_gone(tag, 20)
        assert not left, f"processes survive the job's cancel: {sorted(left)}"
        tasks = c.wait_tasks(job, lambda ts: all(t["state"] == "cancelled" for t in ts.values()), 20,
                             "every task cancelled")
        assert sorted(tasks) == [1, 2, 3, 4, 5, 6]
        j = c.job(job)
        assert j["state"] == "cancelled" and j["counts"]["cancelled"] == 6, j
        w = c.wait(job)
        assert w.rc == 1, w.describe()


# --------------------------------------------------------------------------
# Retries and lost workers


def test_retries_append_to_the_logs_after_a_marker(drover, tmp_path):
    script = ('n=$(cat "$COUNTER" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$COUNTER"; '
              'echo "try $n"; echo "err $n" >&2; [ $n -ge 3 ]')
    with cluster(drover, tmp_path) as c:
        counter = tmp_path / "count"
        job = c.submit_ok("--max-retries", "2", "--env", f"COUNTER={counter}", "--wait", cmd=["sh", "-c", script],
                          timeout=120)
        (t,) = c.tasks(job)
        assert (t["state"], t["exit_code"]) == ("succeeded", 0), t
        assert counter.read_text().strip() == "3", "succeeded on the third try"
        for stream, word in (("out", "try"), ("err", "err")):
            lines = c.task_log(job, int(t["id"]), stream).read_text().splitlines()
            assert len(lines) == 5, f".{stream}: {lines}"
            assert lines[0::2] == [f"{word} 1", f"{word} 2", f"{word} 3"], f".{stream}: {lines}"
            assert all(l.startswith(MARKER) for l in lines[1::2]), f".{stream}: {lines}"

        # one retry is not enough: failed after two tries
        counter2 = tmp_path / "count2"
        r = c.submit("--max-retries", "1", "--env", f"COUNTER={counter2}", "--wait", cmd=["sh", "-c", script],
                     timeout=120)
        assert r.rc == 1, r.describe()
        (t,) = c.tasks(job_id(r))
        assert (t["state"], t["exit_code"]) == ("failed", 1), t
        assert counter2.read_text().strip() == "2"


def test_tasks_of_a_worker_killed_mid_task_run_again_elsewhere(drover, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    script = f'sleep 5; echo "$DROVER_WORKER_ID" > {shlex.quote(str(out))}/{{task}}'
    with cluster(drover, tmp_path, workers=2) as c:
        job = c.submit_ok("--array", "1-4", cmd=["sh", "-c", script])
        tasks = c.wait_tasks(job, lambda ts: any(t["state"] == "running" and t["worker"] is not None
                                                 for t in ts.values()), 30, "a task running")
        victim_id = next(t["worker"] for t in tasks.values() if t["state"] == "running" and t["worker"] is not None)
        pids = {w["id"]: w["pid"] for w in c.status()["workers"]}
        assert victim_id in pids, f"worker {victim_id} not in drover status: {pids}"
        victim = next((p for p in c.workers if p.pid == pids[victim_id]), None)
        assert victim is not None, f"pid {pids[victim_id]} is none of the workers started"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)

        w = c.wait(job, timeout=240)
        assert w.rc == 0, f"{w.describe()}\n{c.log_tail()}"
        tasks = c.by_id(job)
        assert all(t["state"] == "succeeded" for t in tasks.values()), states(tasks)
        assert sum(t["requeues"] for t in tasks.values()) >= 1, tasks
        for i, t in tasks.items():
            if t["requeues"]:
                assert t["worker"] != victim_id, f"task {i} requeued but recorded on the lost worker: {t}"
            f = out / str(i)
            assert f.exists(), f"task {i} wrote nothing"
            # the run that counted wrote last (the killed worker's orphan ended earlier)
            assert f.read_text().strip() == str(t["worker"]), (i, f.read_text(), t)
        assert c.job(job)["state"] == "succeeded"
        assert all(p.poll() is None for p in c.workers if p is not victim), "the other worker carried on"


# --------------------------------------------------------------------------
# Next to an array workload


def test_a_task_job_and_an_array_workload_at_once(drover, tmp_path, rng):
    x = rng.normal(10, 3, size=(240, 50))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[24, 50], h5={"chunks": (24, 50)})}
    cases = [Case("sum(x ** 2, axis=1)", "/s"), Case("sin(x) * 2 + 1", "/y")]
    with cluster(drover, tmp_path / "cluster", workers=2) as c:
        job = c.submit_ok("--array", "1-20", cmd=["sh", "-c", "sleep 0.2"])
        run, _, _ = run_workload(drover, tmp_path / "wl", inputs, cases, workers=None,
                                 extra_args=["--connect", str(c.srv)])
        assert run.rc == 0
        w = c.wait(job)
        assert w.rc == 0, f"{w.describe()}\n{c.log_tail()}"
        jobs = c.jobs()
        mine = [j for j in jobs if int(j["id"]) == job]
        assert len(mine) == 1, jobs
        assert (mine[0]["kind"], mine[0]["state"]) == ("tasks", "succeeded"), mine
        assert mine[0]["counts"]["succeeded"] == 20, mine
        arrays = [j for j in jobs if j["kind"] == "array"]
        assert arrays and all(j["state"] == "succeeded" for j in arrays), jobs


# --------------------------------------------------------------------------
# Bad input


@pytest.fixture(scope="module")
def refusing(drover, tmp_path_factory):
    """A server with one worker of 2 threads (no adaptive pool) for the refusals."""
    with cluster(drover, tmp_path_factory.mktemp("refusals"), workers=1) as c:
        yield c


@pytest.mark.parametrize("opts, cmd, quoted", [
    pytest.param(["--array", "5-1"], ["true"], ['"5-1"'], id="array-reversed"),
    pytest.param(["--array", "abc"], ["true"], ['"abc"'], id="array-word"),
    pytest.param(["--array", ""], ["true"], ['""'], id="array-empty"),
    pytest.param(["--time-limit", "5x"], ["true"], ['"5x"'], id="time-limit"),
    pytest.param(["--cores", "64"], ["true"], ["64"], id="cores-beyond-every-worker"),
    pytest.param([], ["echo", "{tsk}"], ["{tsk}"], id="unknown-placeholder"),
])
def test_bad_submissions_are_refused_in_one_line(refusing, tmp_path, opts, cmd, quoted):
    before = len(refusing.jobs())
    r = refusing.submit(*opts, cmd=cmd)
    line = assert_one_line_refusal(r, quoted, tmp_path)
    if "--cores" in opts:
        assert re.search(r"\b2\b", line.replace("64", "")), f"the largest worker's size (2) not in {line!r}"
    assert len(refusing.jobs()) == before, "a refused submission made a job"


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_an_each_line_file_missing_or_empty_is_refused(refusing, tmp_path, content):
    f = tmp_path / f"{'missing' if content is None else 'empty'}.txt"
    if content is not None:
        f.write_text(content)
    before = len(refusing.jobs())
    r = refusing.submit("--each-line", f, cmd=["echo", "{entry}"])
    assert_one_line_refusal(r, [str(f)], tmp_path)
    assert len(refusing.jobs()) == before, "a refused submission made a job"


def test_tasks_of_an_unknown_job_or_state_are_refused(refusing, tmp_path):
    r = refusing.cli("tasks", "999", "--dir", refusing.srv, "--json")
    assert_one_line_refusal(r, ["999"], tmp_path)
    job = refusing.submit_ok("--wait", cmd=["true"])
    r = refusing.cli("tasks", job, "--state", "done", "--dir", refusing.srv, "--json")
    assert_one_line_refusal(r, ['"done"'], tmp_path)


def test_submit_without_a_server_says_how_to_start_one(drover, tmp_path):
    nowhere = tmp_path / "no-server-here"
    r = run_drover(drover, ["submit", "--dir", nowhere, "--", "true"], timeout=CLI_TIMEOUT)
    assert_one_line_refusal(r, ["drover server start"], tmp_path)
    assert not nowhere.exists(), "submit created the server folder"


# --------------------------------------------------------------------------
# Durability


def test_a_restarted_server_resumes_a_half_finished_job(drover, tmp_path):
    """Worker and server killed (-9) with half the tasks done; a server started again on
    the same folder lists the job and runs only the tasks that had not ended: those
    recorded as succeeded before the kill never run again."""
    out = tmp_path / "out"
    out.mkdir()
    script = f'sleep 0.5; echo run >> {shlex.quote(str(out))}/{{task}}'
    with cluster(drover, tmp_path / "first") as c:
        job = c.submit_ok("--array", "1-16", cmd=["sh", "-c", script])
        before = c.wait_tasks(job, lambda ts: sum(t["state"] == "succeeded" for t in ts.values()) >= 5, 60,
                              "five tasks succeeded")
        done_before = {i for i, t in before.items() if t["state"] == "succeeded"}
        for p in c.workers:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        os.kill(c.server.pid, signal.SIGKILL)
        c.server.wait(timeout=10)
        srv = c.srv
    assert len(done_before) < 16, "the job finished before the kill; nothing to resume"

    mark = new_mark()
    logs = tmp_path / "second-logs"
    logs.mkdir()
    # The killed server's access file stays; wait for the new one.
    (srv / "access.toml").unlink()
    server = spawn_logged(drover, ["server", "start", "--dir", srv], logs, "server", child_env(mark))
    c2 = Cluster(drover, srv, logs, mark, server)
    try:
        wait_for_access(server, srv, logs)
        listed = c2.job(job)
        assert listed["kind"] == "tasks" and listed["tasks"] == 16, listed
        assert listed["counts"]["succeeded"] >= len(done_before), (listed, done_before)
        c2.add_worker(2)
        w = c2.wait(job, timeout=120)
        assert w.rc == 0, f"{w.describe()}\n{c2.log_tail()}"
        tasks = c2.by_id(job)
        assert all(t["state"] == "succeeded" for t in tasks.values()), states(tasks)
        for i in range(1, 17):
            runs = (out / str(i)).read_text().split() if (out / str(i)).exists() else []
            assert runs, f"task {i} never ran"
            if i in done_before:
                assert runs == ["run"], f"task {i} had succeeded before the kill, yet ran {len(runs)} times"
        new = c2.submit_ok("--wait", cmd=["true"])
        assert new > job, f"a new job reuses an old id: {new} after {job}"
        stop = c2.cli("server", "stop", "--dir", srv)
        assert stop.rc == 0, stop.describe()
        assert server.wait(timeout=30) == 0
    finally:
        for p in [server, *c2.workers]:
            kill_group(p)
        kill_marked(mark)


# --------------------------------------------------------------------------
# Task graphs and --after


def test_a_diamond_graph_runs_in_order_and_a_failure_cancels_its_dependants(drover, tmp_path):
    """prep -> (left[1-3], right) -> merge: each entry starts only after those it names
    ended well; a second graph whose `right` fails runs `left` but cancels `merge`."""
    out = tmp_path / "out"
    out.mkdir()
    log = out / "order.log"

    def graph(path: Path, right_fails: bool) -> Path:
        stamp = f'echo "$0 $DROVER_TASK_ID $(date +%s.%N)" >> {shlex.quote(str(log))}'
        path.write_text(to_toml({
            "name": "diamond",
            "task": [
                # written out of order: merge first
                {"name": "merge", "command": f"sh -c '{stamp}' merge", "after": ["left", "right"]},
                {"name": "left", "command": ["sh", "-c", f"sleep 0.3; {stamp}", "left"], "array": "1-3",
                 "after": ["prep"]},
                {"name": "right", "command": f"sh -c 'sleep 0.2; {stamp}; exit {7 if right_fails else 0}' right",
                 "after": ["prep"]},
                {"name": "prep", "command": f"sh -c '{stamp}' prep"},
            ],
        }))
        return path

    with cluster(drover, tmp_path / "c", workers=2) as c:
        r = c.cli("submit", "--dir", c.srv, "--wait", graph(tmp_path / "ok.toml", False), timeout=120)
        assert r.rc == 0, f"{r.describe()}\n{c.log_tail()}"
        job = job_id(r)
        rows = [l.split() for l in log.read_text().splitlines()]
        when = {(n, int(i)): float(t) for n, i, t in rows}
        assert sorted(when) == [("left", 1), ("left", 2), ("left", 3), ("merge", 0), ("prep", 0), ("right", 0)], rows
        first_middle = min(t for (n, _), t in when.items() if n in ("left", "right"))
        last_middle = max(t for (n, _), t in when.items() if n in ("left", "right"))
        assert when[("prep", 0)] <= first_middle and last_middle <= when[("merge", 0)], rows
        tasks = c.tasks(job)
        assert sorted((t["name"], t["state"]) for t in tasks) == sorted(
            [("prep", "succeeded"), ("left", "succeeded"), ("left", "succeeded"), ("left", "succeeded"),
             ("right", "succeeded"), ("merge", "succeeded")]), tasks
        assert c.job(job)["name"] == "diamond"

        log.unlink()
        r = c.cli("submit", "--dir", c.srv, "--wait", graph(tmp_path / "bad.toml", True), timeout=120)
        assert r.rc == 1, r.describe()
        bad = job_id(r)
        by_name = {}
        for t in c.tasks(bad):
            by_name.setdefault(t["name"], []).append(t)
        assert [t["state"] for t in by_name["right"]] == ["failed"] and by_name["right"][0]["exit_code"] == 7
        assert [t["state"] for t in by_name["merge"]] == ["cancelled"], by_name["merge"]
        assert [t["state"] for t in by_name["left"]] == ["succeeded"] * 3
        assert "merge" not in log.read_text(), "a cancelled task ran"
        j = c.job(bad)
        assert j["state"] == "failed" and j["counts"]["cancelled"] == 1 and j["counts"]["failed"] == 1, j


@pytest.mark.parametrize("tasks, quoted", [
    pytest.param([{"name": "a", "command": "true", "after": ["b"]}, {"name": "b", "command": "true", "after": ["a"]}],
                 ["a -> b -> a"], id="cycle"),
    pytest.param([{"name": "a", "command": "true", "after": ["nosuch"]}], ['"nosuch"'], id="unknown-name"),
    pytest.param([{"name": "a", "command": "true", "aftr": ["b"]}], ["aftr"], id="unknown-key"),
    pytest.param([{"name": "a", "command": "true"}, {"name": "a", "command": "true"}], ['"a"'], id="duplicate"),
])
def test_bad_graph_files_are_refused_before_anything_runs(refusing, tmp_path, tasks, quoted):
    f = tmp_path / "graph.toml"
    f.write_text(to_toml({"task": tasks}))
    before = len(refusing.jobs())
    r = refusing.cli("submit", "--dir", refusing.srv, f)
    assert_one_line_refusal(r, quoted, tmp_path)
    assert len(refusing.jobs()) == before, "a refused graph made a job"


def test_after_starts_a_job_once_another_succeeded_and_cancels_it_otherwise(drover, tmp_path):
    gate = tmp_path / "gate"
    out = tmp_path / "out"
    out.mkdir()
    with cluster(drover, tmp_path / "c") as c:
        first = c.submit_ok(cmd=["sh", "-c", f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done"])
        second = c.submit_ok("--after", str(first), cmd=["sh", "-c", f"touch {shlex.quote(str(out))}/second"])
        time.sleep(1.5)
        assert not (out / "second").exists(), "--after job ran before the job it waits for ended"
        assert c.job(second)["state"] == "waiting"
        gate.touch()
        assert c.wait(second).rc == 0
        assert (out / "second").exists()

        failing = c.submit_ok(cmd=["false"])
        third = c.submit_ok("--after", f"{first},{failing}", cmd=["sh", "-c", f"touch {shlex.quote(str(out))}/third"])
        w = c.wait(third)
        assert w.rc == 1, w.describe()
        assert c.job(third)["state"] == "cancelled"
        assert not (out / "third").exists()
        r = c.submit("--after", "999", cmd=["true"])
        assert_one_line_refusal(r, ["999"], tmp_path)


def test_a_task_longer_than_a_workers_walltime_goes_to_a_worker_it_fits(drover, tmp_path):
    """A worker whose batch job ends in 40 s gets no task with a 5-minute time limit
    (nothing would be killed by the batch system): that task waits for, then runs on, a
    worker without a walltime; short-limited tasks run on the first."""
    with cluster(drover, tmp_path, workers=0) as c:
        short = spawn_logged(drover, ["worker", "--access", c.access, "--threads", "2", "--walltime", "40"],
                             c.logs, "short", child_env(c.mark))
        c.workers.append(short)
        c.wait_workers(1)
        (short_id,) = [w["id"] for w in c.status()["workers"]]
        long_job = c.submit_ok("--time-limit", "5m", "--array", "1-2", cmd=["true"])
        ok_job = c.submit_ok("--time-limit", "10s", "--array", "1-2", cmd=["true"])
        assert c.wait(ok_job, timeout=30).rc == 0
        assert {t["worker"] for t in c.tasks(ok_job)} == {short_id}
        time.sleep(1.0)
        assert [t["state"] for t in c.tasks(long_job)] == ["waiting", "waiting"], "held back from the short worker"
        c.add_worker(1)
        c.wait_workers(2)
        assert c.wait(long_job, timeout=60).rc == 0
        assert short_id not in {t["worker"] for t in c.tasks(long_job)}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_million_task_array_costs_the_server_under_300_bytes_a_task(drover, tmp_path):
    """No worker: the million tasks wait, all held by the server (its task table, the
    core's graph and queue). Its resident memory grows by less than 300 MB."""
    with cluster(drover, tmp_path, workers=0) as c:
        c.jobs()  # the server has answered a client once: its runtime is warm
        before = rss_bytes(c.server.pid)
        job = c.submit_ok("--array", "0-999999", "--stdout", "none", "--stderr", "none", cmd=["true"])
        j = c.job(job)
        assert (j["tasks"], j["counts"]["waiting"], j["state"]) == (1_000_000, 1_000_000, "waiting"), j
        per_task = (rss_bytes(c.server.pid) - before) / 1_000_000
        print(f"server memory per waiting task: {per_task:.1f} bytes")
        assert per_task < 300, f"{per_task:.0f} bytes a task"
        c.cancel(job)
        wait_for(lambda: c.job(job)["state"] == "cancelled", 60, "the million tasks cancelled")
        assert c.job(job)["counts"]["cancelled"] == 1_000_000
        assert c.tasks(job, state="waiting") == []
