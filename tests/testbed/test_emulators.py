"""Self-tests of the batch-system command emulators in scripts/testbed/emulators.

Run: .venv/bin/python -m pytest tests/testbed -q

Each test puts ONE system's bin dir first on PATH and points DROVER_EMU_STATE at a
fresh folder, exactly as drover's own tests select a system. Waits poll the status
commands' JSON against a deadline; there are no fixed sleeps. The LSF walltime test
takes a little over a minute (LSF run limits are whole minutes), so its job is
submitted by the first test of the file and checked by the last one.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "scripts" / "testbed" / "emulators"
BIN = {"pbs": EMU / "pbs" / "bin", "torque": EMU / "pbs" / "bin", "lsf": EMU / "lsf" / "bin",
       "htcondor": EMU / "htcondor" / "bin"}
HOME = os.path.expanduser("~")


# ------------------------------------------------------------------ helpers


class Emu:
    """One emulated system: its environment, a working dir and command helpers."""

    def __init__(self, system, state, work):
        self.system = system
        self.state = state
        self.work = work
        env = dict(os.environ)
        env["PATH"] = f"{BIN[system]}:{env.get('PATH', '')}"
        env["DROVER_EMU_STATE"] = str(state)
        env["DROVER_EMU_KILL_GRACE"] = "1"
        env["DROVER_TEST_MARKER"] = "from-submitter"
        env.pop("DROVER_EMU_FLAVOR", None)
        env.pop("DROVER_EMU_QUEUES", None)
        if system == "torque":
            env["DROVER_EMU_FLAVOR"] = "torque"
        self.env = env

    def run(self, *cmd, input=None, cwd=None, check=False):
        proc = subprocess.run(list(cmd), input=input, cwd=cwd or self.work, env=self.env,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def write(self, name, text, mode=0o644):
        p = self.work / name
        p.write_text(text)
        p.chmod(mode)
        return p


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def pid_alive(pid):
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return data[data.rfind(")") + 2:].split()[0] not in ("Z", "X")


def read_env_dump(path):
    """KEY=VALUE lines written by `env` in a job -> dict."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, v)
    return out


def make_emu(system, tmp_path):
    state = tmp_path / "state"
    work = tmp_path / "work"
    work.mkdir()
    return Emu(system, state, work)


def reset(emu):
    subprocess.run([str(EMU / "reset.sh"), str(emu.state)], capture_output=True, text=True, timeout=60)


def _emulator(system: str):
    """A fixture: the emulator of `system` in a fresh state, reset afterwards."""

    @pytest.fixture
    def fixture(tmp_path):
        emu = make_emu(system, tmp_path)
        yield emu
        reset(emu)

    return fixture


pbs = _emulator("pbs")
torque = _emulator("torque")
lsf = _emulator("lsf")
condor = _emulator("htcondor")


# ------------------------------------------------------------------ PBS Pro


@pytest.fixture(scope="session")
def lsf_walltime_job(tmp_path_factory):
    """An LSF job with -W 1 (LSF run limits are whole minutes) that sleeps. The first
    test of this file submits it, so that its minute overlaps the other tests; the
    last test checks that the run limit killed it."""
    tmp = tmp_path_factory.mktemp("lsfwall")
    emu = make_emu("lsf", tmp)
    p = emu.run("bsub", "-W", "1", "-J", "wall", "-o", "wall.out", "sleep 300", check=True)
    yield emu, submitted_id(p.stdout), time.monotonic()
    reset(emu)




def pbs_json(emu, job_id, *extra):
    p = emu.run("qstat", "-f", "-F", "json", "-x", *extra, job_id)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def pbs_wait_state(emu, job_id, states, timeout=30.0):
    def check():
        doc = pbs_json(emu, job_id)
        job = doc.get("Jobs", {}).get(job_id)
        return job if job and job["job_state"] in states else None
    return wait_for(check, timeout, f"{job_id} in state {states}")


PBS_SCRIPT = """#!/bin/bash
#PBS -N envjob
#PBS -q debug
#PBS -A acct42
#PBS -l select=2:ncpus=1:mem=100mb
#PBS -l walltime=00:05:00
#PBS -j oe
#PBS -o {out}
#PBS -v FOO=bar
env > {work}/env.txt
pwd > {work}/pwd.txt
wc -l < "$PBS_NODEFILE" > {work}/nodes.txt
pbsdsh -- /bin/sh -c 'echo "task $PBS_TASKNUM"' > {work}/pbsdsh.txt
echo done
"""


