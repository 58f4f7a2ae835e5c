#!/usr/bin/env python3
"""IBM Spectrum LSF command emulator (bsub, bjobs, bkill, blaunch).

What is emulated (facts from the LSF 10.1 command reference):
* `bsub [opts] < script` (the script is spooled; `#BSUB` lines are read up to the
  first command line) and `bsub [opts] command [args]` (run as a /bin/sh command
  line; if the command is a script file its `#BSUB` lines are read too, as with
  LSB_BSUB_PARSE_SCRIPT=Y; set LSB_BSUB_PARSE_SCRIPT=N to turn that off).
  Command-line options override directives.
* Options: -J name | "name[1-K]" | "name[1,3,5-9:2]%limit" (arrays, LSB_JOBINDEX),
  -q, -P, -n min[,max], -W [HH:]MM, -M limit (unit LSF_UNIT_FOR_LIMITS, default KB;
  recorded, not enforced), -R "select[] rusage[mem=..] span[hosts=1|ptile=N] ...",
  -o/-oo, -e/-eo (%J, %I expanded; a directory gets JOBID.out / JOBID.err), -cwd,
  -env, -nnodes, -x, -B, -N, -u, -G, -app, -gpu, -alloc_flags, -sp, -w, -E, -K.
  Prints "Job <ID> is submitted to [default ]queue <Q>.".
* The job runs in the submission dir (or -cwd) with the submission environment
  (LSF's -env all default) plus LSB_JOBID, LSB_JOBNAME, LSB_JOBINDEX (0 when not an
  array), LSB_JOBINDEX_END, LSB_QUEUE, LSB_HOSTS (the host once per slot),
  LSB_MCPU_HOSTS ("host slots" pairs: one pair per "node" with span[ptile=P] or
  -nnodes, else one), LSB_DJOB_NUMPROC, LSB_MAX_NUM_PROCESSORS, LSB_DJOB_HOSTFILE,
  LSB_BATCH_JID, LSB_SUB_HOST, LS_SUBCWD, LSB_OUTPUTFILE/LSB_ERRORFILE, DROVER_EMU_*.
* Output goes straight to the -o file (LSB_STDOUT_DIRECT=Y behaviour) and LSF's job
  report ("Sender: LSF System ... Successfully completed." etc.) is appended when
  the job ends. Without -o, LSF mails the output: here the mail (report + output)
  is written to $DROVER_EMU_STATE/mail/JOBID[.INDEX].
* bkill and the run limit (-W): SIGINT, then SIGTERM, then SIGKILL, each
  DROVER_EMU_KILL_GRACE s apart (LSF's JOB_TERMINATE_INTERVAL); the job ends in
  EXIT with EXIT_REASON TERM_OWNER / TERM_RUNLIMIT. A process killed by signal N
  reports exit code 128+N.
* bjobs: tabular, -l (long), -o "fields" [-json], -noheader, -a/-d/-p/-r,
  -u, -q, -J, -A. Finished jobs are kept for DROVER_EMU_CLEAN_PERIOD s (default
  3600, LSF's CLEAN_PERIOD).
Knobs: DROVER_EMU_QUEUES (valid queues, the first is the default; default
"normal short"), DROVER_EMU_CLUSTER (cluster name, default drover-emu), emulib's.
"""

import json
import os
import re
import shlex
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulib as E  # noqa: E402

SYSTEM = "lsf"
BIN_DIR = os.path.join(E.LIB_DIR, "lsf", "bin")
CLUSTER = os.environ.get("DROVER_EMU_CLUSTER", "drover-emu")
VERSION = "IBM Spectrum LSF Standard 10.1.0.13, Apr 15 2022"


def queues():
    text = os.environ.get("DROVER_EMU_QUEUES") or "normal short"
    return [q for q in re.split(r"[\s,]+", text) if q]


class BsubError(Exception):
    def __init__(self, message, code=255):
        super().__init__(message)
        self.message, self.code = message, code


ARG_OPTS = {
    "-J", "-q", "-P", "-n", "-W", "-M", "-R", "-o", "-oo", "-e", "-eo", "-cwd", "-env", "-nnodes",
    "-G", "-u", "-alloc_flags", "-gpu", "-app", "-sp", "-w", "-b", "-E", "-Ep", "-L", "-outdir", "-We",
    "-c", "-i", "-is", "-m", "-g", "-sla", "-ext", "-Jd", "-k", "-f", "-S", "-t", "-U", "-v", "-F", "-D",
    "-C", "-Lp", "-data", "-rnc", "-ptl", "-stage", "-network", "-hostfile", "-smt", "-T", "-p", "-jsdl",
    "-XF", "-Q", "-a", "-ar", "-cn_cpus", "-cn_mem", "-core_isolation", "-csm", "-eptl", "-ln_mem",
    "-ln_slots", "-step_cgroup", "-datagrp", "-freq", "-pack", "-env",
}
FLAG_OPTS = {"-B", "-N", "-K", "-x", "-r", "-rn", "-H", "-hl", "-tty", "-ti", "-Zs", "-IX", "-Ne"}
INTERACTIVE = {"-I", "-Ip", "-Is", "-IS", "-ISp", "-ISs"}

UNIT_KB = {"KB": 1, "K": 1, "MB": 1024, "M": 1024, "GB": 1024 ** 2, "G": 1024 ** 2, "TB": 1024 ** 3,
           "T": 1024 ** 3, "PB": 1024 ** 4, "P": 1024 ** 4, "EB": 1024 ** 5, "E": 1024 ** 5}


