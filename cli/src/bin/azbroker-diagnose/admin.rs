//! `azbroker diagnose --admin-request`: the text a user hands their network
//! and identity administrators, following the guide's "Working with your
//! administrator" lists, filled in with this machine's cloud, identity and
//! findings.

use std::fmt::Write as _;

use azbroker_cli::advice::private_dns_zone;
use azbroker_proto::cloud::Cloud;

use super::credentials::serving_identity;
use super::network::Role;
use super::{Level, Report};

pub fn request(report: &Report, cloud: &Cloud) -> String {
    let mut out = String::new();
    let line = |out: &mut String, text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line(
        &mut out,
        "Request for access: Azure sign-in for developer tools (azbroker, Azure MCP Server)",
    );
    line(
        &mut out,
        &format!(
            "Prepared by `azbroker diagnose --admin-request` (azbroker {}).",
            report.cli_version
        ),
    );
    line(&mut out, "");
    line(&mut out, "Who needs access");
    let _ = writeln!(out, "  Identity:  {}", identity(report));
    let _ = writeln!(out, "  Cloud:     {}", cloud.name);
    let _ = writeln!(out, "  Sign-in:   {}", report.environment.cloud.authority);

    line(&mut out, "");
    line(&mut out, "1. Network: firewall and proxy");
    line(
        &mut out,
        "   Allow outbound HTTPS (TCP 443) from this machine to:",
    );
    let mut required: Vec<(String, &str)> = vec![(
        format!("{}:443", cloud.authority),
        "Microsoft Entra ID (sign-in and tokens)",
    )];
    for legacy in cloud.legacy_authorities {
        required.push((
            format!("{legacy}:443"),
            "Microsoft Entra ID (older sign-in name some tools use)",
        ));
    }
    required.push((
        format!("{}:443", cloud.resource_manager),
        "Azure Resource Manager",
    ));
    required.push((format!("{}:443", cloud.graph), "Microsoft Graph"));
    for endpoint in &report.network.endpoints {
        let listed = required.iter().any(|(e, _)| *e == endpoint.endpoint);
        if endpoint.role == Role::Resource && !listed {
            required.push((endpoint.endpoint.clone(), "resource endpoint in use"));
        }
        if endpoint.role == Role::Authority && !listed {
            required.push((
                endpoint.endpoint.clone(),
                "Entra ID authority configured here (AZURE_AUTHORITY_HOST)",
            ));
        }
    }
    let services = [
        (
            format!(
                "*.blob.{s}:443, *.table.{s}:443, *.queue.{s}:443, *.file.{s}:443",
                s = cloud.storage_suffix
            ),
            "Storage",
        ),
        (format!("*.{}:443", cloud.key_vault_suffix), "Key Vault"),
        (format!("*.{}:443", cloud.cosmos_suffix), "Cosmos DB"),
        (format!("*.{}:443", cloud.service_bus_suffix), "Service Bus"),
    ];
    let width = required.iter().map(|(e, _)| e.len()).max().unwrap_or(0);
    for (endpoint, what) in &required {
        let _ = writeln!(out, "     {endpoint:<width$}  {what}");
    }
    line(&mut out, "   and, for the Azure services in use:");
    for (pattern, what) in &services {
        let _ = writeln!(out, "     {pattern}  ({what})");
    }
    match &report.network.settings.https_proxy {
        Some(proxy) => {
            let _ = writeln!(
                out,
                "   Proxy in use here: {proxy} (it must allow CONNECT to the hosts above)."
            );
        }
        None => line(
            &mut out,
            "   No proxy is configured here; if one is required, please send its address.",
        ),
    }
    let failing: Vec<_> = report
        .network
        .endpoints
        .iter()
        .filter(|e| e.status == Level::Fail)
        .collect();
    if failing.is_empty() && !report.network.endpoints.is_empty() {
        line(
            &mut out,
            "   Checked from this machine: every endpoint above that was tested is reachable.",
        );
    } else if !failing.is_empty() {
        line(&mut out, "   Checked from this machine, these fail now:");
        for endpoint in failing {
            let _ = writeln!(
                out,
                "     {}: {}",
                endpoint.endpoint,
                endpoint.summary.as_deref().unwrap_or("failed")
            );
        }
    }

    let zones: Vec<(String, String)> = report
        .network
        .endpoints
        .iter()
        .filter(|e| e.role == Role::Resource)
        .filter_map(|e| private_dns_zone(&e.host).map(|zone| (e.host.clone(), zone)))
        .collect();
    line(&mut out, "");
    line(&mut out, "2. Private endpoints (if the resources use them)");
    if zones.is_empty() {
        line(&mut out, "   Each resource's private DNS zone (e.g. privatelink.blob.core.windows.net) must resolve from this network,");
    } else {
        for (host, zone) in &zones {
            let _ = writeln!(
                out,
                "   {host} needs the private DNS zone {zone} to resolve from this network,"
            );
        }
    }
    line(&mut out, "   and this network needs a route (VPN, ExpressRoute) to the private endpoint subnet, TCP 443.");

    line(&mut out, "");
    line(&mut out, "3. Role assignments (Azure RBAC)");
    let _ = writeln!(out, "   Principal: {}", identity(report));
    line(
        &mut out,
        "   Scope:     the subscription, resource group or resources to work with",
    );
    line(
        &mut out,
        "   Roles:     Reader (to discover subscriptions and resource groups),",
    );
    line(&mut out, "              plus the data-plane role of each service in use, e.g. Storage Blob Data Reader,");
    line(&mut out, "              Key Vault Secrets User, Cosmos DB Built-in Data Reader, Azure Service Bus Data Receiver");
    line(
        &mut out,
        "   If a service principal should be created for this:",
    );
    line(&mut out, "     az ad sp create-for-rbac --name \"azure-mcp-server\" --role \"Reader\" --scopes \"/subscriptions/<subscription-id>\"");

    line(&mut out, "");
    line(&mut out, "4. Questions");
    for question in [
        "Is local authentication (access keys, SAS) disabled on the target resources? Then Entra ID roles are required.",
        "Do Conditional Access policies apply to this sign-in (device compliance, location, MFA)? Can development get an exception?",
        "Is a sign-in method preferred here (user account or service principal)?",
        "Are there network restrictions (private endpoints, firewall rules) on the resources?",
    ] {
        let _ = writeln!(out, "   - {question}");
    }

    let problems: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.area != "daemon")
        .collect();
    if !problems.is_empty() {
        line(&mut out, "");
        line(&mut out, "Problems found on this machine");
        for problem in problems {
            let _ = writeln!(out, "   - {}: {}", problem.subject, problem.summary);
        }
    }
    out
}

/// The identity in use: the one that got a token, else the configured service principal.
fn identity(report: &Report) -> String {
    if let Some((credential, identity)) = serving_identity(&report.credentials) {
        return format!("{}, signed in through {credential}", identity.describe());
    }
    let variable = |name: &str| {
        report
            .environment
            .variables
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.clone())
    };
    match (variable("AZURE_CLIENT_ID"), variable("AZURE_TENANT_ID")) {
        (Some(client), Some(tenant)) => format!(
            "service principal with application (client) id {client} in tenant {tenant} (from AZURE_CLIENT_ID, AZURE_TENANT_ID)"
        ),
        _ => "not known yet: no credential produced a token here (sign in first, e.g. `az login`, then run this again)".into(),
    }
}
