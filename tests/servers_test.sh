#!/usr/bin/env bash
# Runs unmodified TLS servers and clients with keys that keycelld holds,
# loaded from reference files through keycell.so.
#
# Usage: servers_test.sh CASE
#   CASE is one of s_server, nginx, haproxy, apache2, lighttpd, stunnel,
#   curl_client_key, access_denied_s_server, access_denied_nginx_workers,
#   daemon_restart.
#
# Environment: KEYCELLD, KEYCELL_CLI, KEYCELL_MODULE and KEYCELL_DATA as in
# servers_lib.sh, and the server programs as NGINX_PROGRAM,
# HAPROXY_PROGRAM, APACHE2_PROGRAM, APACHE2_MODULES (the directory of
# mod_ssl.so), LIGHTTPD_PROGRAM, LIGHTTPD_MODULES (the directory of
# mod_openssl.so) and STUNNEL_PROGRAM. Each server listens on
# 127.0.0.1 only, in the foreground, with its configuration in a temporary
# directory, and is stopped by pid.

# shellcheck source=servers_lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/servers_lib.sh"

# Each config function writes the server's configuration for key KEY and
# port PORT; each run function starts the server with it.

nginx_config() {
  local key="$1" port="$2" user="${3:-www-data}"
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
user $user;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$port ssl;
        server_name localhost;
        ssl_certificate $KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem;
        ssl_certificate_key $WORK/$key.ref;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            return 200 "keycell nginx\n";
        }
    }
}
EOF
}

run_nginx() {
  start_server nginx "$1" "$NGINX_PROGRAM" -p "$WORK/nginx" -c "$WORK/nginx.conf" \
    -e "$WORK/nginx-error.log"
}

haproxy_config() {
  local key="$1" port="$2"
  # haproxy reads the certificate and the private key from one PEM file.
  cat "$KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem" "$WORK/$key.ref" \
    >"$WORK/haproxy.pem"
  cat >"$WORK/haproxy.cfg" <<EOF
global
    log stderr format short local0 info
    nbthread 2

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend https
    bind 127.0.0.1:$port ssl crt $WORK/haproxy.pem
    http-request return status 200 content-type text/plain string "keycell haproxy"
EOF
}

run_haproxy() {
  start_server haproxy "$1" "$HAPROXY_PROGRAM" -db -f "$WORK/haproxy.cfg"
}

apache2_config() {
  local key="$1" port="$2"
  mkdir -p "$WORK/apache2/htdocs"
  echo "keycell apache2" >"$WORK/apache2/htdocs/index.html"
  cat >"$WORK/apache2.conf" <<EOF
ServerRoot $WORK/apache2
DefaultRuntimeDir $WORK/apache2
PidFile $WORK/apache2/apache2.pid
ErrorLog $WORK/apache2-error.log
LogLevel info ssl:info
LoadModule mpm_prefork_module $APACHE2_MODULES/mod_mpm_prefork.so
LoadModule authz_core_module $APACHE2_MODULES/mod_authz_core.so
LoadModule dir_module $APACHE2_MODULES/mod_dir.so
LoadModule ssl_module $APACHE2_MODULES/mod_ssl.so
StartServers 2
User www-data
Group www-data
ServerName localhost
Listen 127.0.0.1:$port
DocumentRoot $WORK/apache2/htdocs
DirectoryIndex index.html
SSLEngine on
SSLProtocol -all +TLSv1.2 +TLSv1.3
SSLCertificateFile $KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem
SSLCertificateKeyFile $WORK/$key.ref
EOF
}

run_apache2() {
  start_server apache2 "$1" "$APACHE2_PROGRAM" -f "$WORK/apache2.conf" -DFOREGROUND
}

