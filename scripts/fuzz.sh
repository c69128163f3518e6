#!/usr/bin/env bash
# Builds the libFuzzer targets with the "fuzz" CMake preset and runs each one
# over its seed corpus for a short smoke run.
#
# Usage: scripts/fuzz.sh [SECONDS]
#   SECONDS  run time of each target, passed as -max_total_time (default 20)
#
# Needs clang-14 and libclang-rt-14-dev. Each target reads the committed
# seeds in fuzz/corpus/<target> and writes the inputs it finds to
# build/fuzz/corpus/<target>, so the committed corpus stays unchanged. A
# crashing input is saved as build/fuzz/artifacts/<target>-crash-<sha1>.
# Exits non-zero if any target crashes, leaks or times out.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KEYCELL_ROOT"

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  die "invalid run time '$seconds': expected a positive number of seconds"
fi
command -v clang++-14 >/dev/null ||
  die "clang++-14 not found: apt-get install -y clang-14 libclang-rt-14-dev"

targets=(frame messages dispatcher size_prefixed key_loader reference config)

log "building the fuzz preset in build/fuzz"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

mkdir -p build/fuzz/artifacts
failed=()
for target in "${targets[@]}"; do
  binary="build/fuzz/fuzz/keycell_${target}_fuzzer"
  work_corpus="build/fuzz/corpus/${target}"
  mkdir -p "$work_corpus"
  log "running ${target} for ${seconds} s"
  # The load-key seeds name key files relative to the repository root.
  if ! "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="build/fuzz/artifacts/${target}-" \
    -print_final_stats=1 "$work_corpus" "fuzz/corpus/${target}" \
    >"build/fuzz/${target}.log" 2>&1; then
    tail -n 40 "build/fuzz/${target}.log" >&2
    failed+=("$target")
    continue
  fi
  grep -E '^stat::number_of_executed_units|^Done' "build/fuzz/${target}.log" >&2 ||
    true
done

if ((${#failed[@]} != 0)); then
  die "fuzz targets failed: ${failed[*]} (logs in build/fuzz/<target>.log)"
fi
log "every fuzz target ran ${seconds} s without a finding"
