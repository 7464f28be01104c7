//! azbrokerd's environment beside this shell's: the credential tools each
//! `PATH` finds, the tools' profile directories, the proxy and CA variables.
//!
//! azbrokerd keeps the environment of whatever started it: often an editor's
//! MCP server, with a minimal `PATH` and none of the shell's proxy settings.
//! It uses that environment for what it does on its own (the managed identity
//! endpoint's requests, background refreshes), so a difference explains why
//! the daemon fails where the shell would not. The network report compares
//! the effective proxy and CA settings; this compares the variables and tools
//! behind them, and the problem it raises covers both.

use azbroker_proto::diagnose::{EnvironmentEntry, ProcessEnvironment};
use serde::Serialize;

use super::network::NetworkReport;
use super::Problem;

#[derive(Serialize)]
pub struct DaemonEnvReport {
    /// Whether azbrokerd reported its environment (not when it is unreachable).
    pub compared: bool,
    pub differences: Vec<Difference>,
}

#[derive(Serialize)]
pub struct Difference {
    /// `tool`, `profile` or `variable`.
    pub kind: &'static str,
    /// e.g. `az`, `AZURE_CONFIG_DIR`, `HTTPS_PROXY` (for either spelling).
    pub name: String,
    /// azbrokerd's value; `None` when unset or not found.
    pub daemon: Option<String>,
    /// This shell's value.
    pub shell: Option<String>,
}

impl Difference {
    /// One line, e.g. `az: azbrokerd finds none on its PATH, this shell finds /usr/bin/az`.
    pub fn describe(&self) -> String {
        let (daemon, shell) = (self.daemon.as_deref(), self.shell.as_deref());
        match self.kind {
            "tool" => {
                let found = |v: Option<&str>| v.unwrap_or("none").to_string();
                format!(
                    "{}: azbrokerd finds {} on its PATH, this shell finds {}",
                    self.name,
                    found(daemon),
                    found(shell)
                )
            }
            _ => {
                let set = |v: Option<&str>| v.unwrap_or("unset").to_string();
                format!(
                    "{}: azbrokerd has {}, this shell has {}",
                    self.name,
                    set(daemon),
                    set(shell)
                )
            }
        }
    }
}

/// Compares azbrokerd's environment (when it reported one) with this shell's.
pub fn compare(daemon: Option<&ProcessEnvironment>, shell: &ProcessEnvironment) -> DaemonEnvReport {
    let Some(daemon) = daemon else {
        return DaemonEnvReport {
            compared: false,
            differences: Vec::new(),
        };
    };
    let mut differences = Vec::new();
    for (kind, ours, theirs) in [
        ("tool", &daemon.tools, &shell.tools),
        ("profile", &daemon.profiles, &shell.profiles),
        ("variable", &daemon.variables, &shell.variables),
    ] {
        for name in names(ours, theirs) {
            let (d, s) = (effective(ours, &name), effective(theirs, &name));
            if d != s {
                differences.push(Difference {
                    kind,
                    name,
                    daemon: d,
                    shell: s,
                });
            }
        }
    }
    DaemonEnvReport {
        compared: true,
        differences,
    }
}

/// The names to compare, in order, spellings of one variable (`HTTPS_PROXY`,
/// `https_proxy`) as one under its first: tools read either.
fn names(a: &[EnvironmentEntry], b: &[EnvironmentEntry]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for entry in a.iter().chain(b) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&entry.name)) {
            names.push(entry.name.clone());
        }
    }
    names
}

/// The first value set under any spelling of `name`.
fn effective(entries: &[EnvironmentEntry], name: &str) -> Option<String> {
    entries
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(name))
        .find_map(|e| e.value.clone())
}

/// The differences the network report does not already state: it names the
/// effective proxy settings by variable and counts the certificates the CA
/// variables load.
pub fn beyond_network<'a>(
    report: &'a DaemonEnvReport,
    network: &NetworkReport,
) -> Vec<&'a Difference> {
    let stated = network_differences(network);
    let named = |name: &str| stated.iter().any(|l| l.starts_with(&format!("{name}:")));
    let roots_differ = stated
        .iter()
        .any(|l| l.starts_with("extra CA certificates:"));
    let ca_file =
        |name: &str| matches!(name, "AZBROKER_CA_FILE" | "SSL_CERT_FILE" | "SSL_CERT_DIR");
    report
        .differences
        .iter()
        .filter(|d| !named(&d.name) && (!roots_differ || !ca_file(&d.name)))
        .collect()
}

