//! The config schema. Every key is documented here and in
//! `docs/CONFIG.md`; unknown keys are errors.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole config file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway accepts connections.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Named upstreams that APIs forward to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Values substituted for `{{name}}` in policy config.
    #[serde(default)]
    pub named_values: BTreeMap<String, NamedValue>,
    /// The global policy chains, run for every API (where an API's chain
    /// says `base`, or has no chain of its own).
    #[serde(default)]
    pub policies: Chains,
    /// The APIs.
    #[serde(default)]
    pub apis: Vec<Api>,
    /// Policies loaded from `.wasm` files, by the name chains use.
    #[serde(default)]
    pub custom_policies: BTreeMap<String, CustomPolicy>,
    /// Protocol limits and timeouts for downstream connections.
    #[serde(default)]
    pub limits: Limits,
    /// How policy components run.
    #[serde(default)]
    pub policy_runtime: PolicyRuntime,
    /// The admin listener (health, metrics, config, reload, traces);
    /// absent = none.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// The JSON access log; absent = none.
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// When to reload the config by itself.
    #[serde(default)]
    pub reload: Reload,
    /// Methods beyond the standard ones (RFC 9110 and WebDAV) that
    /// operations may name, e.g. `[PURGE]`. Default none: an operation's
    /// `method` that is neither standard nor listed here is a config error
    /// (a typo like `PSOT` would otherwise make a real `POST` get 405).
    #[serde(default)]
    pub extension_methods: Vec<String>,
    /// Where rate limits and quotas count. Default: in memory.
    #[serde(default)]
    pub counters: Counters,
}

/// The `counters:` section: the store of the `counters` interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// `memory` (default) or `durable`.
    #[serde(default)]
    pub backend: CounterBackend,
    /// The `durable` store's file (relative to the config file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// How often the `durable` store writes its changes out, in
    /// milliseconds (10..=60000). Default 100.
    #[serde(default = "default_flush_ms")]
    pub flush_ms: u64,
    /// The most keys the store holds; a new key past it is not counted
    /// and `fail_mode` decides. Default 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// When the store cannot count (full, unreachable): `open` admits,
    /// `closed` refuses with 503. Default `open`.
    #[serde(default)]
    pub fail_mode: crate::counters::FailMode,
    /// The server of the `redis` backend.
    #[serde(default)]
    pub redis: Option<RedisCounters>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            backend: CounterBackend::Memory,
            path: None,
            flush_ms: default_flush_ms(),
            max_keys: default_max_keys(),
            fail_mode: Default::default(),
            redis: None,
        }
    }
}

fn default_max_keys() -> usize {
    100_000
}

fn default_flush_ms() -> u64 {
    100
}

/// A counter store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterBackend {
    /// In this process's memory.
    #[default]
    Memory,
    /// In memory, written to a file every `flush_ms`, loaded at start.
    Durable,
    /// In a Redis server shared by any number of gateways (`redis:`).
    Redis,
}

/// `counters.redis`: the Redis server of the `redis` backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCounters {
    /// `redis://host:port/db` or `rediss://…` (TLS).
    pub url: String,
    /// ACL user (`AUTH username password`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password, or `{{ref:name}}` of a named value.
    #[serde(default)]
    pub password: Option<String>,
    /// How long a request waits for Redis, in milliseconds (1..=10000).
    /// Default 100.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a connection attempt may take, in milliseconds
    /// (10..=60000). Default 1000.
    #[serde(default = "default_redis_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Put before every key. Default `gatehouse:`.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
    /// PEM file of the CAs that sign the server's certificate (`rediss://`;
    /// default the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain the gateway presents (mutual TLS).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_redis_timeout_ms() -> u64 {
    100
}

fn default_redis_connect_timeout_ms() -> u64 {
    1000
}

fn default_redis_key_prefix() -> String {
    "gatehouse:".into()
}

/// The admin listener. It never shares a socket with a public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:port` to bind, e.g. `127.0.0.1:9901`.
    pub address: String,
    /// The name of a named value holding a bearer key: every endpoint but
    /// `/healthz` and `/readyz` then asks for `Authorization: Bearer KEY`.
    #[serde(default)]
    pub key: Option<String>,
    /// The name of a named value holding the trace key: a request carrying
    /// `x-gatehouse-trace: KEY` is traced. Absent = no tracing.
    #[serde(default)]
    pub trace_key: Option<String>,
    /// How many traces `GET /traces/{id}` keeps (the most recent). Default
    /// 256.
    #[serde(default = "default_traces_kept")]
    pub traces_kept: usize,
}

