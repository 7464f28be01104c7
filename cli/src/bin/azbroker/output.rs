//! What `azbroker` prints: JSON for scripts, aligned text for people.

use azbroker_proto::{LoggedIn, StatusPage, StatusReport, TokenReply};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn rfc3339(epoch: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn token(token: &TokenReply, raw: bool) {
    if raw {
        println!("{}", token.access_token.expose());
        return;
    }
    let value = json!({
        "accessToken": token.access_token.expose(),
        "expiresOn": rfc3339(token.expires_on),
        "expires_on": token.expires_on,
        "tokenType": token.token_type,
        "tenant": token.tenant,
        "credential": token.credential,
    });
    println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
}

pub fn logged_in(done: &LoggedIn) {
    println!(
        "azbroker: logged in as {} (tenant {}); refresh token kept in {}",
        done.username.as_deref().unwrap_or("an unnamed account"),
        done.tenant.as_deref().unwrap_or("unknown"),
        done.store
    );
}

/// Cached tokens `azbroker status` lists unless told otherwise.
pub const STATUS_ENTRIES_SHOWN: u64 = 100;

pub fn status(page: &StatusPage, as_json: bool) {
    let status = &page.report;
    if as_json {
        let mut json = status_json(status);
        json["cache_total"] = json!(page.cache_total);
        println!("{}", serde_json::to_string_pretty(&json).expect("JSON"));
        return;
    }
    let c = &status.counters;
    println!(
        "azbrokerd {} (protocol {})",
        status.daemon_version, status.protocol_version
    );
    println!("  pid        {}", status.daemon_pid);
    println!("  uptime     {} s", status.uptime_secs);
    println!("  socket     {}", status.socket_path);
    println!("  store      {}", status.store);
    println!();
    println!("credentials");
    if status.credentials.is_empty() {
        println!("  (none used yet)");
    }
    for cred in &status.credentials {
        println!(
            "  {:<30} {:<12} {:<12} acquisitions {}",
            cred.credential,
            cred.identity,
            cred.state.as_str(),
            cred.acquisitions
        );
        if let Some(profile) = &cred.profile {
            // A client chose this path: shown escaped, never as terminal controls.
            println!("    {}", profile.escape_debug());
        }
        if let Some(error) = &cred.last_error {
            println!("    last error: {error}");
        }
    }
    println!();
    println!("cache");
    if status.cache.is_empty() {
        println!("  (empty)");
    }
    // Entries come sorted by credential: a token is its credential's,
    // whichever chains it serves, so they are listed under it.
    let mut minted_by = None;
    for entry in &status.cache {
        let credential = (&entry.credential, &entry.identity);
        if minted_by != Some(credential) {
            println!("  {} {}", entry.credential, entry.identity);
            minted_by = Some(credential);
        }
        println!(
            "    {} tenant={} expires {} refresh {} hits {}",
            entry.scopes.join(" "),
            entry.tenant.as_deref().unwrap_or("-"),
            rfc3339(entry.expires_on),
            rfc3339(entry.refresh_on),
            entry.hits
        );
    }
    let hidden = page.cache_total.saturating_sub(status.cache.len() as u64);
    if hidden > 0 {
        println!("  ... {hidden} more entries not shown (--limit 0 shows all)");
    }
    if !status.names.is_empty() {
        println!();
        println!("exec names (azbroker audit --name NAME shows their requests)");
        for name in &status.names {
            println!(
                "  {:<24} requests {}  hits {}  denied {}",
                name.name, name.requests, name.hits, name.denied
            );
        }
    }
    println!();
    println!(
        "counters  requests {}  hits {}  misses {}  upstream {}  refreshes {}  refresh failures {}  errors {}  connections {} open / {} accepted / {} refused",
        c.requests,
        c.cache_hits,
        c.cache_misses,
        c.upstream_acquisitions,
        c.refreshes,
        c.refresh_failures,
        c.errors,
        c.connections_open,
        c.connections_accepted,
        c.connections_refused
    );
}

fn status_json(status: &StatusReport) -> serde_json::Value {
    let c = &status.counters;
    json!({
        "pid": status.daemon_pid,
        "version": status.daemon_version,
        "protocol_version": status.protocol_version,
        "uptime_secs": status.uptime_secs,
        "socket": status.socket_path,
        "store": status.store,
        "credentials": status.credentials.iter().map(|cred| json!({
            "credential": cred.credential,
            "identity": cred.identity,
            "state": cred.state.as_str(),
            "acquisitions": cred.acquisitions,
            "last_success": cred.last_success,
            "last_error": cred.last_error,
            "profile": cred.profile,
        })).collect::<Vec<_>>(),
        "cache": status.cache.iter().map(|entry| json!({
            "credential": entry.credential,
            "identity": entry.identity,
            "tenant": entry.tenant,
            "scopes": entry.scopes,
            "expires_on": entry.expires_on,
            "refresh_on": entry.refresh_on,
            "hits": entry.hits,
        })).collect::<Vec<_>>(),
        "names": status.names.iter().map(|name| json!({
            "name": name.name,
            "requests": name.requests,
            "hits": name.hits,
            "denied": name.denied,
        })).collect::<Vec<_>>(),
        "counters": {
            "requests": c.requests,
            "cache_hits": c.cache_hits,
            "cache_misses": c.cache_misses,
            "upstream_acquisitions": c.upstream_acquisitions,
            "refreshes": c.refreshes,
            "refresh_failures": c.refresh_failures,
            "errors": c.errors,
            "connections_accepted": c.connections_accepted,
            "connections_refused": c.connections_refused,
            "connections_open": c.connections_open,
        },
    })
}
