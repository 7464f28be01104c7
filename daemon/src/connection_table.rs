//! The daemon's open connections: how many each peer holds, which are idle,
//! and which one gives way when there is no room.
//!
//! Why: 8,192 idle connections (the cap) once locked every client out,
//! `azbroker stop` included, because the accept loop waited for a free slot.
//! Now:
//! - a connection with nothing in flight that has been quiet for the idle
//!   timeout is closed (the client library reconnects on its next request);
//! - one peer process (pid, from the peer credentials) holds at most
//!   `per_peer` connections;
//! - a new connection is accepted even when there is no room: the
//!   longest-quiet connection with nothing in flight gives way (the peer's own
//!   when the peer is at its cap, anyone's when the daemon is). Only when every
//!   candidate has a request in flight is the newcomer refused, with a reason.
//!
//! So `azbroker status` and `azbroker stop` always get in, unless `max`
//! connections all wait for tokens at once. Evicting beats a reserve of slots:
//! a reserve can be filled by the same idle connections that filled the rest.
//!
//! The connection's side ([`Activity`]) is lock-free: a cache hit costs one
//! relaxed counter increment. The table learns who was quiet by comparing
//! counters when it sweeps or must choose, so "quiet since" is as precise as
//! the sweep interval (a quarter of the idle timeout).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

/// The daemon's connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub per_peer: usize,
    /// A connection with nothing in flight closes after this long without a
    /// request (and at most a half as long again: see the module's doc).
    pub idle_timeout: Duration,
}

impl Limits {
    /// The default connection cap (each connection is a socket: file descriptors).
    pub const MAX_CONNECTIONS: usize = 8192;
    /// Long enough that a client asking every few minutes keeps its connection.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

    /// `max_connections` in all, an eighth of them per peer.
    pub fn new(max_connections: usize, idle_timeout: Duration) -> Limits {
        let max_connections = max_connections.max(1);
        Limits {
            max_connections,
            per_peer: (max_connections / 8).max(1),
            idle_timeout,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(Limits::MAX_CONNECTIONS, Limits::IDLE_TIMEOUT)
    }
}

/// What a connection shares with the table. The connection reports use, the
/// table asks it to close.
#[derive(Debug, Default)]
pub struct Activity {
    /// Frames received and requests finished: changes whenever the connection is used.
    events: AtomicU64,
    /// Requests running beside the connection (misses, logins, diagnoses).
    in_flight: AtomicU32,
    closing: AtomicBool,
    waker: AtomicWaker,
}

impl Activity {
    /// A frame arrived.
    pub fn touch(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// A request now runs beside the connection; it counts as in flight until
    /// the guard is dropped (after its reply was sent).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Asks the connection to close (idle, evicted, daemon stopping, or a
    /// reply that could not be written).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once [`Activity::close`] was called.
    pub fn closed(&self) -> Closed<'_> {
        Closed(self)
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// A request in flight (see [`Activity::start`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The future of [`Activity::closed`]: an atomic load and a waker
/// registration per poll, no lock.
pub struct Closed<'a>(&'a Activity);

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_closing() {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        if self.0.is_closing() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

struct Entry {
    /// `None` where the platform does not tell (such peers share no per-peer cap).
    pid: Option<u32>,
    activity: Arc<Activity>,
    /// `activity.events` when last looked at, and since when it has not changed.
    seen: u64,
    quiet_since: Instant,
    /// Asked to close; no longer counted, removed when its task ends.
    closing: bool,
}

/// The bookkeeping, without a clock or locks of its own (unit-tested).
pub struct Table {
    limits: Limits,
    entries: HashMap<u64, Entry>,
    per_peer: HashMap<u32, usize>,
    /// Entries not closing.
    live: usize,
    next_id: u64,
}

impl Table {
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            entries: HashMap::new(),
            per_peer: HashMap::new(),
            live: 0,
            next_id: 0,
        }
    }

    /// Admits a new connection of `pid`, closing the longest-quiet idle one
    /// when the peer or the daemon is at its cap. `Err` says why not.
    pub fn admit(
        &mut self,
        pid: Option<u32>,
        activity: Arc<Activity>,
        now: Instant,
    ) -> Result<u64, String> {
        let peer_count = pid.map_or(0, |pid| self.peer_count(pid));
        if let Some(pid) = pid.filter(|_| peer_count >= self.limits.per_peer) {
            self.observe(now);
            let victim = self.longest_quiet(Some(pid)).ok_or_else(|| {
                format!(
                    "process {pid} already holds {peer_count} connections to azbrokerd \
                     (the most one process may), each with a request in flight"
                )
            })?;
            tracing::debug!(
                pid,
                "a process is at its connection cap: closing its longest-quiet connection"
            );
            self.close(victim);
        } else if self.live >= self.limits.max_connections {
            self.observe(now);
            let victim = self.longest_quiet(None).ok_or_else(|| {
                format!(
                    "azbrokerd holds {} connections (its cap), each with a request in flight",
                    self.live
                )
            })?;
            tracing::debug!("at the connection cap: closing the longest-quiet connection");
            self.close(victim);
        }
        let id = self.next_id;
        self.next_id += 1;
        let seen = activity.events.load(Ordering::Relaxed);
        self.entries.insert(
            id,
            Entry {
                pid,
                activity,
                seen,
                quiet_since: now,
                closing: false,
            },
        );
        self.live += 1;
        if let Some(pid) = pid {
            *self.per_peer.entry(pid).or_default() += 1;
        }
        Ok(id)
    }

