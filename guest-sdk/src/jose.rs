//! JWT keys held by the host (contract 0.1.3): import them once in
//! [`crate::Policy::new`] and verify or decrypt per request. The crypto
//! runs in the host; a key given as a `{{ref:name}}` reference is
//! resolved there and never enters the policy.
//!
//! ```ignore
//! let key = Key::from_pem(&config.pem)?;
//! match key.verify(Algorithm::Rs256, signing_input.as_bytes(), &signature) {
//!     Ok(()) => { /* the signature is good */ }
//!     Err(VerifyError::BadSignature) => { /* refuse */ }
//!     Err(e) => { /* the key cannot check this token */ }
//! }
//! ```

#[cfg(target_arch = "wasm32")]
use crate::bindings::gatehouse::policy::jose as inner;
#[cfg(target_arch = "wasm32")]
type KeyInner = inner::Key;
#[cfg(target_arch = "wasm32")]
type KeySetInner = inner::KeySet;
#[cfg(target_arch = "wasm32")]
type DecryptInner = inner::DecryptionKey;
#[cfg(not(target_arch = "wasm32"))]
type KeyInner = crate::testkit::TestKey;
#[cfg(not(target_arch = "wasm32"))]
type KeySetInner = crate::testkit::TestKeySet;
#[cfg(not(target_arch = "wasm32"))]
type DecryptInner = crate::testkit::TestDecryptionKey;

pub use crate::bindings::gatehouse::policy::jose::{Algorithm, KeySetOptions, VerifyError};

impl Algorithm {
    /// By its `alg` name (`RS256`, `EdDSA`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Algorithm::Hs256,
            "HS384" => Algorithm::Hs384,
            "HS512" => Algorithm::Hs512,
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "ES512" => Algorithm::Es512,
            "EdDSA" => Algorithm::Eddsa,
            _ => return None,
        })
    }

    /// Whether this is an HMAC algorithm (`HS*`).
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::Hs256 | Algorithm::Hs384 | Algorithm::Hs512)
    }
}

/// A key that verifies signatures.
pub struct Key(KeyInner);

impl Key {
    /// From a JWK (JSON text).
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_jwk(jwk: &str) -> Result<Self, String> {
        KeyInner::from_jwk(jwk).map(Key)
    }
    /// From PEM: a public key or a certificate.
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        KeyInner::from_pem(pem).map(Key)
    }
    /// A symmetric (HMAC) key, base64, at least 32 bytes.
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        KeyInner::from_base64(text).map(Key)
    }
    /// An RSA public key from base64url `n` and `e`.
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_rsa_components(n: &str, e: &str) -> Result<Self, String> {
        KeyInner::from_rsa_components(n, e).map(Key)
    }
    /// Its `kid`, from the JWK.
    pub fn kid(&self) -> Option<String> {
        self.0.kid()
    }
    /// Verifies `signature` over `signing_input` with `alg`.
    ///
    /// # Errors
    ///
    /// Why the signature was not accepted.
    pub fn verify(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        self.0.verify(alg, signing_input, signature)
    }
}

/// A key set the host fetches from a JWKS or OpenID discovery URL.
pub struct KeySet(KeySetInner);

impl KeySet {
    /// Opens the set at `url`; the host starts fetching it.
    ///
    /// # Errors
    ///
    /// A bad URL or options.
    pub fn open(url: &str, options: &KeySetOptions) -> Result<Self, String> {
        KeySetInner::open(url, options).map(KeySet)
    }
    /// The discovery document's `issuer`, once fetched.
    pub fn issuer(&self) -> Option<String> {
        self.0.issuer()
    }
    /// The last fetch error, when the last attempt failed.
    pub fn status(&self) -> Option<String> {
        self.0.status()
    }
    /// Changes whenever the keys change.
    pub fn generation(&self) -> u64 {
        self.0.generation()
    }
    /// Verifies with the key `kid` (or each key, without one).
    ///
    /// # Errors
    ///
    /// Why the signature was not accepted.
    pub fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        self.0.verify(kid, alg, signing_input, signature)
    }
}

/// A key that decrypts JWE tokens.
pub struct DecryptionKey(DecryptInner);

impl DecryptionKey {
    /// An RSA private key from PEM.
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        DecryptInner::from_pem(pem).map(DecryptionKey)
    }
    /// A symmetric key, base64.
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        DecryptInner::from_base64(text).map(DecryptionKey)
    }
    /// From a JWK of `kty` `oct`.
    ///
    /// # Errors
    ///
    /// Why the key cannot be used.
    pub fn from_jwk(jwk: &str) -> Result<Self, String> {
        DecryptInner::from_jwk(jwk).map(DecryptionKey)
    }
    /// Decrypts a compact JWE.
    ///
    /// # Errors
    ///
    /// Why it could not be decrypted (`unsupported: …` for an algorithm the
    /// host does not do).
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, String> {
        self.0.decrypt(token)
    }
}
