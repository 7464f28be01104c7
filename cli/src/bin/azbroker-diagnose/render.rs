//! The report for people (aligned text, colored on a terminal unless
//! `NO_COLOR` is set) and for scripts (JSON), and the redactor that removes
//! every secret value from either before it is printed.

use std::io::IsTerminal;

use super::credentials::CredentialsReport;
use super::daemon::DaemonReport;
use super::daemon_env;
use super::env::EnvReport;
use super::network::{EndpointReport, NetworkReport};
use super::{Level, Report};

/// Whether to color: stdout is a terminal, `NO_COLOR` is unset or empty, and the terminal is not dumb.
pub fn use_color() -> bool {
    color_allowed(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var("TERM").ok().as_deref(),
    )
}

/// See <https://no-color.org>: a present, non-empty `NO_COLOR` turns color off.
fn color_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>, term: Option<&str>) -> bool {
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    terminal && !no_color && term != Some("dumb")
}

pub fn json(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report serializes");
    text.push('\n');
    text
}

pub fn text(report: &Report, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    out.push_str(&paint.bold(&format!(
        "azbroker diagnose (azbroker {})\n",
        report.cli_version
    )));
    environment(&mut out, &paint, &report.environment);
    daemon(&mut out, &paint, &report.daemon);
    daemon_environment(&mut out, &paint, report);
    network(&mut out, &paint, &report.network);
    credentials(&mut out, &paint, &report.credentials);
    result(&mut out, &paint, report);
    out
}

/// One line of a section: a level tag (or none), a label, a text, and indented extra lines.
struct Row {
    level: Option<Level>,
    label: String,
    text: String,
    extra: Vec<String>,
}

impl Row {
    fn new(level: Option<Level>, label: impl Into<String>, text: impl Into<String>) -> Row {
        Row {
            level,
            label: label.into(),
            text: text.into(),
            extra: Vec::new(),
        }
    }

    fn with(mut self, line: impl Into<String>) -> Row {
        self.extra.push(line.into());
        self
    }
}

fn section(out: &mut String, paint: &Paint, title: &str, subtitle: &str, rows: &[Row]) {
    out.push('\n');
    out.push_str(&paint.bold(title));
    if !subtitle.is_empty() {
        out.push_str("  ");
        out.push_str(&paint.dim(subtitle));
    }
    out.push('\n');
    let width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .min(36);
    for row in rows {
        let tag = match row.level {
            Some(level) => paint.level(level),
            None => " ".repeat(4),
        };
        let label = format!("{:<width$}", row.label);
        out.push_str(&format!("  {tag}  {label}  {}\n", row.text));
        let indent = " ".repeat(2 + 4 + 2 + width.max(row.label.chars().count()) + 2);
        for line in &row.extra {
            out.push_str(&format!("{indent}{line}\n"));
        }
    }
}

fn environment(out: &mut String, paint: &Paint, env: &EnvReport) {
    let mut rows = Vec::new();
    let chain = &env.chain;
    rows.push(match &chain.error {
        Some(error) => Row::new(Some(Level::Fail), "chain", error.clone()),
        None => Row::new(
            Some(chain.status),
            "chain",
            format!(
                "{}: {}",
                chain.selected_by.as_deref().unwrap_or_default(),
                chain.credentials.join(", ")
            ),
        ),
    });
    let cloud = &env.cloud;
    rows.push(match &cloud.error {
        Some(error) => Row::new(Some(Level::Fail), "cloud", error.clone()),
        None => Row::new(
            Some(cloud.status),
            "cloud",
            format!(
                "{}: authority {}, Resource Manager {}, Graph {}",
                cloud.name, cloud.authority, cloud.resource_manager, cloud.graph
            ),
        ),
    });
    if env.variables.is_empty() {
        rows.push(Row::new(
            None,
            "variables",
            "none of the Azure or proxy variables is set",
        ));
    }
    for variable in &env.variables {
        let mut row = Row::new(None, variable.name, variable.value.clone());
        if let Some(note) = &variable.note {
            row = row.with(paint.dim(&format!("note: {note}")));
        }
        rows.push(row);
    }
    section(out, paint, "Environment", "what this shell selects", &rows);
}

