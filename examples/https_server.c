/*
 * keycell-example-https-server: a small HTTPS server whose private keys live
 * in a keycell cell process.
 *
 * Usage:
 *   keycell-example-https-server -c CERT -k KEY [-c CERT -k KEY ...]
 *       [-p PORT] [--tls 1.2|1.3|any] [--allow-rsa-decryption]
 *       [--passphrase-file FILE] [-u USER] [-n COUNT] [--threads N]
 *
 * The server follows the order that keycell expects of any server:
 *   1. keycell_start() forks the cell before the server starts threads.
 *   2. For each -c/-k pair, SSL_CTX_use_certificate_chain_file() installs the
 *      certificate chain and keycell_use_private_key_file() takes the place
 *      of SSL_CTX_use_PrivateKey_file(). One SSL_CTX contains at most one
 *      key of each type, so RSA, ECDSA and Ed25519 keys can share it. OpenSSL
 *      picks the key that the client's signature algorithms allow.
 *   3. keycell_seal() makes the cell reject every later key load, so code
 *      that takes over the server cannot load a key file again with RSA
 *      decryption allowed, or read other files through the cell.
 *   4. With -u, keycell_drop_privileges() switches the cell to USER, then the
 *      server switches itself to USER (after binding its port).
 *   5. An acceptor thread (main) hands connections to a pool of worker
 *      threads. Each connection serves one HTTP request and is closed.
 *   6. On SIGINT or SIGTERM, or after -n COUNT connections, the server stops
 *      accepting, waits for the workers, and calls keycell_free().
 *
 * The server binds 127.0.0.1 only. Port 0 makes the kernel choose a free port.
 * The "listening on 127.0.0.1:PORT" line on stderr names the port chosen.
 *
 * Every request gets a text/plain body naming the negotiated protocol, the
 * cipher, the type of the key that authenticated the server, and the pid of
 * the cell that performs that key's operations. The server writes one log line
 * per connection to stderr. keycell never prints, so this program prints
 * keycell's messages.
 *
 * Exit status: 0 after a signal or COUNT connections, 1 if startup failed,
 * 2 for invalid arguments.
 */
#define _GNU_SOURCE /* accept4(), initgroups() */

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <keycell/keycell.h>

#define PROGRAM_NAME "keycell-example-https-server"
#define MAX_KEY_PAIRS 8
#define MAX_THREADS 256
#define DEFAULT_THREADS 4
#define QUEUE_CAPACITY 64
#define MAX_REQUEST_HEADER 8192
/* A client that stalls for this many seconds on a read or write is
 * disconnected, so a slow client cannot hold a worker or delay shutdown. */
#define IO_TIMEOUT_SECONDS 10

struct key_pair {
  const char *cert_path;
  const char *key_path;
};

struct config {
  struct key_pair pairs[MAX_KEY_PAIRS];
  int pair_count;
  int port;
  int min_version; /* 0 means the OpenSSL default */
  int max_version;
  int allow_rsa_decryption;
  const char *passphrase_file;
  const char *user;
  unsigned long connection_limit; /* 0 means no limit */
  int threads;
};

/* Accepted sockets waiting for a worker. The acceptor blocks while the queue
 * is full. Workers exit once the queue is closed and empty. */
struct connection_queue {
  int fds[QUEUE_CAPACITY];
  unsigned long ids[QUEUE_CAPACITY];
  size_t head;
  size_t count;
  int closed;
  pthread_mutex_t mutex;
  pthread_cond_t not_empty;
  pthread_cond_t not_full;
};

struct server {
  SSL_CTX *ctx;
  pid_t cell_pid;
  struct connection_queue queue;
};

/* The signal handler writes one byte to this pipe to wake the acceptor. */
static int wake_pipe[2] = {-1, -1};

/* Serializes log lines from different threads. */
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

static void log_line(const char *format, ...)
    __attribute__((format(printf, 1, 2)));

