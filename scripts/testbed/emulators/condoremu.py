#!/usr/bin/env python3
"""HTCondor command emulator (condor_submit, condor_q, condor_rm, condor_history).

What is emulated (facts from the HTCondor manual):
* condor_submit [-terse] [-append LINE]... [-batch-name N] [FILE] (stdin without
  FILE): a submit description with `key = value` lines (case-insensitive keys,
  `#` comments, `\\` continuation lines, `+Attr = value` / `MY.Attr = value` custom
  job attributes), `$(macro)` expansion ($(Cluster) $(ClusterId) $(Process) $(ProcId)
  $(Item) $(Step), $ENV(VAR), any variable of the file) and `queue [N]` /
  `queue [N] var in (a, b, ...)` statements (several allowed). Keys used:
  universe (vanilla/local/scheduler), executable, arguments/args (new "..." and old
  syntax), environment (new "A=1 B='x y'" and old A=1;B=2 syntax), getenv
  (True/False or a list of names/patterns), input, output, error, log,
  initialdir, request_cpus, request_memory (MiB, or with K/M/G/T units),
  request_disk, request_gpus, +MaxRuntime / allowed_execute_duration (seconds,
  enforced), should_transfer_files, transfer_input_files, transfer_executable,
  leave_in_queue, batch_name. Prints "Submitting job(s)" with one dot per job and
  "N job(s) submitted to cluster C."; a line that is neither an assignment nor a
  queue statement is a syntax error: "ERROR: on Line L of submit file: ..." and
  exit 1.
* The job: executable + arguments run in initialdir (the submit dir by default;
  with should_transfer_files = YES in a fresh scratch dir holding a copy of the
  executable and transfer_input_files). Environment: only what environment/getenv
  give, plus _CONDOR_SCRATCH_DIR, _CONDOR_JOB_IWD, _CONDOR_JOB_AD, _CONDOR_SLOT,
  TMPDIR/TEMP/TMP (the scratch dir), OMP_NUM_THREADS etc. = request_cpus,
  BATCH_SYSTEM=HTCondor, DROVER_EMU_*, and CONDOR_JOB_ID=C.P - an emulator
  addition (real HTCondor has no such variable: pass $(Cluster).$(Process) through
  arguments or environment, which the emulator expands like HTCondor).
  output/error default to /dev/null, as in HTCondor. The user log gets submit (000),
  execute (001), terminated (005), aborted (009) and held (012) events.
* JobStatus: 1 idle, 2 running, 3 removed, 4 completed, 5 held. Completed and
  removed jobs leave the queue (condor_q) for the history (condor_history), unless
  leave_in_queue is true. Exceeding +MaxRuntime / allowed_execute_duration: SIGTERM,
  SIGKILL after DROVER_EMU_KILL_GRACE s, and the job is HELD (5) with a HoldReason
  (real pools implement MaxRuntime with a periodic hold policy); it stays in the queue
  until condor_rm. A job whose executable cannot be run is held too.
* condor_q [-json | -long | -af ATTR... | -nobatch | -totals] [C | C.P | owner],
  condor_rm C | C.P | owner | -all, condor_history [-json | -af ...] [C | C.P] [-limit N].
"""

import fnmatch
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulib as E  # noqa: E402

SYSTEM = "htcondor"
BIN_DIR = os.path.join(E.LIB_DIR, "htcondor", "bin")
SCHEDD_ADDR = f"<127.0.0.1:9618?addrs=127.0.0.1-9618&alias={E.HOST}&noUDP&sock=schedd_emu>"
STATUS_NAMES = {1: "I", 2: "R", 3: "X", 4: "C", 5: "H"}


class SubmitError(Exception):
    pass


# ------------------------------------------------------------------ submit file


def logical_lines(text):
    """(line number, text) of each logical line (continuations joined)."""
    out, buf, start = [], "", None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if start is None:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        out.append((start, buf))
        buf, start = "", None
    if buf:
        out.append((start, buf))
    return out


MACRO_RE = re.compile(r"\$(ENV)?\(([^()]*)\)")


def expand(value, variables, builtins, depth=0):
    def repl(m):
        if m.group(1):
            return os.environ.get(m.group(2), "")
        name = m.group(2)
        default = None
        if ":" in name:
            name, default = name.split(":", 1)
        key = name.strip().lower()
        if key in builtins:
            return str(builtins[key])
        if key in variables and depth < 20:
            return expand(variables[key], variables, builtins, depth + 1)
        return default if default is not None else ""
    return MACRO_RE.sub(repl, value)


