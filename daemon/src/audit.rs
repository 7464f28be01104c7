//! The audit trail: every token request, who asked and what came of it.
//!
//! [`Audit::record`] is on the hot path (every cache hit calls it), so an
//! [`Event`] is cheap to make (who asked and what for are `Arc`s the session
//! and the request already hold) and recording is a push onto a bounded
//! intake under a lock held for nothing else: no syscall, no thread woken.
//! When the intake is full the event is dropped and counted (the log says
//! so), because a slow disk must never slow a token request.
//!
//! Events are numbered and moved into a ring of the last [`RING_CAPACITY`]
//! ("absorbed") by whoever reads them first. Absorbing folds a connection's
//! repeated hits on one target into the first of them, with a count
//! ([`coalesce_hits`]): a client that asks in a loop costs one record per
//! round, not one per request, and cannot push everyone else's records out
//! of the ring and the file. Readers are a query (`azbroker audit`,
//! status counters per exec NAME), or a writer thread of its own that wakes
//! every [`WRITE_EVERY`] and appends the new ones as JSON lines to
//! `<state dir>/audit.jsonl` (0600, never through a symlink; at
//! [`MAX_FILE_BYTES`] it becomes `audit.jsonl.1`, replacing the previous
//! one); file I/O never runs on a runtime worker. A record has no field that
//! could hold a token or a secret.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use azbroker_proto::{
    AuditJson, AuditOutcome, AuditPage, AuditQuery, AuditRecord, AuditWho, DaemonFrame, Reply,
    MAX_FRAME_LEN,
};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::cache::Target;
use crate::identity::CredentialId;
use crate::paths;

/// Records kept in memory for `azbroker audit`.
pub const RING_CAPACITY: usize = 10_000;
/// The file is rotated before it grows past this.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Events waiting to be absorbed; beyond this they are dropped and counted
/// (at a hundred thousand requests a second, a writer that lags by more than
/// a few of its rounds).
pub const QUEUE_LEN: usize = 65_536;
/// How often the writer absorbs and writes what came in.
pub const WRITE_EVERY: Duration = Duration::from_millis(200);
/// NAMEs counted at most (names come from any process of the user).
pub const MAX_NAMES: usize = 1024;
/// File name of the audit file in the state directory.
pub const FILE_NAME: &str = "audit.jsonl";
/// After the file could not be opened or written, how long before trying again.
const RETRY_FILE_AFTER: Duration = Duration::from_secs(30);

/// Where and how much the audit keeps.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The JSON-lines file; `None`: memory only.
    pub file: Option<PathBuf>,
    pub ring_capacity: usize,
    pub max_file_bytes: u64,
    pub queue_len: usize,
}

impl AuditConfig {
    /// `<state dir>/audit.jsonl` (beside `azbrokerd.log`) and the default bounds.
    pub fn from_env() -> AuditConfig {
        AuditConfig {
            file: azbroker_proto::paths::state_dir().map(|dir| dir.join(FILE_NAME)),
            ..AuditConfig::memory_only()
        }
    }

    /// The default bounds, no file.
    pub fn memory_only() -> AuditConfig {
        AuditConfig {
            file: None,
            ring_capacity: RING_CAPACITY,
            max_file_bytes: MAX_FILE_BYTES,
            queue_len: QUEUE_LEN,
        }
    }
}

/// What the requests of one NAME came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameCounters {
    pub requests: u64,
    pub hits: u64,
    pub denied: u64,
}

/// Who asked: fixed for a connection, shared by its events.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Who {
    /// The exec NAME the requester runs under.
    pub name: Option<String>,
    /// The Hello's client name (recorded, never trusted).
    pub client: String,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    /// The same four as the audit file's JSON, rendered once.
    json: AuditWho,
}

impl Who {
    pub fn new(name: Option<String>, client: String, pid: Option<u32>, exe: Option<String>) -> Who {
        let json = AuditWho::new(name.as_deref(), &client, pid, exe.as_deref());
        Who {
            name,
            client,
            pid,
            exe,
            json,
        }
    }
}