fn default_traces_kept() -> usize {
    256
}

/// The JSON access log: one line per request, written when the request is
/// over.
#[derive(Debug, Deserialize, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// The file to append to (relative to the config file); absent =
    /// stdout. Reopened on `SIGUSR1`, for log rotation.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Whether `path` carries the query string. Default false (queries
    /// often carry tokens).
    #[serde(default)]
    pub include_query: bool,
}

/// Automatic reloads.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// Reload when the config file or any file it names (certificates,
    /// keys, truststores, policy components, named-value files) changes.
    /// Default false.
    #[serde(default)]
    pub watch: bool,
}

/// A listening socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for logs and messages.
    pub name: String,
    /// `IP:port` to bind, e.g. `127.0.0.1:8443` or `[::1]:8443`.
    pub address: String,
    /// TLS settings; absent means plain HTTP (HTTP/1.1 and h2c prior
    /// knowledge).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Networks of trusted proxies (CIDRs, e.g. `10.0.0.0/8`, or single
    /// addresses): only from these peers are `Forwarded`, `X-Forwarded-*`,
    /// `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL` and
    /// `X-HTTP-Method-Override` kept, and `X-Forwarded-For` appended to.
    /// Default: none (every client's are removed).
    #[serde(default)]
    pub trust_forwarded_from: Vec<String>,
    /// Whether another process may listen on the same address at the same
    /// time (`SO_REUSEPORT` across processes), for a zero-downtime binary
    /// upgrade: the new gateway, started with this on, shares the address
    /// with the old one until the old one stops. Default `false`: a second
    /// process on the same address fails to start, saying so (the worker
    /// threads of one gateway always share its sockets).
    #[serde(default)]
    pub share_address: bool,
}

/// TLS on a listener: one entry per group of host names (chosen by SNI).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// The hosts served. The SNI picks one: an exact name first, whatever
    /// the order of the entries, then a wildcard, then `default_host`.
    pub hosts: Vec<TlsHost>,
    /// A name listed in one entry's `names`: that entry serves handshakes
    /// with no SNI or an SNI no entry names. Without it such handshakes are
    /// refused with the `unrecognized_name` alert.
    #[serde(default)]
    pub default_host: Option<String>,
    /// The lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// The cipher suites offered, by their IANA names (e.g.
    /// `TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`),
    /// in order of preference. Default: rustls' safe set.
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
}

/// Certificates for a group of host names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsHost {
    /// Exact names (`api.test.com`) or one-level wildcards (`*.test.com`).
    pub names: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// ALPN protocols offered, in preference order. Default `[h2, http/1.1]`.
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// Whether (and how) the host asks clients for a certificate. Default:
    /// it does not.
    #[serde(default)]
    pub client_certificate: Option<ClientCertificate>,
}

/// Client certificates on one TLS host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    /// `off`, `optional` or `required`.
    pub mode: ClientCertMode,
    /// PEM bundle of the root (and intermediate) CAs client certificates
    /// are verified against. Required unless `mode` is `off`.
    #[serde(default)]
    pub truststore: Option<PathBuf>,
    /// Certificate revocation lists (PEM or DER files).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// CRLs to fetch over `http://` (a CA's distribution point): fetched
    /// at load and every `crl_refresh_seconds`, swapped in while the
    /// gateway runs.
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// How often CRLs from `crl_urls` are fetched again. Default 3600.
    #[serde(default = "default_crl_refresh")]
    pub crl_refresh_seconds: u64,
    /// What a CRL past its next update means: `refuse` (default: a client
    /// certificate it covers is refused) or `accept` (it is used as it is,
    /// and a warning is logged at load).
    #[serde(default)]
    pub stale_crl: StaleCrl,
    /// The longest chain accepted, counting the client's certificate, its
    /// intermediates and the root. Default 4.
    #[serde(default = "default_chain_depth")]
    pub max_chain_depth: usize,
    /// A stricter algorithm floor than the default (SHA-256 or stronger;
    /// RSA of 2048 bits or more; ECDSA P-256 or P-384; Ed25519), for the
    /// client's chain and the truststore.
    #[serde(default)]
    pub algorithm_floor: AlgorithmFloor,
}

