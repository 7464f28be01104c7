//! Another local user against the daemon's loopback listeners (issue 11,
//! section 2 and the managed-identity endpoint's slots). On Linux the
//! authorize URL, `state` and PKCE challenge included, is on the browser's
//! command line, which every user reads in `/proc/*/cmdline`; so `nobody`
//! (uid 65534) here knows the `state` and tries to end, stall or take over a
//! pending browser login, and a same-user client without the header tries to
//! hold every slot of the managed-identity endpoint.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{wait_until, Sandbox};
use crate::login_support::{login_sandbox, TestBrowser};

const NOBODY: u32 = 65534;

/// `azbroker login` waiting on a browser that has the authorize URL but has
/// not signed in yet: the test browser (mode `ignore`) only recorded the URL,
/// so the test decides when the user "clicks accept".
struct PendingLogin {
    login: Child,
    /// The authorize URL the browser was given.
    url: String,
    /// The login's `state`, as anyone reading the browser's command line has it.
    state: String,
    /// The redirect listener's port.
    port: u16,
    http: reqwest::Client,
}

impl PendingLogin {
    fn start(sandbox: &mut Sandbox) -> PendingLogin {
        let browser = TestBrowser::install(sandbox);
        browser.set_mode("ignore");
        sandbox.set("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS", "60");
        sandbox.start_daemon();
        let login = sandbox
            .command("azbroker")
            .arg("login")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start azbroker login");
        wait_until(
            Duration::from_secs(20),
            "the daemon to open the browser",
            || browser.invocations() == 1,
        );
        let invocations =
            std::fs::read_to_string(sandbox.dir.path().join("browser/invocations")).unwrap();
        let url = invocations.trim().to_string();
        let parsed = reqwest::Url::parse(&url).unwrap();
        let query = |name: &str| {
            parsed
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("no {name} in {url}"))
        };
        let state = query("state");
        let port = reqwest::Url::parse(&query("redirect_uri"))
            .unwrap()
            .port()
            .expect("a redirect URI with a port");
        let ca = reqwest::Certificate::from_pem(sandbox.pki.ca_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        PendingLogin {
            login,
            url,
            state,
            port,
            http,
        }
    }

    /// Signs in at the Entra double with this login's URL (its `state`, PKCE
    /// challenge and redirect URI) and returns the redirect's target and code,
    /// without following it. The user's browser does this; so can an attacker
    /// with the URL from `/proc`, signing in with an account of its own.
    async fn authorize(&self) -> (String, String) {
        let reply = self.http.get(&self.url).send().await.unwrap();
        assert!(reply.status().is_redirection(), "{}", reply.status());
        let location = reply.headers()["location"].to_str().unwrap().to_string();
        let location = reqwest::Url::parse(&location).unwrap();
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code in the redirect");
        let target = format!("/?{}", location.query().unwrap());
        (target, code)
    }

    /// The user's browser delivers `target` to the redirect listener: the page's status and body.
    async fn deliver(&self, target: &str) -> Result<(u16, String), String> {
        let url = format!("http://localhost:{}{target}", self.port);
        let page = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = page.status().as_u16();
        Ok((status, page.text().await.unwrap_or_default()))
    }

    /// `azbroker login`'s end: its output once it exits.
    fn finish(self) -> Output {
        self.login.wait_with_output().unwrap()
    }
}

/// Runs `request` (raw HTTP) against 127.0.0.1:`port` as `nobody`, through
/// bash's /dev/tcp; returns whatever came back.
fn as_nobody(port: u16, request: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 9; printf '%s' \"$1\" >&3; timeout 10 cat <&3"
    );
    let out = Command::new("/bin/bash")
        .args(["-c", &script, "bash", request])
        .env_clear()
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run bash as nobody");
    assert_ne!(out.status.code(), Some(9), "nobody could not connect");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get_request(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn assert_logged_in(output: &Output, sandbox: &Sandbox) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "azbroker login failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        sandbox.log()
    );
    assert!(
        stdout.contains("logged in as testuser@contoso.example"),
        "{stdout}"
    );
}

