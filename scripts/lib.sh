# shellcheck shell=bash
# Shell functions shared by demo.sh and test.sh. Source it; do not run it.

# Debian packages that building, testing and running the demo need.
KEYCELL_PACKAGES=(
  build-essential
  cmake
  ninja-build
  pkg-config
  libssl-dev
  openssl
  curl
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  libseccomp-dev
)

# Debian packages that the libFuzzer build (scripts/fuzz.sh) needs as well.
# shellcheck disable=SC2034
KEYCELL_FUZZ_PACKAGES=(
  clang-14
  libclang-rt-14-dev
  llvm-14
)

# Root directory of the repository (the parent of scripts/), for the scripts
# that source this file.
# shellcheck disable=SC2034
KEYCELL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() {
  printf '==> %s\n' "$*" >&2
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Prints the packages among the arguments that dpkg does not list as
# installed, one per line.
missing_packages() {
  local package status
  for package in "$@"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null \
      || true)"
    if [[ "$status" != installed ]]; then
      printf '%s\n' "$package"
    fi
  done
}

# Installs the packages given as arguments, or those in KEYCELL_PACKAGES
# without arguments, that are missing, with apt-get update followed by
# apt-get install -y. Uses sudo when not run as root.
install_missing_packages() {
  local -a wanted=("$@")
  if ((${#wanted[@]} == 0)); then
    wanted=("${KEYCELL_PACKAGES[@]}")
  fi
  if ! command -v dpkg-query >/dev/null; then
    log "dpkg-query not found: not a Debian system, so packages are not" \
      "installed. keycell needs: ${wanted[*]}"
    return 0
  fi

  local -a missing
  mapfile -t missing < <(missing_packages "${wanted[@]}")
  if ((${#missing[@]} == 0)); then
    log "all required Debian packages are installed"
    return 0
  fi

  local -a sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null \
      || die "missing packages ${missing[*]}: run as root or install sudo"
    sudo=(sudo)
  fi

  log "installing missing packages: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}
