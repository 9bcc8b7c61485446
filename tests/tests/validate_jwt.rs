//! `validate-jwt` end to end, with tokens minted by implementations other
//! than the gateway's own: PyJWT signs, jwcrypto encrypts and
//! `cryptography` makes the keys (`tests/jwt/mint.py`, run with a Python
//! that has them — Debian's `python3-jwt python3-jwcrypto`).
//!
//! Covered, one theme per test: every signature algorithm with every form
//! of key (PEM, certificate, n/e, JWK); every kind of encrypted token;
//! where the token comes from (header with scheme, query, expression);
//! each refusal with its exact status, code and `WWW-Authenticate`
//! challenge; `kid` among static keys; time claims and clock skew;
//! audiences, issuers and required claims; claims as context variables
//! read by a later `set-header`; keys by `{{ref:...}}`; and key sets from
//! an OpenID provider served by the test (discovery, JWKS, rotation, the
//! rate-limited refetch on an unknown `kid`, the provider going down and
//! coming back, never reachable).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use gatehouse_tests::{Client, Gw, Reply, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use gatehouse_tests::jwt::{encrypt, sign, sign_none, sign_with_text, tokens, Kit, ALGORITHMS};

// === claims ===

const ISS: &str = "https://issuer.test";
const AUD: &str = "api://orders";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Valid claims: `sub`, `iss`, `aud`, `iat`, `exp` in ten minutes.
fn claims() -> Value {
    let t = now();
    json!({"sub": "alice", "iss": ISS, "aud": AUD, "iat": t, "exp": t + 600})
}

/// [`claims`] with `extra` merged in; a `null` removes the claim.
fn claims_with(extra: Value) -> Value {
    merge(claims(), extra)
}

/// `base` with the fields of `extra`; a `null` field removes it.
fn merge(mut base: Value, extra: Value) -> Value {
    let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) else {
        panic!("merge takes two objects");
    };
    for (k, v) in e {
        if v.is_null() {
            b.remove(&k);
        } else {
            b.insert(k, v);
        }
    }
    base
}

// === tokens taken apart ===

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A standard base64 secret as base64url (a JWK's `k`).
fn std_to_url(b64: &str) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("standard base64");
    b64url(&raw)
}

/// `token` with its part `index` replaced.
fn with_part(token: &str, index: usize, part: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = part;
    parts.join(".")
}

/// `token` with the first character of part `index` changed, which
/// changes the first decoded byte.
fn flip(token: &str, index: usize) -> String {
    let part = token.split('.').nth(index).expect("the part");
    let first = if part.starts_with('A') { "B" } else { "A" };
    with_part(token, index, &format!("{first}{}", &part[1..]))
}

// === the gateway ===

/// A gateway config: listener `main`, upstream `echo` (`builtin:echo`),
/// the given APIs and named values, written as YAML by serde so that PEM
/// text needs no hand quoting.
fn config(apis: Vec<Value>, named_values: Value) -> String {
    let mut doc = json!({
        "listeners": [{"name": "main", "address": "127.0.0.1:0"}],
        "upstreams": {"echo": {"url": "builtin:echo"}},
        "apis": apis,
    });
    if named_values.as_object().is_some_and(|m| !m.is_empty()) {
        doc["named_values"] = named_values;
    }
    serde_yaml_ng::to_string(&doc).expect("config as YAML")
}

/// An API at `/{name}` whose inbound chain is `validate-jwt: {jwt}` then
/// `then`.
fn api_then(name: &str, jwt: Value, then: Vec<Value>) -> Value {
    let mut inbound = vec![json!({"validate-jwt": jwt})];
    inbound.extend(then);
    json!({
        "name": name,
        "path": format!("/{name}"),
        "upstream": "echo",
        "policies": {"inbound": inbound},
    })
}

fn api(name: &str, jwt: Value) -> Value {
    api_then(name, jwt, vec![])
}

/// The usual policy config: `Authorization: Bearer <token>` checked
/// against `keys`, with `extra` options merged in.
fn bearer(keys: Value, extra: Value) -> Value {
    merge(
        json!({
            "header_name": "authorization",
            "require_scheme": "Bearer",
            "issuer_signing_keys": keys,
        }),
        extra,
    )
}

async fn start(tag: &str, apis: Vec<Value>) -> (Gw, SocketAddr) {
    let gw = Gw::start(TempDir::new(tag), &config(apis, json!({}))).await;
    let addr = gw.addr("main");
    (gw, addr)
}

/// Lets the last connections close before the gateway stops.
async fn finish(gw: Gw) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(gw);
}

// === requests and verdicts ===

/// `GET path` with `headers`, on a new connection.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::plain(addr).get(path, headers).await
}

/// `GET path` with `Authorization: Bearer <token>`.
async fn get_bearer(addr: SocketAddr, path: &str, token: &str) -> Reply {
    let value = format!("Bearer {token}");
    get(addr, path, &[("authorization", &value)]).await
}

fn body(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Asserts the request reached the upstream.
#[track_caller]
fn ok(r: &Reply, what: &str) {
    assert_eq!(r.status.as_u16(), 200, "{what}: {}", body(r));
}

/// Asserts a `policy.validate-jwt.<code>` fault with `status` and returns
/// it. A 401 must carry the RFC 6750 challenge: `Bearer` alone for a
/// missing token, else `Bearer error="invalid_token",
/// error_description="..."`; a 400 carries `error="invalid_request"`.
#[track_caller]
fn refused(r: &Reply, status: u16, code: &str, what: &str) -> Value {
    let code = format!("policy.validate-jwt.{code}");
    let got = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(String::from))
        .unwrap_or_default();
    assert_eq!(
        (r.status.as_u16(), got.as_str()),
        (status, code.as_str()),
        "{what}: {}",
        body(r)
    );
    let fault = r.assert_fault(status, &code);
    let challenge = r.header("www-authenticate");
    match status {
        401 if code.ends_with(".missing-token") => {
            assert_eq!(challenge, Some("Bearer"), "{what}: the challenge")
        }
        401 => assert!(
            challenge.is_some_and(|c| c
                .starts_with("Bearer error=\"invalid_token\", error_description=\"")
                && c.ends_with('"')),
            "{what}: the challenge is {challenge:?}"
        ),
        400 => assert!(
            challenge.is_some_and(|c| c.starts_with("Bearer error=\"invalid_request\"")),
            "{what}: the challenge is {challenge:?}"
        ),
        _ => {}
    }
    fault
}

// === an OpenID provider on 127.0.0.1 ===

/// What the provider serves (path -> status and body) and how often each
/// path was asked for. Survives a restart of the listener.
#[derive(Default)]
struct ProviderState {
    routes: Mutex<HashMap<String, (u16, String)>>,
    hits: Mutex<HashMap<String, usize>>,
}

/// A tiny HTTP/1.1 server: one request per connection, answered from
/// [`ProviderState`] with `connection: close`, so that stopping the
/// listener stops the provider completely (no keep-alive connection
/// survives it).
struct Provider {
    addr: SocketAddr,
    state: Arc<ProviderState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Provider {
    async fn start() -> Provider {
        Provider::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::default()).await
    }

