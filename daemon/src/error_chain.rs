//! Errors in words: the whole cause chain of an error on one line, so that a
//! TLS or DNS cause buried under "error sending request" reaches the user, and
//! `azure_identity`'s messages without their boilerplate. Used by every part
//! of the daemon that reports an upstream failure (sources, logins, the HTTP
//! client).

/// The whole `source()` chain of an error, joined, so that a TLS or DNS cause
/// buried under "error sending request" reaches the user.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![tidy(&err.to_string())];
    let mut next = err.source();
    while let Some(cause) = next {
        let text = tidy(&cause.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// One line of an `azure_identity` message: without the "XCredential
/// authentication failed." preamble and the troubleshooting link, which say
/// nothing the credential's name in our own reason does not.
pub fn tidy(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("To troubleshoot"))
        .collect();
    let text = lines.join(" ");
    match text.split_once("Credential authentication failed.") {
        Some((name, rest)) if !name.contains(' ') => rest.trim().to_string(),
        _ => text,
    }
}
