//! Rate limits: a token bucket per client address ([`PerIpRate`]: HTTP requests, uploads, Engine.IO
//! handshakes of a client that reconnects in a tight loop) or per connection ([`ConnRate`]: messages
//! a client sends), each with a burst of three seconds' (or minutes') worth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before the full ones (clients that went quiet) are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// The server's rate limits (`[limits]`), and the client networks they do not apply to.
pub struct Limits {
    exempt: Vec<ipnet::IpNet>,
    http: PerIpRate,
    messages_per_conn: u32,
}

impl Limits {
    pub fn new(
        exempt: Vec<ipnet::IpNet>,
        http_per_ip_per_sec: u32,
        messages_per_conn_per_sec: u32,
    ) -> Limits {
        Limits {
            exempt,
            http: PerIpRate::new(http_per_ip_per_sec),
            messages_per_conn: messages_per_conn_per_sec,
        }
    }

    /// No limits at all.
    pub fn none() -> Limits {
        Limits::new(Vec::new(), 0, 0)
    }

    /// Whether `ip` is exempt from the limits (unknown addresses are not).
    pub fn exempt(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.exempt.iter().any(|n| n.contains(&ip)))
    }

    /// Whether one more HTTP request from `ip` may be served now (counted).
    pub fn http_allow(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            Some(ip) if !self.exempt(Some(ip)) => self.http.allow(ip),
            _ => true,
        }
    }

    /// The message limit of a new connection from `ip`.
    pub fn conn_rate(&self, ip: Option<IpAddr>) -> ConnRate {
        ConnRate::new(if self.exempt(ip) { 0 } else { self.messages_per_conn })
    }
}

/// One connection's bucket: at most `rate` events a second, with a burst of three seconds' worth.
#[derive(Debug, Clone, Copy)]
pub struct ConnRate {
    rate: f64,
    burst: f64,
    bucket: Bucket,
}

impl ConnRate {
    /// `rate` events per second; 0: no limit.
    pub fn new(rate: u32) -> ConnRate {
        let burst = f64::from(rate) * 3.0;
        ConnRate { rate: f64::from(rate), burst, bucket: Bucket { tokens: burst, at: Instant::now() } }
    }

    /// `rate` events per minute, with a burst of three minutes' worth; 0: no limit.
    pub fn per_minute(rate: u32) -> ConnRate {
        let burst = f64::from(rate) * 3.0;
        ConnRate { rate: f64::from(rate) / 60.0, burst, bucket: Bucket { tokens: burst, at: Instant::now() } }
    }

    /// Whether one more event may happen now (it is counted).
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.bucket = self.bucket.refilled(now, self.rate, self.burst);
        if self.bucket.tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most `rate` events a second per address, with a burst of three seconds' worth.
pub struct PerIpRate {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> Bucket {
        let tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(burst);
        Bucket { tokens, at: now }
    }
}

impl PerIpRate {
    /// `rate` events per second per address; 0: no limit.
    pub fn new(rate: u32) -> PerIpRate {
        PerIpRate { rate: rate as f64, burst: rate as f64 * 3.0, buckets: Mutex::new(HashMap::new()) }
    }

    /// `rate` events per minute per address, with a burst of three minutes' worth; 0: no limit.
    pub fn per_minute(rate: u32) -> PerIpRate {
        PerIpRate {
            rate: f64::from(rate) / 60.0,
            burst: f64::from(rate) * 3.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may have one more event now (it is counted).
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst).tokens < burst);
        }
        let start = Bucket { tokens: self.burst, at: now };
        let b = buckets.entry(ip).or_insert(start);
        *b = b.refilled(now, self.rate, self.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Addresses with a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let limit = PerIpRate::new(10);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| limit.allow_at(a, t0)).count();
        assert_eq!(allowed, 30, "three seconds' worth at once");
        assert!(limit.allow_at(b, t0), "another address has its own bucket");
        assert!(!limit.allow_at(a, t0 + Duration::from_millis(50)));
        assert!(limit.allow_at(a, t0 + Duration::from_millis(100)), "one more every 100 ms");
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| limit.allow_at(a, later)).count(), 30, "full again, not more");
    }

    #[test]
    fn a_connection_has_its_burst_then_its_rate() {
        let mut c = ConnRate::new(5);
        let t0 = Instant::now();
        assert_eq!((0..100).filter(|_| c.allow_at(t0)).count(), 15);
        assert!(!c.allow_at(t0 + Duration::from_millis(100)));
        assert!(c.allow_at(t0 + Duration::from_millis(250)), "one more every 200 ms");
        let mut off = ConnRate::new(0);
        assert!((0..10_000).all(|_| off.allow()));
        let per_min = PerIpRate::per_minute(60);
        let ip: IpAddr = "10.1.1.1".parse().expect("ip");
        assert_eq!((0..1000).filter(|_| per_min.allow_at(ip, t0)).count(), 180);
        assert!(per_min.allow_at(ip, t0 + Duration::from_secs(1)), "one a second");
    }

    #[test]
    fn zero_is_no_limit_and_quiet_addresses_are_forgotten() {
        let off = PerIpRate::new(0);
        let ip: IpAddr = "::1".parse().expect("ip");
        assert!((0..10_000).all(|_| off.allow(ip)));
        assert_eq!(off.tracked(), 0);
        let limit = PerIpRate::new(1);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE as u32 {
            limit.allow_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(limit.tracked(), PRUNE_ABOVE + 1);
        limit.allow_at("192.0.2.1".parse().expect("ip"), t0 + Duration::from_secs(10));
        assert_eq!(limit.tracked(), 1, "the refilled buckets went");
    }
}
