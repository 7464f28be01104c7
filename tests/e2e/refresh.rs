//! Proactive refresh: tokens living just over 6 minutes reach their refresh
//! point (5 minutes before expiry, less the daemon's 60 s refresh lead) 10 s
//! after they are minted.

use std::time::Duration;

use azbroker_e2e::Mode;
use azbroker_proto::GetToken;

use crate::harness::{wait_until, Sandbox};

const ARM: &str = "https://management.azure.com/.default";

fn request(min_validity_secs: u32) -> GetToken {
    GetToken {
        scopes: vec![ARM.into()],
        tenant: None,
        claims: None,
        min_validity_secs,
    }
}

fn dev_chain() -> [(&'static str, &'static str); 1] {
    [("AZURE_TOKEN_CREDENTIALS", "AzureCliCredential")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_expiry_without_a_client_waiting() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_lifetime(370);
    sandbox.start_daemon();
    let client = sandbox.client(&dev_chain());

    let first = client.get_token(request(0)).await.unwrap();
    assert!(!first.cached);
    assert_eq!(first.refresh_on, first.expires_on - 360);
    // A hit: the key is in use, so it is worth refreshing.
    assert!(client.get_token(request(0)).await.unwrap().cached);

    let az = &sandbox.az;
    wait_until(Duration::from_secs(30), "the refresh to run az", || {
        az.invocations() >= 2
    });
    let status = tokio::task::block_in_place(|| {
        let mut status = sandbox.status();
        wait_until(
            Duration::from_secs(10),
            "the refreshed token in the cache",
            || {
                status = sandbox.status();
                status["counters"]["refreshes"] == 1
            },
        );
        status
    });
    assert_eq!(status["counters"]["refresh_failures"], 0);

    // Past the old token's refresh point, the client gets the new token at once, from the cache.
    let second = client.get_token(request(0)).await.unwrap();
    assert!(second.cached, "the client had to wait for an acquisition");
    assert_ne!(second.access_token, first.access_token);
    assert!(second.expires_on > first.expires_on);
    assert_eq!(sandbox.az.invocations(), 2);
    // Hits carry over to the successor.
    assert_eq!(status["cache"][0]["hits"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_serving_the_valid_token() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_lifetime(370);
    sandbox.start_daemon();
    let client = sandbox.client(&dev_chain());

    let first = client.get_token(request(0)).await.unwrap();
    assert!(client.get_token(request(0)).await.unwrap().cached);
    sandbox.az.set_mode(Mode::Fail);

    let az = &sandbox.az;
    wait_until(Duration::from_secs(30), "the refresh attempt", || {
        az.invocations() >= 2
    });
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(10),
            "the failure to be recorded",
            || sandbox.status()["counters"]["refresh_failures"] == 1,
        )
    });

    // The old token still has ~6 minutes: a client content with 60 s of validity gets it from the cache.
    let kept = client.get_token(request(60)).await.unwrap();
    assert!(kept.cached);
    assert_eq!(kept.access_token, first.access_token);
    // The retry waits at least 30 s: nothing else ran az.
    assert_eq!(sandbox.az.invocations(), 2);
    let status = tokio::task::block_in_place(|| sandbox.status());
    let cli = &status["credentials"][0];
    assert_eq!(cli["state"], "failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keys_are_not_refreshed() {
    let mut sandbox = Sandbox::new();
    sandbox.az.set_lifetime(365);
    sandbox.start_daemon();
    let client = sandbox.client(&dev_chain());
    client.get_token(request(0)).await.unwrap();
    // Refresh point at +5 s; the miss itself counts as a use, so one refresh happens...
    let az = &sandbox.az;
    wait_until(Duration::from_secs(30), "the first refresh", || {
        az.invocations() >= 2
    });
    // ...and the successor, never asked for, is not refreshed again at its own refresh point.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sandbox.az.invocations(), 2);
}
