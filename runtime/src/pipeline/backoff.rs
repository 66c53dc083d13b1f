//! Exponential backoff with full jitter, capped: the delay before attempt
//! `n` is uniform in `[0, min(max, initial * 2^n)]`, never below 10% of
//! that bound so that retries do not spin.

use std::time::Duration;

/// Backoff state for one retried operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubles each attempt, caps at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay, without jitter.
    pub fn bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay (jittered) and advances.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound();
        self.attempt = self.attempt.saturating_add(1);
        let low = bound / 10;
        let span = bound - low;
        low + span.mul_f64(rand::random::<f64>())
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut bounds = Vec::new();
        for _ in 0..8 {
            let bound = b.bound();
            let d = b.next_delay();
            assert!(
                d <= bound && d >= bound / 10,
                "{d:?} outside [{:?}, {bound:?}]",
                bound / 10
            );
            bounds.push(bound.as_millis());
        }
        assert_eq!(bounds, vec![100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.bound(), Duration::from_millis(100));
    }
}
