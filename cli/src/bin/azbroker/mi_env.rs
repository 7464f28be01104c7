//! `azbroker env --managed-identity`: the managed-identity variables, checked
//! before they reach a shell.
//!
//! The output is meant for `eval "$(azbroker env --managed-identity)"`, so it
//! is shell code: values are validated (a loopback `http://` endpoint, a hex
//! header read from a private regular file) and single-quoted. `eval` ignores
//! the command's exit status, so on failure stdout carries [`EVAL_FAILS`], a
//! command that fails the `eval` (and a `set -e` script with it).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Printed on stdout instead of the variables when anything went wrong.
pub const EVAL_FAILS: &str = "false # azbroker env failed; see its error message";

/// Longest endpoint accepted (the daemon's is about 32 bytes).
const MAX_ENDPOINT_LEN: usize = 256;
/// The daemon writes 64 hex digits; accept a sane range around it.
const HEADER_LEN: std::ops::RangeInclusive<usize> = 32..=256;

/// The lines to print: `export NAME='value'`, or `NAME=value` when `plain`
/// (for .env files; the values are validated to need no quoting).
pub fn render(endpoint: &str, header: &str, plain: bool) -> String {
    let line = |name: &str, value: &str| {
        if plain {
            format!("{name}={value}\n")
        } else {
            format!("export {name}={}\n", single_quote(value))
        }
    };
    line("IDENTITY_ENDPOINT", endpoint) + &line("IDENTITY_HEADER", header)
}

/// Quotes `value` for a POSIX shell: inside single quotes nothing is special
/// but the single quote itself, which becomes `'\''`.
pub fn single_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Accepts exactly `http://127.0.0.1:<port>/<path>` or `http://[::1]:<port>/<path>`,
/// with a path of URL-safe characters: what the daemon's endpoint looks like.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "the daemon reported the managed-identity endpoint {endpoint:?}, which {why}; \
             refusing to print it"
        ))
    };
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return refuse("is too long");
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return refuse("is not an http:// URL");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port = match authority
        .strip_prefix("127.0.0.1:")
        .or_else(|| authority.strip_prefix("[::1]:"))
    {
        Some(port) => port,
        None => return refuse("is not on 127.0.0.1 or [::1] with a port"),
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| p <= 65535);
    if !port_ok {
        return refuse("has no valid port");
    }
    let path_ok = path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._~-".contains(&b));
    if !path_ok {
        return refuse("has an empty path or characters a plain path never has");
    }
    Ok(())
}

/// Reads the identity header from `path`: an absolute path to a regular file
/// of this user, mode 0600 (nothing for group or others), not a symlink,
/// holding hex digits only.
pub fn read_identity_header(path: &Path) -> Result<String, String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!(
            "the identity header file {shown} is not an absolute path"
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                format!("the identity header file {shown} is a symbolic link; refusing it")
            } else {
                format!("the identity header file {shown}: {e}")
            }
        })?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the identity header file {shown} must be a regular file of uid {me} that only \
             its owner can read (0600); it is not, so it is refused"
        ));
    }
    let mut text = String::new();
    file.take(*HEADER_LEN.end() as u64 + 2)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    let header = text.trim_end_matches('\n');
    if !HEADER_LEN.contains(&header.len()) || !header.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{shown} does not hold an identity header (hex digits)"
        ));
    }
    Ok(header.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_character_literal() {
        assert_eq!(single_quote("abc"), "'abc'");
        assert_eq!(single_quote("a'b"), r"'a'\''b'");
        assert_eq!(single_quote("$(touch x); `y`"), "'$(touch x); `y`'");
    }

    #[test]
    fn only_loopback_http_endpoints_with_plain_paths_pass() {
        for good in [
            "http://127.0.0.1:40123/msi/token",
            "http://[::1]:8080/msi/token",
            "http://127.0.0.1:1/a-b_c.d~e",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "https://127.0.0.1:443/msi/token",
            "http://10.0.0.1:80/msi/token",
            "http://127.0.0.1.example.com:80/x",
            "http://localhost:80/msi/token",
            "http://127.0.0.1/msi/token",
            "http://127.0.0.1:0/x",
            "http://127.0.0.1:070/x",
            "http://127.0.0.1:65536/x",
            "http://127.0.0.1:80",
            "http://127.0.0.1:80/",
            "http://127.0.0.1:80/x?y=1",
            "http://127.0.0.1:80/x;touch${IFS}/tmp/pwned",
            "http://127.0.0.1:1/x'; touch /tmp/pwned; '",
            "http://user@127.0.0.1:80/x",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_lines_are_quoted_and_plain_lines_are_not() {
        let endpoint = "http://127.0.0.1:5/msi/token";
        assert_eq!(
            render(endpoint, "ab12", false),
            "export IDENTITY_ENDPOINT='http://127.0.0.1:5/msi/token'\nexport IDENTITY_HEADER='ab12'\n"
        );
        assert_eq!(
            render(endpoint, "ab12", true),
            "IDENTITY_ENDPOINT=http://127.0.0.1:5/msi/token\nIDENTITY_HEADER=ab12\n"
        );
    }

    #[test]
    fn the_header_file_must_be_a_private_regular_hex_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("azbroker-mi-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("header");
        let hex = "0123456789abcdef".repeat(4);
        std::fs::write(&file, &hex).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_identity_header(&file).unwrap(), hex);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_identity_header(&file).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_identity_header(&link)
            .unwrap_err()
            .contains("symbolic link"));

        std::fs::write(&file, "not hex; touch x").unwrap();
        assert!(read_identity_header(&file).is_err());
        std::fs::write(&file, "abcd").unwrap();
        assert!(read_identity_header(&file).is_err(), "too short");
        assert!(read_identity_header(Path::new("relative")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