def test_pbs_submit_env_and_json(pbs, lsf_walltime_job):
    script = pbs.write("job.sh", PBS_SCRIPT.format(out=pbs.work / "job.out", work=pbs.work))
    p = pbs.run("qsub", str(script), check=True)
    job_id = p.stdout.strip()
    assert re.fullmatch(r"\d+\.pbs-emu", job_id), job_id
    job = pbs_wait_state(pbs, job_id, {"F"})
    assert job["Exit_status"] == 0
    assert job["Job_Name"] == "envjob"
    assert job["queue"] == "debug"
    assert job["Account_Name"] == "acct42"
    rl = job["Resource_List"]
    assert rl["ncpus"] == 2 and rl["nodect"] == 2 and rl["select"] == "2:ncpus=1:mem=100mb"
    assert rl["mem"] == "200mb" and rl["walltime"] == "00:05:00"
    assert job["Variable_List"]["PBS_O_WORKDIR"] == str(pbs.work)
    doc = pbs_json(pbs, job_id)
    assert set(doc) >= {"timestamp", "pbs_version", "pbs_server", "Jobs"}
    env = read_env_dump(pbs.work / "env.txt")
    assert env["PBS_JOBID"] == job_id
    assert env["PBS_JOBNAME"] == "envjob"
    assert env["PBS_O_WORKDIR"] == str(pbs.work)
    assert env["PBS_ENVIRONMENT"] == "PBS_BATCH"
    assert env["FOO"] == "bar"
    assert "DROVER_TEST_MARKER" not in env  # no -V: the submitter's env is not copied
    assert "PBS_ARRAY_INDEX" not in env
    assert (pbs.work / "pwd.txt").read_text().strip() == HOME  # PBS jobs start in $HOME
    assert (pbs.work / "nodes.txt").read_text().strip() == "2"
    assert sorted((pbs.work / "pbsdsh.txt").read_text().split("\n")[:2]) == ["task 1", "task 2"]
    assert "done" in (pbs.work / "job.out").read_text()


def test_pbs_cmdline_overrides_directives_and_V(pbs):
    pbs.write("j.sh", f"#PBS -N fromdirective\n#PBS -l walltime=00:01:00\nenv > {pbs.work}/envV.txt\n")
    p = pbs.run("qsub", "-N", "fromcmd", "-V", "-l", "walltime=00:02:00", "j.sh", check=True)
    job_id = p.stdout.strip()
    job = pbs_wait_state(pbs, job_id, {"F"})
    assert job["Job_Name"] == "fromcmd"
    assert job["Resource_List"]["walltime"] == "00:02:00"
    # default output files NAME.oSEQ / NAME.eSEQ in the submission dir
    seq = job_id.split(".")[0]
    assert (pbs.work / f"fromcmd.o{seq}").exists() and (pbs.work / f"fromcmd.e{seq}").exists()
    env = read_env_dump(pbs.work / "envV.txt")
    assert env["DROVER_TEST_MARKER"] == "from-submitter"  # -V copies the environment


def test_pbs_array(pbs):
    pbs.write("a.sh", "#PBS -N arr\n#PBS -J 1-3\necho \"idx=$PBS_ARRAY_INDEX id=$PBS_JOBID of=$PBS_ARRAY_ID\"\n")
    job_id = pbs.run("qsub", "a.sh", check=True).stdout.strip()
    assert re.fullmatch(r"\d+\[\]\.pbs-emu", job_id), job_id
    seq = job_id.split("[")[0]
    pbs_wait_state(pbs, job_id, {"F"})
    doc = pbs_json(pbs, job_id, "-t")
    subs = {k: v for k, v in doc["Jobs"].items() if k != job_id}
    assert sorted(subs) == [f"{seq}[{i}].pbs-emu" for i in (1, 2, 3)]
    assert doc["Jobs"][job_id]["array"] == "True"
    assert doc["Jobs"][job_id]["array_indices_submitted"] == "1-3"
    for i in (1, 2, 3):
        sub = subs[f"{seq}[{i}].pbs-emu"]
        assert sub["job_state"] == "X" and sub["Exit_status"] == 0 and sub["array_index"] == i
        text = (pbs.work / f"arr.o{seq}.{i}").read_text()
        assert f"idx={i} id={seq}[{i}].pbs-emu of={job_id}" in text