def parse_submit(text):
    """-> list of (variables snapshot, count, itemvar, items) per queue statement."""
    variables = {}
    custom = {}
    queues = []
    for lineno, line in logical_lines(text):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"^queue\b(.*)$", s, re.I)
        if m:
            rest = m.group(1).strip()
            count, itemvar, items = 1, None, [None]
            qm = re.match(r"^(\d+)?\s*(?:(\w+)\s+)?(?:in|from)\s*\((.*)\)\s*$", rest, re.I)
            if rest == "":
                pass
            elif rest.isdigit():
                count = int(rest)
            elif qm:
                count = int(qm.group(1) or 1)
                itemvar = (qm.group(2) or "item").lower()
                items = [x for x in re.split(r"[,\s]+", qm.group(3).strip()) if x]
            else:
                raise SubmitError(f"ERROR: on Line {lineno} of submit file: \nERROR: queue statement '{s}' is not "
                                  f"understood by this emulator (use 'queue [N]' or 'queue [N] var in (a, b)')")
            queues.append((dict(variables), dict(custom), count, itemvar, items))
            continue
        m = re.match(r"^([+]|MY\.)?([A-Za-z_][\w.]*)\s*=\s*(.*)$", s)
        if not m:
            raise SubmitError(f"ERROR: on Line {lineno} of submit file: {s}\n"
                              f"ERROR: Failed to parse command file (line {lineno}).")
        if m.group(1):
            custom[m.group(2)] = m.group(3).strip()
        else:
            variables[m.group(2).lower()] = m.group(3).strip()
    if not queues:
        raise SubmitError("ERROR: no 'queue' statement in the submit description: no jobs queued")
    return queues


def parse_arguments(value):
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        body = value[1:-1].replace('""', '\x00')
        args, cur, i, have = [], "", 0, False
        while i < len(body):
            c = body[i]
            if c == "'":
                j = i + 1
                while True:
                    k = body.find("'", j)
                    if k < 0:
                        raise ValueError("unterminated single quote")
                    if k + 1 < len(body) and body[k + 1] == "'":
                        cur += body[j:k] + "'"
                        j = k + 2
                        continue
                    cur += body[j:k]
                    i = k + 1
                    break
                have = True
                continue
            if c.isspace():
                if have or cur:
                    args.append(cur)
                cur, have = "", False
            else:
                cur += c
                have = True
            i += 1
        if have or cur:
            args.append(cur)
        return [a.replace("\x00", '"') for a in args]
    return value.split()


def parse_environment(value):
    value = value.strip()
    env = {}
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        for tok in parse_arguments(value):
            if "=" in tok:
                k, v = tok.split("=", 1)
                env[k] = v
        return env
    for item in value.split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            env[k.strip()] = v
    return env


def parse_memory_mib(value, key):
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGT]B?)?$", value.strip(), re.I)
    if not m:
        raise SubmitError(f"ERROR: {key}={value} is not a valid size (use a number of MiB or units K M G T)")
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[(m.group(2) or "M")[0].upper()]
    return int(float(m.group(1)) * factor + 0.999999)


def classad_value(expr):
    e = expr.strip()
    if re.match(r"^-?\d+$", e):
        return int(e)
    if re.match(r"^-?\d+\.\d*$", e):
        return float(e)
    if e.lower() in ("true", "false"):
        return e.lower() == "true"
    if len(e) >= 2 and e[0] == '"' and e[-1] == '"':
        return e[1:-1]
    return e


def truthy(v):
    return str(v).strip().lower() in ("true", "yes", "1", "t", "y")


def cmd_submit(argv):
    try:
        return _submit(argv)
    except SubmitError as e:
        E.die(str(e), 1)


