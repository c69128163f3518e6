#!/usr/bin/env bash
# Builds keycell and its example HTTPS server, then runs TLS 1.2 and TLS 1.3
# handshakes with RSA, ECDSA and Ed25519 keys held by the cell.
#
# Steps:
#   1. Installs missing Debian packages (apt-get; sudo when not root).
#   2. Configures and builds with the "default" CMake preset. With
#      KEYCELL_BUILD_DIR set, it builds there instead of build/default.
#   3. Creates keys and self-signed certificates (CN=localhost, SAN
#      DNS:localhost and IP:127.0.0.1) in a temporary directory.
#   4. Starts example servers on free ports of 127.0.0.1: one with all three
#      keys in one SSL_CTX, and one per key type.
#   5. Connects with openssl s_client and curl, and prints one line per
#      handshake and a summary.
#   6. Scans the memory of a server process and of its cell for the RSA key.
#
# Exits non-zero if any handshake or check fails. Every server it started is
# stopped on exit.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KEYCELL_ROOT"

install_missing_packages

build_dir="${KEYCELL_BUILD_DIR:-}"
if [[ -z "$build_dir" ]]; then
  log "building with the default preset"
  cmake --preset default
  cmake --build --preset default
  build_dir="$KEYCELL_ROOT/build/default"
else
  log "building with the default preset in $build_dir"
  cmake --preset default -B "$build_dir"
  cmake --build "$build_dir"
fi
server_binary="$build_dir/examples/keycell-example-https-server"
[[ -x "$server_binary" ]] || die "$server_binary was not built"

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/keycell-demo.XXXXXX")"
server_pids=()

keep_work_dir=0

# Stops the servers that are still running and removes the work directory,
# unless a check failed: then its logs and client outputs stay for reading.
stop_servers() {
  local pid
  for pid in "${server_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${server_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if ((keep_work_dir)); then
    log "server logs and client outputs kept in $work_dir"
  else
    rm -rf "$work_dir"
  fi
}
trap stop_servers EXIT

# Keys and certificates.

log "creating keys and certificates in $work_dir"
# make_certificate NAME NEWKEY [OPENSSL-REQ-OPTIONS...] writes NAME.key and
# NAME.crt, a self-signed certificate for localhost and 127.0.0.1.
make_certificate() {
  local name="$1"
  shift
  openssl req -x509 -new -noenc -days 2 -newkey "$@" \
    -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work_dir/$name.key" -out "$work_dir/$name.crt" 2>/dev/null \
    || die "openssl req failed for the $name key"
}
make_certificate rsa rsa:2048
make_certificate ecdsa ec -pkeyopt ec_paramgen_curve:P-256
make_certificate ed25519 ed25519

# The ECDSA-only server loads an encrypted copy of its key. The cell reads
# the passphrase from the first line of passphrase.txt.
printf 'demo passphrase\n' >"$work_dir/passphrase.txt"
openssl pkey -in "$work_dir/ecdsa.key" -aes-256-cbc \
  -passout "file:$work_dir/passphrase.txt" \
  -out "$work_dir/ecdsa-encrypted.key"
chmod 600 "$work_dir"/*.key "$work_dir/passphrase.txt"

# Servers.

declare -A server_port server_cell_pid server_main_pid

# start_server NAME CONNECTIONS [SERVER-OPTIONS...] starts a server that
# exits after CONNECTIONS connections. Port 0 makes the server bind a free
# port and log it, so two runs never race for a port.
start_server() {
  local name="$1" connections="$2"
  shift 2
  local log_file="$work_dir/server-$name.log"
  # The file exists before the server starts, so the polling below can read
  # it at once.
  : >"$log_file"
  "$server_binary" -p 0 -n "$connections" "$@" 2>"$log_file" &
  local pid=$!
  server_pids+=("$pid")
  server_main_pid[$name]="$pid"

  local port=""
  for _ in $(seq 100); do
    port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
      "$log_file")"
    [[ -n "$port" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      sed 's/^/    /' "$log_file" >&2
      die "server '$name' exited during startup"
    fi
    sleep 0.1
  done
  if [[ -z "$port" ]]; then
    sed 's/^/    /' "$log_file" >&2
    die "server '$name' did not start listening within 10 s"
  fi
  server_port[$name]="$port"
  server_cell_pid[$name]="$(sed -n 's/.*started cell pid \([0-9]*\).*/\1/p' \
    "$log_file")"
  log "server '$name': pid $pid, cell pid ${server_cell_pid[$name]}," \
    "https://127.0.0.1:$port/"
  # Every cell of the demo runs with the same limits, so the first one's
  # report stands for all.
  if [[ -z "$key_memory_reported" ]]; then
    key_memory_reported=yes
    log "$(sed -n 's/.*\(cell key memory: .*\)/\1/p' "$log_file")"
  fi
}

