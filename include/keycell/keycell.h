/*
 * keycell: private keys of a TLS server kept in a separate process.
 *
 * A server calls keycell_start() once, early, which forks the cell: a small
 * process that reads key files and performs every private-key operation.
 * The server then loads each key through keycell_use_private_key_file() or
 * keycell_load_private_key() instead of SSL_CTX_use_PrivateKey_file(). The
 * server receives only the public key and an id; the key file is opened by
 * the cell, never by the server.
 *
 * A loaded key is an ordinary EVP_PKEY implemented by the built-in OpenSSL
 * provider "keycell-embedded". It works wherever OpenSSL 3 takes a private key:
 * TLS 1.2 and 1.3 servers and clients, X.509 and CMS signing.
 *
 * Errors: every function that can fail takes |err| and |err_len| and, on
 * failure, writes a NUL-terminated message there (truncated to fit) that
 * names the file or value and the reason, OpenSSL's reason included. |err|
 * may be NULL. The library never prints.
 */
#ifndef KEYCELL_KEYCELL_H
#define KEYCELL_KEYCELL_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KEYCELL_EXPORT __attribute__((visibility("default")))
#else
#define KEYCELL_EXPORT
#endif

/* KEYCELL_ERROR_SIZE is a buffer size that fits every message keycell
 * writes without truncation: a message names at most one path, which the
 * cell accepts up to 4096 bytes long, plus the reason. A smaller buffer
 * gets the message truncated to fit. */
#define KEYCELL_ERROR_SIZE 4608

/* keycell is a handle to one running cell process. */
typedef struct keycell keycell;

/* keycell_options configures keycell_start(). */
typedef struct keycell_options keycell_options;

/* keycell_key_options configures how one key is loaded. */
typedef struct keycell_key_options keycell_key_options;

/* Options for starting a cell. */

/* keycell_options_new returns a new options object with the defaults, or
 * NULL if memory runs out. The caller owns it and frees it with
 * keycell_options_free(). */
KEYCELL_EXPORT keycell_options *keycell_options_new(void);

/* keycell_options_free frees |options|. NULL is allowed. */
KEYCELL_EXPORT void keycell_options_free(keycell_options *options);

/* keycell_options_set_workers sets the number of threads in the cell that
 * perform key operations. Zero, the default, means one per online CPU.
 * Returns 1 on success and 0 if |workers| is above 1024. */
KEYCELL_EXPORT int keycell_options_set_workers(keycell_options *options,
                                               unsigned workers);

/* keycell_options_set_timeout sets how long, in milliseconds, a key operation
 * waits for the cell's reply before it fails. Zero disables the limit. The
 * default is 30000. A cell that has exited is detected at once whatever this
 * value is; the timeout covers a cell that is alive but does not reply.
 * Returns 1. */
KEYCELL_EXPORT int keycell_options_set_timeout(keycell_options *options,
                                               unsigned milliseconds);

/* Starting and stopping the cell. */

/* keycell_start forks a new cell process and returns a handle to it, or NULL
 * on failure with a message in |err|. |options| may be NULL for the
 * defaults; it is not retained.
 *
 * Call it before the server starts threads and before it drops privileges:
 * the cell inherits the credentials of the caller and must be able to read
 * the key files. The cell closes every descriptor it inherited, so
 * listening sockets and open files do not leak into it.
 *
 * The cell exits when every process holding the handle's descriptors has
 * closed them: when the server exits or is killed, including any children it
 * forked after loading keys. It also exits when keycell_free() is called. */
KEYCELL_EXPORT keycell *keycell_start(const keycell_options *options, char *err,
                                      size_t err_len);

/* keycell_free stops the cell and frees |cell|. Keys loaded from it remain
 * valid EVP_PKEY objects, but their private-key operations fail from then on.
 * NULL is allowed. Call it once, after the threads that use the cell's keys
 * have stopped. In a child process forked after keycell_start(), it releases
 * the child's descriptors without stopping the cell that the parent uses. */
KEYCELL_EXPORT void keycell_free(keycell *cell);

/* keycell_cell_pid returns the process id of the cell, for monitoring. */
KEYCELL_EXPORT pid_t keycell_cell_pid(const keycell *cell);

