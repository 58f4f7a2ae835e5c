#!/usr/bin/env bash
# Real SLURM (Debian's slurm-wlm 22.05) on this one machine, for drover's tests.
#
#   scripts/testbed/slurm.sh up       install (if missing), start, wait until usable
#   scripts/testbed/slurm.sh down     cancel every job, stop slurmctld + slurmd
#   scripts/testbed/slurm.sh status   sinfo + squeue; exit 0 iff the cluster is up
#   scripts/testbed/slurm.sh env      `export ...` lines for tests (eval "$(... env)")
#
# WHERE THE CONFIG LIVES: slurm.conf is written to Debian's default path
# /etc/slurm/slurm.conf (and a copy into the state folder), so the plain
# sbatch/squeue/scontrol/scancel/srun/sinfo commands find it with no flags and no
# environment. `env` still prints `export SLURM_CONF=/etc/slurm/slurm.conf` so a
# test that sources it is explicit; sourcing it is optional.
#
# The cluster: controller on $(hostname -s); 3 virtual compute nodes n1 n2 n3, all
# slurmd processes on this machine (`slurmd -N nK`, ports 17001-17003, CPUs=2,
# RealMemory=6000 each). Partitions: `debug` (default, MaxTime=INFINITE,
# OverSubscribe=FORCE:4 so up to 4 jobs share a core) and `short` (MaxTime=5
# minutes). DefMemPerCPU=256 so a job without --mem does not take a whole node.
# Timing knobs: KillWait=5 (SIGTERM -> SIGKILL at walltime or scancel),
# MinJobAge=$DROVER_SLURM_MIN_JOB_AGE (default 10 s: a finished job stays visible to
# `scontrol show job` / `squeue -t all` that long, then is purged; there is no
# slurmdbd, so sacct has nothing), SlurmdTimeout=20 (a killed slurmd makes its node
# DOWN within ~20 s; ReturnToService=2 brings it back when its slurmd registers
# again), batch_sched_delay=0 + short scheduler intervals for low start latency.
# Walltime is in whole minutes (sbatch -t 1); slurmctld checks time limits on its
# own periodic timer (about every 30 s), so a walltime kill lands up to ~30 s after
# the limit, plus KillWait.
#
# State (pid files, logs, spool, saved controller state) lives in
# ${DROVER_TESTBED_DIR:-/var/tmp/drover-testbed}/slurm. munged is started if it is not
# running and is LEFT RUNNING by `down` (it is harmless, shared by any other munge
# user, and restarting it is the slow part). Needs root. Never run cargo here: this
# script only installs Debian packages and starts daemons.
set -euo pipefail

STATE="${DROVER_TESTBED_DIR:-/var/tmp/drover-testbed}/slurm"
CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"
NODES=(n1 n2 n3)
TIMEOUT="${DROVER_SLURM_TIMEOUT:-60}"
MIN_JOB_AGE="${DROVER_SLURM_MIN_JOB_AGE:-10}"
MARKER="# written by drover scripts/testbed/slurm.sh"