fn daemon(out: &mut String, paint: &Paint, daemon: &DaemonReport) {
    let mut rows = Vec::new();
    match &daemon.error {
        Some(error) => rows.push(Row::new(
            Some(Level::Fail),
            "azbrokerd",
            format!("not reachable: {error}"),
        )),
        None => {
            let mut text = format!(
                "{}, protocol {}, pid {}",
                daemon.version.as_deref().unwrap_or("?"),
                daemon.protocol_version.unwrap_or_default(),
                daemon.pid.unwrap_or_default()
            );
            if let Some(up) = daemon.uptime_secs {
                text.push_str(&format!(", up {up} s"));
            }
            if daemon.started_by_diagnose {
                text.push_str(" (started by this command)");
            }
            rows.push(Row::new(Some(Level::Ok), "azbrokerd", text));
        }
    }
    let socket = &daemon.socket;
    let whose = |mine: Option<bool>| match mine {
        Some(true) => "yours",
        Some(false) => "NOT yours",
        None => "?",
    };
    let text = match &socket.mode {
        Some(mode) => format!(
            "{} ({mode}, {}; directory {}, {})",
            socket.path,
            whose(socket.owned_by_you),
            socket.directory_mode.as_deref().unwrap_or("?"),
            whose(socket.directory_owned_by_you)
        ),
        None => format!("{} (not present)", socket.path),
    };
    let level = if socket.issues.is_empty() {
        if socket.mode.is_some() {
            Level::Ok
        } else {
            Level::Info
        }
    } else {
        Level::Warn
    };
    let mut row = Row::new(Some(level), "socket", text);
    for issue in &socket.issues {
        row = row.with(issue.clone());
    }
    rows.push(row);
    if let Some(store) = &daemon.store {
        rows.push(Row::new(Some(Level::Info), "store", store.clone()));
    }
    section(out, paint, "Daemon", "", &rows);
}

/// The daemon's environment beside this shell's; proxy and CA differences the
/// Network section states already are left to it.
fn daemon_environment(out: &mut String, paint: &Paint, report: &Report) {
    let environment = &report.daemon_environment;
    if !environment.compared {
        return;
    }
    let mut rows: Vec<Row> = daemon_env::beyond_network(environment, &report.network)
        .into_iter()
        .map(|d| Row::new(Some(Level::Warn), "differs", d.describe()))
        .collect();
    if environment.differences.is_empty() {
        rows.push(Row::new(
            Some(Level::Ok),
            "same",
            "az, azd and pwsh on PATH, profile directories, proxy and CA variables",
        ));
    } else if rows.is_empty() {
        rows.push(Row::new(
            Some(Level::Warn),
            "differs",
            "proxy or CA variables: see Network below",
        ));
    }
    section(
        out,
        paint,
        "Daemon environment",
        "azbrokerd's beside this shell's",
        &rows,
    );
}

fn network(out: &mut String, paint: &Paint, network: &NetworkReport) {
    let mut rows = Vec::new();
    let settings = &network.settings;
    let proxy = match &settings.https_proxy {
        Some(proxy) => {
            let mut text = format!("https through {proxy}");
            if let Some(no_proxy) = &settings.no_proxy {
                text.push_str(&format!(", except NO_PROXY={no_proxy}"));
            }
            text
        }
        None => "none: direct connections".into(),
    };
    rows.push(Row::new(Some(Level::Info), "proxy", proxy));
    let roots = if settings.extra_roots.is_empty() {
        "none beyond the system's".to_string()
    } else {
        settings.extra_roots.join(", ")
    };
    rows.push(Row::new(Some(Level::Info), "extra CAs", roots));
    for difference in &network.differences {
        rows.push(Row::new(Some(Level::Warn), "differs", difference.clone()));
    }
    for endpoint in &network.endpoints {
        rows.push(endpoint_row(endpoint));
    }
    let subtitle = match (network.checked_by, &network.note) {
        ("azbrokerd", _) => "checked by azbrokerd, with its own proxy and CA settings".to_string(),
        (_, Some(note)) => note.clone(),
        _ => "checked by this process".to_string(),
    };
    section(out, paint, "Network", &subtitle, &rows);
}

fn endpoint_row(endpoint: &EndpointReport) -> Row {
    let mut parts = Vec::new();
    for step in &endpoint.steps {
        if step.passed {
            let mut part = format!("{} {} ms", step.step, step.millis);
            let shown = match step.step {
                "dns" | "tls" | "proxy" => !step.detail.is_empty(),
                _ => false,
            };
            if shown {
                part.push_str(&format!(" ({})", step.detail));
            }
            parts.push(part);
        } else {
            parts.push(format!(
                "{} FAILED after {} ms: {}",
                step.step, step.millis, step.detail
            ));
        }
    }
    let mut text = endpoint.role.as_str().to_string();
    if let Some(proxy) = &endpoint.proxy {
        text.push_str(&format!(" via {proxy}"));
    }
    text.push_str(": ");
    text.push_str(&parts.join(", "));
    let mut row = Row::new(Some(endpoint.status), endpoint.endpoint.clone(), text);
    if endpoint.private_endpoint {
        row = row.with("resolves to a private address: served by a private endpoint");
    }
    row
}

