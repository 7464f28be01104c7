//! Figure 10: figures 1 and 2 (cached p50, throughput at 64 connections)
//! with a scope policy in force and every request audited under an exec NAME:
//! a daemon of its own reads a `policy.toml` with rules for the NAME and for
//! processes under none, and this process registers itself under the NAME as
//! `azbroker exec --name` does, so each request is matched against the
//! NAME's rules and recorded with it. Before measuring, the run checks the
//! policy bites (a Key Vault token is refused) and the audit records the NAME.

use azbroker_client::ClientError;
use azbroker_proto::{AuditQuery, ErrorKind, RegisterExec};

use super::cached::{self, Cached};
use super::concurrency::{self, Level};
use super::{token_request, Ctx, ARM};

/// The NAME this process asks under.
pub const NAME: &str = "bench-agent";
const POLICY: &str = r#"[default]
deny = ["https://vault.azure.net/*", "https://graph.microsoft.com/*"]

[names.bench-agent]
allow = ["https://management.azure.com/*", "https://storage.azure.com/*"]
deny = ["https://vault.azure.net/*"]
"#;

pub struct Policed {
    pub cached: Cached,
    pub level64: Level,
    /// Requests the audit recorded under [`NAME`] in the checks before measuring.
    pub audited_before: usize,
}

pub async fn run(ctx: &Ctx) -> Result<Policed, String> {
    let config = ctx.sandbox.dir.path().join("policed-config");
    let policy = config.join("azbroker").join("policy.toml");
    std::fs::create_dir_all(policy.parent().expect("a parent"))
        .and_then(|()| std::fs::write(&policy, POLICY))
        .map_err(|e| format!("{}: {e}", policy.display()))?;
    let daemon = ctx
        .sandbox
        .start_daemon_env("policed", &[], &[("XDG_CONFIG_HOME", &config)])?;

    daemon
        .client(&ctx.chain)
        .register_exec(RegisterExec {
            name: NAME.into(),
            allow_scopes: vec!["https://management.azure.com/*".into()],
            deny_scopes: vec!["https://graph.microsoft.com/*".into()],
        })
        .await
        .map_err(|e| format!("registering as {NAME}: {e}"))?;
    // A connection learns who is asking at its Hello: connections from now on
    // are under NAME (as COMMAND's are once `azbroker exec` has become it).
    let client = daemon.client(&ctx.chain);
    match client
        .get_token(token_request("https://vault.azure.net/.default"))
        .await
    {
        Err(ClientError::Daemon(e)) if e.kind == ErrorKind::Refused => {}
        other => {
            return Err(format!(
                "the policy did not refuse Key Vault to {NAME}: {other:?}"
            ))
        }
    }
    client
        .get_token(token_request(ARM))
        .await
        .map_err(|e| format!("first token under {NAME}: {e} {}", daemon.log_tail()))?;
    // The first lines are written by the time a query reads them back.
    let mut audited_before = 0;
    for _ in 0..100 {
        let page = client
            .audit(AuditQuery {
                after_seq: 0,
                since_ms: None,
                name: Some(NAME.into()),
                limit: 0,
            })
            .await
            .map_err(|e| format!("audit: {e}"))?;
        audited_before = page.records.len();
        if audited_before >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if audited_before < 2 {
        return Err(format!(
            "the audit recorded {audited_before} requests under {NAME}, not the denial and the token"
        ));
    }

    let cached = cached::run_against(ctx, &daemon).await?;
    let level64 = concurrency::level(ctx, &daemon, 64).await?;
    Ok(Policed {
        cached,
        level64,
        audited_before,
    })
}
