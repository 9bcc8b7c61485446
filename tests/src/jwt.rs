//! Minting JSON Web Tokens with an implementation other than the
//! gateway's: `tests/jwt/mint.py` (PyJWT signs, jwcrypto encrypts,
//! `cryptography` makes the keys), run with a Python that has them —
//! Debian's `python3-jwt python3-jwcrypto python3-cryptography`, which
//! `.ci/run` installs. Shared by `tests/validate_jwt.rs` and
//! `benches/validate_jwt.rs`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

pub const MINT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/jwt/mint.py");

/// The first interpreter that has PyJWT, jwcrypto and cryptography.
pub fn python() -> &'static str {
    static PYTHON: OnceLock<&'static str> = OnceLock::new();
    PYTHON.get_or_init(|| {
        for candidate in ["python3", "/usr/bin/python3"] {
            let usable = Command::new(candidate)
                .args(["-c", "import jwt, jwcrypto, cryptography"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if usable {
                return candidate;
            }
        }
        panic!(
            "the validate-jwt tests mint tokens with Python: neither `python3` nor \
             `/usr/bin/python3` can `import jwt, jwcrypto, cryptography`; install the \
             Debian packages `python3-jwt python3-jwcrypto python3-cryptography` \
             (or `pip install pyjwt jwcrypto cryptography`)"
        )
    })
}

/// Runs one mint.py command and returns its JSON answer.
pub fn mint(req: &Value) -> Value {
    let mut child = Command::new(python())
        .arg(MINT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {MINT}: {e}", python()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("write to mint.py");
    let out = child.wait_with_output().expect("mint.py output");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mint.py printed no JSON ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if !out.status.success() || answer.get("error").is_some() {
        panic!(
            "mint.py failed: {answer}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    answer
}

/// Mints several tokens in one Python process: `(name, request)` pairs
/// made by [`sign`], [`sign_none`], [`sign_with_text`] or [`encrypt`];
/// the tokens by name.
pub fn tokens(reqs: Vec<(&str, Value)>) -> HashMap<String, String> {
    let (names, requests): (Vec<&str>, Vec<Value>) = reqs.into_iter().unzip();
    let answer = mint(&json!({"cmd": "batch", "requests": requests}));
    let results = answer["results"].as_array().expect("batch results");
    names
        .into_iter()
        .zip(results)
        .map(|(n, r)| {
            let t = r["token"].as_str().expect("a token").to_string();
            (n.to_string(), t)
        })
        .collect()
}

/// A JWS request: `key` is a private PEM, or the base64 secret for HS*.
pub fn sign(alg: &str, key: &str, claims: &Value, headers: Value) -> Value {
    json!({"cmd": "sign", "alg": alg, "key": key, "claims": claims, "headers": headers})
}

/// An unsigned token (`alg: none`).
pub fn sign_none(claims: &Value) -> Value {
    json!({"cmd": "sign", "alg": "none", "claims": claims})
}

/// An HS* token whose secret is the UTF-8 of `text` (made by hand: PyJWT
/// refuses a PEM as an HMAC secret).
pub fn sign_with_text(alg: &str, text: &str, claims: &Value) -> Value {
    json!({"cmd": "sign", "alg": alg, "key_text": text, "claims": claims})
}

/// A JWE request around `inner`: `key` is a public JWK (JSON text) for
/// RSA, else a base64 secret.
pub fn encrypt(inner: &str, alg: &str, enc: &str, key: &str, kid: Option<&str>) -> Value {
    json!({"cmd": "encrypt", "inner": inner, "alg": alg, "enc": enc, "key": key, "kid": kid})
}

/// The key kit of `mint.py keys`, generated once per test.
pub struct Kit(pub Value);

impl Kit {
    pub fn new() -> Kit {
        Kit(mint(&json!({"cmd": "keys"})))
    }
    /// A private key (PKCS#8 PEM).
    pub fn private(&self, name: &str) -> &str {
        self.0[name]["private_pem"].as_str().expect("private_pem")
    }
    /// A public key (SPKI PEM).
    pub fn public(&self, name: &str) -> &str {
        self.0[name]["public_pem"].as_str().expect("public_pem")
    }
    /// A public JWK with a `kid`.
    pub fn jwk(&self, name: &str, kid: &str) -> Value {
        let mut k = self.0[name]["jwk"].clone();
        k["kid"] = kid.into();
        k
    }
    /// A symmetric key (base64 standard).
    pub fn secret(&self, name: &str) -> &str {
        self.0[name].as_str().expect("a base64 secret")
    }
    /// What signs with `name`: the secret for `hmac`, else the private PEM.
    pub fn signer(&self, name: &str) -> &str {
        if name == "hmac" {
            self.secret(name)
        } else {
            self.private(name)
        }
    }
    /// Any other field, e.g. `("rsa", "cert_pem")`.
    pub fn field(&self, name: &str, field: &str) -> &str {
        self.0[name][field].as_str().expect("a kit field")
    }
}

/// Every signature algorithm and the kit key that signs it.
pub const ALGORITHMS: [(&str, &str); 13] = [
    ("HS256", "hmac"),
    ("HS384", "hmac"),
    ("HS512", "hmac"),
    ("RS256", "rsa"),
    ("RS384", "rsa"),
    ("RS512", "rsa"),
    ("PS256", "rsa"),
    ("PS384", "rsa"),
    ("PS512", "rsa"),
    ("ES256", "ec256"),
    ("ES384", "ec384"),
    ("ES512", "ec521"),
    ("EdDSA", "ed25519"),
];

impl Default for Kit {
    fn default() -> Self {
        Kit::new()
    }
}