def bsub_usage():
    return ("Usage: bsub [-h] [-V] [-H] [-x] [-r | -rn] [-N] [-B] [-I | -Ip | -Is | -IS | -ISp | -ISs | -IX | -K]\n"
            "            [-q queue_name ...] [-m host_name[+[pref_level]] | host_group[+[pref_level]] ...]\n"
            "            [-n min_processors[,max_processors]] [-R res_req] [-J job_name] [-W [hour:]minute[/host_name]]\n"
            "            [-M mem_limit] [-o out_file] [-oo out_file] [-e err_file] [-eo err_file] [-cwd dir]\n"
            "            [-P project_name] [-nnodes num] [-env \"none\" | \"all [, var=val ...]\"]\n"
            "            [command [argument ...]]")


def split_bsub(args):
    """[(opt, value)] and the rest (command and its arguments)."""
    opts, i = [], 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            raise BsubError(bsub_usage(), 0)
        if a == "-V":
            raise BsubError(VERSION, 0)
        if a in INTERACTIVE:
            raise BsubError(f"{a}: interactive jobs are not supported by this emulator. Job not submitted.")
        if a in ARG_OPTS:
            if i + 1 >= len(args):
                raise BsubError(f"{a}: option requires an argument. Job not submitted.\n" + bsub_usage())
            opts.append((a, args[i + 1]))
            i += 2
            continue
        if a in FLAG_OPTS:
            opts.append((a, None))
            i += 1
            continue
        if a.startswith("-") and len(a) > 1:
            # -n4 style
            m = re.match(r"^(-[a-zA-Z]+?)(\d.*)$", a)
            if m and m.group(1) in ARG_OPTS:
                opts.append((m.group(1), m.group(2)))
                i += 1
                continue
            raise BsubError(f"{a}: Illegal option. Job not submitted.\n" + bsub_usage())
        return opts, args[i:]
    return opts, []


RES_SECTIONS = ("select", "order", "rusage", "span", "same", "cu", "affinity")


def parse_rusage(body):
    out = {}
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        m = re.match(r"^(\w+)=([\d.]+)([KMGTPE]B?)?(?::[\w=.]+)*$", item, re.I)
        if not m:
            raise ValueError(item)
        out[m.group(1)] = m.group(2) + (m.group(3) or "")
    return out


def parse_res_req(text):
    """-> dict of sections; ValueError on bad syntax."""
    text = text.strip()
    out = {}
    if "[" not in text:
        if text:
            out["select"] = text
        return out
    pos = 0
    while pos < len(text):
        m = re.compile(r"\s*(\w+)\[").match(text, pos)
        if not m:
            if text[pos:].strip() == "":
                break
            raise ValueError(text)
        name = m.group(1)
        if name not in RES_SECTIONS:
            raise ValueError(text)
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"[": 1, "]": -1}.get(text[j], 0)
            j += 1
        if depth:
            raise ValueError(text)
        body = text[m.end():j - 1]
        if name == "span":
            sm = re.match(r"^(hosts=(-?1)|ptile=(\d+|!)|block=(\d+))$", body.strip())
            if not sm:
                raise ValueError(text)
        elif name == "rusage":
            parse_rusage(body)
        out.setdefault(name, [])
        out[name].append(body.strip())
        pos = j
    return out


def parse_job_name(text):
    """'name[1-10:2]%3' -> (name, [indices] or None, spec text)."""
    m = re.match(r"^([^\[\]]*)\[([\d,:\- ]+)\](?:%(\d+))?$", text)
    if not m:
        if "[" in text or "]" in text:
            raise BsubError("Bad job name. Job not submitted.")
        return text, None, None
    try:
        idx = E.parse_ranges(m.group(2).replace(" ", ""))
    except ValueError:
        raise BsubError(f"{text}: Bad job array index list. Job not submitted.")
    if not idx or min(idx) < 1 or len(idx) > 1000 or max(idx) > 2147483646:
        raise BsubError(f"{text}: Bad job array index list. Job not submitted.")
    return m.group(1), idx, m.group(2)


def parse_runlimit(text):
    t = text.split("/")[0].strip()
    m = re.match(r"^(?:(\d+):)?(\d+)$", t)
    if not m:
        raise BsubError(f"{text}: Bad RUNLIMIT specification. Job not submitted.")
    return (int(m.group(1) or 0) * 60 + int(m.group(2))) * 60


def parse_mem(text):
    unit_default = os.environ.get("LSF_UNIT_FOR_LIMITS", "KB").upper()
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGTPE]B?)?$", text.strip(), re.I)
    if not m:
        raise BsubError(f"{text}: Bad memory limit specification. Job not submitted.")
    unit = (m.group(2) or unit_default).upper()
    return float(m.group(1)) * UNIT_KB.get(unit, 1)


