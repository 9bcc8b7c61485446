//! Key sets fetched from a JWKS URL or an OpenID Connect discovery
//! document, kept fresh by the host.
//!
//! Every policy instance that opens the same URL with the same options
//! shares one [`KeySet`] (a process-wide registry of weak references), so
//! a pool of instances, a reload, and two APIs naming one provider fetch
//! it once. The fetching runs on one service thread of the host's own
//! (`gatehouse-keysets`, a current-thread tokio runtime): a task per key
//! set fetches at once, then again when the response's
//! `Cache-Control: max-age` (held within 60..86400 s; 3600 without one)
//! or the configured `refresh-seconds` runs out; after a failure it
//! retries sooner (5 s doubling up to 5 min) and keeps the last good keys.
//!
//! A token whose `kid` is in no key asks for a refetch, at most once per
//! `min-refetch-seconds`; the request then waits for that fetch (up to
//! `unknown-kid-wait-ms`) in the pipeline, outside any policy call, and
//! the policy is called once more ([`PendingRefetch`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use super::keys::VerifyKey;
use super::{Algorithm, VerifyError};

/// The most a JWKS or discovery document may be.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most keys a set may hold.
const MAX_KEYS: usize = 100;

static FETCH_LOG: crate::observe::LogBudget = crate::observe::LogBudget::new();

/// How a key set is kept fresh (see the WIT `key-set-options`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// A fixed refresh interval, instead of the cache headers.
    pub refresh: Option<Duration>,
    /// The least time between two refetches for unknown `kid`s.
    pub min_refetch: Duration,
    /// How long a request with an unknown `kid` waits for the refetch.
    pub unknown_kid_wait: Duration,
    /// PEM CA certificates for `https://`; `None`: the system's roots.
    pub ca_pem: Option<String>,
}

/// What the last fetches gave.
#[derive(Default)]
struct Snapshot {
    keys: Arc<Vec<VerifyKey>>,
    /// The `keys` member as fetched, to tell whether a refetch changed it.
    raw: serde_json::Value,
    issuer: Option<String>,
    generation: u64,
    /// Whether keys were ever fetched.
    fetched: bool,
    /// The last attempt's error, when it failed.
    error: Option<String>,
}

/// A refetch asked for: the number of fetch attempts finished when it was.
struct Refetch {
    at: Instant,
    attempts: u64,
}

/// A key set.
pub struct KeySet {
    url: String,
    options: Options,
    tls: Option<Arc<rustls::ClientConfig>>,
    state: ArcSwap<Snapshot>,
    /// Wakes the fetch task early (a refetch, or this set's end).
    wake: Arc<Notify>,
    /// Fetch attempts finished, success or not.
    attempts: watch::Sender<u64>,
    last_refetch: Mutex<Option<Refetch>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("url", &self.url).finish()
    }
}

impl Drop for KeySet {
    fn drop(&mut self) {
        // The task sees the set gone and ends.
        self.wake.notify_one();
    }
}

type Registry = Mutex<HashMap<(String, Options), Weak<KeySet>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The service thread's runtime.
fn runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static RT: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("gatehouse-keysets".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("cannot start the key set runtime: {e}")));
                    }
                }
            })
            .map_err(|e| format!("cannot start the key set thread: {e}"))?;
        rx.recv()
            .map_err(|_| "the key set thread ended at start".to_string())?
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn tls_for(url: &str, ca_pem: Option<&str>) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| format!("`ca_pem` is not PEM: {e:?}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("`ca_pem` holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("`ca_pem` holds no certificate".into());
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(cfg)))
}