static void log_line(const char *format, ...) {
  va_list args;
  va_start(args, format);
  pthread_mutex_lock(&log_mutex);
  fputs(PROGRAM_NAME ": ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  pthread_mutex_unlock(&log_mutex);
  va_end(args);
}

/* Writes the oldest OpenSSL error of this thread's queue to |buf|, or
 * |fallback| if the queue is empty, and clears the queue. */
static void openssl_error(char *buf, size_t len, const char *fallback) {
  unsigned long code = ERR_get_error();
  if (code == 0) {
    snprintf(buf, len, "%s", fallback);
  } else {
    ERR_error_string_n(code, buf, len);
  }
  ERR_clear_error();
}

static void usage(FILE *out) {
  fprintf(out,
          "Usage: " PROGRAM_NAME
          " -c CERT -k KEY [-c CERT -k KEY ...] [options]\n"
          "\n"
          "Serves HTTPS on 127.0.0.1 with private keys held by a keycell "
          "cell.\n"
          "\n"
          "  -c, --cert FILE         certificate chain in PEM, leaf first\n"
          "  -k, --key FILE          private key for the preceding -c; the\n"
          "                          cell opens it, this process never does\n"
          "  -p, --port PORT         TCP port on 127.0.0.1 (default 8443; 0\n"
          "                          picks a free port and logs it)\n"
          "      --tls VERSION       1.2, 1.3 or any (default any)\n"
          "      --allow-rsa-decryption\n"
          "                          serve TLS 1.2 RSA key exchange "
          "(TLS_RSA_*)\n"
          "      --passphrase-file FILE\n"
          "                          passphrase of encrypted keys, first "
          "line\n"
          "  -u, --user USER         run the cell and this server as USER "
          "once\n"
          "                          the keys are loaded and the port is "
          "bound\n"
          "  -n, --connections COUNT exit after COUNT connections (default:\n"
          "                          run until SIGINT or SIGTERM)\n"
          "      --threads N         worker threads, 1 to %d (default %d)\n"
          "  -h, --help              print this help\n"
          "\n"
          "Up to %d -c/-k pairs; at most one key of each type (RSA, EC, "
          "Ed25519,\n"
          "Ed448) per server.\n",
          MAX_THREADS, DEFAULT_THREADS, MAX_KEY_PAIRS);
}

/* Parses a decimal number in [min, max] into |value|. Returns 1 on success. */
static int parse_number(const char *text, unsigned long min, unsigned long max,
                        unsigned long *value) {
  char *end = NULL;
  errno = 0;
  unsigned long parsed = strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' ||
      parsed < min || parsed > max) {
    return 0;
  }
  *value = parsed;
  return 1;
}

/* Returns the option's argument and advances |*index|, or NULL and prints
 * an error if the argument is missing. */
static const char *option_argument(int argc, char **argv, int *index) {
  if (*index + 1 >= argc) {
    fprintf(stderr, PROGRAM_NAME ": option %s requires an argument\n",
            argv[*index]);
    return NULL;
  }
  *index += 1;
  return argv[*index];
}

/* Fills |config| from the command line. Returns 1 to run the server, 0 on
 * invalid arguments (after printing why) and -1 after printing the help. */