    /// Forgets a connection whose task ended.
    pub fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            if !entry.closing {
                self.uncount(entry.pid);
            }
        }
    }

    /// Closes every connection with nothing in flight that has been quiet for
    /// the idle timeout; returns how many.
    pub fn close_idle(&mut self, now: Instant) -> usize {
        self.observe(now);
        let idle: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                !e.closing && now.duration_since(e.quiet_since) >= self.limits.idle_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &idle {
            self.close(*id);
        }
        idle.len()
    }

    /// Closes every connection (the daemon is stopping).
    pub fn close_all(&mut self) {
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Connections not asked to close.
    pub fn live(&self) -> usize {
        self.live
    }

    fn peer_count(&self, pid: u32) -> usize {
        self.per_peer.get(&pid).copied().unwrap_or(0)
    }

    /// Notes which connections were used since last time.
    fn observe(&mut self, now: Instant) {
        for entry in self.entries.values_mut().filter(|e| !e.closing) {
            let events = entry.activity.events.load(Ordering::Relaxed);
            if events != entry.seen || entry.activity.busy() {
                entry.seen = events;
                entry.quiet_since = now;
            }
        }
    }

    /// The connection (of `pid`, if given) quiet the longest with nothing in flight.
    fn longest_quiet(&self, pid: Option<u32>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.closing && !e.activity.busy())
            .filter(|(_, e)| pid.is_none() || e.pid == pid)
            .min_by_key(|(id, e)| (e.quiet_since, **id))
            .map(|(id, _)| *id)
    }

    fn close(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.activity.close();
        if !entry.closing {
            entry.closing = true;
            let pid = entry.pid;
            self.uncount(pid);
        }
    }

    fn uncount(&mut self, pid: Option<u32>) {
        self.live -= 1;
        if let Some(pid) = pid {
            if let Some(count) = self.per_peer.get_mut(&pid) {
                *count -= 1;
                if *count == 0 {
                    self.per_peer.remove(&pid);
                }
            }
        }
    }
}

/// The table shared by the accept loop, the connections and the idle sweeper.
/// Its lock is taken per accept, per closed connection and per sweep: never
/// per request.
pub struct Connections {
    limits: Limits,
    table: Mutex<Table>,
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::new(limits)),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection of `pid` (see [`Table::admit`]); it leaves the
    /// table when the returned [`Slot`] is dropped.
    pub fn admit(self: &Arc<Self>, pid: Option<u32>) -> Result<Slot, String> {
        let activity = Arc::new(Activity::default());
        let id = self.table().admit(pid, activity.clone(), Instant::now())?;
        Ok(Slot {
            connections: self.clone(),
            id,
            activity,
        })
    }

    pub fn close_all(&self) {
        self.table().close_all();
    }

    /// Closes idle connections every quarter of the idle timeout, forever.
    pub async fn sweep_idle(self: Arc<Self>) {
        let period = (self.limits.idle_timeout / 4).max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let closed = self.table().close_idle(Instant::now());
            if closed > 0 {
                tracing::debug!(closed, "closed idle connections");
            }
        }
    }
}

