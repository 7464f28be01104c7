//! The audit trail: one [`AuditRecord`] per token request (or run of repeated hits), and the query that
//! reads them back ([`AuditQuery`], answered by an [`AuditPage`]).
//!
//! A record says who asked for what and what came of it; it never holds a
//! token or a secret (it has no field that could). Its JSON form
//! ([`AuditRecord::json_line`]) is shared by the daemon's `audit.jsonl` and
//! `azbroker audit --json`, so the two always spell the fields alike.

use serde::{Deserialize, Serialize};

/// One token request: who asked, for what, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it was answered, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The NAME of the `azbroker exec` the requester descends from, if any.
    pub name: Option<String>,
    /// The client name of the connection's Hello (recorded, never trusted).
    pub client: String,
    /// The requesting process (from the socket's peer credentials; `None`
    /// where the daemon could not tell).
    pub pid: Option<u32>,
    /// Its executable, when the daemon could read it.
    pub exe: Option<String>,
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    /// The credential that minted the token (or was to).
    pub credential: Option<String>,
    pub outcome: AuditOutcome,
    /// How many requests this record stands for: 1, or more for a
    /// connection's repeated hits on one target within one round of the
    /// daemon's writer (at most 200 ms), recorded at the first one's time.
    pub count: u32,
}

/// What came of a token request. Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Served from the cache.
    Hit,
    /// Acquired from the identity provider for this request.
    Acquired,
    /// A fresher token than the cached one was fetched for this request.
    Refreshed,
    /// Refused by the scope policy.
    Denied,
    /// No token: the request was invalid or every credential failed.
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Hit => "hit",
            AuditOutcome::Acquired => "acquired",
            AuditOutcome::Refreshed => "refreshed",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// Which records [`Request::Audit`](crate::Request::Audit) asks for: those
/// numbered after `after_seq`, oldest first, at most `limit` (and what fits in
/// a frame). `--follow` asks again with the page's `next_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only records with a larger sequence number; 0 for all.
    pub after_seq: u64,
    /// Only records at or after this time (milliseconds since the epoch).
    pub since_ms: Option<i64>,
    /// Only records of this NAME.
    pub name: Option<String>,
    /// At most this many records; 0 means as many as fit in a frame.
    pub limit: u32,
}

/// Records with their sequence numbers (increasing), and where the next query
/// starts: after the last record looked at, so the next page never repeats one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub records: Vec<(u64, AuditRecord)>,
    /// The `after_seq` for the next query.
    pub next_seq: u64,
}

/// The audit file's field names, in the order every line has them.
pub const FIELDS: [&str; 10] = [
    "time",
    "name",
    "client",
    "pid",
    "exe",
    "scopes",
    "tenant",
    "credential",
    "outcome",
    "count",
];

/// A record as one JSON object, with the field names of the audit file:
/// `time` (RFC 3339, UTC), `name`, `client`, `pid`, `exe`, `scopes`,
/// `tenant`, `credential`, `outcome`, `count`, in that order. Borrowed, so the daemon
/// writes its events through it without building an [`AuditRecord`] each.
pub struct AuditJson<'a, C: std::fmt::Display> {
    pub time: &'a str,
    /// `name`, `client`, `pid` and `exe`, rendered once per requester.
    pub who: &'a AuditWho,
    pub scopes: &'a [String],
    pub tenant: Option<&'a str>,
    pub credential: Option<C>,
    pub outcome: &'static str,
    pub count: u32,
}

/// The requester's members of an audit line, already JSON: the same in
/// every line of a connection, so a busy client's strings are escaped once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditWho(String);

impl AuditWho {
    pub fn new(name: Option<&str>, client: &str, pid: Option<u32>, exe: Option<&str>) -> AuditWho {
        #[derive(Serialize)]
        struct Members<'a> {
            name: Option<&'a str>,
            client: &'a str,
            pid: Option<u32>,
            exe: Option<&'a str>,
        }
        let object = serde_json::to_string(&Members {
            name,
            client,
            pid,
            exe,
        })
        .expect("strings and numbers always serialize");
        // `{...}` without its braces: members to go between others.
        AuditWho(object[1..object.len() - 1].to_string())
    }
}

/// A value as a JSON string through its `Display`, or `null`.
struct DisplayOrNull<'a, C>(&'a Option<C>);

impl<C: std::fmt::Display> Serialize for DisplayOrNull<'_, C> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }
}

