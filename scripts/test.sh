#!/usr/bin/env bash
# drover's test entry point (CI runs it through .ci/run).
#
#   scripts/test.sh              set-up, then every stage in DEFAULT_STAGES
#   scripts/test.sh e2e          set-up, then only the named stage(s)
#   scripts/test.sh --list       list the stages
#
# Set-up (fatal on failure, since testing a stale binary would mislead): Debian
# build packages, the Python venv (.venv), `cargo build --release`.
# Test stages all run even when an earlier one fails; the script prints a summary
# and exits 1 if any stage failed.
#
# Adding a stage (e.g. a SLURM or SGE testbed): define a function `stage_NAME`
# below that exits non-zero on failure (it runs in a subshell with `set -euo
# pipefail`, cwd = repo root, so it may cd, export and do its own set-up), and add
# NAME to DEFAULT_STAGES. Extra pytest options: PYTEST_ADDOPTS="-k auth -x".
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DROVER_ROOT"

# ---------------------------------------------------------------- stages

# Rust unit, integration and simulation tests.
stage_cargo_test() {
    cargo test --release
}

# Coverage-guided fuzzing of every decoder of outside bytes: each target 10 s from
# its seed corpus (scripts/fuzz.sh; campaigns run it longer).
stage_fuzz() {
    scripts/fuzz.sh "${DROVER_FUZZ_SECONDS:-10}"
}

# End-to-end tests of the real binary, numpy + h5py as the oracle.
stage_e2e() {
    DROVER_BIN="${DROVER_BIN:-target/release/drover}" \
        "$DROVER_PY" -m pytest tests/e2e -q
}

# Batch systems: real SLURM (3 virtual nodes) and SGE from scripts/testbed, plus the
# PBS/Torque/LSF/HTCondor emulators' own tests and drover's live batch tests. The
# testbed is started here and always stopped again, whatever the tests did.
stage_batch() {
    trap 'scripts/testbed/slurm.sh down >/dev/null 2>&1 || true; scripts/testbed/sge.sh down >/dev/null 2>&1 || true; scripts/testbed/emulators/reset.sh >/dev/null 2>&1 || true' EXIT
    scripts/testbed/slurm.sh up
    scripts/testbed/sge.sh up
    local rc=0
    "$DROVER_PY" -m pytest tests/testbed -q || rc=1
    DROVER_BIN="${DROVER_BIN:-target/release/drover}" "$DROVER_PY" -m pytest tests/batch -q || rc=1
    return "$rc"
}

# Several hosts: network namespaces from scripts/testbed/netns.sh (a login node and
# three compute nodes with their own addresses and host names), always torn down.
stage_netns() {
    trap 'scripts/testbed/netns.sh down >/dev/null 2>&1 || true' EXIT
    DROVER_BIN="${DROVER_BIN:-target/release/drover}" "$DROVER_PY" -m pytest tests/netns -q
}

DEFAULT_STAGES=(cargo_test fuzz e2e batch netns)

# What the tests may leave in /tmp: nothing. The private folders of embedded runs
# (/tmp/drover-XXXXXX) and pytest's base folder, whose retention keeps no test's
# files. (The batch testbeds keep their state in /var/tmp/drover-testbed.)
tmp_snapshot() {
    find /tmp -maxdepth 1 -mindepth 1 -name 'drover-*' -printf '%f\n' 2>/dev/null | sort
}

tmp_kib() {
    du -sk "/tmp/pytest-of-$(id -un)" 2>/dev/null | cut -f1 || true
}