/// The network report's differences, when they compare the daemon's settings.
fn network_differences(network: &NetworkReport) -> &[String] {
    if network.checked_by == "azbrokerd" {
        &network.differences
    } else {
        &[]
    }
}

/// One warning for everything in which azbrokerd's environment differs from
/// this shell's: the network report's effective settings, then the tools,
/// profile directories and variables not already named there.
pub fn problems(report: &DaemonEnvReport, network: &NetworkReport, out: &mut Vec<Problem>) {
    let mut lines: Vec<String> = network_differences(network).to_vec();
    lines.extend(
        beyond_network(report, network)
            .into_iter()
            .map(Difference::describe),
    );
    if lines.is_empty() {
        return;
    }
    out.push(Problem::warn(
        "daemon",
        "azbrokerd settings",
        format!(
            "azbrokerd runs with another environment than this shell: {}.",
            lines.join("; ")
        ),
        "azbrokerd keeps the environment of the process that started it (often an editor's MCP server) and uses it for what it does on its own: the managed identity endpoint, background refreshes, and its own network calls. To give it this shell's environment: `azbroker stop`, then run any azbroker command from here (the next client starts it). When it runs as a user service (`azbroker service install`), put the variables in the service's environment (`systemctl --user edit azbrokerd`) and run `systemctl --user restart azbrokerd`.",
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: Option<&str>) -> EnvironmentEntry {
        EnvironmentEntry {
            name: name.into(),
            value: value.map(str::to_string),
        }
    }

    fn environment(
        az: Option<&str>,
        config: &str,
        proxy: (&str, Option<&str>),
    ) -> ProcessEnvironment {
        ProcessEnvironment {
            tools: vec![entry("az", az), entry("azd", None)],
            profiles: vec![entry("AZURE_CONFIG_DIR", Some(config))],
            variables: vec![
                entry("HTTPS_PROXY", None),
                entry("https_proxy", None),
                entry(proxy.0, proxy.1),
                entry("REQUESTS_CA_BUNDLE", None),
            ],
        }
    }

    fn network(differences: &[&str]) -> NetworkReport {
        NetworkReport {
            status: super::super::Level::Ok,
            checked_by: "azbrokerd",
            note: None,
            settings: Default::default(),
            differences: differences.iter().map(|d| d.to_string()).collect(),
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn differences_are_named_once_whatever_the_spelling() {
        let daemon = environment(
            None,
            "/home/u/.azure",
            ("https_proxy", Some("http://p:3128")),
        );
        let shell = environment(
            Some("/usr/bin/az"),
            "/home/u/.azure-work",
            ("HTTPS_PROXY", Some("http://p:3128")),
        );
        let report = compare(Some(&daemon), &shell);
        assert!(report.compared);
        let lines: Vec<String> = report
            .differences
            .iter()
            .map(Difference::describe)
            .collect();
        assert_eq!(
            lines,
            [
                "az: azbrokerd finds none on its PATH, this shell finds /usr/bin/az",
                "AZURE_CONFIG_DIR: azbrokerd has /home/u/.azure, this shell has /home/u/.azure-work",
            ],
            "the same proxy under another spelling is no difference"
        );
        assert!(compare(Some(&shell), &shell).differences.is_empty());
        assert!(!compare(None, &shell).compared);
    }

    #[test]
    fn one_warning_covers_network_and_environment_differences() {
        let daemon = environment(Some("/usr/bin/az"), "/a", ("HTTPS_PROXY", None));
        let shell = environment(
            Some("/opt/az/bin/az"),
            "/a",
            ("HTTPS_PROXY", Some("http://p:3128")),
        );
        let report = compare(Some(&daemon), &shell);
        let mut out = Vec::new();
        problems(
            &report,
            &network(&["HTTPS_PROXY: azbrokerd has unset, this shell has http://p:3128"]),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let warning = &out[0];
        assert_eq!(warning.subject, "azbrokerd settings");
        assert_eq!(
            warning.summary.matches("HTTPS_PROXY").count(),
            1,
            "{}",
            warning.summary
        );
        assert!(
            warning.summary.contains("az: azbrokerd finds /usr/bin/az"),
            "{}",
            warning.summary
        );
        assert!(warning.remedy.contains("azbroker stop"));
        assert!(warning
            .remedy
            .contains("systemctl --user restart azbrokerd"));

        let mut none = Vec::new();
        problems(&compare(Some(&shell), &shell), &network(&[]), &mut none);
        assert!(none.is_empty());
    }
}