    async fn start_on(at: SocketAddr, state: Arc<ProviderState>) -> Provider {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .expect("bind the provider");
        let addr = listener.local_addr().expect("provider address");
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(answer(stream, shared.clone()));
            }
        });
        Provider {
            addr,
            state,
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `body` with `status` at `path` from now on.
    fn serve(&self, path: &str, status: u16, body: impl ToString) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, body.to_string()));
    }

    /// How many requests asked for `path` so far.
    fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Closes the listener: connections are refused.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address, serving the same state.
    async fn restart(&mut self) {
        self.stop().await;
        let (addr, state) = (self.addr, self.state.clone());
        *self = Provider::start_on(addr, state).await;
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream, state: Arc<ProviderState>) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 && head.len() < 65536 => head.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let (status, body) = state
        .routes
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or((404, "{\"error\":\"not found\"}".into()));
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ncache-control: max-age=3600\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A JWKS document of the given keys.
fn jwks(keys: &[Value]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| merge(k.clone(), json!({"use": "sig"})))
        .collect();
    json!({ "keys": keys }).to_string()
}

const DISCOVERY: &str = "/.well-known/openid-configuration";

// === signatures ===

/// Every algorithm is accepted with its key, whatever form the key takes:
/// PEM (SPKI) without `kid`, JWK (an object, or JSON text) selected by
/// `kid`, RSA `n`/`e`, and an X.509 certificate.
#[tokio::test]
async fn every_signature_algorithm_is_accepted_with_its_key() {
    let kit = Kit::new();
    let pem_keys = json!([
        {"base64": kit.secret("hmac")},
        {"pem": kit.public("rsa")},
        {"pem": kit.public("ec256")},
        {"pem": kit.public("ec384")},
        {"pem": kit.public("ec521")},
        {"pem": kit.public("ed25519")},
    ]);
    let jwk_keys = json!([
        {"base64": kit.secret("hmac"), "id": "kid-hmac"},
        {"jwk": kit.jwk("rsa", "kid-rsa")},
        // A JWK may also be given as JSON text.
        {"jwk": kit.jwk("ec256", "kid-ec256").to_string()},
        {"jwk": kit.jwk("ec384", "kid-ec384")},
        {"jwk": kit.jwk("ec521", "kid-ec521")},
        {"jwk": kit.jwk("ed25519", "kid-ed25519")},
    ]);
    let rsa_jwk = &kit.0["rsa"]["jwk"];
    let ne_keys = json!([{"n": rsa_jwk["n"], "e": rsa_jwk["e"]}]);
    let cert_keys = json!([{"pem": kit.field("rsa", "cert_pem")}]);
    let (gw, addr) = start(
        "jwt-algs",
        vec![
            api("pem", bearer(pem_keys, json!({}))),
            api("jwk", bearer(jwk_keys, json!({}))),
            api("ne", bearer(ne_keys, json!({}))),
            api("cert", bearer(cert_keys, json!({}))),
        ],
    )
    .await;

    let c = claims();
    let mut reqs = Vec::new();
    let names: Vec<(String, String)> = ALGORITHMS
        .iter()
        .map(|(alg, _)| (format!("{alg}-plain"), format!("{alg}-kid")))
        .collect();
    for ((alg, key), (plain, with_kid)) in ALGORITHMS.iter().zip(&names) {
        reqs.push((plain.as_str(), sign(alg, kit.signer(key), &c, json!({}))));
        let kid = format!("kid-{key}");
        reqs.push((
            with_kid.as_str(),
            sign(alg, kit.signer(key), &c, json!({"kid": kid})),
        ));
    }
    let t = tokens(reqs);

    for (alg, _) in ALGORITHMS {
        ok(
            &get_bearer(addr, "/pem", &t[&format!("{alg}-plain")]).await,
            &format!("{alg} with a PEM key"),
        );
        ok(
            &get_bearer(addr, "/jwk", &t[&format!("{alg}-kid")]).await,
            &format!("{alg} with a JWK chosen by kid"),
        );
    }
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let token = &t[&format!("{alg}-plain")];
        ok(
            &get_bearer(addr, "/ne", token).await,
            &format!("{alg}, n/e"),
        );
        ok(
            &get_bearer(addr, "/cert", token).await,
            &format!("{alg}, certificate"),
        );
    }
    finish(gw).await;
}

