#!/usr/bin/env bash
# Builds the benchmarks with the default CMake preset and runs both with
# short settings, printing their tables. docs/BENCHMARKS.md describes the
# full runs and their results.
#
# Usage: scripts/bench.sh
#
# Environment:
#   KEYCELL_HANDSHAKE_BENCH_FLAGS  flags for keycell-handshake-bench
#                                  (default: --rounds=3 --seconds=1)
#   KEYCELL_SIGN_BENCH_FLAGS       flags for keycell-sign-bench
#                                  (default: --benchmark_min_time=0.2)
#
# Takes about three minutes with the defaults, an estimate: 126 handshake
# measurements of 1 s with warm-up, and about 40 s of signatures. Every
# connection goes to 127.0.0.1 or to keycelld's socket in /tmp.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KEYCELL_ROOT"

install_missing_packages

read -r -a handshake_flags \
  <<<"${KEYCELL_HANDSHAKE_BENCH_FLAGS:---rounds=3 --seconds=1}"
read -r -a sign_flags <<<"${KEYCELL_SIGN_BENCH_FLAGS:---benchmark_min_time=0.2}"

log "configure (preset default)"
cmake --preset default -DKEYCELL_BUILD_BENCH=ON
log "build the benchmarks"
cmake --build --preset default \
  --target keycell-handshake-bench keycell-sign-bench

bin="build/default/bench"
log "keycell-handshake-bench ${handshake_flags[*]}"
"$bin/keycell-handshake-bench" "${handshake_flags[@]}"
log "keycell-sign-bench ${sign_flags[*]}"
"$bin/keycell-sign-bench" "${sign_flags[@]}"