class Spec:
    def __init__(self):
        self.name = None
        self.indices = None
        self.index_spec = None
        self.queue = None
        self.project = None
        self.nmin = None
        self.nmax = None
        self.runlimit = None
        self.memlimit_kb = None
        self.res = []
        self.out = None
        self.out_overwrite = False
        self.err = None
        self.err_overwrite = False
        self.cwd = None
        self.env = None
        self.nnodes = None
        self.raw = []

    def apply(self, opt, val):
        self.raw.append((opt, val))
        if opt == "-J":
            self.name, self.indices, self.index_spec = parse_job_name(val)
        elif opt == "-q":
            self.queue = val.split()[0] if val.split() else val
        elif opt == "-P":
            self.project = val
        elif opt == "-n":
            m = re.match(r"^(\d+)(?:,(\d+))?$", val.strip())
            if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
                raise BsubError(f"{val}: Bad argument for option -n. Job not submitted.")
            self.nmin = int(m.group(1))
            self.nmax = int(m.group(2) or m.group(1))
        elif opt == "-W":
            self.runlimit = parse_runlimit(val)
        elif opt == "-M":
            self.memlimit_kb = parse_mem(val)
        elif opt == "-R":
            try:
                parse_res_req(val)
            except ValueError:
                raise BsubError("Bad resource requirement syntax. Job not submitted.")
            self.res.append(val)
        elif opt in ("-o", "-oo"):
            self.out, self.out_overwrite = val, opt == "-oo"
        elif opt in ("-e", "-eo"):
            self.err, self.err_overwrite = val, opt == "-eo"
        elif opt == "-cwd":
            self.cwd = val
        elif opt == "-env":
            self.env = val
        elif opt == "-nnodes":
            if not val.isdigit() or int(val) < 1:
                raise BsubError(f"{val}: Bad argument for option -nnodes. Job not submitted.")
            self.nnodes = int(val)


def expand_pattern(path, seq, idx):
    return path.replace("%J", str(seq)).replace("%I", str(idx if idx is not None else 0))


def resolve_out(given, cwd, seq, idx, suffix):
    p = expand_pattern(given, seq, idx)
    if not os.path.isabs(p):
        p = os.path.join(cwd, p)
    if p.endswith("/") or os.path.isdir(p):
        p = os.path.join(p, f"{seq}.{suffix}" if idx is None else f"{seq}_{idx}.{suffix}")
    return os.path.normpath(p)


