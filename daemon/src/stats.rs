//! Daemon-wide counters: lock-free, shared by every connection and actor.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use azbroker_proto::Counters;

#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub upstream_acquisitions: AtomicU64,
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    pub errors: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Counters {
        Counters {
            requests: self.requests.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            upstream_acquisitions: self.upstream_acquisitions.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_failures: self.refresh_failures.load(Relaxed),
            errors: self.errors.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
        }
    }
}