def _submit(argv):
    appends, terse, batch_name, path, queue_arg = [], False, None, None, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-a", "-append"):
            i += 1
            appends.append(argv[i] if i < len(argv) else "")
        elif a in ("-terse",):
            terse = True
        elif a in ("-batch-name", "-batch_name"):
            i += 1
            batch_name = argv[i] if i < len(argv) else None
        elif a in ("-verbose", "-v", "-unused", "-disable", "-dry-run", "-spool", "-debug"):
            pass
        elif a == "-queue":
            i += 1
            queue_arg = argv[i] if i < len(argv) else ""
        elif a in ("-name", "-pool", "-remote", "-maxjobs"):
            i += 1
        elif a.startswith("-") and a != "-":
            E.die(f"ERROR: Unknown option {a}\nUsage: condor_submit [options] [submit-file]", 1)
        else:
            path = a
        i += 1
    cwd = os.getcwd()
    if path and path != "-":
        full = path if os.path.isabs(path) else os.path.join(cwd, path)
        try:
            with open(full, errors="replace") as f:
                text = f.read()
        except OSError:
            E.die(f"ERROR: Failed to open command file ({path})", 1)
    else:
        text = sys.stdin.read()
    if appends:
        # -append lines go before the (last) queue statement, as in condor_submit
        lines = text.splitlines()
        qi = max((k for k, ln in enumerate(lines) if re.match(r"^\s*queue\b", ln, re.I)), default=len(lines))
        lines[qi:qi] = appends
        text = "\n".join(lines) + "\n"
    if queue_arg is not None:
        # -queue: the submit description has no queue statement of its own
        text = text.rstrip("\n") + f"\nqueue {queue_arg}\n"
    queues = parse_submit(text)

    store = E.Store(SYSTEM)
    cluster = store.next_seq()
    spool = store.spool(cluster)
    qdate = int(time.time())
    tasks = {}
    procs = []
    proc = 0
    for variables, custom, count, itemvar, items in queues:
        for step in range(count):
            for row, item in enumerate(items):
                builtins = {"cluster": cluster, "clusterid": cluster, "process": proc, "procid": proc,
                            "step": step, "row": row, "item": item if item is not None else "",
                            "node": "#pArAlLeLnOdE#"}
                if itemvar:
                    builtins[itemvar] = item
                get = lambda k, d=None: expand(variables[k], variables, builtins) if k in variables else d
                procs.append((proc, get, custom, builtins))
                proc += 1
    owner = E.user_name()
    ads = {}
    for proc, get, custom, builtins in procs:
        universe = (get("universe") or "vanilla").strip().lower()
        if universe not in ("vanilla", "local", "scheduler"):
            raise SubmitError(f"ERROR: I don't know about the '{universe}' universe.")
        iwd = get("initialdir") or get("initial_dir") or get("iwd") or cwd
        if not os.path.isabs(iwd):
            iwd = os.path.join(cwd, iwd)
        if not os.path.isdir(iwd):
            raise SubmitError(f"ERROR: No such directory: {iwd}")
        exe = get("executable")
        if not exe:
            raise SubmitError("ERROR: Executable file not specified")
        exe_path = exe if os.path.isabs(exe) else os.path.join(iwd, exe)
        if not os.path.exists(exe_path):
            raise SubmitError(f"ERROR: Executable file {exe_path} does not exist")
        try:
            args = parse_arguments(get("arguments") or get("args") or "")
        except ValueError as e:
            raise SubmitError(f"ERROR: Invalid arguments: {e}")
        cpus_text = get("request_cpus") or "1"
        if not cpus_text.isdigit():
            raise SubmitError(f"ERROR: request_cpus={cpus_text} is not an integer")
        cpus = int(cpus_text)
        mem = parse_memory_mib(get("request_memory"), "request_memory") if get("request_memory") else 128
        disk = parse_memory_mib(get("request_disk"), "request_disk") * 1024 if get("request_disk") else 1024
        gpus_text = get("request_gpus")
        if gpus_text is not None and not gpus_text.isdigit():
            raise SubmitError(f"ERROR: request_gpus={gpus_text} is not an integer")
        custom_ad = {k: classad_value(expand(v, {}, builtins)) for k, v in custom.items()}
        limit = None
        hold_code, hold_text = None, None
        for k, v in custom_ad.items():
            if k.lower() == "maxruntime":
                if not isinstance(v, int) or v <= 0:
                    raise SubmitError(f"ERROR: +MaxRuntime = {v} is not a positive integer number of seconds")
                limit = v
                hold_code, hold_text = 3, f"The job exceeded its MaxRuntime of {v} seconds"
        aed = get("allowed_execute_duration")
        if aed:
            if not aed.isdigit():
                raise SubmitError(f"ERROR: allowed_execute_duration={aed} is not an integer")
            limit = int(aed)
            hold_code, hold_text = 47, f"The job exceeded allowed execute duration of {E.hms(int(aed))}"
        transfer = (get("should_transfer_files") or "IF_NEEDED").strip().upper()
        if transfer not in ("YES", "NO", "IF_NEEDED"):
            raise SubmitError(f"ERROR: should_transfer_files = {transfer} is invalid (YES, NO or IF_NEEDED)")
        scratch = os.path.join(spool, f"scratch-{proc}")

        def file_of(key):
            v = get(key)
            if not v:
                return None
            return v if os.path.isabs(v) else os.path.join(iwd, v)

        out, err, ulog, inp = file_of("output"), file_of("error"), file_of("log"), file_of("input")
        env = {}
        gv = get("getenv")
        if gv is not None and gv.strip():
            if truthy(gv):
                env.update(os.environ)
            elif gv.strip().lower() not in ("false", "no", "0", "f", "n"):
                pats = [p for p in re.split(r"[,\s]+", gv) if p]
                env.update({k: v for k, v in os.environ.items() if any(fnmatch.fnmatch(k, p) for p in pats)})
        if get("environment"):
            env.update(parse_environment(get("environment")))
        env.update({
            "_CONDOR_SCRATCH_DIR": scratch, "_CONDOR_JOB_IWD": iwd if transfer != "YES" else scratch,
            "_CONDOR_JOB_AD": os.path.join(scratch, ".job.ad"),
            "_CONDOR_MACHINE_AD": os.path.join(scratch, ".machine.ad"),
            "_CONDOR_SLOT": f"slot1_{proc + 1}", "TMPDIR": scratch, "TEMP": scratch, "TMP": scratch,
            "BATCH_SYSTEM": "HTCondor", "CONDOR_JOB_ID": f"{cluster}.{proc}",
        })
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBACORES",
                    "JULIA_NUM_THREADS", "PYTHON_CPU_COUNT", "ROOT_MAX_THREADS", "TF_LOOP_PARALLEL_ITERATIONS",
                    "TF_NUM_THREADS"):
            env.setdefault(var, str(cpus))
        if gpus_text and int(gpus_text) > 0:
            env["_CONDOR_AssignedGPUs"] = ",".join(f"GPU-emu{k}" for k in range(int(gpus_text)))
        env.update(E.emulator_env())
        workdir = scratch if transfer == "YES" else iwd
        run_exe = exe_path
        if transfer == "YES" and truthy(get("transfer_executable") or "true"):
            run_exe = os.path.join(scratch, os.path.basename(exe_path))
        argv_job = [run_exe] + args
        if universe == "local" or universe == "scheduler":
            workdir = iwd
        task = E.Store.new_task(argv_job, env, workdir, out, err if err != out else None, walltime=limit,
                                proc=proc, exe_path=exe_path, scratch=scratch, user_log=ulog, input=inp,
                                transfer=transfer, inputs=get("transfer_input_files"), iwd=iwd,
                                hold_code=hold_code, hold_text=hold_text, removed=False)
        ad = {
            "MyType": "Job", "TargetType": "Machine", "ClusterId": cluster, "ProcId": proc,
            "GlobalJobId": f"{E.HOST}#{cluster}.{proc}#{qdate}", "Owner": owner, "User": f"{owner}@{E.HOST}",
            "JobUniverse": {"vanilla": 5, "local": 12, "scheduler": 7}[universe], "Cmd": exe_path,
            "Iwd": iwd, "QDate": qdate,
            "RequestCpus": cpus, "RequestMemory": mem, "RequestDisk": disk,
            "Out": out or "/dev/null", "Err": err or "/dev/null", "In": inp or "/dev/null",
            "ShouldTransferFiles": transfer, "LeaveJobInQueue": truthy(get("leave_in_queue") or "false"),
            "JobPrio": 0, "NumJobStarts": 0,
        }
        raw_args = get("arguments") or get("args") or ""
        if raw_args.strip():
            # HTCondor keeps new-syntax ("...") arguments in Arguments, old syntax in Args
            if raw_args.strip().startswith('"'):
                ad["Arguments"] = " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else
                                           "'" + a.replace("'", "''") + "'" for a in args)
            else:
                ad["Args"] = " ".join(args)
        if gpus_text is not None:
            ad["RequestGPUs"] = int(gpus_text)
        if ulog:
            ad["UserLog"] = ulog
        if get("environment"):
            ad["Environment"] = " ".join(f"{k}={v}" for k, v in parse_environment(get("environment")).items())
        if batch_name or get("batch_name"):
            ad["JobBatchName"] = batch_name or get("batch_name")
        if aed:
            ad["AllowedExecuteDuration"] = int(aed)
        ad.update(custom_ad)
        task["ad"] = ad
        if inp:
            task["argv_stdin"] = inp
        tasks[str(proc)] = task
        ads[proc] = ad
    job = store.new_job(cluster, id=str(cluster), owner=owner, qdate=qdate,
                        start_delay=E.env_float("DROVER_EMU_START_DELAY", 0.0))
    job["tasks"] = tasks
    for key, task in tasks.items():
        write_log_event(task, cluster, int(key), "000", f"Job submitted from host: {SCHEDD_ADDR}", qdate)
    store.launch(job)
    n = len(tasks)
    if terse:
        print(f"{cluster}.0 - {cluster}.{n - 1}")
    else:
        print("Submitting job(s)" + "." * n)
        print(f"{n} job(s) submitted to cluster {cluster}.")
    return 0