static int parse_arguments(int argc, char **argv, struct config *config) {
  memset(config, 0, sizeof(*config));
  config->port = 8443;
  config->threads = DEFAULT_THREADS;
  const char *pending_cert = NULL;

  for (int i = 1; i < argc; i++) {
    const char *option = argv[i];
    const char *value = NULL;
    unsigned long number = 0;

    if (strcmp(option, "-h") == 0 || strcmp(option, "--help") == 0) {
      usage(stdout);
      return -1;
    }
    if (strcmp(option, "--allow-rsa-decryption") == 0) {
      config->allow_rsa_decryption = 1;
      continue;
    }
    if (option[0] != '-') {
      fprintf(stderr, PROGRAM_NAME ": unexpected argument '%s'\n", option);
      return 0;
    }
    value = option_argument(argc, argv, &i);
    if (value == NULL) {
      return 0;
    }

    if (strcmp(option, "-c") == 0 || strcmp(option, "--cert") == 0) {
      if (pending_cert != NULL) {
        fprintf(stderr, PROGRAM_NAME ": -c %s has no -k KEY after it\n",
                pending_cert);
        return 0;
      }
      pending_cert = value;
    } else if (strcmp(option, "-k") == 0 || strcmp(option, "--key") == 0) {
      if (pending_cert == NULL) {
        fprintf(stderr, PROGRAM_NAME ": -k %s must follow a -c CERT\n", value);
        return 0;
      }
      if (config->pair_count == MAX_KEY_PAIRS) {
        fprintf(stderr, PROGRAM_NAME ": at most %d -c/-k pairs\n",
                MAX_KEY_PAIRS);
        return 0;
      }
      config->pairs[config->pair_count].cert_path = pending_cert;
      config->pairs[config->pair_count].key_path = value;
      config->pair_count++;
      pending_cert = NULL;
    } else if (strcmp(option, "-p") == 0 || strcmp(option, "--port") == 0) {
      if (!parse_number(value, 0, 65535, &number)) {
        fprintf(stderr,
                PROGRAM_NAME ": invalid port '%s': expected 0 to 65535\n",
                value);
        return 0;
      }
      config->port = (int)number;
    } else if (strcmp(option, "--tls") == 0) {
      if (strcmp(value, "1.2") == 0) {
        config->min_version = config->max_version = TLS1_2_VERSION;
      } else if (strcmp(value, "1.3") == 0) {
        config->min_version = config->max_version = TLS1_3_VERSION;
      } else if (strcmp(value, "any") == 0) {
        config->min_version = config->max_version = 0;
      } else {
        fprintf(stderr,
                PROGRAM_NAME ": invalid --tls '%s': expected 1.2, 1.3 or any\n",
                value);
        return 0;
      }
    } else if (strcmp(option, "--passphrase-file") == 0) {
      config->passphrase_file = value;
    } else if (strcmp(option, "-u") == 0 || strcmp(option, "--user") == 0) {
      config->user = value;
    } else if (strcmp(option, "-n") == 0 ||
               strcmp(option, "--connections") == 0) {
      if (!parse_number(value, 1, 1000000000, &number)) {
        fprintf(stderr,
                PROGRAM_NAME
                ": invalid connection count '%s': expected a "
                "positive number\n",
                value);
        return 0;
      }
      config->connection_limit = number;
    } else if (strcmp(option, "--threads") == 0) {
      if (!parse_number(value, 1, MAX_THREADS, &number)) {
        fprintf(stderr,
                PROGRAM_NAME ": invalid thread count '%s': expected 1 to %d\n",
                value, MAX_THREADS);
        return 0;
      }
      config->threads = (int)number;
    } else {
      fprintf(stderr, PROGRAM_NAME ": unknown option '%s' (see --help)\n",
              option);
      return 0;
    }
  }

  if (pending_cert != NULL) {
    fprintf(stderr, PROGRAM_NAME ": -c %s has no -k KEY after it\n",
            pending_cert);
    return 0;
  }
  if (config->pair_count == 0) {
    fprintf(stderr, PROGRAM_NAME ": at least one -c CERT -k KEY is required\n");
    return 0;
  }
  return 1;
}

/* Writes a short name of |pkey|'s type to |buf|: "RSA-2048", "ECDSA P-256",
 * "Ed25519", "Ed448" or OpenSSL's type name for other keys. */
static void describe_key(const EVP_PKEY *pkey, char *buf, size_t len) {
  if (pkey == NULL) {
    snprintf(buf, len, "none");
  } else if (EVP_PKEY_is_a(pkey, "RSA")) {
    snprintf(buf, len, "RSA-%d", EVP_PKEY_get_bits(pkey));
  } else if (EVP_PKEY_is_a(pkey, "EC")) {
    char group[80] = "";
    const char *nist_name = NULL;
    if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL)) {
      nist_name = EC_curve_nid2nist(OBJ_txt2nid(group));
    }
    snprintf(buf, len, "ECDSA %s", nist_name != NULL ? nist_name : group);
  } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
    snprintf(buf, len, "Ed25519");
  } else if (EVP_PKEY_is_a(pkey, "ED448")) {
    snprintf(buf, len, "Ed448");
  } else {
    const char *name = EVP_PKEY_get0_type_name(pkey);
    snprintf(buf, len, "%s", name != NULL ? name : "unknown");
  }
}

/* Creates the SSL_CTX and loads every certificate and key. The certificate
 * comes first, so keycell_use_private_key_file() checks that the key matches
 * it. Returns NULL after logging the failure. */