/// The key types, RSA size and signature hashes a host accepts in client
/// chains and its truststore. It can only be raised above the default.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmFloor {
    /// The fewest RSA modulus bits. Default 2048 (also the least allowed).
    #[serde(default = "default_min_rsa_bits")]
    pub min_rsa_bits: usize,
    /// The key types accepted, of `rsa`, `ecdsa_p256`, `ecdsa_p384`,
    /// `ed25519`. Default: all four.
    #[serde(default = "default_key_types")]
    pub key_types: Vec<FloorKeyType>,
    /// The weakest hash a certificate may be signed with: `sha256`
    /// (default), `sha384` or `sha512`.
    #[serde(default)]
    pub min_signature_hash: FloorHash,
}

impl Default for AlgorithmFloor {
    fn default() -> Self {
        AlgorithmFloor {
            min_rsa_bits: default_min_rsa_bits(),
            key_types: default_key_types(),
            min_signature_hash: FloorHash::default(),
        }
    }
}

fn default_min_rsa_bits() -> usize {
    2048
}

fn default_key_types() -> Vec<FloorKeyType> {
    FloorKeyType::ALL.to_vec()
}

/// A key type of the algorithm floor.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FloorKeyType {
    /// RSA (of at least `min_rsa_bits`).
    Rsa,
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl FloorKeyType {
    /// Every key type, the default.
    pub const ALL: [FloorKeyType; 4] = [
        FloorKeyType::Rsa,
        FloorKeyType::EcdsaP256,
        FloorKeyType::EcdsaP384,
        FloorKeyType::Ed25519,
    ];

    /// The name in the config.
    pub fn config_name(self) -> &'static str {
        match self {
            FloorKeyType::Rsa => "rsa",
            FloorKeyType::EcdsaP256 => "ecdsa_p256",
            FloorKeyType::EcdsaP384 => "ecdsa_p384",
            FloorKeyType::Ed25519 => "ed25519",
        }
    }
}

/// The weakest signature hash of the algorithm floor.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FloorHash {
    /// SHA-256 or stronger.
    #[default]
    Sha256,
    /// SHA-384 or stronger.
    Sha384,
    /// SHA-512.
    Sha512,
}

fn default_crl_refresh() -> u64 {
    3600
}

fn default_chain_depth() -> usize {
    4
}

/// How an API passes client certificates to its upstream.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ForwardClientCertificate {
    /// `rfc9440` (`Client-Cert` and `Client-Cert-Chain`, the DER as
    /// structured-field byte sequences) or `xfcc` (Envoy's
    /// `x-forwarded-client-cert`).
    pub format: ForwardFormat,
    /// For `xfcc`: the elements to include, of `hash`, `subject`, `uri`,
    /// `dns`, `cert`, `chain`. Default `[hash, subject, uri, dns]`.
    #[serde(default)]
    pub fields: Option<Vec<XfccField>>,
}

/// The header format of forwarded client certificates.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFormat {
    /// RFC 9440 `Client-Cert` / `Client-Cert-Chain`.
    Rfc9440,
    /// `x-forwarded-client-cert`.
    Xfcc,
}

/// An element of an `x-forwarded-client-cert` entry.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XfccField {
    /// `Hash=`: SHA-256 of the DER, hex.
    Hash,
    /// `Subject="..."`: the RFC 4514 subject.
    Subject,
    /// `URI=`: each URI SAN.
    Uri,
    /// `DNS=`: each DNS SAN.
    Dns,
    /// `Cert="..."`: the URL-encoded PEM certificate.
    Cert,
    /// `Chain="..."`: the URL-encoded PEM chain.
    Chain,
}

/// Whether a TLS host asks for client certificates.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// Never asks.
    Off,
    /// Asks; a request without a certificate, or with one that does not
    /// verify, goes on to the policies (marked unverified, with why).
    Optional,
    /// Asks; the handshake fails without a certificate that verifies.
    Required,
}

/// What a CRL past its next update means.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StaleCrl {
    /// Certificates it covers are refused.
    #[default]
    Refuse,
    /// It is used anyway.
    Accept,
}

