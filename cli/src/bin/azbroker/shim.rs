//! `azbroker shim install` and `azbroker shim env`: a directory holding `az`
//! (a link to, or a copy of, `azbroker-az-shim`) and the marker file that
//! tells azbrokerd to keep that directory off its tools' `PATH`.

use std::path::{Path, PathBuf};

use azbroker_proto::shim::{MARKER_FILE, SHIM_BINARY};

const MARKER_TEXT: &str = "This directory holds azbroker's az shim (azbroker shim install).\n\
    azbrokerd keeps it off the PATH of the tools it runs, so they reach the real Azure CLI.\n";

/// `$XDG_DATA_HOME/azbroker/shim`, else `~/.local/share/azbroker/shim`.
pub fn default_dir() -> Result<PathBuf, String> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("azbroker/shim"));
    }
    let home = non_empty("HOME").ok_or("cannot find a home directory: pass --dir")?;
    Ok(PathBuf::from(home).join(".local/share/azbroker/shim"))
}

/// Creates `dir/az` and the marker; returns the directory (absolute) and the
/// shim binary `az` points at. Refuses to replace an `az` it did not put there.
pub fn install(dir: &Path, copy: bool) -> Result<(PathBuf, PathBuf), String> {
    let binary = crate::beside_this_program(SHIM_BINARY)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let az = dir.join("az");
    let marker = dir.join(MARKER_FILE);
    let ours = marker.is_file() || azbroker_proto::shim::is_shim_dir(&dir, Some(&binary));
    if az.symlink_metadata().is_ok() && !ours {
        return Err(format!(
            "{} exists and is not azbroker's shim; choose another --dir",
            az.display()
        ));
    }
    std::fs::write(&marker, MARKER_TEXT)
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    // Build the new `az` beside the old one, then rename it into place, so an
    // SDK running `az` meanwhile sees either the old or the new one.
    let staging = dir.join(format!(".az.new.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let made = if copy {
        std::fs::copy(&binary, &staging).map(drop)
    } else {
        std::os::unix::fs::symlink(&binary, &staging)
    };
    made.and_then(|()| std::fs::rename(&staging, &az))
        .map_err(|e| {
            let _ = std::fs::remove_file(&staging);
            format!("cannot create {}: {e}", az.display())
        })?;
    Ok((dir, binary))
}

/// The shell line that puts `dir` first on `PATH`.
pub fn path_line(dir: &Path) -> String {
    let mut quoted = String::new();
    for c in dir.display().to_string().chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("export PATH=\"{quoted}:$PATH\"")
}

/// Whether `dir` holds an installed shim.
pub fn is_installed(dir: &Path) -> bool {
    dir.join(MARKER_FILE).is_file() && dir.join("az").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_line_quotes_for_the_shell() {
        assert_eq!(
            path_line(Path::new("/home/me/.local/share/azbroker/shim")),
            "export PATH=\"/home/me/.local/share/azbroker/shim:$PATH\""
        );
        assert_eq!(
            path_line(Path::new("/tmp/a $b\"c")),
            "export PATH=\"/tmp/a \\$b\\\"c:$PATH\""
        );
    }
}
