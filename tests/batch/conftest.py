"""Live batch-system tests: real SLURM and SGE from scripts/testbed, emulators of
PBS Pro, Torque, LSF and HTCondor. numpy + h5py check every result.

A test selects a system through its environment (`system_env`): the emulators' bin
folder first on PATH and a private state folder; real SLURM and SGE use the plain
commands. Every test uses its own job name, so leftovers are found by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTBED = ROOT / "scripts" / "testbed"
EMU = TESTBED / "emulators"

SYSTEMS = ["slurm", "sge", "pbs", "torque", "lsf", "htcondor"]
EMULATED = {"pbs": "pbs", "torque": "pbs", "lsf": "lsf", "htcondor": "htcondor"}


def drover_bin() -> Path:
    p = Path(os.environ.get("DROVER_BIN", ROOT / "target" / "release" / "drover"))
    return p if p.is_absolute() else ROOT / p


def _testbed_up(name: str) -> None:
    script = TESTBED / f"{name}.sh"
    if subprocess.run([script, "status"], capture_output=True).returncode == 0:
        return
    r = subprocess.run([script, "up"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"{name} testbed did not come up:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


@pytest.fixture(scope="session")
def slurm_up():
    _testbed_up("slurm")


@pytest.fixture(scope="session")
def sge_up():
    _testbed_up("sge")


class System:
    """One batch system as a test sees it."""

    def __init__(self, name: str, env: dict[str, str], job_name: str):
        self.name = name
        self.env = env
        self.job_name = job_name

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout)

    def live_jobs(self) -> list[str]:
        """Jobs of this test's name that the batch system still shows as not finished."""
        n = self.job_name
        if self.name == "slurm":
            out = self.run("squeue", "--noheader", "--array", f"--name={n}", "--format=%i %T").stdout
            return [l for l in out.splitlines() if l.strip()]
        if self.name == "sge":
            out = self.run("qstat", "-xml").stdout
            return re.findall(rf"<JB_name>{re.escape(n)}</JB_name>", out)
        if self.name == "pbs":
            out = self.run("qstat", "-t", "-f", "-F", "json").stdout
            jobs = json.loads(out).get("Jobs", {}) if out.strip() else {}
            return [k for k, v in jobs.items() if v.get("Job_Name") == n and v.get("job_state") not in ("F", "X")]
        if self.name == "torque":
            out = self.run("qstat", "-t", "-f").stdout
            found, cur = [], None
            for line in out.splitlines():
                if line.startswith("Job Id:"):
                    cur = {"id": line.split(":", 1)[1].strip()}
                elif cur is not None and "=" in line:
                    k, v = (x.strip() for x in line.split("=", 1))
                    cur[k] = v
                    if k == "job_state" and cur.get("Job_Name") == n and v != "C":
                        found.append(cur["id"])
            return found
        if self.name == "lsf":
            out = self.run("bjobs", "-o", "jobid stat job_name", "-json").stdout
            recs = json.loads(out).get("RECORDS", []) if out.strip() else []
            return [r["JOBID"] for r in recs if r.get("JOB_NAME", "").startswith(n) and r.get("STAT") in ("PEND", "RUN", "PSUSP", "USUSP", "SSUSP")]
        if self.name == "htcondor":
            out = self.run("condor_q", "-json").stdout
            ads = json.loads(out) if out.strip() else []
            return [f"{a['ClusterId']}.{a['ProcId']}" for a in ads if a.get("JobStatus") in (1, 2) and n in str(a.get("Cmd", "")) + str(a.get("Args", ""))]
        raise AssertionError(self.name)

    def wait_no_jobs(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = self.live_jobs()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


@pytest.fixture
def system_env(request, tmp_path):
    """A function giving a System for a name, with its testbed up and cleanup after."""
    made: list[System] = []

    def make(name: str) -> System:
        env = dict(os.environ)
        if name == "slurm":
            request.getfixturevalue("slurm_up")
        elif name == "sge":
            request.getfixturevalue("sge_up")
            env.update({"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"})
        else:
            env["PATH"] = f"{EMU / EMULATED[name] / 'bin'}{os.pathsep}{env['PATH']}"
            env["DROVER_EMU_STATE"] = str(tmp_path / f"emu-{name}")
            if name == "torque":
                env["DROVER_EMU_FLAVOR"] = "torque"
        # A private drover home: server folders and logs of this test only.
        env["HOME"] = str(tmp_path / "home")
        Path(env["HOME"]).mkdir(exist_ok=True)
        s = System(name, env, f"dt{uuid.uuid4().hex[:8]}")
        made.append(s)
        return s

    yield make
    for s in made:
        left = s.live_jobs()
        if left:
            # Clean up, then fail: a test must never leave jobs behind.
            if s.name == "slurm":
                s.run("scancel", f"--name={s.job_name}")
            elif s.name in ("sge", "pbs", "torque"):
                for j in left:
                    s.run("qdel", j)
            elif s.name == "lsf":
                for j in left:
                    s.run("bkill", j)
            elif s.name == "htcondor":
                for j in left:
                    s.run("condor_rm", j)
            pytest.fail(f"{s.name}: jobs left behind by the test: {left}")
    if any(s.name in EMULATED for s in made):
        subprocess.run([EMU / "reset.sh"], env={**os.environ, "DROVER_EMU_STATE": str(tmp_path)}, capture_output=True)


GENERIC = {
    "slurm": {"scheduler": "slurm", "queue": "debug", "memory": "1 GiB"},
    "sge": {"scheduler": "sge", "queue": "all.q", "pe": "smp", "memory": "2 GiB"},
    "pbs": {"scheduler": "pbs", "queue": "workq", "memory": "1 GiB"},
    "torque": {"scheduler": "pbs", "pbs_flavor": "torque", "queue": "batch", "memory": "1 GiB"},
    "lsf": {"scheduler": "lsf", "queue": "normal", "memory": "1 GiB"},
    "htcondor": {"scheduler": "htcondor", "memory": "1 GiB"},
}


def toml(doc: dict) -> str:
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v)

    return "".join(f"{k} = {val(v)}\n" for k, v in doc.items())


