//! Wall-clock helpers. Token expiry is absolute (seconds since the epoch), so the
//! broker reasons in epoch time; timers convert to durations at the last moment.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

/// Time from now until `epoch_secs`, zero if it has passed.
pub fn until(epoch_secs: i64) -> Duration {
    let millis = epoch_secs.saturating_mul(1000) - now_millis();
    Duration::from_millis(millis.max(0) as u64)
}
