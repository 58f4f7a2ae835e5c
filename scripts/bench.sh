#!/usr/bin/env bash
# drover's performance benchmark: drover against the hardware limit (a raw read of the
# same bytes from the page cache) and against dask (threads, and dask.distributed on a
# warm LocalCluster), on the same HDF5 files, in one run, alternating, several rounds.
#
#   scripts/bench.sh                       the full suite (every case, 5 rounds)
#   scripts/bench.sh --quick --rounds 2    a small smoke test of the harness
#   scripts/bench.sh --cases reduction,tiny --rounds 7
#   scripts/bench.sh --cases compressed    gzip-256k,gzip-2m,gzip-19m,gzip-64m,zstd,blosc-lz4,int16
#   scripts/bench.sh --cases gzip-2m,zstd,tiny-200k
#   scripts/bench.sh --cases tasks-true,tasks-10ms   task jobs: drover submit vs xargs -P 2, dask, Parsl
#   scripts/bench.sh --cases tiny-dashboard   the tiny workload without and with a browser on the dashboard
#   scripts/bench.sh --help                every option and case of scripts/bench.py
#
# Set-up (each step only when needed): the build dependencies (scripts/lib.sh), a benchmark
# venv `.venv-bench` (dask[array,distributed], h5py, hdf5plugin, numpy, psutil, xarray, h5netcdf,
# cubed, zarr, parsl;
# separate from the test venv `.venv`), `cargo build --release` and, when
# examples/decode_limit.rs exists, `cargo build --release --example decode_limit`
# (both skipped with BENCH_SKIP_BUILD=1), the data in scratch/bench/ (kept when
# present and up to date). Then scripts/bench.py (code in scripts/benchlib/) prints the
# table and writes scratch/bench/results-<time>.json.
# Method and latest figures: docs/PERFORMANCE.md.
#
# Environment: BENCH_SKIP_BUILD=1 (use the existing binaries), BENCH_VENV (default
# .venv-bench), DROVER_BIN (default target/release/drover), DECODE_LIMIT_BIN (default
# target/release/examples/decode_limit; the decode-limit contender is skipped with a
# note when it is absent).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DROVER_ROOT"

BENCH_VENV="${BENCH_VENV:-$DROVER_ROOT/.venv-bench}"
BENCH_PY="$BENCH_VENV/bin/python"
BENCH_PACKAGES=("dask[array,distributed]" h5py hdf5plugin numpy psutil xarray h5netcdf cubed zarr parsl)
DROVER_BIN="${DROVER_BIN:-$DROVER_ROOT/target/release/drover}"

ensure_bench_venv() {
    ensure_python_env "$BENCH_VENV" "dask, dask.array, distributed, h5py, hdf5plugin, numpy, psutil, xarray, h5netcdf, cubed, zarr, parsl" "${BENCH_PACKAGES[@]}"
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
        if [ -f "$DROVER_ROOT/examples/decode_limit.rs" ]; then
            log "cargo build --release --example decode_limit"
            (cd "$DROVER_ROOT" && cargo build --release --example decode_limit)
        fi
    fi
    [ -x "$DROVER_BIN" ] || die "no drover binary at $DROVER_BIN (build it with cargo build --release, or set DROVER_BIN)"

    log "benchmark data in scratch/bench/"
    "$BENCH_PY" "$DROVER_ROOT/scripts/bench.py" --data-only "$@"

    log "benchmark: drover vs raw read / decode limit vs dask (threads, distributed)"
    "$BENCH_PY" "$DROVER_ROOT/scripts/bench.py" --drover "$DROVER_BIN" "$@"
}

main "$@"
