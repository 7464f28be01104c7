//! When an actor last did something, and whether it holds work, so that a
//! sweep can stop idle actors without asking them (an actor busy with a slow
//! `az` could not answer anyway).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use crate::clock;

/// How long actors live without work, and how many credential actors there may be.
#[derive(Clone, Copy, Debug)]
pub struct ActorLimits {
    /// An actor with nothing to refresh and no request for this long stops.
    pub idle_after: Duration,
    /// Starting one more credential actor stops the longest-idle one first.
    pub max_credential_actors: usize,
}

impl Default for ActorLimits {
    /// Ten minutes keeps the actors of a working session (whose tokens are
    /// refreshed, hence tracked, anyway). 256 credential identities at once
    /// is far beyond any real user (a handful of tools and service principals)
    /// and bounds what a flood of made-up ones costs: each running actor
    /// holds about 15 KB, and what a flood allocates at once is what stays
    /// fragmented afterwards (benchmark figure 8: 2.4x the idle daemon after
    /// 2,000 identities with 4,096 actors allowed, 1.7x with 256). Going past
    /// it stops the longest-idle actor; its cached tokens stay served.
    fn default() -> Self {
        ActorLimits {
            idle_after: Duration::from_secs(10 * 60),
            max_credential_actors: 256,
        }
    }
}

/// Shared between an actor and whoever sweeps it.
#[derive(Debug)]
pub struct Activity {
    /// Epoch ms of the last request or refresh.
    last_active_ms: AtomicI64,
    /// Work that must not be dropped: acquisitions in flight, a pending login.
    busy: AtomicU32,
    /// Keys the actor keeps fresh.
    tracked: AtomicU32,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            last_active_ms: AtomicI64::new(clock::now_millis()),
            busy: AtomicU32::new(0),
            tracked: AtomicU32::new(0),
        }
    }
}

impl Activity {
    pub fn touch(&self) {
        self.last_active_ms.store(clock::now_millis(), Relaxed);
    }

    pub fn begin(&self) {
        self.touch();
        self.busy.fetch_add(1, Relaxed);
    }

    pub fn end(&self) {
        self.touch();
        self.busy.fetch_sub(1, Relaxed);
    }

    pub fn set_tracked(&self, keys: usize) {
        self.tracked.store(keys as u32, Relaxed);
    }

    /// Pretends the last use was `ms_ago` ago: tests order actors by idleness
    /// without sleeping (touches within one millisecond tie).
    #[cfg(test)]
    pub fn backdate(&self, ms_ago: i64) {
        self.last_active_ms
            .store(clock::now_millis() - ms_ago, Relaxed);
    }

    pub fn last_active_ms(&self) -> i64 {
        self.last_active_ms.load(Relaxed)
    }

    /// Nothing in flight, nothing to refresh, and no use for `idle_after`.
    pub fn is_idle(&self, idle_after: Duration, now_ms: i64) -> bool {
        self.busy.load(Relaxed) == 0
            && self.tracked.load(Relaxed) == 0
            && now_ms - self.last_active_ms() >= idle_after.as_millis() as i64
    }

    /// Stoppable at all (for the bound): nothing in flight.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Relaxed) > 0
    }
}

/// Ends a unit of work however its future ends (also when dropped).
pub struct Busy(pub std::sync::Arc<Activity>);

impl Busy {
    pub fn start(activity: &std::sync::Arc<Activity>) -> Busy {
        activity.begin();
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_needs_no_work_no_keys_and_time() {
        let activity = std::sync::Arc::new(Activity::default());
        let idle = Duration::from_secs(60);
        let now = activity.last_active_ms();
        assert!(!activity.is_idle(idle, now + 59_000));
        assert!(activity.is_idle(idle, now + 60_000));
        let busy = Busy::start(&activity);
        let now = activity.last_active_ms();
        assert!(!activity.is_idle(idle, now + 120_000));
        drop(busy);
        activity.set_tracked(1);
        let now = activity.last_active_ms();
        assert!(!activity.is_idle(idle, now + 120_000));
        activity.set_tracked(0);
        assert!(activity.is_idle(idle, now + 120_000));
    }
}