def slots_layout(spec):
    """(slots, [(host, n), ...]) for LSB_MCPU_HOSTS."""
    slots = spec.nmin or 1
    ptile = None
    hosts1 = False
    for r in spec.res:
        sections = parse_res_req(r)
        for body in sections.get("span", []):
            if body.startswith("ptile=") and body[6:].isdigit():
                ptile = int(body[6:])
            if body == "hosts=1":
                hosts1 = True
    if spec.nnodes and not spec.nmin:
        slots = spec.nnodes
        return slots, [(E.HOST, 1)] * spec.nnodes
    if spec.nnodes:
        per = max(1, -(-slots // spec.nnodes))
        groups, left = [], slots
        for _ in range(spec.nnodes):
            n = min(per, left)
            if n > 0:
                groups.append((E.HOST, n))
            left -= n
        return slots, groups
    if ptile and not hosts1:
        groups, left = [], slots
        while left > 0:
            groups.append((E.HOST, min(ptile, left)))
            left -= ptile
        return slots, groups
    return slots, [(E.HOST, slots)]


def cmd_bsub(argv):
    try:
        return _bsub(argv)
    except BsubError as e:
        if e.code == 0:
            print(e.message)
            return 0
        E.die(e.message, e.code)


def _bsub(argv):
    cmd_opts, command = split_bsub(argv)
    cwd = os.getcwd()
    script = None
    if not command:
        script = E.read_script(None)
        if not script.strip():
            raise BsubError("No command is specified. Job not submitted.")
    directives_from = script
    if command and os.environ.get("LSB_BSUB_PARSE_SCRIPT", "Y").upper() != "N":
        cand = command[0] if os.path.isabs(command[0]) else os.path.join(cwd, command[0])
        if os.path.isfile(cand):
            try:
                with open(cand, errors="replace") as f:
                    directives_from = f.read(1 << 20)
            except OSError:
                directives_from = None
    spec = Spec()
    if directives_from:
        for line in E.directive_lines(directives_from, "#BSUB"):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                raise BsubError(f"#BSUB {line}: Bad directive. Job not submitted.")
            d_opts, rest = split_bsub(words)
            if rest:
                raise BsubError(f"#BSUB {line}: Bad directive. Job not submitted.")
            for o, v in d_opts:
                spec.apply(o, v)
    for o, v in cmd_opts:
        spec.apply(o, v)

    qs = queues()
    queue = spec.queue or qs[0]
    if queue not in qs:
        raise BsubError(f"{queue}: No such queue. Job not submitted.")
    store = E.Store(SYSTEM)
    seq = store.next_seq()
    spool = store.spool(seq)
    if script is not None:
        sfile = os.path.join(spool, "script")
        E.write_file(sfile, script, 0o755)
        argv_job = [sfile] if script.startswith("#!") else ["/bin/sh", sfile]
        command_text = script
        # LSF names a spooled script job after its first line (often "#!/bin/bash")
        default_name = next((ln.strip() for ln in script.splitlines() if ln.strip()), "NONAME")
    else:
        command_text = " ".join(command)
        argv_job = ["/bin/sh", "-c", command_text]
        default_name = command_text
    name = spec.name or default_name
    is_array = spec.indices is not None
    slots, groups = slots_layout(spec)
    hosts_list = " ".join(E.HOST for _ in range(slots))
    mcpu = " ".join(f"{h} {n}" for h, n in groups)
    workdir = cwd
    if spec.cwd:
        workdir = expand_pattern(spec.cwd, seq, None)
        if not os.path.isabs(workdir):
            workdir = os.path.join(cwd, workdir)

    submit_env = dict(os.environ)
    base_env = {}
    env_opt = (spec.env or "all").strip()
    if env_opt.lower().startswith("none"):
        base_env = {"HOME": E.user_home(), "USER": E.user_name(), "LOGNAME": E.user_name(),
                    "PATH": E.login_path(BIN_DIR), "SHELL": E.user_shell()}
    else:
        base_env = dict(submit_env)
    for item in env_opt.split(",")[1:] if env_opt.lower().startswith(("all", "none")) else env_opt.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            base_env[k.strip()] = v.strip()

    indices = spec.indices if is_array else [None]
    tasks = {}
    for idx in indices:
        key = str(idx) if idx is not None else "0"
        env = dict(base_env)
        hostfile = os.path.join(spool, f"hostfile-{key}")
        env.update({
            "LSB_JOBID": str(seq),
            "LSB_JOBNAME": f"{name}[{idx}]" if idx is not None else name,
            "LSB_JOBINDEX": str(idx if idx is not None else 0),
            "LSB_QUEUE": queue,
            "LSB_HOSTS": hosts_list,
            "LSB_MCPU_HOSTS": mcpu,
            "LSB_DJOB_NUMPROC": str(slots),
            "LSB_MAX_NUM_PROCESSORS": str(slots),
            "LSB_DJOB_HOSTFILE": hostfile,
            "LSB_BATCH_JID": f"{seq}[{idx}]" if idx is not None else str(seq),
            "LSB_SUB_HOST": E.HOST,
            "LS_SUBCWD": cwd,
            "LSB_EXEC_CLUSTER": CLUSTER,
            "LSB_JOBFILENAME": os.path.join(spool, "script") if script is not None else command_text,
            "LSF_BINDIR": BIN_DIR,
            "LSB_PROJECT_NAME": spec.project or "default",
        })
        if is_array:
            env["LSB_JOBINDEX_END"] = str(max(indices))
            env["LSB_JOBINDEX_STEP"] = "1"
        stdout = resolve_out(spec.out, cwd, seq, idx, "out") if spec.out else None
        stderr = resolve_out(spec.err, cwd, seq, idx, "err") if spec.err else None
        mail = None
        if stdout:
            env["LSB_OUTPUTFILE"] = stdout
        if stderr:
            env["LSB_ERRORFILE"] = stderr
        if not stdout:
            os.makedirs(os.path.join(store.dir, "mail"), exist_ok=True)
            mail = os.path.join(store.dir, "mail", f"{seq}" + (f".{idx}" if idx is not None else ""))
            stdout = mail
        env.update(E.emulator_env())
        grace = E.kill_grace()
        term_seq = [[int(signal.SIGINT), 0], [int(signal.SIGTERM), grace], [int(signal.SIGKILL), grace]]
        task = E.Store.new_task(argv_job, env, workdir, stdout, stderr if stderr != stdout else None,
                                walltime=spec.runlimit, kill_seq=term_seq, wall_seq=term_seq,
                                index=idx, hostfile=hostfile, mail=mail)
        task["stdout_mode"] = "w" if (spec.out_overwrite or mail) else "a"
        task["stderr_mode"] = "w" if spec.err_overwrite else "a"
        tasks[key] = task
    job = store.new_job(
        seq, id=str(seq), name=name, queue=queue, user=E.user_name(), project=spec.project or "default",
        index_spec=spec.index_spec, indices=indices if is_array else None, slots=slots,
        runlimit=spec.runlimit, memlimit_kb=spec.memlimit_kb, res=spec.res, cwd=cwd, exec_cwd=workdir,
        command=command_text, default_queue=spec.queue is None, hosts=[h for h, _ in groups],
        start_delay=E.env_float("DROVER_EMU_START_DELAY", 0.0), out=spec.out, err=spec.err,
        nnodes=spec.nnodes,
    )
    job["tasks"] = tasks
    store.launch(job)
    where = "default queue" if spec.queue is None else "queue"
    print(f"Job <{seq}> is submitted to {where} <{queue}>.")
    return 0


# ------------------------------------------------------------------ runner hooks


def on_start(store, job, key, task):
    E.write_file(task["hostfile"], "".join(f"{E.HOST}\n" for _ in range(job["slots"])))


def stat_of(task):
    st = task["state"]
    if st == "Q":
        return "PEND"
    if st == "R":
        return "RUN"
    if task.get("reason") == "exit" and task.get("exit_code") == 0:
        return "DONE"
    return "EXIT"


def exit_code_of(task):
    if task["state"] != "F" or stat_of(task) == "DONE":
        return None
    if task.get("signal"):
        return 128 + task["signal"]
    return task.get("exit_code")


def exit_reason(task):
    r = task.get("reason")
    if task["state"] != "F":
        return ""
    if r == "walltime":
        return "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    if r == "killed":
        return "TERM_OWNER: job killed by owner"
    if r == "lost":
        return "TERM_ZOMBIE: job exited while LSF is not available"
    return ""


def lsf_time(t):
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t)) if t else ""


