//! Resources, scopes and ids as Azure spells them: one set of conversions
//! for the daemon, the `az` shim and azbroker-mcp.
//!
//! A v2 scope is `<resource>/<permission>`; `<resource>/.default` asks for
//! every permission the app was granted on the resource. The CLI's
//! `--resource`, the managed-identity protocols and the tool credentials
//! speak resources; the broker caches by scope.

/// A resource (`https://vault.azure.net`, `https://management.azure.com/`)
/// means its `/.default` scope; a `/.default` scope stays as it is.
pub fn resource_to_scope(resource: &str) -> String {
    if resource.ends_with("/.default") {
        return resource.to_string();
    }
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// For credentials that take one resource (CLI tools, managed identity): a
/// scope that does not end in `/.default` becomes `{scheme}://{host}/.default`
/// (`https://graph.microsoft.com/User.Read` → `https://graph.microsoft.com/.default`).
pub fn to_default_scope(scope: &str) -> String {
    if scope.ends_with("/.default") {
        return scope.to_string();
    }
    match scope.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{host}/.default")
        }
        None => scope.to_string(),
    }
}

/// The resource behind a `/.default` scope, e.g. `https://management.azure.com`.
pub fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits: a tenant, subscription
/// or object id.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_default_scopes() {
        for resource in ["https://vault.azure.net", "https://vault.azure.net/"] {
            assert_eq!(
                resource_to_scope(resource),
                "https://vault.azure.net/.default"
            );
        }
        assert_eq!(
            resource_to_scope("https://storage.azure.com/.default"),
            "https://storage.azure.com/.default"
        );
    }

    #[test]
    fn a_permission_scope_becomes_its_resource_default() {
        assert_eq!(
            to_default_scope("https://graph.microsoft.com/User.Read"),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(to_default_scope("api://app/.default"), "api://app/.default");
        assert_eq!(to_default_scope("no-scheme"), "no-scheme");
        assert_eq!(
            scope_to_resource("https://management.azure.com/.default"),
            "https://management.azure.com"
        );
    }

    #[test]
    fn guids_are_five_hex_groups() {
        assert!(is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47-0"));
        assert!(!is_guid("72f988bg-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("contoso.onmicrosoft.com"));
    }
}