static SSL_CTX *create_tls_context(const struct config *config, keycell *cell) {
  char err[KEYCELL_ERROR_SIZE];
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  keycell_key_options *key_options = keycell_key_options_new();
  if (ctx == NULL || key_options == NULL) {
    openssl_error(err, sizeof(err), "out of memory");
    log_line("failed to create the TLS context: %s", err);
    goto fail;
  }

  if (!SSL_CTX_set_min_proto_version(ctx, config->min_version) ||
      !SSL_CTX_set_max_proto_version(ctx, config->max_version)) {
    openssl_error(err, sizeof(err), "unsupported version");
    log_line("failed to set the TLS version: %s", err);
    goto fail;
  }

  if (config->passphrase_file != NULL &&
      !keycell_key_options_set_passphrase_file(key_options,
                                               config->passphrase_file)) {
    log_line("invalid --passphrase-file '%s'", config->passphrase_file);
    goto fail;
  }
  keycell_key_options_allow_rsa_decryption(key_options,
                                           config->allow_rsa_decryption);

  for (int i = 0; i < config->pair_count; i++) {
    const struct key_pair *pair = &config->pairs[i];
    if (SSL_CTX_use_certificate_chain_file(ctx, pair->cert_path) != 1) {
      openssl_error(err, sizeof(err), "unknown error");
      log_line("failed to load certificate chain %s: %s", pair->cert_path, err);
      goto fail;
    }
    if (!keycell_use_private_key_file(cell, ctx, pair->key_path, key_options,
                                      err, sizeof(err))) {
      log_line("failed to load private key %s: %s", pair->key_path, err);
      goto fail;
    }

    /* The pair just installed is the SSL_CTX's current certificate and key.
     * The certificate's public key names the key type. */
    char description[96];
    describe_key(X509_get0_pubkey(SSL_CTX_get0_certificate(ctx)), description,
                 sizeof(description));
    log_line("loaded %s (%s) with certificate %s; private key %s",
             pair->key_path, description, pair->cert_path,
             keycell_is_cell_key(SSL_CTX_get0_privatekey(ctx))
                 ? "served by the cell"
                 : "NOT served by the cell");
  }

  keycell_key_options_free(key_options);
  return ctx;

fail:
  keycell_key_options_free(key_options);
  SSL_CTX_free(ctx);
  return NULL;
}

/* Returns a socket listening on 127.0.0.1:|port|, or -1 after logging. With
 * port 0 the kernel picks a free port. */