# ------------------------------------------------------------------ user log and runner hooks


def write_log_event(task, cluster, proc, code, text, when=None, extra=()):
    path = task.get("user_log")
    if not path:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when or time.time()))
    body = f"{code} ({cluster:03d}.{proc:03d}.000) {stamp} {text}\n" + "".join(f"{x}\n" for x in extra) + "...\n"
    E.append_text(path, body)


def on_start(store, job, key, task):
    os.makedirs(task["scratch"], exist_ok=True)
    if task["transfer"] == "YES":
        if task["argv"][0] != task["exe_path"]:
            shutil.copy2(task["exe_path"], task["argv"][0])
            os.chmod(task["argv"][0], 0o755)
        for item in re.split(r"[,\s]+", task.get("inputs") or ""):
            if not item:
                continue
            src = item if os.path.isabs(item) else os.path.join(task["iwd"], item)
            dst = os.path.join(task["scratch"], os.path.basename(src.rstrip("/")))
            if os.path.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True)
            elif os.path.exists(src):
                shutil.copy2(src, dst)
    ad = dict(task["ad"])
    ad["JobStatus"] = 2
    E.write_file(os.path.join(task["scratch"], ".job.ad"),
                 "".join(f"{k} = {json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}\n"
                         for k, v in ad.items()))
    E.write_file(os.path.join(task["scratch"], ".machine.ad"), f'Machine = "{E.HOST}"\nCpus = {ad["RequestCpus"]}\n')
    if task.get("argv_stdin"):
        # HTCondor's `input`: the runner cannot redirect stdin, so wrap the command
        task["argv"] = ["/bin/sh", "-c", 'exec "$@" < "$0"', task["argv_stdin"]] + task["argv"]
    write_log_event(task, job["seq"], int(key), "001", f"Job executing on host: {SCHEDD_ADDR}")
    with store.lock():
        j = store.load(job["seq"])
        if j:
            j["tasks"][key]["argv"] = task["argv"]
            store.save(j)


