#!/usr/bin/env python3
"""PBS Professional / OpenPBS command emulator (qsub, qstat, qdel, pbsdsh), with a
Torque flavour when DROVER_EMU_FLAVOR=torque.

What is emulated (facts from the PBS Pro and Torque reference guides):
* qsub [opts] [script | -- executable args]; the script may come from stdin (job
  name STDIN). `#PBS` directives (or the -C prefix / $PBS_DPREFIX) are read up to
  the first command line; command-line options override them (-l and -v merge per
  resource / variable).
* PBS Pro: -N -q -A -P -l (select=N:ncpus=C:mem=M[:ngpus=G][:mpiprocs=P]+...,
  walltime, place, ncpus, mem, ...) -o -e -j oe|eo|n -J X-Y[:Z][%max] -V -v -S -W -h
  -r -m -M -k -p -a -z. Job ids `SEQ.pbs-emu`, arrays `SEQ[].pbs-emu` with sub-jobs
  `SEQ[I].pbs-emu` that see PBS_ARRAY_INDEX / PBS_ARRAY_ID.
* Torque: -l nodes=N[:ppn=C][:gpus=G], procs=K, -t 1-K[%max] (PBS_ARRAYID), -d/-w
  working dir, ids `SEQ.torque-emu` / `SEQ[].torque-emu`; `qstat -f` text only
  (`-F` is an invalid option, like real Torque), `-x` gives XML; finished jobs stay
  visible in state C for DROVER_EMU_KEEP_COMPLETED seconds (default 300).
* The job: runs in $HOME (like PBS; PBS_O_WORKDIR is the submission dir) with a
  login-like environment (HOME LOGNAME USER SHELL MAIL, PATH = this bin dir + system
  dirs), the PBS_* variables, -v variables, everything with -V, and DROVER_EMU_*.
  PBS_NODEFILE lists the host once per chunk x mpiprocs (PBS Pro) or once per
  processor, nodes x ppn (Torque). stdout/stderr are written directly to their final
  paths (default NAME.oSEQ / NAME.eSEQ in the submission dir; arrays NAME.oSEQ.I, or
  NAME.oSEQ-I for Torque) - real PBS copies them there when the job ends.
* Walltime: at the limit the job's session gets SIGTERM, then SIGKILL after
  DROVER_EMU_KILL_GRACE s; "=>> PBS: job killed: walltime T exceeded limit L" is
  appended to its stderr; Exit_status is 256 + the signal that ended the top process
  (271 for SIGTERM), as PBS reports. qdel: same sequence; `qdel -W force` = SIGKILL.
* Job history is enabled (job_history_enable=True): finished jobs are listed with
  `qstat -x`; without -x a finished job gives "Job has finished, use -x or -H ...".
* Exit codes of failures are the PBS error number modulo 256, as the real commands
  return (153 unknown job id, 170 unknown queue, 166 illegal value, 168 unknown
  resource, 35 finished job).
Knobs: DROVER_EMU_QUEUES (valid queues, first is the default; default
"workq debug", Torque "batch debug"), DROVER_EMU_SERVER (server name),
DROVER_EMU_FLAVOR, plus those of emulib.
"""

import json
import os
import re
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulib as E  # noqa: E402

FLAVOR = "torque" if os.environ.get("DROVER_EMU_FLAVOR", "").strip().lower() == "torque" else "pro"
TORQUE = FLAVOR == "torque"
SYSTEM = "torque" if TORQUE else "pbs"
SERVER = os.environ.get("DROVER_EMU_SERVER") or ("torque-emu" if TORQUE else "pbs-emu")
VERSION = "6.1.3" if TORQUE else "22.05.11"
BIN_DIR = os.path.join(E.LIB_DIR, "pbs", "bin")

E_UNKJOBID, E_BADATVAL, E_UNKRESC, E_UNKQUE, E_HISTJOB, E_BADSTATE = 153, 166, 168, 170, 35, 169


def queues():
    text = os.environ.get("DROVER_EMU_QUEUES") or ("batch debug" if TORQUE else "workq debug")
    return [q for q in re.split(r"[\s,]+", text) if q]


# ------------------------------------------------------------------ qsub parsing

PRO_ARG = set("aAcCeJjklmMNoPpqrRSuvW")
PRO_FLAG = set("fhIVXz")
TQ_ARG = set("aAbcCdDeFjklLmMNopPqrStuvwW")
TQ_FLAG = set("EfhIKnVxXz")

PRO_RESOURCES = {
    "select", "place", "walltime", "ncpus", "mem", "vmem", "ngpus", "nodect", "cput", "pcput",
    "file", "pmem", "pvmem", "software", "arch", "host", "mpiprocs", "ompthreads", "naccelerators",
    "accelerator_memory", "soft_walltime", "min_walltime", "max_walltime", "preempt_targets", "site",
    "nice", "nchunk", "vntype",
}
PRO_CHUNK_RESOURCES = {
    "ncpus", "mem", "vmem", "ngpus", "mpiprocs", "ompthreads", "host", "vnode", "arch",
    "naccelerators", "accelerator", "accelerator_model", "accelerator_memory", "aoe", "vntype",
}
TQ_RESOURCES = {
    "nodes", "procs", "walltime", "mem", "pmem", "vmem", "pvmem", "ncpus", "cput", "pcput", "file",
    "host", "arch", "gres", "feature", "naccesspolicy", "nice", "other", "software", "epilogue",
    "prologue", "tpn", "trl", "gpus", "mppwidth", "mppnppn", "mppdepth",
}
INT_RESOURCES = {"ncpus", "ngpus", "mpiprocs", "ompthreads", "naccelerators", "nodect", "procs", "nice"}
SIZE_RESOURCES = {"mem", "vmem", "pmem", "pvmem", "file", "accelerator_memory"}
TIME_RESOURCES = {"walltime", "cput", "pcput", "soft_walltime", "min_walltime", "max_walltime"}
SIZE_RE = re.compile(r"^(\d+)(b|kb|mb|gb|tb|pb|w|kw|mw|gw|tw|pw)?$", re.I)
UNIT_KB = {"b": 1 / 1024, "kb": 1, "mb": 1024, "gb": 1024 ** 2, "tb": 1024 ** 3, "pb": 1024 ** 4,
           "w": 8 / 1024, "kw": 8, "mw": 8 * 1024, "gw": 8 * 1024 ** 2, "tw": 8 * 1024 ** 3, "pw": 8 * 1024 ** 4}


class QsubError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.message, self.code = message, code


def bad_value(attr):
    return QsubError(f"qsub: Illegal attribute or resource value Resource_List.{attr}", E_BADATVAL)


