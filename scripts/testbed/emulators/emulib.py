#!/usr/bin/env python3
"""Shared machinery of drover's batch-system command emulators (stdlib only).

The emulators (pbs/bin/{qsub,qstat,qdel,pbsdsh}, lsf/bin/{bsub,bjobs,bkill,blaunch},
htcondor/bin/{condor_submit,condor_q,condor_rm,condor_history}) are thin scripts that
import one system module (pbsemu.py, lsfemu.py, condoremu.py beside this file), which
uses this module for everything that does not depend on the batch system:

* the state folder: ``$DROVER_EMU_STATE`` or ``/tmp/drover-emu/<system>``
  (system = pbs, torque, lsf, htcondor). It holds ``seq`` (the last id handed out),
  ``lock`` (an flock serialising every read-modify-write), ``jobs/<seq>.json`` (one
  record per submission, with one "task" per array element / HTCondor proc) and
  ``spool/<seq>/`` (script copy, node files, scratch dirs, the runner's log);
* the runner: every task gets a small watcher process (``emulib.py _run ...``,
  started in a new session at submission) that waits until the task may start,
  starts the job in a NEW SESSION (so the whole job can be signalled as a group),
  enforces the walltime, carries out kill requests (SIGUSR1 from qdel/bkill/condor_rm
  asks it to read the request from the record), kills whatever is left of the job's
  session when the job's top process ends, and records how it ended;
* reconciliation on every command: a task whose runner died is marked lost and its
  processes are killed, so state is right when the next command runs.

Knobs shared by every emulator (read at submission unless noted):
  DROVER_EMU_STATE        state folder (see above)
  DROVER_EMU_KILL_GRACE   seconds between the signals of a kill sequence (default 5)
  DROVER_EMU_START_DELAY  seconds a job stays queued before it may start (default 0)
  DROVER_EMU_MAX_RUNNING  at most this many tasks of the system run at once; the rest
                          stay queued (default 0 = unlimited; read by the runners)
  DROVER_EMU_FIRST_ID     the first job number of a fresh state folder (default 1)
"""

import contextlib
import fcntl
import importlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time

LIB_DIR = os.path.dirname(os.path.abspath(__file__))
HOST = socket.gethostname().split(".")[0]

SYSTEM_MODULES = {"pbs": "pbsemu", "torque": "pbsemu", "lsf": "lsfemu", "htcondor": "condoremu"}


def user_name():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def user_home():
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.environ.get("HOME", "/")


def user_shell():
    try:
        return pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
    except KeyError:
        return "/bin/sh"


def env_float(name, default):
    value = os.environ.get(name, "")
    try:
        return float(value) if value.strip() else default
    except ValueError:
        return default


def kill_grace():
    return env_float("DROVER_EMU_KILL_GRACE", 5.0)


def die(message, code=1):
    """Prints MESSAGE (one or more lines) on stderr and exits with CODE."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    sys.exit(code)


def emulator_env():
    """The emulator's own knobs, passed into every job so that commands run inside
    a job (pbsdsh, blaunch, nested submissions) see the same state folder."""
    return {k: v for k, v in os.environ.items() if k.startswith("DROVER_EMU_")}


def login_path(system_bin):
    """PATH of a batch job's login shell on a site where the batch system's bin
    directory is on the default PATH (as /etc/profile.d snippets arrange)."""
    return ":".join([system_bin, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


# ------------------------------------------------------------------ processes


def proc_stat(pid):
    """(state, session id, start time in ticks) of PID, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] = state (field 3), rest[3] = session (field 6), rest[19] = starttime (22)
    try:
        return rest[0], int(rest[3]), int(rest[19])
    except (IndexError, ValueError):
        return None


def proc_start(pid):
    st = proc_stat(pid)
    return st[2] if st else None


def proc_alive(pid, start=None):
    """PID runs (not a zombie) and, if START is given, is the same process."""
    if not pid:
        return False
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[2] == start


def session_pids(sid):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[1] == sid and st[0] not in ("Z", "X"):
            pids.append(int(name))
    return pids


def kill_session(sid, sig):
    """Sends SIG to the process group SID and to every process of session SID."""
    if not sid or sid <= 1:
        return
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    me = os.getpid()
    for pid in session_pids(sid):
        if pid != me:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def signal_number(name_or_number):
    """'TERM', 'SIGTERM', '15' -> 15; raises ValueError."""
    text = str(name_or_number).strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    return int(getattr(signal, text))


def signal_name(num):
    try:
        return signal.Signals(num).name[3:]
    except ValueError:
        return str(num)


# ------------------------------------------------------------------ state


