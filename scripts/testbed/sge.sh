#!/usr/bin/env bash
# Real Sun Grid Engine 8.1.9 (Debian's gridengine-*) on this one machine, for tests.
#
#   scripts/testbed/sge.sh up       install (if missing), configure, start, wait
#   scripts/testbed/sge.sh down     delete every job, stop execd + qmaster
#   scripts/testbed/sge.sh status   qhost + qstat -f; exit 0 iff qmaster answers and
#                                   the all.q queue instance is usable
#   scripts/testbed/sge.sh env      `export ...` lines for tests (eval "$(... env)")
#
# WHERE THE COMMANDS ARE: Debian installs qsub/qstat/qdel/qconf/... as /usr/bin
# wrappers that find SGE_ROOT/SGE_CELL themselves (/etc/default/gridengine). A test
# selects SGE by NOT putting an emulator bin dir (scripts/testbed/emulators/*/bin)
# ahead of /usr/bin on PATH: the PBS emulator's qsub/qstat/qdel share these names.
# `env` prints SGE_ROOT and SGE_CELL (the wrappers also work without them).
#
# What `up` does (TESTBED.md's recipe): preseeds debconf (master = this host, cell
# `default`, automatic configuration) and installs gridengine-master/-exec/-client if
# missing; makes this host's name the FIRST name on the first 127.0.0.1 line of
# /etc/hosts (qmaster refuses a client whose address resolves to `localhost`; the
# other names on the line and every other line are kept; the original is saved once
# as $STATE/hosts.orig), restarting a qmaster that ran before that fix; starts
# qmaster; sets the global config min_uid/min_gid to 0 (root may submit); adds this
# host as exec and submit host, the host group @allhosts, the parallel environment
# `smp` ($pe_slots, 999 slots), the queue all.q (slots 4, shell /bin/bash, pe_list
# smp, no load thresholds so a busy machine does not put it in alarm state); sets a
# 1-second scheduler interval; starts execd; then waits until a
# `qsub -b y -o /dev/null -j y /bin/true` job has run to completion.
# Every object is created with `qconf -A*` or, if it exists, rewritten with
# `qconf -M*`, so re-running `up` restores the configuration.
#
# Walltime: `-l h_rt=HH:MM:SS` (seconds work: h_rt=0:0:5) is enforced by execd.
# State (object files, pid list, saved /etc/hosts) lives in
# ${DROVER_TESTBED_DIR:-/var/tmp/drover-testbed}/sge. Needs root.
set -euo pipefail

STATE="${DROVER_TESTBED_DIR:-/var/tmp/drover-testbed}/sge"
HOST="$(hostname -s)"
TIMEOUT="${DROVER_SGE_TIMEOUT:-60}"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
# sge_qmaster writes its pid into qmaster_spool_dir (not where the init script
# looks); sge_execd honours SGE_EXECD_PIDFILE, which the init script sets.
QMASTER_PIDFILE=/var/spool/gridengine/qmaster/qmaster.pid
EXECD_PIDFILE=/var/run/gridengine/execd.pid
PACKAGES=(gridengine-master gridengine-exec gridengine-client)

TB_NAME=sge
die_logs() { echo /var/spool/gridengine/qmaster/messages /var/spool/gridengine/execd/"$HOST"/messages; }
# shellcheck source=scripts/testbed/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

qmaster_running() { proc_named "$(pidfile_pid "$QMASTER_PIDFILE")" sge_qmaster; }
execd_running() { proc_named "$(pidfile_pid "$EXECD_PIDFILE")" sge_execd; }
qmaster_answers() { qstat -u '*' >/dev/null 2>&1; }

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed$' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]} (apt-get, debconf preseeded)"
    local owner
    for owner in gridengine-common gridengine-master; do
        printf '%s\n' \
            "$owner shared/gridenginemaster string $HOST" \
            "$owner shared/gridenginecell string default" \
            "$owner shared/gridengineconfig boolean true"
    done | debconf-set-selections
    apt-get update -qq
    # Debian's policy-rc.d usually forbids starting daemons here; we start them below.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 ||
        { tail -n 30 "$STATE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    [ -s "$SGE_ROOT/$SGE_CELL/common/act_qmaster" ] || die "package setup made no cell $SGE_ROOT/$SGE_CELL (see $STATE/apt.log)"
}

# Returns 0 if /etc/hosts already had HOST first on its first 127.0.0.1 line,
# 1 if this call changed it.
fix_hosts() {
    [ -e "$STATE/hosts.orig" ] || cp /etc/hosts "$STATE/hosts.orig"
    local new
    new="$(awk -v h="$HOST" '
        !done && $1 == "127.0.0.1" {
            done = 1
            if ($2 != h) {
                line = "127.0.0.1 " h
                for (i = 2; i <= NF; i++) if ($i != h) line = line " " $i
                print line; changed = 1; next
            }
        }
        { print }
        END { if (!done) { print "127.0.0.1 " h " localhost"; changed = 1 } exit changed ? 3 : 0 }
    ' /etc/hosts)" && return 0
    [ $? -eq 3 ] || die "could not read /etc/hosts"
    log "making $HOST the first name on the 127.0.0.1 line of /etc/hosts"
    # rewrite in place (the file may be a bind mount, so no rename)
    printf '%s\n' "$new" >/etc/hosts
    return 1
}

