//! Figure 4: the cold storm. 256 connections ask at the same instant for a key
//! nobody has yet, while the credential (`az`) takes 200 ms. Exactly one
//! upstream acquisition may happen, and the slowest caller should wait about
//! as long as one lone acquisition does.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{token_request, Ctx};

pub const CALLERS: usize = 256;
pub const CREDENTIAL_DELAY: Duration = Duration::from_millis(200);
/// A key used only to time one lone acquisition.
const LONE_SCOPE: &str = "https://storage.azure.com/.default";
/// The key of the storm.
const STORM_SCOPE: &str = "https://vault.azure.net/.default";

pub struct Storm {
    pub callers: usize,
    /// Upstream acquisitions the daemon counted during the storm.
    pub acquisitions: u64,
    /// Times `az` ran during the storm.
    pub az_runs: usize,
    /// Distinct tokens the callers received (1 when they all shared one).
    pub distinct_tokens: usize,
    pub lone_acquisition_ms: f64,
    pub slowest_ms: f64,
    pub median_ms: f64,
}

pub async fn run(ctx: &Ctx) -> Result<Storm, String> {
    let az = &ctx.sandbox.az;
    az.set_delay(CREDENTIAL_DELAY);
    let result = storm(ctx).await;
    az.set_delay(Duration::ZERO);
    result
}

async fn storm(ctx: &Ctx) -> Result<Storm, String> {
    let status_client = ctx.main.client(&ctx.chain);
    let lone = Instant::now();
    status_client
        .get_token(token_request(LONE_SCOPE))
        .await
        .map_err(|e| format!("lone acquisition: {e}"))?;
    let lone_acquisition = lone.elapsed();

    let mut clients = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        let client = ctx.main.client(&ctx.chain);
        client
            .welcome()
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        clients.push(client);
    }
    let before = status_client
        .status()
        .await
        .map_err(|e| format!("status: {e}"))?;
    let az_before = ctx.sandbox.az.invocations();

    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut tasks = Vec::with_capacity(CALLERS);
    for client in clients {
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            let started = *go
                .wait_for(Option::is_some)
                .await
                .map_err(|_| "the start signal was dropped".to_string())?;
            let token = client
                .get_token(token_request(STORM_SCOPE))
                .await
                .map_err(|e| format!("storm request: {e}"))?;
            Ok::<_, String>((started.map(|s| s.elapsed()), token.access_token))
        }));
    }
    // Let every task reach its wait before the signal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    go_tx.send_replace(Some(Instant::now()));
    let mut latencies = Vec::with_capacity(CALLERS);
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        let (latency, token) = task.await.map_err(|e| format!("task: {e}"))??;
        latencies.push(latency.unwrap_or_default());
        tokens.insert(token.expose().to_string());
    }
    let after = status_client
        .status()
        .await
        .map_err(|e| format!("status: {e}"))?;
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Storm {
        callers: CALLERS,
        acquisitions: after.counters.upstream_acquisitions - before.counters.upstream_acquisitions,
        az_runs: ctx.sandbox.az.invocations() - az_before,
        distinct_tokens: tokens.len(),
        lone_acquisition_ms: ms(lone_acquisition),
        slowest_ms: ms(*latencies.last().expect("callers")),
        median_ms: ms(latencies[latencies.len() / 2]),
    })
}
