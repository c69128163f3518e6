# shellcheck shell=bash
# Functions for the server tests in servers_test.sh: a keycelld with RSA,
# ECDSA P-256 and Ed25519 keys, reference files, an openssl.cnf that loads
# keycell.so, servers started in the foreground on 127.0.0.1, and TLS
# clients that check the handshakes. Source it; do not run it.
#
# The caller sets these variables, all absolute paths:
#   KEYCELLD        the keycelld program
#   KEYCELL_CLI     the keycell program
#   KEYCELL_MODULE  keycell.so
#   KEYCELL_DATA    tests/data, with <key>-key.pem and <key>-cert.pem
#
# Every process that these functions start is recorded by pid and stopped
# by pid at exit, and the temporary directory is removed, unless
# KEYCELL_KEEP_TEST_DIR is set.

set -euo pipefail

# Key names in the keycelld configuration, and the base names of their
# files in KEYCELL_DATA.
KEY_NAMES=(rsa ec ed)
declare -A KEY_FILE=([rsa]=rsa2048 [ec]=p256 [ed]=ed25519)
# The "Signature type" that openssl s_client prints for each key.
declare -A KEY_SIGNATURE=([rsa]=RSA-PSS [ec]=ECDSA [ed]=ed25519)

# Seconds that one TLS client may take, and that a server or keycelld may
# take to start listening.
CLIENT_TIMEOUT=20
START_TIMEOUT=15

for variable in KEYCELLD KEYCELL_CLI KEYCELL_MODULE KEYCELL_DATA; do
  if [[ -z "${!variable:-}" ]]; then
    echo "error: $variable is not set" >&2
    exit 2
  fi
done

# The test directory. Servers that drop privileges read and write in it as
# www-data or nobody, so every user may traverse it.
WORK="$(mktemp -d /tmp/keycell-servers-XXXXXX)"
chmod 0755 "$WORK"
SOCKET="$WORK/keycelld.sock"
OPENSSL_CNF="$WORK/openssl.cnf"
KEYCELLD_PID=
STARTED_PIDS=()
# Set by finish_test. A script that exits without it fails, also when a
# signal ends it.
TEST_FINISHED=

log() {
  printf '==> %s\n' "$*" >&2
}

