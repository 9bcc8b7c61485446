//! Connection limits: how many client connections are open in all, and
//! from one IP address. Counted across listeners, workers and config
//! generations (the counts live in [`super::snapshot::Live`]); the limits
//! come from the snapshot in force when a connection is accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// The open connections, in all and per IP address.
#[derive(Default)]
pub struct ConnectionLimiter {
    total: AtomicUsize,
    per_ip: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` reached.
    Total,
    /// `limits.max_connections_per_ip` reached for its address.
    PerIp,
}

impl Refused {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// An open connection's place in the counts; released on drop.
pub struct Permit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

fn shard(ip: &IpAddr) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl ConnectionLimiter {
    /// Counts a connection from `ip`, unless a limit is reached (`0` means
    /// no limit).
    ///
    /// # Errors
    ///
    /// Which limit refused it.
    pub fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Permit, Refused> {
        let ip = ip.to_canonical();
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if max_total > 0 && total > max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let mut map = match self.per_ip[shard(&ip)].lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let n = map.entry(ip).or_insert(0);
        if max_per_ip > 0 && *n >= max_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerIp);
        }
        *n += 1;
        Ok(Permit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = match self.limiter.per_ip[shard(&self.ip)].lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_address() {
        let l = Arc::new(ConnectionLimiter::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = l.acquire(a, 3, 2).unwrap();
        let _p2 = l.acquire(a, 3, 2).unwrap();
        assert_eq!(l.acquire(a, 3, 2).err(), Some(Refused::PerIp));
        let _p3 = l.acquire(b, 3, 2).unwrap();
        assert_eq!(l.acquire(b, 3, 2).err(), Some(Refused::Total));
        drop(p1);
        let _p4 = l.acquire(a, 3, 2).unwrap();
        // IPv4-mapped IPv6 counts as the IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(l.acquire(mapped, 0, 2).err(), Some(Refused::PerIp));
        assert_eq!(l.open(), 3);
    }
}