/// Refusals of the token itself: malformed, unsigned, an unknown or
/// mismatched algorithm (the HS256-with-the-RSA-public-key confusion), an
/// unknown critical header, a bad signature; `require_signed_tokens:
/// false` lets an unsigned token in but still checks signed ones.
#[tokio::test]
async fn malformed_unsigned_mismatched_and_forged_tokens_are_refused() {
    let kit = Kit::new();
    let rsa_keys = json!([{"pem": kit.public("rsa")}]);
    let (gw, addr) = start(
        "jwt-refusals",
        vec![
            api("rsa", bearer(rsa_keys.clone(), json!({}))),
            api(
                "hmac",
                bearer(json!([{"base64": kit.secret("hmac")}]), json!({})),
            ),
            api(
                "unsigned-ok",
                bearer(rsa_keys, json!({"require_signed_tokens": false})),
            ),
        ],
    )
    .await;
    let c = claims();
    let other_hmac = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let t = tokens(vec![
        ("good", sign("RS256", kit.private("rsa"), &c, json!({}))),
        ("by-rsa2", sign("RS256", kit.private("rsa2"), &c, json!({}))),
        (
            "ps-by-rsa2",
            sign("PS256", kit.private("rsa2"), &c, json!({})),
        ),
        ("none", sign_none(&c)),
        (
            "crit",
            sign(
                "RS256",
                kit.private("rsa"),
                &c,
                json!({"crit": ["exp-x"], "exp-x": 1}),
            ),
        ),
        ("confusion", sign_with_text("HS256", kit.public("rsa"), &c)),
        ("es256", sign("ES256", kit.private("ec256"), &c, json!({}))),
        (
            "eddsa",
            sign("EdDSA", kit.private("ed25519"), &c, json!({})),
        ),
        ("hs256", sign("HS256", kit.secret("hmac"), &c, json!({}))),
        ("hs256-other", sign("HS256", &other_hmac, &c, json!({}))),
        (
            "not-json",
            json!({"cmd": "sign", "alg": "RS256", "key": kit.private("rsa"),
                   "payload_text": "this is not JSON"}),
        ),
    ]);
    let good = &t["good"];
    ok(&get_bearer(addr, "/rsa", good).await, "the control");

    // Malformed: part counts, base64, JSON.
    let header = good.split('.').next().unwrap();
    let payload = good.split('.').nth(1).unwrap();
    let not_json = b64url(b"not json");
    for (token, what) in [
        ("abc".to_string(), "one part"),
        ("abc.def".to_string(), "two parts"),
        (format!("{header}.{payload}.c.d"), "four parts"),
        (format!("{header}.{payload}.c.d.e.f"), "six parts"),
        (with_part(good, 0, "!!!!"), "a header that is not base64url"),
        (with_part(good, 0, &not_json), "a header that is not JSON"),
        (t["not-json"].clone(), "a signed payload that is not JSON"),
    ] {
        refused(
            &get_bearer(addr, "/rsa", &token).await,
            401,
            "malformed-token",
            what,
        );
    }

    // Unsigned.
    refused(
        &get_bearer(addr, "/rsa", &t["none"]).await,
        401,
        "alg-none",
        "alg none",
    );
    let none_signed = format!("{}xyz", t["none"]);
    refused(
        &get_bearer(addr, "/rsa", &none_signed).await,
        401,
        "alg-none",
        "alg none with a signature part",
    );
    // `none` spelt otherwise is never accepted either.
    let shouty = with_part(&t["none"], 0, &b64url(br#"{"alg":"NONE","typ":"JWT"}"#));
    let r = get_bearer(addr, "/rsa", &shouty).await;
    let code = r.json()["code"].as_str().unwrap_or_default().to_string();
    assert!(
        code == "policy.validate-jwt.alg-none"
            || code == "policy.validate-jwt.unsupported-algorithm",
        "alg NONE: {}",
        body(&r)
    );
    refused(
        &r,
        401,
        code.trim_start_matches("policy.validate-jwt."),
        "alg NONE",
    );

    // An algorithm the policy does not know.
    for alg in ["ES256K", "HS1", "RS1"] {
        let h = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let token = with_part(good, 0, &h);
        refused(
            &get_bearer(addr, "/rsa", &token).await,
            401,
            "unsupported-algorithm",
            alg,
        );
    }

    // A critical header extension it does not understand.
    refused(
        &get_bearer(addr, "/rsa", &t["crit"]).await,
        401,
        "unknown-crit",
        "crit",
    );

    // Algorithm/key mismatch: the classic confusion (HS256 keyed with the
    // RSA public key's PEM), and other key types.
    refused(
        &get_bearer(addr, "/rsa", &t["confusion"]).await,
        401,
        "algorithm-mismatch",
        "HS256 with the RSA public PEM as its secret",
    );
    refused(
        &get_bearer(addr, "/rsa", &t["es256"]).await,
        401,
        "algorithm-mismatch",
        "ES256 against an RSA key",
    );
    refused(
        &get_bearer(addr, "/rsa", &t["eddsa"]).await,
        401,
        "algorithm-mismatch",
        "EdDSA against an RSA key",
    );
    refused(
        &get_bearer(addr, "/hmac", good).await,
        401,
        "algorithm-mismatch",
        "RS256 against an HMAC secret",
    );

    // Bad signatures.
    ok(
        &get_bearer(addr, "/hmac", &t["hs256"]).await,
        "HS256 control",
    );
    let forged_payload = b64url(
        claims_with(json!({"sub": "mallory"}))
            .to_string()
            .as_bytes(),
    );
    for (path, token, what) in [
        ("/rsa", t["by-rsa2"].clone(), "RS256 by another key"),
        ("/rsa", t["ps-by-rsa2"].clone(), "PS256 by another key"),
        (
            "/rsa",
            with_part(good, 1, &forged_payload),
            "a changed payload",
        ),
        ("/rsa", flip(good, 2), "a changed signature"),
        (
            "/hmac",
            t["hs256-other"].clone(),
            "HS256 with another secret",
        ),
    ] {
        refused(
            &get_bearer(addr, path, &token).await,
            401,
            "invalid-signature",
            what,
        );
    }

    // require_signed_tokens: false admits an unsigned token; a signed one
    // is still verified.
    ok(
        &get_bearer(addr, "/unsigned-ok", &t["none"]).await,
        "alg none allowed",
    );
    ok(
        &get_bearer(addr, "/unsigned-ok", good).await,
        "signed, allowed",
    );
    refused(
        &get_bearer(addr, "/unsigned-ok", &t["by-rsa2"]).await,
        401,
        "invalid-signature",
        "a signed token is still verified",
    );
    finish(gw).await;
}

/// `kid` picks among static keys with `id`s; a kid-less token is tried
/// against the keys of its type; a kid naming a key of another type is
/// an algorithm mismatch, not a verification with the wrong key.
#[tokio::test]
async fn kid_selects_among_static_keys() {
    let kit = Kit::new();
    let (gw, addr) = start(
        "jwt-kid",
        vec![
            api(
                "kids",
                bearer(
                    json!([
                        {"pem": kit.public("rsa"), "id": "a"},
                        {"pem": kit.public("rsa2"), "id": "b"},
                    ]),
                    json!({}),
                ),
            ),
            api(
                "mixed",
                bearer(
                    json!([
                        {"base64": kit.secret("hmac"), "id": "h"},
                        {"pem": kit.public("rsa"), "id": "r"},
                    ]),
                    json!({}),
                ),
            ),
        ],
    )
    .await;
    let c = claims();
    let t = tokens(vec![
        (
            "a",
            sign("RS256", kit.private("rsa"), &c, json!({"kid": "a"})),
        ),
        (
            "b",
            sign("RS256", kit.private("rsa2"), &c, json!({"kid": "b"})),
        ),
        (
            "a-by-rsa2",
            sign("RS256", kit.private("rsa2"), &c, json!({"kid": "a"})),
        ),
        (
            "c",
            sign("RS256", kit.private("rsa"), &c, json!({"kid": "c"})),
        ),
        ("no-kid", sign("RS256", kit.private("rsa2"), &c, json!({}))),
        (
            "hs-as-r",
            sign("HS256", kit.secret("hmac"), &c, json!({"kid": "r"})),
        ),
        (
            "hs-as-h",
            sign("HS256", kit.secret("hmac"), &c, json!({"kid": "h"})),
        ),
    ]);
    ok(&get_bearer(addr, "/kids", &t["a"]).await, "kid a");
    ok(&get_bearer(addr, "/kids", &t["b"]).await, "kid b");
    ok(&get_bearer(addr, "/kids", &t["no-kid"]).await, "no kid");
    refused(
        &get_bearer(addr, "/kids", &t["a-by-rsa2"]).await,
        401,
        "invalid-signature",
        "kid a, signed by b's key",
    );
    refused(
        &get_bearer(addr, "/kids", &t["c"]).await,
        401,
        "unknown-kid",
        "a kid no key has",
    );
    ok(
        &get_bearer(addr, "/mixed", &t["hs-as-h"]).await,
        "HS256, kid h",
    );
    refused(
        &get_bearer(addr, "/mixed", &t["hs-as-r"]).await,
        401,
        "algorithm-mismatch",
        "HS256 naming the RSA key",
    );
    finish(gw).await;
}

// === encryption ===

/// Each kind of JWE (key management RSA-OAEP, RSA-OAEP-256, A128KW,
/// A256KW, dir; content A128GCM, A256GCM, A128CBC-HS256) is decrypted,
/// then the JWS inside is validated like any other; keys as PKCS#8 and
/// PKCS#1 PEM, base64 and an `oct` JWK, chosen by `kid` or by fit.
#[tokio::test]
async fn encrypted_tokens_are_decrypted_then_validated() {
    let kit = Kit::new();
    let signing = json!([{"pem": kit.public("rsa")}]);
    let (gw, addr) = start(
        "jwt-jwe",
        vec![
            api(
                "jwe",
                bearer(
                    signing.clone(),
                    json!({"decryption_keys": [
                        {"pem": kit.private("rsa_enc"), "id": "rsa-enc"},
                        {"base64": kit.secret("aes128kw"), "id": "kw128"},
                        {"base64": kit.secret("aes256kw"), "id": "kw256"},
                        {"base64": kit.secret("dir128gcm"), "id": "dir128"},
                        {"base64": kit.secret("dir256gcm"), "id": "dir256"},
                        {"base64": kit.secret("dir_cbc"), "id": "dircbc"},
                    ]}),
                ),
            ),
            api(
                "jwe-pkcs1",
                bearer(
                    signing.clone(),
                    json!({"decryption_keys": [{"pem": kit.field("rsa_enc", "private_pem_pkcs1")}]}),
                ),
            ),
            api(
                "jwe-jwk",
                bearer(
                    signing,
                    json!({"decryption_keys": [
                        {"jwk": {"kty": "oct", "k": std_to_url(kit.secret("aes256kw"))}}
                    ]}),
                ),
            ),
        ],
    )
    .await;
    let inner = tokens(vec![
        (
            "good",
            sign("RS256", kit.private("rsa"), &claims(), json!({})),
        ),
        (
            "expired",
            sign(
                "RS256",
                kit.private("rsa"),
                &claims_with(json!({"exp": now() - 3600})),
                json!({}),
            ),
        ),
        (
            "forged",
            sign("RS256", kit.private("rsa2"), &claims(), json!({})),
        ),
    ]);
    let rsa_enc = kit.0["rsa_enc"]["jwk"].to_string();
    let kinds = [
        ("RSA-OAEP", "A128GCM", rsa_enc.as_str(), "rsa-enc"),
        ("RSA-OAEP-256", "A256GCM", rsa_enc.as_str(), "rsa-enc"),
        ("A128KW", "A128CBC-HS256", kit.secret("aes128kw"), "kw128"),
        ("A256KW", "A256GCM", kit.secret("aes256kw"), "kw256"),
        ("dir", "A128GCM", kit.secret("dir128gcm"), "dir128"),
        ("dir", "A256GCM", kit.secret("dir256gcm"), "dir256"),
        ("dir", "A128CBC-HS256", kit.secret("dir_cbc"), "dircbc"),
    ];
    let names: Vec<String> = kinds
        .iter()
        .map(|(a, e, _, _)| format!("{a}+{e}"))
        .collect();
    let mut reqs: Vec<(&str, Value)> = kinds
        .iter()
        .zip(&names)
        .map(|((alg, enc, key, kid), name)| {
            (
                name.as_str(),
                encrypt(&inner["good"], alg, enc, key, Some(*kid)),
            )
        })
        .collect();
    reqs.extend([
        (
            "pkcs1",
            encrypt(
                &inner["good"],
                "RSA-OAEP-256",
                "A128CBC-HS256",
                &rsa_enc,
                None,
            ),
        ),
        (
            "oct-jwk",
            encrypt(
                &inner["good"],
                "A256KW",
                "A128GCM",
                kit.secret("aes256kw"),
                None,
            ),
        ),
        (
            "expired",
            encrypt(
                &inner["expired"],
                "A128KW",
                "A128GCM",
                kit.secret("aes128kw"),
                Some("kw128"),
            ),
        ),
        (
            "forged",
            encrypt(
                &inner["forged"],
                "dir",
                "A256GCM",
                kit.secret("dir256gcm"),
                Some("dir256"),
            ),
        ),
    ]);
    let t = tokens(reqs);

    for name in &names {
        ok(&get_bearer(addr, "/jwe", &t[name]).await, name);
    }
    ok(
        &get_bearer(addr, "/jwe-pkcs1", &t["pkcs1"]).await,
        "RSA-OAEP-256 with a PKCS#1 key, no kid",
    );
    ok(
        &get_bearer(addr, "/jwe-jwk", &t["oct-jwk"]).await,
        "A256KW with an oct JWK, no kid",
    );
    // What is inside is validated after decryption.
    refused(
        &get_bearer(addr, "/jwe", &t["expired"]).await,
        401,
        "expired",
        "an expired JWS inside",
    );
    refused(
        &get_bearer(addr, "/jwe", &t["forged"]).await,
        401,
        "invalid-signature",
        "a forged JWS inside",
    );
    finish(gw).await;
}

/// A JWE for another key, or altered in transit, fails to decrypt;
/// algorithms outside the supported set (RSA1_5, A192KW, A192GCM,
/// A256CBC-HS512) and compression (`zip`) are refused as unsupported.
#[tokio::test]
async fn encrypted_tokens_that_cannot_be_decrypted_are_refused() {
    let kit = Kit::new();
    let (gw, addr) = start(
        "jwt-jwe-bad",
        vec![api(
            "jwe",
            bearer(
                json!([{"pem": kit.public("rsa")}]),
                json!({"decryption_keys": [
                    {"pem": kit.private("rsa_enc"), "id": "rsa-enc"},
                    {"base64": kit.secret("aes128kw"), "id": "kw128"},
                    {"base64": kit.secret("dir128gcm"), "id": "dir128"},
                    {"base64": kit.secret("dir256gcm"), "id": "dir256"},
                ]}),
            ),
        )],
    )
    .await;
    let inner = tokens(vec![(
        "good",
        sign("RS256", kit.private("rsa"), &claims(), json!({})),
    )]);
    let good = &inner["good"];
    let rsa_enc = kit.0["rsa_enc"]["jwk"].to_string();
    let rsa2 = kit.0["rsa2"]["jwk"].to_string();
    let b64 = |n: usize, byte: u8| base64::engine::general_purpose::STANDARD.encode(vec![byte; n]);
    let (k16, k24, k32, k64) = (b64(16, 1), b64(24, 2), b64(32, 3), b64(64, 4));
    let t = tokens(vec![
        (
            "control",
            encrypt(
                good,
                "dir",
                "A128GCM",
                kit.secret("dir128gcm"),
                Some("dir128"),
            ),
        ),
        (
            "rsa-other",
            encrypt(good, "RSA-OAEP", "A128GCM", &rsa2, Some("rsa-enc")),
        ),
        (
            "kw-other",
            encrypt(good, "A128KW", "A128GCM", &k16, Some("kw128")),
        ),
        (
            "dir-other",
            encrypt(good, "dir", "A256GCM", &k32, Some("dir256")),
        ),
        (
            "rsa1_5",
            encrypt(good, "RSA1_5", "A128GCM", &rsa_enc, Some("rsa-enc")),
        ),
        (
            "a192kw",
            encrypt(good, "A192KW", "A128GCM", &k24, Some("kw128")),
        ),
        (
            "a192gcm",
            encrypt(good, "dir", "A192GCM", &k24, Some("dir128")),
        ),
        (
            "a256cbc",
            encrypt(good, "dir", "A256CBC-HS512", &k64, Some("dir256")),
        ),
        (
            "zip",
            merge(
                encrypt(
                    good,
                    "dir",
                    "A128GCM",
                    kit.secret("dir128gcm"),
                    Some("dir128"),
                ),
                json!({"zip": "DEF"}),
            ),
        ),
    ]);
    let control = &t["control"];
    ok(&get_bearer(addr, "/jwe", control).await, "the control");
    for (token, what) in [
        (t["rsa-other"].clone(), "RSA-OAEP for another RSA key"),
        (t["kw-other"].clone(), "A128KW with another key"),
        (t["dir-other"].clone(), "dir with another key"),
        (flip(control, 3), "a changed ciphertext"),
        (flip(control, 4), "a changed tag"),
        (flip(control, 2), "a changed IV"),
    ] {
        refused(
            &get_bearer(addr, "/jwe", &token).await,
            401,
            "decryption-failed",
            what,
        );
    }
    for name in ["rsa1_5", "a192kw", "a192gcm", "a256cbc", "zip"] {
        refused(
            &get_bearer(addr, "/jwe", &t[name]).await,
            401,
            "unsupported-encryption",
            name,
        );
    }
    refused(
        &get_bearer(addr, "/jwe", &with_part(control, 0, "!!!!")).await,
        401,
        "malformed-token",
        "a JWE header that is not base64url",
    );
    finish(gw).await;
}

// === where the token comes from ===

/// The token from a header (with and without a scheme), a query
/// parameter, both (a request carrying both is ambiguous), or a CEL
/// expression; `max_token_bytes`.
#[tokio::test]
async fn the_token_comes_from_a_header_a_query_parameter_or_an_expression() {
    let kit = Kit::new();
    let keys = json!([{"base64": kit.secret("hmac")}, {"pem": kit.public("rsa")}]);
    let (gw, addr) = start(
        "jwt-sources",
        vec![
            api("bearer", bearer(keys.clone(), json!({}))),
            api(
                "raw",
                json!({"header_name": "x-api-token", "issuer_signing_keys": keys}),
            ),
            api(
                "query",
                json!({"query_parameter_name": "access_token", "issuer_signing_keys": keys}),
            ),
            api(
                "either",
                json!({"header_name": "x-api-token", "query_parameter_name": "access_token",
                       "issuer_signing_keys": keys}),
            ),
            api(
                "expr",
                json!({
                    "token_value": "'x-token' in request.headers ? request.headers['x-token'] : ''",
                    "issuer_signing_keys": keys,
                }),
            ),
            api(
                "small",
                bearer(keys.clone(), json!({"max_token_bytes": 600})),
            ),
        ],
    )
    .await;
    let c = claims();
    let t = tokens(vec![
        ("hs", sign("HS256", kit.secret("hmac"), &c, json!({}))),
        // About 7 KB: under the default limit of 8192 bytes.
        (
            "large",
            sign(
                "RS256",
                kit.private("rsa"),
                &claims_with(json!({"pad": "x".repeat(4800)})),
                json!({}),
            ),
        ),
        // About 9 KB: over it.
        (
            "too-large",
            sign(
                "RS256",
                kit.private("rsa"),
                &claims_with(json!({"pad": "x".repeat(6400)})),
                json!({}),
            ),
        ),
    ]);
    let tok = &t["hs"];
    assert!(t["large"].len() < 8192 && t["too-large"].len() > 8192);
    let bearer_tok = format!("Bearer {tok}");

    // Authorization: Bearer.
    ok(&get_bearer(addr, "/bearer", tok).await, "Bearer");
    let lower = format!("bearer {tok}");
    ok(
        &get(addr, "/bearer", &[("authorization", &lower)]).await,
        "the scheme is case-insensitive (RFC 9110 §11.1)",
    );
    refused(
        &get(addr, "/bearer", &[]).await,
        401,
        "missing-token",
        "no Authorization",
    );
    refused(
        &get(addr, "/bearer", &[("authorization", "Basic dXNlcjpwYXNz")]).await,
        401,
        "wrong-scheme",
        "Basic",
    );
    refused(
        &get(addr, "/bearer", &[("authorization", tok)]).await,
        401,
        "wrong-scheme",
        "no scheme at all",
    );
    refused(
        &get(
            addr,
            "/bearer",
            &[
                ("authorization", &bearer_tok),
                ("authorization", &bearer_tok),
            ],
        )
        .await,
        400,
        "ambiguous-token",
        "two Authorization headers",
    );

    // A header without a scheme.
    ok(
        &get(addr, "/raw", &[("x-api-token", tok)]).await,
        "raw header",
    );
    refused(
        &get(addr, "/raw", &[("authorization", &bearer_tok)]).await,
        401,
        "missing-token",
        "the token is looked for in x-api-token only",
    );

    // A query parameter.
    let q = format!("/query?a=1&access_token={tok}");
    ok(&get(addr, &q, &[]).await, "query parameter");
    refused(
        &get(addr, "/query?a=1", &[]).await,
        401,
        "missing-token",
        "no query parameter",
    );

    // Header or query, not both.
    ok(
        &get(addr, "/either", &[("x-api-token", tok)]).await,
        "either: header",
    );
    ok(
        &get(addr, &format!("/either?access_token={tok}"), &[]).await,
        "either: query",
    );
    refused(
        &get(
            addr,
            &format!("/either?access_token={tok}"),
            &[("x-api-token", tok)],
        )
        .await,
        400,
        "ambiguous-token",
        "both header and query",
    );
    refused(
        &get(addr, "/either", &[]).await,
        401,
        "missing-token",
        "neither",
    );

    // An expression.
    ok(
        &get(addr, "/expr", &[("x-token", tok)]).await,
        "token_value",
    );
    refused(
        &get(addr, "/expr", &[("authorization", &bearer_tok)]).await,
        401,
        "missing-token",
        "the expression gives an empty token",
    );

    // Size.
    ok(
        &get_bearer(addr, "/bearer", &t["large"]).await,
        "7 KB token",
    );
    refused(
        &get_bearer(addr, "/bearer", &t["too-large"]).await,
        401,
        "token-too-large",
        "9 KB token, default limit",
    );
    ok(
        &get_bearer(addr, "/small", tok).await,
        "a small token, max 600",
    );
    refused(
        &get_bearer(addr, "/small", &t["large"]).await,
        401,
        "token-too-large",
        "7 KB token, max 600",
    );
    finish(gw).await;
}

/// `failed_validation_httpcode` and `failed_validation_error_message`
/// change every refusal but the ambiguous request (always 400); the
/// default 401s carry RFC 6750 challenges.
#[tokio::test]
async fn failed_validation_status_message_and_challenges() {
    let kit = Kit::new();
    let keys = json!([{"pem": kit.public("rsa")}]);
    let (gw, addr) = start(
        "jwt-status",
        vec![
            api("default", bearer(keys.clone(), json!({}))),
            api(
                "custom",
                bearer(
                    keys,
                    json!({"failed_validation_httpcode": 403,
                           "failed_validation_error_message": "access token refused"}),
                ),
            ),
        ],
    )
    .await;
    let t = tokens(vec![
        (
            "good",
            sign("RS256", kit.private("rsa"), &claims(), json!({})),
        ),
        (
            "expired",
            sign(
                "RS256",
                kit.private("rsa"),
                &claims_with(json!({"exp": now() - 3600})),
                json!({}),
            ),
        ),
    ]);
    let good_bearer = format!("Bearer {}", t["good"]);

    // Defaults: 401 with a challenge, a detail of the policy's own.
    let f = refused(
        &get(addr, "/default", &[]).await,
        401,
        "missing-token",
        "default, missing",
    );
    assert!(f["detail"].as_str().is_some_and(|d| !d.is_empty()), "{f}");
    let r = get_bearer(addr, "/default", &t["expired"]).await;
    let f = refused(&r, 401, "expired", "default, expired");
    let detail = f["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty() && detail != "access token refused",
        "{f}"
    );
    assert!(f["title"].as_str().is_some_and(|d| !d.is_empty()), "{f}");
    refused(
        &get(
            addr,
            "/default",
            &[
                ("authorization", &good_bearer),
                ("authorization", &good_bearer),
            ],
        )
        .await,
        400,
        "ambiguous-token",
        "default, two headers",
    );

    // Custom status and message.
    ok(
        &get_bearer(addr, "/custom", &t["good"]).await,
        "custom, good",
    );
    for (r, code) in [
        (get(addr, "/custom", &[]).await, "missing-token"),
        (get_bearer(addr, "/custom", &t["expired"]).await, "expired"),
        (get_bearer(addr, "/custom", "a.b").await, "malformed-token"),
    ] {
        let f = refused(&r, 403, code, code);
        assert_eq!(f["detail"], "access token refused", "{code}");
    }
    refused(
        &get(
            addr,
            "/custom",
            &[
                ("authorization", &good_bearer),
                ("authorization", &good_bearer),
            ],
        )
        .await,
        400,
        "ambiguous-token",
        "custom, two headers: still 400",
    );
    finish(gw).await;
}

// === claims ===

/// `exp` is required by default; `exp` and `nbf` are checked with
/// `clock_skew` seconds of tolerance.
#[tokio::test]
async fn time_claims_and_clock_skew() {
    let kit = Kit::new();
    let keys = json!([{"pem": kit.public("ec256")}]);
    let (gw, addr) = start(
        "jwt-time",
        vec![
            api("strict", bearer(keys.clone(), json!({}))),
            api("skew", bearer(keys.clone(), json!({"clock_skew": 300}))),
            api(
                "no-exp-ok",
                bearer(keys, json!({"require_expiration_time": false})),
            ),
        ],
    )
    .await;
    let n = now();
    let signed = |extra: Value| {
        sign(
            "ES256",
            kit.private("ec256"),
            &claims_with(extra),
            json!({}),
        )
    };
    let t = tokens(vec![
        ("fresh", signed(json!({}))),
        ("no-exp", signed(json!({"exp": null}))),
        ("expired-2m", signed(json!({"exp": n - 120}))),
        ("expired-10m", signed(json!({"exp": n - 600}))),
        ("nbf-in-2m", signed(json!({"nbf": n + 120}))),
        ("nbf-in-10m", signed(json!({"nbf": n + 600}))),
        ("nbf-past", signed(json!({"nbf": n - 60}))),
    ]);
    let at = |path: &'static str, name: &'static str| {
        let token = t[name].clone();
        async move { get_bearer(addr, path, &token).await }
    };
    ok(&at("/strict", "fresh").await, "fresh");
    ok(&at("/strict", "nbf-past").await, "nbf in the past");
    refused(
        &at("/strict", "no-exp").await,
        401,
        "missing-expiration",
        "no exp",
    );
    refused(
        &at("/strict", "expired-2m").await,
        401,
        "expired",
        "expired 2 min ago",
    );
    refused(
        &at("/strict", "nbf-in-2m").await,
        401,
        "not-yet-valid",
        "nbf in 2 min",
    );

    ok(
        &at("/skew", "expired-2m").await,
        "expired 2 min ago, skew 5 min",
    );
    ok(&at("/skew", "nbf-in-2m").await, "nbf in 2 min, skew 5 min");
    refused(
        &at("/skew", "expired-10m").await,
        401,
        "expired",
        "expired 10 min ago, skew 5 min",
    );
    refused(
        &at("/skew", "nbf-in-10m").await,
        401,
        "not-yet-valid",
        "nbf in 10 min, skew 5 min",
    );
    refused(
        &at("/skew", "no-exp").await,
        401,
        "missing-expiration",
        "skew, no exp",
    );

    ok(&at("/no-exp-ok", "no-exp").await, "exp not required");
    refused(
        &at("/no-exp-ok", "expired-2m").await,
        401,
        "expired",
        "exp not required, but checked when present",
    );
    finish(gw).await;
}

/// `audiences` (a string or a list in the token) and `issuers`, compared
/// exactly.
#[tokio::test]
async fn audiences_and_issuers() {
    let kit = Kit::new();
    let (gw, addr) = start(
        "jwt-aud-iss",
        vec![api(
            "app",
            bearer(
                json!([{"pem": kit.public("ed25519")}]),
                json!({"audiences": [AUD, "api://billing"],
                       "issuers": [ISS, "https://issuer2.test"]}),
            ),
        )],
    )
    .await;
    let signed = |extra: Value| {
        sign(
            "EdDSA",
            kit.private("ed25519"),
            &claims_with(extra),
            json!({}),
        )
    };
    let t = tokens(vec![
        ("good", signed(json!({}))),
        ("aud-second", signed(json!({"aud": "api://billing"}))),
        ("aud-list", signed(json!({"aud": ["api://other", AUD]}))),
        ("aud-wrong", signed(json!({"aud": "api://other"}))),
        (
            "aud-list-wrong",
            signed(json!({"aud": ["api://a", "api://b"]})),
        ),
        ("aud-missing", signed(json!({"aud": null}))),
        ("iss-second", signed(json!({"iss": "https://issuer2.test"}))),
        ("iss-wrong", signed(json!({"iss": "https://evil.test"}))),
        ("iss-case", signed(json!({"iss": "HTTPS://ISSUER.TEST"}))),
        ("iss-missing", signed(json!({"iss": null}))),
    ]);
    for name in ["good", "aud-second", "aud-list", "iss-second"] {
        ok(&get_bearer(addr, "/app", &t[name]).await, name);
    }
    for name in ["aud-wrong", "aud-list-wrong", "aud-missing"] {
        refused(
            &get_bearer(addr, "/app", &t[name]).await,
            401,
            "wrong-audience",
            name,
        );
    }
    for name in ["iss-wrong", "iss-case", "iss-missing"] {
        refused(
            &get_bearer(addr, "/app", &t[name]).await,
            401,
            "wrong-issuer",
            name,
        );
    }
    finish(gw).await;
}

/// `required_claims`: presence only, `match: all` (the default) and
/// `any`, over a list claim or a string split at `separator`.
#[tokio::test]
async fn required_claims_all_any_and_separator() {
    let kit = Kit::new();
    let keys = json!([{"base64": kit.secret("hmac")}]);
    let with_claims = |name: &str, required: Value| {
        api(
            name,
            bearer(keys.clone(), json!({"required_claims": required})),
        )
    };
    let (gw, addr) = start(
        "jwt-claims",
        vec![
            with_claims("present", json!([{"name": "tenant"}])),
            with_claims("scalar", json!([{"name": "tid", "values": ["t1"]}])),
            with_claims("all", json!([{"name": "roles", "values": ["read", "write"]}])),
            with_claims(
                "any",
                json!([{"name": "roles", "match": "any", "values": ["admin", "ops"]}]),
            ),
            with_claims(
                "any-sep",
                json!([{"name": "scp", "match": "any", "separator": " ", "values": ["read", "write"]}]),
            ),
            with_claims(
                "all-sep",
                json!([{"name": "scp", "match": "all", "separator": " ", "values": ["read", "write"]}]),
            ),
            with_claims(
                "two",
                json!([{"name": "tenant"}, {"name": "tid", "values": ["t1"]}]),
            ),
        ],
    )
    .await;
    let signed = |extra: Value| sign("HS512", kit.secret("hmac"), &claims_with(extra), json!({}));
    let t = tokens(vec![
        ("plain", signed(json!({}))),
        ("tenant", signed(json!({"tenant": "acme"}))),
        ("tid-t1", signed(json!({"tid": "t1"}))),
        ("tid-t2", signed(json!({"tid": "t2"}))),
        ("tenant-tid", signed(json!({"tenant": "acme", "tid": "t1"}))),
        (
            "roles-rw",
            signed(json!({"roles": ["write", "admin", "read"]})),
        ),
        ("roles-r", signed(json!({"roles": ["read"]}))),
        ("roles-ops", signed(json!({"roles": ["user", "ops"]}))),
        ("roles-user", signed(json!({"roles": ["user"]}))),
        ("scp-write", signed(json!({"scp": "openid write"}))),
        ("scp-rw", signed(json!({"scp": "write profile read"}))),
        ("scp-none", signed(json!({"scp": "openid profile"}))),
        ("scp-glued", signed(json!({"scp": "readwrite"}))),
        ("scp-read", signed(json!({"scp": "read profile"}))),
    ]);
    let cases: [(&str, &str, Option<&str>); 20] = [
        ("/present", "tenant", None),
        ("/present", "plain", Some("missing-claim")),
        ("/scalar", "tid-t1", None),
        ("/scalar", "tid-t2", Some("claim-mismatch")),
        ("/scalar", "plain", Some("missing-claim")),
        ("/all", "roles-rw", None),
        ("/all", "roles-r", Some("claim-mismatch")),
        ("/all", "plain", Some("missing-claim")),
        ("/any", "roles-ops", None),
        ("/any", "roles-user", Some("claim-mismatch")),
        ("/any-sep", "scp-write", None),
        ("/any-sep", "scp-rw", None),
        ("/any-sep", "scp-none", Some("claim-mismatch")),
        ("/any-sep", "scp-glued", Some("claim-mismatch")),
        ("/any-sep", "plain", Some("missing-claim")),
        ("/all-sep", "scp-rw", None),
        ("/all-sep", "scp-read", Some("claim-mismatch")),
        ("/two", "tenant-tid", None),
        ("/two", "tid-t1", Some("missing-claim")),
        ("/two", "tenant", Some("missing-claim")),
    ];
    for (path, name, verdict) in cases {
        let r = get_bearer(addr, path, &t[name]).await;
        let what = format!("{path} with {name}");
        match verdict {
            None => ok(&r, &what),
            Some(code) => {
                refused(&r, 401, code, &what);
            }
        }
    }
    finish(gw).await;
}

/// `output_token_variable_name`: the claims as JSON in `vars.jwt`, each
/// top-level claim in `vars['jwt.<claim>']` (strings raw, the rest as
/// JSON), read by `set-header` expressions after the policy.
#[tokio::test]
async fn claims_are_context_variables_for_later_policies() {
    let kit = Kit::new();
    let header = |name: &str, expression: &str| json!({"set-header": {"name": name, "expression": expression}});
    let (gw, addr) = start(
        "jwt-vars",
        vec![api_then(
            "app",
            bearer(
                json!([{"pem": kit.public("rsa")}]),
                json!({"output_token_variable_name": "jwt"}),
            ),
            vec![
                header("x-sub", "vars['jwt.sub']"),
                header("x-aud", "vars['jwt.aud']"),
                header("x-exp", "vars['jwt.exp']"),
                header("x-admin", "vars['jwt.admin']"),
                header("x-ctx", "vars['jwt.ctx']"),
                header("x-claims", "vars.jwt"),
            ],
        )],
    )
    .await;
    let c = claims_with(json!({
        "aud": [AUD, "api://billing"],
        "admin": true,
        "ctx": {"tenant": "acme", "level": 3},
    }));
    let t = tokens(vec![(
        "t",
        sign("PS256", kit.private("rsa"), &c, json!({})),
    )]);
    let r = get_bearer(addr, "/app", &t["t"]).await;
    ok(&r, "valid token");
    let h = &r.json()["headers"];
    let parsed = |name: &str| -> Value {
        let text = h[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {h}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text}"))
    };
    assert_eq!(h["x-sub"], "alice", "a string claim is raw: {h}");
    assert_eq!(parsed("x-aud"), json!([AUD, "api://billing"]));
    assert_eq!(h["x-exp"], c["exp"].to_string(), "{h}");
    assert_eq!(h["x-admin"], "true", "{h}");
    assert_eq!(parsed("x-ctx"), json!({"tenant": "acme", "level": 3}));
    assert_eq!(parsed("x-claims"), c, "every claim in vars.jwt");
    finish(gw).await;
}

// === keys by reference ===

/// Keys given as `{{ref:name}}`: an HMAC secret and an RSA decryption key
/// held as secret named values reach the host's crypto by reference; the
/// faults never show them.
#[tokio::test]
async fn keys_by_secret_reference() {
    let kit = Kit::new();
    let dir = TempDir::new("jwt-ref");
    dir.write("enc.pem", kit.private("rsa_enc"));
    let yaml = format!(
        r#"
listeners: [{{name: main, address: "127.0.0.1:0"}}]
upstreams: {{echo: {{url: "builtin:echo"}}}}
named_values:
  jwt-key: {{value: "{hmac}", secret: true}}
  enc-key: {{file: enc.pem, secret: true}}
apis:
  - name: ref
    path: /ref
    upstream: echo
    policies:
      inbound:
        - validate-jwt:
            header_name: authorization
            require_scheme: Bearer
            issuer_signing_keys:
              - base64: "{{{{ref:jwt-key}}}}"
            decryption_keys:
              - pem: "{{{{ref:enc-key}}}}"
"#,
        hmac = kit.secret("hmac")
    );
    let gw = Gw::start(dir, &yaml).await;
    let addr = gw.addr("main");
    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
    let inner = tokens(vec![
        (
            "good",
            sign("HS256", kit.secret("hmac"), &claims(), json!({})),
        ),
        ("forged", sign("HS256", &other, &claims(), json!({}))),
    ]);
    let rsa_enc = kit.0["rsa_enc"]["jwk"].to_string();
    let t = tokens(vec![(
        "jwe",
        encrypt(&inner["good"], "RSA-OAEP-256", "A256GCM", &rsa_enc, None),
    )]);
    ok(
        &get_bearer(addr, "/ref", &inner["good"]).await,
        "HS256, key by reference",
    );
    ok(
        &get_bearer(addr, "/ref", &t["jwe"]).await,
        "JWE, key by reference",
    );
    let r = get_bearer(addr, "/ref", &inner["forged"]).await;
    refused(&r, 401, "invalid-signature", "HS256 with another secret");
    let text = format!("{}{:?}", body(&r), r.headers);
    assert!(
        !text.contains(kit.secret("hmac")),
        "the secret leaked: {text}"
    );
    finish(gw).await;
}

// === key sets from an OpenID provider ===

/// Keys from a discovery document: fetched once and cached; after the
/// provider rotates, the first token with the new kid waits for a
/// refetch and passes; another unknown kid within `min_refetch_seconds`
/// is refused at once without a fetch; while the provider answers 503,
/// then while it is down, known kids keep working; it comes back and new
/// kids are found again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_discovery_rotation_and_outage() {
    let kit = Kit::new();
    let k = |kid: &str, key: &str, alg: &str| {
        sign(alg, kit.private(key), &claims(), json!({"kid": kid}))
    };
    // Minted before the gateway starts: nothing blocks the provider later.
    let t = tokens(vec![
        ("k1", k("k1", "rsa", "RS256")),
        ("k2", k("k2", "rsa2", "RS256")),
        ("k3", k("k3", "rsa2", "RS256")),
        ("k4", k("k4", "rsa2", "RS256")),
        ("k5", k("k5", "rsa2", "RS256")),
        ("k6", k("k6", "ec256", "ES256")),
        ("k2-forged", k("k2", "rsa", "RS256")),
    ]);
    let mut provider = Provider::start().await;
    provider.serve(
        DISCOVERY,
        200,
        json!({"issuer": ISS, "jwks_uri": provider.url("/jwks")}),
    );
    provider.serve("/jwks", 200, jwks(&[kit.jwk("rsa", "k1")]));
    let min_refetch = Duration::from_secs(2);
    let past_min_refetch = min_refetch + Duration::from_millis(600);
    let (gw, addr) = start(
        "jwt-openid",
        vec![api(
            "app",
            json!({
                "header_name": "authorization",
                "require_scheme": "Bearer",
                "openid_config": [{
                    "url": provider.url(DISCOVERY),
                    "min_refetch_seconds": 2,
                    "unknown_kid_wait_ms": 10000,
                }],
                "issuers": [ISS],
            }),
        )],
    )
    .await;
    let call = |name: &str| {
        let token = t[name].clone();
        async move { get_bearer(addr, "/app", &token).await }
    };

    // The first request is served with the provider's keys.
    ok(&call("k1").await, "k1, the provider's key");
    assert!(
        provider.hits(DISCOVERY) >= 1,
        "the discovery document was read"
    );
    let fetched = provider.hits("/jwks");
    assert!(fetched >= 1, "the key set was fetched");
    ok(&call("k1").await, "k1 again");
    assert_eq!(
        provider.hits("/jwks"),
        fetched,
        "a known kid needs no fetch"
    );

    // Rotation: k1 retired, k2 published. The first k2 token waits for the
    // refetch and passes.
    provider.serve("/jwks", 200, jwks(&[kit.jwk("rsa2", "k2")]));
    tokio::time::sleep(past_min_refetch).await;
    ok(&call("k2").await, "k2, right after the rotation");
    let fetched = provider.hits("/jwks");
    assert!(fetched >= 2, "the unknown kid refetched the key set");
    refused(
        &call("k2-forged").await,
        401,
        "invalid-signature",
        "k2 signed with another key",
    );

    // Another unknown kid within min_refetch_seconds: refused at once,
    // without a fetch. The retired k1 is now unknown as well.
    let started = Instant::now();
    refused(&call("k3").await, 401, "unknown-kid", "k3, never published");
    // (Waiting would take the whole unknown_kid_wait_ms, 10 s, since no
    // fetch runs: the bound only tells "waited" from "did not".)
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a rate-limited unknown kid must not wait ({:?})",
        started.elapsed()
    );
    refused(&call("k1").await, 401, "unknown-kid", "k1, retired");
    assert_eq!(
        provider.hits("/jwks"),
        fetched,
        "no refetch within min_refetch_seconds"
    );

    // The provider answers 503: an unknown kid tries (and fails) to
    // refetch; the last good set still validates k2.
    provider.serve("/jwks", 503, "{\"error\":\"down\"}");
    tokio::time::sleep(past_min_refetch).await;
    refused(
        &call("k4").await,
        401,
        "unknown-kid",
        "k4 while the provider answers 503",
    );
    assert!(provider.hits("/jwks") > fetched, "the refetch was tried");
    ok(&call("k2").await, "k2 from the last good set (503)");

    // The provider's listener is closed.
    provider.stop().await;
    ok(&call("k2").await, "k2 from the last good set (closed)");
    tokio::time::sleep(past_min_refetch).await;
    refused(
        &call("k5").await,
        401,
        "unknown-kid",
        "k5 while the provider is down",
    );
    ok(&call("k2").await, "k2 still, after a failed refetch");

    // Back, with a new key.
    provider.serve(
        "/jwks",
        200,
        jwks(&[kit.jwk("rsa2", "k2"), kit.jwk("ec256", "k6")]),
    );
    provider.restart().await;
    tokio::time::sleep(past_min_refetch).await;
    let before = provider.hits("/jwks");
    ok(&call("k6").await, "k6, after the provider came back");
    assert!(provider.hits("/jwks") > before, "k6 was fetched");
    ok(&call("k2").await, "k2 after the provider came back");
    finish(gw).await;
}

