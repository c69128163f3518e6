#!/usr/bin/env bash
# Installs keycell from a build tree into a temporary prefix, then builds and
# runs a small C program against it twice: through pkg-config and through
# CMake's find_package.
# Usage: check_install.sh BUILD_DIR KEY_FILE
set -euo pipefail

build_dir=$1
key_file=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The OpenSSL module installs to OpenSSL's own modules directory, outside
# any prefix, so only the default component goes to the temporary prefix.
cmake --install "$build_dir" --prefix "$work/prefix" --component Unspecified \
  >/dev/null
libdir=$(find "$work/prefix" -name keycell.pc -printf '%h\n' | head -n 1)
if [ -z "$libdir" ]; then
  echo "keycell.pc was not installed" >&2
  exit 1
fi
export PKG_CONFIG_PATH="$libdir"
export LD_LIBRARY_PATH="$(dirname "$libdir")"

# shellcheck disable=SC2046  # pkg-config output is a list of flags.
cc -o "$work/with-pkg-config" "$here/consumer/consumer.c" \
  $(pkg-config --cflags --libs keycell)
"$work/with-pkg-config" "$key_file"

cmake -S "$here/consumer" -B "$work/consumer-build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer-build" >/dev/null
"$work/consumer-build/consumer" "$key_file"
