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
  gdb
)

# Debian packages that the libFuzzer build (scripts/fuzz.sh) needs as well.
# shellcheck disable=SC2034
KEYCELL_FUZZ_PACKAGES=(
  clang-14
  libclang-rt-14-dev
  llvm-14
)

# Debian packages of the TLS servers and clients that the tests in
# tests/servers_* run with keycelld keys, and iproute2 for the ss command
# those tests use to find free ports. scripts/test.sh installs them with
# install_packages_without_services, because their maintainer scripts start
# system services otherwise.
# shellcheck disable=SC2034
KEYCELL_SERVER_PACKAGES=(
  nginx
  haproxy
  apache2
  lighttpd
  lighttpd-mod-openssl
  stunnel4
  curl
  iproute2
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
    log "already installed: ${wanted[*]}"
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

# Installs the missing packages among the arguments like
# install_missing_packages, but with a /usr/sbin/policy-rc.d that exits 101
# for the duration of the install, so that the packages' maintainer scripts
# start no system service. A policy-rc.d that exists already is left as it
# is; one that this function writes is removed when the install ends, also
# when it fails.
install_packages_without_services() {
  local policy=/usr/sbin/policy-rc.d
  if [[ -z "$(missing_packages "$@")" ]] || [[ -e "$policy" ]]; then
    install_missing_packages "$@"
    return
  fi

  local -a sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null \
      || die "missing packages $*: run as root or install sudo"
    sudo=(sudo)
  fi
  log "writing $policy so that the install starts no service"
  printf '#!/bin/sh\n# Written by keycell scripts/lib.sh during an install.\nexit 101\n' \
    | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 0755 "$policy"
  (
    # shellcheck disable=SC2064
    trap "${sudo[*]} rm -f '$policy'" EXIT
    install_missing_packages "$@"
  )
}