/// A JWKS URL given directly (no discovery), with keys of every
/// asymmetric type, each chosen by kid; nothing is refetched while every
/// kid is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_directly_with_every_key_type() {
    let kit = Kit::new();
    let set = [
        ("rsa", "RS256"),
        ("ec256", "ES256"),
        ("ec384", "ES384"),
        ("ec521", "ES512"),
        ("ed25519", "EdDSA"),
    ];
    let mut reqs: Vec<(&str, Value)> = set
        .iter()
        .map(|(key, alg)| {
            (
                *key,
                sign(alg, kit.private(key), &claims(), json!({"kid": key})),
            )
        })
        .collect();
    reqs.push((
        "ps",
        sign(
            "PS384",
            kit.private("rsa"),
            &claims(),
            json!({"kid": "rsa"}),
        ),
    ));
    reqs.push((
        "curve-mismatch",
        sign(
            "ES384",
            kit.private("ec384"),
            &claims(),
            json!({"kid": "ec256"}),
        ),
    ));
    reqs.push((
        "forged",
        sign(
            "RS256",
            kit.private("rsa2"),
            &claims(),
            json!({"kid": "rsa"}),
        ),
    ));
    let t = tokens(reqs);
    let provider = Provider::start().await;
    let keys: Vec<Value> = set.iter().map(|(key, _)| kit.jwk(key, key)).collect();
    provider.serve("/keys.json", 200, jwks(&keys));
    let (gw, addr) = start(
        "jwt-jwks",
        vec![api(
            "app",
            json!({
                "header_name": "authorization",
                "require_scheme": "Bearer",
                "openid_config": [{"url": provider.url("/keys.json")}],
            }),
        )],
    )
    .await;
    ok(&get_bearer(addr, "/app", &t["rsa"]).await, "RS256");
    let fetched = provider.hits("/keys.json");
    assert!(fetched >= 1, "the key set was fetched");
    for (key, alg) in &set[1..] {
        ok(&get_bearer(addr, "/app", &t[*key]).await, alg);
    }
    ok(
        &get_bearer(addr, "/app", &t["ps"]).await,
        "PS384 with the RSA JWK",
    );
    refused(
        &get_bearer(addr, "/app", &t["curve-mismatch"]).await,
        401,
        "algorithm-mismatch",
        "ES384 naming a P-256 key",
    );
    refused(
        &get_bearer(addr, "/app", &t["forged"]).await,
        401,
        "invalid-signature",
        "kid rsa, signed by another RSA key",
    );
    assert_eq!(
        provider.hits("/keys.json"),
        fetched,
        "no refetch for known kids"
    );
    finish(gw).await;
}