class Store:
    """A system's state folder: job records under an flock."""

    def __init__(self, system, directory=None):
        self.system = system
        self.dir = os.path.abspath(
            directory or os.environ.get("DROVER_EMU_STATE") or os.path.join("/tmp/drover-emu", system))
        self.jobs_dir = os.path.join(self.dir, "jobs")
        self.spool_root = os.path.join(self.dir, "spool")
        os.makedirs(self.jobs_dir, exist_ok=True)
        os.makedirs(self.spool_root, exist_ok=True)
        self._lock_fd = None
        self._depth = 0

    @contextlib.contextmanager
    def lock(self):
        if self._depth == 0:
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                os.close(self._lock_fd)
                self._lock_fd = None

    def next_seq(self):
        with self.lock():
            path = os.path.join(self.dir, "seq")
            try:
                with open(path) as f:
                    seq = int(f.read().strip()) + 1
            except (OSError, ValueError):
                seq = int(env_float("DROVER_EMU_FIRST_ID", 1))
            with open(path + ".tmp", "w") as f:
                f.write(f"{seq}\n")
            os.replace(path + ".tmp", path)
            return seq

    def spool(self, seq):
        path = os.path.join(self.spool_root, str(seq))
        os.makedirs(path, exist_ok=True)
        return path

    def _path(self, seq):
        return os.path.join(self.jobs_dir, f"{seq}.json")

    def load(self, seq):
        try:
            with open(self._path(seq)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save(self, job):
        path = self._path(job["seq"])
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(job, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def jobs(self):
        """Every job record of this system, oldest first."""
        out = []
        for name in os.listdir(self.jobs_dir):
            if name.endswith(".json"):
                job = self.load(name[:-5])
                if job and job.get("system") == self.system:
                    out.append(job)
        out.sort(key=lambda j: j["seq"])
        return out

    def running_count(self):
        return sum(
            1 for job in self.jobs() for t in job["tasks"].values() if t["state"] == "R"
        )

    # -------------------------------------------------------------- reconcile

    def reconcile(self):
        """Marks tasks whose runner died as lost (killing what is left of them)."""
        with self.lock():
            for job in self.jobs():
                changed = False
                for task in job["tasks"].values():
                    if task["state"] not in ("Q", "R"):
                        continue
                    if proc_alive(task.get("runner_pid"), task.get("runner_start")):
                        continue
                    if task["state"] == "R" and proc_alive(task.get("pid"), task.get("pid_start")):
                        kill_session(task["pid"], signal.SIGKILL)
                    task["state"] = "F"
                    task["reason"] = "lost"
                    task["end_time"] = task.get("end_time") or time.time()
                    changed = True
                if changed:
                    self.save(job)

    # -------------------------------------------------------------- submit

    def new_job(self, seq, **fields):
        job = {"system": self.system, "seq": seq, "submit_time": time.time(), "tasks": {}}
        job.update(fields)
        return job

    @staticmethod
    def new_task(argv, env, cwd, stdout, stderr, walltime=None, kill_seq=None, wall_seq=None, **extra):
        """A task record. STDERR None means joined into STDOUT. KILL_SEQ/WALL_SEQ:
        [[signal, seconds to wait before it], ...] for deletion / walltime."""
        grace = kill_grace()
        task = {
            "state": "Q",
            "argv": argv,
            "env": env,
            "cwd": cwd,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_mode": "w",
            "stderr_mode": "w",
            "walltime": walltime,
            "kill_seq": kill_seq or [[int(signal.SIGTERM), 0], [int(signal.SIGKILL), grace]],
            "wall_seq": wall_seq or [[int(signal.SIGTERM), 0], [int(signal.SIGKILL), grace]],
            "requests": [],
            "pid": None,
            "pid_start": None,
            "runner_pid": None,
            "runner_start": None,
            "start_time": None,
            "end_time": None,
            "exit_code": None,
            "signal": None,
            "reason": None,
            "killing": False,
        }
        task.update(extra)
        return task

    def launch(self, job):
        """Saves JOB and starts one runner per task (call under no lock or the lock)."""
        with self.lock():
            self.save(job)
            spool = self.spool(job["seq"])
            for key, task in job["tasks"].items():
                log = open(os.path.join(spool, f"runner-{key}.log"), "ab")
                proc = subprocess.Popen(
                    [sys.executable, os.path.join(LIB_DIR, "emulib.py"), "_run", self.dir, self.system,
                     str(job["seq"]), key],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                    start_new_session=True, cwd="/",
                )
                log.close()
                task["runner_pid"] = proc.pid
                task["runner_start"] = proc_start(proc.pid)
                # do not leave a zombie if the runner dies before we exit
                proc.returncode = 0
            self.save(job)

    # -------------------------------------------------------------- kill

    def request_kill(self, job, key, kind="delete", sig=None, force=False, reason="killed"):
        """Asks task KEY of JOB (a loaded record; saved here) to be deleted
        (kind='delete', the system's kill sequence, or SIGKILL if FORCE) or
        signalled (kind='signal', SIG). Returns 'dequeued', 'requested' or 'finished'.
        Call under the lock."""
        task = job["tasks"][key]
        if task["state"] == "Q":
            if kind == "signal":
                return "requested"  # a queued job ignores signals
            task["state"] = "F"
            task["reason"] = reason
            task["end_time"] = time.time()
            self.save(job)
            module = system_module(self.system)
            if hasattr(module, "on_finish"):
                module.on_finish(self, job, key, task)
                self.save(job)
            return "dequeued"
        if task["state"] != "R":
            return "finished"
        task["requests"].append({"kind": kind, "sig": sig, "force": force, "reason": reason})
        if kind == "delete":
            task["killing"] = True
        self.save(job)
        try:
            os.kill(task["runner_pid"], signal.SIGUSR1)
        except (ProcessLookupError, PermissionError, TypeError):
            pass
        return "requested"


def system_module(system):
    if LIB_DIR not in sys.path:
        sys.path.insert(0, LIB_DIR)
    return importlib.import_module(SYSTEM_MODULES[system])


# ------------------------------------------------------------------ runner


def _open_output(path, mode):
    if not path:
        return open(os.devnull, "wb")
    try:
        d = os.path.dirname(path)
        if d and not os.path.isdir(d):
            raise OSError(f"directory {d} does not exist")
        return open(path, mode + "b")
    except OSError as e:
        sys.stderr.write(f"runner: cannot open {path}: {e}; output discarded\n")
        return open(os.devnull, "wb")


def _unblock_signals():
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)


def run_task(directory, system, seq, key):
    """Body of a runner process (see the module doc)."""
    store = Store(system, directory)
    module = system_module(system)
    log = lambda msg: (sys.stderr.write(f"{time.strftime('%H:%M:%S')} runner {seq}/{key}: {msg}\n"), sys.stderr.flush())
    watched = {signal.SIGCHLD, signal.SIGUSR1, signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    # 1. wait until the task may start
    max_running = int(env_float("DROVER_EMU_MAX_RUNNING", 0))
    while True:
        with store.lock():
            job = store.load(seq)
            if job is None or job["tasks"][key]["state"] != "Q":
                log("no longer queued; exiting")
                return 0
            task = job["tasks"][key]
            ready = time.time() >= job["submit_time"] + job.get("start_delay", 0)
            if ready and (max_running <= 0 or store.running_count() < max_running):
                # 2. start it (under the lock, so no command sees R without a pid)
                task["state"] = "R"
                task["start_time"] = time.time()
                if hasattr(module, "on_start"):
                    module.on_start(store, job, key, task)
                out = _open_output(task["stdout"], task.get("stdout_mode", "w"))
                if task["stderr"] and task["stderr"] != task["stdout"]:
                    err = _open_output(task["stderr"], task.get("stderr_mode", "w"))
                else:
                    err = out
                try:
                    proc = subprocess.Popen(
                        task["argv"], env=task["env"], cwd=task["cwd"], stdin=subprocess.DEVNULL,
                        stdout=out, stderr=err, close_fds=True, start_new_session=True,
                        preexec_fn=_unblock_signals,
                    )
                except OSError as e:
                    msg = f"{task['argv'][0]}: {e.strerror or e}\n"
                    err.write(msg.encode())
                    log(f"exec failed: {msg.strip()}")
                    out.close()
                    if err is not out:
                        err.close()
                    task["state"] = "F"
                    task["end_time"] = time.time()
                    task["exit_code"] = 127 if isinstance(e, FileNotFoundError) else 126
                    task["reason"] = "exec_failed"
                    if hasattr(module, "on_finish"):
                        module.on_finish(store, job, key, task)
                    store.save(job)
                    return 0
                out.close()
                if err is not out:
                    err.close()
                task["pid"] = proc.pid
                task["pid_start"] = proc_start(proc.pid)
                store.save(job)
                log(f"started pid {proc.pid}: {task['argv']}")
                break
        time.sleep(0.1)

    # 3. watch it
    sid = proc.pid
    walltime = task.get("walltime")
    wall_deadline = task["start_time"] + walltime if walltime else None
    pending = []  # [due time, signal]
    reason = None
    status = None

    def schedule(seq_spec, force=False):
        now = time.time()
        pending.clear()
        if force:
            pending.append([now, int(signal.SIGKILL)])
            return
        due = now
        for sig, delay in seq_spec:
            due += delay
            pending.append([due, int(sig)])

    def set_killing():
        with store.lock():
            j = store.load(seq)
            if j:
                j["tasks"][key]["killing"] = True
                store.save(j)

    while True:
        pid, st = os.waitpid(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            status = st
            break
        now = time.time()
        if wall_deadline is not None and now >= wall_deadline and reason is None:
            reason = "walltime"
            log(f"walltime {walltime}s reached")
            if hasattr(module, "on_walltime"):
                module.on_walltime(store, job, key, task)
            schedule(task["wall_seq"])
            set_killing()
        while pending and pending[0][0] <= now:
            _, sig = pending.pop(0)
            log(f"sending {signal_name(sig)} to session {sid}")
            kill_session(sid, sig)
        wake = [now + 1.0]
        if pending:
            wake.append(pending[0][0])
        if wall_deadline is not None and reason is None:
            wake.append(wall_deadline)
        info = signal.sigtimedwait(watched, max(0.005, min(wake) - now))
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGUSR1:
            with store.lock():
                j = store.load(seq)
                requests = j["tasks"][key]["requests"] if j else []
                if j:
                    j["tasks"][key]["requests"] = []
                    store.save(j)
            for req in requests:
                if req["kind"] == "signal":
                    log(f"signal request {req['sig']}")
                    kill_session(sid, int(req["sig"]))
                elif req["force"] or reason in (None, "walltime"):
                    if reason is None:
                        reason = req.get("reason") or "killed"
                    log(f"delete request (force={req['force']})")
                    schedule(task["kill_seq"], force=req["force"])
            continue
        # the runner itself is being stopped (reset.sh): take the job down with it
        log(f"runner got {signal_name(info.si_signo)}: killing the job")
        reason = reason or "killed"
        kill_session(sid, signal.SIGKILL)

    # 4. the top process ended: nothing of the job may outlive it
    kill_session(sid, signal.SIGKILL)
    with store.lock():
        job = store.load(seq) or job
        task = job["tasks"][key]
        task["state"] = "F"
        task["end_time"] = time.time()
        if os.WIFSIGNALED(status):
            task["signal"] = os.WTERMSIG(status)
            task["exit_code"] = None
        else:
            task["exit_code"] = os.WEXITSTATUS(status)
            task["signal"] = None
        task["reason"] = reason or "exit"
        task["killing"] = False
        log(f"ended: exit_code={task['exit_code']} signal={task['signal']} reason={task['reason']}")
        if hasattr(module, "on_finish"):
            try:
                module.on_finish(store, job, key, task)
            except Exception as e:  # a hook must not lose the record
                log(f"on_finish failed: {e!r}")
        store.save(job)
    return 0


# ------------------------------------------------------------------ helpers for the systems


def parse_duration(text):
    """'[[HH:]MM:]SS[.frac]' or plain seconds -> seconds (float); ValueError."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(p.strip() == "" for p in parts):
        raise ValueError(text)
    total = 0.0
    for i, p in enumerate(parts):
        if i < len(parts) - 1 and not p.isdigit():
            raise ValueError(text)
        v = float(p)
        if v < 0:
            raise ValueError(text)
        total = total * 60 + v
    return total


def hms(seconds):
    seconds = int(max(0, seconds or 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def parse_ranges(text, allow_step=True):
    """'1-10:2', '1,3,5-7' -> sorted list of ints; ValueError."""
    out = []
    for part in text.split(","):
        part = part.strip()
        step = 1
        if allow_step and ":" in part:
            part, s = part.split(":", 1)
            step = int(s)
            if step < 1:
                raise ValueError(text)
        if "-" in part:
            a, b = part.split("-", 1)
            a, b = int(a), int(b)
            if a < 0 or b < a:
                raise ValueError(text)
            out.extend(range(a, b + 1, step))
        else:
            v = int(part)
            if v < 0:
                raise ValueError(text)
            out.append(v)
    if not out:
        raise ValueError(text)
    return sorted(set(out))


def compress_ranges(values):
    """[1,2,3,5] -> '1-3,5'."""
    values = sorted(values)
    out = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(out)


def read_script(path):
    """Reads a job script given on the command line or (path None) from stdin."""
    if path is None:
        return sys.stdin.read()
    with open(path, errors="replace") as f:
        return f.read()


def directive_lines(script, prefix):
    """Option strings of the lines starting with PREFIX, read (like PBS and LSF)
    up to the first line that is neither blank nor a comment."""
    out = []
    for i, line in enumerate(script.splitlines()):
        stripped = line.strip()
        if i == 0 and stripped.startswith("#!"):
            continue
        if stripped.startswith(prefix):
            rest = stripped[len(prefix):]
            if rest and not rest[0].isspace():
                continue  # e.g. '#PBSX'
            out.append(rest.strip())
            continue
        if stripped == "" or stripped.startswith("#"):
            continue
        break
    return out


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def append_text(path, text):
    if not path:
        return
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError:
        pass


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "_run":
        _, _, directory, system, seq, key = sys.argv
        sys.exit(run_task(directory, system, int(seq), key))
    die("usage: emulib.py _run STATE_DIR SYSTEM SEQ TASK (internal)", 2)


if __name__ == "__main__":
    main()
