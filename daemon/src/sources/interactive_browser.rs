//! InteractiveBrowser: tokens from the account the user logged in to, through
//! its refresh token; a browser login (authorization code + PKCE) when there is
//! none. All the work is the account actor's (`login/account_actor.rs`): this source
//! only says which account and how long a browser login may take.
//!
//! Broker mode (`AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL`) would use WAM on
//! Windows; azbroker does not build for Windows, and Linux and macOS have no
//! such OS broker, so broker mode is the same browser login.

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::CredentialSpec;

use super::{SourceContext, SourceError, SourceRequest, Token, TokenSource};
use crate::login::{AccountKey, Accounts};

pub struct InteractiveBrowserSource {
    key: AccountKey,
    timeout: Duration,
    accounts: Arc<Accounts>,
}

impl InteractiveBrowserSource {
    pub fn new(spec: &CredentialSpec, ctx: &SourceContext) -> Self {
        let CredentialSpec::InteractiveBrowser {
            timeout_secs,
            use_broker,
            ..
        } = spec
        else {
            unreachable!("InteractiveBrowserSource is built from an InteractiveBrowser spec");
        };
        if *use_broker {
            tracing::info!(
                "broker mode: no OS broker (WAM) on this platform; using the browser login"
            );
        }
        InteractiveBrowserSource {
            key: AccountKey::of_spec(spec, &ctx.authority_host).expect("a login credential"),
            timeout: crate::login::browser_timeout(*timeout_secs),
            accounts: ctx.accounts.clone(),
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for InteractiveBrowserSource {
    async fn acquire(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        self.accounts
            .acquire(&self.key, request, Some(self.timeout))
            .await
    }

    /// A background refresh never opens a browser.
    async fn acquire_silently(&self, request: &SourceRequest) -> Result<Token, SourceError> {
        self.accounts.acquire(&self.key, request, None).await
    }
}
