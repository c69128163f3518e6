/*
 * An event loop that signs without blocking: it keeps many keycell
 * operations in flight on one thread, waits for their descriptors with
 * epoll, and finishes each one as it completes.
 *
 * Usage: keycell-example-event-loop-sign CERT KEY [COUNT [IN_FLIGHT]]
 *
 * It loads KEY into a cell, signs COUNT messages (default 1000) with at
 * most IN_FLIGHT operations pending at once (default 64), verifies every
 * signature with the public key of CERT, and prints the rate. Loops that
 * run TLS through OpenSSL get the same effect with SSL_MODE_ASYNC instead.
 */
#include <keycell/keycell.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

struct pending {
  keycell_operation *operation;
  int index; /* The number of the message it signs. */
};

static void message_for(int index, char *out, size_t out_len) {
  snprintf(out, out_len, "message %d", index);
}

static const char *digest_for(EVP_PKEY *pkey) {
  return EVP_PKEY_is_a(pkey, "ED25519") || EVP_PKEY_is_a(pkey, "ED448")
             ? NULL
             : "SHA256";
}

static int verify(EVP_PKEY *public_key, const char *digest, const char *text,
                  const unsigned char *signature, size_t signature_len) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx != NULL &&
           EVP_DigestVerifyInit_ex(ctx, NULL, digest, NULL, NULL, public_key,
                                   NULL) == 1 &&
           EVP_DigestVerify(ctx, signature, signature_len,
                            (const unsigned char *)text, strlen(text)) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

static EVP_PKEY *read_certificate_key(const char *path) {
  FILE *file = fopen(path, "r");
  if (file == NULL) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return NULL;
  }
  X509 *certificate = PEM_read_X509(file, NULL, NULL, NULL);
  fclose(file);
  if (certificate == NULL) {
    fprintf(stderr, "%s: not a PEM certificate\n", path);
    return NULL;
  }
  EVP_PKEY *public_key = X509_get_pubkey(certificate);
  X509_free(certificate);
  return public_key;
}

/* Starts the signature of message |index| into |slot|. */
static int start(EVP_PKEY *pkey, int epoll_fd, struct pending *slot,
                 int index) {
  char text[64];
  char err[KEYCELL_ERROR_SIZE];
  message_for(index, text, sizeof(text));
  slot->operation =
      keycell_sign_start(pkey, digest_for(pkey), 0, (const unsigned char *)text,
                         strlen(text), err, sizeof(err));
  if (slot->operation == NULL) {
    fprintf(stderr, "%s\n", err);
    return 0;
  }
  slot->index = index;
  struct epoll_event event = {.events = EPOLLIN, .data.ptr = slot};
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, keycell_operation_fd(slot->operation),
                &event) != 0) {
    fprintf(stderr, "epoll_ctl: %s\n", strerror(errno));
    return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: %s CERT KEY [COUNT [IN_FLIGHT]]\n", argv[0]);
    return 2;
  }
  int count = argc > 3 ? atoi(argv[3]) : 1000;
  int in_flight = argc > 4 ? atoi(argv[4]) : 64;
  if (count <= 0 || in_flight <= 0 || in_flight > 4096) {
    fprintf(stderr, "COUNT must be positive and IN_FLIGHT 1 to 4096\n");
    return 2;
  }

  char err[KEYCELL_ERROR_SIZE];
  keycell *cell = keycell_start(NULL, err, sizeof(err));
  if (cell == NULL) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  EVP_PKEY *pkey =
      keycell_load_private_key(cell, argv[2], NULL, err, sizeof(err));
  EVP_PKEY *public_key = read_certificate_key(argv[1]);
  if (pkey == NULL || public_key == NULL) {
    if (pkey == NULL) {
      fprintf(stderr, "%s\n", err);
    }
    return 1;
  }

  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  struct pending *slots = calloc((size_t)in_flight, sizeof(*slots));
  if (epoll_fd < 0 || slots == NULL) {
    fprintf(stderr, "out of resources\n");
    return 1;
  }
  struct timespec begin;
  clock_gettime(CLOCK_MONOTONIC, &begin);

  int started = 0;
  int finished = 0;
  int failed = 0;
  for (int i = 0; i < in_flight && started < count; i++) {
    if (!start(pkey, epoll_fd, &slots[i], started++)) {
      return 1;
    }
  }
  unsigned char *signature = malloc((size_t)EVP_PKEY_get_size(pkey));
  while (finished < started) {
    struct epoll_event events[64];
    int ready = epoll_wait(epoll_fd, events, 64, -1);
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    for (int i = 0; i < ready; i++) {
      struct pending *slot = events[i].data.ptr;
      size_t length = (size_t)EVP_PKEY_get_size(pkey);
      int result = keycell_operation_finish(slot->operation, signature, &length,
                                            err, sizeof(err));
      if (result < 0) {
        continue; /* Not complete yet; the descriptor fires again. */
      }
      char text[64];
      message_for(slot->index, text, sizeof(text));
      if (result == 0 ||
          !verify(public_key, digest_for(pkey), text, signature, length)) {
        fprintf(stderr, "signature %d failed: %s\n", slot->index,
                result == 0 ? err : "it does not verify");
        failed++;
      }
      finished++;
      epoll_ctl(epoll_fd, EPOLL_CTL_DEL, keycell_operation_fd(slot->operation),
                NULL);
      keycell_operation_free(slot->operation);
      slot->operation = NULL;
      if (started < count && !start(pkey, epoll_fd, slot, started++)) {
        return 1;
      }
    }
  }

  struct timespec end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  double seconds =
      (double)(end.tv_sec - begin.tv_sec) + (end.tv_nsec - begin.tv_nsec) / 1e9;
  printf("%d signatures, %d failed, %d in flight at most, %.0f per second\n",
         finished, failed, in_flight, finished / seconds);

  free(signature);
  free(slots);
  EVP_PKEY_free(public_key);
  EVP_PKEY_free(pkey);
  keycell_free(cell);
  return failed == 0 ? 0 : 1;
}
