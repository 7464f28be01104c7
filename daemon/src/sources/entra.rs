//! What the credentials that talk to the Entra ID token endpoint share
//! (service principal with secret or certificate, workload identity): client
//! options pointing `azure_identity` at the chain's authority, the rules for
//! scopes, tenants and claims of the client-credentials grant, and the
//! translation of its errors.

use std::sync::Arc;
use std::time::Duration;

use azbroker_proto::Secret;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::AccessToken;
use azure_core::error::ErrorKind;
use azure_core::http::ClientOptions;

use super::{SourceContext, SourceError, SourceRequest, Token};
use crate::error_chain::{error_chain, tidy};
use crate::http::describe_transport_error;

/// `azure_identity` client options: the shared HTTP client, no retries, and
/// the chain's authority host.
pub fn client_options(ctx: &SourceContext) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = ctx.authority_host.clone();
    let mut options = ctx.http.client_options();
    options.cloud = Some(Arc::new(CloudConfiguration::Custom(cloud)));
    options
}

/// The client-credentials grant takes exactly one `<resource>/.default`
/// scope; more than one is refused here with a clear reason instead of an
/// AADSTS error from the service.
pub fn one_scope<'a>(request: &'a SourceRequest, credential: &str) -> Result<&'a str, SourceError> {
    match request.scopes.as_slice() {
        [scope] => Ok(scope),
        _ => Err(SourceError::failed(format!(
            "{credential} gets a token for one resource at a time (the client credentials grant takes a single '<resource>/.default' scope); ask for each scope separately"
        ))),
    }
}

/// An application has no user who could satisfy a claims challenge.
pub fn refuse_claims(request: &SourceRequest) -> Result<(), SourceError> {
    if request.claims.is_some() {
        return Err(SourceError::failed(
            "an application identity cannot answer a claims challenge: nothing can be run to satisfy it; the resource's conditional access policy must allow this service principal",
        ));
    }
    Ok(())
}

/// The tenant to authenticate in: the request's, else the configured one.
/// A service principal of a multi-tenant app may get tokens in other tenants,
/// so a differing tenant is passed on (Entra answers if the app is not there).
pub fn tenant<'a>(request: &'a SourceRequest, configured: &'a str) -> &'a str {
    request.tenant.as_deref().unwrap_or(configured)
}

pub fn token(token: AccessToken, tenant: &str) -> Token {
    Token {
        access_token: Secret::new(token.token.secret()),
        expires_on: token.expires_on.unix_timestamp(),
        refresh_in: None,
        tenant: Some(tenant.to_string()),
    }
}

/// Turns an `azure_identity` error into the chain's terms: Entra's own
/// `error_description` (AADSTS code and text) with the HTTP status, or the
/// transport's real cause (certificate trust, DNS, timeout).
pub fn classify(err: &azure_core::Error, authority: &str) -> SourceError {
    // azure_identity wraps the pipeline's error in a Credential error; the HTTP
    // details live on the inner one.
    let http = std::iter::successors(Some(err), |e| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
    })
    .find(|e| matches!(e.kind(), ErrorKind::HttpResponse { .. }));
    let Some(http) = http else {
        let is_transport = std::iter::successors(Some(err), |e| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<azure_core::Error>())
        })
        .any(|e| matches!(e.kind(), ErrorKind::Io | ErrorKind::Connection));
        return SourceError::failed(if is_transport {
            format!(
                "cannot reach {authority}: {}",
                describe_transport_error(err)
            )
        } else {
            tidy(&error_chain(err))
        });
    };
    let ErrorKind::HttpResponse {
        status,
        raw_response,
        ..
    } = http.kind()
    else {
        unreachable!("matched above");
    };
    let retry_after = raw_response
        .as_ref()
        .and_then(|r| r.headers().get_optional_str(&"retry-after".into()))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Entra's error_description, e.g. "AADSTS7000215: Invalid client secret provided. ...".
    SourceError::Failed {
        message: format!("{} (HTTP {})", tidy(&http.to_string()), u16::from(*status)),
        retry_after,
    }
}
