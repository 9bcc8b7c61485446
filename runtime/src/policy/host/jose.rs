//! `jose`: JWT keys held by the host for a policy instance — verification
//! keys, key sets fetched from providers, decryption keys — each in a slot
//! table of the instance's store, indexed by the handle's `rep`. Key text
//! may be a `{{ref:name}}` reference: it is resolved here, so a secret key
//! never enters the policy's memory. The crypto is [`crate::jose`].

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Resource;

use super::markers::{DecryptionKeyHandle, KeySetHandle, VerifyKeyHandle};
use super::HostState;
use crate::jose::jwe::DecryptKey;
use crate::jose::keys::VerifyKey;
use crate::jose::keyset::{KeySet, Options};
use crate::jose::{Algorithm as Alg, VerifyError as Ve};
use crate::policy::bindings::gatehouse::policy::jose::{
    Algorithm, Host, HostDecryptionKey, HostKey, HostKeySet, KeySetOptions, VerifyError,
};

/// The most keys of each kind one instance may hold at once.
const MAX_SLOTS: usize = 256;

/// A table of handles: a slot is `None` once dropped.
pub struct Slots<T>(Vec<Option<Arc<T>>>);

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots(Vec::new())
    }
}

impl<T> Slots<T> {
    /// Holds `v`; its handle's `rep`.
    ///
    /// # Errors
    ///
    /// The table is full.
    pub fn insert(&mut self, v: T) -> Result<u32, String> {
        let slot = Some(Arc::new(v));
        if let Some(i) = self.0.iter().position(Option::is_none) {
            self.0[i] = slot;
            return Ok(i as u32);
        }
        if self.0.len() >= MAX_SLOTS {
            return Err(format!("at most {MAX_SLOTS} keys of a kind may be held"));
        }
        self.0.push(slot);
        Ok((self.0.len() - 1) as u32)
    }
    /// The value of a handle.
    pub fn get(&self, rep: u32) -> Option<&Arc<T>> {
        self.0.get(rep as usize).and_then(Option::as_ref)
    }
    /// Drops a handle's value.
    pub fn remove(&mut self, rep: u32) {
        if let Some(s) = self.0.get_mut(rep as usize) {
            *s = None;
        }
    }
}

/// The `jose` handles of one instance.
#[derive(Default)]
pub struct JoseHandles {
    keys: Slots<VerifyKey>,
    sets: Slots<Arc<KeySet>>,
    decrypt: Slots<DecryptKey>,
}

fn alg(a: Algorithm) -> Alg {
    match a {
        Algorithm::Hs256 => Alg::Hs256,
        Algorithm::Hs384 => Alg::Hs384,
        Algorithm::Hs512 => Alg::Hs512,
        Algorithm::Rs256 => Alg::Rs256,
        Algorithm::Rs384 => Alg::Rs384,
        Algorithm::Rs512 => Alg::Rs512,
        Algorithm::Ps256 => Alg::Ps256,
        Algorithm::Ps384 => Alg::Ps384,
        Algorithm::Ps512 => Alg::Ps512,
        Algorithm::Es256 => Alg::Es256,
        Algorithm::Es384 => Alg::Es384,
        Algorithm::Es512 => Alg::Es512,
        Algorithm::Eddsa => Alg::EdDsa,
    }
}

fn verify_error(e: Ve) -> VerifyError {
    match e {
        Ve::BadSignature => VerifyError::BadSignature,
        Ve::KeyForbidsAlgorithm => VerifyError::KeyForbidsAlgorithm,
        Ve::UnknownKid => VerifyError::UnknownKid,
        Ve::KeysUnavailable => VerifyError::KeysUnavailable,
    }
}

impl HostState {
    /// Key text with `{{ref:name}}` references resolved.
    fn key_text(&self, text: String) -> String {
        self.secrets.resolve_refs(&text).unwrap_or(text)
    }

    fn new_key(
        &mut self,
        k: Result<VerifyKey, String>,
    ) -> Result<Resource<VerifyKeyHandle>, String> {
        let k = k.map_err(|e| self.secrets.redact(&e))?;
        self.jose.keys.insert(k).map(Resource::new_own)
    }

    fn new_decrypt(
        &mut self,
        k: Result<DecryptKey, String>,
    ) -> Result<Resource<DecryptionKeyHandle>, String> {
        let k = k.map_err(|e| self.secrets.redact(&e))?;
        self.jose.decrypt.insert(k).map(Resource::new_own)
    }
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("the JWK is not JSON: {e}"))
}

impl Host for HostState {}

impl HostKey for HostState {
    fn from_jwk(&mut self, jwk: String) -> Result<Resource<VerifyKeyHandle>, String> {
        let text = self.key_text(jwk);
        self.new_key(json(&text).and_then(|v| VerifyKey::from_jwk(&v)))
    }

    fn from_pem(&mut self, pem: String) -> Result<Resource<VerifyKeyHandle>, String> {
        let text = self.key_text(pem);
        self.new_key(VerifyKey::from_pem(&text))
    }