def on_finish(store, job, key, task):
    cluster, proc = job["seq"], int(key)
    reason = task.get("reason")
    if reason == "killed":
        write_log_event(task, cluster, proc, "009", "Job was aborted.", extra=[f"\tvia condor_rm (by user {job['owner']})"])
    elif reason in ("walltime", "exec_failed", "lost"):
        text = task.get("hold_text") or "The job exceeded its run time limit"
        code = task.get("hold_code") or 3
        if reason == "exec_failed":
            text = f"Error from slot1@{E.HOST}: Failed to execute '{task['argv'][0]}': exit code {task.get('exit_code')}"
            code = 6
        if reason == "lost":
            text, code = "The emulator lost track of the job (its runner died)", 3
        task["hold_code"], task["hold_text"] = code, text
        write_log_event(task, cluster, proc, "012", "Job was held.", extra=[f"\t{text}", f"\tCode {code} Subcode 0"])
    else:
        if task.get("signal"):
            line = f"\t(0) Abnormal termination (signal {task['signal']})"
        else:
            line = f"\t(1) Normal termination (return value {task.get('exit_code')})"
        write_log_event(task, cluster, proc, "005", "Job terminated.", extra=[
            line, "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage",
            "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage",
            "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Remote Usage",
            "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage",
            "\t0  -  Run Bytes Sent By Job", "\t0  -  Run Bytes Received By Job",
            "\t0  -  Total Bytes Sent By Job", "\t0  -  Total Bytes Received By Job"])


