//! A client's session: what its Hello establishes, once checked.
//!
//! The protocol version is the connection's to check (`connection.rs`, before
//! a Hello is even decoded whole); here the chain is: its length, its
//! authority, every tenant it names, and the tools and environment its tool
//! credentials would run with.

use std::sync::Arc;

use azbroker_proto::{ChainSpec, CredentialSpec, ErrorKind, Hello, WireError};

use crate::audit::Who;
use crate::identity::chain_fingerprint;
use crate::policy::Requester;
use crate::scopes;

/// Longest chain a client may send.
const MAX_CHAIN_LEN: usize = 16;

/// What a connection learned from its Hello.
pub struct Session {
    pub chain: Arc<ChainSpec>,
    pub chain_fingerprint: u128,
    /// The Hello's client name: recorded, never trusted for policy.
    pub client: String,
    /// The pid the Hello claims (the peer credentials' is in `requester`).
    pub pid: u32,
    /// Who is behind the connection, as the daemon established it.
    pub requester: Requester,
    /// The same, as the audit records it (with the client name).
    pub who: Arc<Who>,
}

impl Session {
    /// Checks a Hello's chain and opens the session it describes for `requester`.
    pub fn open(hello: Hello, requester: Requester) -> Result<Session, WireError> {
        let chain = hello.chain;
        if chain.credentials.len() > MAX_CHAIN_LEN {
            return Err(WireError::new(
                ErrorKind::InvalidRequest,
                format!("a chain has at most {MAX_CHAIN_LEN} credentials"),
            ));
        }
        if !chain.authority_host.starts_with("https://") {
            return Err(WireError::new(
                ErrorKind::InvalidRequest,
                "the authority host must be an https:// URL",
            ));
        }
        for spec in &chain.credentials {
            for tenant in spec_tenants(spec) {
                scopes::validate_tenant(tenant)
                    .map_err(|e| WireError::new(ErrorKind::InvalidRequest, e))?;
            }
            // The daemon will run this tool with this environment: only what tools may see.
            if let Some((tool, tool_spec)) = spec.tool() {
                tool_spec.check(tool).map_err(|e| {
                    WireError::new(ErrorKind::InvalidRequest, format!("{}: {e}", spec.kind()))
                })?;
            }
        }
        let who = who(&hello.client_name, &requester);
        Ok(Session {
            chain_fingerprint: chain_fingerprint(&chain),
            chain: Arc::new(chain),
            client: hello.client_name,
            pid: hello.pid,
            requester,
            who,
        })
    }

    /// The same session for another requester (the managed-identity
    /// endpoint's sessions serve every peer, each its own process).
    pub fn for_requester(&self, requester: Requester) -> Session {
        let who = who(&self.client, &requester);
        Session {
            chain: self.chain.clone(),
            chain_fingerprint: self.chain_fingerprint,
            client: self.client.clone(),
            pid: self.pid,
            requester,
            who,
        }
    }
}

/// Longest client name the audit keeps (any process may send any name).
const MAX_AUDITED_CLIENT: usize = 128;

fn who(client: &str, requester: &Requester) -> Arc<Who> {
    let mut end = client.len().min(MAX_AUDITED_CLIENT);
    while !client.is_char_boundary(end) {
        end -= 1;
    }
    Arc::new(Who::new(
        requester.name().map(str::to_owned),
        client[..end].to_owned(),
        requester.pid,
        requester.executable.clone(),
    ))
}

fn spec_tenants(spec: &CredentialSpec) -> impl Iterator<Item = &str> {
    let tenant = match spec {
        CredentialSpec::Environment { tenant_id, .. }
        | CredentialSpec::WorkloadIdentity { tenant_id, .. }
        | CredentialSpec::InteractiveBrowser { tenant_id, .. }
        | CredentialSpec::DeviceCode { tenant_id, .. } => tenant_id.as_deref(),
        _ => None,
    };
    tenant.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_keeps_a_bounded_client_name() {
        let long = "é".repeat(200);
        let who = who(&long, &Requester::default());
        assert!(who.client.len() <= MAX_AUDITED_CLIENT);
        assert!(long.starts_with(&who.client));
        assert_eq!(
            super::who("azbroker-cli", &Requester::default()).client,
            "azbroker-cli"
        );
    }
}
