//! Figure 9: the storm against a failing credential. 256 connections ask at
//! the same instant, while `az` takes 200 ms to fail (its sign-in expired),
//! and each asks again as soon as it has its error, a few times over: every
//! request of the burst falls within the daemon's failure window. Then the
//! window passes and the burst comes again. `az` may run once per window.

use std::time::{Duration, Instant};

use azbroker_client::ClientError;
use azbroker_e2e::Mode;
use azbroker_proto::CredentialKind;
use tokio::sync::watch;

use super::{token_request, Ctx};

pub const CALLERS: usize = 256;
/// Requests each caller makes in a row in one burst.
pub const ROUNDS: usize = 4;
/// Bursts, each in a window of its own.
pub const BURSTS: usize = 2;
pub const CREDENTIAL_DELAY: Duration = Duration::from_millis(200);
/// A key nobody asked for before.
const SCOPE: &str = "https://database.windows.net/.default";
/// What the daemon adds to an error it answers from memory.
const REMEMBERED: &str = "failed moments ago";

pub struct FailingStorm {
    pub callers: usize,
    pub rounds: usize,
    /// How long the daemon remembers a failed `az` run.
    pub window: Duration,
    pub bursts: Vec<Burst>,
}

pub struct Burst {
    /// Times `az` ran during the burst.
    pub az_runs: usize,
    /// Failure windows the burst spanned (1 unless it outlasted one).
    pub windows: usize,
    /// Replies that said they were remembered.
    pub remembered: usize,
    pub seconds: f64,
}

impl FailingStorm {
    /// The most `az` runs of any window (what must be 1).
    pub fn runs_per_window(&self) -> f64 {
        self.bursts
            .iter()
            .map(|b| b.az_runs as f64 / b.windows as f64)
            .fold(0.0, f64::max)
    }

    pub fn requests_per_burst(&self) -> usize {
        self.callers * self.rounds
    }
}

pub async fn run(ctx: &Ctx) -> Result<FailingStorm, String> {
    let az = &ctx.sandbox.az;
    az.set_mode(Mode::refresh_token_expired());
    az.set_delay(CREDENTIAL_DELAY);
    let result = storm(ctx).await;
    az.set_delay(Duration::ZERO);
    az.set_mode(Mode::Ok);
    result
}

async fn storm(ctx: &Ctx) -> Result<FailingStorm, String> {
    // A daemon of its own: what it remembers stays out of the other figures.
    let daemon = ctx.sandbox.start_daemon("failing")?;
    let window = azbroker_daemon::actors::credential::failure_ttl(CredentialKind::AzureCli)
        .ok_or("the daemon remembers no failure of az")?;
    let mut clients = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        let client = daemon.client(&ctx.chain);
        client
            .welcome()
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        clients.push(client);
    }
    let clients = std::sync::Arc::new(clients);
    let mut bursts = Vec::with_capacity(BURSTS);
    for n in 0..BURSTS {
        if n > 0 {
            // The last failure was remembered before the burst ended: a
            // whole window after its end, it is forgotten.
            tokio::time::sleep(window + Duration::from_millis(200)).await;
        }
        let az_before = ctx.sandbox.az.invocations();
        let started = Instant::now();
        let remembered = burst(&clients).await?;
        let elapsed = started.elapsed();
        bursts.push(Burst {
            az_runs: ctx.sandbox.az.invocations() - az_before,
            windows: 1 + (elapsed.as_secs_f64() / window.as_secs_f64()) as usize,
            remembered,
            seconds: elapsed.as_secs_f64(),
        });
    }
    Ok(FailingStorm {
        callers: CALLERS,
        rounds: ROUNDS,
        window,
        bursts,
    })
}

/// Every client asks [`ROUNDS`] times in a row, all starting together;
/// every request must fail. Returns how many replies were remembered failures.
async fn burst(clients: &std::sync::Arc<Vec<azbroker_client::Client>>) -> Result<usize, String> {
    let (go_tx, go_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(clients.len());
    for n in 0..clients.len() {
        let clients = clients.clone();
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            go.wait_for(|go| *go)
                .await
                .map_err(|_| "the start signal was dropped".to_string())?;
            let mut remembered = 0;
            for _ in 0..ROUNDS {
                match clients[n].get_token(token_request(SCOPE)).await {
                    Err(ClientError::Daemon(error)) => {
                        let said =
                            |what: &str| error.reasons.iter().any(|r| r.reason.contains(what));
                        if !said("AADSTS70043") {
                            return Err(format!("not az's failure: {}", error.message));
                        }
                        remembered += usize::from(said(REMEMBERED));
                    }
                    Err(e) => return Err(format!("failing storm request: {e}")),
                    Ok(_) => return Err("a token from a failing credential".into()),
                }
            }
            Ok::<_, String>(remembered)
        }));
    }
    // Let every task reach its wait before the signal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    go_tx.send_replace(true);
    let mut remembered = 0;
    for task in tasks {
        remembered += task.await.map_err(|e| format!("task: {e}"))??;
    }
    Ok(remembered)
}
