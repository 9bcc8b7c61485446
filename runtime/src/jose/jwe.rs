//! JWE (RFC 7516) compact tokens decrypted in the host: key management
//! `RSA-OAEP`, `RSA-OAEP-256`, `A128KW`, `A256KW` and `dir`; content
//! encryption `A128GCM`, `A256GCM` and `A128CBC-HS256` (RFC 7518 §5.2).
//!
//! A failed key unwrap does not end the decryption: it goes on with a
//! random content key, so a wrong key, a forged encrypted key and a
//! tampered ciphertext all fail at the same place with the same message
//! (RFC 7516 §11.5: no oracle on the key unwrap).

use aws_lc_rs::{aead, cipher, constant_time, hmac, key_wrap, rand, rsa};

use super::b64url;

/// The error for every cryptographic failure.
const FAILED: &str = "the token cannot be decrypted with this key";

enum Kind {
    Rsa(rsa::OaepPrivateDecryptingKey),
    Symmetric(Vec<u8>),
}

/// A decryption key.
pub struct DecryptKey {
    kid: Option<String>,
    kind: Kind,
}

impl std::fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl DecryptKey {
    /// The key's `kid`, from its JWK.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// A symmetric key (a key-wrapping key, or a `dir` content key).
    ///
    /// # Errors
    ///
    /// A length no supported algorithm uses.
    pub fn symmetric(bytes: Vec<u8>) -> Result<Self, String> {
        if ![16, 32].contains(&bytes.len()) {
            return Err(format!(
                "a symmetric decryption key is 16 bytes (A128KW, dir with A128GCM) or 32 (A256KW, dir with A256GCM or A128CBC-HS256); this one is {}",
                bytes.len()
            ));
        }
        Ok(DecryptKey {
            kid: None,
            kind: Kind::Symmetric(bytes),
        })
    }

