"""The dashboard (issue 14) over real HTTP: the key (separate from the worker token,
carried by the URL once, then a cookie), 401 without it, the JSON snapshot and the task
stream while a task job and an array workload run, server-sent events, /metrics in
Prometheus' format (checked by promtool), --no-dashboard, and an
address already taken. The worker token appears in no answer."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.parse
from pathlib import Path

import pytest

from conftest import (Case, Input, child_env, kill_group, kill_marked, new_mark, run_drover, run_workload,
                      spawn_logged, wait_for, wait_for_access)


class Http:
    """Plain requests to the dashboard (no redirects followed, no cookie jar)."""

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.key = urllib.parse.parse_qs(u.query)["key"][0]
        self.cookie: str | None = None

    def get(self, path: str, headers: dict | None = None, read: bool = True):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        h = dict(headers or {})
        if self.cookie and "Authorization" not in h:
            h["Cookie"] = self.cookie
        c.request("GET", path, headers=h)
        r = c.getresponse()
        body = r.read().decode() if read else ""
        return r, body

    def login(self) -> None:
        r, _ = self.get(f"/?key={self.key}")
        assert r.status == 303, r.status
        assert r.getheader("Location") == "/", "the key is taken out of the address"
        cookie = r.getheader("Set-Cookie")
        assert cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        self.cookie = cookie.split(";")[0]

    def json(self, path: str):
        r, body = self.get(path)
        assert r.status == 200, (path, r.status, body)
        return json.loads(body)


class Server:
    def __init__(self, drover: Path, base: Path, *extra: str):
        self.drover, self.srv, self.logs = drover, base / "srv", base / "logs"
        self.logs.mkdir(parents=True)
        self.mark = new_mark()
        self.proc = spawn_logged(drover, ["server", "start", "--dir", self.srv, *extra], self.logs, "server",
                                 child_env(self.mark))
        self.workers = []

    def __enter__(self):
        wait_for_access(self.proc, self.srv, self.logs)
        return self

    def worker(self, threads: int = 2, *extra: str):
        p = spawn_logged(self.drover, ["worker", "--access", self.srv / "access.toml", "--threads", threads, *extra],
                         self.logs, f"worker{len(self.workers)}", child_env(self.mark))
        self.workers.append(p)
        return p

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                run_drover(self.drover, ["server", "stop", "--dir", self.srv], timeout=60)
                self.proc.wait(timeout=30)
        finally:
            for p in [self.proc, *self.workers]:
                kill_group(p)
            kill_marked(self.mark)

    def url(self) -> str:
        r = run_drover(self.drover, ["dashboard", "--dir", self.srv], timeout=30)
        assert r.rc == 0, r.describe()
        (line,) = r.stdout.splitlines()
        assert line.startswith("http://127.0.0.1:") and "key=" in line, line
        return line

    def token(self) -> str:
        return tomllib.loads((self.srv / "access.toml").read_text())["token"]


def test_the_dashboard_needs_its_key_and_never_shows_the_token(drover, tmp_path):
    with Server(drover, tmp_path) as s:
        h = Http(s.url())
        token = s.token()
        assert token and token != h.key, "the dashboard key is not the worker token"
        for path in ["/", "/app.js", "/api/snapshot", "/api/stream", "/metrics", "/api/events"]:
            r, _ = h.get(path)
            assert r.status == 401, (path, r.status)
        r, _ = h.get("/?key=" + "0" * len(h.key))
        assert r.status == 401, "a wrong key"
        r, _ = h.get("/metrics", {"Authorization": f"Bearer {token}"})
        assert r.status == 401, "the worker token does not open the dashboard"
        h.login()
        seen = []
        for path in ["/", "/app.js", "/app.css", "/api/snapshot", "/api/stream", "/metrics"]:
            r, body = h.get(path)
            assert r.status == 200, (path, r.status)
            seen.append(body)
        r, body = h.get("/metrics", {"Authorization": f"Bearer {h.key}"})
        assert r.status == 200 and "drover_workers 0" in body
        assert all(token not in b for b in seen), "the worker token leaked into an answer"
        assert "<html" in seen[0].lower() and "app.js" in seen[0]


def sse_events(h: Http, n: int, timeout: float = 10.0) -> list[dict]:
    c = http.client.HTTPConnection(h.host, h.port, timeout=timeout)
    c.request("GET", "/api/events", headers={"Cookie": h.cookie})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream")
    events = []
    while len(events) < n:
        line = r.fp.readline().decode()
        if line.startswith("data:"):
            events.append(json.loads(line[5:]))
    c.close()
    return events


def report_data(html: str) -> dict:
    start = html.index("window.DROVER_REPORT = ") + len("window.DROVER_REPORT = ")
    return json.loads(html[start:html.index(";</script>", start)])


def test_snapshots_stream_and_metrics_follow_a_run(drover, tmp_path, rng):
    x = rng.normal(5, 2, size=(400, 60))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[20, 60], h5={"chunks": (20, 60)})}
    with Server(drover, tmp_path / "a") as s:
        s.worker(2)
        h = Http(s.url())
        h.login()
        wait_for(lambda: len(h.json("/api/snapshot")["workers"]) == 1, 30, "the worker in the snapshot", interval=0.3)
        r = run_drover(drover, ["submit", "--dir", s.srv, "--array", "1-30", "--", "sh", "-c",
                                "sleep 0.05; exit $(( DROVER_TASK_ID == 7 ))"], timeout=60)
        assert r.rc == 0, r.describe()
        job = int(r.stdout.split()[0])
        run, _, _ = run_workload(drover, tmp_path / "wl", inputs, [Case("sum(x * 2, axis=1)", "/s")], workers=None,
                                 extra_args=["--connect", str(s.srv)])
        assert run.rc == 0
        assert run_drover(drover, ["wait", job, "--dir", s.srv], timeout=60).rc == 1

        def settled():
            snap = h.json("/api/snapshot")
            kinds = {j["kind"]: j for j in snap["jobs"]}
            return snap if "array" in kinds and kinds["tasks"]["state"] == "failed" else None
        wait_for(settled, 10, "both jobs ended in the snapshot", interval=0.3)
        snap = settled()
        w = snap["workers"][0]
        assert w["threads"] == 2 and w["tasks_done"] >= 30 and w["host"] and w["transport"] == "unix", w
        assert w["rss_bytes"] and w["rss_bytes"] > 1 << 20, w
        tasks = next(j for j in snap["jobs"] if j["kind"] == "tasks")
        assert tasks["counts"]["failed"] == 1 and tasks["counts"]["succeeded"] == 29, tasks
        assert tasks["started"] is not None and tasks["ended"] is not None
        array = next(j for j in snap["jobs"] if j["kind"] == "array")
        assert array["state"] == "succeeded" and array["stages"], array
        assert all(st["done"] == st["total"] > 0 for st in array["stages"]), array["stages"]
        assert snap["totals"]["tasks_done"] >= 30 + sum(st["total"] for st in array["stages"]) - len(array["stages"])
        assert snap["totals"]["bytes_read"] >= x.nbytes
        assert any(f["job"] == job and "exit code 1" in f["message"] for f in snap["failures"]), snap["failures"]
        assert snap["history"], "a throughput history"

        stream = h.json("/api/stream?since=0")
        bars = stream["bars"]
        mine = [b for b in bars if b["job"] == job]
        assert len(mine) == 30 and sum(not b["ok"] for b in mine) == 1, len(mine)
        assert all(0 <= b["t0"] <= b["t1"] <= stream["now"] + 1 for b in bars)
        assert {b["lane"] for b in mine} <= {0, 1, 2}, "two threads: lanes 0 and 1 (2 when bars touch)"
        assert any(b["label"].startswith("stage ") for b in bars), "the array workload's tasks"
        early = h.json(f"/api/stream?since=0&until={min(b['t0'] for b in bars) + 0.001}")
        assert 0 < len(early["bars"]) < len(bars), "a window holds only its bars"

        ev = sse_events(h, 3)
        assert ev[1]["now"] > ev[0]["now"] and ev[1]["workers"], "live snapshots about once a second"
        assert ev[0]["history_delta"] is False and len(ev[0]["history"]) >= 2, "the first event has every point"
        assert all(e["history_delta"] is True and len(e["history"]) <= 2 for e in ev[1:]), \
            [len(e["history"]) for e in ev]
        assert all(p["t"] > ev[0]["history"][-1]["t"] for e in ev[1:] for p in e["history"]), "only new points"

        # The report of each job, from the running server.
        out = tmp_path / "job.html"
        r = run_drover(drover, ["report", job, "--dir", s.srv, "-o", out], timeout=60)
        assert r.rc == 0 and str(out) in r.stderr, r.describe()
        data = report_data(out.read_text())
        assert [j["id"] for j in data["snapshot"]["jobs"]] == [job]
        bars = data["stream"]["bars"]
        assert len(bars) == 30 and {b["job"] for b in bars} == {job} and sum(not b["ok"] for b in bars) == 1
        assert "sleep 0.05" in data["workload"] and data["summary"]["counts"]["failed"] == 1, data["workload"]
        hist = data["snapshot"]["history"]
        assert hist and any(p["rss_total_bytes"] > 0 for p in hist), "memory over time"
        r = run_drover(drover, ["report", array["id"], "--dir", s.srv, "-o", tmp_path / "array.html"], timeout=60)
        assert r.rc == 0, r.describe()
        data = report_data((tmp_path / "array.html").read_text())
        assert "sum(x * 2, axis=1)" in data["workload"] and data["summary"]["outputs"][0]["dataset"] == "/s"
        assert len(data["stream"]["bars"]) == data["summary"]["tasks_total"] - data["summary"]["tasks_resumed"]
        assert {b["job"] for b in data["stream"]["bars"]} == {array["id"]}
        # Bad input: a job that does not exist, a folder that does not.
        r = run_drover(drover, ["report", 999, "--dir", s.srv, "-o", tmp_path / "x.html"], timeout=60)
        assert r.rc == 2 and "999" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.describe()
        assert not (tmp_path / "x.html").exists()
        r = run_drover(drover, ["report", job, "--dir", s.srv, "-o", tmp_path / "nowhere" / "x.html"], timeout=60)
        assert r.rc == 2 and "nowhere" in r.stderr and "create it" in r.stderr, r.describe()
        assert not (tmp_path / "nowhere").exists()
        assert not list(tmp_path.glob("*.drover-tmp"))

        r, text = h.get("/metrics")
        assert r.status == 200
        done = [l for l in text.splitlines() if l.startswith("drover_tasks_done_total ")]
        assert done and float(done[0].split()[1]) >= 30
        assert f'drover_job_tasks{{job="{job}",kind="tasks",name="sh",state="failed"}} 1' in text
        promtool = shutil.which("promtool")
        assert promtool, "promtool (Debian's prometheus package, which scripts/test.sh installs) is needed"
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
        assert s.token() not in text + json.dumps(snap) + json.dumps(stream)


def test_no_dashboard_and_a_taken_address(drover, tmp_path):
    with Server(drover, tmp_path / "off", "--no-dashboard") as s:
        assert "dashboard" not in tomllib.loads((s.srv / "access.toml").read_text())
        r = run_drover(drover, ["dashboard", "--dir", s.srv], timeout=30)
        assert r.rc == 2 and "without a dashboard" in r.stderr, r.describe()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        r = run_drover(drover, ["server", "start", "--dir", tmp_path / "busy", "--dashboard", f"127.0.0.1:{port}"],
                       timeout=30)
        assert r.rc == 2, r.describe()
        assert f"127.0.0.1:{port}" in r.stderr and "--no-dashboard" in r.stderr, r.stderr
        assert len([l for l in r.stderr.splitlines() if l.strip()]) == 1, r.stderr
    finally:
        taken.close()


# --------------------------------------------------------------------------
# In a real browser (headless Chromium through playwright-core; screenshots kept in
# tests/e2e/screenshots/)

BROWSER = Path(__file__).parent / "browser" / "dashboard.mjs"
SHOTS = Path(__file__).parent / "screenshots"


def browse(mode: str, target: str, timeout: float = 120) -> dict:
    assert shutil.which("node") and Path("/usr/bin/chromium").exists(), \
        "node and Debian's chromium are needed (scripts/test.sh installs them)"
    SHOTS.mkdir(exist_ok=True)
    p = subprocess.run(["node", str(BROWSER), mode, target, str(SHOTS)], capture_output=True, text=True,
                       timeout=timeout)
    lines = p.stdout.strip().splitlines()
    assert lines, f"no output from the browser driver\n{p.stderr[-3000:]}"
    seen = json.loads(lines[-1])
    assert p.returncode == 0 and seen["ok"], f"{json.dumps(seen, indent=1)}\n{p.stderr[-3000:]}"
    return seen


def test_the_dashboard_in_a_browser_shows_workers_progress_and_tasks_flowing(drover, tmp_path):
    with Server(drover, tmp_path) as s:
        s.worker(2)
        s.worker(1, "--transport", "quic")
        url = s.url()
        r = run_drover(drover, ["submit", "--dir", s.srv, "--array", "1-400", "--", "sleep", "0.1"], timeout=60)
        assert r.rc == 0, r.describe()
        job = int(r.stdout.split()[0])
        seen = browse("live", url)
        assert seen["workers"] == 2 and seen["url_after_login"] == "/", seen
        assert sorted(seen["links"]) == ["QUIC", "UNIX"], f"the workers table names each worker's transport: {seen}"
        run_drover(drover, ["cancel", job, "--dir", s.srv], timeout=60)
    for name in ("overview", "jobs", "stream", "workers", "logs"):
        assert (SHOTS / f"live-{name}.png").stat().st_size > 10_000, name


def test_the_report_opens_offline_and_shows_every_task(drover, tmp_path, rng):
    x = rng.normal(0, 1, size=(300, 40))
    inputs = {"x": Input("in.h5", "/x", x, chunks=[10, 40], h5={"chunks": (10, 40)})}
    report = tmp_path / "wl" / "run-report.html"
    run, result, _ = run_workload(drover, tmp_path / "wl", inputs,
                                  [Case("x - mean(x, axis=0)", "/a"), Case("std(x, axis=1)", "/s")],
                                  workers=2, extra_args=["--report", str(report)])
    assert run.rc == 0
    html = report.read_text()
    assert "window.DROVER_REPORT" in html and "<script src=" not in html
    assert "http://" not in html.split("window.DROVER_REPORT", 1)[0], "nothing loaded from a server"
    data = report_data(html)
    assert data["summary"]["tasks_total"] == result["tasks_total"] and "std(x, axis=1)" in data["workload"]
    assert data["snapshot"]["history"], "the run's points (memory and throughput over time)"
    seen = browse("report", str(report))
    assert seen["bars"] == result["tasks_total"], (seen, result["tasks_total"])
    assert seen["job_rows"] == 1 and seen["worker_rows"] == 2, seen


def test_report_to_a_missing_folder_is_refused_before_the_run(drover, tmp_path, rng):
    inputs = {"x": Input("in.h5", "/x", rng.normal(size=(10, 4)), chunks=[5, 4], h5={})}
    bad = tmp_path / "nowhere" / "r.html"
    run, _, _ = run_workload(drover, tmp_path / "wl", inputs, [Case("x * 2", "/y")], workers=1,
                             extra_args=["--report", str(bad)], check=False)
    assert run.rc == 2 and str(bad.parent) in run.stderr, run.describe()
    assert not bad.parent.exists() and not (tmp_path / "wl" / "out.h5").exists()
