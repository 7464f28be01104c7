//! One module per figure of the benchmark. Each takes the shared [`Ctx`] and
//! returns its own result type; `report` turns them into the table and JSON.

pub mod cached;
pub mod cli;
pub mod concurrency;
pub mod exec;
pub mod failing_storm;
pub mod identities;
pub mod many_clients;
pub mod memory;
pub mod policed;
pub mod refresh;
pub mod storm;

use std::time::{Duration, Instant};

use azbroker_client::Client;
use azbroker_proto::{ChainSpec, GetToken};

use crate::bare::BareClient;
use crate::measure::Samples;
use crate::sandbox::{Bare, Daemon, Sandbox};

/// The scope every cached-token figure asks for.
pub const ARM: &str = "https://management.azure.com/.default";

pub struct Ctx {
    pub sandbox: Sandbox,
    pub quick: bool,
    /// The daemon of the cached, concurrency, CLI, many-clients and storm figures,
    /// with `az` as its credential and [`ARM`] cached.
    pub main: Daemon,
    pub chain: ChainSpec,
    pub bare: Bare,
    /// Size of a token request frame as the client library sends it.
    pub request_bytes: usize,
    /// Idle connections the many-clients figure holds (what the open-file limit allows).
    pub idle_connections: usize,
}

impl Ctx {
    /// Picks the quick or the full value of a knob.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    pub async fn bare_client(&self) -> Result<BareClient, String> {
        BareClient::connect(&self.bare.socket, self.request_bytes, self.bare.reply_bytes)
            .await
            .map_err(|e| format!("bare server: {e}"))
    }
}

/// A token request as a program would make it: default validity, no tenant.
pub fn token_request(scope: &str) -> GetToken {
    GetToken {
        scopes: vec![scope.to_string()],
        tenant: None,
        claims: None,
        min_validity_secs: 0,
    }
}

/// `n` sequential cached-token requests; adds each latency and returns the wall time.
pub async fn broker_block(
    client: &Client,
    n: usize,
    samples: &mut Samples,
) -> Result<Duration, String> {
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let token = client
            .get_token(token_request(ARM))
            .await
            .map_err(|e| format!("cached token request: {e}"))?;
        samples.push(t.elapsed());
        if !token.cached {
            return Err("a request for a cached token was not served from the cache".into());
        }
    }
    Ok(started.elapsed())
}

/// `n` sequential bare round trips; adds each latency and returns the wall time.
pub async fn bare_block(
    bare: &mut BareClient,
    n: usize,
    samples: &mut Samples,
) -> Result<Duration, String> {
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        bare.round_trip()
            .await
            .map_err(|e| format!("bare round trip: {e}"))?;
        samples.push(t.elapsed());
    }
    Ok(started.elapsed())
}