    /// From base64 text.
    ///
    /// # Errors
    ///
    /// Not base64, or a bad length.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        Self::symmetric(super::b64_any(text).ok_or("the key is not base64 text")?)
    }

    /// From a JWK of type `oct`.
    ///
    /// # Errors
    ///
    /// Another type, or a bad `k`.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, String> {
        if jwk.get("kty").and_then(|v| v.as_str()) != Some("oct") {
            return Err(
                "a decryption JWK must be of `kty` `oct` (give an RSA private key as PEM)".into(),
            );
        }
        let k = jwk
            .get("k")
            .and_then(|v| v.as_str())
            .and_then(b64url)
            .ok_or("the JWK's `k` is missing or not base64url")?;
        let mut key = Self::symmetric(k)?;
        key.kid = jwk.get("kid").and_then(|v| v.as_str()).map(str::to_string);
        Ok(key)
    }

    /// An RSA private key from PEM (PKCS#8 or PKCS#1).
    ///
    /// # Errors
    ///
    /// Not an RSA private key, or under 2048 bits.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::{PemObject, SectionKind};
        let (kind, der) = <(SectionKind, Vec<u8>)>::from_pem_slice(pem.trim().as_bytes())
            .map_err(|e| format!("not PEM: {e:?}"))?;
        let pkcs8 = match kind {
            SectionKind::PrivateKey => der,
            SectionKind::RsaPrivateKey => super::der::pkcs8_from_pkcs1(&der),
            other => {
                return Err(format!(
                "a {other:?} PEM block is not an RSA private key (PRIVATE KEY or RSA PRIVATE KEY)"
            ))
            }
        };
        let key = rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|e| format!("not a usable RSA private key: {e}"))?;
        if key.key_size_bits() < 2048 {
            return Err(format!(
                "an RSA decryption key must have at least 2048 bits; this one has {}",
                key.key_size_bits()
            ));
        }
        let key = rsa::OaepPrivateDecryptingKey::new(key)
            .map_err(|_| "not a usable RSA private key".to_string())?;
        Ok(DecryptKey {
            kid: None,
            kind: Kind::Rsa(key),
        })
    }

    /// Decrypts a compact JWE and returns its plaintext.
    ///
    /// # Errors
    ///
    /// `unsupported: …` for an algorithm, encryption or compression this
    /// host does not do; `malformed: …` for a token that is not a JWE;
    /// otherwise one message for every cryptographic failure.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, key_b64, iv_b64, ct_b64, tag_b64] = parts[..] else {
            return Err(format!(
                "malformed: a compact JWE has 5 parts, this token has {}",
                parts.len()
            ));
        };
        let decode = |what: &str, s: &str| {
            b64url(s).ok_or_else(|| format!("malformed: the {what} is not base64url"))
        };
        let header: serde_json::Value = serde_json::from_slice(&decode("header", header_b64)?)
            .map_err(|e| format!("malformed: the header is not JSON: {e}"))?;
        let field = |k: &str| header.get(k).and_then(|v| v.as_str());
        if header.get("zip").is_some() {
            return Err("unsupported: compressed tokens (`zip`) are refused".into());
        }
        if header.get("crit").is_some() {
            return Err("unsupported: the header has `crit` extensions".into());
        }
        let alg = field("alg").ok_or("malformed: the header has no `alg`")?;
        let enc = field("enc").ok_or("malformed: the header has no `enc`")?;
        let cek_len = match enc {
            "A128GCM" => 16,
            "A256GCM" | "A128CBC-HS256" => 32,
            other => {
                return Err(format!(
                    "unsupported: `enc` `{other}` (A128GCM, A256GCM, A128CBC-HS256)"
                ))
            }
        };
        let encrypted_key = decode("encrypted key", key_b64)?;
        let iv = decode("IV", iv_b64)?;
        let mut ciphertext = decode("ciphertext", ct_b64)?;
        let tag = decode("tag", tag_b64)?;
        let unwrapped: Option<Vec<u8>> = match (alg, &self.kind) {
            ("RSA-OAEP" | "RSA-OAEP-256", Kind::Rsa(k)) => {
                let oaep = if alg == "RSA-OAEP" {
                    &rsa::OAEP_SHA1_MGF1SHA1
                } else {
                    &rsa::OAEP_SHA256_MGF1SHA256
                };
                let mut out = vec![0u8; k.min_output_size()];
                k.decrypt(oaep, &encrypted_key, &mut out, None)
                    .ok()
                    .map(|p| p.to_vec())
            }
            ("A128KW" | "A256KW", Kind::Symmetric(kek)) => {
                let want = if alg == "A128KW" { 16 } else { 32 };
                if kek.len() != want {
                    return Err(format!("this {}-byte key cannot do `{alg}`", kek.len()));
                }
                let cipher = if want == 16 {
                    &key_wrap::AES_128
                } else {
                    &key_wrap::AES_256
                };
                use key_wrap::KeyWrap as _;
                let mut out = vec![0u8; encrypted_key.len()];
                key_wrap::KeyEncryptionKey::new(cipher, kek)
                    .ok()
                    .and_then(|k| k.unwrap(&encrypted_key, &mut out).ok().map(|p| p.to_vec()))
            }
            ("dir", Kind::Symmetric(cek)) => {
                if !encrypted_key.is_empty() {
                    return Err("malformed: `dir` tokens have an empty encrypted key".into());
                }
                if cek.len() != cek_len {
                    return Err(format!(
                        "this {}-byte key cannot be the content key of `{enc}`",
                        cek.len()
                    ));
                }
                Some(cek.clone())
            }
            ("RSA-OAEP" | "RSA-OAEP-256" | "A128KW" | "A256KW" | "dir", _) => {
                return Err(format!("this key cannot do `{alg}`"));
            }
            (other, _) => {
                return Err(format!(
                    "unsupported: `alg` `{other}` (RSA-OAEP, RSA-OAEP-256, A128KW, A256KW, dir)"
                ))
            }
        };
        // A key that did not unwrap, or unwrapped to the wrong size, goes on
        // as a random one: the tag check below fails like a tampered token.
        let cek = match unwrapped {
            Some(k) if k.len() == cek_len => k,
            _ => {
                let mut k = vec![0u8; cek_len];
                rand::fill(&mut k).map_err(|_| FAILED.to_string())?;
                k
            }
        };
        let aad = header_b64.as_bytes();
        match enc {
            "A128GCM" | "A256GCM" => {
                let alg = if enc == "A128GCM" {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let key = aead::UnboundKey::new(alg, &cek).map_err(|_| FAILED.to_string())?;
                let key = aead::LessSafeKey::new(key);
                let nonce = aead::Nonce::try_assume_unique_for_key(&iv)
                    .map_err(|_| "malformed: a GCM IV is 12 bytes".to_string())?;
                ciphertext.extend_from_slice(&tag);
                let plain = key
                    .open_in_place(nonce, aead::Aad::from(aad), &mut ciphertext)
                    .map_err(|_| FAILED.to_string())?;
                let n = plain.len();
                ciphertext.truncate(n);
                Ok(ciphertext)
            }
            _ => {
                // A128CBC-HS256 (RFC 7518 §5.2.2): MAC key, then AES key.
                let (mac_key, enc_key) = cek.split_at(16);
                let iv: [u8; 16] = iv
                    .as_slice()
                    .try_into()
                    .map_err(|_| "malformed: a CBC IV is 16 bytes".to_string())?;
                let mut mac_input = Vec::with_capacity(aad.len() + iv.len() + ciphertext.len() + 8);
                mac_input.extend_from_slice(aad);
                mac_input.extend_from_slice(&iv);
                mac_input.extend_from_slice(&ciphertext);
                mac_input.extend_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
                let m = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, mac_key), &mac_input);
                if tag.len() != 16
                    || constant_time::verify_slices_are_equal(&m.as_ref()[..16], &tag).is_err()
                {
                    return Err(FAILED.into());
                }
                let key = cipher::UnboundCipherKey::new(&cipher::AES_128, enc_key)
                    .and_then(cipher::PaddedBlockDecryptingKey::cbc_pkcs7)
                    .map_err(|_| FAILED.to_string())?;
                let n = key
                    .decrypt(
                        &mut ciphertext,
                        cipher::DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from(iv)),
                    )
                    .map_err(|_| FAILED.to_string())?
                    .len();
                ciphertext.truncate(n);
                Ok(ciphertext)
            }
        }
    }
}