key_memory_reported=""

user_options=()
if ((EUID == 0)) && id nobody >/dev/null 2>&1; then
  # As root, the combined server also shows the privilege drop.
  user_options=(-u nobody)
fi

# "all" has the three keys in one SSL_CTX. It gets 6 handshakes with a
# forced signature algorithm and 1 RSA key exchange that must fail.
start_server all 7 --threads 4 "${user_options[@]}" \
  -c "$work_dir/rsa.crt" -k "$work_dir/rsa.key" \
  -c "$work_dir/ecdsa.crt" -k "$work_dir/ecdsa.key" \
  -c "$work_dir/ed25519.crt" -k "$work_dir/ed25519.key"
start_server rsa 3 --allow-rsa-decryption \
  -c "$work_dir/rsa.crt" -k "$work_dir/rsa.key"
start_server ecdsa 2 --passphrase-file "$work_dir/passphrase.txt" \
  -c "$work_dir/ecdsa.crt" -k "$work_dir/ecdsa-encrypted.key"
start_server ed25519 2 -c "$work_dir/ed25519.crt" -k "$work_dir/ed25519.key"

if ((${#user_options[@]} > 0)); then
  for pid in "${server_main_pid[all]}" "${server_cell_pid[all]}"; do
    log "process $pid runs as uid" \
      "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
  done
fi

# Memory scan for the RSA key.

passed=0
failed=0
report() {
  local verdict="$1"
  shift
  printf '%-4s  %s\n' "$verdict" "$*"
  if [[ "$verdict" == PASS ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    keep_work_dir=1
  fi
}

# show_client_output FILE prints the lines of a client's output that explain
# a failure: errors, the verification result and the response body.
show_client_output() {
  grep -E -i 'error|alert|verif|^protocol:|^cipher:|^key:|^private key' \
    "$1" | head -n 12 | sed 's/^/      /'
  printf '      (full output: %s)\n' "$1"
}

# scan_memory PID HEX prints "found", "absent BYTES" or "unreadable REASON"
# for the number HEX (big-endian, as openssl prints it) in the readable
# memory of PID. OpenSSL stores a BIGNUM as little-endian words, so on a
# little-endian machine the number's bytes appear in reverse order.
scan_memory() {
  python3 - "$1" "$2" <<'PYTHON'
import sys

pid, hex_number = sys.argv[1], sys.argv[2]
number = bytes.fromhex(hex_number).lstrip(b"\0")
patterns = [number[:32], number[::-1][:32]]
scanned = 0
try:
    maps = open(f"/proc/{pid}/maps").read().splitlines()
    mem = open(f"/proc/{pid}/mem", "rb", 0)
except OSError as error:
    print("unreadable", error.strerror)
    sys.exit(0)
for line in maps:
    fields = line.split()
    if not fields[1].startswith("r") or (len(fields) > 5 and
                                          fields[5] in ("[vvar]", "[vsyscall]")):
        continue
    start, end = (int(x, 16) for x in fields[0].split("-"))
    try:
        mem.seek(start)
        data = mem.read(end - start)
    except (OSError, OverflowError, ValueError):
        continue
    scanned += len(data)
    if any(pattern in data for pattern in patterns):
        print("found")
        sys.exit(0)
print("absent", scanned)
PYTHON
}

rsa_prime="$(openssl pkey -in "$work_dir/rsa.key" -noout -text \
  | awk '/^prime1:/ {on = 1; next} /^[a-z]/ {on = 0} on' \
  | tr -d ' :\n')"
if ! command -v python3 >/dev/null; then
  log "python3 not found: skipping the memory scan"
elif [[ -z "$rsa_prime" ]]; then
  log "could not read prime1 of rsa.key: skipping the memory scan"
else
  log "scanning memory for prime p of rsa.key"
  read -r result detail <<<"$(scan_memory "${server_main_pid[rsa]}" \
    "$rsa_prime")" || true
  case "$result" in
    absent)
      report PASS "memory scan: server pid ${server_main_pid[rsa]}:" \
        "prime p not found in $((detail / 1048576)) MiB"
      ;;
    found)
      report FAIL "memory scan: server pid ${server_main_pid[rsa]}:" \
        "prime p found in the server's memory"
      ;;
    *)
      log "cannot read the memory of pid ${server_main_pid[rsa]}" \
        "($detail): skipping the memory scan"
      ;;
  esac
  read -r result detail <<<"$(scan_memory "${server_cell_pid[rsa]}" \
    "$rsa_prime")" || true
  log "for comparison, cell pid ${server_cell_pid[rsa]}: prime p $result"
fi

# Handshakes.

request_file="$work_dir/request.txt"
printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >"$request_file"
handshake_count=0
client_output=""

# Points $client_output to a new file for the next client's output.
next_client_output() {
  handshake_count=$((handshake_count + 1))
  client_output="$work_dir/client-$handshake_count.txt"
}

# check_response NAME LABEL VERSION KEY checks the response body in
# $client_output against the expected protocol and key type, and reports.
check_response() {
  local name="$1" label="$2" version="$3" key="$4"
  local cell_pid="${server_cell_pid[$name]}"
  local problem=""
  if ! grep -qx "protocol: $version" "$client_output"; then
    problem="expected protocol $version"
  elif ! grep -qx "key: $key" "$client_output"; then
    problem="expected key $key"
  elif ! grep -qx "private key held by: cell (pid $cell_pid)" \
    "$client_output"; then
    problem="expected the key to be held by cell pid $cell_pid"
  fi
  if [[ -z "$problem" ]]; then
    report PASS "$label  $version  $key  verified, key held by cell" \
      "pid $cell_pid"
  else
    report FAIL "$label  $version  $key  $problem"
    show_client_output "$client_output"
  fi
}

# s_client_handshake NAME VERSION KEY CA-FILE [S_CLIENT-OPTIONS...] connects
# to server NAME. The CA file contains only the certificate of KEY, so
# verification fails unless the server authenticated with that key.
s_client_handshake() {
  local name="$1" version="$2" key="$3" ca_file="$4"
  shift 4
  next_client_output
  local version_option=-tls1_2
  if [[ "$version" == TLSv1.3 ]]; then
    version_option=-tls1_3
  fi
  local label="openssl s_client $*"
  if timeout 20 openssl s_client -connect "127.0.0.1:${server_port[$name]}" \
    -servername localhost -verify_hostname localhost -CAfile "$ca_file" \
    -verify_return_error -ign_eof "$version_option" "$@" \
    <"$request_file" >"$client_output" 2>&1; then
    check_response "$name" "$label" "$version" "$key"
  else
    report FAIL "$label  $version  $key  handshake failed"
    show_client_output "$client_output"
  fi
}

# curl_handshake NAME VERSION KEY CA-FILE connects to server NAME, which
# has only the KEY key, with curl limited to VERSION.
curl_handshake() {
  local name="$1" version="$2" key="$3" ca_file="$4"
  local port="${server_port[$name]}"
  next_client_output
  local -a version_options=(--tlsv1.2 --tls-max 1.2)
  if [[ "$version" == TLSv1.3 ]]; then
    version_options=(--tlsv1.3 --tls-max 1.3)
  fi
  if timeout 20 curl --silent --show-error --cacert "$ca_file" \
    "${version_options[@]}" --resolve "localhost:$port:127.0.0.1" \
    "https://localhost:$port/" >"$client_output" 2>&1; then
    check_response "$name" "curl ${version_options[*]}" "$version" "$key"
  else
    report FAIL "curl ${version_options[*]}  $version  $key  request failed"
    show_client_output "$client_output"
  fi
}

log "handshakes: one server with all keys, signature algorithm forced"
s_client_handshake all TLSv1.2 RSA-2048 "$work_dir/rsa.crt" \
  -sigalgs RSA+SHA256:rsa_pss_rsae_sha256
s_client_handshake all TLSv1.3 RSA-2048 "$work_dir/rsa.crt" \
  -sigalgs rsa_pss_rsae_sha256
s_client_handshake all TLSv1.2 "ECDSA P-256" "$work_dir/ecdsa.crt" \
  -sigalgs ecdsa_secp256r1_sha256
s_client_handshake all TLSv1.3 "ECDSA P-256" "$work_dir/ecdsa.crt" \
  -sigalgs ecdsa_secp256r1_sha256
s_client_handshake all TLSv1.2 Ed25519 "$work_dir/ed25519.crt" -sigalgs ed25519
s_client_handshake all TLSv1.3 Ed25519 "$work_dir/ed25519.crt" -sigalgs ed25519

# The combined server was started without --allow-rsa-decryption, so the
# cell must not decrypt for it and RSA key exchange has to fail.
label="openssl s_client -cipher AES128-GCM-SHA256 (RSA key exchange,"
label+=" decryption not allowed)"
next_client_output
if timeout 20 openssl s_client -connect "127.0.0.1:${server_port[all]}" \
  -CAfile "$work_dir/rsa.crt" -verify_return_error -ign_eof -tls1_2 \
  -cipher AES128-GCM-SHA256 <"$request_file" >"$client_output" 2>&1 \
  && grep -q '^key: ' "$client_output"; then
  report FAIL "$label  TLSv1.2  RSA-2048  handshake succeeded"
  show_client_output "$client_output"
else
  report PASS "$label  TLSv1.2  RSA-2048  rejected as expected"
fi

log "handshakes: one server per key type"
curl_handshake rsa TLSv1.2 RSA-2048 "$work_dir/rsa.crt"
curl_handshake rsa TLSv1.3 RSA-2048 "$work_dir/rsa.crt"
s_client_handshake rsa TLSv1.2 RSA-2048 "$work_dir/rsa.crt" \
  -cipher AES128-GCM-SHA256
curl_handshake ecdsa TLSv1.2 "ECDSA P-256" "$work_dir/ecdsa.crt"
curl_handshake ecdsa TLSv1.3 "ECDSA P-256" "$work_dir/ecdsa.crt"
curl_handshake ed25519 TLSv1.2 Ed25519 "$work_dir/ed25519.crt"
curl_handshake ed25519 TLSv1.3 Ed25519 "$work_dir/ed25519.crt"

# Each server exits by itself after its -n connections.
log "waiting for the servers to exit after their last connection"
for name in all rsa ecdsa ed25519; do
  pid="${server_main_pid[$name]}"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  status=0
  if kill -0 "$pid" 2>/dev/null; then
    report FAIL "server '$name' still running 10 s after its last connection"
    continue
  fi
  wait "$pid" || status=$?
  if ((status == 0)); then
    report PASS "server '$name' exited with status 0"
  else
    report FAIL "server '$name' exited with status $status; its log:"
    sed 's/^/      /' "$work_dir/server-$name.log"
  fi
done

log "log of the combined server:"
sed 's/^/    /' "$work_dir/server-all.log" >&2

echo
echo "demo: $passed passed, $failed failed"
((failed == 0))
