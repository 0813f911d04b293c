//! Capped exponential backoff with full jitter, for MQTT reconnects.
//!
//! After a broker outage a whole fleet reconnects; with full jitter each
//! agent waits a uniformly random time between zero and the current ceiling,
//! so the reconnects spread out instead of arriving in one burst. The ceiling
//! doubles with every failed attempt, from `initial` up to `cap`.
//!
//! The randomness is passed in, so this type does no I/O and its tests are
//! exact; the agent feeds it `rand::random::<f64>()`.

use std::time::Duration;

/// The first ceiling by default: 1 s.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// The largest ceiling by default: 60 s.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Reconnect delays: capped exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    /// Failed attempts since the last [`Backoff::reset`].
    attempts: u32,
}

impl Default for Backoff {
    /// 1 s initial ceiling, 60 s cap.
    fn default() -> Self {
        Backoff::new(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF)
    }
}

impl Backoff {
    /// A backoff whose ceiling starts at `initial` and doubles up to `cap`
    /// (a `cap` below `initial` wins: every ceiling is then `cap`).
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Backoff {
            initial,
            cap,
            attempts: 0,
        }
    }

    /// The ceiling of the next delay: `min(cap, initial * 2^attempts)`.
    pub fn ceiling(&self) -> Duration {
        // Past 2^32 any non-zero initial exceeds every useful cap, and
        // saturating_mul keeps the arithmetic from overflowing.
        let factor = 1u32.checked_shl(self.attempts).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt: `random * ceiling()`, where
    /// `random` is uniform in `[0, 1)`. Out-of-range values are clamped into
    /// `[0, 1]`, and NaN counts as 1 (the longest wait). Each call counts one
    /// failed attempt.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let random = if random.is_nan() {
            1.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let ceiling = self.ceiling();
        // Through f64 seconds: exact enough, and no overflow panic as
        // `Duration::mul_f64` could have near `Duration::MAX`.
        let delay = Duration::try_from_secs_f64(ceiling.as_secs_f64() * random)
            .unwrap_or(ceiling)
            .min(ceiling);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// Forget the failed attempts: call it once a connection is established.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_one_second_to_sixty() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..9).map(|_| backoff.next_delay(0.999_999)).collect();
        let secs: Vec<u64> = delays.iter().map(|d| d.as_secs()).collect();
        // 1, 2, 4, ... each just under the ceiling, capped at 60.
        assert_eq!(secs, vec![0, 1, 3, 7, 15, 31, 59, 59, 59]);
        assert_eq!(backoff.attempts(), 9);
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_scales_the_ceiling() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(500));
        assert_eq!(backoff.next_delay(0.25), Duration::from_millis(500));
        assert_eq!(backoff.next_delay(0.0), Duration::ZERO);
        assert_eq!(backoff.next_delay(0.75), Duration::from_secs(6));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..20 {
            backoff.next_delay(0.5);
        }
        assert_eq!(backoff.next_delay(0.5), Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(500));
    }

    #[test]
    fn configurable_and_cap_below_initial_wins() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let ms: Vec<u128> = (0..4)
            .map(|_| backoff.next_delay(1.0).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 350, 350]);
        let mut inverted = Backoff::new(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(inverted.next_delay(1.0), Duration::from_secs(2));
    }

    #[test]
    fn odd_random_values_are_clamped_and_never_panic() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(-3.0), Duration::ZERO);
        assert_eq!(backoff.next_delay(7.0), Duration::from_secs(2));
        assert_eq!(backoff.next_delay(f64::NAN), Duration::from_secs(4));
        assert_eq!(backoff.next_delay(f64::INFINITY), Duration::from_secs(8));
        assert_eq!(backoff.next_delay(f64::NEG_INFINITY), Duration::ZERO);
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut backoff = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..100 {
            backoff.next_delay(1.0);
        }
        assert_eq!(backoff.next_delay(1.0), Duration::MAX);
        let mut saturated = Backoff {
            attempts: u32::MAX,
            ..Backoff::default()
        };
        assert_eq!(saturated.next_delay(0.5), Duration::from_secs(30));
        assert_eq!(saturated.attempts(), u32::MAX);
    }
}