static int listen_on_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log_line("socket() failed: %s", strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

  struct sockaddr_in address;
  memset(&address, 0, sizeof(address));
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons((unsigned short)port);
  if (bind(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
    log_line("failed to bind 127.0.0.1:%d: %s", port, strerror(errno));
    close(fd);
    return -1;
  }
  if (listen(fd, 128) != 0) {
    log_line("listen() failed: %s", strerror(errno));
    close(fd);
    return -1;
  }

  socklen_t length = sizeof(address);
  if (getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
    log_line("getsockname() failed: %s", strerror(errno));
    close(fd);
    return -1;
  }
  log_line("listening on 127.0.0.1:%d", ntohs(address.sin_port));
  return fd;
}

/* Switches this process to |user|: supplementary groups, group, then user.
 * Returns 1 on success and 0 after logging. */
static int drop_server_privileges(const char *user) {
  errno = 0;
  struct passwd *entry = getpwnam(user);
  if (entry == NULL) {
    log_line("failed to switch to user '%s': %s", user,
             errno != 0 ? strerror(errno) : "no such user");
    return 0;
  }
  uid_t uid = entry->pw_uid;
  gid_t gid = entry->pw_gid;
  if (initgroups(user, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
    log_line("failed to switch to user '%s': %s", user, strerror(errno));
    return 0;
  }
  if (uid != 0 && setuid(0) == 0) {
    log_line("switched to user '%s' but setuid(0) still succeeds; stopping",
             user);
    return 0;
  }
  log_line("running as user %s (uid %lu)", user, (unsigned long)uid);
  return 1;
}

static void handle_stop_signal(int signal_number) {
  (void)signal_number;
  int saved_errno = errno;
  char byte = 1;
  /* A full pipe already contains a wake-up, so a failed write is harmless. */
  ssize_t ignored = write(wake_pipe[1], &byte, 1);
  (void)ignored;
  errno = saved_errno;
}

/* Installs the SIGINT and SIGTERM handlers that wake the acceptor, and
 * ignores SIGPIPE so that a client that disconnects early makes a write fail
 * instead of killing the server. Returns 1 on success and 0 after logging. */
static int install_signal_handlers(void) {
  if (pipe(wake_pipe) != 0) {
    log_line("pipe() failed: %s", strerror(errno));
    return 0;
  }
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  sigemptyset(&action.sa_mask);
  action.sa_handler = handle_stop_signal;
  action.sa_flags = SA_RESTART;
  if (sigaction(SIGINT, &action, NULL) != 0 ||
      sigaction(SIGTERM, &action, NULL) != 0) {
    log_line("sigaction() failed: %s", strerror(errno));
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  return 1;
}

/* Connection queue. */

static void queue_init(struct connection_queue *queue) {
  memset(queue, 0, sizeof(*queue));
  pthread_mutex_init(&queue->mutex, NULL);
  pthread_cond_init(&queue->not_empty, NULL);
  pthread_cond_init(&queue->not_full, NULL);
}

static void queue_destroy(struct connection_queue *queue) {
  pthread_mutex_destroy(&queue->mutex);
  pthread_cond_destroy(&queue->not_empty);
  pthread_cond_destroy(&queue->not_full);
}

static void queue_push(struct connection_queue *queue, int fd,
                       unsigned long id) {
  pthread_mutex_lock(&queue->mutex);
  while (queue->count == QUEUE_CAPACITY) {
    pthread_cond_wait(&queue->not_full, &queue->mutex);
  }
  size_t tail = (queue->head + queue->count) % QUEUE_CAPACITY;
  queue->fds[tail] = fd;
  queue->ids[tail] = id;
  queue->count++;
  pthread_cond_signal(&queue->not_empty);
  pthread_mutex_unlock(&queue->mutex);
}

/* Takes the oldest connection. Returns 0 once the queue is closed and
 * empty. */
static int queue_pop(struct connection_queue *queue, int *fd,
                     unsigned long *id) {
  pthread_mutex_lock(&queue->mutex);
  while (queue->count == 0 && !queue->closed) {
    pthread_cond_wait(&queue->not_empty, &queue->mutex);
  }
  if (queue->count == 0) {
    pthread_mutex_unlock(&queue->mutex);
    return 0;
  }
  *fd = queue->fds[queue->head];
  *id = queue->ids[queue->head];
  queue->head = (queue->head + 1) % QUEUE_CAPACITY;
  queue->count--;
  pthread_cond_signal(&queue->not_full);
  pthread_mutex_unlock(&queue->mutex);
  return 1;
}

static void queue_close(struct connection_queue *queue) {
  pthread_mutex_lock(&queue->mutex);
  queue->closed = 1;
  pthread_cond_broadcast(&queue->not_empty);
  pthread_mutex_unlock(&queue->mutex);
}

/* One connection. */

/* Describes why an SSL_accept/SSL_read/SSL_write call that returned |ret|
 * failed, with the OpenSSL error queue or errno, and clears the queue. */
static void describe_ssl_failure(SSL *ssl, int ret, char *buf, size_t len) {
  int saved_errno = errno;
  int code = SSL_get_error(ssl, ret);
  if (code == SSL_ERROR_SSL) {
    openssl_error(buf, len, "TLS protocol error");
  } else if (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) {
      snprintf(buf, len, "timed out after %d s", IO_TIMEOUT_SECONDS);
    } else if (saved_errno != 0) {
      snprintf(buf, len, "%s", strerror(saved_errno));
    } else {
      snprintf(buf, len, "connection closed by the client");
    }
  } else if (code == SSL_ERROR_ZERO_RETURN) {
    snprintf(buf, len, "connection closed by the client");
  } else {
    openssl_error(buf, len, "I/O error");
  }
  ERR_clear_error();
}

/* Reads the request header, up to and including the blank line. Returns the
 * header length, or 0 if the header is missing or too long, with the reason
 * in |reason|. */
static size_t read_request_header(SSL *ssl, char *buf, size_t capacity,
                                  char *reason, size_t reason_len) {
  size_t used = 0;
  while (used < capacity - 1) {
    int n = SSL_read(ssl, buf + used, (int)(capacity - 1 - used));
    if (n <= 0) {
      describe_ssl_failure(ssl, n, reason, reason_len);
      return 0;
    }
    used += (size_t)n;
    buf[used] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (end != NULL) {
      return (size_t)(end - buf) + 4;
    }
  }
  snprintf(reason, reason_len, "request header longer than %zu bytes",
           capacity - 1);
  return 0;
}

/* Writes all |len| bytes. Returns 1 on success. */
static int write_all(SSL *ssl, const char *data, size_t len, char *reason,
                     size_t reason_len) {
  size_t written = 0;
  if (SSL_write_ex(ssl, data, len, &written) != 1 || written != len) {
    describe_ssl_failure(ssl, 0, reason, reason_len);
    return 0;
  }
  return 1;
}

/* Performs the handshake, serves one HTTP request and logs one line. */
static void serve_connection(const struct server *server, int fd,
                             unsigned long id) {
  char peer[64] = "unknown peer";
  struct sockaddr_in address;
  socklen_t address_len = sizeof(address);
  if (getpeername(fd, (struct sockaddr *)&address, &address_len) == 0) {
    char host[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &address.sin_addr, host, sizeof(host));
    snprintf(peer, sizeof(peer), "%s:%u", host, ntohs(address.sin_port));
  }

  char reason[256];
  SSL *ssl = SSL_new(server->ctx);
  if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
    openssl_error(reason, sizeof(reason), "out of memory");
    log_line("connection %lu from %s: %s", id, peer, reason);
    SSL_free(ssl);
    return;
  }

  int ret = SSL_accept(ssl);
  if (ret != 1) {
    describe_ssl_failure(ssl, ret, reason, sizeof(reason));
    log_line("connection %lu from %s: handshake failed: %s", id, peer, reason);
    SSL_free(ssl);
    return;
  }

  /* SSL_get_certificate() and SSL_get_privatekey() return the pair that
   * OpenSSL selected for this handshake. */
  char key_name[96];
  describe_key(X509_get0_pubkey(SSL_get_certificate(ssl)), key_name,
               sizeof(key_name));
  int in_cell = keycell_is_cell_key(SSL_get_privatekey(ssl));
  const char *holder = in_cell ? "cell" : "server";
  long holder_pid = in_cell ? (long)server->cell_pid : (long)getpid();
  const char *protocol = SSL_get_version(ssl);
  const char *cipher = SSL_get_cipher_name(ssl);

  char request[MAX_REQUEST_HEADER];
  size_t header_len = read_request_header(ssl, request, sizeof(request), reason,
                                          sizeof(reason));
  if (header_len == 0) {
    log_line("connection %lu from %s: %s %s key=%s: no request: %s", id, peer,
             protocol, cipher, key_name, reason);
    SSL_free(ssl);
    return;
  }

  /* The request line is "METHOD TARGET VERSION". It goes into the log, so
   * control characters from the client are replaced. */
  char *line_end = strstr(request, "\r\n");
  *line_end = '\0';
  for (char *c = request; *c != '\0'; c++) {
    if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f) {
      *c = '?';
    }
  }
  int is_get = strncmp(request, "GET ", 4) == 0;
  int is_head = strncmp(request, "HEAD ", 5) == 0;
  int status = is_get || is_head ? 200 : 405;

  char body[512];
  int body_len;
  if (status == 200) {
    body_len = snprintf(body, sizeof(body),
                        "Hello from the keycell example server.\n"
                        "protocol: %s\n"
                        "cipher: %s\n"
                        "key: %s\n"
                        "private key held by: %s (pid %ld)\n",
                        protocol, cipher, key_name, holder, holder_pid);
  } else {
    body_len = snprintf(body, sizeof(body), "Only GET and HEAD are served.\n");
  }

  char response[1024];
  int response_len = snprintf(
      response, sizeof(response),
      "HTTP/1.1 %d %s\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Length: %d\r\n"
      "Connection: close\r\n"
      "%s"
      "\r\n"
      "%s",
      status, status == 200 ? "OK" : "Method Not Allowed", body_len,
      status == 405 ? "Allow: GET, HEAD\r\n" : "", is_head ? "" : body);

  if (write_all(ssl, response, (size_t)response_len, reason, sizeof(reason))) {
    SSL_shutdown(ssl);
    log_line("connection %lu from %s: %s %s key=%s (held by %s) \"%.200s\" %d",
             id, peer, protocol, cipher, key_name, holder, request, status);
  } else {
    log_line("connection %lu from %s: %s %s key=%s: write failed: %s", id, peer,
             protocol, cipher, key_name, reason);
  }
  SSL_free(ssl);
}