impl KeySet {
    /// The shared key set for `url` and `options`, fetching from now on.
    ///
    /// # Errors
    ///
    /// A URL that is not `http(s)://`, bad `ca_pem`, or no service thread.
    pub fn open(url: &str, options: Options) -> Result<Arc<KeySet>, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        }
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        let key = (url.to_string(), options.clone());
        if let Some(ks) = reg.get(&key).and_then(Weak::upgrade) {
            return Ok(ks);
        }
        let tls = tls_for(url, options.ca_pem.as_deref())?;
        let rt = runtime()?;
        let ks = Arc::new(KeySet {
            url: url.to_string(),
            options,
            tls,
            state: ArcSwap::from_pointee(Snapshot::default()),
            wake: Arc::new(Notify::new()),
            attempts: watch::Sender::new(0),
            last_refetch: Mutex::new(None),
        });
        rt.spawn(run(Arc::downgrade(&ks), ks.wake.clone()));
        reg.insert(key, Arc::downgrade(&ks));
        Ok(ks)
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The discovery document's `issuer`.
    pub fn issuer(&self) -> Option<String> {
        self.state.load().issuer.clone()
    }

    /// The last attempt's error.
    pub fn status(&self) -> Option<String> {
        self.state.load().error.clone()
    }

    /// Changes whenever the keys change.
    pub fn generation(&self) -> u64 {
        self.state.load().generation
    }

    /// Verifies with the key `kid`, or without one with each key in turn.
    ///
    /// # Errors
    ///
    /// See [`VerifyError`]. Without a `kid`, and no key that permits
    /// `alg`: `KeyForbidsAlgorithm`.
    pub fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        input: &[u8],
        sig: &[u8],
    ) -> Result<(), VerifyError> {
        let s = self.state.load();
        if !s.fetched {
            return Err(VerifyError::KeysUnavailable);
        }
        let mut outcome = Err(match kid {
            Some(_) => VerifyError::UnknownKid,
            None => VerifyError::KeyForbidsAlgorithm,
        });
        for k in s.keys.iter() {
            if kid.is_some() && k.kid() != kid {
                continue;
            }
            match k.verify(alg, input, sig) {
                Ok(()) => return Ok(()),
                Err(VerifyError::BadSignature) => outcome = Err(VerifyError::BadSignature),
                Err(e) => {
                    if outcome != Err(VerifyError::BadSignature) {
                        outcome = Err(e);
                    }
                }
            }
        }
        outcome
    }

    /// Asks for a refetch because a token named an unknown `kid` (or the
    /// set was never fetched); `seen_generation` is the generation of the
    /// keys that did not have it, read before the verification, so that a
    /// fetch landing in between still counts as a change. Returns what to
    /// wait for — the fetch just asked for, or one in flight — or `None`
    /// when one finished less than `min_refetch` ago (the request is
    /// refused at once).
    pub fn request_refetch(self: &Arc<Self>, seen_generation: u64) -> Option<PendingRefetch> {
        let now_attempts = *self.attempts.borrow();
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        let wait = match &*last {
            // Still in flight: wait for it too.
            Some(r) if r.attempts == now_attempts => r.attempts,
            Some(r) if r.at.elapsed() < self.options.min_refetch => return None,
            _ => {
                *last = Some(Refetch {
                    at: Instant::now(),
                    attempts: now_attempts,
                });
                self.wake.notify_one();
                now_attempts
            }
        };
        drop(last);
        if self.options.unknown_kid_wait.is_zero() {
            return None;
        }
        Some(PendingRefetch {
            seen_generation,
            set: self.clone(),
            seen: wait,
            step: usize::MAX,
            completion_len: 0,
        })
    }
}

/// A request that found an unknown `kid` and may wait for the refetch it
/// caused, then run its policy again. Set by the host in the exchange; the
/// chain runner fills in the step.
pub struct PendingRefetch {
    set: Arc<KeySet>,
    seen: u64,
    seen_generation: u64,
    /// The index of the chain step that asked.
    pub step: usize,
    /// How many completion steps were recorded before that step ran.
    pub completion_len: usize,
}

impl std::fmt::Debug for PendingRefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRefetch")
            .field("url", &self.set.url)
            .field("step", &self.step)
            .finish()
    }
}

impl PendingRefetch {
    /// The key set's URL.
    pub fn url(&self) -> &str {
        &self.set.url
    }

    /// Waits for the fetch attempt, at most the set's `unknown_kid_wait`.
    /// True when it finished and changed the keys.
    pub async fn wait(&self) -> bool {
        let mut rx = self.set.attempts.subscribe();
        let seen = self.seen;
        let done = tokio::time::timeout(
            self.set.options.unknown_kid_wait,
            rx.wait_for(|a| *a > seen),
        )
        .await;
        matches!(done, Ok(Ok(_))) && self.set.generation() != self.seen_generation
    }
}

