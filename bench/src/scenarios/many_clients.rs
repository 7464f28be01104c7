//! Figure 7: 1,000 idle connections held open (each past its Hello, as a
//! connected program's would be) while one more connection asks for cached
//! tokens; beside the same measurement just before they were opened. The
//! daemon started with a soft open-file limit below 1,000, so the figure also
//! shows that it raised its own limit.

use std::sync::Arc;
use std::time::Duration;

use azbroker_client::Client;

use crate::measure::{Latency, Samples};

use super::{broker_block, Ctx};

/// Idle connections held open (fewer only when the open-file limit forbids it).
pub const IDLE_CONNECTIONS: usize = 1_000;

pub struct ManyClients {
    pub idle_connections: usize,
    /// Connections the daemon reported open while measuring.
    pub daemon_connections_open: u64,
    pub daemon_open_files: usize,
    /// The daemon's soft open-file limit at start and now.
    pub nofile_at_start: u64,
    pub nofile_now: u64,
    pub without_idle: Latency,
    pub with_idle: Latency,
}

pub async fn run(ctx: &Ctx) -> Result<ManyClients, String> {
    let (rounds, per_round) = ctx.pick((4, 1_000), (10, 5_000));
    let client = Arc::new(ctx.main.client(&ctx.chain));
    let mut ignored = Samples::default();
    broker_block(&client, 1_000, &mut ignored).await?;
    let without_idle = measure(&client, rounds, per_round).await?;

    let mut idle = Vec::with_capacity(ctx.idle_connections);
    for i in 0..ctx.idle_connections {
        let idle_client = ctx.main.client(&ctx.chain);
        idle_client.welcome().await.map_err(|e| {
            format!(
                "idle connection {} of {}: {e} {}",
                i + 1,
                ctx.idle_connections,
                ctx.main.log_tail()
            )
        })?;
        idle.push(idle_client);
    }
    let with_idle = measure(&client, rounds, per_round).await?;
    let status = client.status().await.map_err(|e| format!("status: {e}"))?;
    let result = ManyClients {
        idle_connections: idle.len(),
        daemon_connections_open: status.counters.connections_open,
        daemon_open_files: ctx.main.open_files()?,
        nofile_at_start: crate::sandbox::DAEMON_START_NOFILE,
        nofile_now: ctx.main.open_file_limit()?,
        without_idle,
        with_idle,
    };
    drop(idle);
    Ok(result)
}

/// Sequential cached requests in a task on the worker threads (as in figure 1).
async fn measure(client: &Arc<Client>, rounds: usize, per_round: usize) -> Result<Latency, String> {
    let client = client.clone();
    let task = tokio::spawn(async move {
        let mut samples = Samples::with_capacity(rounds * per_round);
        let mut busy = Duration::ZERO;
        for _ in 0..rounds {
            busy += broker_block(&client, per_round, &mut samples).await?;
        }
        Ok::<_, String>(samples.summary(busy))
    });
    task.await.map_err(|e| format!("task: {e}"))?
}