def size_kb(text):
    m = SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * UNIT_KB[(m.group(2) or "b").lower()]


def fmt_kb(kb):
    kb = int(round(kb))
    if kb and kb % (1024 ** 2) == 0:
        return f"{kb // 1024 ** 2}gb"
    if kb and kb % 1024 == 0:
        return f"{kb // 1024}mb"
    return f"{kb}kb"


def split_top_commas(text):
    """Splits a -l value at commas (PBS resource lists)."""
    return [p for p in (x.strip() for x in text.split(",")) if p]


def check_value(name, value):
    if name in INT_RESOURCES:
        if not value.isdigit():
            raise bad_value(name)
    elif name in SIZE_RESOURCES:
        try:
            size_kb(value)
        except ValueError:
            raise bad_value(name)
    elif name in TIME_RESOURCES:
        try:
            E.parse_duration(value)
        except ValueError:
            raise bad_value(name)


def parse_select(text):
    """'2:ncpus=4:mem=8gb+1:ncpus=1' -> [(2, {'ncpus': '4', 'mem': '8gb'}), (1, {...})]."""
    chunks = []
    for spec in text.split("+"):
        parts = spec.split(":")
        if not parts or parts[0] == "":
            raise bad_value("select")
        count = 1
        if parts[0].isdigit():
            count = int(parts[0])
            parts = parts[1:]
            if count < 1:
                raise bad_value("select")
        res = {}
        for p in parts:
            if "=" not in p:
                raise bad_value("select")
            k, v = p.split("=", 1)
            if not re.match(r"^[A-Za-z_][\w-]*$", k) or v == "":
                raise bad_value("select")
            if k not in PRO_CHUNK_RESOURCES:
                raise QsubError(f"qsub: Unknown resource Resource_List.{k}", E_UNKRESC)
            try:
                check_value(k, v)
            except QsubError:
                raise bad_value("select")  # PBS reports a bad chunk value against select
            res[k] = v
        chunks.append((count, res))
    return chunks


def parse_place(text):
    arrangements = {"free", "pack", "scatter", "vscatter"}
    sharing = {"excl", "shared", "exclhost"}
    for tok in text.split(":"):
        if tok in arrangements or tok in sharing or re.match(r"^group=\w+$", tok):
            continue
        raise bad_value("place")


def parse_nodes(text):
    """Torque nodes spec -> (node count, ppn, gpus)."""
    total_nodes, ppn, gpus = 0, 1, 0
    for spec in text.split("+"):
        parts = spec.split(":")
        if parts[0] == "":
            raise bad_value("nodes")
        n = int(parts[0]) if parts[0].isdigit() else 1
        if n < 1:
            raise bad_value("nodes")
        total_nodes += n
        for p in parts[1:]:
            if p.startswith("ppn="):
                if not p[4:].isdigit() or int(p[4:]) < 1:
                    raise bad_value("nodes")
                ppn = int(p[4:])
            elif p.startswith("gpus="):
                if not p[5:].isdigit():
                    raise bad_value("nodes")
                gpus = int(p[5:])
            elif not re.match(r"^[\w.-]+$", p):
                raise bad_value("nodes")
    return total_nodes, ppn, gpus


def parse_resources(value, resources):
    """Merges one -l value into RESOURCES (validated)."""
    known = TQ_RESOURCES if TORQUE else PRO_RESOURCES
    for item in split_top_commas(value):
        if "=" not in item:
            raise QsubError("qsub: illegal -l value\n" + usage(), 2)
        name, val = item.split("=", 1)
        name = name.strip()
        if not re.match(r"^[A-Za-z_]\w*$", name):
            raise QsubError("qsub: illegal -l value\n" + usage(), 2)
        if name not in known:
            raise QsubError(f"qsub: Unknown resource Resource_List.{name}", E_UNKRESC)
        if val == "":
            raise bad_value(name)
        if name == "select":
            parse_select(val)
        elif name == "place":
            parse_place(val)
        elif name == "nodes":
            parse_nodes(val)
        else:
            check_value(name, val)
        resources[name] = val


def parse_var_list(text):
    """-v 'A=1,B="x,y",C' -> [('A','1'), ('B','x,y'), ('C', None)]."""
    out, i, n = [], 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "=,":
            j += 1
        name = text[i:j].strip()
        val = None
        if j < n and text[j] == "=":
            j += 1
            if j < n and text[j] in "'\"":
                q = text[j]
                k = text.find(q, j + 1)
                if k < 0:
                    raise QsubError("qsub: illegal -v value", 2)
                val = text[j + 1:k]
                j = k + 1
            else:
                k = text.find(",", j)
                k = n if k < 0 else k
                val = text[j:k]
                j = k
        if name:
            out.append((name, val))
        while j < n and text[j] != ",":
            j += 1
        i = j + 1
    return out


def usage():
    if TORQUE:
        return ("usage: qsub [-a date_time] [-A account_string] [-b secs]\n"
                "      [-c [ none | { enabled | periodic | shutdown |\n"
                "      depth=<int> | dir=<path> | interval=<minutes>}... ]\n"
                "      [-C directive_prefix] [-d path] [-D path]\n"
                "      [-e path] [-h] [-I] [-j oe|eo|n] [-k {oe}] [-K interval] [-l resource_list]\n"
                "      [-m n|{abe}] [-M user_list] [-N jobname] [-o path] [-p priority]\n"
                "      [-P proxy_user [-J <jobid]] [-q queue] [-r y|n] [-S path] [-t number_to_submit]\n"
                "      [-T type] [-u user_list] [-w] path\n"
                "      [-W otherattributes=value...] [-v variable_list] [-V] [-x] [-X] [-z] [script]")
    return ("usage: qsub [-a date_time] [-A account_string] [-c interval]\n"
            "\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]\n"
            "\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]\n"
            "\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]\n"
            "\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]\n"
            "\t[-S path] [-u user_list] [-W otherattributes=value...]\n"
            "\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]\n"
            "       qsub --version")


def split_options(args, where):
    """getopt-style split of ARGS into [(letter, value)] and the rest (operands).
    WHERE is 'cmd' or 'directive' (for messages)."""
    arg_opts = TQ_ARG if TORQUE else PRO_ARG
    flag_opts = TQ_FLAG if TORQUE else PRO_FLAG
    opts, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return opts, args[i:]
        if not a.startswith("-") or a == "-":
            return opts, args[i:]
        j = 1
        while j < len(a):
            c = a[j]
            if c in arg_opts:
                if j + 1 < len(a):
                    val = a[j + 1:]
                elif i + 1 < len(args):
                    i += 1
                    val = args[i]
                else:
                    raise QsubError(f"qsub: option requires an argument -- '{c}'\n" + usage(), 2)
                opts.append((c, val))
                break
            if c in flag_opts:
                opts.append((c, None))
                j += 1
                continue
            raise QsubError(f"qsub: invalid option -- '{c}'\n" + usage(), 2)
        i += 1
    return opts, []


