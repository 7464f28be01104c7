//! Figure 2: throughput and p99 with 1, 16, 64 and 256 connections, each a
//! task asking for a cached token in a loop, beside the bare baseline with as
//! many connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::measure::{cpu_time, Latency, Samples};
use crate::sandbox::Daemon;

use super::{token_request, Ctx, ARM};

pub const LEVELS: [usize; 4] = [1, 16, 64, 256];
/// Requests before this are not counted (connections warming up).
const WARM_UP: Duration = Duration::from_millis(200);

pub struct Level {
    pub connections: usize,
    pub broker: Latency,
    pub bare: Latency,
    /// CPU time per request of the server and the benchmark process together
    /// (the client side is this process): robust where wall-clock rates are
    /// not, e.g. on a machine shared with other work.
    pub broker_cpu_us: f64,
    pub bare_cpu_us: f64,
}

pub async fn run(ctx: &Ctx) -> Result<Vec<Level>, String> {
    let mut levels = Vec::new();
    for connections in LEVELS {
        levels.push(level(ctx, &ctx.main, connections).await?);
    }
    Ok(levels)
}

/// One level against `daemon` (which must have [`ARM`] cached), beside the
/// bare baseline; rounds of the two alternate.
pub async fn level(ctx: &Ctx, daemon: &Daemon, connections: usize) -> Result<Level, String> {
    // Three alternating rounds in quick mode too: one window of each was a
    // single draw of this shared machine's load, and the ratio swung by 0.2.
    let (rounds, window) = ctx.pick((3, Duration::from_millis(600)), (3, Duration::from_secs(1)));
    let (mut broker, mut bare) = (Samples::default(), Samples::default());
    let (mut broker_cpu, mut bare_cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let (samples, cpu) = broker_level(ctx, daemon, connections, window).await?;
        broker.extend(samples);
        broker_cpu += cpu;
        let (samples, cpu) = bare_level(ctx, connections, window).await?;
        bare.extend(samples);
        bare_cpu += cpu;
    }
    let busy = window * rounds as u32;
    let per_request =
        |cpu: Duration, samples: &Samples| cpu.as_secs_f64() * 1e6 / samples.count().max(1) as f64;
    Ok(Level {
        connections,
        broker_cpu_us: per_request(broker_cpu, &broker),
        bare_cpu_us: per_request(bare_cpu, &bare),
        broker: broker.summary(busy),
        bare: bare.summary(busy),
    })
}

/// Samples of requests that started and finished inside `[from, until)`.
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    /// CPU time the server `pid` and this process used inside the window.
    async fn cpu(&self, pid: u32) -> Duration {
        let both = || cpu_time(pid) + cpu_time(std::process::id());
        tokio::time::sleep_until(self.from.into()).await;
        let before = both();
        tokio::time::sleep_until(self.until.into()).await;
        both().saturating_sub(before)
    }
}

async fn broker_level(
    ctx: &Ctx,
    daemon: &Daemon,
    connections: usize,
    window: Duration,
) -> Result<(Samples, Duration), String> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        let client = daemon.client(&ctx.chain);
        client
            .welcome()
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        clients.push(Arc::new(client));
    }
    let from = Instant::now() + WARM_UP;
    let span = Arc::new(Window {
        from,
        until: from + window,
    });
    let mut tasks = Vec::new();
    for client in clients {
        let span = span.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let t = Instant::now();
                let token = client
                    .get_token(token_request(ARM))
                    .await
                    .map_err(|e| format!("cached token request: {e}"))?;
                let done = Instant::now();
                if done >= span.until {
                    return Ok::<_, String>(samples);
                }
                if !token.cached {
                    return Err("a cached token request missed the cache".into());
                }
                if t >= span.from {
                    samples.push(done - t);
                }
            }
        }));
    }
    let cpu = span.cpu(daemon.pid).await;
    Ok((collect(tasks).await?, cpu))
}

async fn bare_level(
    ctx: &Ctx,
    connections: usize,
    window: Duration,
) -> Result<(Samples, Duration), String> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(ctx.bare_client().await?);
    }
    let from = Instant::now() + WARM_UP;
    let span = Arc::new(Window {
        from,
        until: from + window,
    });
    let mut tasks = Vec::new();
    for mut client in clients {
        let span = span.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let t = Instant::now();
                client
                    .round_trip()
                    .await
                    .map_err(|e| format!("bare round trip: {e}"))?;
                let done = Instant::now();
                if done >= span.until {
                    return Ok::<_, String>(samples);
                }
                if t >= span.from {
                    samples.push(done - t);
                }
            }
        }));
    }
    let cpu = span.cpu(ctx.bare.pid).await;
    Ok((collect(tasks).await?, cpu))
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Result<Samples, String>>>,
) -> Result<Samples, String> {
    let mut all = Samples::default();
    for task in tasks {
        all.extend(task.await.map_err(|e| format!("task: {e}"))??);
    }
    Ok(all)
}
