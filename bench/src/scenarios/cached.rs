//! Figure 1: a cached token through the client library, one connection,
//! sequential, beside the bare round trip of the same sizes. Blocks of the
//! two alternate so that both see the same machine, and both run in a task on
//! the runtime's worker threads, as a program's request handlers would.

use std::time::{Duration, Instant};

use crate::bare::RawBrokerClient;
use crate::measure::{Latency, Samples};
use crate::sandbox::Daemon;

use super::{bare_block, broker_block, Ctx};

pub struct Cached {
    pub broker: Latency,
    pub bare: Latency,
    /// The same request as prebuilt frames on a plain socket: the daemon's
    /// part of the distance between `broker` and `bare`.
    pub daemon_only: Latency,
}

pub async fn run(ctx: &Ctx) -> Result<Cached, String> {
    run_against(ctx, &ctx.main).await
}

/// The figure against `daemon`, which must have [`super::ARM`] cached.
pub async fn run_against(ctx: &Ctx, daemon: &Daemon) -> Result<Cached, String> {
    let (rounds, per_round) = ctx.pick((10, 1_000), (20, 5_000));
    let client = daemon.client(&ctx.chain);
    let bare = ctx.bare_client().await?;
    let raw =
        RawBrokerClient::connect(&daemon.socket, &ctx.chain, super::token_request(super::ARM))
            .await?;
    tokio::spawn(alternate(client, bare, raw, rounds, per_round))
        .await
        .map_err(|e| format!("task: {e}"))?
}

async fn alternate(
    client: azbroker_client::Client,
    mut bare: crate::bare::BareClient,
    mut raw: RawBrokerClient,
    rounds: usize,
    per_round: usize,
) -> Result<Cached, String> {
    let mut ignored = Samples::default();
    broker_block(&client, 1_000, &mut ignored).await?;
    bare_block(&mut bare, 1_000, &mut ignored).await?;

    raw_block(&mut raw, 1_000, &mut ignored).await?;

    let mut broker = Samples::with_capacity(rounds * per_round);
    let mut baseline = Samples::with_capacity(rounds * per_round);
    let mut daemon_only = Samples::with_capacity(rounds * per_round);
    let (mut broker_time, mut bare_time, mut raw_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        broker_time += broker_block(&client, per_round, &mut broker).await?;
        bare_time += bare_block(&mut bare, per_round, &mut baseline).await?;
        raw_time += raw_block(&mut raw, per_round, &mut daemon_only).await?;
    }
    Ok(Cached {
        broker: broker.summary(broker_time),
        bare: baseline.summary(bare_time),
        daemon_only: daemon_only.summary(raw_time),
    })
}

async fn raw_block(
    raw: &mut RawBrokerClient,
    n: usize,
    samples: &mut Samples,
) -> Result<Duration, String> {
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        raw.round_trip().await?;
        samples.push(t.elapsed());
    }
    Ok(started.elapsed())
}
