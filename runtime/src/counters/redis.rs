//! The `redis` counter store: counters shared by every gateway that points
//! at the same Redis server (or cluster).
//!
//! Every operation is one atomic round trip: a Lua script ([`SCRIPT`], sent
//! by `EVALSHA`, loaded again by the client after a `NOSCRIPT`) that reads
//! the server's clock, forgets what left the window, counts, and answers
//! the same [`Usage`] the memory store does. The windows are the memory
//! store's: a sliding window of `S` seconds counts every bucket of
//! `ceil(S/60)` seconds overlapping the last `S` seconds (a hash of bucket →
//! count), a fixed period keeps one count per period (a hash of index and
//! count). The server's clock, not the gateways', places a request in its
//! window, so gateways with skewed clocks still share exact windows.
//!
//! Keys are `<key_prefix>{<policy, scope, counter, window and key>}`: the
//! braces are a Redis Cluster hash tag, and every script touches one key,
//! so a cluster serves it as a single server does.
//!
//! No worker thread ever waits for Redis: each worker has its own
//! connection (the `redis` crate's `ConnectionManager`: multiplexed,
//! reconnecting by itself) driven by its own runtime, and a request awaits
//! its answer as any other I/O, bounded by `timeout_ms`; see
//! [`RemoteCounts`] for how a policy call is suspended until then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{FailMode, Op, Usage, Window};

/// The script every operation runs. `KEYS[1]`: the counter. `ARGV`: op
/// (`a`cquire, a`d`d, `p`eek, `r`elease), amount, limit, window kind (`s`
/// sliding, `p` periods), seconds, start (periods), reservation (release).
/// Returns `{admitted, used, retry_after (-1: never), reservation}`.
pub const SCRIPT: &str = r#"
local key = KEYS[1]
local op = ARGV[1]
local amount = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local kind = ARGV[4]
local seconds = tonumber(ARGV[5])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if kind == 's' then
  local bucket_ms = math.max(1, math.ceil(seconds / 60)) * 1000
  local span = math.min(math.ceil(seconds * 1000 / bucket_ms), 59)
  local now = math.floor(now_ms / bucket_ms)
  local oldest = now - span
  local all = redis.call('HGETALL', key)
  local used = 0
  local live = {}
  for i = 1, #all, 2 do
    local idx = tonumber(all[i])
    local c = tonumber(all[i + 1])
    if idx < oldest or idx > now then
      redis.call('HDEL', key, all[i])
    else
      used = used + c
      live[#live + 1] = {idx, c}
    end
  end
  local admitted = 1
  local retry = 0
  local reservation = now
  if op == 'p' then
    if used > limit then admitted = 0 end
  elseif op == 'd' then
    redis.call('HINCRBY', key, now, amount)
    used = used + amount
    if used > limit then admitted = 0 end
  elseif op == 'a' then
    if used + amount <= limit then
      redis.call('HINCRBY', key, now, amount)
      used = used + amount
    else
      admitted = 0
      table.sort(live, function(x, y) return x[1] < y[1] end)
      local need = used + amount - limit
      local freed = 0
      local at = now + 1
      for _, b in ipairs(live) do
        freed = freed + b[2]
        if freed >= need then
          at = b[1] + span + 1
          break
        end
      end
      local wait_ms = math.max(0, at * bucket_ms - now_ms)
      retry = math.max(1, math.ceil(wait_ms / 1000))
    end
  elseif op == 'r' then
    local r = tonumber(ARGV[7])
    if r >= oldest and r <= now then
      local c = tonumber(redis.call('HGET', key, r) or '0')
      local take = math.min(c, amount)
      if take > 0 then
        redis.call('HINCRBY', key, r, -take)
        used = used - take
      end
    end
  end
  if redis.call('EXISTS', key) == 1 then
    redis.call('PEXPIREAT', key, (now + span + 1) * bucket_ms)
  end
  return {admitted, used, retry, reservation}
end
local start = tonumber(ARGV[6])
local now_s = math.floor(now_ms / 1000)
local cur = 0
local end_ms = -1
if seconds > 0 then
  cur = math.floor((now_s - start) / seconds)
  end_ms = (start + (cur + 1) * seconds) * 1000
end
local h = redis.call('HMGET', key, 'i', 'c')
local count = 0
if h[1] and tonumber(h[1]) == cur then count = tonumber(h[2] or '0') end
local admitted = 1
local retry = 0
if op == 'p' then
  if count > limit then admitted = 0 end
elseif op == 'd' then
  count = count + amount
  if count > limit then admitted = 0 end
elseif op == 'a' then
  if count + amount <= limit then
    count = count + amount
  else
    admitted = 0
    if end_ms < 0 then
      retry = -1
    else
      retry = math.max(1, math.ceil((end_ms - now_ms) / 1000))
    end
  end
elseif op == 'r' then
  if tonumber(ARGV[7]) == cur then
    count = math.max(0, count - amount)
  end
end
if op ~= 'p' then
  redis.call('HSET', key, 'i', cur, 'c', count)
  if end_ms >= 0 then
    redis.call('PEXPIREAT', key, end_ms)
  end
end
return {admitted, count, retry, cur}
"#;

/// The settings the store was made from (the config's `counters.redis`,
/// file paths resolved, the password's reference resolved).
#[derive(Clone)]
pub struct Settings {
    /// `redis://` or `rediss://` (TLS) URL, with the database number.
    pub url: String,
    /// ACL user name (`AUTH user password`).
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// How long a request waits for an answer.
    pub timeout: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// Put before every key.
    pub key_prefix: String,
    /// PEM of the CAs to trust for `rediss://` (else the system's).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key for mutual TLS.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Open or closed when Redis cannot answer.
    pub fail_mode: FailMode,
}

/// A store in Redis.
///
/// Each worker thread has its own connection to it (a `ConnectionManager`
/// made on first use on that thread's runtime, kept in a thread-local
/// table), so a request's round trip never leaves its worker: no hand-off
/// between threads, and no lock shared by the workers.
pub struct RedisStore {
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    script: redis::Script,
    /// Tells this store's connections apart in the thread-local tables.
    id: u64,
    /// Dropped with the store: a table entry whose token is gone belongs
    /// to a replaced store and is dropped (closing its connection) at
    /// that thread's next look-up.
    alive: Arc<()>,
    timeout: Duration,
    fail_mode: FailMode,
    prefix: String,
    /// Failures of operations nobody waits for, logged at most once a
    /// second.
    lost: ErrorLog,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .field("fail_mode", &self.fail_mode)
            .finish_non_exhaustive()
    }
}

