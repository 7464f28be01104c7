//! Network checks for `azbroker diagnose`: can this process reach an endpoint
//! the way its HTTPS calls would, and if not, why?
//!
//! - [`settings`]: the proxy rules and extra trusted roots of a process, read
//!   from its environment exactly as azbrokerd's HTTP client reads them
//!   (azbrokerd builds that client from these very settings).
//! - [`probe`]: one endpoint, step by step (DNS, TCP, proxy CONNECT, TLS), each
//!   step with its own time limit, each failure with a [`NetworkProblem`] kind.
//! - [`check_all`] runs many endpoints at once.
//! - [`process_env`]: what else in a process's environment decides what it
//!   sees (credential tools on `PATH`, profile directories, proxy and CA variables).
//! - [`advice`]: what a network failure means and what to do about it, for
//!   these checks and for the network errors clients see.
//!
//! The daemon runs these checks for `Request::Diagnose`; the CLI runs them
//! itself only when no daemon can be reached. The results are the wire types
//! of `azbroker_proto::diagnose`, so both render the same way.

pub mod address;
pub mod advice;
pub mod probe;
pub mod process_env;
pub mod settings;
mod tls;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::diagnose::{EndpointCheck, Step, StepKind, StepOutcome};
use azbroker_proto::{Endpoint, NetworkProblem};

pub use probe::check_endpoint;
pub use settings::{load_extra_roots, mask_url_credentials, NetworkSettings};

/// Checks every endpoint concurrently; results come back in the input order.
pub async fn check_all(
    settings: Arc<NetworkSettings>,
    endpoints: Vec<Endpoint>,
    step_timeout: Duration,
) -> Vec<EndpointCheck> {
    // Loading the platform's roots reads many files: do it once, before any
    // step is timed, instead of inside the first TLS handshake.
    let _ = settings.tls_config();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, endpoint) in endpoints.iter().cloned().enumerate() {
        let settings = settings.clone();
        tasks.spawn(async move {
            (
                index,
                check_endpoint(&settings, &endpoint, step_timeout).await,
            )
        });
    }
    let mut results: Vec<Option<EndpointCheck>> = vec![None; endpoints.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((index, check)) = done {
            results[index] = Some(check);
        }
    }
    results
        .into_iter()
        .zip(endpoints)
        .map(|(check, endpoint)| check.unwrap_or_else(|| crashed(endpoint)))
        .collect()
}

/// The record of a check whose task panicked: a bug, reported rather than lost.
fn crashed(endpoint: Endpoint) -> EndpointCheck {
    EndpointCheck {
        steps: vec![Step {
            kind: StepKind::Connect,
            target: endpoint.to_string(),
            outcome: StepOutcome::Failed(NetworkProblem::Other),
            millis: 0,
            detail: "the check failed unexpectedly (a bug in azbroker)".into(),
        }],
        endpoint,
        proxy: None,
        addresses: Vec::new(),
    }
}
