//! The tools: their names, descriptions and input schemas (derived from the
//! argument types below), each a thin call into `status`, `arm` or `storage`
//! whose outcome is wrapped in the Azure MCP Server's envelope. A failure is
//! a tool result with `isError`, never a protocol error.

use std::time::Instant;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::schemars::{self, JsonSchema};
use rmcp::{tool, tool_router, ErrorData};
use serde::Deserialize;

use crate::errors::tool_result;
use crate::server::AzbrokerMcp;
use crate::{arm, status, storage};

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct TenantArgs {
    /// Microsoft Entra tenant (ID or domain) to authenticate in. Default: the signed-in credential's own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct GroupListArgs {
    /// Subscription ID or display name. Default: the Azure CLI's default subscription ('az account set'), else AZURE_SUBSCRIPTION_ID.
    #[serde(default)]
    pub subscription: Option<String>,
    /// Microsoft Entra tenant (ID or domain) to authenticate in. Default: the signed-in credential's own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ContainerListArgs {
    /// Storage account name (e.g. 'mystorage') or its Blob service endpoint URL (https only, e.g. 'https://mystorage.blob.core.windows.net').
    pub account: String,
    /// Only containers whose names start with this prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Microsoft Entra tenant (ID or domain) to authenticate in. Default: the signed-in credential's own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BlobListArgs {
    /// Storage account name (e.g. 'mystorage') or its Blob service endpoint URL (https only, e.g. 'https://mystorage.blob.core.windows.net').
    pub account: String,
    /// Container name.
    pub container: String,
    /// Only blobs whose names start with this prefix (e.g. a virtual folder 'logs/').
    #[serde(default)]
    pub prefix: Option<String>,
    /// Microsoft Entra tenant (ID or domain) to authenticate in. Default: the signed-in credential's own tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// An optional text argument: blank means absent.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[tool_router(vis = "pub(crate)")]
impl AzbrokerMcp {
    #[tool(
        name = "auth_status",
        description = "Show who is signed in to Azure through the azbroker token broker: the \
            credential that serves tokens (e.g. AzureCliCredential), the tenant, the identity \
            (object ID, user principal name or app ID), the tokens the broker holds with their \
            expiry, and the broker's health. Never shows a token.",
        annotations(
            title = "Azure sign-in status",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn auth_status(
        &self,
        Parameters(args): Parameters<TenantArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let outcome = status::auth_status(&self.ctx, given(&args.tenant)).await;
        Ok(tool_result(outcome, started.elapsed()))
    }

    #[tool(
        name = "subscription_list",
        description = "List the Azure subscriptions of the signed-in account. Returns \
            subscriptionId, displayName, state, tenantId and isDefault for each; isDefault marks \
            the Azure CLI's default subscription ('az account set'), else AZURE_SUBSCRIPTION_ID, \
            and that subscription comes first. When the user names no subscription, prefer the \
            default one; if there is none and several exist, ask the user.",
        annotations(
            title = "List Azure subscriptions",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn subscription_list(
        &self,
        Parameters(args): Parameters<TenantArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let outcome = arm::subscription_list(&self.ctx, given(&args.tenant)).await;
        Ok(tool_result(outcome, started.elapsed()))
    }

    #[tool(
        name = "group_list",
        description = "List the resource groups of an Azure subscription (name, id, location).",
        annotations(
            title = "List resource groups",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn group_list(
        &self,
        Parameters(args): Parameters<GroupListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let outcome =
            arm::group_list(&self.ctx, given(&args.subscription), given(&args.tenant)).await;
        Ok(tool_result(outcome, started.elapsed()))
    }

    #[tool(
        name = "storage_container_list",
        description = "List the blob containers of an Azure Storage account, with a Microsoft \
            Entra ID token (the identity needs a data role such as 'Storage Blob Data Reader').",
        annotations(
            title = "List blob containers",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn storage_container_list(
        &self,
        Parameters(args): Parameters<ContainerListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let outcome = storage::container_list(
            &self.ctx,
            &args.account,
            given(&args.prefix),
            given(&args.tenant),
        )
        .await;
        Ok(tool_result(outcome, started.elapsed()))
    }

    #[tool(
        name = "storage_blob_list",
        description = "List the blobs of a container in an Azure Storage account, with a \
            Microsoft Entra ID token (the identity needs a data role such as 'Storage Blob Data \
            Reader').",
        annotations(title = "List blobs", read_only_hint = true, open_world_hint = false)
    )]
    async fn storage_blob_list(
        &self,
        Parameters(args): Parameters<BlobListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let outcome = storage::blob_list(
            &self.ctx,
            &args.account,
            &args.container,
            given(&args.prefix),
            given(&args.tenant),
        )
        .await;
        Ok(tool_result(outcome, started.elapsed()))
    }
}
