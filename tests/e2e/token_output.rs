//! What `azbroker token` prints about a token beside the token itself.

use azbroker_e2e::fake_tool::DEFAULT_TENANT;

use crate::harness::Sandbox;

const ARM: &str = "https://management.azure.com/.default";

/// `az` and `azd` answer without a tenant when none was asked for; the
/// token's `tid` claim says which tenant issued it.
#[test]
fn tool_tokens_name_their_tenant_when_none_was_asked_for() {
    let mut sandbox = Sandbox::new();
    sandbox.start_daemon();
    let az = sandbox.token(ARM, &[]);
    assert_eq!(az["credential"], "AzureCliCredential");
    assert_eq!(az["tenant"], DEFAULT_TENANT);

    let mut sandbox = Sandbox::new();
    sandbox.install_azd();
    sandbox.set("AZURE_TOKEN_CREDENTIALS", "AzureDeveloperCliCredential");
    sandbox.start_daemon();
    let azd = sandbox.token(ARM, &[]);
    assert_eq!(azd["credential"], "AzureDeveloperCliCredential");
    assert_eq!(azd["tenant"], DEFAULT_TENANT);
}
