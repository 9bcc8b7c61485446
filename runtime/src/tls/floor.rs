//! The algorithm floor for client certificates and truststores: which key
//! types, how many RSA bits, and which signature hashes a host accepts.
//!
//! webpki already enforces the default floor in the handshake (SHA-256 or
//! stronger; RSA of 2048 bits or more; ECDSA on P-256 or P-384; Ed25519).
//! A host can ask for more (`client_certificate.algorithm_floor`); the
//! stricter floor is then checked here, on every certificate the client
//! sends, after webpki's own checks, and on the truststore at load.

use crate::config::{AlgorithmFloor, FloorHash, FloorKeyType};
use x509_parser::oid_registry as oids;
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;

/// A certificate below the host's configured floor (a rustls
/// `CertificateError::Other`, counted as `algorithm`).
#[derive(Debug, thiserror::Error)]
#[error("the client's chain is below this host's algorithm floor (client_certificate.algorithm_floor): {0}")]
pub struct BelowFloor(pub String);

/// A host's floor, checked per certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The fewest RSA modulus bits accepted.
    pub min_rsa_bits: usize,
    /// The key types accepted.
    pub key_types: Vec<FloorKeyType>,
    /// The weakest signature hash accepted, in bits (256, 384 or 512).
    pub min_hash_bits: usize,
}

impl Default for Floor {
    /// webpki's floor, which the handshake enforces anyway.
    fn default() -> Self {
        Floor {
            min_rsa_bits: 2048,
            key_types: FloorKeyType::ALL.to_vec(),
            min_hash_bits: 256,
        }
    }
}

impl Floor {
    /// The floor a config asks for.
    ///
    /// # Errors
    ///
    /// The key and why, for a floor below the default (webpki's floor
    /// cannot be loosened) or one that accepts no key type.
    pub fn from_config(c: &AlgorithmFloor) -> Result<Self, (&'static str, String)> {
        if c.min_rsa_bits < 2048 {
            return Err((
                "min_rsa_bits",
                format!(
                    "{} is below 2048, the floor no host goes under (RSA keys shorter than 2048 bits are refused in every handshake)",
                    c.min_rsa_bits
                ),
            ));
        }
        if c.min_rsa_bits > 16384 {
            return Err(("min_rsa_bits", "at most 16384".into()));
        }
        if c.key_types.is_empty() {
            return Err((
                "key_types",
                "empty: no client certificate could ever be accepted; list at least one of rsa, ecdsa_p256, ecdsa_p384, ed25519".into(),
            ));
        }
        Ok(Floor {
            min_rsa_bits: c.min_rsa_bits,
            key_types: c.key_types.clone(),
            min_hash_bits: match c.min_signature_hash {
                FloorHash::Sha256 => 256,
                FloorHash::Sha384 => 384,
                FloorHash::Sha512 => 512,
            },
        })
    }

    /// Whether this floor is webpki's own, so that nothing more needs
    /// checking in the handshake.
    pub fn is_default(&self) -> bool {
        self.min_rsa_bits == 2048
            && self.min_hash_bits == 256
            && FloorKeyType::ALL.iter().all(|k| self.key_types.contains(k))
    }

    /// Why `c` is below the floor, or `None`. A self-signed certificate's
    /// own signature is not judged: nobody checks it (a root is trusted
    /// because it is in the truststore).
    pub fn judge(&self, c: &X509Certificate<'_>) -> Option<String> {
        let key = key_type(c);
        match key {
            Ok(KeyType::Rsa(bits)) => {
                if bits < self.min_rsa_bits {
                    return Some(format!(
                        "its RSA key has {bits} bits (at least {})",
                        self.min_rsa_bits
                    ));
                }
            }
            Ok(KeyType::Other(name)) => {
                return Some(format!(
                    "its key is {name}; accepted: {}",
                    names(&self.key_types)
                ));
            }
            Ok(_) => {}
            Err(why) => return Some(why),
        }
        if let Ok(k) = key {
            if let Some(t) = k.floor_type() {
                if !self.key_types.contains(&t) {
                    return Some(format!(
                        "its key is {}; this host accepts {}",
                        k.name(),
                        names(&self.key_types)
                    ));
                }
            }
        }
        if c.subject().as_raw() == c.issuer().as_raw() {
            return None;
        }
        match signature_hash(c) {
            Ok(bits) if bits >= self.min_hash_bits => None,
            Ok(bits) => Some(format!(
                "it is signed with SHA-{bits} (SHA-{} or stronger is the floor)",
                self.min_hash_bits
            )),
            Err(name) => Some(format!(
                "it is signed with {name} (SHA-{} or stronger is the floor)",
                self.min_hash_bits
            )),
        }
    }

