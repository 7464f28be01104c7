//! `azbroker audit`: the token requests the daemon recorded, who asked and
//! what came of them, read from its in-memory ring (the JSON-lines file in
//! the state directory keeps more, across restarts).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azbroker_client::Client;
use azbroker_proto::{AuditQuery, AuditRecord};

/// How often `--follow` asks for new records.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

pub struct Filter {
    pub since: Option<Duration>,
    pub name: Option<String>,
}

pub async fn run(client: Client, filter: Filter, json: bool, follow: bool) -> ExitCode {
    let since_ms = filter.since.map(|since| {
        let start = SystemTime::now()
            .checked_sub(since)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(start.as_millis()).unwrap_or(i64::MAX)
    });
    let mut query = AuditQuery {
        after_seq: 0,
        since_ms,
        name: filter.name,
        limit: 0,
    };
    let mut shown = 0u64;
    loop {
        let page = match client.audit(query.clone()).await {
            Ok(page) => page,
            Err(e) => return crate::client_error(&e),
        };
        let caught_up = page.records.is_empty();
        for (_, record) in &page.records {
            println!(
                "{}",
                if json {
                    record.json_line()
                } else {
                    line(record)
                }
            );
            shown += 1;
        }
        query.after_seq = page.next_seq;
        if caught_up {
            if !follow {
                break;
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
    if shown == 0 && !json {
        eprintln!("azbroker: no token requests recorded (that match)");
    }
    ExitCode::SUCCESS
}

/// One record for people: time, outcome (`hit×N` for N folded hits), NAME,
/// executable[pid], scopes, credential, client. Whatever a client chose (its name, the executable
/// path) is escaped, never printed as terminal controls.
fn line(record: &AuditRecord) -> String {
    let exe = record
        .exe
        .as_deref()
        .map(|exe| exe.rsplit('/').next().unwrap_or(exe))
        .unwrap_or("?");
    let pid = record
        .pid
        .map_or_else(|| "?".to_string(), |pid| pid.to_string());
    let outcome = match record.count {
        1 => record.outcome.as_str().to_string(),
        n => format!("{}×{n}", record.outcome.as_str()),
    };
    let mut text = format!(
        "{}  {:<9}  {:<16}  {}[{}]  {}",
        azbroker_proto::audit::rfc3339_utc(record.time_ms),
        outcome,
        record.name.as_deref().unwrap_or("-"),
        exe.escape_debug(),
        pid,
        record.scopes.join(" ").escape_debug(),
    );
    if let Some(tenant) = &record.tenant {
        text.push_str(&format!("  tenant={}", tenant.escape_debug()));
    }
    if let Some(credential) = &record.credential {
        text.push_str(&format!("  {credential}"));
    }
    text.push_str(&format!("  client={}", record.client.escape_debug()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::AuditOutcome;

    #[test]
    fn a_line_escapes_what_a_client_chose() {
        let record = AuditRecord {
            time_ms: 1_796_301_221_123,
            name: Some("agent".into()),
            client: "evil\u{1b}[2J".into(),
            pid: Some(42),
            exe: Some("/usr/bin/python3".into()),
            scopes: vec!["https://storage.azure.com/.default".into()],
            tenant: None,
            credential: Some("AzureCliCredential#0a1b2c3d4e5f".into()),
            outcome: AuditOutcome::Denied,
            count: 1,
        };
        let text = line(&record);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.starts_with("2026-12-03T12:33:41.123Z  denied     agent"));
        assert!(text.contains("python3[42]  https://storage.azure.com/.default"));
        assert!(text.contains("AzureCliCredential#0a1b2c3d4e5f"));
        let folded = AuditRecord {
            outcome: AuditOutcome::Hit,
            count: 37,
            ..record
        };
        assert!(line(&folded).starts_with("2026-12-03T12:33:41.123Z  hit×37     agent"));
    }
}
