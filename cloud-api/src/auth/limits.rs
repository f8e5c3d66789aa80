//! Requests per second per key and per address, and failed key checks per address: past the
//! last, an address is refused for a while before its key is even looked at, so guessing keys
//! is slow and the audit log stays bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::config::LimitsConfig;

pub(crate) struct Limits {
    per_key: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses refused until then, after too many failed key checks.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Requests per second, with a burst of twice as many.
fn per_second(rate: u32) -> Quota {
    Quota::per_second(nonzero(rate)).allow_burst(nonzero(rate.saturating_mul(2)))
}

impl Limits {
    pub(crate) fn new(c: &LimitsConfig) -> Limits {
        let failures = Quota::per_minute(nonzero(c.failed_auth_per_minute_per_address))
            .allow_burst(nonzero(c.failed_auth_per_minute_per_address));
        Limits {
            per_key: RateLimiter::keyed(per_second(c.requests_per_second_per_key)),
            per_address: RateLimiter::keyed(per_second(c.requests_per_second_per_address)),
            failures: RateLimiter::keyed(failures),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn wait(&self, not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
        not_until.wait_time_from(self.clock.now())
    }

    /// Whether `address` may be served now: not blocked, and under its rate. How long to wait
    /// otherwise.
    pub(crate) fn check_address(&self, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        {
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            match blocked.get(&address) {
                Some(until) if *until > now => return Err(*until - now),
                Some(_) => {
                    blocked.remove(&address);
                }
                None => {}
            }
        }
        self.per_address
            .check_key(&address)
            .map_err(|n| self.wait(n))
    }

    /// Whether the key named `key` may make another request now.
    pub(crate) fn check_key(&self, key: &str) -> Result<(), Duration> {
        self.per_key
            .check_key(&key.to_string())
            .map_err(|n| self.wait(n))
    }

    /// A failed key check from `address`; past the allowance, the address is blocked until
    /// its failures would be allowed again.
    pub(crate) fn failed(&self, address: IpAddr) {
        if let Err(n) = self.failures.check_key(&address) {
            let until = Instant::now() + self.wait(n);
            self.blocked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(address, until);
        }
    }

    /// Forgets the state of keys and addresses not seen for a while (bounded memory).
    pub(crate) fn forget_idle(&self) {
        self.per_key.retain_recent();
        self.per_address.retain_recent();
        self.failures.retain_recent();
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(&LimitsConfig {
            requests_per_second_per_key: 5,
            requests_per_second_per_address: 100,
            failed_auth_per_minute_per_address: 3,
        })
    }

    #[test]
    fn a_key_past_its_rate_waits() {
        let l = limits();
        let allowed = (0..50).filter(|_| l.check_key("k").is_ok()).count();
        assert_eq!(allowed, 10, "a burst of twice the rate");
        assert!(l.check_key("other").is_ok(), "keys are counted apart");
    }

    #[test]
    fn an_address_that_fails_too_often_is_blocked_for_a_while() {
        let l = limits();
        let a: IpAddr = "10.0.0.9".parse().unwrap_or(IpAddr::from([10, 0, 0, 9]));
        for _ in 0..3 {
            l.failed(a);
        }
        assert!(l.check_address(a).is_ok(), "three failures are allowed");
        l.failed(a);
        let wait = l.check_address(a).err().unwrap_or_default();
        assert!(wait > Duration::from_secs(5), "{wait:?}");
        assert!(l.check_address(IpAddr::from([10, 0, 0, 8])).is_ok());
    }
}
