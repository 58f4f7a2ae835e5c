# shellcheck shell=bash
# Shared set-up steps for drover's scripts (test.sh, quickstart.sh, later testbeds).
# Source it; it defines functions and variables only and changes no shell options.
#
#   DROVER_ROOT          the repository root (absolute)
#   DROVER_VENV          the Python venv for tests and helpers (default: $DROVER_ROOT/.venv)
#   DROVER_PY            that venv's python
#   log MSG              a progress line on stderr
#   die MSG              an error line on stderr, then exit 1
#   ensure_debian_packages PKG...   install the ones not installed (apt-get), if any
#   ensure_build_deps    what the Rust build needs: a C toolchain and make (Debian), and
#                        CMake >= 3.26 for the bundled HDF5 (PyPI, in .venv-build)
#   ensure_venv          the venv with numpy, h5py, pytest (pip only when an import fails)
#   cargo_release_build  cargo build --release, and the load generator example

DROVER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DROVER_VENV="${DROVER_VENV:-$DROVER_ROOT/.venv}"
DROVER_PY="$DROVER_VENV/bin/python"
# libopenblas-dev: the BLAS behind contractions (ndarray blas feature, exec::gemm)
DROVER_BUILD_PACKAGES=(gcc g++ make pkg-config libopenblas-dev)
# HDF5 is built from the source bundled in the hdf5-metno-src crate (HDF5 2.x, for
# H5Dchunk_iter); its CMakeLists needs CMake 3.26, newer than Debian 12's 3.25.
# .cargo/config.toml points the build at this one.
DROVER_BUILD_VENV="$DROVER_ROOT/.venv-build"
DROVER_CMAKE_VERSION=3.31.10

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when root, else through sudo.
_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

_debian_installed() {
    # dpkg -s succeeds for removed-but-configured packages too: check the status line
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

ensure_debian_packages() {
    local missing=() pkg
    command -v dpkg >/dev/null 2>&1 || die "not a Debian-like system (no dpkg); install by hand: $*"
    for pkg in "$@"; do
        _debian_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    _as_root apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_build_deps() {
    ensure_debian_packages "${DROVER_BUILD_PACKAGES[@]}"
    if ! "$DROVER_BUILD_VENV/bin/cmake" --version 2>/dev/null | grep -q "version $DROVER_CMAKE_VERSION\$"; then
        ensure_python_env "$DROVER_BUILD_VENV" "sys" "cmake==$DROVER_CMAKE_VERSION"
        "$DROVER_BUILD_VENV/bin/pip" install -q --disable-pip-version-check "cmake==$DROVER_CMAKE_VERSION"
        "$DROVER_BUILD_VENV/bin/cmake" --version >/dev/null || die "CMake did not install into $DROVER_BUILD_VENV"
    fi
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"   # rustup's default place, not always on PATH
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (install a Rust toolchain with rustup)"
}

# ensure_python_env DIR "IMPORTS" PIP-ARGS...: a venv at DIR whose python can
# `import IMPORTS`; created (installing python3-venv when Debian's python needs it)
# and pip-installed only when that import fails, then checked again.
ensure_python_env() {
    local dir="$1" imports="$2"
    shift 2
    local py="$dir/bin/python"
    [ -x "$py" ] && "$py" -c "import $imports" >/dev/null 2>&1 && return 0
    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 || ensure_debian_packages python3
    if [ -e "$dir" ] && ! "$py" -c pass >/dev/null 2>&1; then
        log "removing broken venv at $dir"   # e.g. its base interpreter is gone
        rm -rf "$dir"
    fi
    if [ ! -x "$py" ]; then
        log "creating Python venv at $dir"
        if ! "$python" -m venv "$dir" 2>/dev/null; then
            # Debian's python3 needs python3-venv for ensurepip
            rm -rf "$dir"
            ensure_debian_packages python3-venv
            "$python" -m venv "$dir"
        fi
    fi
    log "installing Python packages into $dir: $*"
    "$py" -m pip install -q --disable-pip-version-check "$@"
    "$py" -c "import $imports" >/dev/null 2>&1 || die "the venv at $dir still cannot import $imports"
}

ensure_venv() {
    ensure_python_env "$DROVER_VENV" "numpy, h5py, hdf5plugin, pytest, xarray, netCDF4, h5netcdf, cftime, iris_sample_data" -r "$DROVER_ROOT/tests/e2e/requirements.txt"
}

# cargo-fuzz, for scripts/fuzz.sh (the test suite's fuzz stage).
ensure_cargo_fuzz() {
    command -v cargo-fuzz >/dev/null 2>&1 && return 0
    log "cargo install cargo-fuzz --locked (the fuzz stage's driver)"
    cargo install cargo-fuzz --locked --quiet
}

cargo_release_build() {
    # The load generator of the scale test and benchmark (examples/loadgen.rs), the
    # netns testbed's delay relay (examples/delay_relay.rs) and the hostile crowd of the
    # hardening tests (examples/flood.rs) and the failing FUSE file system of the
    # input-fault tests (examples/faultfs.rs) too.
    log "cargo build --release (and --example loadgen, delay_relay, flood, faultfs)"
    (cd "$DROVER_ROOT" && cargo build --release &&
        cargo build --release --example loadgen --example delay_relay --example flood --example faultfs)
}
