//! CRLs fetched from URLs (a CA's distribution point), for hosts that ask
//! for client certificates: fetched when the config is loaded, then again
//! every `crl_refresh_seconds` by a service thread of the host's own, and
//! swapped into the host's verifier while it runs. A fetch that fails
//! keeps the last good CRL (and is logged, rate-limited); what a CRL past
//! its next update means is the host's `stale_crl`.
//!
//! The fetch is a plain HTTP GET (CRLs are signed by their CA, so they are
//! published over `http://`), through hyper on a runtime of the fetching
//! thread's own: loading the config may happen on any thread, including
//! one inside a tokio runtime.

use std::sync::Weak;
use std::time::Duration;

use rustls::pki_types::CertificateRevocationListDer;

/// The most a CRL download may be.
const MAX_CRL_BYTES: usize = 16 << 20;
/// How long one download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

static FETCH_LOG: crate::observe::LogBudget = crate::observe::LogBudget::new();

/// Fetches the CRLs at `url` (DER, or PEM with one or more CRLs) on a
/// thread of its own, waiting for it.
///
/// # Errors
///
/// Why it could not be fetched or read, naming the URL.
pub fn fetch_blocking(url: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let url = url.to_string();
    std::thread::Builder::new()
        .name("gatehouse-crl-fetch".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime to fetch {url}: {e}"))?;
            rt.block_on(fetch(&url))
        })
        .map_err(|e| format!("cannot start a thread to fetch the CRL: {e}"))?
        .join()
        .map_err(|_| "the CRL fetch thread panicked".to_string())?
}

async fn fetch(url: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    if !url.starts_with("http://") {
        return Err(format!(
            "`{url}`: CRLs are fetched over http:// (they are signed by their CA)"
        ));
    }
    let got = crate::fetch::get(url, None, MAX_CRL_BYTES, FETCH_TIMEOUT).await?;
    if !got.status.is_success() {
        return Err(format!("{url} answered {}", got.status));
    }
    parse_crls(&got.body, url)
}

/// Keeps a host's URL CRLs fresh: every `every`, fetches them all and, if
/// each could be read, hands them to `apply`. Runs until the host (`owner`)
/// is gone, which a reload that replaces it makes happen.
pub fn spawn_refresher<T: Send + Sync + 'static>(
    owner: Weak<T>,
    urls: Vec<String>,
    every: Duration,
    apply: impl Fn(&T, Vec<CertificateRevocationListDer<'static>>) + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("gatehouse-crl-refresh".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!(
                    "cannot start the CRL refresh runtime; CRLs from URLs will not be refreshed"
                );
                return;
            };
            // Checks for the owner's end at least every second.
            let tick = every.min(Duration::from_secs(1));
            let mut waited = Duration::ZERO;
            loop {
                std::thread::sleep(tick);
                waited += tick;
                if owner.strong_count() == 0 {
                    return;
                }
                if waited < every {
                    continue;
                }
                waited = Duration::ZERO;
                let mut all = Vec::new();
                let mut failed = false;
                for url in &urls {
                    match rt.block_on(fetch(url)) {
                        Ok(list) => all.extend(list),
                        Err(e) => {
                            failed = true;
                            if let Some(suppressed) = FETCH_LOG.allow(5) {
                                tracing::warn!(
                                    suppressed,
                                    "CRL refresh failed, the last good CRL stays in force: {e}"
                                );
                            }
                        }
                    }
                }
                if failed {
                    continue;
                }
                let Some(o) = owner.upgrade() else {
                    return;
                };
                apply(&o, all);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the CRL refresh thread: {e}");
    }
}

/// Parses CRLs, PEM (one or more) or DER; `name` (a file or URL) is for
/// messages.
pub fn parse_crls(
    data: &[u8],
    name: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let list: Vec<CertificateRevocationListDer<'static>> = if data.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(data)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{name} is not a valid PEM CRL file: {e:?}"))?
    } else {
        vec![CertificateRevocationListDer::from(data.to_vec())]
    };
    if list.is_empty() {
        return Err(format!(
            "{name} holds no CRL (expected -----BEGIN X509 CRL----- or DER)"
        ));
    }
    for (i, c) in list.iter().enumerate() {
        if let Err(e) =
            <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(c.as_ref())
        {
            return Err(format!("{name}: CRL #{} cannot be parsed: {e}", i + 1));
        }
    }
    Ok(list)
}