# Prints every log file in the test directory, then fails the test.
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  local file
  for file in "$WORK"/*.log; do
    [[ -e "$file" ]] || continue
    printf -- '--- %s\n' "$file" >&2
    tail -n 40 "$file" >&2
  done
  exit 1
}

# Sends SIGTERM to PID, waits up to 10 s for it to exit, then sends SIGKILL.
stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; ++i)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? pid
  if [[ -z "$TEST_FINISHED" ]] && ((status == 0)); then
    printf 'FAIL: the test ended before its last check\n' >&2
    status=1
  fi
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [[ -n "${KEYCELL_KEEP_TEST_DIR:-}" ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT

# Marks the test as passed and prints the closing line.
finish_test() {
  TEST_FINISHED=1
  echo "1 passed, 0 failed"
}

# Prints a TCP port on 127.0.0.1 on which nothing listens. Ports come from
# 20000-32767, below Linux's default ephemeral range, so that client
# connections do not take them.
free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 12768))
    if [[ -z "$(ss -Htln "sport = :$port")" ]]; then
      echo "$port"
      return
    fi
  done
}

# Writes the keycelld configuration with the keys rsa, ec and ed, each
# allowed to the users given as arguments.
write_keycelld_config() {
  local users="$*" name
  {
    printf 'socket %s\nsocket_mode 0666\nworkers 2\n' "$SOCKET"
    for name in "${KEY_NAMES[@]}"; do
      printf 'key %s {\n  file %s/%s-key.pem\n  allow_users %s\n}\n' \
        "$name" "$KEYCELL_DATA" "${KEY_FILE[$name]}" "$users"
    done
  } >"$WORK/keycelld.conf"
}

# Starts keycelld in the foreground and waits until it replies to ping.
start_keycelld() {
  setsid "$KEYCELLD" --config "$WORK/keycelld.conf" --foreground \
    2>>"$WORK/keycelld.log" &
  KEYCELLD_PID=$!
  STARTED_PIDS+=("$KEYCELLD_PID")
  local i
  for ((i = 0; i < START_TIMEOUT * 10; ++i)); do
    if "$KEYCELL_CLI" ping --socket "$SOCKET" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$KEYCELLD_PID" 2>/dev/null || fail "keycelld exited at start"
    sleep 0.1
  done
  fail "keycelld did not reply to ping within $START_TIMEOUT s"
}

# Stops keycelld with SIGTERM and checks that it removed its socket.
stop_keycelld() {
  stop_pid "$KEYCELLD_PID"
  KEYCELLD_PID=
  [[ ! -e "$SOCKET" ]] || fail "keycelld left $SOCKET behind"
}

# Writes $WORK/<name>.ref, the reference file of each key, with keycell wrap.
wrap_keys() {
  local name
  for name in "${KEY_NAMES[@]}"; do
    "$KEYCELL_CLI" wrap --socket "$SOCKET" --key "$name" \
      --out "$WORK/$name.ref" >>"$WORK/wrap.log" 2>&1 \
      || fail "keycell wrap of key '$name' failed"
  done
}

# Writes the openssl.cnf that the servers get as OPENSSL_CONF: the default
# provider for everything else, and keycell.so for the reference files.
write_openssl_cnf() {
  cat >"$OPENSSL_CNF" <<EOF
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
keycell = keycell_sect

[default_sect]
activate = 1

[keycell_sect]
module = $KEYCELL_MODULE
activate = 1
EOF
}

# Sets up keycelld with the three keys allowed to the given users, their
# reference files and openssl.cnf.
setup_keys() {
  write_keycelld_config "$@"
  start_keycelld
  wrap_keys
  write_openssl_cnf
}

# Prints the signature count of key NAME from keycell status.
signature_count() {
  "$KEYCELL_CLI" status --socket "$SOCKET" \
    | awk -v name="$1" '$1 == name { print $3 }'
}

# start_server NAME PORT COMMAND... starts COMMAND with OPENSSL_CONF set,
# output in $WORK/NAME.log, and waits until a process listens on
# 127.0.0.1:PORT. Sets SERVER_PID. Returns 1 when the server exited because
# the port was taken, so that the caller can try another port, and fails
# the test on any other error. The server gets a session of its own,
# because apache2 sends SIGTERM to its whole process group when it stops.
start_server() {
  local name="$1" port="$2"
  shift 2
  OPENSSL_CONF="$OPENSSL_CNF" setsid "$@" >>"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  local i
  for ((i = 0; i < START_TIMEOUT * 10; ++i)); do
    if [[ -n "$(ss -Htln "src 127.0.0.1:$port")" ]]; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null || true
      if grep -q -i 'address already in use' "$WORK/$name.log"; then
        log "port $port is taken, trying another"
        return 1
      fi
      fail "$name exited at start"
    fi
    sleep 0.1
  done
  fail "$name did not listen on 127.0.0.1:$port within $START_TIMEOUT s"
}

# Stops the server that start_server started last.
stop_server() {
  stop_pid "$SERVER_PID"
}

# check_curl PORT KEY VERSION BODY runs curl against https://localhost:PORT/
# with TLS VERSION (1.2 or 1.3) and the certificate of KEY as the only
# trusted CA, and checks that the certificate verifies, the version is
# VERSION and the response contains BODY.
check_curl() {
  local port="$1" key="$2" version="$3" body="$4"
  local out="$WORK/curl.out" err="$WORK/curl.err"
  if ! env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" \
    curl -sS -v --fail --cacert "$KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem" \
    --resolve "localhost:$port:127.0.0.1" \
    "--tlsv$version" --tls-max "$version" \
    "https://localhost:$port/" >"$out" 2>"$err"; then
    cat "$err" >&2
    fail "curl over TLS $version with key '$key' failed"
  fi
  grep -q "SSL connection using TLSv$version" "$err" \
    || fail "curl did not negotiate TLS $version with key '$key'"
  grep -q 'SSL certificate verify ok' "$err" \
    || fail "curl did not verify the certificate of key '$key'"
  grep -q -F "$body" "$out" \
    || fail "the response with key '$key' lacks '$body': $(head -c 200 "$out")"
}

# check_s_client PORT KEY VERSION runs openssl s_client with TLS VERSION
# and checks that the chain and host name verify and that the server signed
# with KEY's algorithm.
check_s_client() {
  local port="$1" key="$2" version="$3"
  local out="$WORK/s_client.out"
  if ! env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" \
    openssl s_client -brief -connect "127.0.0.1:$port" \
    -servername localhost -verify_hostname localhost -verify_return_error \
    -CAfile "$KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem" \
    "-tls${version/./_}" </dev/null >"$out" 2>&1; then
    cat "$out" >&2
    fail "openssl s_client over TLS $version with key '$key' failed"
  fi
  grep -q "^Protocol version: TLSv$version\$" "$out" \
    || fail "s_client did not negotiate TLS $version with key '$key'"
  grep -q '^Verification: OK$' "$out" \
    || fail "s_client did not verify the certificate of key '$key'"
  grep -q "^Signature type: ${KEY_SIGNATURE[$key]}\$" "$out" \
    || fail "the server did not sign with ${KEY_SIGNATURE[$key]} for '$key'"
}

# check_handshakes PORT KEY BODY runs curl and s_client over TLS 1.2 and
# TLS 1.3, and checks that keycelld made a signature for each handshake.
check_handshakes() {
  local port="$1" key="$2" body="$3" before after version
  before="$(signature_count "$key")"
  for version in 1.2 1.3; do
    check_curl "$port" "$key" "$version" "$body"
    check_s_client "$port" "$key" "$version"
  done
  after="$(signature_count "$key")"
  ((after >= before + 4)) \
    || fail "keycelld made $((after - before)) signatures with key" \
      "'$key' for 4 handshakes"
  log "key '$key': 4 handshakes verified, $((after - before)) signatures"
}

# Prints one line per connection to keycelld's socket: the pids of the
# processes that hold the client end, separated by commas. keycelld's
# accepted sockets carry the socket path, and ss links each one to its
# peer by inode.
keycelld_connections() {
  ss -Hxp | awk -v path="$SOCKET" '
    $5 == path && $8 != "0" { peer[$8] = 1 }
    $5 == "*" { owner[$6] = $0 }
    END {
      for (inode in peer) {
        line = owner[inode]
        pids = ""
        while (match(line, /pid=[0-9]+/)) {
          pid = substr(line, RSTART + 4, RLENGTH - 4)
          if (index("," pids ",", "," pid ",") == 0) {
            pids = pids == "" ? pid : pids "," pid
          }
          line = substr(line, RSTART + RLENGTH)
        }
        if (pids != "") print pids
      }
    }'
}

# Prints the pids of the child processes of PID.
child_pids() {
  ps -o pid= --ppid "$1" | tr -d ' '
}
