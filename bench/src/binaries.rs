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
    pub oneshot: PathBuf,
    pub bare_server: PathBuf,
    /// Whether they are optimized builds (timings of debug builds mean nothing).
    pub release: bool,
}

const NAMES: [&str; 4] = [
    "azbrokerd",
    "azbroker",
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
            oneshot: find(NAMES[2])?,
            bare_server: find(NAMES[3])?,
            release,
        })
    }
}

fn build(cargo: &Path, release: bool) -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace directory")?;
    let mut command = Command::new(cargo);
    command.current_dir(workspace).arg("build").arg("--quiet");
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