# stop_daemon NAME PID: waits up to 20 s for PID to exit after a polite request,
# then SIGTERM, then SIGKILL.
stop_daemon() {
    local name="$1" p="$2" deadline=$((SECONDS + 20))
    while proc_named "$p" "$name" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if proc_named "$p" "$name"; then
        log "$name $p still running: SIGTERM, then SIGKILL"
        kill -TERM "$p" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while proc_named "$p" "$name" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        kill -KILL "$p" 2>/dev/null || true
    fi
}

# Pids of live processes named NAME that run this installation's binary.
installed_pids() {
    local p
    for p in $(pgrep -x "$1" || true); do
        pid_alive "$p" || continue
        [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "/usr/lib/gridengine/$1" ] && echo "$p"
    done
}

stop_execd() {
    local p
    p="$(pidfile_pid "$EXECD_PIDFILE")"
    qconf -ke "$HOST" >/dev/null 2>&1 || true
    proc_named "$p" sge_execd && stop_daemon sge_execd "$p"
    for p in $(installed_pids sge_execd); do stop_daemon sge_execd "$p"; done
}

stop_qmaster() {
    local p
    p="$(pidfile_pid "$QMASTER_PIDFILE")"
    qconf -km >/dev/null 2>&1 || true
    proc_named "$p" sge_qmaster && stop_daemon sge_qmaster "$p"
    for p in $(installed_pids sge_qmaster); do
        log "stopping stale sge_qmaster $p"
        kill -TERM "$p" 2>/dev/null || true
        stop_daemon sge_qmaster "$p"
    done
}

start_qmaster() {
    log "starting sge_qmaster"
    /etc/init.d/gridengine-master start 9>&- >/dev/null 2>&1 || true
    wait_until "$TIMEOUT" "qmaster answers" qmaster_answers || die "sge_qmaster does not answer within ${TIMEOUT}s"
}

# apply KIND NAME FILE: qconf -A<kind> FILE if NAME does not exist, else -M<kind>.
#   kinds: e (exec host), hgrp (host group), p (parallel env), q (queue)
apply() {
    local kind="$1" name="$2" file="$3" out
    if qconf "-s$kind" "$name" >/dev/null 2>&1; then
        out="$(qconf "-M$kind" "$file" 2>&1)" || die "qconf -M$kind $file: $out"
    else
        out="$(qconf "-A$kind" "$file" 2>&1)" || die "qconf -A$kind $file: $out"
    fi
}

configure() {
    local d="$STATE/conf" out
    mkdir -p "$d"
    # global configuration: root may run jobs; no job starts a login shell (bash -l
    # would read the user's dotfiles: root's here run `pyenv rehash`, which waits 60 s
    # on a lock that a job killed in the middle of it left behind)
    qconf -sconf global >"$d/global.cur" 2>/dev/null || qconf -sconf >"$d/global.cur"
    sed -e 's/^min_uid .*/min_uid                      0/' \
        -e 's/^min_gid .*/min_gid                      0/' \
        -e 's/^login_shells .*/login_shells                 none/' \
        -e '/^#global:/d' "$d/global.cur" >"$d/global"
    if ! cmp -s <(grep -v '^#' "$d/global.cur") "$d/global"; then
        out="$(cd "$d" && qconf -Mconf global 2>&1)" || die "qconf -Mconf global: $out"
    fi
    # scheduler: short interval, schedule at submit/finish, ignore load
    qconf -ssconf >"$d/sched.cur"
    sed -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
        -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' \
        -e 's/^job_load_adjustments .*/job_load_adjustments              NONE/' \
        -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time        0:0:0/' \
        "$d/sched.cur" >"$d/sched"
    if ! cmp -s "$d/sched.cur" "$d/sched"; then
        out="$(qconf -Msconf "$d/sched" 2>&1)" || die "qconf -Msconf: $out"
    fi
    cat >"$d/exechost" <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
    apply e "$HOST" "$d/exechost"
    qconf -ss 2>/dev/null | grep -qx "$HOST" || {
        out="$(qconf -as "$HOST" 2>&1)" || die "qconf -as $HOST: $out"
    }
    cat >"$d/allhosts" <<EOF
group_name @allhosts
hostlist $HOST
EOF
    apply hgrp @allhosts "$d/allhosts"
    cat >"$d/smp" <<'EOF'
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    apply p smp "$d/smp"
    # all.q from the built-in template, with our settings
    qconf -sq 2>/dev/null | sed \
        -e 's/^qname .*/qname                 all.q/' \
        -e 's/^hostlist .*/hostlist              @allhosts/' \
        -e 's/^load_thresholds .*/load_thresholds       NONE/' \
        -e 's/^pe_list .*/pe_list               smp/' \
        -e 's/^slots .*/slots                 4/' \
        -e 's|^shell .*|shell                 /bin/bash|' \
        >"$d/all.q"
    grep -q '^qname  *all.q$' "$d/all.q" || die "could not read the queue template (qconf -sq)"
    apply q all.q "$d/all.q"
}

