//! The Azure CLI's profile (`$AZURE_CONFIG_DIR/azureProfile.json`, else
//! `~/.azure/azureProfile.json`): which subscriptions exist, in which tenant,
//! and which is the default (`az account set`). The `az` shim reads it for its
//! `subscription` field and `--subscription NAME`, `azbroker-mcp` for the
//! default subscription. Best effort: any problem reading it means "no profile".

use std::io::Read;
use std::path::PathBuf;

/// A real profile is a few KiB; refuse to read a runaway file.
const MAX_PROFILE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    pub tenant_id: Option<String>,
    pub is_default: bool,
}

/// The profile of this process's environment.
pub fn load() -> Vec<Subscription> {
    load_with(|name| std::env::var(name).ok())
}

/// The profile that the variables `env` looks up point at.
pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Vec<Subscription> {
    path(env)
        .and_then(|p| read_bounded(&p))
        .map(|text| parse(&text))
        .unwrap_or_default()
}

fn path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_empty = |name| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(dir) = non_empty("AZURE_CONFIG_DIR") {
        return Some(PathBuf::from(dir).join("azureProfile.json"));
    }
    Some(PathBuf::from(non_empty("HOME")?).join(".azure/azureProfile.json"))
}

fn read_bounded(path: &std::path::Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PROFILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The CLI writes the file as UTF-8 with a byte-order mark.
fn parse(text: &str) -> Vec<Subscription> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let Some(list) = json["subscriptions"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|s| {
            Some(Subscription {
                id: s["id"].as_str()?.to_string(),
                name: s["name"].as_str().unwrap_or_default().to_string(),
                tenant_id: s["tenantId"].as_str().map(str::to_string),
                is_default: s["isDefault"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

pub fn default(subscriptions: &[Subscription]) -> Option<&Subscription> {
    subscriptions.iter().find(|s| s.is_default)
}

/// By id or name, ignoring case, as the CLI matches `--subscription`.
pub fn find<'a>(subscriptions: &'a [Subscription], name_or_id: &str) -> Option<&'a Subscription> {
    subscriptions
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(name_or_id))
        .or_else(|| {
            subscriptions
                .iter()
                .find(|s| s.name.to_lowercase() == name_or_id.to_lowercase())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "\u{feff}{\"installationId\": \"x\", \"subscriptions\": [\
        {\"id\": \"11111111-0000-0000-0000-000000000001\", \"name\": \"Dev\", \"state\": \"Enabled\", \
         \"isDefault\": false, \"tenantId\": \"aaaaaaaa-0000-0000-0000-000000000001\", \"environmentName\": \"AzureCloud\"},\
        {\"id\": \"22222222-0000-0000-0000-000000000002\", \"name\": \"Prod\", \"state\": \"Enabled\", \
         \"isDefault\": true, \"tenantId\": \"bbbbbbbb-0000-0000-0000-000000000002\", \"environmentName\": \"AzureCloud\"}]}";

    #[test]
    fn reads_the_cli_profile() {
        let subs = parse(PROFILE);
        assert_eq!(subs.len(), 2);
        assert_eq!(default(&subs).unwrap().name, "Prod");
        assert_eq!(
            find(&subs, "dev").unwrap().tenant_id.as_deref(),
            Some("aaaaaaaa-0000-0000-0000-000000000001")
        );
        assert_eq!(
            find(&subs, "22222222-0000-0000-0000-000000000002")
                .unwrap()
                .name,
            "Prod"
        );
        assert!(find(&subs, "nope").is_none());
        assert!(parse("not json").is_empty());
    }
}
