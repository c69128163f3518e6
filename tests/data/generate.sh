#!/usr/bin/env bash
# Regenerates the key and certificate files that the test suites read.
#
# Usage: tests/data/generate.sh
# Needs the openssl command line tool, version 3.0 or later. Every run
# creates new random keys, so commit the generated files together.
#
# Files, by base name <name> in rsa2048 rsa3072 rsa4096 rsa8192 p256 p384
# p521 ed25519 ed448:
#   <name>-key.pem    unencrypted PKCS#8 PEM private key
#   <name>-cert.pem   self-signed certificate, CN=localhost, subjectAltName
#                     DNS:localhost and IP:127.0.0.1, valid for 10 years
# Variants of the rsa2048, p256 and ed25519 keys for the file format tests:
#   rsa2048-pkcs1.pem, rsa2048-pkcs1.der     PKCS#1 RSAPrivateKey
#   p256-sec1.pem, p256-sec1.der             SEC1 ECPrivateKey
#   <name>-pkcs8.der                         unencrypted PKCS#8 DER
#   <name>-pkcs8-enc.pem, <name>-pkcs8-enc.der
#                                            encrypted PKCS#8 (PBES2, AES-256)
#   rsa2048-trad-enc.pem, p256-trad-enc.pem  traditional encrypted PEM
#                                            (Proc-Type/DEK-Info, AES-256)
#   rsa2048-cert-key.pem                     certificate, then the key
#   p256-crlf.pem                            PKCS#8 PEM with CRLF line ends
# Keys of types that keycell does not serve:
#   dsa2048-key.pem, x25519-key.pem
# The encrypted keys use the first line of passphrase.txt as passphrase.
set -euo pipefail

cd "$(dirname "$0")"

readonly PASSPHRASE_FILE=passphrase.txt
printf 'keycell test passphrase\n' >"${PASSPHRASE_FILE}"

# make_cert KEY CERT KEY_USAGE: writes a self-signed certificate for KEY.
# RSA certificates allow keyEncipherment for TLS 1.2 RSA key exchange.
make_cert() {
  openssl req -x509 -new -key "$1" -out "$2" -days 3650 \
    -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "keyUsage=critical,$3"
}

for bits in 2048 3072 4096 8192; do
  openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${bits}" \
    -out "rsa${bits}-key.pem"
  make_cert "rsa${bits}-key.pem" "rsa${bits}-cert.pem" \
    digitalSignature,keyEncipherment
done

for curve in 256 384 521; do
  openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:P-${curve}" \
    -out "p${curve}-key.pem"
  make_cert "p${curve}-key.pem" "p${curve}-cert.pem" digitalSignature
done

for algorithm in ed25519 ed448; do
  openssl genpkey -algorithm "${algorithm}" -out "${algorithm}-key.pem"
  make_cert "${algorithm}-key.pem" "${algorithm}-cert.pem" \
    digitalSignature
done

# Unencrypted variants in the traditional and the DER encodings. With
# OpenSSL 3.0, "pkey -outform DER" writes the traditional form (PKCS#1, SEC1)
# and "pkcs8 -topk8 -nocrypt" writes PKCS#8.
openssl pkey -in rsa2048-key.pem -traditional -out rsa2048-pkcs1.pem
openssl pkey -in rsa2048-key.pem -outform DER -out rsa2048-pkcs1.der
openssl pkey -in p256-key.pem -traditional -out p256-sec1.pem
openssl pkey -in p256-key.pem -outform DER -out p256-sec1.der
for name in rsa2048 p256 ed25519; do
  openssl pkcs8 -topk8 -nocrypt -in "${name}-key.pem" -outform DER \
    -out "${name}-pkcs8.der"
done

# Encrypted variants.
for name in rsa2048 p256; do
  for form in PEM DER; do
    extension=$(tr '[:upper:]' '[:lower:]' <<<"${form}")
    openssl pkcs8 -topk8 -in "${name}-key.pem" -v2 aes-256-cbc \
      -passout "file:${PASSPHRASE_FILE}" -outform "${form}" \
      -out "${name}-pkcs8-enc.${extension}"
  done
  openssl pkey -in "${name}-key.pem" -traditional -aes256 \
    -passout "file:${PASSPHRASE_FILE}" -out "${name}-trad-enc.pem"
done

# A PEM file with the certificate before the key, as some servers keep them.
cat rsa2048-cert.pem rsa2048-key.pem >rsa2048-cert-key.pem

sed 's/$/\r/' p256-key.pem >p256-crlf.pem

openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:2048 \
  -out dsa2048-params.pem
openssl genpkey -paramfile dsa2048-params.pem -out dsa2048-key.pem
rm dsa2048-params.pem
openssl genpkey -algorithm X25519 -out x25519-key.pem
