#!/usr/bin/env bash
# Builds keycell and runs its test suites with the CMake presets.
#
# Usage: scripts/test.sh [PRESET...]
#   PRESET is default, asan, tsan or fuzz. Without arguments all four run,
#   in that order. Each of the first three runs
#     cmake --preset P && cmake --build --preset P && ctest --preset P
#   in build/P. fuzz runs every libFuzzer target for a short smoke run with
#   scripts/fuzz.sh. Missing Debian packages are installed first.
#
# Environment:
#   KEYCELL_CTEST_JOBS  tests that ctest runs at once (default: nproc)
#
# Runs every requested preset even after a failure, prints the closing
# ctest lines of each, and exits non-zero if any step failed.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KEYCELL_ROOT"

all_presets=(default asan tsan fuzz)
# Seconds that each fuzz target runs in the smoke run.
fuzz_seconds=10
presets=("$@")
if ((${#presets[@]} == 0)); then
  presets=("${all_presets[@]}")
fi
for preset in "${presets[@]}"; do
  case "$preset" in
    default | asan | tsan | fuzz) ;;
    *) die "unknown preset '$preset': expected one of ${all_presets[*]}" ;;
  esac
done

install_missing_packages
for preset in "${presets[@]}"; do
  if [[ "$preset" == fuzz ]]; then
    install_missing_packages "${KEYCELL_FUZZ_PACKAGES[@]}"
  fi
  # Only the default preset registers the server tests.
  if [[ "$preset" == default ]]; then
    install_packages_without_services "${KEYCELL_SERVER_PACKAGES[@]}"
  fi
done

jobs="${KEYCELL_CTEST_JOBS:-$(nproc)}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] \
  || die "invalid KEYCELL_CTEST_JOBS '$jobs': expected a positive number"

summary=()
total_passed=0
total_failed=0
failed_presets=()

# run_preset PRESET configures, builds and tests one preset. Returns non-zero
# if any step failed.
run_preset() {
  local preset="$1"
  local ctest_log="build/ctest-$preset.log"

  log "[$preset] configure"
  if ! cmake --preset "$preset"; then
    summary+=("$preset: configure failed")
    return 1
  fi
  log "[$preset] build"
  if ! cmake --build --preset "$preset"; then
    summary+=("$preset: build failed")
    return 1
  fi

  log "[$preset] test"
  local status=0
  ctest --preset "$preset" --parallel "$jobs" 2>&1 | tee "$ctest_log" \
    || status=$?

  # ctest closes with "N% tests passed, F tests failed out of T".
  local closing
  closing="$(grep -E '^[0-9]+% tests passed' "$ctest_log" | tail -n 1 || true)"
  if [[ -z "$closing" ]]; then
    summary+=("$preset: ctest printed no summary (exit status $status)")
    return 1
  fi
  summary+=("$preset: $closing")
  if [[ "$closing" =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
    local failed_count="${BASH_REMATCH[1]}" total="${BASH_REMATCH[2]}"
    total_failed=$((total_failed + failed_count))
    total_passed=$((total_passed + total - failed_count))
  fi
  return "$status"
}

# run_fuzz runs the fuzz smoke run and counts each target as one test.
run_fuzz() {
  # The targets that scripts/fuzz.sh runs, counted from its list.
  local targets
  targets=$(sed -n 's/^targets=(\(.*\))$/\1/p' scripts/fuzz.sh | wc -w)
  log "[fuzz] $targets targets, $fuzz_seconds s each"
  if ! bash scripts/fuzz.sh "$fuzz_seconds"; then
    summary+=("fuzz: a target failed (see build/fuzz/<target>.log)")
    total_failed=$((total_failed + 1))
    return 1
  fi
  summary+=("fuzz: $targets targets ran $fuzz_seconds s each without a finding")
  total_passed=$((total_passed + targets))
}

mkdir -p build
for preset in "${presets[@]}"; do
  if [[ "$preset" == fuzz ]]; then
    run_fuzz || failed_presets+=("$preset")
    continue
  fi
  if ! run_preset "$preset"; then
    failed_presets+=("$preset")
  fi
done

echo
echo "Test summary (ctest's closing line per preset):"
printf '  %s\n' "${summary[@]}"
if ((${#failed_presets[@]} > 0)); then
  echo "Failed presets: ${failed_presets[*]}"
fi
echo "total: $total_passed passed, $total_failed failed"
((${#failed_presets[@]} == 0))
