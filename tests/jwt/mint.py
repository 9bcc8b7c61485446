#!/usr/bin/env python3
"""Mints keys and tokens for the `validate-jwt` end-to-end tests.

The tokens come from implementations independent of the gateway's own:
PyJWT (`import jwt`) signs JWS, jwcrypto encrypts JWE, and `cryptography`
generates the keys. A token the gateway accepts was therefore made by
someone else's reading of RFC 7515/7516/7518.

Interface: one JSON object on stdin, one JSON object on stdout. A failure
is reported as `{"error": "..."}` with exit status 1.

Commands (the field "cmd"):

- `{"cmd": "keys"}`: a full key kit (see `keys()` below for its shape).
- `{"cmd": "sign", "alg": "RS256", "key": "<private PEM or base64 secret>",
  "claims": {...}, "headers": {...}}` -> `{"token": "..."}`. HS* keys are
  base64 (standard) and decoded to bytes first. `"alg": "none"` makes an
  unsigned token `header.payload.` by hand (no key needed).
  With `"key_text": "..."` instead of `"key"`, an HS* token is made by
  hand with the `hmac` module, using the text's UTF-8 bytes as the secret:
  the key-confusion attack (an RSA public PEM used as an HMAC secret),
  which PyJWT rightly refuses to make.
  With `"payload_text": "..."` instead of `"claims"`, those exact bytes
  are signed as the payload (PyJWT's JWS layer), e.g. a payload that is
  not JSON.
- `{"cmd": "encrypt", "inner": "<compact JWS or any text>", "alg": ...,
  "enc": ..., "key": "<public JWK JSON for RSA, or base64 secret>",
  "kid": optional, "zip": optional, "cty": optional (default "JWT")}` ->
  `{"token": "<compact JWE>"}`.
- `{"cmd": "batch", "requests": [ {...}, ... ]}` -> `{"results": [...]}`:
  several of the above in one process (Python starts slowly).

Run it with the Debian interpreter, which has the packages:
`echo '{"cmd":"keys"}' | /usr/bin/python3 tests/jwt/mint.py`.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt  # PyJWT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwcrypto import jwe, jwk
from jwcrypto.common import json_encode


# === encodings ===


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64std(data: bytes) -> str:
    """Base64 standard, padded."""
    return base64.b64encode(data).decode("ascii")


def int_b64url(n: int, length: int = 0) -> str:
    """A non-negative integer big-endian, at least `length` bytes."""
    size = max(length, (n.bit_length() + 7) // 8 or 1)
    return b64url(n.to_bytes(size, "big"))


def compact_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


# === keys ===


def private_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode("ascii")
    )


def rsa_jwk(key) -> dict:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "n": int_b64url(numbers.n), "e": int_b64url(numbers.e)}


def self_signed_cert(key, common_name: str) -> str:
    """A self-signed certificate for `key` (PEM), valid 2020..2099."""
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2099, 1, 1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def rsa_kit(bits: int = 2048, cert_name: str = "") -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    kit = {
        "private_pem": private_pem(key),
        "private_pem_pkcs1": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode("ascii"),
        "public_pem": public_pem(key),
        "jwk": rsa_jwk(key),
    }
    if cert_name:
        kit["cert_pem"] = self_signed_cert(key, cert_name)
    return kit


EC_CURVES = {
    "ec256": (ec.SECP256R1(), "P-256", 32),
    "ec384": (ec.SECP384R1(), "P-384", 48),
    "ec521": (ec.SECP521R1(), "P-521", 66),
}


def ec_kit(curve, crv: str, size: int) -> dict:
    key = ec.generate_private_key(curve)
    numbers = key.public_key().public_numbers()
    return {
        "private_pem": private_pem(key),
        "public_pem": public_pem(key),
        "jwk": {
            "kty": "EC",
            "crv": crv,
            "x": int_b64url(numbers.x, size),
            "y": int_b64url(numbers.y, size),
        },
    }


def ed25519_kit() -> dict:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "private_pem": private_pem(key),
        "public_pem": public_pem(key),
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)},
    }


def keys(_req: dict) -> dict:
    """The key kit. Asymmetric keys: `private_pem` (PKCS#8), `public_pem`
    (SPKI), `jwk` (public). `rsa` also has `cert_pem` (self-signed) and
    every RSA key `private_pem_pkcs1`. Symmetric keys are base64 standard
    text."""
    kit = {
        "rsa": rsa_kit(cert_name="jwt-test-signer"),
        "rsa2": rsa_kit(),
        "ed25519": ed25519_kit(),
        "hmac": b64std(os.urandom(64)),
        "rsa_enc": rsa_kit(),
        "aes128kw": b64std(os.urandom(16)),
        "aes256kw": b64std(os.urandom(32)),
        "dir128gcm": b64std(os.urandom(16)),
        "dir256gcm": b64std(os.urandom(32)),
        "dir_cbc": b64std(os.urandom(32)),
    }
    for name, (curve, crv, size) in EC_CURVES.items():
        kit[name] = ec_kit(curve, crv, size)
    return kit


# === JWS ===


def sign(req: dict) -> dict:
    alg = req["alg"]
    claims = req.get("claims", {})
    headers = dict(req.get("headers") or {})
    if alg == "none":
        header = {"alg": "none", "typ": "JWT"}
        header.update(headers)
        return {
            "token": b64url(compact_json(header))
            + "."
            + b64url(compact_json(claims))
            + "."
        }
    if "key_text" in req:
        return {"token": hmac_by_hand(alg, req["key_text"].encode("utf-8"), claims, headers)}
    key = req["key"]
    if alg.startswith("HS"):
        key = base64.b64decode(key)
    if "payload_text" in req:
        token = jwt.api_jws.encode(
            req["payload_text"].encode("utf-8"), key, algorithm=alg, headers=headers or None
        )
    else:
        token = jwt.encode(claims, key, algorithm=alg, headers=headers or None)
    if isinstance(token, bytes):  # PyJWT 1.x
        token = token.decode("ascii")
    return {"token": token}


HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hmac_by_hand(alg: str, secret: bytes, claims: dict, headers: dict) -> str:
    if alg not in HMAC_HASHES:
        raise ValueError(f"key_text is for HS256/384/512, not {alg}")
    header = {"alg": alg, "typ": "JWT"}
    header.update(headers)
    signing_input = b64url(compact_json(header)) + "." + b64url(compact_json(claims))
    mac = hmac.new(secret, signing_input.encode("ascii"), HMAC_HASHES[alg]).digest()
    return signing_input + "." + b64url(mac)


# === JWE ===

# Every algorithm jwcrypto knows, so that a test can also make tokens the
# gateway must refuse (RSA1_5, A192GCM, ...).
ALL_JWE_ALGS = [
    "RSA1_5", "RSA-OAEP", "RSA-OAEP-256",
    "A128KW", "A192KW", "A256KW", "dir",
    "A128GCMKW", "A192GCMKW", "A256GCMKW",
    "A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512",
    "A128GCM", "A192GCM", "A256GCM",
]


def encryption_key(alg: str, key: str) -> jwk.JWK:
    if alg.startswith("RSA"):
        doc = json.loads(key) if isinstance(key, str) else key
        return jwk.JWK(**doc)
    return jwk.JWK(kty="oct", k=b64url(base64.b64decode(key)))


def encrypt(req: dict) -> dict:
    alg, enc = req["alg"], req["enc"]
    protected = {"alg": alg, "enc": enc}
    cty = req.get("cty", "JWT")
    if cty:
        protected["cty"] = cty
    if req.get("kid"):
        protected["kid"] = req["kid"]
    if req.get("zip"):
        protected["zip"] = req["zip"]
    token = jwe.JWE(
        req["inner"].encode("utf-8"),
        protected=json_encode(protected),
        algs=ALL_JWE_ALGS,
    )
    token.add_recipient(encryption_key(alg, req["key"]))
    return {"token": token.serialize(compact=True)}


# === dispatch ===

COMMANDS = {"keys": keys, "sign": sign, "encrypt": encrypt}


def run(req: dict) -> dict:
    cmd = req.get("cmd")
    if cmd == "batch":
        return {"results": [run(r) for r in req["requests"]]}
    if cmd not in COMMANDS:
        raise ValueError(f"unknown cmd {cmd!r}; expected one of {sorted(COMMANDS)} or batch")
    return COMMANDS[cmd](req)


def main() -> int:
    try:
        result = run(json.load(sys.stdin))
    except Exception as e:  # reported to the test, which panics with it
        json.dump({"error": f"{type(e).__name__}: {e}"}, sys.stdout)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