static void *worker_main(void *arg) {
  struct server *server = arg;
  int fd;
  unsigned long id;
  while (queue_pop(&server->queue, &fd, &id)) {
    serve_connection(server, fd, id);
    close(fd);
    ERR_clear_error();
  }
  return NULL;
}

/* Accepts connections until a stop signal or the connection limit, handing
 * each to the workers. */
static void accept_connections(struct server *server, int listen_fd,
                               unsigned long limit) {
  unsigned long accepted = 0;
  struct timeval timeout = {.tv_sec = IO_TIMEOUT_SECONDS, .tv_usec = 0};

  while (limit == 0 || accepted < limit) {
    struct pollfd fds[2] = {{.fd = listen_fd, .events = POLLIN},
                            {.fd = wake_pipe[0], .events = POLLIN}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      log_line("poll() failed: %s; stopping", strerror(errno));
      return;
    }
    if (fds[1].revents != 0) {
      log_line("stop signal received; finishing open connections");
      return;
    }

    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) {
        continue;
      }
      log_line("accept() failed: %s", strerror(errno));
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        usleep(100 * 1000); /* Gives workers time to close descriptors. */
      }
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    accepted++;
    queue_push(&server->queue, fd, accepted);
  }
  log_line("accepted %lu connections as -n requested; stopping", limit);
}

