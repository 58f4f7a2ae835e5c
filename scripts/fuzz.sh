#!/usr/bin/env bash
# Coverage-guided fuzzing of drover's decoders of outside bytes (fuzz/, cargo-fuzz with
# libFuzzer; the targets are the functions of src/fuzzing.rs).
#
#   scripts/fuzz.sh                 every target for 10 s (what the test suite runs)
#   scripts/fuzz.sh 600             every target for 10 minutes (a campaign)
#   scripts/fuzz.sh 600 expr chunk  only these targets
#   scripts/fuzz.sh --list          the targets
#
# Each target starts from its seed corpus (fuzz/corpus/T, in the repository) and the
# corpus earlier runs grew (fuzz/corpus-run/T, not in the repository); new inputs go
# to the latter. A crash, a hang (over 10 s on one input), a single allocation over
# 128 MiB (the largest a decoder may make: an --array of 10,000,000 indices is 80 MB)
# or a resident size over 2 GiB fails the target: the input is kept in
# fuzz/artifacts/T/ and the script exits 1. Once fixed, the input goes into
# fuzz/regressions/T/, which the unit tests replay on every run.
#
# The toolchain: libFuzzer's instrumentation needs nightly rustc flags. The nightly
# toolchain is used when rustup has one; otherwise the stable one, with
# RUSTC_BOOTSTRAP=1 (which lets it accept them). AddressSanitizer is on.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DROVER_ROOT"

targets() { sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^drover-fuzz$'; }

if [ "${1:-}" = "--list" ]; then
    targets
    exit 0
fi
SECONDS_EACH="${1:-10}"
shift || true
case "$SECONDS_EACH" in
    ''|*[!0-9]*) die "scripts/fuzz.sh: \"$SECONDS_EACH\" is not a number of seconds; use e.g. scripts/fuzz.sh 600 [TARGET...]" ;;
esac
mapfile -t ALL < <(targets)
if [ "$#" -gt 0 ]; then
    for t in "$@"; do
        printf '%s\n' "${ALL[@]}" | grep -qx -- "$t" || die "scripts/fuzz.sh: no target \"$t\"; the targets are: ${ALL[*]}"
    done
    TARGETS=("$@")
else
    TARGETS=("${ALL[@]}")
fi

command -v cargo-fuzz >/dev/null 2>&1 || die "cargo-fuzz is not installed; scripts/test.sh's set-up installs it (cargo install cargo-fuzz --locked)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ_CARGO=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    FUZZ_CARGO=(cargo fuzz)
fi

log "building the fuzz targets (${FUZZ_CARGO[*]} build)"
"${FUZZ_CARGO[@]}" build -O --debug-assertions >/dev/null
FUZZ_BIN="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

failed=()
for t in "${TARGETS[@]}"; do
    run="fuzz/corpus-run/$t"
    mkdir -p "$run" "fuzz/artifacts/$t"
    out=$(mktemp)
    rc=0
    # The binary built above, run directly: `cargo fuzz run` would build again first
    # (and rebuild everything if the sources changed meanwhile).
    "$FUZZ_BIN/$t" "$run" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$SECONDS_EACH" -timeout=10 -malloc_limit_mb=128 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -close_fd_mask=3 >"$out" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$out" | tail -1 || true)
    if [ "$rc" -eq 0 ]; then
        printf '%-16s %10s execs in %4s s   %s   crashes 0\n' "$t" "${execs:-?}" "$SECONDS_EACH" "$cov"
    else
        printf '%-16s FAILED (exit %d) after %s execs; the input is in fuzz/artifacts/%s/:\n' "$t" "$rc" "${execs:-?}" "$t"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|out-of-memory|malloc\(' "$out" | head -8 | sed 's/^/    /'
        failed+=("$t")
    fi
    rm -f "$out"
done
if [ "${#failed[@]}" -gt 0 ]; then
    die "fuzzing found faults in: ${failed[*]}"
fi
