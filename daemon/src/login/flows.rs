//! The two ways a user logs in, each run as a task of its own by the account
//! actor: the browser (authorization code + PKCE, loopback redirect) and the
//! device code (a URL and a code shown in the user's terminal).

use std::time::Duration;

use tokio::sync::mpsc;

use super::loopback::{Listener, Outcome};
use super::oauth::{GrantError, OAuth, TokenSet};
use super::opener::{self, OpenError};
use crate::token_source::SourceError;

/// What a user without a usable browser should run instead.
pub const DEVICE_CODE_HINT: &str =
    "set BROWSER, or log in from a terminal with `azbroker login --device-code`";

/// Opens the browser at the authorize URL and waits for the redirect, then
/// redeems the code. Only a response with this login's `state`, from the
/// user's own socket, ends the wait early; else `timeout` does. One of these
/// runs per account at a time.
pub async fn browser(
    oauth: &OAuth,
    scopes: &[String],
    claims: Option<&str>,
    timeout: Duration,
) -> Result<TokenSet, SourceError> {
    let listener = Listener::bind().await.map_err(|e| {
        SourceError::Unavailable(format!(
            "cannot listen on a loopback port for the browser's redirect: {e}"
        ))
    })?;
    let redirect_uri = listener.redirect_uri();
    let (url, state, verifier) = oauth
        .authorize_url(&redirect_uri, scopes, claims)
        .map_err(|e| SourceError::failed(format!("cannot build the sign-in URL: {e}")))?;
    tracing::info!(%redirect_uri, timeout_secs = timeout.as_secs(), "opening the browser for sign-in");
    let opened = tokio::spawn({
        let url = url.to_string();
        async move { opener::open(&url).await }
    });
    let open_failed = async {
        match opened.await {
            Ok(Err(e)) => e,
            // Opened (or the opener task ended oddly): only the redirect or the timeout ends the wait.
            _ => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        biased;
        outcome = listener.wait(state.secret()) => outcome,
        error = open_failed => {
            return Err(match error {
                OpenError::NoBrowser(m) | OpenError::Failed(m) => {
                    SourceError::Unavailable(format!("{m}; {DEVICE_CODE_HINT}"))
                }
            });
        }
        _ = tokio::time::sleep(timeout) => {
            return Err(SourceError::Timeout(format!(
                "the browser sign-in did not complete within {} s (AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS); run the command again, or use `azbroker login --device-code`",
                timeout.as_secs()
            )));
        }
    };
    match outcome {
        Outcome::Code(code) => oauth
            .exchange_code(code, verifier, &redirect_uri, scopes)
            .await
            .map_err(|e| from_grant(e, oauth)),
        Outcome::Denied { error, description } => {
            let what = if error == "access_denied" {
                "the sign-in was cancelled or refused"
            } else {
                "the sign-in failed"
            };
            let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
            Err(SourceError::failed(format!(
                "{what}: {error}: {description}"
            )))
        }
    }
}

/// Starts a device-code login, sends its message through `progress`, and
/// polls until the user completes it or the code expires.
pub async fn device_code(
    oauth: &OAuth,
    scopes: &[String],
    progress: &mpsc::UnboundedSender<String>,
) -> Result<TokenSet, SourceError> {
    let (details, message) = oauth
        .device_code(scopes)
        .await
        .map_err(|e| from_grant(e, oauth))?;
    tracing::info!("device code login started; waiting for the user");
    let _ = progress.send(message);
    oauth.poll_device_code(&details).await.map_err(|e| match e {
        GrantError::Rejected { message, .. } if message.starts_with("expired_token") => {
            SourceError::failed(format!(
                "the device code expired before the sign-in was completed; run `azbroker login --device-code` again ({message})"
            ))
        }
        other => from_grant(other, oauth),
    })
}

/// A grant failure as a source error, naming the authority for transport errors.
pub fn from_grant(error: GrantError, oauth: &OAuth) -> SourceError {
    match error {
        GrantError::Transport(m) => {
            SourceError::failed(format!("cannot reach {}: {m}", oauth.authority()))
        }
        GrantError::Rejected {
            message,
            retry_after,
        } => SourceError::Failed {
            message,
            retry_after,
        },
        GrantError::InvalidGrant(m) | GrantError::InteractionRequired(m) => SourceError::failed(m),
    }
}
