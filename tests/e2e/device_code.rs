//! `azbroker login --device-code`: the code is shown in the terminal, the
//! login completes inside the daemon, and every client then uses it.

use crate::login_support::{cli_error, grants, login_sandbox, ARM};

#[test]
fn device_code_login_through_the_cli_serves_later_requests() {
    let (mut sandbox, entra) = login_sandbox();
    entra.set_device_code_interval(1);
    entra.set_device_code_polls(1, 1);
    sandbox.start_daemon();

    let out = sandbox.cli(&["login", "--device-code"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}\n{}", sandbox.log());
    assert!(
        stderr.contains("To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code "),
        "{stderr}"
    );
    assert!(
        stdout.contains("logged in as testuser@contoso.example"),
        "{stdout}"
    );

    // slow_down, then authorization_pending, then the tokens: the daemon waited
    // the interval, and 5 s more after slow_down (RFC 8628).
    let polls = entra.device_code_polls();
    assert_eq!(polls.len(), 3, "{polls:?}");
    assert!(polls[1] - polls[0] >= std::time::Duration::from_secs(6));
    assert!(polls[2] - polls[1] >= std::time::Duration::from_secs(6));

    let token = sandbox.token(ARM, &[]);
    assert_eq!(token["credential"], "InteractiveBrowserCredential");
    assert_eq!(
        grants(&entra),
        [
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:device_code",
            "refresh_token"
        ]
    );
    assert_eq!(entra.authorize_requests(), 0, "no browser login");
}

#[test]
fn an_expired_device_code_fails_the_login_with_the_command_to_retry() {
    let (mut sandbox, entra) = login_sandbox();
    entra.set_device_code_interval(1);
    entra.expire_device_codes();
    sandbox.start_daemon();
    let stderr = cli_error(&sandbox, &["login", "--device-code"]);
    assert!(
        stderr.contains("enter the code"),
        "the code was not shown: {stderr}"
    );
    assert!(stderr.contains("device code expired"), "{stderr}");
    assert!(stderr.contains("azbroker login --device-code"), "{stderr}");
    assert!(stderr.contains("AADSTS70020"), "{stderr}");
}