def on_finish(store, job, key, task):
    idx = task.get("index")
    jid = f"{job['seq']}[{idx}]" if idx is not None else str(job["seq"])
    name = f"{job['name']}[{idx}]" if idx is not None else job["name"]
    stat = stat_of(task)
    start = task.get("start_time")
    end = task.get("end_time") or time.time()
    lines = ["", "------------------------------------------------------------",
             f"Sender: LSF System <lsfadmin@{E.HOST}>",
             f"Subject: Job {jid}: <{name}> in cluster <{CLUSTER}> {'Done' if stat == 'DONE' else 'Exited'}",
             "",
             f"Job <{name}> was submitted from host <{E.HOST}> by user <{job['user']}> in cluster <{CLUSTER}> at {lsf_time(job['submit_time'])}"]
    if start:
        lines += [f"Job was executed on host(s) <{job['slots']}*{E.HOST}>, in queue <{job['queue']}>, as user <{job['user']}> in cluster <{CLUSTER}> at {lsf_time(start)}",
                  f"<{E.user_home()}> was used as the home directory.",
                  f"<{job['exec_cwd']}> was used as the working directory.",
                  f"Started at {lsf_time(start)}"]
    lines += [f"Terminated at {lsf_time(end)}", f"Results reported at {lsf_time(end)}", "",
              "Your job looked like:", "", "------------------------------------------------------------",
              "# LSBATCH: User input", job["command"].rstrip("\n"),
              "------------------------------------------------------------", ""]
    reason = exit_reason(task)
    if reason:
        lines.append(reason.split(":")[0] + ":" + reason.split(":", 1)[1] + ".")
    if stat == "DONE":
        lines.append("Successfully completed.")
    elif task.get("signal"):
        lines.append(f"Exited with signal termination: {signal.strsignal(task['signal']) or task['signal']}.")
    elif task.get("exit_code") is not None:
        lines.append(f"Exited with exit code {task['exit_code']}.")
    else:
        lines.append("Exited.")
    run = int(end - start) if start else 0
    lines += ["", "Resource usage summary:", "",
              "    CPU time :                                   0.00 sec.",
              "    Max Memory :                                 -",
              "    Average Memory :                             -",
              f"    Total Requested Memory :                     {int(job['memlimit_kb'] / 1024)} MB" if job.get("memlimit_kb") else "    Total Requested Memory :                     -",
              "    Delta Memory :                               -",
              "    Max Swap :                                   -",
              "    Max Processes :                              -",
              "    Max Threads :                                -",
              f"    Run time :                                   {run} sec.",
              f"    Turnaround time :                            {int(end - job['submit_time'])} sec.", "",
              "The output (if any) is above this job summary.", ""]
    E.append_text(task["stdout"], "\n".join(lines) + "\n")


# ------------------------------------------------------------------ bjobs

FIELDS = {
    "jobid": "JOBID", "stat": "STAT", "user": "USER", "queue": "QUEUE", "job_name": "JOB_NAME",
    "name": "JOB_NAME", "exit_code": "EXIT_CODE", "exit_reason": "EXIT_REASON",
    "submit_time": "SUBMIT_TIME", "start_time": "START_TIME", "finish_time": "FINISH_TIME",
    "from_host": "FROM_HOST", "exec_host": "EXEC_HOST", "nexec_host": "NEXEC_HOST", "slots": "SLOTS",
    "nalloc_slot": "NALLOC_SLOT", "nreq_slot": "NREQ_SLOT", "proj_name": "PROJ_NAME",
    "project": "PROJ_NAME", "run_time": "RUN_TIME", "runtimelimit": "RUNTIMELIMIT",
    "max_req_proc": "MAX_REQ_PROC", "min_req_proc": "MIN_REQ_PROC", "pids": "PIDS",
    "sub_cwd": "SUB_CWD", "exec_cwd": "EXEC_CWD", "output_file": "OUTPUT_FILE",
    "error_file": "ERROR_FILE", "command": "COMMAND", "jobindex": "JOBINDEX",
    "pend_reason": "PEND_REASON", "time_left": "TIME_LEFT", "memlimit": "MEMLIMIT",
    "user_group": "USER_GROUP", "job_description": "JOB_DESCRIPTION", "job_priority": "JOB_PRIORITY",
    "effective_resreq": "EFFECTIVE_RESREQ", "combined_resreq": "COMBINED_RESREQ",
    "alloc_slot": "ALLOC_SLOT", "nthreads": "NTHREADS", "exec_home": "EXEC_HOME",
    "first_host": "FIRST_HOST", "pend_time": "PEND_TIME",
}


def short_time(t):
    return time.strftime("%b %d %H:%M", time.localtime(t)) if t else ""


