//! `azbroker status`: the daemon's report, from the broker's shared state,
//! cut into pages by `status_page`.

use std::sync::atomic::Ordering::Relaxed;

use azbroker_proto::{CacheEntryStatus, StatusPage, StatusQuery, StatusReport, PROTOCOL_VERSION};

use super::Broker;

impl Broker {
    /// The page of the status that `query` asks for (see `status_page`);
    /// `Request::Status` gets the first page.
    pub fn status(&self, query: &StatusQuery) -> StatusPage {
        let header = StatusReport {
            daemon_pid: std::process::id(),
            daemon_version: crate::VERSION.into(),
            protocol_version: PROTOCOL_VERSION,
            uptime_secs: self.started.elapsed().as_secs(),
            socket_path: self.socket_path.clone(),
            store: self.accounts.store_description(),
            credentials: Vec::new(),
            cache: Vec::new(),
            counters: self.stats.snapshot(),
        };
        let mut cache = self.cache.entries();
        crate::status_page::build(
            header,
            self.registry.statuses(),
            &mut cache,
            // By credential: a token is the credential's, whichever chains it serves.
            |(a, _), (b, _)| {
                (&a.credential, &a.target.scopes, &a.target.tenant).cmp(&(
                    &b.credential,
                    &b.target.scopes,
                    &b.target.tenant,
                ))
            },
            |(key, token)| CacheEntryStatus {
                credential: token.credential.name().into(),
                identity: key.credential.fingerprint(),
                tenant: key.target.tenant.clone(),
                scopes: key.target.scopes.clone(),
                expires_on: token.expires_on,
                refresh_on: token.refresh_on,
                hits: token.hits.load(Relaxed),
            },
            query,
        )
    }
}
