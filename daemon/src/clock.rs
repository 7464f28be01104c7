//! Wall-clock helpers. Token expiry is absolute (seconds since the epoch), so the
//! broker reasons in epoch time; timers convert to durations at the last moment.
//!
//! The daemon reads the wall clock, not a monotonic one: a monotonic clock
//! stops while the machine sleeps, but tokens expire in wall time, so after a
//! resume a monotonic reckoning would serve expired tokens. In unit tests the
//! epoch instead follows tokio's clock (see `tokio_epoch`), so a test on
//! paused time (`start_paused`, `tokio::time::advance`) moves token expiry
//! together with the refresh timers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Milliseconds since the Unix epoch.
#[cfg(not(test))]
pub fn now_millis() -> i64 {
    wall_millis()
}

/// Milliseconds since the Unix epoch, on tokio's clock (see the module docs).
#[cfg(test)]
pub fn now_millis() -> i64 {
    tokio_epoch::now_millis()
}

/// Every cached hit reads the wall clock three or four times (the token's
/// validity, its last use, the audit line, the connection's activity); the
/// coarse clock is a read of the vDSO's page, a fraction of a full reading, and
/// its resolution (a few milliseconds) is far below what any of them needs.
#[cfg(target_os = "linux")]
fn wall_millis() -> i64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(now) => now.tv_sec() * 1000 + now.tv_nsec() / 1_000_000,
        Err(_) => precise_wall_millis(),
    }
}

#[cfg(not(target_os = "linux"))]
fn wall_millis() -> i64 {
    precise_wall_millis()
}

fn precise_wall_millis() -> i64 {
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

/// The epoch as tokio sees it: the wall clock read once, moved on by how far
/// tokio's clock has moved since. Each `#[tokio::test]` runtime has a clock of
/// its own, so a paused test does not move another test's time; outside a
/// paused runtime tokio's clock is the real monotonic clock.
#[cfg(test)]
mod tokio_epoch {
    use std::sync::OnceLock;
    use std::time::Instant;

    /// The wall clock (epoch ms) and the monotonic instant read together.
    fn base() -> &'static (i64, Instant) {
        static BASE: OnceLock<(i64, Instant)> = OnceLock::new();
        BASE.get_or_init(|| (super::wall_millis(), Instant::now()))
    }

    pub fn now_millis() -> i64 {
        let (epoch_ms, at) = *base();
        let at = tokio::time::Instant::from_std(at);
        let now = tokio::time::Instant::now();
        // A runtime paused before the base was read has a clock behind it.
        match now.checked_duration_since(at) {
            Some(ahead) => epoch_ms + ahead.as_millis() as i64,
            None => epoch_ms - at.duration_since(now).as_millis() as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_epoch_only_when_advanced() {
        let start = now_millis();
        assert!(
            (start - wall_millis()).abs() < 60_000,
            "near the wall clock"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(now_millis(), start, "paused: real time does not count");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(now_millis(), start + 3_600_000);
        let expiry = (start + 7_200_000) / 1000;
        let left = expiry * 1000 - (start + 3_600_000);
        assert_eq!(until(expiry), Duration::from_millis(left as u64));
    }

    #[tokio::test]
    async fn unpaused_time_follows_the_wall_clock() {
        let start = now_millis();
        std::thread::sleep(Duration::from_millis(20));
        assert!(now_millis() >= start + 20);
        assert!((now_millis() - wall_millis()).abs() < 1_000);
    }
}