    /// Checks a client's chain as sent (leaf first).
    ///
    /// # Errors
    ///
    /// Which certificate and why.
    pub fn check_chain<'a>(
        &self,
        chain: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), BelowFloor> {
        for (i, der) in chain.into_iter().enumerate() {
            let Ok((_, c)) = X509Certificate::from_der(der) else {
                // webpki has parsed it already; nothing to judge here.
                continue;
            };
            if let Some(why) = self.judge(&c) {
                let which = if i == 0 {
                    "the client certificate".to_string()
                } else {
                    format!(
                        "intermediate #{i} ({})",
                        super::certinfo::rfc4514(c.subject())
                    )
                };
                return Err(BelowFloor(format!("{which}: {why}")));
            }
        }
        Ok(())
    }

    /// Whether the handshake may use `scheme` to prove a key of a type
    /// this floor accepts.
    pub fn allows_scheme(&self, scheme: rustls::SignatureScheme) -> bool {
        use rustls::SignatureScheme as S;
        let needs = match scheme {
            S::ECDSA_NISTP256_SHA256 => FloorKeyType::EcdsaP256,
            S::ECDSA_NISTP384_SHA384 => FloorKeyType::EcdsaP384,
            S::ED25519 => FloorKeyType::Ed25519,
            S::RSA_PKCS1_SHA256
            | S::RSA_PKCS1_SHA384
            | S::RSA_PKCS1_SHA512
            | S::RSA_PSS_SHA256
            | S::RSA_PSS_SHA384
            | S::RSA_PSS_SHA512 => FloorKeyType::Rsa,
            _ => return false,
        };
        self.key_types.contains(&needs)
    }
}