/// A provider that never gave a key set (nothing listens, it answers 503,
/// it answers something that is not a key set): `keys-unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unavailable_when_the_provider_never_answers() {
    let kit = Kit::new();
    let t = tokens(vec![
        (
            "kid",
            sign("RS256", kit.private("rsa"), &claims(), json!({"kid": "k1"})),
        ),
        (
            "no-kid",
            sign("RS256", kit.private("rsa"), &claims(), json!({})),
        ),
    ]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = Provider::start().await;
    provider.serve("/down", 503, "{\"error\":\"down\"}");
    provider.serve("/garbage", 200, "<html>not a key set</html>");
    let openid = |name: &str, url: String| {
        api(
            name,
            json!({
                "header_name": "authorization",
                "require_scheme": "Bearer",
                "openid_config": [{"url": url, "unknown_kid_wait_ms": 500}],
            }),
        )
    };
    let (gw, addr) = start(
        "jwt-unavailable",
        vec![
            openid("closed", format!("http://{closed}{DISCOVERY}")),
            openid("down", provider.url("/down")),
            openid("garbage", provider.url("/garbage")),
        ],
    )
    .await;
    for path in ["/closed", "/down", "/garbage"] {
        for name in ["kid", "no-kid"] {
            refused(
                &get_bearer(addr, path, &t[name]).await,
                401,
                "keys-unavailable",
                &format!("{path}, {name}"),
            );
        }
    }
    assert!(provider.hits("/down") >= 1 && provider.hits("/garbage") >= 1);
    finish(gw).await;
}
