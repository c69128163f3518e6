/*
 * neverbleed.h: the API of h2o's neverbleed library, implemented on keycell.
 *
 * A program written for neverbleed builds against this header by changing
 * its include path and links with -lkeycell-neverbleed -lkeycell (see
 * keycell-neverbleed.pc). Private keys live in a keycell cell process, and
 * the keys this API loads are keycell EVP_PKEYs, so every key type keycell
 * serves works: RSA, ECDSA on P-256, P-384 and P-521, Ed25519 and Ed448.
 *
 * Where this implementation differs from neverbleed is written down in
 * docs/NEVERBLEED.md of the keycell sources. The main difference: neverbleed
 * aborts the process when the daemon is gone or sends garbage, and this
 * implementation reports a failure through the return value instead.
 *
 * NOTE: a process loads keys through either this API or keycell.h, not
 * both. Each library registers its own OpenSSL provider named
 * "keycell-embedded", and key loads through the API that registered second fail.
 */
#ifndef NEVERBLEED_H
#define NEVERBLEED_H

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define NEVERBLEED_EXPORT __attribute__((visibility("default")))
#else
#define NEVERBLEED_EXPORT
#endif

/* cpu_set_t exists when the includer defines _GNU_SOURCE (glibc). */
#if defined(__linux__) && defined(CPU_SETSIZE)
#define NEVERBLEED_HAS_PTHREAD_SETAFFINITY_NP 1
#define NEVERBLEED_CPU_SET_T cpu_set_t
#endif

/* The size of the error buffers that neverbleed_init() and
 * neverbleed_load_private_key_file() write to. */
#define NEVERBLEED_ERRBUF_SIZE (256)
/* Kept for source compatibility: keycell authenticates its connections by
 * passing socketpair descriptors, so no token is exchanged. */
#define NEVERBLEED_AUTH_TOKEN_SIZE 32

/* The keycell cell behind one neverbleed_t. */
struct keycell_neverbleed_state;

/* A handle to one cell process. The caller allocates it (statically, on the
 * heap or on the stack of a function that outlives its use) and
 * neverbleed_init() fills it in. There is no function to free it, as in
 * neverbleed: the cell runs until the program exits. */
typedef struct st_neverbleed_t {
  struct keycell_neverbleed_state *state;
  /* The process id of the cell. */
  pid_t daemon_pid;
} neverbleed_t;

/* A request or reply of the asynchronous interface. The bytes between
 * |start| and |end| are one keycell protocol frame; |buf| is the allocation
 * of |capacity| bytes that contains them. |next| and |processing| belong to
 * the caller, which may use them to queue buffers. */
typedef struct st_neverbleed_iobuf_t {
  char *buf;
  char *start;
  char *end;
  size_t capacity;
  struct st_neverbleed_iobuf_t *next;
  unsigned processing : 1;
} neverbleed_iobuf_t;

/* neverbleed_init forks the cell. Returns 0 on success and -1 on failure
 * with a message in |errbuf|, which has room for NEVERBLEED_ERRBUF_SIZE bytes
 * and may be NULL. It fails when neverbleed_offload is not
 * NEVERBLEED_OFFLOAD_OFF. Call it before the program starts threads. */
NEVERBLEED_EXPORT int neverbleed_init(neverbleed_t *nb, char *errbuf);

/* neverbleed_load_private_key_file replaces SSL_CTX_use_PrivateKey_file():
 * the cell reads the PEM or DER key file |fn| and the key is installed in
 * |ctx|. The cell serves RSA decryption with the key, which TLS 1.2 RSA key
 * exchange needs. Returns 1 on success, -1 when the key cannot be loaded
 * and 0 when |ctx| rejects it (for instance a key that does not match the
 * certificate), with a message in |errbuf| on failure. */
NEVERBLEED_EXPORT int neverbleed_load_private_key_file(neverbleed_t *nb,
                                                       SSL_CTX *ctx,
                                                       const char *fn,
                                                       char *errbuf);

/* neverbleed_setuidgid switches the cell to |user|: its group, its
 * supplementary groups and its uid. |change_socket_ownership| is accepted
 * and ignored, because the cell has no socket file. Returns 0 on success and
 * -1 on failure. */
NEVERBLEED_EXPORT int neverbleed_setuidgid(neverbleed_t *nb, const char *user,
                                           int change_socket_ownership);

/* The asynchronous interface. neverbleed_start_* builds a request in |buf|,
 * the caller sends it and reads the reply into |buf|, and neverbleed_finish_*
 * parses the reply and frees the buffer's memory. A request built from
 * invalid arguments (NULL or non-neverbleed key, unsupported key type) is
 * still a valid request, whose reply makes neverbleed_finish_* fail, so the
 * replies on a descriptor stay in step with the requests. */

/* neverbleed_start_digestsign builds a request that signs |len| bytes at
 * |input| with |pkey|, a key loaded by neverbleed_load_private_key_file().
 * For RSA and ECDSA keys |input| is hashed with |md| in this process, and
 * NULL |md| means SHA-256; a nonzero |rsa_pss| selects RSA-PSS with a salt
 * as long as the digest and MGF1 with |md|, otherwise RSA uses PKCS#1 v1.5.
 * For Ed25519 and Ed448 keys |md| must be NULL and |input| is the message. */