# ------------------------------------------------------------------ status


def job_status(task):
    if task.get("removed"):
        return 3
    st = task["state"]
    if st == "Q":
        return 1
    if st == "R":
        return 3 if task.get("killing") and task.get("rm_requested") else 2
    reason = task.get("reason")
    if reason == "exit":
        return 4
    if reason == "killed":
        return 3
    return 5  # walltime / exec_failed / lost: held


def in_queue(task):
    s = job_status(task)
    if s in (1, 2, 5):
        return True
    if task["state"] == "R":
        return True  # removed but still shutting down
    return s == 4 and task["ad"].get("LeaveJobInQueue")


def full_ad(job, task):
    ad = dict(task["ad"])
    s = job_status(task)
    ad["JobStatus"] = s
    now = time.time()
    ad["EnteredCurrentStatus"] = int(task.get("end_time") or task.get("start_time") or job["submit_time"])
    ad["ServerTime"] = int(now)
    if task.get("start_time"):
        ad["JobStartDate"] = int(task["start_time"])
        ad["JobCurrentStartDate"] = int(task["start_time"])
        ad["NumJobStarts"] = 1
        ad["RemoteWallClockTime"] = float(int((task.get("end_time") or now) - task["start_time"]))
    if task["state"] == "R":
        ad["RemoteHost"] = f"slot1_{task['proc'] + 1}@{E.HOST}"
    ad["CompletionDate"] = int(task["end_time"]) if task["state"] == "F" and s in (3, 4) else 0
    if task["state"] == "F" and task.get("reason") in ("exit",):
        if task.get("signal"):
            ad["ExitBySignal"] = True
            ad["ExitSignal"] = task["signal"]
        else:
            ad["ExitBySignal"] = False
            ad["ExitCode"] = task.get("exit_code")
            ad["ExitStatus"] = task.get("exit_code")
    if s == 5:
        ad["HoldReason"] = task.get("hold_text") or "held"
        ad["HoldReasonCode"] = task.get("hold_code") or 3
        ad["HoldReasonSubCode"] = 0
    if s == 3:
        ad["RemoveReason"] = f"via condor_rm (by user {job['owner']})"
    return dict(sorted(ad.items()))


def selected_tasks(store, args, history):
    """[(job, task)] matching ARGS (cluster, cluster.proc or owner names)."""
    out = []
    for job in store.jobs():
        for key, task in job["tasks"].items():
            if history == in_queue(task):
                continue
            if args and not any(match(job, task, a) for a in args):
                continue
            out.append((job, task))
    return out


def match(job, task, arg):
    m = re.match(r"^(\d+)(?:\.(\d+))?$", arg)
    if m:
        return job["seq"] == int(m.group(1)) and (m.group(2) is None or task["proc"] == int(m.group(2)))
    return job["owner"] == arg


def parse_q_args(argv, prog):
    opts = {"json": False, "long": False, "af": None, "nobatch": False, "totals": False, "limit": None,
            "constraint": None}
    args = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-json":
            opts["json"] = True
        elif a in ("-l", "-long"):
            opts["long"] = True
        elif a.startswith("-af") or a.startswith("-autoformat"):
            attrs = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                attrs.append(argv[i])
            opts["af"] = attrs
        elif a in ("-nobatch", "-nob"):
            opts["nobatch"] = True
        elif a in ("-totals", "-tot"):
            opts["totals"] = True
        elif a in ("-allusers", "-all", "-batch", "-wide", "-w", "-run", "-hold", "-idle"):
            opts[a] = True
        elif a in ("-limit", "-match"):
            i += 1
            opts["limit"] = int(argv[i]) if i < len(argv) and argv[i].isdigit() else None
        elif a in ("-constraint", "-const"):
            i += 1
            opts["constraint"] = argv[i] if i < len(argv) else ""
        elif a in ("-name", "-pool", "-attributes", "-format"):
            i += 2 if a == "-format" else 1
        elif a.startswith("-"):
            E.die(f"Error: unrecognized option {a}\nUsage: {prog} [options] [cluster | cluster.proc | owner]...", 1)
        else:
            args.append(a)
        i += 1
    return opts, args