fn credentials(out: &mut String, paint: &Paint, report: &CredentialsReport) {
    let mut rows = Vec::new();
    if report.results.is_empty() {
        rows.push(Row::new(
            Some(Level::Fail),
            "chain",
            "no chain to check (see Environment)",
        ));
    }
    for result in &report.results {
        let text = match (&result.token, &result.reason) {
            (Some(token), _) => {
                let mut text = format!("token until {}", token.expires);
                if token.cached {
                    text.push_str(" (cached)");
                }
                if let Some(identity) = &token.identity {
                    text.push_str(&format!(", {}", identity.describe()));
                }
                text
            }
            (None, Some(reason)) => match result.outcome {
                "not_tried" | "not_checked" => reason.clone(),
                outcome => format!("{outcome}: {reason}"),
            },
            (None, None) => result.outcome.to_string(),
        };
        let mut row = Row::new(Some(result.status), result.credential.clone(), text);
        if let Some(advice) = &result.advice {
            row = row.with(format!("-> {}", advice.summary));
        }
        if let Some(background) = &result.background_error {
            row = row.with(format!("last refresh failed: {background}"));
        }
        rows.push(row);
    }
    let subtitle = format!("each alone, for {} (tokens are never shown)", report.scope);
    section(out, paint, "Credentials", &subtitle, &rows);
}

fn result(out: &mut String, paint: &Paint, report: &Report) {
    out.push('\n');
    let failures = report
        .problems
        .iter()
        .filter(|p| p.level == Level::Fail)
        .count();
    let warnings = report.problems.len() - failures;
    let headline = if report.ok {
        let mut text = "everything needed for a token works".to_string();
        if let Some(serving) = &report.credentials.serving {
            text.push_str(&format!(" (served by {serving})"));
        }
        if warnings > 0 {
            text.push_str(&format!("; {warnings} warning(s)"));
        }
        paint.green(&text)
    } else {
        paint.red(&format!(
            "{failures} problem(s){}: exit code 1",
            if warnings > 0 {
                format!(" and {warnings} warning(s)")
            } else {
                String::new()
            }
        ))
    };
    out.push_str(&format!("{}  {headline}\n", paint.bold("Result")));
    for problem in &report.problems {
        out.push_str(&format!(
            "  {}  {}: {}\n",
            paint.level(problem.level),
            problem.area,
            problem.subject
        ));
        out.push_str(&format!("        {}\n", problem.summary));
        out.push_str(&format!("        -> {}\n", problem.remedy));
    }
}

/// ANSI styling, or none.
struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }

    fn dim(&self, text: &str) -> String {
        self.wrap("2", text)
    }

    fn green(&self, text: &str) -> String {
        self.wrap("32", text)
    }

    fn red(&self, text: &str) -> String {
        self.wrap("31", text)
    }

    /// A four-column tag: `ok`, `info`, `warn`, `FAIL`.
    fn level(&self, level: Level) -> String {
        match level {
            Level::Ok => self.wrap("32", "ok  "),
            Level::Info => self.wrap("2", "info"),
            Level::Warn => self.wrap("33", "warn"),
            Level::Fail => self.wrap("1;31", "FAIL"),
        }
    }
}

/// Replaces every secret value (and its JSON-escaped form) with `***`. The
/// report never puts a secret in on purpose; this makes sure no error text
/// from a tool or service can carry one out either.
pub struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    /// Values shorter than this are not scrubbed: they would mangle unrelated
    /// text (and JSON). They are masked where the report shows variables anyway.
    const MIN_LEN: usize = 8;

    pub fn new(secrets: &[String]) -> Redactor {
        let mut needles: Vec<String> = Vec::new();
        for secret in secrets.iter().filter(|s| s.len() >= Self::MIN_LEN) {
            let escaped = serde_json::to_string(secret).expect("a string serializes");
            for needle in [secret.clone(), escaped[1..escaped.len() - 1].to_string()] {
                if !needles.contains(&needle) {
                    needles.push(needle);
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), "***");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redactor_removes_raw_and_escaped_secrets() {
        let redactor = Redactor::new(&["pa\"ss-word".into(), "1234".into()]);
        assert_eq!(
            redactor.apply(r#"raw pa"ss-word, json "pa\"ss-word", port 1234"#),
            r#"raw ***, json "***", port 1234"#
        );
    }

    #[test]
    fn color_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(color_allowed(true, None, Some("xterm-256color")));
        assert!(color_allowed(true, Some(OsStr::new("")), None));
        assert!(!color_allowed(true, Some(OsStr::new("1")), None));
        assert!(!color_allowed(false, None, None));
        assert!(!color_allowed(true, None, Some("dumb")));
    }

    #[test]
    fn levels_are_aligned_and_colored_only_when_asked() {
        assert_eq!(Paint(false).level(Level::Ok), "ok  ");
        assert_eq!(Paint(false).level(Level::Fail), "FAIL");
        assert_eq!(Paint(true).level(Level::Fail), "\x1b[1;31mFAIL\x1b[0m");
    }
}