lighttpd_config() {
  local key="$1" port="$2"
  mkdir -p "$WORK/lighttpd"
  # lighttpd opens its error log after switching to server.username.
  touch "$WORK/lighttpd-error.log"
  chown www-data:www-data "$WORK/lighttpd-error.log"
  echo "keycell lighttpd" >"$WORK/lighttpd/index.html"
  cat >"$WORK/lighttpd.conf" <<EOF
server.modules = ("mod_openssl")
server.modules-dir = "$LIGHTTPD_MODULES"
server.document-root = "$WORK/lighttpd"
server.errorlog = "$WORK/lighttpd-error.log"
server.bind = "127.0.0.1"
server.port = $port
server.username = "www-data"
server.groupname = "www-data"
index-file.names = ("index.html")
ssl.engine = "enable"
ssl.pemfile = "$KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem"
ssl.privkey = "$WORK/$key.ref"
ssl.openssl.ssl-conf-cmd = ("MinProtocol" => "TLSv1.2")
EOF
}

run_lighttpd() {
  start_server lighttpd "$1" "$LIGHTTPD_PROGRAM" -D -f "$WORK/lighttpd.conf"
}

stunnel_config() {
  local key="$1" port="$2"
  # stunnel passes the decrypted stream to this script, which answers
  # every request with one fixed HTTP response.
  cat >"$WORK/respond.sh" <<'EOF'
#!/bin/bash
while IFS= read -r line && [[ "$line" != $'\r' && -n "$line" ]]; do :; done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\nkeycell stunnel\n'
EOF
  chmod 0755 "$WORK/respond.sh"
  cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
debug = info

[https]
accept = 127.0.0.1:$port
cert = $KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem
key = $WORK/$key.ref
sslVersionMin = TLSv1.2
exec = $WORK/respond.sh
EOF
}

run_stunnel() {
  start_server stunnel "$1" "$STUNNEL_PROGRAM" "$WORK/stunnel.conf"
}

s_server_config() {
  :
}

run_s_server() {
  start_server s_server "$PORT" openssl s_server -www \
    -accept "127.0.0.1:$PORT" -naccept 1000 \
    -cert "$KEYCELL_DATA/${KEY_FILE[$KEY]}-cert.pem" -key "$WORK/$KEY.ref"
}

# start_on_free_port SERVER KEY [ARG...] writes SERVER's configuration for
# KEY on a free port and starts it, with another port when the first is
# taken. Sets PORT.
start_on_free_port() {
  local server="$1" key="$2" attempt
  shift 2
  for ((attempt = 0; attempt < 5; ++attempt)); do
    PORT="$(free_port)"
    KEY="$key"
    "${server}_config" "$key" "$PORT" "$@"
    if "run_$server" "$PORT"; then
      return 0
    fi
  done
  fail "no free port for $server after 5 attempts"
}

# Serves each key in turn and checks the handshakes.
test_server() {
  local server="$1" body="$2" key
  setup_keys root www-data
  for key in "${KEY_NAMES[@]}"; do
    start_on_free_port "$server" "$key"
    check_handshakes "$PORT" "$key" "$body"
    stop_server
  done
}