class Spec:
    def __init__(self):
        self.name = None
        self.queue = None
        self.account = None
        self.project = None
        self.resources = {}
        self.out = None
        self.err = None
        self.join = "n"
        self.array = None  # (indices, text)
        self.export_all = False
        self.vars = []
        self.shell = None
        self.workdir = None
        self.hold = False
        self.quiet = False
        self.keep = "n"
        self.mail_points = "a"
        self.rerunable = "True"
        self.priority = 0
        self.extra = {}

    def apply(self, c, v):
        if c == "N":
            if not v or re.search(r"[\s/]", v) or len(v) > 236:
                raise QsubError("qsub: illegal -N value\n" + usage(), 2)
            self.name = v
        elif c == "q":
            self.queue = v
        elif c == "A":
            self.account = v
        elif c == "P" and not TORQUE:
            self.project = v
        elif c == "l":
            parse_resources(v, self.resources)
        elif c == "o":
            self.out = v
        elif c == "e":
            self.err = v
        elif c == "j":
            if v not in ("oe", "eo", "n"):
                raise QsubError("qsub: illegal -j value\n" + usage(), 2)
            self.join = v
        elif c == "J" and not TORQUE:
            m = re.match(r"^(\d+)-(\d+)(?::(\d+))?(?:%(\d+))?$", v)
            if not m or int(m.group(1)) >= int(m.group(2)) or (m.group(3) and int(m.group(3)) < 1):
                raise QsubError("qsub: illegal -J value\n" + usage(), 2)
            a, b, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
            self.array = (list(range(a, b + 1, step)), v.split("%")[0])
        elif c == "t" and TORQUE:
            try:
                body = v.split("%")[0]
                self.array = (E.parse_ranges(body, allow_step=False), body)
            except ValueError:
                raise QsubError("qsub: illegal -t value\n" + usage(), 2)
        elif c == "V":
            self.export_all = True
        elif c == "v":
            self.vars.extend(parse_var_list(v))
        elif c == "S":
            self.shell = v.split(",")[0].split("@")[0]
        elif c in ("d", "w") and TORQUE:
            self.workdir = v
        elif c == "h":
            self.hold = True
        elif c == "z":
            self.quiet = True
        elif c == "k":
            self.keep = v
        elif c == "m":
            self.mail_points = v
        elif c == "r":
            if v not in ("y", "n"):
                raise QsubError("qsub: illegal -r value\n" + usage(), 2)
            self.rerunable = "True" if v == "y" else "False"
        elif c == "p":
            try:
                self.priority = int(v)
            except ValueError:
                raise QsubError("qsub: illegal -p value\n" + usage(), 2)
        elif c == "W":
            for item in split_top_commas(v):
                k, _, val = item.partition("=")
                self.extra[k.strip()] = val
        elif c == "I":
            raise QsubError("qsub: interactive jobs (-I) are not supported by this emulator", 2)
        # -a -c -C -M -u -X -f -b -D -F -K -L -T -E -x -n -G: accepted, no effect here


def strip_host(path):
    m = re.match(r"^[\w.-]+:(/.*)$", path)
    return m.group(1) if m else path


def out_path(given, default_name, cwd, index):
    """Final path of an output file; GIVEN may be a directory or contain
    ^array_index^ (PBS Pro)."""
    if not given:
        return os.path.join(cwd, default_name)
    p = strip_host(given)
    if index is not None:
        if "^array_index^" in p:
            p = p.replace("^array_index^", str(index))
        elif TORQUE and not os.path.isdir(p if os.path.isabs(p) else os.path.join(cwd, p)):
            p = f"{p}-{index}"
    if not os.path.isabs(p):
        p = os.path.join(cwd, p)
    if os.path.isdir(p):
        p = os.path.join(p, default_name)
    return os.path.normpath(p)


def resource_summary(spec):
    """Resource_List (ordered dict of display values), node file entries, cpus of the
    first chunk, gpus."""
    r = dict(spec.resources)
    rl = {}
    if TORQUE:
        nodes, ppn, gpus = parse_nodes(r["nodes"]) if "nodes" in r else (1, 1, 0)
        if "procs" in r:
            entries = int(r["procs"])
            nodes, ppn = 1, entries
        else:
            entries = nodes * ppn
        for k in sorted(r):
            rl[k] = r[k]
        rl["nodect"] = nodes
        if "nodes" not in r and "procs" not in r:
            rl["nodes"] = "1"
            rl["neednodes"] = "1"
        elif "nodes" in r:
            rl["neednodes"] = r["nodes"]
        return rl, entries, ppn, gpus, nodes
    if "select" in r:
        chunks = parse_select(r["select"])
    else:
        chunk = {}
        for k in ("ncpus", "mem", "ngpus", "mpiprocs", "ompthreads", "vmem"):
            if k in r:
                chunk[k] = r[k]
        chunks = [(1, chunk or {"ncpus": "1"})]
        r["select"] = "1:" + ":".join(f"{k}={v}" for k, v in (chunk or {"ncpus": "1"}).items())
    ncpus = sum(n * int(c.get("ncpus", 1)) for n, c in chunks)
    ngpus = sum(n * int(c.get("ngpus", 0)) for n, c in chunks)
    nodect = sum(n for n, _ in chunks)
    entries = sum(n * int(c.get("mpiprocs", 1 if int(c.get("ncpus", 1)) > 0 else 0)) for n, c in chunks)
    mem_kb = sum(n * size_kb(c["mem"]) for n, c in chunks if "mem" in c)
    rl["ncpus"] = ncpus
    if mem_kb:
        rl["mem"] = fmt_kb(mem_kb)
    if ngpus:
        rl["ngpus"] = ngpus
    rl["nodect"] = nodect
    for k in sorted(r):
        if k not in ("ncpus", "mem", "ngpus", "nodect"):
            rl[k] = r[k]
    rl.setdefault("place", "free")
    first_cpus = int(chunks[0][1].get("ncpus", 1))
    return rl, entries, first_cpus, ngpus, nodect


def cmd_qsub(argv):
    try:
        return _qsub(argv)
    except QsubError as e:
        E.die(e.message, e.code)