/* keycell_key_memory_locked returns 1 if the cell keeps private keys in
 * memory that is locked in RAM, so never written to swap, and 0 otherwise.
 * The cell keeps private keys in OpenSSL's secure heap: a 1 MiB arena that
 * is excluded from core dumps and locked with mlock(2). Locking fails when
 * the cell's RLIMIT_MEMLOCK, raised by the arena size up to its hard limit,
 * is too low and the process lacks CAP_IPC_LOCK. The cell then works as
 * before, with swappable key memory. keycell_start() waits for the cell to
 * report this, so the result never changes. NULL returns 0. A server should log
 * a 0 once at start, because the library never prints. */
KEYCELL_EXPORT int keycell_key_memory_locked(const keycell *cell);

/* keycell_landlock_abi returns the version of the Landlock ABI that confines
 * the cell, or 0 when the kernel offers no Landlock and the cell runs
 * without it. Landlock denies the cell every change to the filesystem
 * (writing, creating, removing, renaming and truncating files and
 * directories, and executing files) and, from ABI 4, binding and
 * connecting TCP sockets, on top of its seccomp filter. keycell_start()
 * waits for the cell to report this, so the value never changes. NULL
 * returns 0. */
KEYCELL_EXPORT int keycell_landlock_abi(const keycell *cell);

/* keycell_drop_privileges switches the cell to |user|: its group, its
 * supplementary groups and its uid. Call it once every key is loaded, usually
 * just before the server drops its own privileges; keys loaded afterwards are
 * opened with the new credentials. Returns 1 on success and 0 on failure
 * (unknown user, the cell lacks the permission) with a message in |err|. */
KEYCELL_EXPORT int keycell_drop_privileges(keycell *cell, const char *user,
                                           char *err, size_t err_len);

/* Options for loading a key. */

/* keycell_key_options_new returns a new key options object with the
 * defaults (no passphrase; signing with every digest and RSA padding that
 * keycell supports; RSA decryption not served), or NULL if memory runs out.
 * Free it with keycell_key_options_free().
 *
 * The options after the passphrase ones form the key's policy. The cell
 * stores it with the key and rejects every request that it does not allow
 * with a message that names the key, the operation and the rejected value,
 * so a compromised server cannot widen it for a loaded key. Call
 * keycell_seal() once every key is loaded, so that it cannot load the same
 * file again with a wider policy either. */
KEYCELL_EXPORT keycell_key_options *keycell_key_options_new(void);

/* keycell_key_options_free frees |options|. NULL is allowed. */
KEYCELL_EXPORT void keycell_key_options_free(keycell_key_options *options);

/* keycell_key_options_set_passphrase_cb sets a callback that supplies the
 * passphrase of an encrypted key, in the form of OpenSSL's pem_password_cb:
 * it writes at most |size| bytes into |buf| and returns their number, or a
 * negative value to give up. It runs in the server process, on the thread
 * that loads the key, and only when the cell reports that the key file is
 * encrypted. The passphrase travels to the cell and is wiped from the
 * server's memory once sent. Returns 1. */
KEYCELL_EXPORT int keycell_key_options_set_passphrase_cb(
    keycell_key_options *options, pem_password_cb *callback, void *userdata);

/* keycell_key_options_set_passphrase_file makes the cell read the passphrase
 * of an encrypted key from the first line of the file at |path|. The server
 * never opens that file. Returns 1 on success and 0 if |path| is NULL or
 * empty. */
KEYCELL_EXPORT int keycell_key_options_set_passphrase_file(
    keycell_key_options *options, const char *path);

/* keycell_key_options_allow_rsa_decryption makes the cell serve RSA
 * decryption with the key when |allow| is nonzero. TLS 1.2 RSA key exchange
 * (cipher suites named TLS_RSA_WITH_*) needs it. It is off by default
 * because a decryption service is a padding oracle risk. Other key types
 * ignore it. Returns 1. */
KEYCELL_EXPORT int keycell_key_options_allow_rsa_decryption(
    keycell_key_options *options, int allow);