# Serves each key with nginx and 2 worker processes, and checks that each
# worker opened a keycelld connection of its own.
test_nginx() {
  setup_keys root www-data
  local key attempt connections pid
  for key in "${KEY_NAMES[@]}"; do
    start_on_free_port nginx "$key"
    check_handshakes "$PORT" "$key" "keycell nginx"
    local -a workers
    mapfile -t workers < <(child_pids "$SERVER_PID")
    ((${#workers[@]} == 2)) \
      || fail "nginx runs ${#workers[@]} worker processes, expected 2"
    # The kernel hands each connection to one worker, so a worker may need
    # several connections before it signs for the first time.
    for ((attempt = 0; attempt < 40; ++attempt)); do
      connections="$(keycelld_connections)"
      if grep -q -x "${workers[0]}" <<<"$connections" \
        && grep -q -x "${workers[1]}" <<<"$connections"; then
        break
      fi
      check_curl "$PORT" "$key" 1.3 "keycell nginx"
    done
    for pid in "${workers[@]}"; do
      grep -q -x "$pid" <<<"$connections" \
        || fail "nginx worker $pid holds no keycelld connection of its" \
          "own; connections by pid: $(tr '\n' ' ' <<<"$connections")"
    done
    if grep -q ',' <<<"$connections"; then
      fail "processes share a keycelld connection: $connections"
    fi
    stop_server
  done
}

# curl authenticates with a client certificate whose key keycelld holds,
# against openssl s_server that requires and verifies it. The server key
# is a plain key file.
test_curl_client_key() {
  setup_keys root
  local key version before after attempt
  local server_cert="$KEYCELL_DATA/p384-cert.pem"
  for key in "${KEY_NAMES[@]}"; do
    for ((attempt = 0; attempt < 5; ++attempt)); do
      PORT="$(free_port)"
      if start_server s_server "$PORT" openssl s_server -www \
        -accept "127.0.0.1:$PORT" -naccept 1000 \
        -cert "$server_cert" -key "$KEYCELL_DATA/p384-key.pem" \
        -Verify 1 -verify_return_error \
        -CAfile "$KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem"; then
        break
      fi
    done
    before="$(signature_count "$key")"
    for version in 1.2 1.3; do
      if ! OPENSSL_CONF="$OPENSSL_CNF" timeout "$CLIENT_TIMEOUT" \
        curl -sS --fail --cacert "$server_cert" \
        --cert "$KEYCELL_DATA/${KEY_FILE[$key]}-cert.pem" \
        --key "$WORK/$key.ref" \
        --resolve "localhost:$PORT:127.0.0.1" \
        "--tlsv$version" --tls-max "$version" \
        "https://localhost:$PORT/" >"$WORK/curl.out" 2>"$WORK/curl.err"; then
        cat "$WORK/curl.err" >&2
        fail "curl with client key '$key' over TLS $version failed"
      fi
      grep -q 's_server -www' "$WORK/curl.out" \
        || fail "s_server sent no page to curl with client key '$key'"
      # Without the client certificate, the server ends the handshake.
      if env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" \
        curl -sS --fail --cacert "$server_cert" \
        --resolve "localhost:$PORT:127.0.0.1" \
        "--tlsv$version" --tls-max "$version" \
        "https://localhost:$PORT/" >/dev/null 2>&1; then
        fail "s_server accepted curl without a client certificate"
      fi
    done
    after="$(signature_count "$key")"
    ((after >= before + 2)) \
      || fail "keycelld made $((after - before)) signatures with client" \
        "key '$key' for 2 handshakes"
    log "client key '$key': TLS 1.2 and 1.3 handshakes verified"
    stop_server
  done
}

# Checks that keycelld logged a denied open of KEY to uid UID.
check_denied_in_keycelld_log() {
  local key="$1" uid="$2"
  grep -q "denied open of key '$key' to pid [0-9]* uid $uid " \
    "$WORK/keycelld.log" \
    || fail "keycelld did not log a denied open of key '$key' to uid $uid"
}

# openssl s_server running as nobody, with a key that only root may open,
# cannot use the key and says why.
test_access_denied_s_server() {
  setup_keys root
  PORT="$(free_port)"
  OPENSSL_CONF="$OPENSSL_CNF" setsid \
    setpriv --reuid=nobody --regid=nogroup --clear-groups \
    openssl s_server -www -accept "127.0.0.1:$PORT" -naccept 1000 \
    -cert "$KEYCELL_DATA/rsa2048-cert.pem" -key "$WORK/rsa.ref" \
    >>"$WORK/s_server.log" 2>&1 &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  # s_server either exits at start or fails the handshakes.
  local i
  for ((i = 0; i < START_TIMEOUT * 10; ++i)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    [[ -z "$(ss -Htln "src 127.0.0.1:$PORT")" ]] || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    if env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" curl -sS --fail \
      --cacert "$KEYCELL_DATA/rsa2048-cert.pem" \
      --resolve "localhost:$PORT:127.0.0.1" \
      "https://localhost:$PORT/" >/dev/null 2>&1; then
      fail "s_server as nobody completed a handshake with a root-only key"
    fi
  fi
  stop_server
  grep -q "did not open key 'rsa': access denied" "$WORK/s_server.log" \
    || fail "s_server printed no access-denied message for key 'rsa'"
  check_denied_in_keycelld_log rsa "$(id -u nobody)"
}

# nginx whose master runs as root and whose workers run as nobody, with a
# key that only root may open: the workers cannot sign, the handshakes
# fail, the error log says why, and nginx keeps running.
test_access_denied_nginx_workers() {
  setup_keys root
  start_on_free_port nginx rsa "nobody nogroup"
  local attempt
  for ((attempt = 0; attempt < 4; ++attempt)); do
    if env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" curl -sS --fail \
      --cacert "$KEYCELL_DATA/rsa2048-cert.pem" \
      --resolve "localhost:$PORT:127.0.0.1" \
      "https://localhost:$PORT/" >/dev/null 2>&1; then
      fail "an nginx worker running as nobody signed with a root-only key"
    fi
  done
  kill -0 "$SERVER_PID" 2>/dev/null || fail "nginx exited"
  grep -q "did not open key 'rsa': access denied" "$WORK/nginx-error.log" \
    || fail "the nginx error log has no access-denied message for key 'rsa'"
  check_denied_in_keycelld_log rsa "$(id -u nobody)"
  stop_server
}

# Checks that the nginx master and both of its workers are running.
check_nginx_running() {
  kill -0 "$SERVER_PID" 2>/dev/null || fail "the nginx master exited"
  local count
  count="$(child_pids "$SERVER_PID" | wc -l)"
  ((count == 2)) || fail "nginx runs $count worker processes, expected 2"
}

# Stops keycelld under a running nginx: handshakes fail, nginx stays up,
# and after keycelld starts again nginx signs again without a restart.
test_daemon_restart() {
  setup_keys root www-data
  start_on_free_port nginx ec
  check_handshakes "$PORT" ec "keycell nginx"
  local -a workers_before
  mapfile -t workers_before < <(child_pids "$SERVER_PID")

  stop_keycelld
  local attempt
  for ((attempt = 0; attempt < 4; ++attempt)); do
    if env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" curl -sS --fail \
      --cacert "$KEYCELL_DATA/p256-cert.pem" \
      --resolve "localhost:$PORT:127.0.0.1" \
      "https://localhost:$PORT/" >/dev/null 2>"$WORK/curl.err"; then
      fail "a handshake succeeded while keycelld was stopped"
    fi
  done
  if env -u OPENSSL_CONF timeout "$CLIENT_TIMEOUT" openssl s_client \
    -connect "127.0.0.1:$PORT" -servername localhost -verify_return_error \
    -CAfile "$KEYCELL_DATA/p256-cert.pem" </dev/null >/dev/null 2>&1; then
    fail "s_client completed a handshake while keycelld was stopped"
  fi
  check_nginx_running
  [[ "$(child_pids "$SERVER_PID")" == "$(printf '%s\n' "${workers_before[@]}")" ]] \
    || fail "nginx replaced its workers while keycelld was stopped"
  grep -q -i "keycelld" "$WORK/nginx-error.log" \
    || fail "the nginx error log does not name keycelld as the cause"
  log "keycelld stopped: handshakes fail, nginx keeps running"

  start_keycelld
  # Enough handshakes that both workers sign again.
  for ((attempt = 0; attempt < 3; ++attempt)); do
    check_handshakes "$PORT" ec "keycell nginx"
  done
  check_nginx_running
  log "keycelld started again: handshakes succeed without an nginx restart"
  stop_server
}

case "${1:-}" in
  s_server) test_server s_server "s_server -www" ;;
  nginx) test_nginx ;;
  haproxy) test_server haproxy "keycell haproxy" ;;
  apache2) test_server apache2 "keycell apache2" ;;
  lighttpd) test_server lighttpd "keycell lighttpd" ;;
  stunnel) test_server stunnel "keycell stunnel" ;;
  curl_client_key) test_curl_client_key ;;
  access_denied_s_server) test_access_denied_s_server ;;
  access_denied_nginx_workers) test_access_denied_nginx_workers ;;
  daemon_restart) test_daemon_restart ;;
  *)
    echo "usage: $0 CASE (see the header of this file)" >&2
    exit 2
    ;;
esac
finish_test