TB_NAME=slurm
die_logs() { echo "$STATE"/log/*.log /var/log/munge/munged.log; }
# shellcheck source=scripts/testbed/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ctld_pid() { pidfile_pid "$STATE/run/slurmctld.pid"; }
slurmd_pid() { pidfile_pid "$STATE/run/slurmd-$1.pid"; }

ensure_packages() {
    local missing=() p
    for p in slurm-wlm munge; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed$' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

munge_ok() { munge -n 2>/dev/null | unmunge 2>/dev/null | grep -q 'STATUS: *Success'; }

ensure_munge() {
    munge_ok && return 0
    log "starting munged"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -s /etc/munge/munge.key ] || die "no /etc/munge/munge.key (the munge package creates it)"
    local deadline=$((SECONDS + 15))
    until munge_ok; do
        # (re)start it whenever no munged runs, e.g. one that was still exiting
        if ! pgrep -x munged >/dev/null 2>&1; then
            su -s /bin/sh munge -c munged 9>&- || log "munged did not start (will retry)"
        fi
        [ "$SECONDS" -ge "$deadline" ] && die "munge -n | unmunge does not succeed"
        sleep 0.2
    done
    log "ok: munge -n | unmunge: STATUS: Success"
}

write_conf() {
    mkdir -p "$STATE/run" "$STATE/log" "$STATE/ctld"
    local n
    for n in "${NODES[@]}"; do mkdir -p "$STATE/spool/slurmd-$n"; done
    cat >"$STATE/slurm.conf" <<EOF
$MARKER (state in $STATE)
ClusterName=drover
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
SlurmctldPort=6817
StateSaveLocation=$STATE/ctld
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmdSpoolDir=$STATE/spool/slurmd-%n
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no systemd on this machine
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
# prompt starts, kills and clean-up
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1,default_queue_depth=200
KillWait=5
MinJobAge=$MIN_JOB_AGE
MessageTimeout=10
SlurmdTimeout=20
SlurmctldTimeout=20
InactiveLimit=0
ReturnToService=2
NodeName=n[1-3] NodeHostname=$HOST Port=17001-17003 CPUs=2 RealMemory=6000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=short Nodes=ALL Default=NO MaxTime=5 State=UP OverSubscribe=FORCE:4
EOF
    mkdir -p /etc/slurm
    if [ -e "$CONF" ] && ! grep -q "^$MARKER" "$CONF"; then
        log "moving a foreign $CONF to $CONF.drover-bak"
        mv "$CONF" "$CONF.drover-bak"
    fi
    if ! cmp -s "$STATE/slurm.conf" "$CONF"; then
        cp "$STATE/slurm.conf" "$CONF"
    fi
}

# All three nodes respond (no '*' in the compact state) and are usable.
nodes_ready() {
    local out
    out="$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null)" || return 1
    [ "$(printf '%s\n' "$out" | grep -cE '^n[1-3] (idle|mix|alloc)$')" -eq 3 ]
}

# nodes_idle: all three nodes idle (the state asked for after a fresh start).
nodes_idle() {
    local out
    out="$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null)" || return 1
    [ "$(printf '%s\n' "$out" | grep -cE '^n[1-3] idle$')" -eq 3 ]
}

daemons_running() {
    proc_named "$(ctld_pid)" slurmctld || return 1
    local n
    for n in "${NODES[@]}"; do proc_named "$(slurmd_pid "$n")" slurmd || return 1; done
}

smoke_job() {
    local out="$STATE/smoke-$$.out" id deadline st
    rm -f "$out"
    id="$(sbatch --parsable -J drover-smoke -o "$out" --wrap hostname 2>&1)" \
        || die "smoke sbatch failed: $id"
    id="${id%%;*}"
    deadline=$((SECONDS + TIMEOUT))
    while :; do
        st="$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)"
        case "$st" in
        COMPLETED) break ;;
        FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
            die "smoke job $id ended $st: $(cat "$out" 2>/dev/null)" ;;
        "") # purged already (MinJobAge): judge by its output
            if [ "$(cat "$out" 2>/dev/null)" = "$(hostname)" ]; then break; fi ;;
        esac
        [ "$SECONDS" -ge "$deadline" ] && die "smoke job $id not done after ${TIMEOUT}s (state '${st:-gone}')"
        sleep 0.2
    done
    [ "$(cat "$out" 2>/dev/null)" = "$(hostname)" ] || die "smoke job $id wrote '$(cat "$out" 2>/dev/null)', expected '$(hostname)'"
    rm -f "$out"
    log "ok: smoke job $id (sbatch --wrap hostname) completed"
}

cmd_up() {
    local start=$SECONDS n
    ensure_packages
    ensure_munge
    write_conf
    if daemons_running && nodes_ready; then
        log "already up"
    else
        if ! proc_named "$(ctld_pid)" slurmctld; then
            log "starting slurmctld"
            slurmctld 9>&- || die "slurmctld failed to start"
        fi
        wait_until "$TIMEOUT" "slurmctld answers" scontrol ping || die "slurmctld does not answer"
        for n in "${NODES[@]}"; do
            if ! proc_named "$(slurmd_pid "$n")" slurmd; then
                log "starting slurmd -N $n"
                slurmd -N "$n" 9>&- || die "slurmd -N $n failed to start"
            fi
        done
        wait_until "$TIMEOUT" "n1 n2 n3 idle" nodes_idle || {
            sinfo -N -p debug >&2 || true
            die "nodes not idle within ${TIMEOUT}s"
        }
    fi
    smoke_job
    log "up in $((SECONDS - start))s"
}

no_jobs() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }

cmd_down() {
    local n p deadline
    if proc_named "$(ctld_pid)" slurmctld && scontrol ping >/dev/null 2>&1; then
        local ids
        ids="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')"
        if [ -n "${ids// /}" ]; then
            log "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            wait_until 30 "no jobs left" no_jobs ||
                log "warning: jobs still listed after 30 s: $(squeue -h 2>/dev/null | tr '\n' ';')"
        fi
        log "scontrol shutdown"
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    # Wait for the daemons we started (pid files), then kill what is left.
    local pids=()
    p="$(ctld_pid)"
    proc_named "$p" slurmctld && pids+=("$p")
    for n in "${NODES[@]}"; do
        p="$(slurmd_pid "$n")"
        proc_named "$p" slurmd && pids+=("$p")
    done
    deadline=$((SECONDS + 20))
    for p in "${pids[@]}"; do
        while pid_alive "$p" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if pid_alive "$p"; then
            log "killing leftover pid $p ($(cat "/proc/$p/comm" 2>/dev/null))"
            kill -TERM "$p" 2>/dev/null || true
            sleep 1
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    rm -f "$STATE"/run/*.pid
    log "down (munged left running)"
}

cmd_status() {
    local rc=0
    if ! scontrol ping >/dev/null 2>&1; then
        echo "slurmctld: not answering"
        rc=1
    else
        sinfo || true
        squeue || true
        nodes_ready || rc=1
    fi
    return "$rc"
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
}

testbed_main "$@"