/* keycell_key_options_allow_signing makes the cell sign with the key when
 * |allow| is nonzero, the default. When it is zero the cell rejects every
 * signature, for an RSA key that serves only decryption. A key that allows
 * neither signing nor decryption fails to load. Returns 1. */
KEYCELL_EXPORT int keycell_key_options_allow_signing(
    keycell_key_options *options, int allow);

/* keycell_key_options_set_digests limits the digests the key signs with to
 * |digests|, a list of OpenSSL digest names or aliases separated by colons
 * or spaces, case-insensitive, such as "SHA256:SHA384". The same list
 * limits the MGF1 digest of PSS signatures. Known names: MD5, SHA1,
 * MD5-SHA1, SHA224, SHA256, SHA384, SHA512, SHA512-224, SHA512-256,
 * SHA3-224, SHA3-256, SHA3-384, SHA3-512, RIPEMD160, SM3, MD4, MD2, MDC2,
 * and "none", which allows a signature over input that names no digest
 * (EVP_PKEY_sign() without a digest set). The default allows all of them.
 *
 * With "none" a client can wrap any hash in a DigestInfo itself and get it
 * signed, so a list that should restrict digests leaves it out. The list
 * does not apply to Ed25519 and Ed448, whose hash is fixed. Returns 1 on
 * success and 0 for an unknown name or an empty list, with a message in
 * |err|. */
KEYCELL_EXPORT int keycell_key_options_set_digests(keycell_key_options *options,
                                                   const char *digests,
                                                   char *err, size_t err_len);

/* Bits for keycell_key_options_set_rsa_paddings(). */
#define KEYCELL_RSA_PADDING_PKCS1 0x1u /* PKCS#1 v1.5 signatures */
#define KEYCELL_RSA_PADDING_PSS 0x2u   /* RSASSA-PSS signatures */

/* keycell_key_options_set_rsa_paddings limits the paddings of RSA
 * signatures to |paddings|, a bitwise OR of KEYCELL_RSA_PADDING_PKCS1 and
 * KEYCELL_RSA_PADDING_PSS; the default allows both. TLS 1.3 signs with PSS
 * only, while TLS 1.2 clients may ask for either. Other key types ignore
 * it. Returns 1 on success and 0 if |paddings| is 0 or has other bits set;
 * to refuse every signature use keycell_key_options_allow_signing(). */
KEYCELL_EXPORT int keycell_key_options_set_rsa_paddings(
    keycell_key_options *options, unsigned paddings);

/* Loading keys. */

/* KEYCELL_MAX_KEYS is the maximum number of keys loaded in one cell at once.
 * Each keycell_load_private_key() adds one, and freeing the last reference
 * to the EVP_PKEY releases it. */
#define KEYCELL_MAX_KEYS 4096

/* keycell_load_private_key makes the cell read the private key at |path| and
 * returns an EVP_PKEY for it whose private operations run in the cell, or
 * NULL on failure with a message in |err|. The caller owns the result and
 * frees it with EVP_PKEY_free().
 *
 * Key types: RSA (1024 to 16384 bits), EC keys on P-256, P-384 and P-521,
 * Ed25519 and Ed448. Files: PEM or DER; PKCS#1, SEC1 or PKCS#8; encrypted
 * PKCS#8 or traditional encrypted PEM with a passphrase from |options|; a
 * PEM that also contains certificates. |options| may be NULL.
 *
 * It may be called from any thread while the cell runs, until
 * keycell_seal(). It fails when the cell already contains KEYCELL_MAX_KEYS
 * keys. */
KEYCELL_EXPORT EVP_PKEY *keycell_load_private_key(
    keycell *cell, const char *path, const keycell_key_options *options,
    char *err, size_t err_len);

/* keycell_use_private_key_file replaces SSL_CTX_use_PrivateKey_file(): it
 * loads the key at |path| as keycell_load_private_key() does and installs it
 * in |ctx|. When |ctx| already contains a certificate of the same key
 * type, the key must match it. Returns 1 on success and 0 on failure with a
 * message in |err|. */
KEYCELL_EXPORT int keycell_use_private_key_file(
    keycell *cell, SSL_CTX *ctx, const char *path,
    const keycell_key_options *options, char *err, size_t err_len);

