//! Opens the authorize URL in the user's browser: `$BROWSER` (a `:`-separated
//! list of commands, `%s` standing for the URL, as Python's `webbrowser` and
//! `sensible-browser` read it), else the desktop opener (`xdg-open`, `open` on
//! macOS). Commands run without a shell, so the URL is never interpreted, and
//! with the browser's minimal environment ([`crate::child_env`]), so no secret
//! of the daemon's environment reaches a long-lived browser.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// An opener that has not exited by then is taken to be the browser itself.
const OPENER_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Nothing to open a browser with.
    NoBrowser(String),
    /// Every candidate failed.
    Failed(String),
}

impl OpenError {
    pub fn message(&self) -> &str {
        match self {
            OpenError::NoBrowser(m) | OpenError::Failed(m) => m,
        }
    }
}

/// The commands to try, in order.
fn candidates() -> Vec<String> {
    if let Some(browser) = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        return browser
            .split(':')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
    }
    if cfg!(target_os = "macos") {
        vec!["open".into()]
    } else {
        vec!["xdg-open".into()]
    }
}

pub async fn open(url: &str) -> Result<(), OpenError> {
    let mut failures = Vec::new();
    let mut tried_any = false;
    for candidate in candidates() {
        let mut words = candidate.split_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let Some(path) = find_program(program) else {
            failures.push(format!("`{program}` not found"));
            continue;
        };
        tried_any = true;
        let mut args: Vec<String> = words.map(str::to_string).collect();
        if args.iter().any(|a| a.contains("%s")) {
            for arg in &mut args {
                *arg = arg.replace("%s", url);
            }
        } else {
            args.push(url.to_string());
        }
        let spawned = tokio::process::Command::new(&path)
            .args(&args)
            .env_clear()
            .envs(crate::child_env::browser_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                failures.push(format!("`{program}`: {e}"));
                continue;
            }
        };
        match tokio::time::timeout(OPENER_GRACE, child.wait()).await {
            Ok(Ok(status)) if status.success() => return Ok(()),
            Ok(Ok(status)) => failures.push(format!("`{program}` failed ({status})")),
            Ok(Err(e)) => failures.push(format!("`{program}`: {e}")),
            Err(_) => {
                // Still running: a browser that stays in the foreground. Reap it later.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Ok(());
            }
        }
    }
    let failures = failures.join("; ");
    if tried_any {
        Err(OpenError::Failed(format!(
            "cannot open a browser: {failures}"
        )))
    } else {
        Err(OpenError::NoBrowser(format!(
            "no browser to open: {failures}"
        )))
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = Path::new(name);
        return path.is_file().then(|| path.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
