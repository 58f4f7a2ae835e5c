#!/usr/bin/env bash
# drover's performance benchmark: drover against the hardware limit (a raw read of the
# same bytes from the page cache) and against dask (threads, and dask.distributed on a
# warm LocalCluster), on the same HDF5 files, in one run, alternating, several rounds.
#
#   scripts/bench.sh                       the full suite (2 GiB dataset, 5 rounds)
#   scripts/bench.sh --quick --rounds 2    a small smoke test of the harness (< ~1 min)
#   scripts/bench.sh --cases reduction,tiny --rounds 7
#   scripts/bench.sh --help                every option of scripts/bench.py
#
# Set-up (each step only when needed): Debian `libhdf5-dev pkg-config`, a benchmark
# venv `.venv-bench` (dask[array,distributed], h5py, numpy, psutil; separate from the
# test venv `.venv`), `cargo build --release` (skipped with BENCH_SKIP_BUILD=1), the
# data in scratch/bench/ (kept when present with the right shape and seed).
# Then scripts/bench.py prints the table and writes scratch/bench/results-<time>.json.
# Method and latest figures: docs/PERFORMANCE.md.
#
# Environment: BENCH_SKIP_BUILD=1 (use the existing target/release/drover),
# BENCH_VENV (default .venv-bench), DROVER_BIN (default target/release/drover).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DROVER_ROOT"

BENCH_VENV="${BENCH_VENV:-$DROVER_ROOT/.venv-bench}"
BENCH_PY="$BENCH_VENV/bin/python"
BENCH_PACKAGES=("dask[array,distributed]" h5py numpy psutil)
DROVER_BIN="${DROVER_BIN:-$DROVER_ROOT/target/release/drover}"

ensure_bench_venv() {
    ensure_python_env "$BENCH_VENV" "dask, dask.array, distributed, h5py, numpy, psutil" "${BENCH_PACKAGES[@]}"
}

main() {
    case " $* " in
        *" --help "* | *" -h "*)
            ensure_bench_venv
            exec "$BENCH_PY" "$DROVER_ROOT/scripts/bench.py" --help
            ;;
    esac

    ensure_debian_packages "${DROVER_BUILD_PACKAGES[@]}"
    ensure_bench_venv
    if [ "${BENCH_SKIP_BUILD:-0}" = "1" ]; then
        log "BENCH_SKIP_BUILD=1: using the existing $DROVER_BIN"
    else
        ensure_build_deps
        cargo_release_build
    fi
    [ -x "$DROVER_BIN" ] || die "no drover binary at $DROVER_BIN (build it with cargo build --release, or set DROVER_BIN)"

    log "benchmark data in scratch/bench/"
    "$BENCH_PY" "$DROVER_ROOT/scripts/bench.py" --data-only "$@"

    log "benchmark: drover vs raw read vs dask (threads, distributed)"
    "$BENCH_PY" "$DROVER_ROOT/scripts/bench.py" --drover "$DROVER_BIN" "$@"
}

main "$@"