def test_pbs_rejections(pbs):
    pbs.write("ok.sh", "true\n")
    cases = [
        (["qsub", "-q", "nosuchq", "ok.sh"], "qsub: Unknown queue", 170),
        (["qsub", "-l", "select=two:ncpus=1", "ok.sh"], "Illegal attribute or resource value Resource_List.select", 166),
        (["qsub", "-l", "walltime=ab:cd", "ok.sh"], "Illegal attribute or resource value Resource_List.walltime", 166),
        (["qsub", "-l", "bogus=1", "ok.sh"], "Unknown resource Resource_List.bogus", 168),
        (["qsub", "missing.sh"], "No such file or directory", 1),
        (["qstat", "99999.pbs-emu"], "qstat: Unknown Job Id 99999.pbs-emu", 153),
        (["qdel", "99999"], "qdel: Unknown Job Id 99999.pbs-emu", 153),
    ]
    for cmd, message, code in cases:
        p = pbs.run(*cmd)
        assert p.returncode == code, (cmd, p.returncode, p.stderr)
        assert message in p.stderr, (cmd, p.stderr)
        assert p.stdout == "" or not re.search(r"\d+\.pbs-emu", p.stdout)
    # a directive error is rejected too
    pbs.write("bad.sh", "#PBS -l select=1:ncpus=x\ntrue\n")
    p = pbs.run("qsub", "bad.sh")
    assert p.returncode == 166 and "Resource_List.select" in p.stderr


def test_pbs_tabular_and_history_messages(pbs):
    job_id = pbs.run("qsub", "-N", "tab", input="echo hi\n", check=True).stdout.strip()
    pbs_wait_state(pbs, job_id, {"F"})
    p = pbs.run("qstat", job_id)
    assert p.returncode == 35
    assert p.stderr.strip() == f"qstat: {job_id} Job has finished, use -x or -H to obtain historical job information"
    lines = pbs.run("qstat", "-x", check=True).stdout.splitlines()
    assert lines[0].split() == ["Job", "id", "Name", "User", "Time", "Use", "S", "Queue"]
    assert lines[1].startswith("----------------  ----------------")
    assert lines[2].split()[0] == job_id and lines[2].split()[-2:] == ["F", "workq"]
    full = pbs.run("qstat", "-f", "-x", job_id, check=True).stdout
    assert full.startswith(f"Job Id: {job_id}\n") and "    job_state = F" in full and "Exit_status = 0" in full


def test_pbs_qdel_and_kill_escalation(pbs):
    pbs.write("k.sh", f"#PBS -N victim\necho $$ > {pbs.work}/k.pid\nsleep 300 &\necho $! > {pbs.work}/k.child\nwait\n")
    job_id = pbs.run("qsub", "-V", "k.sh", check=True).stdout.strip()
    pbs_wait_state(pbs, job_id, {"R"})
    pidfile, childfile = pbs.work / "k.pid", pbs.work / "k.child"
    wait_for(lambda: childfile.exists() and childfile.read_text().strip(), what="job pid files")
    pids = [int(pidfile.read_text()), int(childfile.read_text())]
    assert pbs.run("qdel", job_id).returncode == 0
    job = pbs_wait_state(pbs, job_id, {"F"})
    assert job["Exit_status"] == 256 + signal.SIGTERM
    assert not any(pid_alive(p) for p in pids)
    p = pbs.run("qdel", job_id)
    assert p.returncode == 35 and "Job has finished" in p.stderr
    # a job that ignores SIGTERM gets SIGKILL after the grace period
    ign = pbs.run("qsub", "-N", "stubborn", input="trap '' TERM\nwhile true; do sleep 0.2; done\n", check=True).stdout.strip()
    pbs_wait_state(pbs, ign, {"R"})
    pbs.run("qdel", ign, check=True)
    job = pbs_wait_state(pbs, ign, {"F"}, timeout=20)
    assert job["Exit_status"] == 256 + signal.SIGKILL


