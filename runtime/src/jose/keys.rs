//! Signature verification keys (JWS): imported once from a JWK, PEM,
//! base64 secret or RSA components, parsed into aws-lc-rs keys at import,
//! and checked per token.

use std::sync::OnceLock;

use aws_lc_rs::{hmac, signature};

use super::{b64url, der, Algorithm, VerifyError};

/// The shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash
/// size; 256 bits for the smallest, HS256).
const MIN_HMAC_BYTES: usize = 32;

/// An EC curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// P-256.
    P256,
    /// P-384.
    P384,
    /// P-521.
    P521,
}

enum Material {
    /// An HMAC secret; a key per hash, built at import.
    Hmac {
        len: usize,
        keys: Box<[hmac::Key; 3]>,
    },
    /// RSA: PKCS#1 or SPKI DER; each of the six algorithms parses it on
    /// first use.
    Rsa {
        der: Vec<u8>,
        parsed: Box<[OnceLock<Option<signature::ParsedPublicKey>>; 6]>,
    },
    Ec {
        curve: Curve,
        parsed: signature::ParsedPublicKey,
    },
    Ed25519(signature::ParsedPublicKey),
}

/// A verification key.
pub struct VerifyKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it named one: the only algorithm allowed.
    only_alg: Option<String>,
    /// False when the JWK's `use` or `key_ops` excludes verification.
    for_signatures: bool,
    material: Material,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("type", &self.kind())
            .finish()
    }
}

const RSA_ALGS: [&signature::RsaParameters; 6] = [
    &signature::RSA_PKCS1_2048_8192_SHA256,
    &signature::RSA_PKCS1_2048_8192_SHA384,
    &signature::RSA_PKCS1_2048_8192_SHA512,
    &signature::RSA_PSS_2048_8192_SHA256,
    &signature::RSA_PSS_2048_8192_SHA384,
    &signature::RSA_PSS_2048_8192_SHA512,
];