def _qsub(argv):
    if argv[:1] == ["--version"]:
        print(f"pbs_version = {VERSION}" if not TORQUE else f"Version: {VERSION}")
        return 0
    cmd_opts, operands = split_options(argv, "cmd")
    executable = None
    script_path = None
    if operands and operands[0] == "--":
        if TORQUE or len(operands) < 2:
            raise QsubError("qsub: invalid option -- '-'\n" + usage(), 2)
        executable = operands[1:]
    elif operands:
        if len(operands) > 1:
            raise QsubError(usage(), 2)
        script_path = operands[0]
    cwd = os.getcwd()
    if executable:
        script = ""
    elif script_path is not None:
        full = script_path if os.path.isabs(script_path) else os.path.join(cwd, script_path)
        if not os.path.isfile(full):
            if TORQUE:
                raise QsubError(f"qsub: script file '{script_path}' cannot be loaded - No such file or directory", 1)
            raise QsubError(f"qsub: script file:: No such file or directory", 1)
        try:
            script = E.read_script(full)
        except OSError as e:
            raise QsubError(f"qsub: could not open script file {script_path}: {e.strerror}", 1)
    else:
        script = E.read_script(None)

    prefix = os.environ.get("PBS_DPREFIX", "#PBS")
    for c, v in cmd_opts:
        if c == "C":
            prefix = v
    spec = Spec()
    if script:
        for line in E.directive_lines(script, prefix):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                raise QsubError(f"qsub: directive error: {prefix} {line}", 2)
            d_opts, rest = split_options(words, "directive")
            if rest:
                raise QsubError(f"qsub: directive error: {prefix} {line}", 2)
            for c, v in d_opts:
                spec.apply(c, v)
    for c, v in cmd_opts:
        spec.apply(c, v)

    qs = queues()
    queue = (spec.queue or qs[0]).split("@")[0] or qs[0]
    if queue not in qs:
        raise QsubError("qsub: Unknown queue", E_UNKQUE)
    rl, entries, first_cpus, ngpus, nodect = resource_summary(spec)
    walltime = None
    if "walltime" in spec.resources:
        walltime = E.parse_duration(spec.resources["walltime"])
        rl["walltime"] = E.hms(walltime)

    store = E.Store(SYSTEM)
    seq = store.next_seq()
    spool = store.spool(seq)
    if script_path is None and not executable:
        name = spec.name or "STDIN"
    elif executable:
        name = spec.name or os.path.basename(executable[0])
    else:
        name = spec.name or os.path.basename(script_path)
    is_array = spec.array is not None
    job_id = f"{seq}[].{SERVER}" if is_array else f"{seq}.{SERVER}"

    # the job's command
    if executable:
        argv_job = list(executable)
    else:
        sfile = os.path.join(spool, "script")
        E.write_file(sfile, script, 0o755)
        shell = spec.shell
        if shell:
            argv_job = [shell, sfile]
        elif script.startswith("#!"):
            argv_job = [sfile]
        else:
            argv_job = [E.user_shell(), sfile]

    home = E.user_home()
    user = E.user_name()
    submit_env = dict(os.environ)
    o_vars = {
        "PBS_O_HOME": submit_env.get("HOME", home),
        "PBS_O_LANG": submit_env.get("LANG"),
        "PBS_O_LOGNAME": submit_env.get("LOGNAME", user),
        "PBS_O_PATH": submit_env.get("PATH", ""),
        "PBS_O_MAIL": submit_env.get("MAIL", f"/var/mail/{user}"),
        "PBS_O_SHELL": submit_env.get("SHELL", E.user_shell()),
        "PBS_O_WORKDIR": cwd,
        "PBS_O_SYSTEM": "Linux",
        "PBS_O_QUEUE": queue,
        "PBS_O_HOST": E.HOST,
    }
    o_vars = {k: v for k, v in o_vars.items() if v is not None}
    if TORQUE:
        o_vars["PBS_O_SERVER"] = SERVER
    user_vars = {}
    for k, v in spec.vars:
        if v is None:
            v = submit_env.get(k)
        if v is not None:
            user_vars[k] = v

    indices = spec.array[0] if is_array else [None]
    if is_array and not TORQUE:
        parent_out = out_path(spec.out, f"{name}.o{seq}.^array_index^", cwd, None)
        parent_err = out_path(spec.err, f"{name}.e{seq}.^array_index^", cwd, None)
    else:
        parent_out = out_path(spec.out, f"{name}.o{seq}", cwd, None)
        parent_err = out_path(spec.err, f"{name}.e{seq}", cwd, None)
    tasks = {}
    for idx in indices:
        key = str(idx) if idx is not None else "0"
        sub_id = f"{seq}[{idx}].{SERVER}" if idx is not None else job_id
        env = {
            "HOME": home, "LOGNAME": user, "USER": user, "SHELL": E.user_shell(),
            "MAIL": f"/var/mail/{user}", "PATH": E.login_path(BIN_DIR),
        }
        if spec.export_all:
            env.update(submit_env)
        env.update(user_vars)
        env.update(o_vars)
        tmpdir = os.path.join(spool, f"tmp-{key}")
        nodefile = os.path.join(spool, f"nodefile-{key}")
        env.update({
            "PBS_JOBID": sub_id,
            "PBS_JOBNAME": name,
            "PBS_QUEUE": queue,
            "PBS_NODEFILE": nodefile,
            "PBS_ENVIRONMENT": "PBS_BATCH",
            "PBS_JOBDIR": home,
            "PBS_TASKNUM": "1",
            "PBS_NODENUM": "0",
            "PBS_MOMPORT": "15003",
            "TMPDIR": tmpdir,
            "ENVIRONMENT": "BATCH",
        })
        if TORQUE:
            env.update({
                "PBS_NUM_NODES": str(nodect), "PBS_NUM_PPN": str(first_cpus), "PBS_NP": str(entries),
                "PBS_SERVER": SERVER, "PBS_VERSION": f"TORQUE-{VERSION}", "PBS_VNODENUM": "0",
                "PBS_GPUFILE": os.path.join(spool, f"gpufile-{key}"),
            })
            if walltime:
                env["PBS_WALLTIME"] = str(int(walltime))
            if spec.workdir:
                env["PBS_O_INITDIR"] = spec.workdir
            if idx is not None:
                env["PBS_ARRAYID"] = str(idx)
        else:
            env["NCPUS"] = str(first_cpus)
            env["OMP_NUM_THREADS"] = str(first_cpus)
            if idx is not None:
                env["PBS_ARRAY_INDEX"] = str(idx)
                env["PBS_ARRAY_ID"] = job_id
        env.update(E.emulator_env())
        if TORQUE:
            dflt_o = f"{name}.o{seq}" + (f"-{idx}" if idx is not None else "")
            dflt_e = f"{name}.e{seq}" + (f"-{idx}" if idx is not None else "")
        else:
            dflt_o = f"{name}.o{seq}" + (f".{idx}" if idx is not None else "")
            dflt_e = f"{name}.e{seq}" + (f".{idx}" if idx is not None else "")
        stdout = out_path(spec.out, dflt_o, cwd, idx)
        stderr = out_path(spec.err, dflt_e, cwd, idx)
        if spec.join == "oe":
            t_out, t_err = stdout, None
        elif spec.join == "eo":
            t_out, t_err = stderr, None
        else:
            t_out, t_err = stdout, stderr
        workdir = home
        if TORQUE and spec.workdir:
            workdir = spec.workdir if os.path.isabs(spec.workdir) else os.path.join(cwd, spec.workdir)
        task = E.Store.new_task(argv_job, env, workdir, t_out, t_err, walltime=walltime,
                                output_path=stdout, error_path=stderr, index=idx, nodefile=nodefile,
                                nodefile_entries=entries, tmpdir=tmpdir)
        tasks[key] = task
    job = store.new_job(
        seq, id=job_id, name=name, queue=queue, owner=f"{user}@{E.HOST}", account=spec.account,
        project=spec.project, resource_list=rl, join=spec.join, array=spec.array[1] if is_array else None,
        indices=indices if is_array else None, variable_list=dict(o_vars, **user_vars),
        submit_args=" ".join(shlex.quote(a) for a in argv), cwd=cwd, keep=spec.keep,
        mail_points=spec.mail_points, rerunable=spec.rerunable, priority=spec.priority,
        start_delay=E.env_float("DROVER_EMU_START_DELAY", 0.0), walltime=walltime,
        flavor=FLAVOR, output_path=parent_out, error_path=parent_err,
    )
    job["tasks"] = tasks
    store.launch(job)
    if not spec.quiet:
        print(job_id)
    return 0