def apply_constraint(rows, constraint):
    """Supports the common `Attr == value` / `Attr != value` constraints (and &&)."""
    if not constraint:
        return rows
    out = []
    terms = [t.strip() for t in constraint.split("&&")]
    for job, task in rows:
        ad = full_ad(job, task)
        ok = True
        for t in terms:
            m = re.match(r"^\(?\s*(\w+)\s*(==|!=|=\?=|=!=)\s*(.+?)\s*\)?$", t)
            if not m:
                E.die(f"Error: the emulator cannot evaluate constraint '{constraint}'", 1)
            val = ad.get(m.group(1))
            want = classad_value(m.group(3))
            eq = val == want
            ok = ok and (eq if m.group(2) in ("==", "=?=") else not eq)
        if ok:
            out.append((job, task))
    return out


def ad_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def print_rows(rows, opts, prog, history):
    if opts["json"]:
        if rows:
            docs = [json.dumps(full_ad(j, t), indent=2) for j, t in rows]
            print("[\n" + "\n,\n".join(docs) + "\n]")
        return
    if opts["af"] is not None:
        for j, t in rows:
            ad = full_ad(j, t)
            print(" ".join(str(ad.get(a, "undefined")) if not isinstance(ad.get(a), bool) else ad_text(ad.get(a))
                           for a in opts["af"]))
        return
    if opts["long"]:
        for j, t in rows:
            for k, v in full_ad(j, t).items():
                print(f"{k} = {ad_text(v)}")
            print()
        return
    if history:
        print(" ID     OWNER          SUBMITTED   RUN_TIME     ST  COMPLETED   CMD")
        for j, t in rows:
            ad = full_ad(j, t)
            run = int(ad.get("RemoteWallClockTime", 0))
            print(f"{j['seq']:>4}.{t['proc']:<3} {j['owner']:<14} {time.strftime('%m/%d %H:%M', time.localtime(j['submit_time']))}"
                  f" {run // 86400}+{E.hms(run % 86400)} {STATUS_NAMES[ad['JobStatus']]:<3} "
                  f"{time.strftime('%m/%d %H:%M', time.localtime(t.get('end_time') or time.time()))} "
                  f"{os.path.basename(t['ad']['Cmd'])} {t['ad'].get('Arguments') or t['ad'].get('Args', '')}")
        return
    counts = {s: 0 for s in (1, 2, 3, 4, 5)}
    for j, t in rows:
        counts[job_status(t)] += 1
    print()
    print(f"-- Schedd: {E.HOST} : {SCHEDD_ADDR} @ {time.strftime('%m/%d/%y %H:%M:%S')}")
    if not opts["totals"]:
        if opts["nobatch"]:
            print(" ID      OWNER            SUBMITTED     RUN_TIME ST PRI SIZE CMD")
            for j, t in rows:
                ad = full_ad(j, t)
                run = int(ad.get("RemoteWallClockTime", 0))
                cmd = (os.path.basename(t["ad"]["Cmd"]) + " " + (t["ad"].get("Arguments") or t["ad"].get("Args", ""))).strip()
                print(f"{j['seq']:>4}.{t['proc']:<3} {j['owner']:<14} {time.strftime('%m/%d %H:%M', time.localtime(j['submit_time']))}"
                      f"  {run // 86400}+{E.hms(run % 86400)} {STATUS_NAMES[ad['JobStatus']]:<2} 0    0.0 {cmd[:40]}")
        else:
            by_cluster = {}
            for j, t in rows:
                by_cluster.setdefault(j["seq"], (j, []))[1].append(t)
            hold = any(job_status(t) == 5 for _, t in rows)
            print("OWNER BATCH_NAME    SUBMITTED   DONE   RUN    IDLE" + ("   HOLD" if hold else "") + "  TOTAL JOB_IDS")
            for seq, (j, ts) in by_cluster.items():
                c = {s: sum(1 for t in ts if job_status(t) == s) for s in (1, 2, 3, 4, 5)}
                f = lambda n: str(n) if n else "_"
                procs = sorted(t["proc"] for t in ts)
                ids = f"{seq}.{procs[0]}" if len(procs) == 1 else f"{seq}.{procs[0]}-{procs[-1]}"
                name = ts[0]["ad"].get("JobBatchName") or f"ID: {seq}"
                total = len(j["tasks"])
                print(f"{j['owner']:<5} {name:<12} {time.strftime('%m/%d %H:%M', time.localtime(j['submit_time']))}"
                      f" {f(c[4]):>6} {f(c[2]):>6} {f(c[1]):>6}" + (f" {f(c[5]):>6}" if hold else "") +
                      f" {total:>6} {ids}")
    print()
    tail = (f"{len(rows)} jobs; {counts[4]} completed, {counts[3]} removed, {counts[1]} idle, "
            f"{counts[2]} running, {counts[5]} held, 0 suspended")
    print(f"Total for query: {tail}")
    print(f"Total for {E.user_name()}: {tail}")
    print(f"Total for all users: {tail}")
    print()


