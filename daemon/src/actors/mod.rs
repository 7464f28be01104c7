//! The ractor tree: one [`supervisor`] and one [`credential`] actor per credential identity.
//!
//! The actors own what must not be shared: a credential's source and its
//! refresh timers (refresh tokens belong to the account actors of `login/`, so
//! rotation is serialized by construction). Shared state that needs no owner (cache, counters) stays in
//! `Arc`s outside, and the [`registry`] maps identities to live actors for the
//! miss path.

pub mod activity;
pub mod credential;
pub mod health;
pub mod registry;
pub mod supervisor;

use std::sync::Arc;

use crate::cache::TokenCache;
use crate::http::HttpClient;
use crate::stats::Stats;

/// What every credential actor gets from the daemon.
#[derive(Clone)]
pub struct ActorDeps {
    pub cache: TokenCache,
    pub stats: Arc<Stats>,
    pub http: HttpClient,
    /// Logged-in accounts, each owned by its account actor.
    pub accounts: Arc<crate::login::Accounts>,
}