/// An upstream service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `http://host:port[/prefix]`, `https://host:port[/prefix]`, or
    /// `builtin:echo` (a responder inside the gateway that echoes the
    /// request as JSON; for demos and tests).
    pub url: String,
    /// TLS to the upstream (for `https://`).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Connect timeout in milliseconds. Default 5000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed for the upstream's response head, in milliseconds.
    /// Default 30000.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Keep-alive connections each worker thread keeps for reuse, per
    /// upstream; 0 keeps none. Default 64.
    #[serde(default = "default_max_idle")]
    pub max_idle_connections: usize,
    /// Idle connections are not reused after this many milliseconds; keep it
    /// below the upstream's own keep-alive timeout. Default 30000.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Longest wait for the next piece of the upstream's response body, in
    /// milliseconds; past it the response is cut off (the client sees the
    /// connection or stream reset). Default 60000.
    #[serde(default = "default_upstream_body_timeout")]
    pub body_idle_timeout_ms: u64,
    /// Where to connect, as `host:port` entries, used in turn (round
    /// robin). Default: the URL's host and port. The URL still gives the
    /// `Host` header and the TLS server name.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Connections open at once to this upstream, in use and idle, over
    /// all worker threads. A request that finds none free waits up to
    /// `connect_timeout_ms`, then gets `503 upstream.pool-exhausted`.
    /// Default 1024.
    #[serde(default = "default_upstream_max_connections")]
    pub max_connections: usize,
    /// A connection is not reused once it is this old (milliseconds);
    /// 0: no limit. Default 0.
    #[serde(default)]
    pub max_connection_lifetime_ms: u64,
    /// Consecutive failed connects after which an address is left out.
    /// 0: never. Default 5.
    #[serde(default = "default_eject_after")]
    pub eject_after_connect_failures: u32,
    /// How long an address is left out (milliseconds). Default 30000.
    #[serde(default = "default_eject_for")]
    pub eject_for_ms: u64,
    /// `http1` (default), `http2` (h2 over TLS, h2c prior knowledge on
    /// `http://`), or `auto` (ALPN decides over TLS; HTTP/1.1 on
    /// `http://`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// The HTTP version spoken to an upstream.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 (h2, or h2c prior knowledge on `http://`).
    Http2,
    /// ALPN decides (`h2` or `http/1.1`); HTTP/1.1 on `http://`.
    Auto,
}

fn default_upstream_max_connections() -> usize {
    1024
}

fn default_eject_after() -> u32 {
    5
}

fn default_eject_for() -> u64 {
    30_000
}

fn default_upstream_body_timeout() -> u64 {
    60_000
}

fn default_connect_timeout() -> u64 {
    5_000
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_max_idle() -> usize {
    64
}
fn default_idle_timeout() -> u64 {
    30_000
}

/// TLS settings for an upstream.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The name to send as SNI (and, unless `verify_name` is set, to
    /// verify the certificate against). Default: the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The name the upstream's certificate must carry, when it differs
    /// from the SNI. Default: `server_name`.
    #[serde(default)]
    pub verify_name: Option<String>,
    /// PEM bundle of CAs to trust. Default: the system's roots.
    #[serde(default)]
    pub truststore: Option<PathBuf>,
    /// Accept any certificate from the upstream. Off by default; `check`
    /// warns when it is on.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The lowest TLS version: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// ALPN protocols offered. Default `[http/1.1]`.
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// Client certificates the gateway can present, in order of
    /// preference.
    #[serde(default)]
    pub keystore: Vec<KeystoreEntry>,
    /// When none of the keystore's certificates is issued by a CA the
    /// upstream names: `send_default` (the first one; default) or
    /// `send_none`.
    #[serde(default)]
    pub unmatched_client_certificate: UnmatchedClientCertificate,
}

/// A client certificate for upstreams: a PEM chain (leaf first) and its
/// key.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KeystoreEntry {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
    pub key: PathBuf,
}

/// What to send when no keystore certificate fits the upstream's CAs.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnmatchedClientCertificate {
    /// The first certificate of the keystore.
    #[default]
    SendDefault,
    /// No certificate.
    SendNone,
}

/// A named value: exactly one of `value`, `env`, `file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    /// A literal value.
    #[serde(default)]
    pub value: Option<String>,
    /// The name of an environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// A file whose contents (trailing newline removed) are the value.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A secret never appears in logs, traces or error messages.
    #[serde(default)]
    pub secret: bool,
}

