//! Credential sources: one adapter per credential kind behind [`TokenSource`].
//!
//! Sources are stateless about caching (the broker caches) and know nothing
//! about actors; a credential actor owns one source and decides when to call it.
//! Wherever `azure_identity` implements a credential, the source is a thin
//! adapter over it; the crate's own caches are bypassed by building a fresh
//! credential object per acquisition (construction is cheap, the HTTP client
//! and its connection pool are shared).

mod azure_cli;
mod azure_developer_cli;
mod azure_powershell;
mod certificate;
mod entra;
mod environment;
mod interactive_browser;
mod managed_identity;
pub mod process;
mod token_tenant;
mod workload_identity;

use std::sync::Arc;

use azbroker_proto::{CredentialKind, CredentialSpec};

pub use azure_cli::AzureCliSource;
pub use azure_developer_cli::AzureDeveloperCliSource;
pub use azure_powershell::AzurePowerShellSource;
pub use environment::EnvironmentSource;
pub use interactive_browser::InteractiveBrowserSource;
pub use managed_identity::ManagedIdentitySource;
pub use workload_identity::WorkloadIdentitySource;

pub use crate::token_source::{SourceError, SourceRequest, Token, TokenSource};

/// What every source may need from the daemon: the shared HTTP client and settings.
#[derive(Clone)]
pub struct SourceContext {
    pub http: crate::http::HttpClient,
    pub authority_host: String,
    /// Logged-in accounts (InteractiveBrowser).
    pub accounts: Arc<crate::login::Accounts>,
}

/// Builds the source for one credential of a chain.
pub fn build(spec: &CredentialSpec, ctx: &SourceContext) -> Arc<dyn TokenSource> {
    #[cfg(test)]
    if let Some(scripted) = crate::token_source::scripted::registered(&ctx.authority_host) {
        return scripted;
    }
    match spec {
        CredentialSpec::Environment { .. } => Arc::new(EnvironmentSource::new(spec.clone(), ctx)),
        CredentialSpec::WorkloadIdentity { .. } => {
            Arc::new(WorkloadIdentitySource::new(spec.clone(), ctx))
        }
        CredentialSpec::ManagedIdentity { .. } => {
            Arc::new(ManagedIdentitySource::new(spec.clone(), ctx))
        }
        CredentialSpec::AzureCli(tool) => Arc::new(AzureCliSource::new(tool, azure_cli::TIMEOUT)),
        CredentialSpec::AzurePowerShell(tool) => {
            Arc::new(AzurePowerShellSource::new(tool, azure_powershell::TIMEOUT))
        }
        CredentialSpec::AzureDeveloperCli(tool) => Arc::new(AzureDeveloperCliSource::new(
            tool,
            azure_developer_cli::TIMEOUT,
        )),
        CredentialSpec::InteractiveBrowser { .. } => {
            Arc::new(InteractiveBrowserSource::new(spec, ctx))
        }
        other => Arc::new(Unavailable(unimplemented_reason(other.kind()))),
    }
}

/// Whether a kind can ever produce a token in this build. The chain skips the
/// others without starting an actor for them.
pub fn is_implemented(kind: CredentialKind) -> bool {
    matches!(
        kind,
        CredentialKind::Environment
            | CredentialKind::WorkloadIdentity
            | CredentialKind::ManagedIdentity
            | CredentialKind::AzureCli
            | CredentialKind::AzurePowerShell
            | CredentialKind::AzureDeveloperCli
            | CredentialKind::InteractiveBrowser
    )
}

/// Why a kind that [`is_implemented`] rejects is unavailable.
pub fn unimplemented_reason(kind: CredentialKind) -> String {
    if kind == CredentialKind::VisualStudio && !cfg!(windows) {
        return "VisualStudioCredential is only available on Windows".into();
    }
    format!("{} is not implemented yet in azbroker", kind.name())
}

/// A source that is never available, with a fixed reason.
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl TokenSource for Unavailable {
    async fn acquire(&self, _: &SourceRequest) -> Result<Token, SourceError> {
        Err(SourceError::Unavailable(self.0.clone()))
    }
}