# The all.q@HOST instance exists and has no state flags (u = execd unknown,
# a = alarm, E = error, d = disabled, ...).
queue_ready() {
    local line
    line="$(qstat -f -q "all.q@$HOST" 2>/dev/null | awk -v q="all.q@$HOST" '$1 == q')"
    [ -n "$line" ] || return 1
    # columns: queuename qtype resv/used/tot. load_avg arch states
    [ "$(printf '%s\n' "$line" | awk '{print NF}')" -le 5 ]
}

smoke_job() {
    local out id deadline
    out="$(cd /tmp && qsub -b y -o /dev/null -j y -N drover-smoke /bin/true 2>&1)" ||
        die "smoke qsub failed: $out"
    id="$(printf '%s\n' "$out" | sed -n 's/^Your job \([0-9][0-9]*\) .*/\1/p')"
    [ -n "$id" ] || die "unexpected qsub output: $out"
    deadline=$((SECONDS + TIMEOUT))
    # qstat -j ID answers until the job has finished
    while qstat -j "$id" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            qstat -f >&2 || true
            qstat -j "$id" 2>&1 | tail -n 15 >&2 || true
            die "smoke job $id did not finish within ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "ok: smoke job $id (qsub -b y /bin/true) ran to completion"
}

record_pids() {
    {
        pidfile_pid "$QMASTER_PIDFILE"
        echo
        pidfile_pid "$EXECD_PIDFILE"
        echo
    } | grep . >"$STATE/pids" || true
}

cmd_up() {
    local start=$SECONDS
    ensure_packages
    if ! fix_hosts; then
        if qmaster_running || [ -n "$(installed_pids sge_qmaster)" ]; then
            log "restarting sge_qmaster after the /etc/hosts change"
            stop_qmaster
        fi
    fi
    # qmaster is needed to configure; a qmaster that runs but doesn't answer is restarted
    if qmaster_running && ! wait_until 10 "qmaster answers" qmaster_answers; then
        log "sge_qmaster runs but does not answer: restarting it"
        stop_qmaster
    fi
    if ! qmaster_running; then
        # a qmaster without its pid file is stale (or was started by hand): stop it
        [ -z "$(installed_pids sge_qmaster)" ] || stop_qmaster
        start_qmaster
    fi
    configure
    if ! execd_running; then
        log "starting sge_execd"
        /etc/init.d/gridengine-exec start 9>&- >/dev/null 2>&1 || true
        wait_until 15 "sge_execd running" execd_running || die "sge_execd did not start"
    fi
    record_pids
    wait_until "$TIMEOUT" "queue all.q@$HOST ready" queue_ready || {
        qstat -f >&2 || true
        die "all.q@$HOST not ready within ${TIMEOUT}s"
    }
    smoke_job
    log "up in $((SECONDS - start))s"
}

no_jobs() { [ -z "$(qstat -u '*' 2>/dev/null)" ]; }

cmd_down() {
    if qmaster_answers; then
        if [ -n "$(qstat -u '*' 2>/dev/null)" ]; then
            log "deleting all jobs"
            qdel -u '*' >/dev/null 2>&1 || true
            wait_until 30 "no jobs left" no_jobs || {
                log "forcing deletion"
                qdel -f -u '*' >/dev/null 2>&1 || true
            }
        fi
    fi
    log "stopping sge_execd and sge_qmaster"
    stop_execd
    stop_qmaster
    # anything the testbed started that is still there: recorded pids, shepherds
    local p
    if [ -s "$STATE/pids" ]; then
        while read -r p; do
            if pid_alive "$p" && [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == sge_* ]]; then
                log "killing leftover $(cat "/proc/$p/comm") $p"
                kill -KILL "$p" 2>/dev/null || true
            fi
        done <"$STATE/pids"
    fi
    for p in $(installed_pids sge_shepherd); do
        log "killing leftover sge_shepherd $p"
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -f "$STATE/pids"
    log "down"
}

cmd_status() {
    if ! qmaster_answers; then
        echo "sge_qmaster: not answering"
        return 1
    fi
    qhost || true
    qstat -f -u '*' || true
    queue_ready
}

cmd_env() {
    echo "export SGE_ROOT=$SGE_ROOT"
    echo "export SGE_CELL=$SGE_CELL"
}

testbed_main "$@"