fn names(types: &[FloorKeyType]) -> String {
    types
        .iter()
        .map(|t| t.config_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A certificate's key, as the floor sees it.
#[derive(Debug, Clone, Copy)]
enum KeyType {
    Rsa(usize),
    P256,
    P384,
    Ed25519,
    Other(&'static str),
}

impl KeyType {
    fn floor_type(self) -> Option<FloorKeyType> {
        match self {
            KeyType::Rsa(_) => Some(FloorKeyType::Rsa),
            KeyType::P256 => Some(FloorKeyType::EcdsaP256),
            KeyType::P384 => Some(FloorKeyType::EcdsaP384),
            KeyType::Ed25519 => Some(FloorKeyType::Ed25519),
            KeyType::Other(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyType::Rsa(_) => "RSA",
            KeyType::P256 => "ECDSA P-256",
            KeyType::P384 => "ECDSA P-384",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Other(n) => n,
        }
    }
}

fn key_type(c: &X509Certificate<'_>) -> Result<KeyType, String> {
    let spki = c.public_key();
    if spki.algorithm.algorithm == oids::OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(KeyType::Rsa(rsa.key_size())),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve.as_ref() == Some(&oids::OID_EC_P256) {
                Ok(KeyType::P256)
            } else if curve.as_ref() == Some(&oids::OID_NIST_EC_P384) {
                Ok(KeyType::P384)
            } else {
                Ok(KeyType::Other("ECDSA on a curve other than P-256 or P-384"))
            }
        }
        Ok(PublicKey::DSA(_)) => Ok(KeyType::Other("DSA")),
        Ok(_) => Ok(KeyType::Other("of an unsupported type")),
        Err(e) => Err(format!("its public key cannot be read: {e}")),
    }
}

/// A certificate's key in words: `ECDSA P-256`, `RSA 2048 bits`, ...
pub fn describe_key(c: &X509Certificate<'_>) -> String {
    match key_type(c) {
        Ok(KeyType::Rsa(bits)) => format!("RSA {bits} bits"),
        Ok(k) => k.name().to_string(),
        Err(e) => e,
    }
}

/// The algorithm a certificate is signed with, in words.
pub fn describe_signature(c: &X509Certificate<'_>) -> String {
    let oid = c.signature_algorithm.algorithm.to_id_string();
    let name = match oid.as_str() {
        "1.2.840.113549.1.1.11" => "SHA-256 with RSA",
        "1.2.840.113549.1.1.12" => "SHA-384 with RSA",
        "1.2.840.113549.1.1.13" => "SHA-512 with RSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.10045.4.3.2" => "ECDSA with SHA-256",
        "1.2.840.10045.4.3.3" => "ECDSA with SHA-384",
        "1.2.840.10045.4.3.4" => "ECDSA with SHA-512",
        "1.3.101.112" => "Ed25519",
        "1.2.840.113549.1.1.5" => "SHA-1 with RSA (weak)",
        "1.2.840.113549.1.1.4" => "MD5 with RSA (broken)",
        "1.2.840.10045.4.1" => "ECDSA with SHA-1 (weak)",
        _ => return oid,
    };
    name.to_string()
}

/// The bits of the hash a certificate is signed with, or the name of a
/// broken or unknown algorithm.
fn signature_hash(c: &X509Certificate<'_>) -> Result<usize, String> {
    let alg = &c.signature_algorithm;
    let oid = alg.algorithm.to_id_string();
    let by_oid = |o: &str| -> Option<usize> {
        match o {
            // sha{256,384,512}WithRSAEncryption
            "1.2.840.113549.1.1.11" => Some(256),
            "1.2.840.113549.1.1.12" => Some(384),
            "1.2.840.113549.1.1.13" => Some(512),
            // ecdsa-with-SHA{256,384,512}
            "1.2.840.10045.4.3.2" => Some(256),
            "1.2.840.10045.4.3.3" => Some(384),
            "1.2.840.10045.4.3.4" => Some(512),
            // Ed25519 signs with SHA-512 inside.
            "1.3.101.112" => Some(512),
            // sha{256,384,512} (inside RSASSA-PSS parameters)
            "2.16.840.1.101.3.4.2.1" => Some(256),
            "2.16.840.1.101.3.4.2.2" => Some(384),
            "2.16.840.1.101.3.4.2.3" => Some(512),
            _ => None,
        }
    };
    if let Some(bits) = by_oid(&oid) {
        return Ok(bits);
    }
    if let Ok(SignatureAlgorithm::RSASSA_PSS(p)) = SignatureAlgorithm::try_from(alg) {
        let h = p.hash_algorithm_oid().to_id_string();
        return by_oid(&h).ok_or_else(|| format!("RSASSA-PSS with hash {h}"));
    }
    Err(match oid.as_str() {
        "1.2.840.113549.1.1.5" => "SHA-1 with RSA".into(),
        "1.2.840.113549.1.1.4" => "MD5 with RSA".into(),
        "1.2.840.10045.4.1" => "ECDSA with SHA-1".into(),
        "1.2.840.10040.4.3" => "DSA with SHA-1".into(),
        other => format!("an unknown algorithm ({other})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm, issued: bool) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["x.test".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "leaf");
        if !issued {
            return p.self_signed(&key).unwrap().der().to_vec();
        }
        let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "ca");
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        p.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    fn judge(f: &Floor, der: &[u8]) -> Option<String> {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        f.judge(&c)
    }

    #[test]
    fn key_types_and_hashes_are_judged_against_the_configured_floor() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256, true);
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384, true);
        let ed = cert(&rcgen::PKCS_ED25519, true);
        let default = Floor::default();
        assert!(default.is_default());
        for c in [&p256, &p384, &ed] {
            assert_eq!(judge(&default, c), None);
        }
        let strict = Floor {
            min_rsa_bits: 3072,
            key_types: vec![FloorKeyType::EcdsaP384, FloorKeyType::Ed25519],
            min_hash_bits: 384,
        };
        assert!(!strict.is_default());
        let why = judge(&strict, &p256).unwrap();
        assert!(
            why.contains("ECDSA P-256") && why.contains("ecdsa_p384, ed25519"),
            "{why}"
        );
        assert_eq!(judge(&strict, &p384), None);
        assert_eq!(judge(&strict, &ed), None);
        let only_hash = Floor {
            min_hash_bits: 384,
            ..Floor::default()
        };
        let why = judge(&only_hash, &p256).unwrap();
        assert!(why.contains("SHA-256") && why.contains("SHA-384"), "{why}");
        // A self-signed certificate's signature is nobody's business.
        let root = cert(&rcgen::PKCS_ECDSA_P256_SHA256, false);
        assert_eq!(judge(&only_hash, &root), None);
        let chain = [p384.as_slice(), p256.as_slice()];
        let e = strict.check_chain(chain).unwrap_err().to_string();
        assert!(
            e.contains("intermediate #1") && e.contains("algorithm_floor"),
            "{e}"
        );
    }

    #[test]
    fn a_looser_or_empty_floor_is_a_config_error() {
        let c = AlgorithmFloor {
            min_rsa_bits: 1024,
            ..AlgorithmFloor::default()
        };
        assert_eq!(Floor::from_config(&c).unwrap_err().0, "min_rsa_bits");
        let mut c = AlgorithmFloor::default();
        c.key_types.clear();
        assert_eq!(Floor::from_config(&c).unwrap_err().0, "key_types");
        assert!(Floor::from_config(&AlgorithmFloor::default())
            .unwrap()
            .is_default());
    }
}
