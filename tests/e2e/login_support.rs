//! What the login tests share: an Entra double with the developer client
//! registered, and the test browser as `$BROWSER`.

use std::path::PathBuf;

use azbroker_e2e::EntraDouble;

use crate::harness::{bin, Sandbox};

/// Azure.Identity's public developer client: the default of InteractiveBrowser.
pub const DEVELOPER_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
pub const ARM: &str = "https://management.azure.com/.default";
pub const STORAGE: &str = "https://storage.azure.com/.default";

/// The `azbroker-test-browser` installed as `$BROWSER`, and its control directory.
pub struct TestBrowser {
    dir: PathBuf,
}

impl TestBrowser {
    pub fn install(sandbox: &mut Sandbox) -> TestBrowser {
        let dir = sandbox.dir.path().join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        // The directory is an argument: the daemon passes a browser no test variable.
        let browser = format!(
            "{} {}",
            bin("azbroker-test-browser").display(),
            dir.display()
        );
        sandbox.set("BROWSER", browser);
        TestBrowser { dir }
    }

    /// `accept` (default), `tamper-state`, `ignore` or `fail`.
    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("mode"), mode).unwrap();
    }

    /// The environment the browser was last started with, as `(name, value)` pairs.
    pub fn environment(&self) -> Vec<(String, String)> {
        let block = std::fs::read(self.dir.join("environment")).unwrap_or_default();
        block
            .split(|&b| b == 0)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let entry = String::from_utf8_lossy(entry);
                let (name, value) = entry.split_once('=').unwrap_or((&entry, ""));
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// How many times the daemon opened the browser.
    pub fn invocations(&self) -> usize {
        std::fs::read_to_string(self.dir.join("invocations"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// The pages the browser ended on (status line and body), one per line.
    pub fn pages(&self) -> String {
        std::fs::read_to_string(self.dir.join("pages")).unwrap_or_default()
    }

    /// [`TestBrowser::pages`] once the browser has written one: it records the
    /// page after the daemon has already answered, so a test must wait for it.
    pub fn wait_for_pages(&self) -> String {
        crate::harness::wait_until(
            std::time::Duration::from_secs(10),
            "the browser to record its page",
            || !self.pages().is_empty(),
        );
        self.pages()
    }
}

/// A sandbox whose chain is InteractiveBrowser alone, against an Entra double.
pub fn login_sandbox() -> (Sandbox, EntraDouble) {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_public_client(DEVELOPER_CLIENT_ID);
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "InteractiveBrowserCredential");
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    (sandbox, entra)
}

/// The grant types of the token requests the double saw, in order.
pub fn grants(entra: &EntraDouble) -> Vec<String> {
    entra.requests().into_iter().map(|r| r.grant_type).collect()
}

/// The refresh tokens of an accounts document (the file's, or the secret store's entry).
pub fn refresh_tokens_in(text: &str) -> Vec<String> {
    let document: serde_json::Value = serde_json::from_str(text).unwrap();
    document["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["refresh_token"].as_str().unwrap().to_string())
        .collect()
}

/// Where the daemon keeps refresh tokens in the sandbox (the file: the sandbox has no
/// Secret Service unless a test starts one).
pub fn accounts_file(sandbox: &Sandbox) -> PathBuf {
    sandbox.dir.path().join("state/azbroker/accounts.json")
}

/// `azbroker ARGS` must fail; returns its stderr.
pub fn cli_error(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "azbroker {args:?} succeeded: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}
