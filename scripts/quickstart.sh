#!/usr/bin/env bash
# drover quickstart: install what is missing, build, make ~190 MB of sample data,
# compute a climatology (mean and std over time) and the anomaly on the embedded
# local cluster, then show what came out.
#
#   scripts/quickstart.sh [extra `drover run` options, e.g. --workers 4]
#
# Everything lands in scratch/quickstart/ under the repository root.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$DROVER_ROOT"

ensure_build_deps
ensure_venv
cargo_release_build

# `drover` on the PATH the way Rust tools are: a link in cargo's bin folder (on the
# PATH of new shells wherever rustup set Rust up).
BIN_DIR="${CARGO_HOME:-$HOME/.cargo}/bin"
mkdir -p "$BIN_DIR"
ln -sf "$DROVER_ROOT/target/release/drover" "$BIN_DIR/drover"
log "drover is $DROVER_ROOT/target/release/drover, linked as $BIN_DIR/drover (run \`drover --help\` in a new shell)"

QS="$DROVER_ROOT/scratch/quickstart"
mkdir -p "$QS"

log "sample data"
"$DROVER_PY" scripts/make_sample.py --out "$QS/t2m.h5" --shape 730,181,360 --chunks 73,181,360

cat > "$QS/workload.toml" <<'TOML'
# Daily temperature, 730 days x 181 latitudes x 360 longitudes (float32).
[inputs.t2m]
file = "t2m.h5"
dataset = "/t2m"
chunks = [73, 181, 360]

# Climatology: the mean and the spread over time at every grid point.
[[outputs]]
expr = "mean(t2m, axis=0)"
file = "climatology.h5"
dataset = "/t2m_mean"

[[outputs]]
expr = "std(t2m, axis=0)"
file = "climatology.h5"
dataset = "/t2m_std"

# Anomaly: each day minus the climatological mean, stored as float32.
[[outputs]]
expr = "t2m - mean(t2m, axis=0)"
file = "anomaly.h5"
dataset = "/t2m_anomaly"
dtype = "f32"
TOML

# outputs of an earlier quickstart run
rm -f "$QS/climatology.h5" "$QS/anomaly.h5" "$QS/result.json"

log "drover run $QS/workload.toml --json $*"
"$DROVER_ROOT/target/release/drover" run "$QS/workload.toml" --json "$@" > "$QS/result.json.tmp"
mv "$QS/result.json.tmp" "$QS/result.json"

"$DROVER_PY" scripts/quickstart_summary.py "$QS"

log "real data: a monthly climatology and anomaly of OSTIA sea surface temperature (iris-sample-data)"
rm -f "$QS/real.nc"
"$DROVER_ROOT/target/release/drover" run "$("$DROVER_PY" scripts/quickstart_real.py prepare "$QS")" "$@"
"$DROVER_PY" scripts/quickstart_real.py show "$QS"
printf '\nfiles: %s\n' "$QS" >&2
