//! Upstream trouble on the client path (issue 11, sections 3 to 5): a server's
//! `Retry-After` holds client requests too, a still-valid token is served
//! (flagged stale) while upstream fails, `min_validity` is bounded, idle
//! actors stop, and an `Invalidate` survives a refresh in flight.

use std::time::Duration;

use azbroker_client::ClientError;
use azbroker_e2e::managed_identity_double::ManagedIdentityDouble;
use azbroker_e2e::{EntraDouble, Mode};
use azbroker_proto::{ErrorKind, GetToken};
use serde_json::Value;

use crate::harness::{wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";
const TENANT: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const SECRET: &str = "right-secret";

fn request(min_validity_secs: u32) -> GetToken {
    GetToken {
        scopes: vec![ARM.into()],
        tenant: None,
        claims: None,
        min_validity_secs,
    }
}

/// The variables of a service principal (EnvironmentCredential alone) at `entra`.
fn service_principal(entra: &EntraDouble, client_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential".into()),
        ("AZURE_TENANT_ID", TENANT.into()),
        ("AZURE_CLIENT_ID", client_id.into()),
        ("AZURE_CLIENT_SECRET", SECRET.into()),
        ("AZURE_AUTHORITY_HOST", entra.authority()),
    ]
}

fn borrowed<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn az_chain() -> [(&'static str, &'static str); 1] {
    [("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]
}

fn wire_error(result: Result<azbroker_proto::TokenReply, ClientError>) -> String {
    match result {
        Err(ClientError::Daemon(e)) => format!("{e:?}"),
        Err(other) => panic!("expected a daemon error, got {other}"),
        Ok(_) => panic!("expected an error, got a token"),
    }
}

fn status_of(sandbox: &Sandbox) -> Value {
    tokio::task::block_in_place(|| sandbox.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_holds_client_requests_to_one_upstream_call() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    entra.register_client(CLIENT, SECRET);
    // Throttled for good: only the Retry-After keeps requests away.
    entra.throttle_next(1000, 20);
    sandbox.start_daemon();
    let client = sandbox.client(&borrowed(&service_principal(&entra, CLIENT)));

    let first = wire_error(client.get_token(request(0)).await);
    assert!(first.contains("HTTP 429"), "{first}");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = wire_error(client.get_token(request(0)).await);
        // The remaining wait, in seconds, and the failure that set it.
        assert!(held.contains("not retried for another"), "{held}");
        assert!(held.contains("HTTP 429"), "{held}");
        let secs: u64 = held
            .split("not retried for another ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no wait in {held}"));
        assert!((1..=20).contains(&secs), "{held}");
    }
    assert_eq!(
        entra.token_requests(),
        1,
        "requests went upstream during Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_identity_retry_after_holds_client_requests_too() {
    let mut sandbox = Sandbox::new();
    let mi = ManagedIdentityDouble::start();
    // 429 with Retry-After: 7.
    mi.fail_next(&[429, 429, 429, 429]);
    sandbox.start_daemon();
    let vars = [
        ("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential"),
        ("IDENTITY_ENDPOINT", &*mi.app_service_endpoint()),
        ("IDENTITY_HEADER", &*mi.app_service_secret()),
    ];
    let client = sandbox.client(&vars);
    let first = wire_error(client.get_token(request(0)).await);
    assert!(first.contains("HTTP 429"), "{first}");
    for _ in 0..3 {
        let held = wire_error(client.get_token(request(0)).await);
        assert!(held.contains("not retried for another"), "{held}");
    }
    assert_eq!(mi.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_under_the_floor_is_served_stale_while_upstream_fails() {
    let mut sandbox = Sandbox::new();
    // Valid for 303 s: under the 300 s floor 3 s after it is minted.
    sandbox.az.set_lifetime(303);
    sandbox.start_daemon();
    let client = sandbox.client(&az_chain());
    let first = client.get_token(request(0)).await.unwrap();
    assert!(!first.stale);
    // Its refresh point is now: the actor refreshes it once (the miss was a use)...
    let az = &sandbox.az;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "the first refresh", || {
            az.invocations() >= 2
        });
        wait_until(Duration::from_secs(20), "the refresh to land", || {
            sandbox.status()["counters"]["refreshes"] == 1
        });
    });
    // ...and from now on upstream fails.
    sandbox.az.set_mode(Mode::Fail);
    let current = client.get_token(request(60)).await.unwrap();
    let under_floor = current.expires_on - 300 + 1;
    while azbroker_daemon_now() < under_floor {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let stale = client.get_token(request(0)).await.unwrap();
    assert!(stale.stale, "not flagged stale");
    assert!(stale.cached);
    assert_eq!(stale.access_token, current.access_token);
    assert!(sandbox.az.invocations() >= 3, "upstream was not tried");
    let status = status_of(&sandbox);
    let error = status["credentials"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("warning: serving a cached token below its refresh floor"),
        "{status}"
    );
    // A client that asked for more validity than the token has gets the error.
    let refused = wire_error(client.get_token(request(600)).await);
    assert!(refused.contains("AzureCliCredential"), "{refused}");
}

fn azbroker_daemon_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_validity_above_an_hour_is_refused_without_going_upstream() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let client = sandbox.client(&az_chain());
    match client.get_token(request(4000)).await {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
            assert!(e.message.contains("maximum of 3600 s"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(sandbox.az.invocations(), 0);
    client.get_token(request(3600)).await.unwrap();
    assert_eq!(sandbox.az.invocations(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_stop_and_their_number_is_bounded() {
    let mut sandbox = Sandbox::new();
    let entra = EntraDouble::start(&sandbox.pki);
    sandbox.start_daemon_with(&[
        "--imds-endpoint",
        "http://127.0.0.1:1/metadata/identity/oauth2/token",
        "--actor-idle-secs",
        "2",
        "--max-credential-actors",
        "12",
    ]);
    // 20 identities the double does not know: each fails at once (AADSTS700016).
    for n in 0..20 {
        let client_id = format!("00000000-0000-0000-0000-{n:012}");
        let client = sandbox.client(&borrowed(&service_principal(&entra, &client_id)));
        let error = wire_error(client.get_token(request(0)).await);
        assert!(error.contains("AADSTS700016"), "{error}");
        let actors = status_of(&sandbox)["credentials"].as_array().unwrap().len();
        assert!(actors <= 12, "{actors} credential actors, above the bound");
    }
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), "idle actors to stop", || {
            sandbox.status()["credentials"]
                .as_array()
                .unwrap()
                .is_empty()
        })
    });
    // A stopped identity is served again on demand.
    entra.register_client(CLIENT, SECRET);
    let client = sandbox.client(&borrowed(&service_principal(&entra, CLIENT)));
    client.get_token(request(0)).await.unwrap();
    assert_eq!(
        status_of(&sandbox)["credentials"].as_array().unwrap().len(),
        1
    );
    assert!(sandbox.log().contains("stopped idle actors"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidate_during_a_slow_refresh_leaves_the_key_invalidated() {
    let mut sandbox = Sandbox::new();
    // Refresh point 2 s after minting (5 minutes and the 60 s lead before expiry).
    sandbox.az.set_lifetime(362);
    sandbox.start_daemon();
    let client = sandbox.client(&az_chain());
    client.get_token(request(0)).await.unwrap();
    // The refresh's az takes 4 s.
    sandbox.az.set_delay(Duration::from_secs(4));
    let az = &sandbox.az;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "the refresh to start", || {
            az.invocations() >= 2
        })
    });
    assert_eq!(client.invalidate(Vec::new(), Vec::new()).await.unwrap(), 1);
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(20), "the refresh to finish", || {
            sandbox.status()["counters"]["refreshes"] == 1
        })
    });
    let status = status_of(&sandbox);
    assert_eq!(status["cache"].as_array().unwrap().len(), 0, "{status}");
    sandbox.az.set_delay(Duration::ZERO);
    let next = client.get_token(request(0)).await.unwrap();
    assert!(
        !next.cached,
        "the invalidated key came back from the refresh"
    );
    assert_eq!(sandbox.az.invocations(), 3);
}