# ------------------------------------------------------------------ runner hooks


def on_start(store, job, key, task):
    E.write_file(task["nodefile"], "".join(f"{E.HOST}\n" for _ in range(max(1, task["nodefile_entries"]))))
    if task["env"].get("PBS_GPUFILE"):
        E.write_file(task["env"]["PBS_GPUFILE"], "")
    os.makedirs(task["tmpdir"], exist_ok=True)


def on_walltime(store, job, key, task):
    used = int(time.time() - task["start_time"])
    limit = int(task["walltime"])
    msg = f"=>> PBS: job killed: walltime {used} exceeded limit {limit}\n"
    if job.get("flavor") == "torque":
        msg = f"PBS: job killed: walltime {used} exceeded limit {limit}\n"
    E.append_text(task["stderr"] or task["stdout"], msg)


def on_finish(store, job, key, task):
    pass


# ------------------------------------------------------------------ ids and state


ID_RE = re.compile(r"^(\d+)(\[(\d*)\])?(?:\.([\w.-]+))?(?:@[\w.-]+)?$")


def parse_id(text, prog):
    """-> (seq, index or None or '' for the array) or raises QsubError."""
    m = ID_RE.match(text.strip())
    if not m:
        raise QsubError(f"{prog}: illegally formed job identifier: {text}", 1)
    suffix = m.group(4)
    if suffix and suffix not in (SERVER, E.HOST) and not SERVER.startswith(suffix):
        raise QsubError(f"{prog}: Unknown Job Id {text}", E_UNKJOBID)
    seq = int(m.group(1))
    if m.group(2) is None:
        return seq, None
    return seq, m.group(3)  # '' = the whole array


def full_id(text):
    """'12' -> '12.SERVER' (PBS qualifies job ids with the server name)."""
    text = text.strip()
    return text if "." in text else f"{text}.{SERVER}"


def task_state(job, task):
    torque = job.get("flavor") == "torque"
    st = task["state"]
    if st == "Q":
        return "Q"
    if st == "R":
        return "E" if task.get("killing") else "R"
    if torque:
        return "C"
    return "X" if job.get("array") else "F"


def parent_state(job):
    torque = job.get("flavor") == "torque"
    states = [t["state"] for t in job["tasks"].values()]
    if all(s == "F" for s in states):
        return "C" if torque else "F"
    if all(s == "Q" for s in states):
        return "Q"
    return "R" if torque else "B"


def exit_status(task):
    if task["state"] != "F":
        return None
    if task.get("signal"):
        return 256 + task["signal"]
    if task.get("exit_code") is not None:
        return task["exit_code"]
    if task.get("reason") == "lost":
        return -3  # JOB_EXEC_RETRY-like: the emulator lost the job
    return None


def finished(job, task=None):
    tasks = [task] if task else list(job["tasks"].values())
    return all(t["state"] == "F" for t in tasks)


def end_time(job, task=None):
    tasks = [task] if task else list(job["tasks"].values())
    ends = [t.get("end_time") or 0 for t in tasks]
    return max(ends) if ends else 0


def ctime(t):
    return time.ctime(t) if t else None


