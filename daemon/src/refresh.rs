//! When to refresh a token and how to back off after a failed refresh (`docs/spec/authentication.md`, "Tokens").

use std::time::Duration;

/// A cached token is served only while at least this much validity remains,
/// unless the client asks for more.
pub const DEFAULT_MIN_VALIDITY_SECS: i64 = 5 * 60;

/// The most validity a client may ask for. Access tokens live about an hour
/// (60 to 90 minutes from Entra ID), so asking for more could never be
/// satisfied from the cache and would send every request upstream.
pub const MAX_MIN_VALIDITY_SECS: i64 = 60 * 60;

/// When an acquisition fails, a cached token below the floor is still served
/// (flagged stale) while it has at least this much validity left, unless the
/// client asked for a validity of its own.
pub const STALE_MIN_VALIDITY_SECS: i64 = 60;

/// Lifetimes at or above this refresh at half-life instead of 5 minutes before expiry.
const HALF_LIFE_THRESHOLD_SECS: i64 = 2 * 60 * 60;

/// How long before a token drops below [`DEFAULT_MIN_VALIDITY_SECS`] its refresh
/// starts. Refreshing exactly at the floor would make every client that asks
/// while the new token is being acquired (half a second for a warm `az`, over
/// ten on a slow machine) miss the cache and wait. A minute covers a slow
/// acquisition, and a quick failure still gets one retry (30-36 s later)
/// before clients notice.
pub const REFRESH_LEAD_SECS: i64 = 60;

/// Failed refreshes are retried no more often than this.
pub const MIN_RETRY: Duration = Duration::from_secs(30);

/// Upper bound of the exponential backoff between failed refreshes.
const MAX_RETRY: Duration = Duration::from_secs(10 * 60);

/// The refresh point, in epoch seconds: the server's `refresh_in` when given;
/// otherwise half the lifetime for tokens living 2 h or more; otherwise
/// 5 minutes before expiry. Never later than [`REFRESH_LEAD_SECS`] before the
/// 5-minute floor, and never before `now`.
pub fn refresh_on(now: i64, expires_on: i64, server_refresh_in: Option<i64>) -> i64 {
    let lifetime = expires_on - now;
    let latest = expires_on - DEFAULT_MIN_VALIDITY_SECS - REFRESH_LEAD_SECS;
    let point = match server_refresh_in {
        Some(refresh_in) if refresh_in > 0 => now + refresh_in,
        _ if lifetime >= HALF_LIFE_THRESHOLD_SECS => now + lifetime / 2,
        _ => latest,
    };
    point.min(latest).clamp(now, expires_on)
}

/// Delay before retry number `attempt` (1-based) of a failed refresh:
/// exponential from 30 s, capped, with up to 20% jitter so that many keys do
/// not retry in lockstep, and never sooner than the server's `Retry-After`.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = MIN_RETRY.saturating_mul(1u32 << attempt.saturating_sub(1).min(8));
    let base = exp.min(MAX_RETRY);
    let jittered = base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.2);
    jittered
        .max(retry_after.unwrap_or(Duration::ZERO))
        .max(MIN_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    #[test]
    fn server_hint_wins() {
        assert_eq!(refresh_on(NOW, NOW + 3600, Some(1800)), NOW + 1800);
    }

    #[test]
    fn long_lived_tokens_refresh_at_half_life() {
        assert_eq!(refresh_on(NOW, NOW + 4 * 3600, None), NOW + 2 * 3600);
        assert_eq!(refresh_on(NOW, NOW + 2 * 3600, None), NOW + 3600);
    }

    #[test]
    fn short_lived_tokens_refresh_a_lead_before_the_five_minute_floor() {
        assert_eq!(refresh_on(NOW, NOW + 3599, None), NOW + 3599 - 300 - 60);
        assert_eq!(refresh_on(NOW, NOW + 370, None), NOW + 10);
    }

    #[test]
    fn a_late_server_hint_still_leaves_the_lead() {
        assert_eq!(refresh_on(NOW, NOW + 3600, Some(3500)), NOW + 3600 - 360);
    }

    #[test]
    fn refresh_point_is_never_in_the_past() {
        assert_eq!(refresh_on(NOW, NOW + 60, None), NOW);
        assert_eq!(refresh_on(NOW, NOW + 310, None), NOW);
        assert_eq!(refresh_on(NOW, NOW + 60, Some(600)), NOW);
    }

    #[test]
    fn retry_backs_off_from_thirty_seconds_and_honours_retry_after() {
        assert_eq!(retry_delay(1, None, 0.0), Duration::from_secs(30));
        assert_eq!(retry_delay(2, None, 0.0), Duration::from_secs(60));
        assert_eq!(retry_delay(3, None, 0.0), Duration::from_secs(120));
        assert_eq!(retry_delay(30, None, 0.0), Duration::from_secs(600));
        assert_eq!(retry_delay(1, None, 1.0), Duration::from_secs(36));
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(90)), 0.0),
            Duration::from_secs(90)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(30)
        );
    }
}