#[test]
fn another_user_with_the_stolen_state_cannot_get_its_code_redeemed() {
    let (mut sandbox, entra) = login_sandbox();
    let pending = PendingLogin::start(&mut sandbox);
    let rt = runtime();
    // The attacker signs in with the user's URL and delivers its own code
    // with the right state, before the user's browser does.
    let (attacker_target, attacker_code) = rt.block_on(pending.authorize());
    let answer = as_nobody(pending.port, &get_request(&attacker_target));
    assert!(
        !answer.contains("HTTP/1.1"),
        "nobody got an answer: {answer}"
    );
    // Then the user's browser.
    let (target, code) = rt.block_on(pending.authorize());
    let page = rt.block_on(pending.deliver(&target));
    let output = pending.finish();

    assert_eq!(
        entra.code_redeemed(&attacker_code),
        Some(false),
        "the daemon redeemed the code another user delivered"
    );
    assert_eq!(entra.code_redeemed(&code), Some(true));
    let (status, body) = page.expect("the user's browser reached the listener");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("You can close this window"), "{body}");
    assert_logged_in(&output, &sandbox);
    let log = sandbox.log();
    assert!(log.contains("uid 65534"), "no refusal logged:\n{log}");
    assert!(!log.contains(&attacker_code), "a code reached the log");
}

#[test]
fn neither_another_user_nor_a_wrong_state_ends_a_pending_login() {
    let (mut sandbox, entra) = login_sandbox();
    let pending = PendingLogin::start(&mut sandbox);
    let rt = runtime();
    // nobody: a forged response (wrong state), and an error with the right state.
    let forged = as_nobody(pending.port, &get_request("/?code=forged&state=forged"));
    assert!(
        !forged.contains("HTTP/1.1"),
        "nobody got an answer: {forged}"
    );
    let denied = as_nobody(
        pending.port,
        &get_request(&format!(
            "/?error=access_denied&error_description=no&state={}",
            pending.state
        )),
    );
    assert!(
        !denied.contains("HTTP/1.1"),
        "nobody got an answer: {denied}"
    );
    // The user's own process with a wrong state gets the "not accepted" page.
    let (status, body) = rt
        .block_on(pending.deliver("/?code=forged&state=forged"))
        .expect("the listener answers its user");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not accepted"), "{body}");
    // The login is still pending: the user's browser completes it.
    let (target, code) = rt.block_on(pending.authorize());
    let page = rt.block_on(pending.deliver(&target));
    let output = pending.finish();
    let (status, body) = page.expect("the user's browser reached the listener");
    assert_eq!(status, 200, "{body}");
    assert_logged_in(&output, &sandbox);
    assert_eq!(entra.code_redeemed(&code), Some(true));
    assert_eq!(crate::login_support::grants(&entra), ["authorization_code"]);
}

#[test]
fn idle_connections_do_not_stall_the_browsers_redirect() {
    let (mut sandbox, entra) = login_sandbox();
    let pending = PendingLogin::start(&mut sandbox);
    let rt = runtime();
    // nobody opens 8 connections and sends nothing; so do 6 of the user's own.
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do exec {{fd}}<>/dev/tcp/127.0.0.1/{} || exit 9; done; echo ready; sleep 120",
        pending.port
    );
    let mut idle = Command::new("/bin/bash")
        .args(["-c", &script])
        .env_clear()
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run bash as nobody");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(idle.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let own: Vec<_> = (0..6)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", pending.port)).unwrap())
        .collect();

    let (target, code) = rt.block_on(pending.authorize());
    let started = Instant::now();
    let page = rt.block_on(pending.deliver(&target));
    let took = started.elapsed();
    idle.kill().unwrap();
    idle.wait().unwrap();
    drop(own);
    let output = pending.finish();

    let (status, body) = page.unwrap_or_else(|e| panic!("the redirect failed after {took:?}: {e}"));
    assert_eq!(status, 200, "{body}");
    // Served one at a time, 14 idle connections held it 5 s each.
    assert!(
        took < Duration::from_secs(10),
        "the redirect waited {took:?} behind idle connections"
    );
    assert_logged_in(&output, &sandbox);
    assert_eq!(entra.code_redeemed(&code), Some(true));
}

