//! The MCP server object and what its tools share: the broker client, the
//! endpoints and the HTTP client. Nothing is connected or loaded at start:
//! the broker connection (and the daemon's autostart) and the HTTP client
//! wait for the first tool call that needs them, so `initialize` and
//! `tools/list` answer in milliseconds, and a configuration error surfaces
//! as a readable tool error instead of a server that will not start.

use std::sync::Arc;
use std::time::Instant;

use azbroker_client::Client;
use azbroker_proto::{GetToken, TokenReply};
use reqwest::Url;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool_handler, ErrorData, RoleServer, ServerHandler};
use tokio::sync::OnceCell;

use crate::endpoints::Endpoints;
use crate::errors::{self, ToolError};
use crate::http::{self, Http, Response};

/// Name this server gives the daemon (in its logs and status).
const CLIENT_NAME: &str = "azbroker-mcp";

const INSTRUCTIONS: &str = "Azure tools that share one sign-in through the azbroker token broker. \
Every tool takes an optional `tenant`. Results and errors are JSON objects \
{status, message, results, duration}; on an error, `message` says what to do.";

/// Shared by every tool call (and every concurrent one).
pub struct Context {
    broker: Result<Client, String>,
    endpoints: Result<Endpoints, String>,
    http: OnceCell<Result<Http, String>>,
}

impl Context {
    pub fn from_env() -> Context {
        Context {
            // `Client::new` does not connect; the first request does.
            broker: Client::from_env(CLIENT_NAME).map_err(|e| e.to_string()),
            endpoints: Endpoints::from_env(),
            http: OnceCell::new(),
        }
    }

    pub fn broker(&self) -> Result<&Client, ToolError> {
        self.broker
            .as_ref()
            .map_err(|e| ToolError::from_client(azbroker_client::ClientError::Config(e.clone())))
    }

    pub fn endpoints(&self) -> Result<&Endpoints, ToolError> {
        self.endpoints
            .as_ref()
            .map_err(|e| ToolError::configuration(e.clone()))
    }

    async fn http(&self) -> Result<&Http, ToolError> {
        self.http
            .get_or_init(|| async { Http::from_env() })
            .await
            .as_ref()
            .map_err(|e| ToolError::configuration(e.clone()))
    }

    /// A token for `scope` from the broker (cached there unless `claims` is set).
    pub async fn token(
        &self,
        scope: &str,
        tenant: Option<&str>,
        claims: Option<String>,
    ) -> Result<TokenReply, ToolError> {
        let request = GetToken {
            scopes: vec![scope.to_string()],
            tenant: tenant.map(str::to_string),
            claims,
            min_validity_secs: 0,
        };
        self.broker()?
            .get_token(request)
            .await
            .map_err(ToolError::from_client)
    }

    /// `GET url` with a bearer token for `scope`, answering one claims challenge.
    pub async fn get(
        &self,
        url: &Url,
        scope: &str,
        tenant: Option<&str>,
        headers: &[(&'static str, String)],
    ) -> Result<Response, ToolError> {
        let http = self.http().await?;
        http::send_with_claims_retry(
            |claims| self.token(scope, tenant, claims),
            |token: TokenReply| async move {
                http.get(url, token.access_token.expose(), headers).await
            },
        )
        .await
    }
}

/// The MCP server: a tool router over a shared [`Context`].
#[derive(Clone)]
pub struct AzbrokerMcp {
    pub(crate) ctx: Arc<Context>,
    tool_router: ToolRouter<AzbrokerMcp>,
}

impl AzbrokerMcp {
    pub fn new(ctx: Context) -> AzbrokerMcp {
        AzbrokerMcp {
            ctx: Arc::new(ctx),
            tool_router: AzbrokerMcp::tool_router(),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AzbrokerMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new(CLIENT_NAME, env!("CARGO_PKG_VERSION"))
                    .with_title("azbroker Azure tools"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    /// The router's dispatch, with rmcp's plain-text "failed to deserialize
    /// parameters" results (missing or mistyped arguments) reshaped into the
    /// same envelope as every other failure.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let call = ToolCallContext::new(self, request, context);
        match self.tool_router.call(call).await? {
            CallToolResponse::Complete(result) => {
                Ok(errors::reshape_argument_error(result, started.elapsed()).into())
            }
            other => Ok(other),
        }
    }
}
