//! Network settings shared by every HTTP call of the daemon: the proxy from
//! its environment (and `NO_PROXY`), IMDS never proxied, and certificate
//! trust failures that say so within seconds.

use std::time::{Duration, Instant};

use azbroker_e2e::forward_proxy::ForwardProxy;
use azbroker_e2e::managed_identity_double::ManagedIdentityDouble;
use azbroker_e2e::{EntraDouble, TestPki};

use crate::harness::Sandbox;

const ARM: &str = "https://management.azure.com/.default";
const TENANT: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT: &str = "22222222-2222-2222-2222-222222222222";

fn service_principal(sandbox: &mut Sandbox, entra: &EntraDouble) {
    entra.register_client(CLIENT, "right-secret");
    sandbox.set("AZURE_TENANT_ID", TENANT);
    sandbox.set("AZURE_CLIENT_ID", CLIENT);
    sandbox.set("AZURE_CLIENT_SECRET", "right-secret");
    sandbox.set("AZURE_AUTHORITY_HOST", entra.authority());
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
}

#[test]
fn https_proxy_from_the_environment_carries_calls_to_entra() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    let proxy = ForwardProxy::start();
    service_principal(&mut sandbox, &entra);
    sandbox.set("HTTPS_PROXY", proxy.url());
    sandbox.start_daemon();
    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "EnvironmentCredential");
    assert_eq!(entra.token_requests(), 1);
    assert_eq!(
        proxy.requests(),
        [format!("CONNECT {}", entra.addr())],
        "the call to Entra went through the proxy"
    );
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    let proxy = ForwardProxy::start();
    service_principal(&mut sandbox, &entra);
    sandbox.set("HTTPS_PROXY", proxy.url());
    sandbox.set("NO_PROXY", "localhost,127.0.0.1");
    sandbox.start_daemon();
    sandbox.token(ARM, &[]);
    assert_eq!(entra.token_requests(), 1);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
}

#[test]
fn imds_is_never_proxied_but_app_service_is() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    let proxy = ForwardProxy::start();
    sandbox.set("HTTP_PROXY", proxy.url());
    sandbox.set("HTTPS_PROXY", proxy.url());
    sandbox.set("ALL_PROXY", proxy.url());
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential");
    sandbox.start_daemon_with_imds(&mi.imds_endpoint());
    sandbox.token(ARM, &[]);
    assert_eq!(mi.requests().len(), 1);
    assert!(
        proxy.requests().is_empty(),
        "IMDS went through the proxy: {:?}",
        proxy.requests()
    );

    sandbox.set("IDENTITY_ENDPOINT", mi.app_service_endpoint());
    sandbox.set("IDENTITY_HEADER", mi.app_service_secret());
    sandbox.token(ARM, &[]);
    assert_eq!(mi.requests().len(), 2);
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with(&format!("GET {}?", mi.app_service_endpoint())),
        "{requests:?}"
    );
}

#[test]
fn untrusted_certificate_fails_within_5_seconds_naming_certificate_trust() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start_with_tls(TestPki::untrusted_server_config());
    service_principal(&mut sandbox, &entra);
    sandbox.start_daemon();
    let started = Instant::now();
    let out = sandbox.cli(&["token", "--scope", ARM]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("EnvironmentCredential: cannot reach https://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains(": certificate not trusted: "), "{stderr}");
    assert!(
        stderr.contains("add its CA certificate with AZBROKER_CA_FILE or SSL_CERT_FILE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("UnknownIssuer"),
        "the real cause is kept: {stderr}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The double counts the failed handshake when it notices the client left.
    crate::harness::wait_until(Duration::from_secs(5), "the failed handshake", || {
        entra.failed_handshakes() >= 1
    });
    assert_eq!(entra.connections(), 1, "one attempt, no silent retries");
}