/// A custom policy component.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPolicy {
    /// Path of the `.wasm` component (relative to the config file).
    pub wasm: PathBuf,
}

/// An API: requests for its hosts under its path prefix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Unique name.
    pub name: String,
    /// Host names (exact or `*.suffix`) this API answers for; empty = any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix, matched on whole segments (`/orders` matches
    /// `/orders` and `/orders/1`, not `/ordersx`). Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The upstream's name (a key of `upstreams`).
    pub upstream: String,
    /// Remove the API's path prefix before forwarding. Default false.
    #[serde(default)]
    pub strip_path: bool,
    /// Paths with `;` parameters (`/a;jsessionid=1`): `refuse` them (400
    /// `request.path-parameters`) or `strip` them (cut before routing, and
    /// the stripped path goes upstream). Default `refuse`.
    #[serde(default)]
    pub path_parameters: PathParameters,
    /// Match the API's path and its operations' templates without regard to
    /// ASCII case, for upstreams that do the same (IIS, ASP.NET). Default
    /// false.
    #[serde(default)]
    pub case_insensitive_paths: bool,
    /// The API's chains.
    #[serde(default)]
    pub policies: Option<Chains>,
    /// Operations; when present, a request must match one of them.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Pass the client certificate of verified mTLS connections on to the
    /// upstream in headers. Default: not passed.
    #[serde(default)]
    pub forward_client_certificate: Option<ForwardClientCertificate>,
}

fn default_path() -> String {
    "/".into()
}

/// What an API does with `;` path parameters.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// 400 `request.path-parameters`.
    #[default]
    Refuse,
    /// Cut them from every segment before routing; the upstream gets the
    /// cut path.
    Strip,
}

/// An operation of an API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Unique name within the API.
    pub name: String,
    /// HTTP method, or `*` for any. Default `*`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Full path template: literal segments, `{name}` for one segment,
    /// `{*name}` (last only) for the rest of the path.
    pub path: String,
    /// The operation's chains.
    #[serde(default)]
    pub policies: Option<Chains>,
}

fn default_method() -> String {
    "*".into()
}

/// The policy chains of one scope. A section that is absent inherits the
/// enclosing scope's chain unchanged (as if it were `[base]`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Chains {
    /// Run on the request, before the upstream.
    #[serde(default)]
    pub inbound: Option<Vec<ChainEntry>>,
    /// Run on the upstream's response.
    #[serde(default)]
    pub outbound: Option<Vec<ChainEntry>>,
    /// Run on the fault when anything fails or refuses.
    #[serde(default)]
    pub on_error: Option<Vec<ChainEntry>>,
}

/// One entry of a chain: `base`, or `policy-name: {config}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainEntry {
    /// Where the enclosing scope's chain runs.
    Base,
    /// A policy with its config.
    Policy {
        /// The policy's name (built-in or a key of `custom_policies`).
        name: String,
        /// Its config, as JSON.
        config: serde_json::Value,
    },
}

impl<'de> Deserialize<'de> for ChainEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_yaml_ng::Value;
        let v = Value::deserialize(d)?;
        match v {
            Value::String(s) if s == "base" => Ok(ChainEntry::Base),
            Value::String(s) => Ok(ChainEntry::Policy {
                name: s,
                config: serde_json::json!({}),
            }),
            Value::Mapping(m) if m.len() == 1 => {
                let (k, v) = m
                    .into_iter()
                    .next()
                    .ok_or_else(|| de::Error::custom("empty mapping"))?;
                let name = match k {
                    Value::String(s) => s,
                    other => {
                        return Err(de::Error::custom(format!(
                            "a policy name must be a string, found {other:?}"
                        )))
                    }
                };
                let config = match v {
                    Value::Null => serde_json::json!({}),
                    other => serde_json::to_value(other).map_err(|e| {
                        de::Error::custom(format!(
                            "{name}: config cannot be represented as JSON: {e}"
                        ))
                    })?,
                };
                Ok(ChainEntry::Policy { name, config })
            }
            _ => Err(de::Error::custom(
                "expected `base`, a policy name, or a one-key mapping `policy-name: {config}`",
            )),
        }
    }
}

