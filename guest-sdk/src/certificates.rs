//! Issuer certificates a policy names in its config, held by the host
//! (contract 0.1.2): import once in [`crate::Policy::new`], ask per request
//! whether the client's certificate was issued by one. The host checks the
//! signature; nothing of the crypto runs in the policy.

#[cfg(target_arch = "wasm32")]
type Inner = crate::bindings::gatehouse::policy::certificates::Issuer;
#[cfg(not(target_arch = "wasm32"))]
type Inner = crate::testkit::TestIssuer;

/// An imported issuer (CA) certificate.
pub struct Issuer(Inner);

impl Issuer {
    /// Imports a PEM certificate (or base64 DER).
    ///
    /// # Errors
    ///
    /// Why it cannot be used.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        Inner::from_pem(pem).map(Issuer)
    }

    /// Its subject, RFC 4514.
    pub fn subject(&self) -> String {
        self.0.subject()
    }

    /// Its SHA-1 thumbprint, lower-case hex.
    pub fn thumbprint_sha1(&self) -> String {
        self.0.thumbprint_sha1()
    }

    /// Whether the current request's client certificate was issued by it
    /// (names chain, signature verified by the host).
    pub fn issued_client_certificate(&self) -> bool {
        self.0.issued_client_certificate()
    }
}