/// The fetch task of one key set: until the set is gone.
async fn run(set: Weak<KeySet>, wake: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        let Some(ks) = set.upgrade() else {
            return;
        };
        let delay = match fetch(&ks.url, ks.tls.as_ref()).await {
            Ok(fetched) => {
                failures = 0;
                let old = ks.state.load();
                let changed = !old.fetched || old.raw != fetched.raw;
                if !fetched.skipped.is_empty() {
                    if let Some(suppressed) = FETCH_LOG.allow(5) {
                        tracing::warn!(suppressed, url = %ks.url, "key set: keys skipped: {}", fetched.skipped.join("; "));
                    }
                }
                ks.state.store(Arc::new(Snapshot {
                    generation: old.generation + u64::from(changed),
                    keys: Arc::new(fetched.keys),
                    raw: fetched.raw,
                    issuer: fetched.issuer,
                    fetched: true,
                    error: None,
                }));
                if changed {
                    tracing::info!(url = %ks.url, generation = old.generation + 1, "key set fetched");
                }
                ks.options.refresh.unwrap_or(fetched.max_age)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if let Some(suppressed) = FETCH_LOG.allow(5) {
                    tracing::warn!(suppressed, url = %ks.url, "key set fetch failed, the last good keys stay in use: {e}");
                }
                let old = ks.state.load();
                ks.state.store(Arc::new(Snapshot {
                    keys: old.keys.clone(),
                    raw: old.raw.clone(),
                    issuer: old.issuer.clone(),
                    generation: old.generation,
                    fetched: old.fetched,
                    error: Some(e),
                }));
                let backoff = Duration::from_secs(5 << failures.min(6).saturating_sub(1))
                    .min(Duration::from_secs(300));
                ks.options.refresh.map_or(backoff, |r| r.min(backoff))
            }
        };
        ks.attempts.send_modify(|a| *a += 1);
        drop(ks);
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = wake.notified() => {}
            }
            let Some(ks) = set.upgrade() else {
                return;
            };
            // A refetch asked for while the last fetch was in flight was
            // answered by it (its requests wait for any attempt after the
            // one they saw): the wake it left is spent, not a new fetch.
            let answered = ks
                .last_refetch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|r| r.attempts < *ks.attempts.borrow());
            if !answered {
                break;
            }
        }
    }
}

struct FetchedKeys {
    keys: Vec<VerifyKey>,
    raw: serde_json::Value,
    issuer: Option<String>,
    max_age: Duration,
    skipped: Vec<String>,
}

async fn get_json(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(serde_json::Value, Option<Duration>), String> {
    let got = crate::fetch::get(url, tls, MAX_DOCUMENT_BYTES, FETCH_TIMEOUT).await?;
    if !got.status.is_success() {
        return Err(format!("{url} answered {}", got.status));
    }
    let doc =
        serde_json::from_slice(&got.body).map_err(|e| format!("{url} did not answer JSON: {e}"))?;
    Ok((doc, max_age(&got.headers)))
}

/// `Cache-Control: max-age`, held within 60 s..24 h.
fn max_age(h: &http::HeaderMap) -> Option<Duration> {
    let cc = h.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    let secs = cc.split(',').find_map(|d| {
        d.trim()
            .strip_prefix("max-age=")
            .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
    })?;
    Some(Duration::from_secs(secs.clamp(60, 86_400)))
}

async fn fetch(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<FetchedKeys, String> {
    let (doc, age) = get_json(url, tls).await?;
    let (jwks, age, issuer) = if let Some(jwks_uri) = doc.get("jwks_uri").and_then(|v| v.as_str()) {
        let issuer = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let jwks_tls;
        let tls = if jwks_uri.starts_with("https://") && tls.is_none() {
            jwks_tls = tls_for(jwks_uri, None)?;
            jwks_tls.as_ref()
        } else {
            tls
        };
        let (jwks, jwks_age) = get_json(jwks_uri, tls).await?;
        (jwks, jwks_age.or(age), issuer)
    } else {
        (doc, age, None)
    };
    let Some(list) = jwks.get("keys").and_then(|k| k.as_array()) else {
        return Err(format!(
            "{url} is neither a JWKS (`keys`) nor an OpenID discovery document (`jwks_uri`)"
        ));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in list.iter().take(MAX_KEYS).enumerate() {
        let label = k
            .get("kid")
            .and_then(|v| v.as_str())
            .map_or_else(|| format!("key #{i}"), |kid| format!("key `{kid}`"));
        if k.get("use").and_then(|v| v.as_str()) == Some("enc") {
            continue;
        }
        match VerifyKey::from_jwk(k) {
            Ok(key) => keys.push(key),
            Err(e) => skipped.push(format!("{label}: {e}")),
        }
    }
    if keys.is_empty() {
        return Err(if skipped.is_empty() {
            format!("{url}: the key set has no signature keys")
        } else {
            format!(
                "{url}: no key of the set can be used: {}",
                skipped.join("; ")
            )
        });
    }
    Ok(FetchedKeys {
        keys,
        raw: jwks.get("keys").cloned().unwrap_or_default(),
        issuer,
        max_age: age.unwrap_or(Duration::from_secs(3600)),
        skipped,
    })
}
