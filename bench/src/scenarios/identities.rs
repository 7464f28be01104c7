//! Figure 8: resident memory after many distinct credential identities, and
//! again once their actors went idle and stopped (issue 11: 23,000 identities
//! grew the daemon to 286 MB for good). Each identity is a service principal
//! the Entra double does not know, so every request is a real acquisition that
//! fails at once (AADSTS700016) and leaves a credential actor behind, not a
//! cache entry. The daemon runs with a short actor idle time (the hidden
//! `--actor-idle-secs`) so the figure does not wait ten minutes.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use azbroker_client::ClientError;

use super::{token_request, Ctx, ARM};
use crate::sandbox::{client_at, unknown_service_principal_chain};

/// Clients asking side by side, each a new connection per identity.
const CLIENTS: usize = 4;
/// Actor idle time of the figure's daemon.
const IDLE_SECS: u64 = 2;

pub struct Identities {
    pub identities: usize,
    pub idle_rss: u64,
    pub loaded_rss: u64,
    pub after_idle_rss: u64,
    /// Credential actors alive right after the last identity (the bound caps
    /// it); `None` while status cannot list that many (its reply is limited).
    pub actors_loaded: Option<usize>,
    pub load_seconds: f64,
    /// From the last request until status showed no credential actor.
    pub drain_seconds: f64,
}

pub async fn run(ctx: &Ctx) -> Result<Identities, String> {
    let identities = ctx.pick(2_000, 20_000);
    let daemon = ctx
        .sandbox
        .start_daemon_with("identities", &["--actor-idle-secs", &IDLE_SECS.to_string()])?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = daemon.rss_bytes()?;

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let authority = ctx.sandbox.entra.authority();
    for _ in 0..CLIENTS {
        let (next, socket, authority) = (next.clone(), daemon.socket.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= identities {
                    return Ok::<_, String>(());
                }
                let chain = unknown_service_principal_chain(&authority, i);
                let client = client_at(&socket, chain);
                match client.get_token(token_request(ARM)).await {
                    Err(ClientError::Daemon(_)) => {}
                    Ok(_) => return Err(format!("identity {i} got a token")),
                    Err(e) => return Err(format!("identity {i}: {e}")),
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("task: {e}"))??;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let status = daemon.client(&ctx.chain);
    let actors = || async {
        status
            .status()
            .await
            .map(|s| s.credentials.len())
            .map_err(|e| format!("status: {e}"))
    };
    let actors_loaded = actors().await.ok();
    let loaded_rss = daemon.rss_bytes()?;

    let drained = Instant::now();
    // A status listing thousands of actors exceeds a frame: still loaded.
    while actors().await.map_or(true, |n| n > 0) {
        if drained.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "credential actors still alive 60 s after the last request {}",
                daemon.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_seconds = drained.elapsed().as_secs_f64();
    // The sweep that stopped the actors only asked them to stop; the next
    // sweep (every IDLE_SECS / 2) hands their freed memory back. Wait for it.
    tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
    let after_idle_rss = daemon.rss_bytes()?;
    Ok(Identities {
        identities,
        idle_rss,
        loaded_rss,
        after_idle_rss,
        actors_loaded,
        load_seconds,
        drain_seconds,
    })
}