def cmd_q(argv):
    opts, args = parse_q_args(argv, "condor_q")
    store = E.Store(SYSTEM)
    store.reconcile()
    rows = apply_constraint(selected_tasks(store, args, history=False), opts["constraint"])
    print_rows(rows, opts, "condor_q", history=False)
    return 0


def cmd_history(argv):
    opts, args = parse_q_args(argv, "condor_history")
    store = E.Store(SYSTEM)
    store.reconcile()
    rows = apply_constraint(selected_tasks(store, args, history=True), opts["constraint"])
    rows.sort(key=lambda r: (r[0]["seq"], r[1]["proc"]), reverse=True)  # newest first, as condor_history
    if opts["limit"]:
        rows = rows[:opts["limit"]]
    print_rows(rows, opts, "condor_history", history=True)
    return 0


def cmd_rm(argv):
    args, all_jobs, force = [], False, False
    for a in argv:
        if a in ("-all", "-a"):
            all_jobs = True
        elif a in ("-forcex", "-f"):
            force = True
        elif a.startswith("-"):
            E.die(f"Error: unrecognized option {a}\nUsage: condor_rm [options] [cluster | cluster.proc | user | -all]", 1)
        else:
            args.append(a)
    if not args and not all_jobs:
        E.die("Usage: condor_rm [options] [cluster | cluster.proc | user | -all]", 1)
    store = E.Store(SYSTEM)
    store.reconcile()
    rc = 0
    with store.lock():
        targets = args if not all_jobs else ["*"]
        for a in targets:
            hits = []
            for job in store.jobs():
                for key, task in job["tasks"].items():
                    if not in_queue(task) or job_status(task) == 3:
                        continue
                    if a == "*" or match(job, task, a):
                        hits.append((job["seq"], key))
            m = re.match(r"^(\d+)(?:\.(\d+))?$", a)
            if not hits:
                rc = 1
                if a == "*":
                    print("There are no jobs in the queue")
                elif m and m.group(2) is not None:
                    sys.stderr.write(f"Job {a} not found\n")
                elif m:
                    sys.stderr.write(f"Couldn't find/remove all jobs in cluster {a}\n")
                else:
                    sys.stderr.write(f"Couldn't find/remove all jobs of user {a}\n")
                continue
            for seq, key in hits:
                job = store.load(seq)
                task = job["tasks"][key]
                if task["state"] == "F":  # held (or completed left in queue): just remove
                    task["removed"] = True
                    task["end_time"] = task.get("end_time") or time.time()
                    store.save(job)
                    write_log_event(task, seq, int(key), "009", "Job was aborted.",
                                    extra=[f"\tvia condor_rm (by user {job['owner']})"])
                    continue
                task["rm_requested"] = True
                store.save(job)
                res = store.request_kill(job, key, force=force, reason="killed")
                if res == "dequeued":
                    job = store.load(seq)
                    job["tasks"][key]["removed"] = True
                    store.save(job)
            if a == "*":
                print("All jobs have been marked for removal")
            elif m and m.group(2) is not None:
                print(f"Job {a} marked for removal")
            elif m:
                print(f"All jobs in cluster {a} have been marked for removal")
            else:
                print(f'All jobs of user "{a}" have been marked for removal')
    return rc


COMMANDS = {"condor_submit": cmd_submit, "condor_q": cmd_q, "condor_rm": cmd_rm, "condor_history": cmd_history}


def main(prog):
    try:
        sys.exit(COMMANDS[prog](sys.argv[1:]) or 0)
    except BrokenPipeError:
        sys.exit(1)
