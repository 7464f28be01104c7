//! Scope patterns and the allow/deny rules built from them.
//!
//! A pattern is an exact scope (`https://vault.azure.net/.default`) or a
//! resource followed by `*` (`https://storage.azure.com/*`: any scope of that
//! resource). Scopes are compared after the broker normalized them, ASCII
//! case-insensitively.

use std::fmt;

/// Longest pattern accepted (a scope is far shorter).
pub const MAX_PATTERN_LEN: usize = 512;
/// Most patterns in one list.
pub const MAX_PATTERNS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_PATTERN_LEN || text.chars().any(char::is_control) {
            return Err(format!("{text:?} is not a scope pattern"));
        }
        let stem = text.strip_suffix('*').unwrap_or(text);
        if text != "*"
            && (stem.contains('*') || !stem.contains("://") && !stem.starts_with("api://"))
        {
            return Err(format!(
                "{text:?} is not a scope pattern: use a scope (https://vault.azure.net/.default) or a resource and * (https://storage.azure.com/*)"
            ));
        }
        Ok(Pattern(text.to_ascii_lowercase()))
    }

    pub fn matches(&self, scope: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => {
                scope.len() >= prefix.len() && scope[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
            None => scope.eq_ignore_ascii_case(&self.0),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Allow and deny lists from one origin (the `exec` flags, or one section
/// of the policy file). An empty allow list allows everything not denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub allow: Vec<Pattern>,
    pub deny: Vec<Pattern>,
    /// Where the rules come from, for the denial message.
    pub origin: String,
}

impl Rules {
    pub fn parse(allow: &[String], deny: &[String], origin: String) -> Result<Rules, String> {
        for list in [allow, deny] {
            if list.len() > MAX_PATTERNS {
                return Err(format!("{origin}: more than {MAX_PATTERNS} patterns"));
            }
        }
        let parse = |list: &[String]| {
            list.iter()
                .map(|p| Pattern::parse(p).map_err(|e| format!("{origin}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Rules {
            allow: parse(allow)?,
            deny: parse(deny)?,
            origin,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Why `scope` is refused by these rules, if it is.
    pub fn refuses(&self, scope: &str) -> Option<String> {
        if let Some(pattern) = self.deny.iter().find(|p| p.matches(scope)) {
            return Some(format!("denied by {pattern} ({})", self.origin));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.matches(scope)) {
            let allowed: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            return Some(format!(
                "not among the allowed {} ({})",
                allowed.join(", "),
                self.origin
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Rules::parse(&owned(allow), &owned(deny), "a test".into()).unwrap()
    }

    #[test]
    fn patterns_match_a_resource_or_an_exact_scope() {
        let storage = Pattern::parse("https://storage.azure.com/*").unwrap();
        assert!(storage.matches("https://storage.azure.com/.default"));
        assert!(storage.matches("https://STORAGE.azure.com/user_impersonation"));
        assert!(!storage.matches("https://storage.azure.com.evil.example/.default"));
        assert!(!storage.matches("https://management.azure.com/.default"));
        let vault = Pattern::parse("https://vault.azure.net/.default").unwrap();
        assert!(vault.matches("https://vault.azure.net/.default"));
        assert!(!vault.matches("https://vault.azure.net/other"));
        for bad in ["", "storage", "https://*.azure.com/*", "a\nb"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pattern::parse("*").unwrap().matches("api://x/.default"));
    }

    #[test]
    fn deny_wins_and_a_non_empty_allow_list_limits() {
        let storage_only = rules(&["https://storage.azure.com/*"], &[]);
        assert_eq!(
            storage_only.refuses("https://storage.azure.com/.default"),
            None
        );
        let refused = storage_only
            .refuses("https://management.azure.com/.default")
            .unwrap();
        assert!(
            refused.contains("not among the allowed https://storage.azure.com/*"),
            "{refused}"
        );
        let no_graph = rules(&[], &["https://graph.microsoft.com/*"]);
        assert!(no_graph
            .refuses("https://graph.microsoft.com/.default")
            .unwrap()
            .contains("denied by https://graph.microsoft.com/*"));
        assert_eq!(no_graph.refuses("https://vault.azure.net/.default"), None);
        let both = rules(&["*"], &["https://vault.azure.net/*"]);
        assert!(both.refuses("https://vault.azure.net/.default").is_some());
    }
}