def test_pbs_qdel_array(pbs):
    job_id = pbs.run("qsub", "-J", "1-3", "-N", "sl", input="sleep 300\n", check=True).stdout.strip()
    seq = job_id.split("[")[0]
    sub2 = f"{seq}[2].pbs-emu"

    def running():
        doc = pbs_json(pbs, job_id, "-t")
        states = [v["job_state"] for k, v in doc["Jobs"].items() if k != job_id]
        return doc if states == ["R", "R", "R"] and doc["Jobs"][job_id]["job_state"] == "B" else None
    wait_for(running, what="all sub-jobs running")
    pbs.run("qdel", sub2, check=True)  # one sub-job
    wait_for(lambda: pbs_json(pbs, sub2)["Jobs"][sub2]["job_state"] == "X", what="sub-job 2 killed")
    assert pbs_json(pbs, job_id, "-t")["Jobs"][f"{seq}[1].pbs-emu"]["job_state"] == "R"
    pbs.run("qdel", job_id, check=True)  # the rest of the array
    doc = pbs_wait_state(pbs, job_id, {"F"})
    subs = pbs_json(pbs, job_id, "-t")["Jobs"]
    assert all(subs[f"{seq}[{i}].pbs-emu"]["Exit_status"] == 256 + signal.SIGTERM for i in (1, 2, 3))
    assert doc["array_indices_remaining"] == "-"


def test_pbs_job_leftovers_are_killed_at_job_end(pbs):
    job_id = pbs.run("qsub", input=f"sleep 300 &\necho $! > {pbs.work}/bg.pid\nexit 3\n", check=True).stdout.strip()
    job = pbs_wait_state(pbs, job_id, {"F"})
    assert job["Exit_status"] == 3
    pid = int((pbs.work / "bg.pid").read_text())
    wait_for(lambda: not pid_alive(pid), 5, "background process of a finished job to be killed")


def test_pbs_walltime(pbs):
    job_id = pbs.run("qsub", "-N", "wall", "-l", "walltime=00:00:03", input="echo start\nsleep 300\n",
                     check=True).stdout.strip()
    job = pbs_wait_state(pbs, job_id, {"R"})
    t0 = time.monotonic()
    job = pbs_wait_state(pbs, job_id, {"F"}, timeout=30)
    assert job["Exit_status"] == 256 + signal.SIGTERM
    assert time.monotonic() - t0 < 15
    seq = job_id.split(".")[0]
    assert "=>> PBS: job killed: walltime" in (pbs.work / f"wall.e{seq}").read_text()
    assert "exceeded limit 3" in (pbs.work / f"wall.e{seq}").read_text()


# ------------------------------------------------------------------ Torque flavour


def test_torque_flavor(torque):
    torque.write("t.sh", "#PBS -N tq\n#PBS -l nodes=2:ppn=2,walltime=00:01:00\n#PBS -t 1-2\n"
                         "echo \"aid=$PBS_ARRAYID np=$PBS_NP lines=$(wc -l < $PBS_NODEFILE) id=$PBS_JOBID\"\n")
    job_id = torque.run("qsub", "t.sh", check=True).stdout.strip()
    assert re.fullmatch(r"\d+\[\]\.torque-emu", job_id), job_id
    seq = job_id.split("[")[0]

    def done():
        out = torque.run("qstat", "-f", "-t", job_id).stdout
        states = re.findall(r"^    job_state = (\w)", out, re.M)
        return out if len(states) == 3 and set(states) == {"C"} else None
    out = wait_for(done, what="torque array completion")
    assert out.count("exit_status = 0") == 2
    assert "Resource_List.nodes = 2:ppn=2" in out
    for i in (1, 2):
        assert f"aid={i} np=4 lines=4 id={seq}[{i}].torque-emu" in (torque.work / f"tq.o{seq}-{i}").read_text()
    p = torque.run("qstat", "-f", "-F", "json", job_id)
    assert p.returncode != 0 and "invalid option" in p.stderr
    p = torque.run("qsub", "-J", "1-2", input="true\n")
    assert p.returncode != 0 and "invalid option -- 'J'" in p.stderr
    lines = torque.run("qstat", check=True).stdout.splitlines()
    assert lines[0].split()[:2] == ["Job", "ID"] and lines[2].split()[0] == job_id


# ------------------------------------------------------------------ LSF


def bjobs_records(emu, *ids, fields="jobid stat exit_code exit_reason job_name"):
    p = emu.run("bjobs", "-o", fields, "-json", *ids)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["COMMAND"] == "bjobs" and doc["JOBS"] == len(doc["RECORDS"])
    return doc["RECORDS"]


def lsf_wait(emu, job_id, stats, count=1, timeout=30.0):
    def check():
        recs = bjobs_records(emu, job_id)
        return recs if len(recs) == count and all(r.get("STAT") in stats for r in recs) else None
    return wait_for(check, timeout, f"LSF job {job_id} in {stats}")


