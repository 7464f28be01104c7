//! Figure 6: the daemon's resident memory idle, and per cached key. A fresh
//! daemon serves a service principal (the Environment credential) against the
//! HTTPS Entra ID double: 10,000 distinct keys are far cheaper to mint there
//! than through 10,000 runs of `az`, and each one is a real acquisition
//! (HTTP client, token parsing, cache entry, refresh tracking). Four clients
//! fill the cache side by side, as a few tools starting together would; a
//! burst of a hundred parallel acquisitions would add its transient HTTP
//! connections and allocator slack to the figure, which is not what a key costs.

use std::sync::Arc;
use std::time::Duration;

use super::{token_request, Ctx};

/// Clients filling the cache, each with one request in flight.
const CLIENTS: usize = 4;

pub struct Memory {
    pub idle_rss: u64,
    /// After the first acquisition (HTTP client and credential actor warm).
    pub warm_rss: u64,
    pub keys: usize,
    pub filled_rss: u64,
    pub bytes_per_key: f64,
    pub fill_seconds: f64,
}

pub async fn run(ctx: &Ctx) -> Result<Memory, String> {
    let keys = ctx.pick(10_000, 10_000);
    let daemon = ctx.sandbox.start_daemon("memory")?;
    let chain = ctx.sandbox.service_principal_chain();
    // Let start-up work settle before reading the idle figure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = daemon.rss_bytes()?;

    let first = daemon.client(&chain);
    first
        .get_token(token_request(&scope(0)))
        .await
        .map_err(|e| format!("first acquisition: {e} {}", daemon.log_tail()))?;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let warm_rss = daemon.rss_bytes()?;

    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, next) = (daemon.client(&chain), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i > keys {
                    return Ok::<_, String>(());
                }
                let token = client
                    .get_token(token_request(&scope(i)))
                    .await
                    .map_err(|e| format!("key {i}: {e}"))?;
                if token.cached {
                    return Err(format!("key {i} was already cached"));
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("task: {e}"))??;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let filled_rss = daemon.rss_bytes()?;
    let minted = ctx.sandbox.entra.token_requests();
    if minted < keys + 1 {
        return Err(format!(
            "the Entra double minted {minted} tokens for {} keys",
            keys + 1
        ));
    }
    Ok(Memory {
        idle_rss,
        warm_rss,
        keys,
        filled_rss,
        bytes_per_key: filled_rss.saturating_sub(warm_rss) as f64 / keys as f64,
        fill_seconds,
    })
}

/// A distinct, valid scope per key.
fn scope(i: usize) -> String {
    format!("api://bench-resource-{i:05}/.default")
}
