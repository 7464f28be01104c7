//! The programs under test: `azbrokerd` and `azbroker` as users run them, and
//! the two baseline programs of this crate, all from one target directory.
//!
//! `cargo run --bin azbroker-bench` builds only the benchmark itself, so when
//! cargo started us (it sets `CARGO`) we build the other binaries first, in
//! our own profile: the figures must never come from a stale or debug daemon.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Binaries {
    pub azbrokerd: PathBuf,
    pub azbroker: PathBuf,
    pub az_shim: PathBuf,
    pub oneshot: PathBuf,
    pub bare_server: PathBuf,
    /// Whether they are optimized builds (timings of debug builds mean nothing).
    pub release: bool,
}

const NAMES: [&str; 5] = [
    "azbrokerd",
    "azbroker",
    "azbroker-az-shim",
    "bench-oneshot",
    "bench-bare-server",
];

impl Binaries {
    pub fn locate() -> Result<Binaries, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let dir = exe
            .parent()
            .ok_or("the executable has no directory")?
            .to_path_buf();
        let release = dir.file_name().is_some_and(|name| name == "release");
        if let Some(cargo) = std::env::var_os("CARGO") {
            build(Path::new(&cargo), release)?;
        }
        let find = |name: &str| -> Result<PathBuf, String> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} is missing: run `cargo build --release --bins` first",
                    path.display()
                ))
            }
        };
        Ok(Binaries {
            azbrokerd: find(NAMES[0])?,
            azbroker: find(NAMES[1])?,
            az_shim: find(NAMES[2])?,
            oneshot: find(NAMES[3])?,
            bare_server: find(NAMES[4])?,
            release,
        })
    }
}

/// Variables `cargo run` sets for the program it runs (prefixes).
const RUN_ONLY_VARIABLES: [&str; 5] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

fn build(cargo: &Path, release: bool) -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace directory")?;
    let mut command = Command::new(cargo);
    command.current_dir(workspace).arg("build").arg("--quiet");
    // `cargo run` describes this package to us in CARGO_PKG_*, CARGO_MANIFEST_*
    // and the like; build scripts that watch such variables would otherwise
    // see a change and rebuild half the tree on every run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if RUN_ONLY_VARIABLES.iter().any(|v| name.starts_with(v)) {
            command.env_remove(&*name);
        }
    }
    if release {
        command.arg("--release");
    }
    for name in NAMES {
        command.arg("--bin").arg(name);
    }
    let status = command
        .status()
        .map_err(|e| format!("running {}: {e}", cargo.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the binaries under test failed ({status})"
        ))
    }
}