def submitted_id(stdout):
    m = re.fullmatch(r"Job <(\d+)> is submitted to (default )?queue <(\w+)>\.\n", stdout)
    assert m, stdout
    return m.group(1)


LSF_SCRIPT = """#!/bin/bash
#BSUB -J envjob
#BSUB -n 2
#BSUB -R "span[hosts=1] rusage[mem=100]"
#BSUB -W 10
#BSUB -M 2GB
#BSUB -P proj7
#BSUB -o %J.out
env > env.txt
blaunch /bin/sh -c 'echo "task $LSF_PM_TASKID"' > blaunch.txt
echo done
"""


def test_lsf_submit_stdin_env(lsf):
    p = lsf.run("bsub", input=LSF_SCRIPT, check=True)
    assert p.stdout.endswith("is submitted to default queue <normal>.\n")
    job_id = submitted_id(p.stdout)
    rec = lsf_wait(lsf, job_id, {"DONE"})[0]
    assert rec["JOBID"] == job_id and rec["EXIT_CODE"] == "" and rec["JOB_NAME"] == "envjob"
    env = read_env_dump(lsf.work / "env.txt")  # LSF runs in the submission dir
    assert env["LSB_JOBID"] == job_id
    assert env["LSB_JOBNAME"] == "envjob"
    assert env["LSB_JOBINDEX"] == "0"
    assert env["LSB_HOSTS"].split() == [env["LSB_HOSTS"].split()[0]] * 2
    assert env["LSB_MCPU_HOSTS"].split()[1] == "2"
    assert env["DROVER_TEST_MARKER"] == "from-submitter"  # LSF copies the submission env
    assert sorted((lsf.work / "blaunch.txt").read_text().split("\n")[:2]) == ["task 1", "task 2"]
    out = (lsf.work / f"{job_id}.out").read_text()
    assert out.startswith("done\n") and "Successfully completed." in out
    all_fields = bjobs_records(lsf, job_id, fields="jobid stat queue proj_name nreq_slot runtimelimit")[0]
    assert all_fields["PROJ_NAME"] == "proj7" and all_fields["NREQ_SLOT"] == "2"
    assert all_fields["RUNTIMELIMIT"] == "10.0"


def test_lsf_script_argument_form_and_queue(lsf):
    lsf.write("s.sh", "#!/bin/sh\n#BSUB -J fromfile\n#BSUB -o s.out\necho \"name=$LSB_JOBNAME q=$LSB_QUEUE\"\n", 0o755)
    p = lsf.run("bsub", "-q", "short", "./s.sh", check=True)
    assert p.stdout.endswith("is submitted to queue <short>.\n")
    job_id = submitted_id(p.stdout)
    lsf_wait(lsf, job_id, {"DONE"})
    assert "name=fromfile q=short" in (lsf.work / "s.out").read_text()
    # exit codes of failing jobs
    p = lsf.run("bsub", "-o", "f.out", "exit 7", check=True)
    rec = lsf_wait(lsf, submitted_id(p.stdout), {"EXIT"})[0]
    assert rec["EXIT_CODE"] == "7"


def test_lsf_array(lsf):
    p = lsf.run("bsub", "-J", "arr[1-3]", "-o", "arr.%I.out", input="echo \"i=$LSB_JOBINDEX n=$LSB_JOBNAME\"\n",
                check=True)
    job_id = submitted_id(p.stdout)
    recs = lsf_wait(lsf, job_id, {"DONE"}, count=3)
    assert sorted(r["JOB_NAME"] for r in recs) == ["arr[1]", "arr[2]", "arr[3]"]
    for i in (1, 2, 3):
        assert f"i={i} n=arr[{i}]" in (lsf.work / f"arr.{i}.out").read_text()


def test_lsf_rejections(lsf):
    p = lsf.run("bsub", "-q", "nosuchq", "true")
    assert p.returncode != 0 and p.stderr.strip() == "nosuchq: No such queue. Job not submitted."
    p = lsf.run("bsub", "-R", "span[hosts=1", "true")
    assert p.returncode != 0 and "Bad resource requirement syntax. Job not submitted." in p.stderr
    p = lsf.run("bsub", "-W", "1:xx", "true")
    assert p.returncode != 0 and "Job not submitted." in p.stderr
    p = lsf.run("bjobs", "99999")
    assert p.returncode != 0 and p.stderr.strip() == "Job <99999> is not found"
    recs = bjobs_records(lsf, "99999")
    assert recs == [{"JOBID": "99999", "ERROR": "Job <99999> is not found"}]