/// One token request as the broker saw it; made into an [`AuditRecord`]
/// only when written or read.
#[derive(Debug, Clone)]
pub struct Event {
    pub time_ms: i64,
    pub who: Arc<Who>,
    /// The scopes (normalized, or as sent when they were invalid) and the
    /// tenant asked for.
    pub target: Arc<Target>,
    /// The tenant of the token served, when the request named none (shared
    /// with the cache entry: a hit copies no string).
    pub token_tenant: Option<Arc<str>>,
    /// The credential that served the token (or refused to).
    pub credential: Option<CredentialId>,
    pub outcome: AuditOutcome,
    /// Requests this event stands for (1 when recorded; more once hits are folded).
    pub count: u32,
}

impl Event {
    /// The event as the audit file's JSON, borrowing from it.
    fn json<'a>(&'a self, time: &'a str) -> AuditJson<'a, &'a CredentialId> {
        AuditJson {
            time,
            who: &self.who.json,
            scopes: &self.target.scopes,
            tenant: self
                .target
                .tenant
                .as_deref()
                .or(self.token_tenant.as_deref()),
            credential: self.credential.as_ref(),
            outcome: self.outcome.as_str(),
            count: self.count,
        }
    }

    pub fn to_record(&self) -> AuditRecord {
        AuditRecord {
            time_ms: self.time_ms,
            name: self.who.name.clone(),
            client: self.who.client.clone(),
            pid: self.who.pid,
            exe: self.who.exe.clone(),
            scopes: self.target.scopes.clone(),
            tenant: self
                .target
                .tenant
                .clone()
                .or_else(|| self.token_tenant.as_deref().map(str::to_owned)),
            credential: self.credential.as_ref().map(ToString::to_string),
            outcome: self.outcome,
            count: self.count,
        }
    }
}

/// What recording fills, and absorbing, queries and the writer read. Lock
/// order: `file`, then `ring`, then `intake`.
struct Shared {
    intake: Mutex<Vec<Event>>,
    queue_len: usize,
    ring: Mutex<Ring>,
    file: Mutex<AuditFile>,
    dropped: AtomicU64,
}

struct Ring {
    events: VecDeque<(u64, Event)>,
    capacity: usize,
    last_seq: u64,
    /// Absorbed events the file has not got yet.
    unwritten: Vec<Event>,
    names: HashMap<String, NameCounters>,
    shared: Interned,
}

/// One copy of each distinct requester and target among the ring's events.
/// Connections come and go, each with its own `Who` and a `Target` per
/// request, but the ring outlives them: thousands of short connections would
/// otherwise leave thousands of small allocations scattered over the heap
/// (pinning pages the allocator cannot give back) for as long as the ring
/// remembers them.
#[derive(Default)]
struct Interned {
    whos: HashSet<Arc<Who>>,
    targets: HashSet<Arc<Target>>,
}

impl Interned {
    fn share(&mut self, event: &mut Event, ring_capacity: usize) {
        event.who = share(&mut self.whos, &event.who);
        event.target = share(&mut self.targets, &event.target);
        // Entries no event holds any more go, now and then: the sets stay
        // within about twice the ring.
        if self.whos.len() + self.targets.len() > 2 * ring_capacity {
            self.whos.retain(|who| Arc::strong_count(who) > 1);
            self.targets.retain(|target| Arc::strong_count(target) > 1);
        }
    }
}

/// The copy of `value` in `set`, after adding it there if it was new.
fn share<T: Eq + std::hash::Hash>(set: &mut HashSet<Arc<T>>, value: &Arc<T>) -> Arc<T> {
    if let Some(kept) = set.get(value) {
        return kept.clone();
    }
    set.insert(value.clone());
    value.clone()
}

pub struct Audit {
    shared: Arc<Shared>,
}