int main(int argc, char **argv) {
  struct config config;
  int parsed = parse_arguments(argc, argv, &config);
  if (parsed < 0) {
    return 0;
  }
  if (parsed == 0) {
    return 2;
  }

  /* The cell is forked first, before any thread exists and while this
   * process still has the credentials that can read the key files. */
  char err[KEYCELL_ERROR_SIZE];
  keycell *cell = keycell_start(NULL, err, sizeof(err));
  if (cell == NULL) {
    log_line("keycell_start failed: %s", err);
    return 1;
  }

  struct server server;
  memset(&server, 0, sizeof(server));
  server.cell_pid = keycell_cell_pid(cell);
  log_line("started cell pid %ld; server pid %ld", (long)server.cell_pid,
           (long)getpid());
  /* The library never prints, so the server reports once whether the cell
   * could lock its key memory and confine itself with Landlock. */
  if (keycell_key_memory_locked(cell)) {
    log_line("cell key memory: locked");
  } else {
    log_line("cell key memory: not locked (RLIMIT_MEMLOCK too low); keys "
             "may be swapped out");
  }
  if (keycell_landlock_abi(cell) > 0) {
    log_line("cell Landlock ABI: %d", keycell_landlock_abi(cell));
  } else {
    log_line("cell Landlock: not offered by the kernel");
  }

  int exit_code = 1;
  int listen_fd = -1;
  pthread_t threads[MAX_THREADS];
  int thread_count = 0;

  server.ctx = create_tls_context(&config, cell);
  if (server.ctx == NULL) {
    goto done;
  }
  if (!keycell_seal(cell, err, sizeof(err))) {
    log_line("keycell_seal failed: %s", err);
    goto done;
  }
  listen_fd = listen_on_loopback(config.port);
  if (listen_fd < 0) {
    goto done;
  }

  if (config.user != NULL) {
    if (!keycell_drop_privileges(cell, config.user, err, sizeof(err))) {
      log_line("keycell_drop_privileges failed: %s", err);
      goto done;
    }
    log_line("cell now runs as user %s", config.user);
    if (!drop_server_privileges(config.user)) {
      goto done;
    }
  }

  if (!install_signal_handlers()) {
    goto done;
  }

  queue_init(&server.queue);
  for (; thread_count < config.threads; thread_count++) {
    int rc = pthread_create(&threads[thread_count], NULL, worker_main, &server);
    if (rc != 0) {
      log_line("pthread_create failed: %s", strerror(rc));
      break;
    }
  }
  if (thread_count == config.threads) {
    accept_connections(&server, listen_fd, config.connection_limit);
    exit_code = 0;
  }

  queue_close(&server.queue);
  for (int i = 0; i < thread_count; i++) {
    pthread_join(threads[i], NULL);
  }
  queue_destroy(&server.queue);

done:
  if (listen_fd >= 0) {
    close(listen_fd);
  }
  SSL_CTX_free(server.ctx);
  /* The workers have stopped, so no thread uses the cell's keys any more. */
  keycell_free(cell);
  log_line("stopped");
  return exit_code;
}
