//! `azbroker-test-browser DIR URL`: a `$BROWSER` for end-to-end tests that behaves
//! like a person who clicks "accept": it GETs the authorize URL from the Entra
//! double (HTTPS, trusting only the CA in `SSL_CERT_FILE`), reads the redirect
//! and follows it to the daemon's loopback listener.
//!
//! Driven by a control directory, the first of two arguments (`$BROWSER` is
//! `azbroker-test-browser DIR`: the daemon gives a browser only a minimal
//! environment, so a variable would not reach it): every run appends
//! its URL to `invocations`, and `mode` (if present) says how to behave:
//! `accept` (default), `tamper-state` (follow the redirect with a forged
//! `state`), `ignore` (do nothing, exit 0: the user never signs in), `fail`
//! (exit 3 at once, as a broken browser command). The final page goes to `pages`,
//! the environment the browser was started with to `environment` (`NAME=value`
//! entries, NUL-separated).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, url] = args.as_slice() else {
        eprintln!("usage: azbroker-test-browser DIR URL");
        return ExitCode::from(2);
    };
    let (dir, url) = (PathBuf::from(dir), url.clone());
    append(&dir.join("invocations"), &url);
    record_environment(&dir.join("environment"));
    let mode = std::fs::read_to_string(dir.join("mode")).unwrap_or_default();
    let mode = mode.trim();
    match mode {
        "ignore" => return ExitCode::SUCCESS,
        "fail" => return ExitCode::from(3),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(follow(&url, mode == "tamper-state")) {
        Ok(page) => {
            append(&dir.join("pages"), &page);
            ExitCode::SUCCESS
        }
        Err(e) => {
            append(&dir.join("pages"), &format!("error: {e}"));
            eprintln!("azbroker-test-browser: {e}");
            ExitCode::from(1)
        }
    }
}

async fn follow(url: &str, tamper_state: bool) -> Result<String, String> {
    let ca_path = std::env::var_os("SSL_CERT_FILE").ok_or("SSL_CERT_FILE is not set")?;
    let ca = std::fs::read(&ca_path).map_err(|e| e.to_string())?;
    let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let authorize = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !authorize.status().is_redirection() {
        // An Entra error page: a person would read it and close the window.
        let status = authorize.status();
        let body = authorize.text().await.unwrap_or_default();
        return Ok(format!("{status} {body}"));
    }
    let mut location = authorize
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("a redirect without Location")?
        .to_owned();
    if tamper_state {
        location = forge_state(&location);
    }
    let page = client
        .get(&location)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = page.status();
    Ok(format!(
        "{status} {}",
        page.text().await.unwrap_or_default()
    ))
}

/// The redirect with its `state` replaced, as a forged response would carry.
fn forge_state(location: &str) -> String {
    let (base, query) = location.split_once('?').unwrap_or((location, ""));
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = if name == "state" {
            "forged-state".into()
        } else {
            value
        };
        out.append_pair(&name, &value);
    }
    format!("{base}?{}", out.finish())
}

fn append(path: &std::path::Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("test browser log");
    writeln!(file, "{}", line.replace('\n', " ")).expect("write log");
}

/// What the daemon passed to its browser, for tests of the child environment.
fn record_environment(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let mut block = Vec::new();
    for (name, value) in std::env::vars_os() {
        block.extend_from_slice(name.as_bytes());
        block.push(b'=');
        block.extend_from_slice(value.as_bytes());
        block.push(0);
    }
    let _ = std::fs::write(path, block);
}
