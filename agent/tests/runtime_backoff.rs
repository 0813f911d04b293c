//! kubelet's crash-loop backoff with a fake clock.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bramble_agent::runtime::{Backoff, RestartPolicy, MAX_BACKOFF};

#[test]
fn runtime_backoff_doubles_to_cap_and_resets_after_long_run() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    let short = Duration::from_secs(1);
    let mut now = t0;
    let mut seq = vec![];
    for _ in 0..8 {
        let d = b.on_exit(now, short);
        assert!(!b.ready(now));
        assert!(!b.ready(now + d - Duration::from_millis(1)));
        assert!(b.ready(now + d));
        seq.push(d.as_secs());
        now += d + short;
    }
    assert_eq!(seq, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(b.current, MAX_BACKOFF);
    // Ten minutes of running resets it.
    assert_eq!(b.on_exit(now, Duration::from_secs(600)).as_secs(), 10);
    assert!(RestartPolicy::parse(Some("OnFailure")).should_restart(2));
}