impl Audit {
    /// Starts the writer thread. Without a file (or when it cannot be opened)
    /// the audit still serves queries and counters from memory.
    pub fn start(config: AuditConfig) -> Audit {
        let shared = Arc::new(Shared {
            intake: Mutex::new(Vec::new()),
            queue_len: config.queue_len.max(1),
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                capacity: config.ring_capacity.max(1),
                last_seq: 0,
                unwritten: Vec::new(),
                names: HashMap::new(),
                shared: Interned::default(),
            }),
            file: Mutex::new(AuditFile::new(config.file, config.max_file_bytes)),
            dropped: AtomicU64::new(0),
        });
        // The writer holds the audit weakly: it ends when the daemon drops it.
        let writer = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name("azbroker-audit".into())
            .spawn(move || write_until_dropped(writer));
        if let Err(e) = spawned {
            // Queries still absorb and serve events; only the file misses them.
            tracing::error!(error = %e, "cannot start the audit writer; requests are not written to the audit file");
        }
        Audit { shared }
    }

    /// Records a token request. Never blocks on I/O: when the intake is full
    /// (nothing absorbed it for a while), the event is dropped and counted.
    pub fn record(&self, event: Event) {
        let mut intake = lock(&self.shared.intake);
        if intake.len() < self.shared.queue_len {
            intake.push(event);
        } else {
            drop(intake);
            self.shared.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Events dropped because the intake was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Absorbs and writes to the file everything recorded before, now
    /// (blocking file I/O: for tests and shutdown, not for a runtime worker).
    pub fn flush(&self) {
        self.shared.write_out();
    }

    /// The records `query` asks for, oldest first, as many as fit in a frame.
    pub fn query(&self, query: &AuditQuery) -> AuditPage {
        let mut ring = lock(&self.shared.ring);
        self.shared.absorb(&mut ring);
        // A sequence number the ring never reached is a previous daemon's:
        // everything here is new to that reader.
        let after = if query.after_seq > ring.last_seq {
            0
        } else {
            query.after_seq
        };
        let limit = match query.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut budget = MAX_FRAME_LEN.saturating_sub(empty_page_len());
        let mut page = AuditPage {
            records: Vec::new(),
            next_seq: after,
        };
        let start = ring.events.partition_point(|(seq, _)| *seq <= after);
        for (seq, event) in ring.events.range(start..) {
            if page.records.len() >= limit {
                break;
            }
            if wanted(query, event) {
                let record = event.to_record();
                let len = encoded_len(&(seq, &record));
                match budget.checked_sub(len) {
                    Some(left) => budget = left,
                    // The page is full: the next query goes on from here.
                    None if !page.records.is_empty() => break,
                    // Alone too large for any frame: skipped, so a reader
                    // that follows is never stuck on it.
                    None => {
                        page.next_seq = *seq;
                        continue;
                    }
                }
                page.records.push((*seq, record));
            }
            page.next_seq = *seq;
        }
        page
    }

    /// Counters per NAME, by name (requests of processes under no exec are
    /// in the daemon's own counters).
    pub fn counts_by_name(&self) -> Vec<(String, NameCounters)> {
        let mut ring = lock(&self.shared.ring);
        self.shared.absorb(&mut ring);
        let mut counts: Vec<_> = ring
            .names
            .iter()
            .map(|(name, counters)| (name.clone(), *counters))
            .collect();
        counts.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        counts
    }
}

fn wanted(query: &AuditQuery, event: &Event) -> bool {
    query.since_ms.is_none_or(|since| event.time_ms >= since)
        && query
            .name
            .as_deref()
            .is_none_or(|name| event.who.name.as_deref() == Some(name))
}

/// A page's encoded length with no record in it (the reply's frame around it).
fn empty_page_len() -> usize {
    let frame = DaemonFrame {
        id: u64::MAX,
        reply: Reply::Audit(AuditPage {
            records: Vec::new(),
            next_seq: u64::MAX,
        }),
    };
    // The record count's varint grows from 1 byte to at most 3 in a frame.
    const LIST_LEN_GROWTH: usize = 2;
    encoded_len(&frame) + LIST_LEN_GROWTH
}

fn encoded_len<T: Serialize>(item: &T) -> usize {
    postcard::serialize_with_flavor(item, postcard::ser_flavors::Size::default())
        .expect("audit records always encode")
}

/// A poisoned lock still holds consistent data here (every update is a
/// push, a pop or a counter bump): keep going rather than lose the audit.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: every [`WRITE_EVERY`], absorbs and writes out, until
/// the audit is gone.
fn write_until_dropped(shared: Weak<Shared>) {
    let mut drops_reported = 0;
    loop {
        std::thread::sleep(WRITE_EVERY);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.write_out();
        let dropped = shared.dropped.load(Relaxed);
        if dropped > drops_reported {
            tracing::warn!(
                dropped = dropped - drops_reported,
                total = dropped,
                "audit records dropped: nothing absorbed them in time"
            );
            drops_reported = dropped;
        }
    }
}

impl Shared {
    /// Numbers what came in, keeps it in the ring, counts it per NAME and
    /// leaves it for the file.
    fn absorb(&self, ring: &mut Ring) {
        // The intake keeps the room the last round needed: recording then
        // never grows it (a copy under the lock) in steady traffic.
        let batch = {
            let mut intake = lock(&self.intake);
            let room = intake.len();
            std::mem::replace(&mut *intake, Vec::with_capacity(room))
        };
        for mut event in coalesce_hits(batch) {
            ring.shared.share(&mut event, ring.capacity);
            ring.last_seq += 1;
            let seq = ring.last_seq;
            count(&mut ring.names, &event);
            if ring.events.len() == ring.capacity {
                ring.events.pop_front();
            }
            // Bounded too: a file that stalls must not hold events forever.
            if ring.unwritten.len() < self.queue_len {
                ring.unwritten.push(event.clone());
            } else {
                self.dropped.fetch_add(1, Relaxed);
            }
            ring.events.push_back((seq, event));
        }
    }

    /// Absorbs, then appends what the file has not got yet. The file's lock
    /// is held throughout, so batches reach the file in order. Lines are
    /// written straight from the events (no record built per event, the time
    /// formatted once per millisecond): at a hundred thousand hits a second
    /// this is the audit's whole cost.
    fn write_out(&self) {
        let mut file = lock(&self.file);
        let unwritten = {
            let mut ring = lock(&self.ring);
            self.absorb(&mut ring);
            std::mem::take(&mut ring.unwritten)
        };
        let mut lines = Vec::with_capacity(unwritten.len() * 256);
        let mut time = (i64::MIN, String::new());
        for event in &unwritten {
            if time.0 != event.time_ms {
                time = (
                    event.time_ms,
                    azbroker_proto::audit::rfc3339_utc(event.time_ms),
                );
            }
            event.json(&time.1).write_line(&mut lines);
        }
        file.append(&lines);
    }
}

/// Folds each hit into the first hit in `batch` of the same connection (its
/// `Who`), target, credential and token tenant, adding up their counts; keeps
/// everything else, in order. A batch is what came in since the last
/// absorption: at most one writer round. Every hit passes through here, so
/// the map is keyed by the connection's address (cheap to hash, and chosen by
/// no client) and a connection's targets are compared in a short list; past
/// [`FOLDED_TARGETS`] targets in one round, further ones are kept unfolded.
fn coalesce_hits(batch: Vec<Event>) -> Vec<Event> {
    let mut kept: Vec<Event> = Vec::with_capacity(batch.len());
    let mut first_hits: FxHashMap<*const Who, Vec<usize>> = FxHashMap::default();
    for event in batch {
        if event.outcome == AuditOutcome::Hit {
            let firsts = first_hits.entry(Arc::as_ptr(&event.who)).or_default();
            let same = firsts.iter().copied().find(|&at| {
                let first = &kept[at];
                first.target == event.target
                    && first.credential == event.credential
                    && first.token_tenant == event.token_tenant
            });
            if let Some(at) = same {
                let first = &mut kept[at];
                first.count = first.count.saturating_add(event.count);
                continue;
            }
            if firsts.len() < FOLDED_TARGETS {
                firsts.push(kept.len());
            }
        }
        kept.push(event);
    }
    kept
}

/// Targets per connection that one round folds hits into.
const FOLDED_TARGETS: usize = 8;

fn count(names: &mut HashMap<String, NameCounters>, event: &Event) {
    let Some(name) = &event.who.name else { return };
    if !names.contains_key(name) {
        if names.len() >= MAX_NAMES {
            return;
        }
        names.insert(name.clone(), NameCounters::default());
    }
    let counters = names.get_mut(name).expect("inserted above");
    let n = u64::from(event.count);
    counters.requests += n;
    match event.outcome {
        AuditOutcome::Hit => counters.hits += n,
        AuditOutcome::Denied => counters.denied += n,
        AuditOutcome::Acquired | AuditOutcome::Refreshed | AuditOutcome::Failed => {}
    }
}

/// The JSON-lines file, opened 0600 without following a symlink, rotated by size.
struct AuditFile {
    path: Option<PathBuf>,
    open: Option<File>,
    len: u64,
    max_len: u64,
    /// After a failure: not before this instant again.
    retry_at: Option<Instant>,
}

impl AuditFile {
    fn new(path: Option<PathBuf>, max_len: u64) -> AuditFile {
        AuditFile {
            path,
            open: None,
            len: 0,
            max_len,
            retry_at: None,
        }
    }

    /// Appends whole lines. A failure is logged and retried later; the
    /// records stay in memory.
    fn append(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        let Some(path) = self.path.clone() else {
            return;
        };
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let written = self.try_append(&path, lines);
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the audit file; records are kept in memory only");
            self.open = None;
            self.retry_at = Some(Instant::now() + RETRY_FILE_AFTER);
        } else {
            self.retry_at = None;
        }
    }

    fn try_append(&mut self, path: &std::path::Path, lines: &[u8]) -> io::Result<()> {
        if self.open.is_none() {
            self.reopen(path)?;
        }
        if self.len > 0 && self.len + lines.len() as u64 > self.max_len {
            self.open = None;
            std::fs::rename(path, rotated(path))?;
            self.reopen(path)?;
        }
        let file = self.open.as_mut().expect("opened above");
        file.write_all(lines)?;
        self.len += lines.len() as u64;
        Ok(())
    }

    fn reopen(&mut self, path: &std::path::Path) -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            paths::ensure_private_dir(dir)?;
        }
        let file = paths::open_private(path, true)?;
        self.len = file.metadata()?.len();
        self.open = Some(file);
        Ok(())
    }
}

