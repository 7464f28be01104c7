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
    /// Where tool credentials' logins live, watched for changes.
    pub tool_logins: Arc<crate::tool_logins::ToolLogins>,
}

/// What actors get in tests: a small cache, fresh counters, an HTTP client
/// that can reach nothing but a closed loopback port, and an account store in
/// the returned directory (kept alive by the caller).
#[cfg(test)]
pub fn test_deps() -> (ActorDeps, tempfile::TempDir) {
    let http = HttpClient::from_env(Some(
        "http://127.0.0.1:1/metadata/identity/oauth2/token".into(),
    ))
    .unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = crate::login::store::Store::file(store_dir.path().join("accounts.json"));
    let deps = ActorDeps {
        cache: TokenCache::new(100),
        stats: Arc::new(Stats::default()),
        accounts: crate::login::Accounts::new(http.clone(), store),
        http,
        // Changes are not consumed: actor tests do not change tool logins.
        tool_logins: crate::tool_logins::ToolLogins::start().0,
    };
    (deps, store_dir)
}