def attributes(job, task, as_subjob):
    """Ordered attributes of a job, an array parent (task None) or a sub-job."""
    torque = job.get("flavor") == "torque"
    idx = task.get("index") if task else None
    tasks = [task] if task else list(job["tasks"].values())
    started = [t for t in tasks if t.get("start_time")]
    first_start = min((t["start_time"] for t in started), default=None)
    state = task_state(job, task) if task else parent_state(job)
    name = job["name"]
    a = {}
    a["Job_Name"] = name
    a["Job_Owner"] = job["owner"]
    if started:
        now = time.time()
        wall = max((t.get("end_time") or now) - t["start_time"] for t in started)
        ncpus = job["resource_list"].get("ncpus", 1) if not torque else job["tasks"][next(iter(job["tasks"]))]["nodefile_entries"]
        ru = {"cpupercent": 0, "cput": "00:00:00", "mem": "0kb", "ncpus": ncpus, "vmem": "0kb",
              "walltime": E.hms(wall)}
        if torque:
            ru = {"cput": "00:00:00", "energy_used": 0, "mem": "0kb", "vmem": "0kb", "walltime": E.hms(wall)}
        a["resources_used"] = ru
    a["job_state"] = state
    a["queue"] = job["queue"]
    a["server"] = SERVER
    if job.get("account"):
        a["Account_Name"] = job["account"]
    a["Checkpoint"] = "u"
    a["ctime"] = ctime(job["submit_time"])
    t0 = task or next(iter(job["tasks"].values()))
    a["Error_Path"] = f"{E.HOST}:{(task or job)['error_path']}"
    if task and task.get("start_time"):
        n = t0["nodefile_entries"]
        if torque:
            a["exec_host"] = f"{E.HOST}/0" + (f"-{n - 1}" if n > 1 else "")
        else:
            a["exec_host"] = f"{E.HOST}/0" + (f"*{job['resource_list'].get('ncpus', 1)}" if job["resource_list"].get("ncpus", 1) > 1 else "")
            a["exec_vnode"] = f"({E.HOST}:ncpus={job['resource_list'].get('ncpus', 1)})"
    a["Hold_Types"] = "n"
    a["Join_Path"] = job["join"]
    a["Keep_Files"] = job.get("keep", "n")
    a["Mail_Points"] = job.get("mail_points", "a")
    a["mtime"] = ctime(max([job["submit_time"]] + [t.get("end_time") or t.get("start_time") or 0 for t in tasks]))
    a["Output_Path"] = f"{E.HOST}:{(task or job)['output_path']}"
    a["Priority"] = job.get("priority", 0)
    a["qtime"] = ctime(job["submit_time"])
    a["Rerunable"] = job.get("rerunable", "True")
    a["Resource_List"] = dict(job["resource_list"])
    if first_start:
        a["stime"] = ctime(first_start)
    if task and task["state"] == "F" and not torque:
        a["obittime"] = ctime(task.get("end_time"))
    if task and task["state"] == "R" and task.get("pid"):
        a["session_id"] = task["pid"]
    if not torque:
        a["jobdir"] = E.user_home()
        sub = {"Q": 10, "R": 42, "E": 50, "F": 92, "X": 93, "B": 15}.get(state, 0)
        a["substate"] = sub
    a["Variable_List"] = dict(job["variable_list"])
    if not torque:
        if state == "Q":
            a["comment"] = "Not Running: Job is waiting to be scheduled" if not job.get("start_delay") else "Not Running: Insufficient amount of resource: ncpus"
        elif task and task.get("start_time"):
            on = f"on ({E.HOST}:ncpus={job['resource_list'].get('ncpus', 1)})"
            when = time.strftime("%a %b %d at %H:%M", time.localtime(task["start_time"]))
            a["comment"] = f"Job run at {when} {on}" + (" and finished" if task["state"] == "F" else "")
        elif finished(job, task):
            a["comment"] = "Job deleted" if not started else "Job Array Finished"
        elif not task:
            a["comment"] = "Job Array Began at " + time.strftime("%a %b %d at %H:%M", time.localtime(first_start or time.time()))
    else:
        a["euser"] = job["owner"].split("@")[0]
        a["egroup"] = job["owner"].split("@")[0]
        a["queue_type"] = "E"
    a["etime"] = ctime(job["submit_time"])
    if started:
        a["run_count"] = 1
    if task:
        es = exit_status(task)
        if es is not None:
            a["exit_status" if torque else "Exit_status"] = es
    if torque:
        a["submit_args"] = job["submit_args"]
        if first_start:
            a["start_time"] = ctime(first_start)
            a["start_count"] = 1
        a["fault_tolerant"] = "False"
        if task and task["state"] == "F":
            a["comp_time"] = ctime(task.get("end_time"))
        a["job_radix"] = 0
        a["submit_host"] = E.HOST
        if job.get("array") and task is None:
            a["job_array_request"] = job["array"]
        if idx is not None:
            a["job_array_id"] = idx
    else:
        a["Submit_arguments"] = job["submit_args"]
        if finished(job, task):
            a["history_timestamp"] = int(end_time(job, task))
        a["project"] = job.get("project") or "_pbs_project_default"
        a["Submit_Host"] = E.HOST
        if job.get("array"):
            if task is None:
                counts = {"Q": 0, "R": 0, "E": 0, "X": 0}
                for t in job["tasks"].values():
                    counts[task_state(job, t)] = counts.get(task_state(job, t), 0) + 1
                a["array"] = "True"
                a["array_state_count"] = f"Queued:{counts['Q']} Running:{counts['R']} Exiting:{counts['E']} Expired:{counts['X']} "
                a["array_indices_submitted"] = job["array"]
                remaining = [t["index"] for t in job["tasks"].values() if t["state"] == "Q"]
                if remaining:
                    a["array_indices_remaining"] = E.compress_ranges(remaining)
                else:
                    a["array_indices_remaining"] = "-"
            else:
                a["array_id"] = job["id"]
                a["array_index"] = idx
    return a


# ------------------------------------------------------------------ qstat


def visible(job, task, history):
    """Whether a finished job/sub-job is listed."""
    torque = job.get("flavor") == "torque"
    if not finished(job, task):
        return True
    if torque:
        keep = E.env_float("DROVER_EMU_KEEP_COMPLETED", 300.0)
        return time.time() - end_time(job, task) <= keep
    return history


def display_id(job, task):
    if task is None or not job.get("array"):
        return job["id"]
    return f"{job['seq']}[{task['index']}].{SERVER}"


def wrap_attr(line, width=79):
    """PBS-style wrapping of one 'name = value' line: continuation lines start with
    a tab."""
    if len(line) <= width:
        return [line]
    out = [line[:width]]
    rest = line[width:]
    while rest:
        out.append("\t" + rest[:width - 8])
        rest = rest[width - 8:]
    return out


def text_full(jid, attrs, wrap=True):
    lines = [f"Job Id: {jid}"]
    for k, v in attrs.items():
        if isinstance(v, dict):
            if k == "Variable_List":
                entries = [("Variable_List", ",".join(f"{a}={b}" for a, b in v.items()))]
            else:
                entries = [(f"{k}.{a}", b) for a, b in v.items()]
        else:
            entries = [(k, v)]
        for name, val in entries:
            line = f"    {name} = {val}"
            lines.extend(wrap_attr(line) if wrap else [line])
    return "\n".join(lines) + "\n"