/// `audit.jsonl` -> `audit.jsonl.1`.
fn rotated(path: &std::path::Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".1");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(n: i64, name: Option<&str>, outcome: AuditOutcome) -> Event {
        let who = Who::new(
            name.map(str::to_owned),
            "azbroker-cli".into(),
            Some(4242),
            Some("/usr/bin/python3".into()),
        );
        Event {
            time_ms: 1_700_000_000_000 + n,
            who: Arc::new(who),
            target: Arc::new(Target {
                tenant: None,
                scopes: vec!["https://storage.azure.com/.default".into()],
            }),
            token_tenant: Some("contoso.onmicrosoft.com".into()),
            credential: Some(CredentialId::of(
                &azbroker_proto::CredentialSpec::AzureCli(Default::default()),
                "https://login.microsoftonline.com",
            )),
            outcome,
            count: 1,
        }
    }

    fn all() -> AuditQuery {
        AuditQuery {
            after_seq: 0,
            since_ms: None,
            name: None,
            limit: 0,
        }
    }

    fn with_file(dir: &std::path::Path) -> AuditConfig {
        AuditConfig {
            file: Some(dir.join("azbroker").join(FILE_NAME)),
            ..AuditConfig::memory_only()
        }
    }

    fn seqs(page: &AuditPage) -> Vec<u64> {
        page.records.iter().map(|(seq, _)| *seq).collect()
    }

    #[tokio::test]
    async fn the_ring_keeps_the_newest_records_only() {
        let audit = Audit::start(AuditConfig {
            ring_capacity: 5,
            ..AuditConfig::memory_only()
        });
        for n in 0..12 {
            audit.record(record(n, None, AuditOutcome::Hit));
        }
        audit.flush();
        let page = audit.query(&all());
        assert_eq!(seqs(&page), [8, 9, 10, 11, 12]);
        assert_eq!(page.records[0].1.time_ms, 1_700_000_000_007);
        assert_eq!(page.next_seq, 12);
    }

    #[tokio::test]
    async fn queries_filter_by_seq_time_and_name_and_never_repeat_a_record() {
        let audit = Audit::start(AuditConfig::memory_only());
        audit.record(record(0, Some("agent"), AuditOutcome::Acquired));
        audit.record(record(10, None, AuditOutcome::Hit));
        audit.record(record(20, Some("agent"), AuditOutcome::Denied));
        audit.record(record(30, Some("other"), AuditOutcome::Hit));
        audit.flush();

        let agent = audit.query(&AuditQuery {
            name: Some("agent".into()),
            ..all()
        });
        assert_eq!(seqs(&agent), [1, 3]);
        // Past the last record looked at, matching or not: a follower skips "other".
        assert_eq!(agent.next_seq, 4);

        let since = audit.query(&AuditQuery {
            since_ms: Some(1_700_000_000_010),
            ..all()
        });
        assert_eq!(seqs(&since), [2, 3, 4]);

        let first_two = audit.query(&AuditQuery { limit: 2, ..all() });
        assert_eq!(seqs(&first_two), [1, 2]);
        let rest = audit.query(&AuditQuery {
            after_seq: first_two.next_seq,
            ..all()
        });
        assert_eq!(seqs(&rest), [3, 4]);
        let nothing_new = audit.query(&AuditQuery {
            after_seq: rest.next_seq,
            ..all()
        });
        assert!(nothing_new.records.is_empty());
        assert_eq!(nothing_new.next_seq, 4);

        // A seq this daemon never reached (a previous daemon's): from the start.
        let restarted = audit.query(&AuditQuery {
            after_seq: 1000,
            ..all()
        });
        assert_eq!(seqs(&restarted), [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_page_fits_in_a_frame() {
        let audit = Audit::start(AuditConfig::memory_only());
        // Not hits: those of one connection would fold into one record.
        let mut big = record(0, Some("agent"), AuditOutcome::Acquired);
        big.target = Arc::new(Target {
            tenant: None,
            scopes: vec!["s".repeat(1000)],
        });
        for _ in 0..200 {
            audit.record(big.clone());
        }
        audit.flush();
        let page = audit.query(&all());
        assert!(!page.records.is_empty() && page.records.len() < 200);
        let frame = DaemonFrame {
            id: u64::MAX,
            reply: Reply::Audit(page.clone()),
        };
        azbroker_proto::frame::encode(&frame).expect("fits in a frame");
        let next = audit.query(&AuditQuery {
            after_seq: page.next_seq,
            ..all()
        });
        assert_eq!(next.records[0].0, page.next_seq + 1);
    }

    #[tokio::test]
    async fn counts_per_name() {
        let audit = Audit::start(AuditConfig::memory_only());
        audit.record(record(0, Some("b"), AuditOutcome::Hit));
        audit.record(record(1, Some("a"), AuditOutcome::Acquired));
        audit.record(record(2, Some("a"), AuditOutcome::Hit));
        audit.record(record(3, Some("a"), AuditOutcome::Denied));
        audit.record(record(4, None, AuditOutcome::Hit));
        audit.flush();
        let a = NameCounters {
            requests: 3,
            hits: 1,
            denied: 1,
        };
        let b = NameCounters {
            requests: 1,
            hits: 1,
            denied: 0,
        };
        assert_eq!(
            audit.counts_by_name(),
            [("a".to_string(), a), ("b".to_string(), b)]
        );
    }

    #[tokio::test]
    async fn a_connections_repeated_hits_in_a_round_are_one_record_with_their_count() {
        const STORAGE: &str = "https://storage.azure.com/.default";
        const ARM: &str = "https://management.azure.com/.default";
        let audit = Audit::start(AuditConfig::memory_only());
        let first = record(0, Some("agent"), AuditOutcome::Hit);
        // Another connection of the same NAME: a `Who` of its own.
        let elsewhere = record(0, Some("agent"), AuditOutcome::Hit);
        let then = |n: i64, outcome, scope: &str| Event {
            time_ms: first.time_ms + n,
            target: Arc::new(Target {
                tenant: None,
                scopes: vec![scope.into()],
            }),
            outcome,
            ..first.clone()
        };
        audit.record(first.clone());
        audit.record(then(1, AuditOutcome::Hit, STORAGE));
        audit.record(then(2, AuditOutcome::Denied, ARM));
        audit.record(then(3, AuditOutcome::Hit, ARM));
        audit.record(then(4, AuditOutcome::Hit, STORAGE));
        audit.record(elsewhere);
        audit.record(then(5, AuditOutcome::Acquired, STORAGE));
        audit.flush();

        let page = audit.query(&all());
        let seen: Vec<(AuditOutcome, &str, u32, i64)> = page
            .records
            .iter()
            .map(|(_, r)| {
                let at = r.time_ms - first.time_ms;
                (r.outcome, r.scopes[0].as_str(), r.count, at)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (AuditOutcome::Hit, STORAGE, 3, 0),
                (AuditOutcome::Denied, ARM, 1, 2),
                (AuditOutcome::Hit, ARM, 1, 3),
                (AuditOutcome::Hit, STORAGE, 1, 0),
                (AuditOutcome::Acquired, STORAGE, 1, 5),
            ]
        );
        // Every request counts for its NAME.
        let agent = NameCounters {
            requests: 7,
            hits: 5,
            denied: 1,
        };
        assert_eq!(audit.counts_by_name(), [("agent".to_string(), agent)]);
        // The next round starts a record of its own.
        audit.record(then(6, AuditOutcome::Hit, STORAGE));
        audit.flush();
        let next = audit.query(&AuditQuery {
            after_seq: page.next_seq,
            ..all()
        });
        assert_eq!(next.records.len(), 1);
        assert_eq!(next.records[0].1.count, 1);
    }

    #[test]
    fn hits_fold_into_a_bounded_list_of_targets_per_connection() {
        let first = record(0, Some("agent"), AuditOutcome::Hit);
        let hit = |n: usize| Event {
            target: Arc::new(Target {
                tenant: None,
                scopes: vec![format!("https://r{n}.example/.default")],
            }),
            ..first.clone()
        };
        // One round: each of more targets than are folded, hit twice.
        let targets = FOLDED_TARGETS + 2;
        let batch: Vec<Event> = (0..2).flat_map(|_| (0..targets).map(hit)).collect();
        let kept = coalesce_hits(batch);
        let counts: Vec<u32> = kept.iter().map(|e| e.count).collect();
        let mut expected = vec![2; FOLDED_TARGETS];
        expected.extend([1, 1, 1, 1]);
        assert_eq!(counts, expected);
        assert_eq!(counts.iter().sum::<u32>(), 2 * targets as u32);
        // A hit on the same target from another credential is not folded into it.
        let other = Event {
            credential: None,
            ..hit(0)
        };
        assert_eq!(coalesce_hits(vec![hit(0), other, hit(0)]).len(), 2);
    }

    #[tokio::test]
    async fn the_ring_keeps_one_copy_of_equal_requesters_and_targets() {
        let audit = Audit::start(AuditConfig {
            ring_capacity: 100,
            ..AuditConfig::memory_only()
        });
        // A thousand short connections alike: each event its own `Who` and `Target`.
        for n in 0..1_000 {
            audit.record(record(n, Some("agent"), AuditOutcome::Acquired));
        }
        audit.flush();
        let ring = lock(&audit.shared.ring);
        assert_eq!(ring.events.len(), 100);
        let (_, first) = &ring.events[0];
        assert!(ring.events.iter().all(|(_, event)| {
            Arc::ptr_eq(&event.who, &first.who) && Arc::ptr_eq(&event.target, &first.target)
        }));
        assert!(ring.shared.whos.len() + ring.shared.targets.len() <= 2 * 100 + 2);
        // Still the records they were.
        assert_eq!(first.who.name.as_deref(), Some("agent"));
        assert_eq!(first.time_ms, 1_700_000_000_900);
    }

    #[test]
    fn a_full_intake_drops_and_counts_instead_of_blocking() {
        // An intake of 3 and a writer stuck (on the file, as on a slow disk:
        // it holds the file's lock before it absorbs anything).
        let audit = Audit::start(AuditConfig {
            queue_len: 3,
            ..AuditConfig::memory_only()
        });
        let held = lock(&audit.shared.file);
        let started = Instant::now();
        for n in 0..1000 {
            audit.record(record(n, None, AuditOutcome::Hit));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(audit.dropped(), 997);
        drop(held);
        // What was taken in is still there for a query.
        assert_eq!(seqs(&audit.query(&all())), [1, 2, 3]);
    }

    #[test]
    fn the_writer_writes_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_file(dir.path());
        let path = config.file.clone().unwrap();
        let audit = Audit::start(config);
        audit.record(record(0, Some("agent"), AuditOutcome::Hit));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).map_or(true, |text| text.lines().count() < 1) {
            assert!(Instant::now() < deadline, "the writer never wrote");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn the_file_is_private_json_lines_with_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_file(dir.path());
        let path = config.file.clone().unwrap();
        let audit = Audit::start(config);
        audit.record(record(0, Some("agent"), AuditOutcome::Acquired));
        audit.record(record(1, None, AuditOutcome::Failed));
        audit.flush();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["name"], "agent");
        assert_eq!(lines[0]["outcome"], "acquired");
        assert_eq!(lines[0]["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(lines[0]["pid"], 4242);
        // The request named no tenant: the token's.
        assert_eq!(lines[0]["tenant"], "contoso.onmicrosoft.com");
        // The credential as status shows it (kind and identity fingerprint).
        let credential = lines[0]["credential"].as_str().unwrap();
        assert!(
            credential.starts_with("AzureCliCredential#"),
            "{credential}"
        );
        assert_eq!(lines[1]["name"], serde_json::Value::Null);
        assert_eq!(lines[1]["outcome"], "failed");
        for key in azbroker_proto::audit::FIELDS {
            assert!(lines[0].get(key).is_some(), "{key} missing");
        }
        assert_eq!(lines[0].as_object().unwrap().len(), 10);
        assert_eq!(lines[0]["count"], 1);
    }

    #[tokio::test]
    async fn an_existing_file_is_made_private_and_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_file(dir.path());
        let path = config.file.clone().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"earlier\":1}\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let audit = Audit::start(config);
        audit.record(record(0, None, AuditOutcome::Hit));
        audit.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"earlier\":1}\n"), "{text}");
        assert_eq!(text.lines().count(), 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn the_file_rotates_by_size_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            max_file_bytes: 1000,
            ..with_file(dir.path())
        };
        let path = config.file.clone().unwrap();
        let old = rotated(&path);
        let audit = Audit::start(config);
        for n in 0..40 {
            audit.record(record(n, None, AuditOutcome::Hit));
            // One record per batch, so rotation is judged line by line.
            audit.flush();
        }
        let line_len = record(0, None, AuditOutcome::Hit)
            .to_record()
            .json_line()
            .len() as u64
            + 1;
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(&old).unwrap().len();
        assert!(current <= 1000 && previous <= 1000, "{current} {previous}");
        assert!(previous + line_len > 1000, "rotated too early: {previous}");
        assert_eq!(current % line_len, 0);
        assert_eq!(
            std::fs::metadata(&old).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Only the two files: one old file is kept.
        let files = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files, 2);
        let last: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(last["time"], "2023-11-14T22:13:20.039Z");
    }

    #[tokio::test]
    async fn a_symlink_at_the_file_path_is_refused_and_the_ring_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let config = with_file(dir.path());
        let path = config.file.clone().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let audit = Audit::start(config);
        audit.record(record(0, None, AuditOutcome::Hit));
        audit.flush();
        assert!(!target.exists(), "the audit followed a symlink");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(seqs(&audit.query(&all())), [1]);
    }
}
