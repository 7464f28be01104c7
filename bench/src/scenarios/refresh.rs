//! Figure 5: proactive refresh under steady traffic. Tokens live just over
//! the 5-minute validity floor, so the refresh point comes seconds after the
//! first acquisition; `az` takes as long as it does on a slow machine; clients
//! keep asking through the library every millisecond or so. After the first
//! (cold) request, no request may have to wait for an acquisition: every one
//! must be a cache hit, across refreshes.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azbroker_client::Client;

use super::{token_request, Ctx};

/// Token lifetime: the 5-minute floor, up to a minute of refresh lead, and
/// ten seconds, so a refresh is due about ten seconds after minting.
pub const LIFETIME_SECS: u64 = 300 + 60 + 10;
/// How long each `az` run takes here (a warm real `az` takes about 0.5 s).
pub const CREDENTIAL_DELAY: Duration = Duration::from_secs(2);
const SCOPE: &str = "https://graph.microsoft.com/.default";
const CLIENTS: usize = 4;
const PAUSE: Duration = Duration::from_millis(1);

pub struct Refresh {
    pub token_lifetime_secs: u64,
    pub seconds: f64,
    /// Requests after the first.
    pub requests: u64,
    /// Refreshes the daemon completed meanwhile.
    pub refreshes: u64,
    /// Distinct tokens the clients were served (more than one: refreshes reached them).
    pub distinct_tokens: usize,
    /// Requests that took the daemon's slow path (its miss counter).
    pub waits: u64,
    /// Replies flagged as not from the cache.
    pub uncached_replies: u64,
}

pub async fn run(ctx: &Ctx) -> Result<Refresh, String> {
    let daemon = ctx.sandbox.start_daemon("refresh")?;
    // The fake az reads its lifetime at each run: short-lived tokens while this runs.
    let az = &ctx.sandbox.az;
    az.set_lifetime(LIFETIME_SECS);
    az.set_delay(CREDENTIAL_DELAY);
    let result = traffic(ctx, &daemon).await;
    az.set_lifetime(azbroker_e2e::fake_az::DEFAULT_LIFETIME_SECS);
    az.set_delay(Duration::ZERO);
    result
}

async fn traffic(ctx: &Ctx, daemon: &crate::sandbox::Daemon) -> Result<Refresh, String> {
    let wanted_refreshes = ctx.pick(1, 2);
    let observer = daemon.client(&ctx.chain);
    let first = observer
        .get_token(token_request(SCOPE))
        .await
        .map_err(|e| format!("first request: {e} {}", daemon.log_tail()))?;
    let before = observer
        .status()
        .await
        .map_err(|e| format!("status: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let refresh_in = (first.refresh_on - now).max(0) as u64;
    // Wait for the refreshes, with room for a slow machine, then stop.
    let deadline = Instant::now() + Duration::from_secs(refresh_in * wanted_refreshes + 30);

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = daemon.client(&ctx.chain);
        let stop = stop.clone();
        tasks.push(tokio::spawn(ask_until(client, stop)));
    }
    let started = Instant::now();
    let mut refreshes = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = observer
            .status()
            .await
            .map_err(|e| format!("status: {e}"))?;
        refreshes = now.counters.refreshes - before.counters.refreshes;
        if refreshes >= wanted_refreshes {
            // Keep asking a little past the last refresh.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break;
        }
    }
    stop.store(true, Relaxed);
    let mut requests = 0;
    let mut uncached_replies = 0;
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        let seen = task.await.map_err(|e| format!("task: {e}"))??;
        requests += seen.requests;
        uncached_replies += seen.uncached;
        tokens.extend(seen.tokens);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = observer
        .status()
        .await
        .map_err(|e| format!("status: {e}"))?;
    Ok(Refresh {
        token_lifetime_secs: LIFETIME_SECS,
        seconds,
        requests,
        refreshes: refreshes.max(after.counters.refreshes - before.counters.refreshes),
        distinct_tokens: tokens.len(),
        waits: after.counters.cache_misses - before.counters.cache_misses,
        uncached_replies,
    })
}

struct Seen {
    requests: u64,
    uncached: u64,
    tokens: std::collections::HashSet<String>,
}

async fn ask_until(client: Client, stop: Arc<AtomicBool>) -> Result<Seen, String> {
    let mut seen = Seen {
        requests: 0,
        uncached: 0,
        tokens: Default::default(),
    };
    while !stop.load(Relaxed) {
        let token = client
            .get_token(token_request(SCOPE))
            .await
            .map_err(|e| format!("request during refresh: {e}"))?;
        seen.requests += 1;
        seen.uncached += u64::from(!token.cached);
        if !seen.tokens.contains(token.access_token.expose()) {
            seen.tokens.insert(token.access_token.expose().to_string());
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(seen)
}