def xml_escape(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cmd_qstat(argv):
    try:
        return _qstat(argv)
    except QsubError as e:
        E.die(e.message, e.code)


def _qstat(argv):
    if argv[:1] == ["--version"]:
        print(f"pbs_version = {VERSION}" if not TORQUE else f"Version: {VERSION}")
        return 0
    arg_opts = set("uFDWOqc") if not TORQUE else set("uWcqR")
    flags = set("afBeGHiJMnpQrsStTwx1") if not TORQUE else set("afBeGiMnQrRstulx1")
    opts, ids = {}, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) > 1 and a != "--":
            j = 1
            while j < len(a):
                c = a[j]
                if c in arg_opts:
                    val = a[j + 1:] or (argv[i + 1] if i + 1 < len(argv) else None)
                    if not a[j + 1:]:
                        i += 1
                    if val is None:
                        raise QsubError(f"qstat: option requires an argument -- '{c}'", 2)
                    opts[c] = val
                    break
                if c in flags:
                    opts[c] = True
                    j += 1
                    continue
                raise QsubError(f"qstat: invalid option -- '{c}'\n" + qstat_usage(), 2)
        elif a != "--":
            ids.append(a)
        i += 1
    if TORQUE and "x" in opts:
        opts["xml"] = True
        del opts["x"]
    fmt = opts.get("F")
    if fmt is not None and fmt not in ("json", "dsv"):
        raise QsubError(f"qstat: invalid -F value: {fmt}", 2)
    if "Q" in opts or "B" in opts:
        return qstat_queues_server(opts)
    history = bool(opts.get("x") or opts.get("H"))
    full = bool(opts.get("f"))
    subjobs = bool(opts.get("t"))
    store = E.Store(SYSTEM)
    store.reconcile()
    jobs = {j["seq"]: j for j in store.jobs()}
    selected = []  # (job, task or None)
    rc = 0
    errors = []
    if ids:
        for text in ids:
            try:
                seq, idx = parse_id(text, "qstat")
            except QsubError as e:
                errors.append(e.message)
                rc = e.code
                continue
            job = jobs.get(seq)
            want_array = idx is not None
            if job is None or (bool(job.get("array")) != want_array and not (TORQUE and job.get("array") and idx is None)):
                errors.append(f"qstat: Unknown Job Id {'Error ' if TORQUE else ''}{full_id(text)}")
                rc = E_UNKJOBID
                continue
            task = None if job.get("array") else job["tasks"]["0"]
            if idx not in (None, ""):
                task = job["tasks"].get(str(idx))
                if task is None:
                    errors.append(f"qstat: Unknown Job Id {'Error ' if TORQUE else ''}{full_id(text)}")
                    rc = E_UNKJOBID
                    continue
            if not visible(job, task, history):
                if TORQUE:
                    errors.append(f"qstat: Unknown Job Id Error {display_id(job, task)}")
                    rc = E_UNKJOBID
                else:
                    errors.append(f"qstat: {display_id(job, task)} Job has finished, use -x or -H to obtain historical job information")
                    rc = E_HISTJOB
                continue
            selected.append((job, task))
            if task is None and job.get("array") and subjobs:
                selected.extend((job, t) for t in job["tasks"].values())
    else:
        for job in jobs.values():
            if job.get("array"):
                if "J" in opts or not subjobs:
                    if visible(job, None, history):
                        selected.append((job, None))
                    continue
                if visible(job, None, history):
                    selected.append((job, None))
                selected.extend((job, t) for t in job["tasks"].values() if visible(job, t, history))
            else:
                t = job["tasks"]["0"]
                if visible(job, t, history):
                    selected.append((job, t))
        if "u" in opts:
            users = set(opts["u"].split(","))
            selected = [(j, t) for j, t in selected if j["owner"].split("@")[0] in users]

    def attrs_of(job, task):
        if task is None and not job.get("array"):
            task = job["tasks"]["0"]
        return attributes(job, task, task is not None and bool(job.get("array")))

    if fmt == "json":
        if TORQUE:
            raise QsubError("qstat: invalid option -- 'F'\n" + qstat_usage(), 2)
        doc = {"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": SERVER}
        if selected:
            doc["Jobs"] = {display_id(j, t): attrs_of(j, t) for j, t in selected}
        print(json.dumps(doc, indent=4))
    elif opts.get("xml"):
        out = ["<Data>"]
        for j, t in selected:
            out.append("<Job><Job_Id>%s</Job_Id>" % xml_escape(display_id(j, t)))
            for k, v in attrs_of(j, t).items():
                if isinstance(v, dict):
                    if k == "Variable_List":
                        out.append(f"<{k}>{xml_escape(','.join(f'{a}={b}' for a, b in v.items()))}</{k}>")
                    else:
                        out.append(f"<{k}>" + "".join(f"<{a}>{xml_escape(b)}</{a}>" for a, b in v.items()) + f"</{k}>")
                else:
                    out.append(f"<{k}>{xml_escape(v)}</{k}>")
            out.append("</Job>")
        out.append("</Data>")
        print("".join(out))
    elif full:
        wrap = not (opts.get("1") or opts.get("w"))
        blocks = [text_full(display_id(j, t), attrs_of(j, t), wrap) for j, t in selected]
        sys.stdout.write("\n".join(blocks))
    elif selected:
        print_table(selected, opts)
    for e in errors:
        sys.stderr.write(e + "\n")
    return rc


def print_table(selected, opts):
    if TORQUE:
        print("Job ID                    Name             User            Time Use S Queue")
        print("------------------------- ---------------- --------------- -------- - -----")
    else:
        print("Job id            Name             User              Time Use S Queue")
        print("----------------  ---------------- ----------------  -------- - -----")
    for job, task in selected:
        jid = display_id(job, task)
        state = task_state(job, task) if task else parent_state(job)
        used = "0" if state == "Q" else "00:00:00"
        user = job["owner"].split("@")[0]
        if TORQUE:
            used = "0" if state == "Q" else "00:00:00"
            print(f"{jid[:25]:<25} {job['name'][:16]:<16} {user[:15]:<15} {used:>8} {state} {job['queue']:<5}")
        else:
            shown = jid if len(jid) <= 16 else jid[:15] + "*"
            name = job["name"] if len(job["name"]) <= 16 else job["name"][:15] + "*"
            print(f"{shown:<16}  {name:<16} {user[:16]:<16}  {used:>8} {state} {job['queue']:<5}")


def qstat_queues_server(opts):
    if "B" in opts:
        print("Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status")
        print("---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------")
        print(f"{SERVER:<16}     0     0     0     0     0     0     0     0 Active")
        return 0
    print("Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type")
    print("---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----")
    for q in queues():
        print(f"{q:<16}     0     0 yes yes     0     0     0     0     0     0 Exec")
    return 0


def qstat_usage():
    if TORQUE:
        return ("usage: \n"
                "qstat [-f [-1]] [-W site_specific] [-x] [ job_identifier... | destination... ]\n"
                "qstat [-a|-i|-r|-e] [-c] [-n [-1]] [-s] [-G|-M] [-R] [-u user_list] [ job_identifier... | destination... ]\n"
                "qstat -Q [-f [-1]] [-W site_specific] [ destination... ]\n"
                "qstat -q [-G|-M] [ destination... ]\n"
                "qstat -B [-f [-1]] [-W site_specific] [ server_name... ]\n"
                "qstat -t")
    return ("usage: \n"
            "qstat [-f] [-J] [-p] [-t] [-x] [-E] [-F format] [-D delim] [ job_identifier... | destination... ]\n"
            "qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]\n"
            "\t[ job_identifier... | destination... ]\n"
            "qstat -Q [-f] [-F format] [-D delim] [ destination... ]\n"
            "qstat -q [-G|-M] [ destination... ]\n"
            "qstat -B [-f] [-F format] [-D delim] [ server_name... ]\n"
            "qstat --version")


