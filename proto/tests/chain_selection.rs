//! The chain-selection table of `docs/spec/authentication.md` ("The chain"), row by row.

use azbroker_proto::chain::{ChainError, ChainSpec, CredentialKind, CredentialSpec};
use azbroker_proto::CredentialKind::*;

fn select(vars: &[(&str, &str)]) -> Result<ChainSpec, ChainError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ChainSpec::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

fn kinds(vars: &[(&str, &str)]) -> Vec<CredentialKind> {
    select(vars).unwrap().kinds().collect()
}

#[test]
fn default_order() {
    assert_eq!(
        kinds(&[]),
        [
            Environment,
            VisualStudio,
            AzureCli,
            AzurePowerShell,
            AzureDeveloperCli,
            InteractiveBrowser
        ]
    );
}

#[test]
fn include_production_credentials_adds_workload_and_managed_identity() {
    for value in ["true", "TRUE", "1", "True"] {
        assert_eq!(
            kinds(&[("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS", value)]),
            [
                Environment,
                WorkloadIdentity,
                ManagedIdentity,
                VisualStudio,
                AzureCli,
                AzurePowerShell,
                AzureDeveloperCli,
                InteractiveBrowser
            ],
            "value {value}"
        );
    }
    for value in ["false", "0", "", "FALSE"] {
        assert_eq!(
            kinds(&[("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS", value)]),
            kinds(&[]),
            "value {value:?}"
        );
    }
}

#[test]
fn only_broker_credential_wins_over_everything() {
    let chain = select(&[
        ("AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL", "true"),
        ("AZURE_TOKEN_CREDENTIALS", "prod"),
        ("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS", "true"),
    ])
    .unwrap();
    assert_eq!(chain.credentials.len(), 1);
    assert!(matches!(
        chain.credentials[0],
        CredentialSpec::InteractiveBrowser {
            use_broker: true,
            ..
        }
    ));
}

#[test]
fn token_credentials_dev_and_prod() {
    assert_eq!(
        kinds(&[("AZURE_TOKEN_CREDENTIALS", "dev")]),
        [
            VisualStudio,
            AzureCli,
            AzurePowerShell,
            AzureDeveloperCli,
            InteractiveBrowser
        ]
    );
    assert_eq!(
        kinds(&[("AZURE_TOKEN_CREDENTIALS", "Prod")]),
        [Environment, WorkloadIdentity, ManagedIdentity]
    );
    // AZURE_TOKEN_CREDENTIALS outranks the production switch.
    assert_eq!(
        kinds(&[
            ("AZURE_TOKEN_CREDENTIALS", "dev"),
            ("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS", "true")
        ]),
        [
            VisualStudio,
            AzureCli,
            AzurePowerShell,
            AzureDeveloperCli,
            InteractiveBrowser
        ]
    );
}

#[test]
fn token_credentials_single_name_any_case() {
    let cases = [
        ("EnvironmentCredential", Environment),
        ("workloadidentitycredential", WorkloadIdentity),
        ("ManagedIdentityCredential", ManagedIdentity),
        ("VisualStudioCredential", VisualStudio),
        ("AZURECLICREDENTIAL", AzureCli),
        ("AzurePowerShellCredential", AzurePowerShell),
        ("AzureDeveloperCliCredential", AzureDeveloperCli),
        ("InteractiveBrowserCredential", InteractiveBrowser),
    ];
    for (value, kind) in cases {
        assert_eq!(
            kinds(&[("AZURE_TOKEN_CREDENTIALS", value)]),
            [kind],
            "{value}"
        );
    }
}

#[test]
fn unknown_token_credentials_is_an_error_listing_valid_values() {
    let err = select(&[("AZURE_TOKEN_CREDENTIALS", "AzureCliCredentail")]).unwrap_err();
    assert_eq!(
        err,
        ChainError::UnknownCredential {
            value: "AzureCliCredentail".into()
        }
    );
    let text = err.to_string();
    for expected in [
        "dev",
        "prod",
        "AzureCliCredential",
        "ManagedIdentityCredential",
    ] {
        assert!(text.contains(expected), "{text}");
    }
    // Device code is never selectable implicitly.
    assert!(select(&[("AZURE_TOKEN_CREDENTIALS", "DeviceCodeCredential")]).is_err());
}

#[test]
fn invalid_booleans_name_the_variable() {
    for var in [
        "AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL",
        "AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS",
    ] {
        let err = select(&[(var, "yes")]).unwrap_err();
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn environment_settings_are_read() {
    let chain = select(&[
        ("AZURE_TENANT_ID", "t"),
        ("AZURE_CLIENT_ID", "c"),
        ("AZURE_CLIENT_SECRET", "s"),
        ("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS", "42"),
    ])
    .unwrap();
    match &chain.credentials[0] {
        CredentialSpec::Environment {
            tenant_id,
            client_id,
            client_secret,
            certificate_path,
            ..
        } => {
            assert_eq!(tenant_id.as_deref(), Some("t"));
            assert_eq!(client_id.as_deref(), Some("c"));
            assert_eq!(client_secret.as_ref().map(|s| s.expose()), Some("s"));
            assert_eq!(certificate_path, &None);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        chain.credentials.last(),
        Some(CredentialSpec::InteractiveBrowser {
            timeout_secs: 42,
            use_broker: false,
            ..
        })
    ));
    assert!(select(&[("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS", "soon")]).is_err());
}

#[test]
fn empty_variables_count_as_unset() {
    let chain = select(&[("AZURE_CLIENT_SECRET", ""), ("AZURE_TOKEN_CREDENTIALS", "")]).unwrap();
    assert_eq!(chain.kinds().collect::<Vec<_>>(), kinds(&[]));
    assert!(matches!(
        &chain.credentials[0],
        CredentialSpec::Environment {
            client_secret: None,
            ..
        }
    ));
}

#[test]
fn authority_follows_cloud_and_override() {
    assert_eq!(
        select(&[]).unwrap().authority_host,
        "https://login.microsoftonline.com"
    );
    assert_eq!(
        select(&[("AZURE_CLOUD", "AzureChinaCloud")])
            .unwrap()
            .authority_host,
        "https://login.chinacloudapi.cn"
    );
    assert_eq!(
        select(&[("AZURE_CLOUD", "USGov")]).unwrap().authority_host,
        "https://login.microsoftonline.us"
    );
    assert_eq!(
        select(&[("AZURE_AUTHORITY_HOST", "https://127.0.0.1:8443/")])
            .unwrap()
            .authority_host,
        "https://127.0.0.1:8443"
    );
    assert!(select(&[("AZURE_AUTHORITY_HOST", "http://127.0.0.1:8080")]).is_err());
    assert!(select(&[("AZURE_CLOUD", "Mars")]).is_err());
}