/// One HTTP/1.1 response off a keep-alive connection: (status, head, body),
/// or `None` when the server closed the connection instead.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some((status, head, body))
}

/// Whether the server closed `stream` (EOF or reset) within 5 s.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn keep_alive_request(authority: &str, header: Option<&str>) -> String {
    let target = "/msi/token?resource=https%3A%2F%2Fmanagement.azure.com&api-version=2019-08-01";
    let header = header
        .map(|h| format!("X-IDENTITY-HEADER: {h}\r\n"))
        .unwrap_or_default();
    format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n{header}\r\n")
}

/// `azbroker env --managed-identity --plain`: (host:port, header).
fn endpoint(sandbox: &Sandbox) -> (String, String) {
    let identity = sandbox.managed_identity_env();
    let authority = identity
        .endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    (authority, identity.header)
}

#[test]
fn unauthenticated_keep_alive_connections_do_not_lock_out_the_managed_identity_endpoint() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let (authority, header) = endpoint(&sandbox);
    let port: u16 = authority.rsplit(':').next().unwrap().parse().unwrap();
    let rt = runtime();

    // Another user is refused outright, before its request is read.
    let refused = as_nobody(port, &get_request("/msi/token"));
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");

    rt.block_on(async {
        // A 401 ends its connection.
        let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
        stream
            .write_all(keep_alive_request(&authority, None).as_bytes())
            .await
            .unwrap();
        let (status, head, _) = read_response(&mut stream).await.expect("a 401");
        assert_eq!(status, 401);
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            closed_by_server(&mut stream).await,
            "a 401 kept its connection"
        );

        // 72 same-user clients without the header, each asking again every
        // 300 ms on its connection (reconnecting when it is closed), more
        // than the endpoint's 64 slots.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut attackers = Vec::new();
        for _ in 0..72 {
            let (authority, stop) = (authority.clone(), stop.clone());
            attackers.push(tokio::spawn(async move {
                let request = keep_alive_request(&authority, None);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut stream) = tokio::net::TcpStream::connect(&authority).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if stream.write_all(request.as_bytes()).await.is_err()
                            || read_response(&mut stream).await.is_none()
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // An authenticated client still gets a slot and its token.
        let served = tokio::time::timeout(Duration::from_secs(20), async {
            let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
            stream
                .write_all(keep_alive_request(&authority, Some(&header)).as_bytes())
                .await
                .unwrap();
            read_response(&mut stream).await
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for attacker in attackers {
            attacker.abort();
        }
        let (status, _, body) = served
            .expect("the authenticated client was locked out for 20 s")
            .expect("a response");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("access_token"));
    });
}

#[test]
fn a_keep_alive_connection_of_the_managed_identity_endpoint_serves_a_bounded_number_of_requests() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon_with(&["--managed-identity-endpoint"]);
    let (authority, header) = endpoint(&sandbox);
    let rt = runtime();
    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let request = keep_alive_request(&authority, Some(&header));
        let mut served = 0;
        while served < 1000 {
            if stream.write_all(request.as_bytes()).await.is_err() {
                break;
            }
            let Some((status, head, body)) = read_response(&mut stream).await else {
                break;
            };
            assert_eq!(status, 200, "{body}");
            served += 1;
            if head.contains("connection: close") {
                assert!(closed_by_server(&mut stream).await);
                break;
            }
        }
        assert!(served >= 10, "closed after {served} requests");
        assert!(
            served <= 100,
            "one connection was served {served} requests without being closed"
        );
    });
}