def field_value(job, task, field):
    idx = task.get("index")
    stat = stat_of(task)
    start, end = task.get("start_time"), task.get("end_time")
    now = time.time()
    slots = job["slots"]
    if field == "JOBID":
        return str(job["seq"])
    if field == "STAT":
        return stat
    if field == "USER":
        return job["user"]
    if field == "QUEUE":
        return job["queue"]
    if field == "JOB_NAME":
        return f"{job['name']}[{idx}]" if idx is not None else job["name"]
    if field == "EXIT_CODE":
        c = exit_code_of(task)
        return "" if c is None else str(c)
    if field == "EXIT_REASON":
        return exit_reason(task)
    if field == "SUBMIT_TIME":
        return short_time(job["submit_time"])
    if field == "START_TIME":
        return short_time(start)
    if field == "FINISH_TIME":
        return short_time(end) + " L" if end else ""
    if field == "FROM_HOST":
        return E.HOST
    if field == "EXEC_HOST":
        if not start:
            return ""
        return ":".join(E.HOST for _ in range(slots))
    if field == "FIRST_HOST":
        return E.HOST if start else ""
    if field == "NEXEC_HOST":
        return str(len(job.get("hosts") or [E.HOST])) if start else ""
    if field in ("SLOTS", "NALLOC_SLOT"):
        return str(slots) if start else ""
    if field in ("NREQ_SLOT", "MIN_REQ_PROC", "MAX_REQ_PROC"):
        return str(slots)
    if field == "ALLOC_SLOT":
        return ":".join(E.HOST for _ in range(slots)) if start else ""
    if field == "PROJ_NAME":
        return job["project"]
    if field == "RUN_TIME":
        return f"{int(((end or now) - start) if start else 0)} second(s)"
    if field == "RUNTIMELIMIT":
        return f"{job['runlimit'] / 60:.1f}" if job.get("runlimit") else ""
    if field == "TIME_LEFT":
        if job.get("runlimit") and start and task["state"] == "R":
            left = max(0, int(job["runlimit"] - (now - start)))
            return f"{left // 3600}:{left % 3600 // 60:02d} L"
        return ""
    if field == "MEMLIMIT":
        return f"{job['memlimit_kb'] / 1024:.0f} Mbytes" if job.get("memlimit_kb") else ""
    if field == "PIDS":
        return str(task["pid"]) if task["state"] == "R" and task.get("pid") else ""
    if field == "SUB_CWD":
        return job["cwd"]
    if field == "EXEC_CWD":
        return job["exec_cwd"] if start else ""
    if field == "EXEC_HOME":
        return E.user_home() if start else ""
    if field == "OUTPUT_FILE":
        return task["stdout"] if not task.get("mail") else ""
    if field == "ERROR_FILE":
        return task["stderr"] or ""
    if field == "COMMAND":
        return job["command"].strip().splitlines()[0] if job["command"].strip() else ""
    if field == "JOBINDEX":
        return str(idx if idx is not None else 0)
    if field == "PEND_REASON":
        return "New job is waiting for scheduling;" if task["state"] == "Q" else ""
    if field == "PEND_TIME":
        return str(int((start or now) - job["submit_time"]))
    if field == "NTHREADS":
        return "1" if task["state"] == "R" else ""
    if field in ("EFFECTIVE_RESREQ", "COMBINED_RESREQ"):
        return " ".join(job.get("res") or [])
    return ""


def lsf_json(records):
    """LSF's own JSON layout (2-space indent, no space after colons)."""
    out = ["{", '  "COMMAND":"bjobs",', f'  "JOBS":{len(records)},', '  "RECORDS":[']
    for n, rec in enumerate(records):
        out.append("    {")
        items = list(rec.items())
        for k, (name, val) in enumerate(items):
            comma = "," if k < len(items) - 1 else ""
            out.append(f"      {json.dumps(name)}:{json.dumps(val)}{comma}")
        out.append("    }" + ("," if n < len(records) - 1 else ""))
    out.append("  ]")
    out.append("}")
    return "\n".join(out)


def parse_jobid_arg(text):
    m = re.match(r"^(\d+)(?:\[(\d+)\])?$", text.strip())
    if not m:
        return None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


# bjobs switches that select or format without an argument: the option they set.
BJOBS_SWITCHES = {"-a": "all", "-d": "done", "-p": "pend", "-r": "run", "-l": "long"}