/// A connection's place in the table.
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Slot {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.table().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    fn table(max: usize, per_peer: usize) -> Table {
        Table::new(Limits {
            max_connections: max,
            per_peer,
            idle_timeout: IDLE,
        })
    }

    fn admit(table: &mut Table, pid: u32, now: Instant) -> Result<(u64, Arc<Activity>), String> {
        let activity = Arc::new(Activity::default());
        table
            .admit(Some(pid), activity.clone(), now)
            .map(|id| (id, activity))
    }

    fn secs(start: Instant, n: u64) -> Instant {
        start + Duration::from_secs(n)
    }

    #[test]
    fn a_peer_at_its_cap_gives_up_its_own_longest_quiet_connection() {
        let t0 = Instant::now();
        let mut table = table(100, 2);
        let (_, first) = admit(&mut table, 7, t0).unwrap();
        let (_, second) = admit(&mut table, 7, secs(t0, 1)).unwrap();
        let (_, other) = admit(&mut table, 8, t0).unwrap();
        second.touch();
        // The third of pid 7: its first (quiet longest) closes; pid 8's stays.
        let (_, third) = admit(&mut table, 7, secs(t0, 2)).unwrap();
        assert!(first.is_closing());
        assert!(!second.is_closing() && !third.is_closing() && !other.is_closing());
        assert_eq!(table.live(), 3);
        assert_eq!(table.peer_count(7), 2);
    }

    #[test]
    fn a_peer_whose_connections_are_all_busy_is_refused() {
        let t0 = Instant::now();
        let mut table = table(100, 2);
        let (_, a) = admit(&mut table, 7, t0).unwrap();
        let (_, b) = admit(&mut table, 7, t0).unwrap();
        let _busy = (a.start(), b.start());
        let refused = admit(&mut table, 7, t0).unwrap_err();
        assert!(
            refused.contains("process 7 already holds 2 connections"),
            "{refused}"
        );
        assert!(!a.is_closing() && !b.is_closing());
        // Another process still gets in.
        admit(&mut table, 8, t0).unwrap();
    }

    #[test]
    fn a_full_daemon_closes_the_longest_quiet_idle_connection() {
        let t0 = Instant::now();
        let mut table = table(3, 3);
        let (_, busy) = admit(&mut table, 1, t0).unwrap();
        let _in_flight = busy.start();
        let (_, quiet) = admit(&mut table, 2, secs(t0, 1)).unwrap();
        let (_, recent) = admit(&mut table, 3, secs(t0, 2)).unwrap();
        // `busy` is oldest but has a request in flight: `quiet` gives way.
        let (_, newcomer) = admit(&mut table, 4, secs(t0, 3)).unwrap();
        assert!(quiet.is_closing());
        assert!(!busy.is_closing() && !recent.is_closing() && !newcomer.is_closing());
        assert_eq!(table.live(), 3);
    }

    #[test]
    fn a_full_daemon_of_busy_connections_refuses_with_a_reason() {
        let t0 = Instant::now();
        let mut table = table(2, 2);
        let (_, a) = admit(&mut table, 1, t0).unwrap();
        let (_, b) = admit(&mut table, 2, t0).unwrap();
        let _busy = (a.start(), b.start());
        let refused = admit(&mut table, 3, t0).unwrap_err();
        assert!(
            refused.contains("holds 2 connections (its cap)"),
            "{refused}"
        );
    }

    #[test]
    fn removal_frees_the_peers_count_once() {
        let t0 = Instant::now();
        let mut table = table(10, 1);
        let (first, _) = admit(&mut table, 7, t0).unwrap();
        // Evicts `first`, whose task then ends and removes it: counted once.
        let (second, _) = admit(&mut table, 7, t0).unwrap();
        table.remove(first);
        assert_eq!((table.live(), table.peer_count(7)), (1, 1));
        table.remove(second);
        assert_eq!((table.live(), table.peer_count(7)), (0, 0));
        table.remove(second);
        assert_eq!(table.live(), 0);
    }

    #[test]
    fn only_connections_quiet_for_the_idle_timeout_with_nothing_in_flight_close() {
        let t0 = Instant::now();
        let mut table = table(10, 10);
        let (_, idle) = admit(&mut table, 1, t0).unwrap();
        let (_, used) = admit(&mut table, 1, t0).unwrap();
        let (_, busy) = admit(&mut table, 1, t0).unwrap();
        let in_flight = busy.start();
        used.touch();
        assert_eq!(table.close_idle(secs(t0, 30)), 0);
        // `used` was seen active at 30 s: quiet since then, not since 0.
        assert_eq!(table.close_idle(secs(t0, 60)), 1);
        assert!(idle.is_closing());
        assert!(!used.is_closing() && !busy.is_closing());
        drop(in_flight);
        assert_eq!(table.close_idle(secs(t0, 89)), 0);
        assert_eq!(table.close_idle(secs(t0, 90)), 1);
        assert!(used.is_closing() && !busy.is_closing());
        assert_eq!(table.close_idle(secs(t0, 150)), 1);
        assert!(busy.is_closing());
        assert_eq!(table.live(), 0);
    }

    #[test]
    fn peers_without_a_pid_share_no_per_peer_cap() {
        let t0 = Instant::now();
        let mut table = table(3, 1);
        for _ in 0..3 {
            table
                .admit(None, Arc::new(Activity::default()), t0)
                .unwrap();
        }
        assert_eq!(table.live(), 3);
    }

    #[tokio::test]
    async fn closed_wakes_the_waiting_connection() {
        let activity = Arc::new(Activity::default());
        let waiter = tokio::spawn({
            let activity = activity.clone();
            async move { activity.closed().await }
        });
        tokio::task::yield_now().await;
        activity.close();
        waiter.await.unwrap();
    }
}