impl<C: std::fmt::Display> AuditJson<'_, C> {
    /// Appends the object and a newline to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        member(out, "{\"time\":", self.time);
        out.push(b',');
        out.extend_from_slice(self.who.0.as_bytes());
        member(out, ",\"scopes\":", self.scopes);
        member(out, ",\"tenant\":", &self.tenant);
        member(out, ",\"credential\":", &DisplayOrNull(&self.credential));
        member(out, ",\"outcome\":", self.outcome);
        member(out, ",\"count\":", &self.count);
        out.extend_from_slice(b"}\n");
    }
}

/// Appends `prefix` (JSON punctuation and a key) and `value` as JSON.
fn member<T: Serialize + ?Sized>(out: &mut Vec<u8>, prefix: &str, value: &T) {
    out.extend_from_slice(prefix.as_bytes());
    serde_json::to_writer(&mut *out, value).expect("audit values always serialize");
}

impl AuditRecord {
    /// The record as one line of JSON (no newline), as [`AuditJson`] spells it.
    pub fn json_line(&self) -> String {
        let time = rfc3339_utc(self.time_ms);
        let who = AuditWho::new(
            self.name.as_deref(),
            &self.client,
            self.pid,
            self.exe.as_deref(),
        );
        let json = AuditJson {
            time: &time,
            who: &who,
            scopes: &self.scopes,
            tenant: self.tenant.as_deref(),
            credential: self.credential.as_deref(),
            outcome: self.outcome.as_str(),
            count: self.count,
        };
        let mut line = Vec::new();
        json.write_line(&mut line);
        line.pop();
        String::from_utf8(line).expect("JSON is UTF-8")
    }
}

/// `ms` since the epoch as RFC 3339 in UTC with milliseconds, e.g.
/// `2026-12-03T12:33:41.123Z`.
pub fn rfc3339_utc(ms: i64) -> String {
    use time::macros::format_description;
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(format).ok())
        // Beyond year 9999: no record is from there, but say what it held.
        .unwrap_or_else(|| format!("@{ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_796_301_221_123), "2026-12-03T12:33:41.123Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_json_line_has_exactly_the_documented_fields() {
        let record = AuditRecord {
            time_ms: 1_796_301_221_123,
            name: Some("agent".into()),
            client: "azbroker-cli".into(),
            pid: Some(42),
            exe: None,
            scopes: vec!["https://storage.azure.com/.default".into()],
            tenant: None,
            credential: Some("AzureCliCredential".into()),
            outcome: AuditOutcome::Hit,
            count: 3,
        };
        let line = record.json_line();
        assert!(!line.contains('\n'));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected = FIELDS.to_vec();
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["time"], "2026-12-03T12:33:41.123Z");
        assert_eq!(json["outcome"], "hit");
        assert_eq!(json["count"], 3);
        assert_eq!(json["exe"], serde_json::Value::Null);
        assert_eq!(json["scopes"][0], "https://storage.azure.com/.default");
    }

    #[test]
    fn a_json_line_keeps_the_documented_order_and_escapes_what_a_client_sent() {
        let record = AuditRecord {
            time_ms: 0,
            name: Some("agent \"x\"\n".into()),
            client: "c\\lient\u{7}".into(),
            pid: None,
            exe: Some("/opt/odd\tpath".into()),
            scopes: vec!["s\"1".into()],
            tenant: Some("t".into()),
            credential: None,
            outcome: AuditOutcome::Denied,
            count: 1,
        };
        let line = record.json_line();
        assert!(!line.contains('\n') && !line.contains('\t') && !line.contains('\u{7}'));
        let at: Vec<usize> = FIELDS
            .iter()
            .map(|key| line.find(&format!("\"{key}\":")).expect(key))
            .collect();
        assert!(at.windows(2).all(|pair| pair[0] < pair[1]), "{line}");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["name"], "agent \"x\"\n");
        assert_eq!(json["client"], "c\\lient\u{7}");
        assert_eq!(json["pid"], serde_json::Value::Null);
        assert_eq!(json["exe"], "/opt/odd\tpath");
        assert_eq!(json["scopes"][0], "s\"1");
        assert_eq!(json["credential"], serde_json::Value::Null);
    }

    #[test]
    fn outcomes_read_as_documented() {
        let all = [
            (AuditOutcome::Hit, "hit"),
            (AuditOutcome::Acquired, "acquired"),
            (AuditOutcome::Refreshed, "refreshed"),
            (AuditOutcome::Denied, "denied"),
            (AuditOutcome::Failed, "failed"),
        ];
        for (outcome, text) in all {
            assert_eq!(outcome.as_str(), text);
        }
    }
}
