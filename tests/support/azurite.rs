//! Azurite, Microsoft's Azure Storage emulator (npm), as a real Blob service
//! for the storage tools: HTTPS with a certificate from the test PKI and
//! `--oauth basic`, so it checks every bearer token's issuer, audience and
//! lifetime (not its signature). In memory, telemetry off, loopback only.
//!
//! It is installed by `tests/mcp/install` into `tests/mcp/node_modules`.

use crate::tls::TestPki;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The account every Azurite instance has.
pub const ACCOUNT: &str = "devstoreaccount1";

/// How long Azurite may take to start listening (node start-up on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Azurite {
    child: Child,
    port: u16,
}

impl std::fmt::Debug for Azurite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azurite")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The Azurite entry point inside `node_modules`, or a message saying how to install it.
pub fn blob_main(node_modules: &Path) -> Result<PathBuf, String> {
    let main = node_modules.join("azurite/dist/src/blob/main.js");
    if main.is_file() {
        Ok(main)
    } else {
        Err(format!(
            "{} is missing: install the MCP test dependencies with tests/mcp/install",
            main.display()
        ))
    }
}

impl Azurite {
    /// Starts `azurite-blob` on `127.0.0.1:<ephemeral port>` with a server
    /// certificate issued by `pki`, written to `dir`.
    ///
    /// # Panics
    /// If Azurite is not installed or does not start listening in time.
    pub fn start(node_modules: &Path, pki: &TestPki, dir: &Path) -> Azurite {
        let main = blob_main(node_modules).unwrap_or_else(|e| panic!("{e}"));
        let (cert, key) = pki.server_cert_pem();
        let (cert_path, key_path) = (dir.join("azurite-cert.pem"), dir.join("azurite-key.pem"));
        std::fs::write(&cert_path, cert).expect("writing Azurite's certificate");
        std::fs::write(&key_path, key).expect("writing Azurite's key");
        let mut child = Command::new("node")
            .arg(main)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--oauth",
                "basic",
            ])
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .args(["--inMemoryPersistence", "--extentMemoryLimit", "64"])
            .args(["--disableTelemetry", "--silent"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting Azurite with node: {e} (is Node.js installed?)"));
        // Azurite prints "... successfully listens on https://127.0.0.1:<port>".
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(port) = line
                        .rsplit_once("https://127.0.0.1:")
                        .and_then(|(_, port)| port.trim().parse::<u16>().ok())
                    {
                        let _ = tx.send(Ok(port));
                        sent = true;
                        continue;
                    }
                }
                eprintln!("azurite: {line}");
            }
            if !sent {
                let _ = tx.send(Err("Azurite exited before listening".to_string()));
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => Azurite { child, port },
            Ok(Err(e)) => {
                let _ = child.kill();
                panic!("{e}");
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "Azurite did not listen within {} s",
                    START_TIMEOUT.as_secs()
                );
            }
        }
    }

    /// The Blob service endpoint of [`ACCOUNT`] (path-style), e.g.
    /// `https://127.0.0.1:41234/devstoreaccount1`.
    pub fn account_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
