//! Validation and normalization of scopes and tenants from clients.
//!
//! Everything here comes from a socket peer, and some of it ends up on a
//! command line (`az ... --scope S --tenant T`), so the accepted alphabet is
//! deliberately narrow.

/// Most scopes a request may carry.
pub const MAX_SCOPES: usize = 16;
const MAX_SCOPE_LEN: usize = 512;
const MAX_TENANT_LEN: usize = 128;
/// Claims challenges are base64 JSON of a few hundred bytes; allow generous headroom.
pub const MAX_CLAIMS_LEN: usize = 16 * 1024;

/// Checks a request's scopes and returns them normalized, sorted and deduplicated,
/// so that the same set in any order is one cache key.
pub fn normalize_scopes(scopes: &[String]) -> Result<Vec<String>, String> {
    normalize_owned(scopes.to_vec())
}

/// [`normalize_scopes`] on a request's own strings: the hot path of every
/// token request, so it allocates only to rewrite a bare resource.
pub fn normalize_owned(scopes: Vec<String>) -> Result<Vec<String>, String> {
    check_all(&scopes)?;
    Ok(normalize_checked(scopes))
}

/// [`normalize_owned`] of scopes that already passed [`check_all`].
pub fn normalize_checked(mut scopes: Vec<String>) -> Vec<String> {
    for scope in &mut scopes {
        if let Some(default) = bare_resource_to_default(scope) {
            *scope = default;
        }
    }
    if scopes.len() > 1 {
        scopes.sort();
        scopes.dedup();
    }
    scopes
}

/// Whether `scopes` is a list a request may ask for: one to
/// [`MAX_SCOPES`] scopes, each well formed.
pub fn check_all(scopes: &[String]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err("at least one scope is required".into());
    }
    if scopes.len() > MAX_SCOPES {
        return Err(format!("at most {MAX_SCOPES} scopes per request"));
    }
    scopes.iter().try_for_each(|scope| validate_scope(scope))
}

/// The bytes a scope may hold: `[A-Za-z0-9-_.:/+%=~]`.
const SCOPE_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        allowed[b] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'%' | b'=' | b'~'
            );
        b += 1;
    }
    allowed
};

fn validate_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() || scope.len() > MAX_SCOPE_LEN {
        return Err(format!("a scope must have 1 to {MAX_SCOPE_LEN} characters"));
    }
    // Bytes, not chars: anything outside ASCII fails either way. A table,
    // because every request's scopes pass through here.
    if !scope.bytes().all(|b| SCOPE_BYTES[usize::from(b)]) {
        return Err(format!(
            "scope {scope:?} has characters outside [A-Za-z0-9-_.:/+%=~]"
        ));
    }
    Ok(())
}

/// `https://management.azure.com` or `https://management.azure.com/` (a bare
/// resource) means `https://management.azure.com/.default`; `None` keeps the scope.
fn bare_resource_to_default(scope: &str) -> Option<String> {
    let rest = scope
        .strip_prefix("https://")
        .or_else(|| scope.strip_prefix("http://"))?;
    let rest = rest.trim_end_matches('/');
    if !rest.is_empty() && !rest.contains('/') {
        return Some(format!("{}/.default", scope.trim_end_matches('/')));
    }
    None
}

/// A tenant is a GUID or a domain name: letters, digits, dots and hyphens.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {tenant:?} is not a tenant id or domain (letters, digits, '.', '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_admits_exactly_the_documented_bytes() {
        let documented = b"-_.:/+%=~";
        for byte in 0..=255u8 {
            let expected = byte.is_ascii_alphanumeric() || documented.contains(&byte);
            assert_eq!(SCOPE_BYTES[usize::from(byte)], expected, "byte {byte:#04x}");
            let scope = format!("https://x{}y", char::from(byte));
            // Non-ASCII bytes are not a `char` of their own; they fail as UTF-8 anyway.
            if byte.is_ascii() {
                assert_eq!(check_all(&[scope]).is_ok(), expected, "byte {byte:#04x}");
            }
        }
    }

    fn norm(scopes: &[&str]) -> Result<Vec<String>, String> {
        normalize_scopes(&scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn bare_resources_become_default_scopes() {
        assert_eq!(
            norm(&["https://management.azure.com/"]).unwrap(),
            ["https://management.azure.com/.default"]
        );
        assert_eq!(
            norm(&["https://management.azure.com"]).unwrap(),
            ["https://management.azure.com/.default"]
        );
        assert_eq!(
            norm(&["https://graph.microsoft.com/User.Read"]).unwrap(),
            ["https://graph.microsoft.com/User.Read"]
        );
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        assert_eq!(
            norm(&["b/x", "a/y", "b/x"]).unwrap(),
            norm(&["a/y", "b/x"]).unwrap()
        );
    }

    #[test]
    fn shell_metacharacters_and_limits_are_rejected() {
        for bad in [
            "https://x/.default; rm -rf /",
            "a b",
            "$(id)",
            "`id`",
            "x\"y",
            "",
        ] {
            assert!(norm(&[bad]).is_err(), "{bad:?} accepted");
        }
        assert!(norm(&[]).is_err());
        assert!(norm(&[&"a".repeat(513)]).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
        assert!(normalize_scopes(&many).is_err());
    }

    #[test]
    fn tenants() {
        assert!(validate_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47").is_ok());
        assert!(validate_tenant("contoso.onmicrosoft.com").is_ok());
        for bad in ["", "a b", "x;y", "../etc", &"a".repeat(129)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
    }
}