def cmd_bjobs(argv):
    opts = {"fmt": None, "json": False, "noheader": False, "all": False, "done": False, "pend": False,
            "run": False, "long": False, "users": None, "queue": None, "name": None, "wide": False}
    ids = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-o":
            i += 1
            opts["fmt"] = argv[i] if i < len(argv) else E.die("bjobs: option requires an argument -- o", 255)
        elif a == "-json":
            opts["json"] = True
        elif a == "-noheader":
            opts["noheader"] = True
        elif a in ("-u", "-q", "-J", "-m", "-P", "-G", "-g", "-app", "-sla", "-Lp"):
            i += 1
            val = argv[i] if i < len(argv) else E.die(f"bjobs: option requires an argument -- {a[1:]}", 255)
            if a == "-u":
                opts["users"] = val
            elif a == "-q":
                opts["queue"] = val
            elif a == "-J":
                opts["name"] = val
        elif a in BJOBS_SWITCHES:
            opts[BJOBS_SWITCHES[a]] = True
        elif a in ("-w", "-W", "-X", "-A", "-hms", "-s", "-aps", "-x", "-UF"):
            opts["wide"] = opts["wide"] or a == "-w"
        elif a == "-h":
            print("Usage: bjobs [-h] [-V] [-A] [-a] [-aps] [-d] [-p] [-r] [-s] [-l | -w] [-o \"field ...\"] [-json] "
                  "[-noheader] [-u user_name | -u all] [-q queue_name] [-J job_name] [job_ID | \"job_ID[index]\" ...]")
            return 0
        elif a == "-V":
            print(VERSION)
            return 0
        elif a.startswith("-"):
            E.die(f"{a}: Illegal option.\nUsage: bjobs [-h] [-V] [-A] [-a] [-aps] [-d] [-p] [-r] [-s] [-l | -w] ...", 255)
        else:
            ids.append(a)
        i += 1
    if opts["json"] and not opts["fmt"]:
        E.die("bjobs: The -json option must be used together with the -o option.", 255)
    store = E.Store(SYSTEM)
    store.reconcile()
    clean = E.env_float("DROVER_EMU_CLEAN_PERIOD", 3600.0)
    now = time.time()
    jobs = {j["seq"]: j for j in store.jobs()}

    def kept(task):
        return task["state"] != "F" or now - (task.get("end_time") or now) <= clean

    rows, errors = [], []
    if ids:
        for text in ids:
            parsed = parse_jobid_arg(text)
            job = jobs.get(parsed[0]) if parsed else None
            if job is None:
                errors.append((text, f"Job <{text}> is not found"))
                continue
            if parsed[1] is not None:
                task = job["tasks"].get(str(parsed[1]))
                sel = [task] if task and kept(task) else []
            else:
                sel = [t for t in job["tasks"].values() if kept(t)]
            if not sel:
                errors.append((text, f"Job <{text}> is not found"))
            rows.extend((job, t) for t in sel)
    else:
        for job in jobs.values():
            for t in job["tasks"].values():
                if not kept(t):
                    continue
                unfinished = t["state"] != "F"
                if opts["done"]:
                    ok = not unfinished
                elif opts["all"]:
                    ok = True
                else:
                    ok = unfinished
                if opts["pend"]:
                    ok = ok and t["state"] == "Q"
                if opts["run"]:
                    ok = ok and t["state"] == "R"
                if ok:
                    rows.append((job, t))
        if opts["users"] and opts["users"] != "all":
            rows = [(j, t) for j, t in rows if j["user"] == opts["users"]]
        if opts["queue"]:
            rows = [(j, t) for j, t in rows if j["queue"] == opts["queue"]]
        if opts["name"]:
            pat = opts["name"]
            rows = [(j, t) for j, t in rows if j["name"] == pat or field_value(j, t, "JOB_NAME") == pat]

    if opts["fmt"]:
        fields, delim = parse_fmt(opts["fmt"])
        if opts["json"]:
            records = []
            for job, task in rows:
                records.append({FIELDS[f]: field_value(job, task, FIELDS[f]) for f, _ in fields})
            for text, msg in errors:
                records.append({"JOBID": text, "ERROR": msg})
            print(lsf_json(records))
            return 0
        if not opts["noheader"] and rows:
            print(render_row([FIELDS[f] for f, _ in fields], fields, delim))
        for job, task in rows:
            print(render_row([field_value(job, task, FIELDS[f]) or "-" for f, _ in fields], fields, delim))
    elif opts["long"]:
        for job, task in rows:
            print(long_format(job, task))
    elif rows:
        if not opts["noheader"]:
            print("JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME")
        for job, task in rows:
            ex = ""
            if task.get("start_time"):
                ex = f"{job['slots']}*{E.HOST}" if job["slots"] > 1 else E.HOST
            name = field_value(job, task, "JOB_NAME")
            if not opts["wide"] and len(name) > 10:
                name = "*" + name[-9:]
            print(f"{job['seq']:<7} {job['user'][:7]:<7} {stat_of(task):<5} {job['queue'][:10]:<10} "
                  f"{E.HOST[:11]:<11} {ex[:11]:<11} {name:<10} {short_time(job['submit_time'])}")
    for _, msg in errors:
        sys.stderr.write(msg + "\n")
    if not rows and not errors:
        if opts["fmt"] and opts["json"]:
            return 0
        sys.stderr.write("No unfinished job found\n" if not (opts["all"] or opts["done"]) else "No job found\n")
        return 255
    return 255 if errors and not rows else 0


def parse_fmt(text):
    delim = None
    m = re.search(r"\bdelimiter\s*=\s*'([^']*)'", text)
    if m:
        delim = m.group(1)
        text = text[:m.start()] + text[m.end():]
    fields = []
    for tok in text.replace(",", " ").split():
        parts = tok.split(":")
        name = parts[0].lower()
        if name not in FIELDS:
            E.die(f"bjobs: Invalid field name <{parts[0]}> in the -o option.", 255)
        width = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        fields.append((name, width))
    if not fields:
        E.die("bjobs: The -o option requires at least one field.", 255)
    return fields, delim


def render_row(values, fields, delim):
    if delim is not None:
        return delim.join(values)
    cells = []
    for v, (name, width) in zip(values, fields):
        if width is None:
            cells.append(f"{v:<{max(len(FIELDS[name]), 10)}}")
        else:
            cells.append(f"{v:<{width}}" if len(v) <= width else v[:width - 1] + "*")
    return " ".join(cells).rstrip()