def write_site(path: Path, system: System, **over) -> Path:
    doc = {**GENERIC[system.name], "cores": 1, "processes": 1, "walltime": "00:10:00", "job_name": system.job_name, "death_timeout": 20}
    doc.update(over)
    path.write_text(toml({k: v for k, v in doc.items() if v is not None}))
    return path


def make_workload(dirpath: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """A small two-stage workload (anomaly + std + a full sum) and its numpy oracle."""
    x = rng.normal(280.0, 12.0, size=(40, 30, 6))
    with h5py.File(dirpath / "in.h5", "w") as f:
        f.create_dataset("t", data=x, chunks=(10, 15, 6), compression="gzip")
    (dirpath / "w.toml").write_text(
        '[inputs.t]\nfile = "in.h5"\ndataset = "/t"\nchunks = [8, 30, 6]\n'
        '[[outputs]]\nexpr = "t - mean(t, axis=0)"\nfile = "out.h5"\ndataset = "/anom"\n'
        '[[outputs]]\nexpr = "std(t, axis=(0, 2))"\nfile = "out.h5"\ndataset = "/std"\n'
        '[[outputs]]\nexpr = "sum(t * 2)"\nfile = "out.h5"\ndataset = "/total"\n'
        # the expression surface of issue 10, on batch workers too
        '[let]\nclim = "mean(t, axis=0)"\n'
        '[[outputs]]\nexpr = "transpose(t - clim)"\nfile = "out.h5"\ndataset = "/anom_t"\n'
        '[[outputs]]\nexpr = "nanmean(where(t > 280, t, nan), axis=0)"\nfile = "out.h5"\ndataset = "/masked"\n'
        '[[outputs]]\nexpr = "t[1:] - t[:-1]"\nfile = "out.h5"\ndataset = "/diff"\n'
        '[[outputs]]\nexpr = "histogram(t, bins=8, range=(240, 320))"\nfile = "out.h5"\ndataset = "/hist"\n'
        '[[outputs]]\nexpr = "argmax(t, axis=0)"\nfile = "out.h5"\ndataset = "/argmax"\n'
        '[[outputs]]\nexpr = "sum(t > 290, axis=0)"\nfile = "out.h5"\ndataset = "/hot"\n'
        # the data-movement operations of issue 12: across the blocks of time
        '[[outputs]]\nexpr = "median(t, axis=0)"\nfile = "out.h5"\ndataset = "/median"\n'
        '[[outputs]]\nexpr = "percentile(t, (10, 90), axis=1)"\nfile = "out.h5"\ndataset = "/p1090"\n'
        '[[outputs]]\nexpr = "cumsum(t, axis=0)"\nfile = "out.h5"\ndataset = "/cumsum"\n'
        '[[outputs]]\nexpr = "rolling_mean(t, window=5, axis=0)"\nfile = "out.h5"\ndataset = "/rolling"\n'
        '[[outputs]]\nexpr = "t"\nfile = "ts.h5"\ndataset = "/t"\nchunks = [40, 2, 2]\n'
    )
    with np.errstate(invalid="ignore"):
        masked = np.nanmean(np.where(x > 280, x, np.nan), axis=0)
    want = {
        "/anom": x - x.mean(axis=0),
        "/std": x.std(axis=(0, 2)),
        "/total": np.asarray((x * 2).sum()),
        "/anom_t": np.transpose(x - x.mean(axis=0)),
        "/masked": masked,
        "/diff": x[1:] - x[:-1],
        "/hist": np.histogram(x, bins=8, range=(240, 320))[0],
        "/argmax": np.argmax(x, axis=0),
        "/hot": np.sum(x > 290, axis=0),
        "/median": np.median(x, axis=0),
        "/p1090": np.percentile(x, (10, 90), axis=1),
        "/cumsum": np.cumsum(x, axis=0),
        "/rolling": np.lib.stride_tricks.sliding_window_view(x, 5, axis=0).mean(axis=-1),
        "ts.h5:/t": x,   # rechunked to time series (its chunks checked too)
    }
    return dirpath / "w.toml", want


def check_outputs(path: Path, want: dict[str, np.ndarray]) -> None:
    for name in [n for n in want if ":" in n]:   # "file:dataset": another output file
        other, ds = name.split(":")
        with h5py.File(path.parent / other, "r") as g:
            assert g[ds].chunks == (40, 2, 2), f"{name}: chunks {g[ds].chunks}"
            np.testing.assert_array_equal(g[ds][()], want[name], err_msg=name)
    with h5py.File(path, "r") as f:
        for name, expected in ((n, e) for n, e in want.items() if ":" not in n):
            got = f[name][()]
            if np.issubdtype(np.asarray(expected).dtype, np.integer):
                assert got.dtype == np.int64, f"{name}: dtype {got.dtype}"
                np.testing.assert_array_equal(got, expected, err_msg=name)
                continue
            finite = np.abs(expected[np.isfinite(expected)]) if np.ndim(expected) else np.abs(expected)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * float(np.max(finite, initial=1.0)),
                                       err_msg=name)


def drover(system: System, *args, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(drover_bin()), *map(str, args)], env=system.env, capture_output=True, text=True, timeout=timeout)


def status(system: System, server_dir: Path) -> dict:
    r = drover(system, "status", "--dir", server_dir, "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_status(system: System, server_dir: Path, pred, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = status(system, server_dir)
        if pred(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"condition not reached within {timeout} s; last status: {json.dumps(last)[:2000]}")


def start_server(system: System, server_dir: Path, site: Path, workers: int) -> subprocess.Popen:
    """`drover server start` in the background, returned once its access file exists."""
    proc = subprocess.Popen(
        [str(drover_bin()), "server", "start", "--dir", str(server_dir), "--site", str(site), "--workers", str(workers)],
        env=system.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not (server_dir / "access.toml").exists():
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server wrote no access file within 30 s")
        time.sleep(0.1)
    return proc


def stop_server(system: System, server_dir: Path, proc: subprocess.Popen) -> subprocess.CompletedProcess:
    r = drover(system, "server", "stop", "--dir", server_dir, timeout=150)
    try:
        proc.wait(timeout=150)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return r