type Connections = Vec<(u64, std::sync::Weak<()>, redis::aio::ConnectionManager)>;

thread_local! {
    /// This thread's connections, one per live store.
    static CONNECTIONS: std::cell::RefCell<Connections> = const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RedisStore {
    /// Makes the client (checking the URL and TLS material). Connections
    /// are made on first use, so a Redis that is down at start is a
    /// fail-mode outcome, not a start failure.
    ///
    /// # Errors
    ///
    /// `key: message`, the key under `counters.redis`.
    pub fn open(s: &Settings) -> Result<Arc<RedisStore>, String> {
        let client = client(s)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.connect_timeout))
            // Past the requests' own timeout, so that they report theirs;
            // it ends the operations nobody waits for.
            .set_response_timeout(Some(s.timeout * 2 + Duration::from_millis(100)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        Ok(Arc::new(RedisStore {
            client,
            config,
            script: redis::Script::new(SCRIPT),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            timeout: s.timeout,
            fail_mode: s.fail_mode,
            prefix: s.key_prefix.clone(),
            lost: ErrorLog::default(),
        }))
    }

    /// This thread's connection (made now if it has none). Must run on a
    /// tokio runtime: the connection's tasks are spawned on it.
    fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        CONNECTIONS.with(|c| {
            let mut c = c.borrow_mut();
            if let Some((_, _, m)) = c.iter().find(|(id, _, _)| *id == self.id) {
                return Ok(m.clone());
            }
            c.retain(|(_, alive, _)| alive.strong_count() > 0);
            let m = redis::aio::ConnectionManager::new_lazy_with_config(
                self.client.clone(),
                self.config.clone(),
            )
            .map_err(|e| format!("redis: {e}"))?;
            c.push((self.id, Arc::downgrade(&self.alive), m.clone()));
            Ok(m)
        })
    }

    /// The store's key for a counter key.
    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len() + 2);
        k.push_str(&self.prefix);
        k.push('{');
        k.push_str(key);
        k.push('}');
        k
    }

    /// What an operation Redis could not do is answered.
    pub fn unavailable(&self, limit: u64, why: String) -> Usage {
        Usage {
            admitted: self.fail_mode == FailMode::Open,
            used: 0,
            limit,
            retry_after_seconds: 0,
            reservation: 0,
            unavailable: Some(why),
        }
    }

    /// The per-operation timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs an operation and waits for its answer, at most `timeout`;
    /// whatever goes wrong is an "unavailable" usage under the fail mode.
    pub async fn call(&self, key: &str, limit: u64, window: Window, op: Op) -> Usage {
        let mut conn = match self.connection() {
            Ok(c) => c,
            Err(e) => return self.unavailable(limit, e),
        };
        let key = self.key(key);
        match tokio::time::timeout(
            self.timeout,
            run(&mut conn, &self.script, &key, limit, window, op),
        )
        .await
        {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => self.unavailable(limit, format!("redis: {e}")),
            Err(_) => self.unavailable(
                limit,
                format!("redis: no answer within {} ms", self.timeout.as_millis()),
            ),
        }
    }

    /// Sends an operation whose answer nobody waits for (a release or an
    /// addition at completion), as a task on this thread's runtime.
    /// Returns `false` when there is no runtime or no connection.
    pub fn send(self: &Arc<Self>, key: &str, limit: u64, window: Window, op: Op) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let mut conn = match self.connection() {
            Ok(c) => c,
            Err(e) => {
                self.lost.log(&e);
                return false;
            }
        };
        let key = self.key(key);
        let this = self.clone();
        rt.spawn(async move {
            let r = tokio::time::timeout(
                this.timeout * 2,
                run(&mut conn, &this.script, &key, limit, window, op),
            )
            .await;
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => this.lost.log(&format!("redis: {e}")),
                Err(_) => this.lost.log("redis: no answer"),
            }
        });
        true
    }
}