impl VerifyKey {
    /// The key's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// A word for the key type, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.material {
            Material::Hmac { .. } => "symmetric",
            Material::Rsa { .. } => "RSA",
            Material::Ec {
                curve: Curve::P256, ..
            } => "EC P-256",
            Material::Ec {
                curve: Curve::P384, ..
            } => "EC P-384",
            Material::Ec {
                curve: Curve::P521, ..
            } => "EC P-521",
            Material::Ed25519(_) => "Ed25519",
        }
    }

    /// Whether this key may verify `alg` at all (type, curve, size and the
    /// JWK's `alg`/`use`/`key_ops`).
    pub fn permits(&self, alg: Algorithm) -> bool {
        if !self.for_signatures {
            return false;
        }
        if let Some(only) = &self.only_alg {
            if only != alg.name() {
                return false;
            }
        }
        match (&self.material, alg) {
            (
                Material::Hmac { len, .. },
                Algorithm::Hs256 | Algorithm::Hs384 | Algorithm::Hs512,
            ) => *len >= alg.hmac_len(),
            (
                Material::Rsa { .. },
                Algorithm::Rs256
                | Algorithm::Rs384
                | Algorithm::Rs512
                | Algorithm::Ps256
                | Algorithm::Ps384
                | Algorithm::Ps512,
            ) => true,
            (Material::Ec { curve, .. }, Algorithm::Es256) => *curve == Curve::P256,
            (Material::Ec { curve, .. }, Algorithm::Es384) => *curve == Curve::P384,
            (Material::Ec { curve, .. }, Algorithm::Es512) => *curve == Curve::P521,
            (Material::Ed25519(_), Algorithm::EdDsa) => true,
            _ => false,
        }
    }

    /// Verifies `sig` over `input`.
    ///
    /// # Errors
    ///
    /// [`VerifyError::KeyForbidsAlgorithm`] when [`Self::permits`] says no,
    /// [`VerifyError::BadSignature`] when the signature does not verify.
    pub fn verify(&self, alg: Algorithm, input: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        if !self.permits(alg) {
            return Err(VerifyError::KeyForbidsAlgorithm);
        }
        let ok = match &self.material {
            Material::Hmac { keys, .. } => {
                let k = match alg {
                    Algorithm::Hs256 => &keys[0],
                    Algorithm::Hs384 => &keys[1],
                    _ => &keys[2],
                };
                hmac::verify(k, input, sig).is_ok()
            }
            Material::Rsa { der, parsed } => {
                let i = match alg {
                    Algorithm::Rs256 => 0,
                    Algorithm::Rs384 => 1,
                    Algorithm::Rs512 => 2,
                    Algorithm::Ps256 => 3,
                    Algorithm::Ps384 => 4,
                    _ => 5,
                };
                parsed[i]
                    .get_or_init(|| signature::ParsedPublicKey::new(RSA_ALGS[i], der).ok())
                    .as_ref()
                    .is_some_and(|k| k.verify_sig(input, sig).is_ok())
            }
            Material::Ec { parsed, .. } | Material::Ed25519(parsed) => {
                parsed.verify_sig(input, sig).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    /// A symmetric key from its bytes.
    ///
    /// # Errors
    ///
    /// A key shorter than 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_HMAC_BYTES {
            return Err(format!(
                "a symmetric key must be at least {MIN_HMAC_BYTES} bytes (256 bits, RFC 7518 §3.2); this one is {}",
                secret.len()
            ));
        }
        Ok(VerifyKey {
            kid: None,
            only_alg: None,
            for_signatures: true,
            material: Material::Hmac {
                len: secret.len(),
                keys: Box::new([
                    hmac::Key::new(hmac::HMAC_SHA256, secret),
                    hmac::Key::new(hmac::HMAC_SHA384, secret),
                    hmac::Key::new(hmac::HMAC_SHA512, secret),
                ]),
            },
        })
    }

    /// A symmetric key given as base64 text.
    ///
    /// # Errors
    ///
    /// Not base64, or too short.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = super::b64_any(text).ok_or("the key is not base64 text")?;
        Self::from_secret(&bytes)
    }

    /// An RSA public key from base64url `n` and `e`.
    ///
    /// # Errors
    ///
    /// Bad base64url, or a modulus under 2048 bits.
    pub fn from_rsa_components(n: &str, e: &str) -> Result<Self, String> {
        let n = b64url(n).ok_or("`n` is not base64url")?;
        let e = b64url(e).ok_or("`e` is not base64url")?;
        Self::rsa(der::rsa_public_key(&n, &e), modulus_bits(&n))
    }

    fn rsa(der: Vec<u8>, bits: usize) -> Result<Self, String> {
        if bits < 2048 {
            return Err(format!(
                "an RSA key must have at least 2048 bits; this one has {bits}"
            ));
        }
        if bits > 8192 {
            return Err(format!(
                "an RSA key may have at most 8192 bits; this one has {bits}"
            ));
        }
        // Parse once now, so a malformed key is an import error.
        let first = signature::ParsedPublicKey::new(RSA_ALGS[0], &der)
            .map_err(|e| format!("not a usable RSA public key: {e}"))?;
        let parsed: Box<[OnceLock<Option<signature::ParsedPublicKey>>; 6]> = Box::default();
        let _ = parsed[0].set(Some(first));
        Ok(VerifyKey {
            kid: None,
            only_alg: None,
            for_signatures: true,
            material: Material::Rsa { der, parsed },
        })
    }

    fn ec(curve: Curve, bytes: &[u8]) -> Result<Self, String> {
        let alg = match curve {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        };
        let parsed = signature::ParsedPublicKey::new(alg, bytes)
            .map_err(|e| format!("not a usable EC public key: {e}"))?;
        Ok(VerifyKey {
            kid: None,
            only_alg: None,
            for_signatures: true,
            material: Material::Ec { curve, parsed },
        })
    }

    fn ed25519(bytes: &[u8]) -> Result<Self, String> {
        let parsed = signature::ParsedPublicKey::new(&signature::ED25519, bytes)
            .map_err(|e| format!("not a usable Ed25519 public key: {e}"))?;
        Ok(VerifyKey {
            kid: None,
            only_alg: None,
            for_signatures: true,
            material: Material::Ed25519(parsed),
        })
    }

    /// A key from a JWK.
    ///
    /// # Errors
    ///
    /// Why the JWK cannot be used, naming the member.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, String> {
        let obj = jwk.as_object().ok_or("a JWK must be a JSON object")?;
        let text = |k: &str| -> Result<&str, String> {
            obj.get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("the JWK has no `{k}`"))
        };
        let bytes = |k: &str| -> Result<Vec<u8>, String> {
            b64url(text(k)?).ok_or_else(|| format!("the JWK's `{k}` is not base64url"))
        };
        let kty = text("kty")?;
        let mut key = match kty {
            "oct" => Self::from_secret(&bytes("k")?)?,
            "RSA" => {
                let n = bytes("n")?;
                let e = bytes("e")?;
                Self::rsa(der::rsa_public_key(&n, &e), modulus_bits(&n))?
            }
            "EC" => {
                let curve = match text("crv")? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    "P-521" => Curve::P521,
                    other => {
                        return Err(format!(
                            "the JWK's curve `{other}` is not supported (P-256, P-384, P-521)"
                        ))
                    }
                };
                let size = match curve {
                    Curve::P256 => 32,
                    Curve::P384 => 48,
                    Curve::P521 => 66,
                };
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != size || y.len() != size {
                    return Err(format!(
                        "the JWK's `x` and `y` must be {size} bytes each for {}",
                        text("crv")?
                    ));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Self::ec(curve, &point)?
            }
            "OKP" => match text("crv")? {
                "Ed25519" => Self::ed25519(&bytes("x")?)?,
                other => {
                    return Err(format!(
                        "the JWK's curve `{other}` is not supported (Ed25519)"
                    ))
                }
            },
            other => {
                return Err(format!(
                    "the JWK's key type `{other}` is not supported (oct, RSA, EC, OKP)"
                ))
            }
        };
        key.kid = obj.get("kid").and_then(|v| v.as_str()).map(str::to_string);
        if let Some(alg) = obj.get("alg").and_then(|v| v.as_str()) {
            let Some(a) = Algorithm::from_name(alg) else {
                return Err(format!(
                    "the JWK's `alg` `{alg}` is not a supported signature algorithm"
                ));
            };
            if !key.permits(a) {
                return Err(format!(
                    "the JWK's `alg` `{alg}` does not fit its {} key",
                    key.kind()
                ));
            }
            key.only_alg = Some(alg.to_string());
        }
        if let Some(u) = obj.get("use").and_then(|v| v.as_str()) {
            key.for_signatures = u == "sig";
        }
        if let Some(ops) = obj.get("key_ops").and_then(|v| v.as_array()) {
            key.for_signatures &= ops.iter().any(|o| o.as_str() == Some("verify"));
        }
        Ok(key)
    }

    /// A key from PEM: a public key or a certificate.
    ///
    /// # Errors
    ///
    /// Not PEM, or a key of an unsupported type or size.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::{PemObject, SectionKind};
        let pem = pem.trim();
        // PKCS#1 `RSA PUBLIC KEY`, which the PEM reader does not know.
        if let Some(body) = pem
            .strip_prefix("-----BEGIN RSA PUBLIC KEY-----")
            .and_then(|b| b.trim_end().strip_suffix("-----END RSA PUBLIC KEY-----"))
        {
            let der = super::b64_any(body).ok_or("the RSA PUBLIC KEY block is not base64")?;
            let bits = der::rsa_modulus_bits(&der).ok_or("the RSA PUBLIC KEY cannot be parsed")?;
            return Self::rsa(der, bits);
        }
        let (kind, der) = <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("not PEM: {e:?}"))?;
        let spki = match kind {
            SectionKind::PublicKey => der,
            SectionKind::Certificate => {
                let (_, cert) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
                cert.public_key().raw.to_vec()
            }
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(
                    "this is a private key: give the public key (or the certificate) to verify tokens"
                        .into(),
                )
            }
            other => return Err(format!("a {other:?} PEM block is not a public key or certificate")),
        };
        Self::from_spki(&spki)
    }

    fn from_spki(spki: &[u8]) -> Result<Self, String> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey;
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| format!("the public key cannot be parsed: {e}"))?;
        match info.parsed() {
            Ok(PublicKey::RSA(rsa)) => Self::rsa(spki.to_vec(), rsa.key_size()),
            Ok(PublicKey::EC(point)) => {
                let oid = info
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                let curve = match oid.as_str() {
                    "1.2.840.10045.3.1.7" => Curve::P256,
                    "1.3.132.0.34" => Curve::P384,
                    "1.3.132.0.35" => Curve::P521,
                    other => {
                        return Err(format!(
                            "the EC curve {other} is not supported (P-256, P-384, P-521)"
                        ))
                    }
                };
                Self::ec(curve, point.data())
            }
            _ if info.algorithm.algorithm.to_id_string() == "1.3.101.112" => {
                Self::ed25519(&info.subject_public_key.data)
            }
            _ => Err(format!(
                "the public key's algorithm {} is not supported (RSA, EC, Ed25519)",
                info.algorithm.algorithm.to_id_string()
            )),
        }
    }
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_and_small_rsa_are_refused() {
        assert!(VerifyKey::from_secret(&[1; 31]).is_err());
        let k = VerifyKey::from_secret(&[1; 32]).unwrap();
        assert!(k.permits(Algorithm::Hs256));
        assert!(!k.permits(Algorithm::Hs384), "HS384 needs 48 bytes");
        assert!(!k.permits(Algorithm::Rs256));
        let e = VerifyKey::from_rsa_components("AQAB", "AQAB").unwrap_err();
        assert!(e.contains("2048"), "{e}");
    }

    #[test]
    fn hmac_verifies_and_refuses() {
        let k = VerifyKey::from_secret(&[7; 64]).unwrap();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, &[7; 64]), b"a.b");
        assert_eq!(k.verify(Algorithm::Hs384, b"a.b", tag.as_ref()), Ok(()));
        assert_eq!(
            k.verify(Algorithm::Hs384, b"a.c", tag.as_ref()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            k.verify(Algorithm::Es256, b"a.b", tag.as_ref()),
            Err(VerifyError::KeyForbidsAlgorithm)
        );
    }

    #[test]
    fn jwk_alg_and_use_are_honoured() {
        let jwk =
            serde_json::json!({"kty": "oct", "k": b64e(&[3; 64]), "alg": "HS512", "kid": "x"});
        let k = VerifyKey::from_jwk(&jwk).unwrap();
        assert_eq!(k.kid(), Some("x"));
        assert!(k.permits(Algorithm::Hs512));
        assert!(!k.permits(Algorithm::Hs256));
        let jwk = serde_json::json!({"kty": "oct", "k": b64e(&[3; 64]), "use": "enc"});
        assert!(!VerifyKey::from_jwk(&jwk).unwrap().permits(Algorithm::Hs256));
        let jwk = serde_json::json!({"kty": "oct", "k": b64e(&[3; 64]), "alg": "RS256"});
        assert!(VerifyKey::from_jwk(&jwk).is_err());
    }

    fn b64e(b: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }
}