# ------------------------------------------------------------------ qdel


def cmd_qdel(argv):
    force = False
    ids = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-W", "-m", "-t", "-a", "-b") or (a.startswith("-W") and len(a) > 2):
            val = a[2:] if len(a) > 2 else (argv[i + 1] if i + 1 < len(argv) else "")
            if len(a) == 2:
                i += 1
            if a.startswith("-W") and val.strip() == "force":
                force = True
        elif a in ("-x", "-p", "-c"):
            if a == "-p":
                force = True
        elif a.startswith("-"):
            E.die(f"qdel: invalid option -- '{a[1:2]}'\nusage: qdel [-W force|suppress_email=X] [-x] job_identifier...\n"
                  "       qdel --version", 2)
        else:
            ids.append(a)
        i += 1
    if not ids:
        E.die("usage: qdel [-W force|suppress_email=X] [-x] job_identifier...\n       qdel --version", 2)
    store = E.Store(SYSTEM)
    store.reconcile()
    rc = 0
    with store.lock():
        for text in ids:
            if TORQUE and text == "all":
                for job in store.jobs():
                    for key in job["tasks"]:
                        store.request_kill(job, key, force=force)
                continue
            try:
                seq, idx = parse_id(text, "qdel")
            except QsubError as e:
                sys.stderr.write(e.message + "\n")
                rc = e.code
                continue
            job = store.load(seq)
            want_array = idx is not None
            if job is None or job.get("system") != SYSTEM or (bool(job.get("array")) != want_array and not (TORQUE and job.get("array"))):
                sys.stderr.write(f"qdel: Unknown Job Id {full_id(text)}\n")
                rc = E_UNKJOBID
                continue
            if idx not in (None, ""):
                keys = [str(idx)] if str(idx) in job["tasks"] else []
                if not keys:
                    sys.stderr.write(f"qdel: Unknown Job Id {full_id(text)}\n")
                    rc = E_UNKJOBID
                    continue
            else:
                keys = list(job["tasks"])
            if all(job["tasks"][k]["state"] == "F" for k in keys):
                if TORQUE:
                    sys.stderr.write(f"qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE {display_id(job, job['tasks'][keys[0]] if idx else None)}\n")
                    rc = E_BADSTATE
                else:
                    sys.stderr.write(f"qdel: Job has finished {full_id(text)}\n")
                    rc = E_HISTJOB
                continue
            for k in keys:
                store.request_kill(job, k, force=force)
                job = store.load(seq)
    return rc


# ------------------------------------------------------------------ pbsdsh


def cmd_pbsdsh(argv):
    copies, node, serial, verbose, unique, host = None, None, False, False, False, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if a in ("-c", "-n", "-h"):
            if i + 1 >= len(argv):
                E.die(f"pbsdsh: option requires an argument -- '{a[1]}'", 1)
            val = argv[i + 1]
            i += 2
            if a == "-h":
                host = val
                continue
            if not val.isdigit():
                E.die(f"pbsdsh: bad {a} value: {val}", 1)
            if a == "-c":
                copies = int(val)
            else:
                node = int(val)
            continue
        for c in a[1:]:
            if c == "s":
                serial = True
            elif c == "v":
                verbose = True
            elif c == "o":
                pass
            elif c == "u":
                unique = True
            else:
                E.die(f"pbsdsh: invalid option -- '{c}'\nUsage: pbsdsh [-c copies][-s][-v][-o] -- program [args]\n"
                      "       pbsdsh [-n nodenumber][-s][-v][-o] -- program [args]", 1)
        i += 1
    cmd = argv[i:]
    if not cmd:
        E.die("Usage: pbsdsh [-c copies][-s][-v][-o] -- program [args]\n"
              "       pbsdsh [-n nodenumber][-s][-v][-o] -- program [args]", 1)
    nodefile = os.environ.get("PBS_NODEFILE")
    if not os.environ.get("PBS_JOBID") or not nodefile:
        E.die("pbsdsh: tm_init failed, rc = TM_ESYSTEM (17000)", 1)
    try:
        with open(nodefile) as f:
            nodes = [line.strip() for line in f if line.strip()]
    except OSError:
        E.die("pbsdsh: tm_init failed, rc = TM_ESYSTEM (17000)", 1)
    if unique:
        seen, uniq = set(), []
        for n in nodes:
            if n not in seen:
                seen.add(n)
                uniq.append(n)
        targets = list(range(len(uniq)))
    elif host is not None:
        targets = [k for k, n in enumerate(nodes) if n == host][:1]
        if not targets:
            E.die(f"pbsdsh: host {host} is not a node of this job", 1)
    elif node is not None:
        if node >= len(nodes):
            E.die(f"pbsdsh: node number {node} exceeds number of nodes allocated ({len(nodes)})", 1)
        targets = [node]
    elif copies is not None:
        targets = [k % len(nodes) for k in range(copies)]
    else:
        targets = list(range(len(nodes)))
    import subprocess
    procs = []
    failed = 0
    for tasknum, nodenum in enumerate(targets):
        env = dict(os.environ)
        env["PBS_TASKNUM"] = str(tasknum + 1)
        env["PBS_NODENUM"] = str(nodenum)
        env["PBS_VNODENUM"] = str(nodenum)
        if verbose:
            sys.stderr.write(f"pbsdsh: spawned task {tasknum} on node {nodenum}\n")
        try:
            p = subprocess.Popen(cmd, env=env)
        except OSError as e:
            sys.stderr.write(f"pbsdsh: spawn failed on node {nodenum}: {e.strerror}\n")
            failed += 1
            continue
        if serial:
            if p.wait() != 0:
                failed += 1
        else:
            procs.append(p)
    for p in procs:
        if p.wait() != 0:
            failed += 1
    if verbose:
        sys.stderr.write(f"pbsdsh: all tasks complete\n")
    return 1 if failed else 0


COMMANDS = {"qsub": cmd_qsub, "qstat": cmd_qstat, "qdel": cmd_qdel, "pbsdsh": cmd_pbsdsh}


def main(prog):
    try:
        sys.exit(COMMANDS[prog](sys.argv[1:]) or 0)
    except BrokenPipeError:
        sys.exit(1)