/// Checks the settings as [`RedisStore::open`] would, without starting
/// anything.
///
/// # Errors
///
/// `key: message`, the key under `counters.redis`.
pub fn check(s: &Settings) -> Result<(), String> {
    client(s).map(|_| ())
}

fn client(s: &Settings) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let info = s
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("url: {e}"))?;
    let mut redis_info = info.redis_settings().clone();
    if let Some(u) = &s.username {
        redis_info = redis_info.set_username(u.clone());
    }
    if let Some(p) = &s.password {
        redis_info = redis_info.set_password(p.clone());
    }
    let info = info.set_redis_settings(redis_info);
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if !tls {
        if s.ca_pem.is_some() || s.client_cert.is_some() {
            return Err("url: ca_file, cert_file and key_file need a rediss:// (TLS) URL".into());
        }
        return redis::Client::open(info).map_err(|e| format!("url: {e}"));
    }
    let certs = redis::TlsCertificates {
        client_tls: s
            .client_cert
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: s.ca_pem.clone(),
    };
    redis::Client::build_with_tls(info, certs).map_err(|e| format!("url: {e}"))
}

/// Logs failures of operations nobody waits for, at most once a second.
#[derive(Default)]
struct ErrorLog(std::sync::Mutex<Option<std::time::Instant>>);

impl ErrorLog {
    fn log(&self, e: &str) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!("a counter update (release or completion count) was lost: {e}");
        }
    }
}

async fn run(
    conn: &mut redis::aio::ConnectionManager,
    script: &redis::Script,
    key: &str,
    limit: u64,
    window: Window,
    op: Op,
) -> Result<Usage, String> {
    let (op, amount, reservation) = match op {
        Op::Acquire(n) => ("a", n, 0),
        Op::Add(n) => ("d", n, 0),
        Op::Peek => ("p", 0, 0),
        Op::Release {
            reservation,
            amount,
        } => ("r", amount, reservation as i64),
    };
    let (kind, seconds, start) = match window {
        Window::Sliding(s) => ("s", s, 0),
        Window::Periods { seconds, start } => ("p", seconds, start),
    };
    let mut inv = script.key(key);
    inv.arg(op)
        .arg(amount)
        .arg(limit)
        .arg(kind)
        .arg(seconds)
        .arg(start)
        .arg(reservation);
    let (admitted, used, retry, reservation): (i64, i64, i64, i64) =
        inv.invoke_async(conn).await.map_err(|e| e.to_string())?;
    Ok(Usage {
        admitted: admitted == 1,
        used: used.max(0) as u64,
        limit,
        retry_after_seconds: if retry < 0 {
            u32::MAX
        } else {
            u32::try_from(retry).unwrap_or(u32::MAX)
        },
        reservation: reservation as u64,
        unavailable: None,
    })
}

/// `url` with any password in it replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@r.example:6380"),
            "rediss://app:***@r.example:6380"
        );
        assert_eq!(redact_url("redis://127.0.0.1"), "redis://127.0.0.1");
    }
}

/// The state of a request whose policies count in a remote store, kept in
/// its exchange.
///
/// A request-phase call that asks a counter question sends nothing and
/// gets a placeholder: the operation is recorded as `pending` and every
/// write the call makes after it (variables, response headers) is ignored.
/// The chain stops after that call (its decision is dropped); the pipeline
/// sends the operation, awaits the answer outside any call, files it in
/// `answers` and calls the same step again, which gets the answer when it
/// asks the same question. One round trip per question.
#[derive(Debug, Default)]
pub struct RemoteCounts {
    /// The question the current call stopped at.
    pub pending: Option<Pending>,
    /// Answers for the step being called again.
    pub answers: Vec<(String, Op, Usage)>,
    /// Round trips this request made.
    pub round_trips: u32,
}

/// A counter question waiting to be sent.
#[derive(Debug)]
pub struct Pending {
    /// Where it goes.
    pub store: Arc<RedisStore>,
    /// The counter's key (policy, scope, name, window, key).
    pub key: String,
    /// Its limit.
    pub limit: u64,
    /// Its window.
    pub window: Window,
    /// The operation.
    pub op: Op,
    /// The chain step that asked (set by the chain runner).
    pub step: usize,
    /// The completion steps registered before that step.
    pub completion_len: usize,
}

/// The most round trips one request may make; a chain asking more is
/// answered "unavailable" past it.
pub const MAX_ROUND_TRIPS: u32 = 16;

impl RemoteCounts {
    /// Takes the answer to `(key, op)`, if a round trip brought it.
    pub fn take_answer(&mut self, key: &str, op: Op) -> Option<Usage> {
        let i = self
            .answers
            .iter()
            .position(|(k, o, _)| *o == op && k == key)?;
        Some(self.answers.swap_remove(i).2)
    }
}