/// Downstream limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes; larger
    /// requests get `431`. Default 16384.
    #[serde(default = "default_max_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Most request headers; more get `431`. Default 100.
    #[serde(default = "default_max_headers")]
    pub max_request_headers: usize,
    /// Time allowed to receive an HTTP/1.1 request head, in milliseconds.
    /// Default 10000.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// Time allowed for a TLS handshake, in milliseconds. Default 10000.
    #[serde(default = "default_header_timeout")]
    pub tls_handshake_timeout_ms: u64,
    /// On shutdown, how long requests in flight may take to finish, in
    /// milliseconds; idle connections close at once. Default 10000.
    #[serde(default = "default_header_timeout")]
    pub shutdown_grace_ms: u64,
    /// Client connections open at once, over all listeners; more are
    /// closed as soon as they are accepted. Default 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Client connections open at once from one IP address. Default 256.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Largest request body, in bytes; larger ones get `413` (at once when
    /// `Content-Length` says so, else when the body passes it while
    /// streaming). `0` = no limit. Default 10485760 (10 MiB).
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: u64,
    /// Longest wait for the next piece of a request body, in milliseconds;
    /// past it the request gets `408`. Default 30000.
    #[serde(default = "default_body_timeout")]
    pub request_body_timeout_ms: u64,
    /// Longest a write to a client may wait (a client that stopped
    /// reading), in milliseconds; past it the connection is closed.
    /// Default 60000.
    #[serde(default = "default_write_timeout")]
    pub response_write_timeout_ms: u64,
    /// An HTTP/2 connection with no request in flight for this long, in
    /// milliseconds, is closed with a graceful GOAWAY. Default 300000.
    #[serde(default = "default_h2_idle")]
    pub http2_idle_timeout_ms: u64,
    /// A connection older than this, in milliseconds, is closed
    /// gracefully (HTTP/2: GOAWAY; HTTP/1.1: after the request in flight).
    /// `0` = no limit. Default 0.
    #[serde(default)]
    pub max_connection_age_ms: u64,
    /// Streams one HTTP/2 connection may have open at once. Default 100.
    #[serde(default = "default_h2_streams")]
    pub http2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: default_max_header_bytes(),
            max_request_headers: default_max_headers(),
            header_read_timeout_ms: default_header_timeout(),
            tls_handshake_timeout_ms: default_header_timeout(),
            shutdown_grace_ms: default_header_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_request_body_bytes: default_max_body(),
            request_body_timeout_ms: default_body_timeout(),
            response_write_timeout_ms: default_write_timeout(),
            http2_idle_timeout_ms: default_h2_idle(),
            max_connection_age_ms: 0,
            http2_max_concurrent_streams: default_h2_streams(),
        }
    }
}

fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    256
}
fn default_max_body() -> u64 {
    10 * 1024 * 1024
}
fn default_body_timeout() -> u64 {
    30_000
}
fn default_write_timeout() -> u64 {
    60_000
}
fn default_h2_idle() -> u64 {
    300_000
}
fn default_h2_streams() -> u32 {
    100
}

fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_header_timeout() -> u64 {
    10_000
}

/// How policy components run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRuntime {
    /// Longest a single policy call may run, in milliseconds; past it the
    /// call is interrupted and the request gets `500 policy.timeout`.
    /// Default 100.
    #[serde(default = "default_deadline")]
    pub call_deadline_ms: u64,
    /// Linear memory cap per policy instance, in MiB. Default 64.
    #[serde(default = "default_memory")]
    pub memory_limit_mib: u64,
    /// Most idle constructed instances kept per (policy, config): one is
    /// built at load (so bad config is caught then), more on demand, and
    /// up to this many are kept for reuse. Default 16.
    #[serde(default = "default_pool")]
    pub instances_per_policy: usize,
    /// Instances that may exist at once across all policies. Default 256.
    #[serde(default = "default_total")]
    pub max_instances: u32,
    /// Directory for compiled components (AOT, keyed by content hash),
    /// relative to the config file. Default `$XDG_CACHE_HOME/gatehouse` or
    /// `~/.cache/gatehouse`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl Default for PolicyRuntime {
    fn default() -> Self {
        PolicyRuntime {
            call_deadline_ms: default_deadline(),
            memory_limit_mib: default_memory(),
            instances_per_policy: default_pool(),
            max_instances: default_total(),
            cache_dir: None,
        }
    }
}

fn default_deadline() -> u64 {
    100
}
fn default_memory() -> u64 {
    64
}
fn default_pool() -> usize {
    16
}
fn default_total() -> u32 {
    256
}
