//! Restart decisions and kubelet's crash-loop backoff, with no I/O and an
//! injected clock so they can be tested on their own.
//!
//! Backoff: 10 s after the first failure, doubling up to 5 min; reset when a
//! container has run for 10 min before exiting.

use std::time::{Duration, Instant};

/// First backoff delay.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Backoff cap.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A run this long resets the backoff.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Always restart (default).
    #[default]
    Always,
    /// Restart on a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses the field (absent or unknown means `Always`).
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is restarted.
    pub fn should_restart(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// The backoff state of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The delay applied at the last exit (zero before any).
    pub current: Duration,
    /// When the container may start again.
    pub not_before: Option<Instant>,
}

impl Backoff {
    /// Records an exit at `now` of a run that lasted `ran_for`; returns the
    /// delay before the next start.
    pub fn on_exit(&mut self, now: Instant, ran_for: Duration) -> Duration {
        self.current = if ran_for >= RESET_AFTER || self.current.is_zero() {
            INITIAL_BACKOFF
        } else {
            (self.current * 2).min(MAX_BACKOFF)
        };
        self.not_before = Some(now + self.current);
        self.current
    }

    /// Whether the container may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.map(|t| now >= t).unwrap_or(true)
    }

    /// Time left at `now` before a start is allowed.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.not_before
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(RestartPolicy::parse(None).should_restart(0));
        assert!(!RestartPolicy::parse(Some("OnFailure")).should_restart(0));
        assert!(RestartPolicy::parse(Some("OnFailure")).should_restart(1));
        assert!(!RestartPolicy::parse(Some("Never")).should_restart(1));
    }
}