# check_tmp_clean BEFORE_LIST BEFORE_KIB: fails naming what the stages left behind.
check_tmp_clean() {
    local new grown
    new=$(comm -13 <(printf '%s\n' "$1" | sed '/^$/d') <(tmp_snapshot))
    grown=$(( $(tmp_kib || echo 0) - ${2:-0} ))
    if [ -n "$new" ]; then
        printf 'left behind in /tmp: %s\n' "$(echo "$new" | tr '\n' ' ')" >&2
        return 1
    fi
    if [ "${grown:-0}" -gt 20480 ]; then
        printf 'pytest left %d KiB more in /tmp/pytest-of-%s\n' "$grown" "$(id -un)" >&2
        return 1
    fi
    printf 'nothing new left in /tmp\n' >&2
}

# ---------------------------------------------------------------- driver

RESULTS=()   # "PASS|FAIL name seconds detail"
FAILED=()

# run_step NAME CMD...: runs CMD in a subshell with errexit on; records the result
# in RESULTS/FAILED and STEP_RC. It always returns 0 and must be called as a plain
# command: inside `if`, `||` or `!` bash would ignore errexit in the subshell too.
run_step() {
    local name="$1" start
    shift
    start=$SECONDS
    printf '\n==================== %s ====================\n' "$name" >&2
    set +e
    ( set -euo pipefail; "$@" )
    STEP_RC=$?
    set -e
    if [ "$STEP_RC" -eq 0 ]; then
        RESULTS+=("PASS $name $((SECONDS - start))s")
    else
        RESULTS+=("FAIL $name $((SECONDS - start))s exit=$STEP_RC")
        FAILED+=("$name")
    fi
    return 0
}

print_summary() {
    local r
    printf '\n==================== summary ====================\n' >&2
    for r in "${RESULTS[@]}"; do
        # shellcheck disable=SC2086
        printf '  %-4s  %-16s %s %s\n' $r >&2
    done
}

setup_all() {
    # promtool checks the dashboard's /metrics; Chromium, driven by playwright-core
    # from web/node_modules, loads the dashboard and the report (tests/e2e/test_dashboard.py).
    ensure_debian_packages prometheus chromium
    # iptables: loss and blocked UDP inside the netns testbed's nodes; socat: a TCP
    # port forward to the login node (the SSH -L case of tests/netns/test_transport.py).
    ensure_debian_packages iptables socat
    command -v npm >/dev/null 2>&1 || ensure_debian_packages nodejs npm
    if [ ! -d "$DROVER_ROOT/web/node_modules/playwright-core" ]; then
        log "npm ci in web/ (playwright-core for the browser tests; the page itself is prebuilt in web/dist)"
        (cd "$DROVER_ROOT/web" && npm ci --no-audit --no-fund)
    fi
    ensure_build_deps
    ensure_cargo_fuzz
    ensure_venv
    cargo_release_build
}

main() {
    local stages=() s
    if [ "${1:-}" = "--list" ]; then
        printf '%s\n' "${DEFAULT_STAGES[@]}"
        return 0
    fi
    if [ "$#" -gt 0 ]; then stages=("$@"); else stages=("${DEFAULT_STAGES[@]}"); fi
    for s in "${stages[@]}"; do
        declare -F "stage_$s" >/dev/null || die "unknown stage '$s' (known: ${DEFAULT_STAGES[*]})"
    done

    run_step setup setup_all
    if [ "$STEP_RC" -ne 0 ]; then
        print_summary
        printf 'test.sh: set-up FAILED, no test stage ran\n' >&2
        return 1
    fi
    local tmp_before tmp_before_kib
    tmp_before=$(tmp_snapshot)
    tmp_before_kib=$(tmp_kib)
    for s in "${stages[@]}"; do
        run_step "$s" "stage_$s"
    done
    run_step tmp_clean check_tmp_clean "$tmp_before" "${tmp_before_kib:-0}"
    print_summary
    if [ "${#FAILED[@]}" -gt 0 ]; then
        printf 'test.sh: FAILED stages: %s (of %d, and the /tmp check)\n' "${FAILED[*]}" "${#stages[@]}" >&2
        return 1
    fi
    printf 'test.sh: all %d test stages OK\n' "${#stages[@]}" >&2
}

main "$@"
