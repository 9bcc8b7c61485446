//! JSON Web Token crypto for policies (the `jose` interface, contract
//! 0.1.3): verification keys ([`keys`]), JWE decryption ([`jwe`]) and key
//! sets fetched from JWKS / OpenID Connect discovery URLs ([`keyset`]).
//!
//! The crypto is aws-lc-rs: one well-kept library that has every JOSE
//! algorithm the gateway supports — RSA PKCS#1 v1.5 and PSS, ECDSA on
//! P-256/384/521, Ed25519, HMAC, RSA-OAEP decryption, AES key wrap,
//! AES-GCM and AES-CBC. (ring, which rustls uses here, has neither P-521
//! nor RSA decryption.) Nothing here implements a primitive; [`der`] only
//! writes the ASN.1 envelopes aws-lc-rs takes keys in.

pub mod der;
pub mod jwe;
pub mod keys;
pub mod keyset;

/// A JWS algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// `HS256`
    Hs256,
    /// `HS384`
    Hs384,
    /// `HS512`
    Hs512,
    /// `RS256`
    Rs256,
    /// `RS384`
    Rs384,
    /// `RS512`
    Rs512,
    /// `PS256`
    Ps256,
    /// `PS384`
    Ps384,
    /// `PS512`
    Ps512,
    /// `ES256`
    Es256,
    /// `ES384`
    Es384,
    /// `ES512`
    Es512,
    /// `EdDSA` (Ed25519)
    EdDsa,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::Hs256,
        Algorithm::Hs384,
        Algorithm::Hs512,
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Es512,
        Algorithm::EdDsa,
    ];

    /// Its `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es512 => "ES512",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// By `alg` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The hash length of an HMAC algorithm (0 for the others).
    pub fn hmac_len(self) -> usize {
        match self {
            Algorithm::Hs256 => 32,
            Algorithm::Hs384 => 48,
            Algorithm::Hs512 => 64,
            _ => 0,
        }
    }
}

/// Why a signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature does not verify.
    BadSignature,
    /// The key may not be used with the algorithm.
    KeyForbidsAlgorithm,
    /// No key has the token's `kid`.
    UnknownKid,
    /// The key set was never fetched.
    KeysUnavailable,
}

/// Decodes base64url (padding tolerated).
pub fn b64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .ok()
}

/// Decodes base64, standard or URL-safe, padded or not, whitespace
/// ignored.
pub fn b64_any(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(compact.trim_end_matches('='))
        .ok()
}