def long_format(job, task):
    idx = task.get("index")
    jid = f"{job['seq']}[{idx}]" if idx is not None else str(job["seq"])
    lines = [f"Job <{jid}>, Job Name <{field_value(job, task, 'JOB_NAME')}>, User <{job['user']}>, "
             f"Project <{job['project']}>, Status <{stat_of(task)}>, Queue <{job['queue']}>, "
             f"Command <{field_value(job, task, 'COMMAND')}>",
             f"{lsf_time(job['submit_time'])}: Submitted from host <{E.HOST}>, CWD <{job['cwd']}>, "
             f"{job['slots']} Task(s);"]
    if job.get("runlimit"):
        lines += ["", " RUNLIMIT", f" {job['runlimit'] / 60:.1f} min"]
    if task.get("start_time"):
        lines.append(f"{lsf_time(task['start_time'])}: Started {job['slots']} Task(s) on Host(s) "
                     f"<{job['slots']}*{E.HOST}>, Allocated {job['slots']} Slot(s) on Host(s) <{job['slots']}*{E.HOST}>, "
                     f"Execution Home <{E.user_home()}>, Execution CWD <{job['exec_cwd']}>;")
    if task["state"] == "F":
        stat = stat_of(task)
        if stat == "DONE":
            lines.append(f"{lsf_time(task['end_time'])}: Done successfully.")
        else:
            c = exit_code_of(task)
            lines.append(f"{lsf_time(task['end_time'])}: Exited with exit code {c}." if c is not None
                         else f"{lsf_time(task['end_time'])}: Exited.")
            if exit_reason(task):
                lines.append(f"{lsf_time(task['end_time'])}: Completed <exit>; {exit_reason(task).split(':')[0]}.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ bkill


def cmd_bkill(argv):
    sig = None
    ids = []
    force = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-s":
            i += 1
            if i >= len(argv):
                E.die("bkill: option requires an argument -- s", 255)
            try:
                sig = E.signal_number(argv[i])
            except (ValueError, AttributeError):
                E.die(f"{argv[i]}: Illegal signal value", 255)
        elif a == "-r":
            force = True
        elif a in ("-u", "-q", "-J", "-m", "-g", "-sla", "-app", "-C"):
            i += 1
        elif a in ("-l", "-b", "-d", "-stat"):
            pass
        elif a.startswith("-"):
            E.die(f"{a}: Illegal option.\nUsage: bkill [-h] [-V] [-l] [-b] [-r | -s signal_value | -s signal_name] "
                  "[-u user_name | -u all] [-J job_name] [job_ID | \"job_ID[index]\" ...]", 255)
        else:
            ids.append(a)
        i += 1
    if not ids:
        E.die("Job ID or one of '-m', '-u' '-q' and '-J' must be specified", 255)
    store = E.Store(SYSTEM)
    store.reconcile()
    rc = 0
    with store.lock():
        targets = []
        if ids == ["0"]:
            for job in store.jobs():
                for key, t in job["tasks"].items():
                    if t["state"] != "F":
                        targets.append((job["seq"], key, f"{job['seq']}" if t.get("index") is None else f"{job['seq']}[{t['index']}]"))
            if not targets:
                E.die("No unfinished job found", 255)
        for text in ids if ids != ["0"] else []:
            parsed = parse_jobid_arg(text)
            job = store.load(parsed[0]) if parsed else None
            if job is None or job.get("system") != SYSTEM:
                sys.stderr.write(f"Job <{text}>: No matching job found\n")
                rc = 255
                continue
            keys = [str(parsed[1])] if parsed[1] is not None else list(job["tasks"])
            keys = [k for k in keys if k in job["tasks"]]
            if not keys:
                sys.stderr.write(f"Job <{text}>: No matching job found\n")
                rc = 255
                continue
            if all(job["tasks"][k]["state"] == "F" for k in keys):
                sys.stderr.write(f"Job <{text}>: Job has already finished\n")
                rc = 255
                continue
            for k in keys:
                targets.append((job["seq"], k, None))
            print(f"Job <{text}> is being {'signaled' if sig else 'terminated'}")
        for seq, key, label in targets:
            job = store.load(seq)
            if sig is not None:
                store.request_kill(job, key, kind="signal", sig=sig)
            else:
                store.request_kill(job, key, force=force)
            if label:
                print(f"Job <{label}> is being {'signaled' if sig else 'terminated'}")
    return rc


# ------------------------------------------------------------------ blaunch


def cmd_blaunch(argv):
    hosts = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-z":
            # one argument, a space-separated host list: blaunch -z "h1 h2" command
            if i + 1 >= len(argv):
                E.die("blaunch: -z requires a host list", 255)
            hosts = argv[i + 1].split()
            i += 2
            continue
        if a == "-u":
            i += 1
            try:
                with open(argv[i]) as f:
                    hosts = [ln.split()[0] for ln in f if ln.strip()]
            except (OSError, IndexError):
                E.die(f"blaunch: cannot read host file {argv[i] if i < len(argv) else ''}", 255)
            i += 1
            continue
        if a in ("-n", "-no-shell", "-fe", "-q"):
            i += 1
            continue
        if a == "-use-env":
            i += 2
            continue
        if a.startswith("-"):
            E.die(f"blaunch: illegal option {a}\nUsage: blaunch [-n] [-u host_file | -z host_name ... | host_name] "
                  "[-use-env file] [-fe] [-no-shell] command [argument ...]", 255)
        break
    cmd = argv[i:]
    if not os.environ.get("LSB_JOBID"):
        E.die("blaunch: LSB_JOBID is not defined: blaunch must run inside an LSF job", 255)
    alloc = os.environ.get("LSB_HOSTS", "").split()
    if hosts is None and len(cmd) > 1 and cmd[0] in alloc and not os.path.exists(cmd[0]):
        hosts, cmd = [cmd[0]], cmd[1:]
    if not cmd:
        E.die("blaunch: no command given", 255)
    if hosts is None:
        hosts = alloc or [E.HOST]
    for h in hosts:
        if h not in alloc:
            E.die(f"blaunch: host <{h}> is not allocated to job <{os.environ['LSB_JOBID']}>", 255)
    import subprocess
    procs = []
    for taskid, h in enumerate(hosts):
        env = dict(os.environ)
        env["LSF_PM_TASKID"] = str(taskid + 1)
        env["LSB_BIND_CPU_LIST"] = env.get("LSB_BIND_CPU_LIST", "")
        try:
            procs.append(subprocess.Popen(cmd, env=env))
        except OSError as e:
            sys.stderr.write(f"blaunch: failed to launch task on host <{h}>: {e.strerror}\n")
            return 255
    rc = 0
    for p in procs:
        code = p.wait()
        if code != 0:
            rc = code if code > 0 else 128 - code
    return rc


COMMANDS = {"bsub": cmd_bsub, "bjobs": cmd_bjobs, "bkill": cmd_bkill, "blaunch": cmd_blaunch}


def main(prog):
    try:
        sys.exit(COMMANDS[prog](sys.argv[1:]) or 0)
    except BrokenPipeError:
        sys.exit(1)
