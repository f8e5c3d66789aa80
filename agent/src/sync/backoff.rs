//! Jittered exponential backoff with a cap.

use std::time::Duration;

use rand::Rng;

/// Longest `Retry-After` honoured; a larger one is treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Delay before the next attempt: `initial * 2^failures`, capped at `max`, with "equal jitter"
/// (half fixed, half random) so that agents that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait. A server's `Retry-After` is a floor.
    pub fn fail(&mut self, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = exp / 2;
        let jitter = Duration::from_secs_f64(half.as_secs_f64() * rng.random::<f64>());
        let delay = half + jitter;
        match retry_after {
            Some(floor) => delay.max(floor.min(MAX_RETRY_AFTER)),
            None => delay,
        }
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut caps = Vec::new();
        for _ in 0..8 {
            let d = b.fail(None, &mut rng);
            caps.push(d);
        }
        let expected_caps = [100u64, 200, 400, 800, 1600, 2000, 2000, 2000];
        for (d, cap) in caps.iter().zip(expected_caps) {
            let cap = Duration::from_millis(cap);
            assert!(
                *d >= cap / 2 && *d <= cap,
                "{d:?} not within [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.fail(None, &mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let d = b.fail(Some(Duration::from_secs(7)), &mut rng);
        assert_eq!(d, Duration::from_secs(7));
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.fail(None, &mut rng) <= Duration::from_secs(60));
        }
    }
}