/* keycell_seal makes the cell reject every later load of a key, from this
 * process or any other that shares the cell, with a message that the cell
 * is sealed. The cell then opens no file any more, so a server taken over
 * later can neither load a key file again with a wider policy, such as RSA
 * decryption allowed, nor read other files through the cell. Keys already
 * loaded keep working, and the seal cannot be undone.
 *
 * Call it once every key is loaded and before the server handles its
 * first connection, usually next to keycell_drop_privileges(). Returns 1
 * on success, also when the cell was already sealed, and 0 on failure with
 * a message in |err|. */
KEYCELL_EXPORT int keycell_seal(keycell *cell, char *err, size_t err_len);

/* keycell_is_cell_key returns 1 if |pkey| is a key served by a keycell cell
 * and 0 otherwise. */
KEYCELL_EXPORT int keycell_is_cell_key(const EVP_PKEY *pkey);

/* Operations for event loops that do not use OpenSSL's ASYNC jobs.
 *
 * With SSL_MODE_ASYNC, OpenSSL pauses a handshake's ASYNC_JOB while the cell
 * works and nothing below is needed. A loop that makes signatures itself
 * starts an operation, waits until its descriptor is readable, and finishes
 * it. Operations started on one thread travel on that thread's connection
 * to the cell, many at a time, and complete in any order. */

/* keycell_operation is one signature or decryption in progress. */
typedef struct keycell_operation keycell_operation;

/* keycell_sign_start starts signing |message| with the cell key |pkey| and
 * returns the operation, or NULL on failure with a message in |err|.
 * |digest| names the digest for RSA and ECDSA keys ("SHA256", "SHA384",
 * ...); the message is hashed in the calling process. For Ed25519 and Ed448
 * |digest| must be NULL and the whole message goes to the cell.
 * |rsa_padding| is 0 or RSA_PKCS1_PADDING for PKCS#1 v1.5 and
 * RSA_PKCS1_PSS_PADDING for PSS with a salt as long as the digest, as TLS
 * uses; it must be 0 for other keys. Free the result with
 * keycell_operation_free(). */
KEYCELL_EXPORT keycell_operation *keycell_sign_start(
    EVP_PKEY *pkey, const char *digest, int rsa_padding,
    const unsigned char *message, size_t message_len, char *err,
    size_t err_len);

/* keycell_decrypt_start starts an RSA decryption of |ciphertext| with the
 * cell key |pkey|, which must have been loaded with RSA decryption allowed.
 * |rsa_padding| is RSA_PKCS1_PADDING or RSA_PKCS1_OAEP_PADDING (SHA-1 for
 * both the OAEP digest and MGF1, no label). Returns the operation, or NULL
 * on failure with a message in |err|. */
KEYCELL_EXPORT keycell_operation *keycell_decrypt_start(
    EVP_PKEY *pkey, int rsa_padding, const unsigned char *ciphertext,
    size_t ciphertext_len, char *err, size_t err_len);

/* keycell_operation_fd returns a descriptor that becomes readable when
 * |operation| has completed, successfully or not. It belongs to the
 * operation and stays valid until keycell_operation_free(). */
KEYCELL_EXPORT int keycell_operation_fd(const keycell_operation *operation);

/* keycell_operation_finish collects the result of |operation|. |*out_len|
 * is the size of |out| on entry and the length of the result on return; a
 * signature needs at most EVP_PKEY_get_size() bytes. Returns 1 on success,
 * 0 on failure with a message in |err| (the cell's error, the cell process
 * not running, no reply within the timeout of keycell_options_set_timeout(),
 * |out| too small), and -1 if the operation has not completed yet, in which
 * case nothing was written. */
KEYCELL_EXPORT int keycell_operation_finish(keycell_operation *operation,
                                            unsigned char *out, size_t *out_len,
                                            char *err, size_t err_len);

/* keycell_operation_free frees |operation|, complete or not; a reply that
 * arrives later is discarded. NULL is allowed. */
KEYCELL_EXPORT void keycell_operation_free(keycell_operation *operation);

#ifdef __cplusplus
}
#endif

#endif /* KEYCELL_KEYCELL_H */