def test_lsf_bkill(lsf):
    p = lsf.run("bsub", "-o", "k.out", input="echo $$ > k.pid\nsleep 300\n", check=True)
    job_id = submitted_id(p.stdout)
    lsf_wait(lsf, job_id, {"RUN"})
    wait_for(lambda: (lsf.work / "k.pid").exists() and (lsf.work / "k.pid").read_text().strip(), what="pid file")
    pid = int((lsf.work / "k.pid").read_text())
    p = lsf.run("bkill", job_id, check=True)
    assert p.stdout.strip() == f"Job <{job_id}> is being terminated"
    rec = lsf_wait(lsf, job_id, {"EXIT"}, timeout=20)[0]
    assert rec["EXIT_REASON"].startswith("TERM_OWNER")
    assert not pid_alive(pid)
    p = lsf.run("bkill", job_id)
    assert p.returncode != 0 and "Job has already finished" in p.stderr


# ------------------------------------------------------------------ HTCondor


def condor_q_json(emu, *args):
    p = emu.run("condor_q", "-json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if p.stdout.strip() else []


def condor_history_json(emu, *args):
    p = emu.run("condor_history", "-json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if p.stdout.strip() else []


def cluster_of(stdout, n):
    m = re.fullmatch(r"Submitting job\(s\)(\.+)\n(\d+) job\(s\) submitted to cluster (\d+)\.\n", stdout)
    assert m and len(m.group(1)) == n and int(m.group(2)) == n, stdout
    return m.group(3)


CONDOR_SUB = """# comment
universe       = vanilla
executable     = job.sh
arguments      = "first 'two words' $(Cluster).$(Process)"
environment    = "PROC=$(Process) GREETING='hello world'"
request_cpus   = 2
request_memory = 1 GB
request_gpus   = 0
output         = out.$(Cluster).$(Process)
error          = err.$(Cluster).$(Process)
log            = job.log
leave_in_queue = True
queue 2
"""


def test_condor_submit_macros_env(condor):
    condor.write("job.sh", "#!/bin/sh\nfor a in \"$@\"; do echo \"arg=$a\"; done\nenv\npwd\n", 0o755)
    condor.write("job.sub", CONDOR_SUB)
    p = condor.run("condor_submit", "job.sub", check=True)
    cluster = cluster_of(p.stdout, 2)

    def done():
        ads = condor_q_json(condor, cluster)
        return ads if len(ads) == 2 and all(a["JobStatus"] == 4 for a in ads) else None
    ads = wait_for(done, what="both procs completed")
    for ad in ads:
        assert ad["ClusterId"] == int(cluster) and ad["ExitCode"] == 0
        assert ad["RequestCpus"] == 2 and ad["RequestMemory"] == 1024
    for proc in (0, 1):
        text = (condor.work / f"out.{cluster}.{proc}").read_text()
        assert f"arg=first\narg=two words\narg={cluster}.{proc}\n" in text
        env = read_env_dump(condor.work / f"out.{cluster}.{proc}")
        assert env["PROC"] == str(proc) and env["GREETING"] == "hello world"
        assert env["CONDOR_JOB_ID"] == f"{cluster}.{proc}"
        assert env["OMP_NUM_THREADS"] == "2"
        assert os.path.isdir(env["_CONDOR_SCRATCH_DIR"])
        assert "DROVER_TEST_MARKER" not in env  # no getenv
        assert text.rstrip().splitlines()[-1] == str(condor.work)
    log = (condor.work / "job.log").read_text()
    assert log.count("Job submitted from host") == 2 and log.count("Normal termination (return value 0)") == 2
    p = condor.run("condor_rm", cluster, check=True)
    assert p.stdout.strip() == f"All jobs in cluster {cluster} have been marked for removal"
    assert condor_q_json(condor, cluster) == []


def test_condor_completed_jobs_leave_queue(condor):
    p = condor.run("condor_submit", input="executable = /bin/sh\narguments = \"-c 'exit 5'\"\ngetenv = True\nqueue\n",
                   check=True)
    cluster = cluster_of(p.stdout, 1)
    wait_for(lambda: condor_q_json(condor, cluster) == [], what="job to leave the queue")
    hist = condor_history_json(condor, cluster)
    assert len(hist) == 1 and hist[0]["JobStatus"] == 4 and hist[0]["ExitCode"] == 5


def test_condor_syntax_error(condor):
    p = condor.run("condor_submit", input="executable = /bin/true\nthis line is wrong\nqueue\n")
    assert p.returncode != 0
    assert p.stderr.startswith("ERROR: on Line 2 of submit file")
    p = condor.run("condor_submit", input="executable = /no/such/exe\nqueue\n")
    assert p.returncode != 0 and "ERROR: Executable file /no/such/exe does not exist" in p.stderr
    p = condor.run("condor_submit", input="universe = docker\nexecutable = /bin/true\nqueue\n")
    assert p.returncode != 0 and "universe" in p.stderr
    assert condor_q_json(condor) == []


def test_condor_rm(condor):
    condor.write("s.sh", "#!/bin/sh\necho $$ > s.pid\nexec sleep 300\n", 0o755)
    p = condor.run("condor_submit", input="executable = s.sh\nqueue\n", check=True)
    cluster = cluster_of(p.stdout, 1)
    wait_for(lambda: [a for a in condor_q_json(condor, cluster) if a["JobStatus"] == 2], what="running")
    wait_for(lambda: (condor.work / "s.pid").exists() and (condor.work / "s.pid").read_text().strip(), what="pid")
    pid = int((condor.work / "s.pid").read_text())
    p = condor.run("condor_rm", f"{cluster}.0", check=True)
    assert p.stdout.strip() == f"Job {cluster}.0 marked for removal"
    wait_for(lambda: condor_q_json(condor, cluster) == [], what="removed job to leave the queue")
    assert not pid_alive(pid)
    assert condor_history_json(condor, cluster)[0]["JobStatus"] == 3
    p = condor.run("condor_rm", cluster)
    assert p.returncode != 0 and f"Couldn't find/remove all jobs in cluster {cluster}" in p.stderr


def test_condor_maxruntime(condor):
    p = condor.run("condor_submit", input="executable = /bin/sleep\narguments = 300\n+MaxRuntime = 3\nqueue\n",
                   check=True)
    cluster = cluster_of(p.stdout, 1)
    wait_for(lambda: [a for a in condor_q_json(condor, cluster) if a["JobStatus"] == 2], what="running")
    t0 = time.monotonic()
    ad = wait_for(lambda: [a for a in condor_q_json(condor, cluster) if a["JobStatus"] == 5], 20, "held")[0]
    assert 2 <= time.monotonic() - t0 < 15
    assert "MaxRuntime" in ad["HoldReason"] and ad["MaxRuntime"] == 3
    condor.run("condor_rm", cluster, check=True)
    assert condor_q_json(condor, cluster) == []


# ------------------------------------------------------------------ reset.sh


def test_reset_kills_everything(tmp_path):
    emus = []
    for s in ("pbs", "lsf", "htcondor"):
        (tmp_path / s).mkdir()
        emus.append(make_emu(s, tmp_path / s))
    pbs, lsf, condor = emus
    pbs.run("qsub", input=f"echo $$ > {pbs.work}/p.pid\nsleep 300\n", check=True)
    lsf.run("bsub", "-o", "l.out", input=f"echo $$ > {lsf.work}/l.pid\nsleep 300\n", check=True)
    condor.write("c.sh", f"#!/bin/sh\necho $$ > {condor.work}/c.pid\nexec sleep 300\n", 0o755)
    condor.run("condor_submit", input="executable = c.sh\nqueue\n", check=True)
    files = [pbs.work / "p.pid", lsf.work / "l.pid", condor.work / "c.pid"]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), what="all jobs running")
    pids = [int(f.read_text()) for f in files]
    p = subprocess.run([str(EMU / "reset.sh")] + [str(e.state) for e in emus], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: not any(pid_alive(x) for x in pids), 5, "jobs killed by reset.sh")
    assert not any(e.state.exists() for e in emus)


# ------------------------------------------------------------------ last: the LSF run limit


def test_lsf_walltime(lsf_walltime_job):
    emu, job_id, t0 = lsf_walltime_job
    rec = lsf_wait(emu, job_id, {"EXIT"}, timeout=120)[0]
    assert time.monotonic() - t0 >= 59
    assert rec["EXIT_REASON"].startswith("TERM_RUNLIMIT")
    assert "TERM_RUNLIMIT" in (emu.work / "wall.out").read_text()