    fn from_base64(&mut self, text: String) -> Result<Resource<VerifyKeyHandle>, String> {
        let text = self.key_text(text);
        self.new_key(VerifyKey::from_base64(&text))
    }

    fn from_rsa_components(
        &mut self,
        n: String,
        e: String,
    ) -> Result<Resource<VerifyKeyHandle>, String> {
        let (n, e) = (self.key_text(n), self.key_text(e));
        self.new_key(VerifyKey::from_rsa_components(&n, &e))
    }

    fn kid(&mut self, this: Resource<VerifyKeyHandle>) -> Option<String> {
        self.jose
            .keys
            .get(this.rep())
            .and_then(|k| k.kid().map(str::to_string))
    }

    fn verify(
        &mut self,
        this: Resource<VerifyKeyHandle>,
        a: Algorithm,
        signing_input: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<(), VerifyError> {
        let Some(k) = self.jose.keys.get(this.rep()) else {
            return Err(VerifyError::KeyForbidsAlgorithm);
        };
        k.verify(alg(a), &signing_input, &signature)
            .map_err(verify_error)
    }

    fn drop(&mut self, this: Resource<VerifyKeyHandle>) -> wasmtime::Result<()> {
        self.jose.keys.remove(this.rep());
        Ok(())
    }
}

impl HostKeySet for HostState {
    fn open(
        &mut self,
        url: String,
        options: KeySetOptions,
    ) -> Result<Resource<KeySetHandle>, String> {
        let url = self.key_text(url);
        let opts = Options {
            refresh: options
                .refresh_seconds
                .map(|s| Duration::from_secs(u64::from(s.max(1)))),
            min_refetch: Duration::from_secs(u64::from(options.min_refetch_seconds)),
            unknown_kid_wait: Duration::from_millis(u64::from(
                options.unknown_kid_wait_ms.min(30_000),
            )),
            ca_pem: options.ca_pem.map(|p| self.key_text(p)),
        };
        let set = KeySet::open(&url, opts).map_err(|e| self.secrets.redact(&e))?;
        self.jose.sets.insert(set).map(Resource::new_own)
    }

    fn issuer(&mut self, this: Resource<KeySetHandle>) -> Option<String> {
        self.jose.sets.get(this.rep()).and_then(|s| s.issuer())
    }

    fn status(&mut self, this: Resource<KeySetHandle>) -> Option<String> {
        self.jose.sets.get(this.rep()).and_then(|s| s.status())
    }

    fn generation(&mut self, this: Resource<KeySetHandle>) -> u64 {
        self.jose.sets.get(this.rep()).map_or(0, |s| s.generation())
    }

    fn verify(
        &mut self,
        this: Resource<KeySetHandle>,
        kid: Option<String>,
        a: Algorithm,
        signing_input: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<(), VerifyError> {
        let Some(set) = self.jose.sets.get(this.rep()) else {
            return Err(VerifyError::KeysUnavailable);
        };
        // The generation before verifying: a fetch that lands between the
        // two is then seen as a change by a request that waits.
        let seen_generation = set.generation();
        let r = set.verify(kid.as_deref(), alg(a), &signing_input, &signature);
        if let Err(Ve::UnknownKid | Ve::KeysUnavailable) = r {
            // The pipeline may wait for the refetch and call again.
            let set = (**set).clone();
            if let Some(ex) = self.exchange.as_deref_mut() {
                if ex.refetch.is_none() {
                    if let Some(p) = set.request_refetch(seen_generation) {
                        ex.refetch = Some(Box::new(p));
                    }
                }
            }
        }
        r.map_err(verify_error)
    }

    fn drop(&mut self, this: Resource<KeySetHandle>) -> wasmtime::Result<()> {
        self.jose.sets.remove(this.rep());
        Ok(())
    }
}

impl HostDecryptionKey for HostState {
    fn from_pem(&mut self, pem: String) -> Result<Resource<DecryptionKeyHandle>, String> {
        let text = self.key_text(pem);
        self.new_decrypt(DecryptKey::from_pem(&text))
    }

    fn from_base64(&mut self, text: String) -> Result<Resource<DecryptionKeyHandle>, String> {
        let text = self.key_text(text);
        self.new_decrypt(DecryptKey::from_base64(&text))
    }

    fn from_jwk(&mut self, jwk: String) -> Result<Resource<DecryptionKeyHandle>, String> {
        let text = self.key_text(jwk);
        self.new_decrypt(json(&text).and_then(|v| DecryptKey::from_jwk(&v)))
    }

    fn decrypt(
        &mut self,
        this: Resource<DecryptionKeyHandle>,
        token: String,
    ) -> Result<Vec<u8>, String> {
        let Some(k) = self.jose.decrypt.get(this.rep()) else {
            return Err("the key was dropped".into());
        };
        k.decrypt(&token)
    }

    fn drop(&mut self, this: Resource<DecryptionKeyHandle>) -> wasmtime::Result<()> {
        self.jose.decrypt.remove(this.rep());
        Ok(())
    }
}
