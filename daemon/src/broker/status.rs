//! `azbroker status`: the daemon's report, from the broker's shared state,
//! cut into pages by `status_page`.

use std::sync::atomic::Ordering::Relaxed;

use azbroker_proto::{
    CacheEntryStatus, NameCount, StatusPage, StatusQuery, StatusReport, MAX_FRAME_LEN,
    PROTOCOL_VERSION,
};

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
            names: self.names(),
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

    /// Counters per exec NAME, by name: as many as fit in a quarter of a
    /// frame (every page repeats them; the rest is for the lists).
    fn names(&self) -> Vec<NameCount> {
        let mut budget = MAX_FRAME_LEN / 4;
        self.audit
            .counts_by_name()
            .into_iter()
            .map(|(name, counts)| NameCount {
                name,
                requests: counts.requests,
                hits: counts.hits,
                denied: counts.denied,
            })
            // Length prefix and three varint counters, at most 10 bytes each.
            .take_while(|count| match budget.checked_sub(count.name.len() + 35) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            })
            .collect()
    }
}
