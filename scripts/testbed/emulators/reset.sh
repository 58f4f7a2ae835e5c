#!/usr/bin/env bash
# Kills every emulator job (PBS/Torque, LSF, HTCondor) and wipes the emulator state.
#
#   scripts/testbed/emulators/reset.sh [DIR...]
#
# Which state folders (a state folder is one holding jobs/, as emulib.py makes):
#   - each DIR given, or, without arguments, $DROVER_EMU_STATE if it is set, or else
#     /tmp/drover-emu (the default home of every system's state);
#   - a DIR that is a state folder is reset; otherwise every state folder found below
#     it (up to 3 levels deep) is reset and DIR itself is left in place.
# Only processes recorded in the job records are signalled, and only if their pid
# still belongs to the same process (start time checked): the job's whole session
# gets SIGKILL, then its runner. Each state folder is then deleted.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
roots=("$@")
if [ "${#roots[@]}" -eq 0 ]; then
    roots=("${DROVER_EMU_STATE:-/tmp/drover-emu}")
fi
states=()
for r in "${roots[@]}"; do
    [ -d "$r" ] || continue
    if [ -d "$r/jobs" ]; then
        states+=("$r")
    else
        while IFS= read -r -d '' j; do states+=("$(dirname "$j")"); done \
            < <(find "$r" -mindepth 2 -maxdepth 4 -type d -name jobs -print0)
    fi
done
for d in "${states[@]}"; do
    python3 - "$here" "$d" <<'PY'
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import emulib as E
d = sys.argv[2]
jobs = os.path.join(d, "jobs")
killed = 0
store = E.Store("reset", d)
lock = store.lock()
lock.__enter__()  # no runner can start a task while we look (held until exit)
for name in os.listdir(jobs):
    if not name.endswith(".json"):
        continue
    try:
        with open(os.path.join(jobs, name)) as f:
            job = json.load(f)
    except (OSError, ValueError):
        continue
    for task in job.get("tasks", {}).values():
        if task.get("state") == "F":
            continue
        # the runner first, so that it cannot start a queued task meanwhile
        if E.proc_alive(task.get("runner_pid"), task.get("runner_start")):
            try:
                os.kill(task["runner_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        if E.proc_alive(task.get("pid"), task.get("pid_start")):
            E.kill_session(task["pid"], signal.SIGKILL)
            killed += 1
print(f"reset {d}: killed {killed} running job(s)")
PY
    rm -rf "$d"
done
