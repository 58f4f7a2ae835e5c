# Helpers shared by the batch testbed scripts (slurm.sh, sge.sh). Sourced, not run.
# The sourcing script sets TB_NAME (log prefix), STATE (its state folder) and defines
# die_logs (the log files whose tails explain a failure) and cmd_up, cmd_down,
# cmd_status, cmd_env.

log() { printf '[%s-testbed] %s\n' "$TB_NAME" "$*" >&2; }

# die MSG: prints MSG and the tail of every log the script knows of, exits 1.
die() {
    printf '[%s-testbed] ERROR: %s\n' "$TB_NAME" "$*" >&2
    local f
    for f in $(die_logs); do
        [ -s "$f" ] || continue
        printf -- '----- tail of %s -----\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s until it succeeds.
wait_until() {
    local limit="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
    log "ok: $what"
}

# pid_alive PID: alive and not a zombie.
pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
pidfile_pid() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }
# proc_named PID NAME: PID is alive and its command name is NAME (a pid file may be stale).
proc_named() { pid_alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

# testbed_main ARGS...: up|down (as root, under the state folder's lock) status|env.
testbed_main() {
    local cmd="${1:-}"
    case "$cmd" in
    up | down)
        [ "$(id -u)" -eq 0 ] || die "must run as root"
        mkdir -p "$STATE"
        # fd 9 holds the lock; every daemon is started with 9>&- so none keeps it
        exec 9>"$STATE/.lock"
        flock -w 300 9 || die "another $TB_NAME.sh holds $STATE/.lock"
        "cmd_$cmd"
        ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 up|down|status|env" >&2
        exit 2
        ;;
    esac
}