NEVERBLEED_EXPORT void neverbleed_start_digestsign(neverbleed_iobuf_t *buf,
                                                   EVP_PKEY *pkey,
                                                   const EVP_MD *md,
                                                   const void *input,
                                                   size_t len, int rsa_pss);

/* neverbleed_finish_digestsign parses the reply in |buf|. On success it
 * stores the signature, allocated with malloc() for the caller to free(),
 * in |*digest| and its length in |*digest_len|. On failure it stores NULL
 * and 0. It frees the memory of |buf| in both cases. */
NEVERBLEED_EXPORT void neverbleed_finish_digestsign(neverbleed_iobuf_t *buf,
                                                    void **digest,
                                                    size_t *digest_len);

/* neverbleed_start_decrypt builds a request that decrypts the |len| bytes at
 * |input| with the RSA key |pkey| and PKCS#1 v1.5 padding. neverbleed
 * returns the raw RSA result instead; see docs/NEVERBLEED.md. */
NEVERBLEED_EXPORT void neverbleed_start_decrypt(neverbleed_iobuf_t *buf,
                                                EVP_PKEY *pkey,
                                                const void *input, size_t len);

/* neverbleed_finish_decrypt parses the reply in |buf| as
 * neverbleed_finish_digestsign() does, storing the plaintext. */
NEVERBLEED_EXPORT void neverbleed_finish_decrypt(neverbleed_iobuf_t *buf,
                                                 void **digest,
                                                 size_t *digest_len);

#if NEVERBLEED_HAS_PTHREAD_SETAFFINITY_NP
/* neverbleed_setaffinity restricts every thread of the cell to the CPUs in
 * |cpuset|. The cell serves requests from a pool of threads, so all of them
 * are pinned, not one. Returns 0 on success and -1 when a thread could not
 * be pinned. */
NEVERBLEED_EXPORT int neverbleed_setaffinity(neverbleed_t *nb,
                                             NEVERBLEED_CPU_SET_T *cpuset);
#endif

/* Runs in the cell process right after neverbleed_init() forks it, before
 * the cell closes the descriptors it inherited. NULL for none. */
NEVERBLEED_EXPORT extern void (*neverbleed_post_fork_cb)(void);

/* When set, every request of this API goes through this callback instead
 * of the calling thread's connection: loading keys, neverbleed_setuidgid(),
 * and the signatures, decryptions and key releases that OpenSSL requests
 * through keys loaded by neverbleed_load_private_key_file(). With
 * |responseless| zero the callback sends |req| and must leave the reply in
 * it, as neverbleed_transaction_read() does. With |responseless| nonzero no
 * reply comes, and the callback owns the contents of |req| and frees them
 * with neverbleed_iobuf_dispose(). NULL for none. */
NEVERBLEED_EXPORT extern void (*neverbleed_transaction_cb)(
    neverbleed_iobuf_t *req, int responseless);

typedef void (*neverbleed_cb)(int);

/* neverbleed_get_fd returns the calling thread's descriptor for the
 * asynchronous interface, opening it on first use and again in a process
 * forked later. Each request written to it is a native-endian size_t byte
 * count followed by that many bytes of an iobuf. Each reply has the same
 * form, and replies come in request order. Returns -1 on failure. */
NEVERBLEED_EXPORT int neverbleed_get_fd(neverbleed_t *nb);

static size_t neverbleed_iobuf_size(neverbleed_iobuf_t *buf);

/* neverbleed_iobuf_dispose wipes and frees the memory of |buf| and clears
 * |buf|, |start|, |end| and |capacity|; |next| and |processing| keep their
 * values. */
NEVERBLEED_EXPORT void neverbleed_iobuf_dispose(neverbleed_iobuf_t *buf);

/* neverbleed_transaction_read replaces the contents of |buf| with the next
 * reply read from neverbleed_get_fd(). On failure (the cell is gone, no
 * reply within the cell's timeout of 30 seconds, a malformed size) |buf| is
 * left empty and neverbleed_finish_* then fails. */
NEVERBLEED_EXPORT void neverbleed_transaction_read(neverbleed_t *nb,
                                                   neverbleed_iobuf_t *buf);

/* neverbleed_transaction_write writes the request in |buf| to
 * neverbleed_get_fd(), with its size before it. A write that fails leaves
 * no reply to read, so the following neverbleed_transaction_read() fails. */
NEVERBLEED_EXPORT void neverbleed_transaction_write(neverbleed_t *nb,
                                                    neverbleed_iobuf_t *buf);

/* Hardware offload. Only NEVERBLEED_OFFLOAD_OFF is supported; any other
 * value makes neverbleed_init() fail. */
NEVERBLEED_EXPORT extern enum neverbleed_offload_type {
  NEVERBLEED_OFFLOAD_OFF = 0,
  NEVERBLEED_OFFLOAD_QAT_ON,
  NEVERBLEED_OFFLOAD_QAT_AUTO,
} neverbleed_offload;

inline size_t neverbleed_iobuf_size(neverbleed_iobuf_t *buf) {
  return buf->end - buf->start;
}

#ifdef __cplusplus
}
#endif

#endif /* NEVERBLEED_H */
