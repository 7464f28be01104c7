//! The chain spec: which credentials a client's environment selects, in order,
//! with the settings each one reads from that environment.
//!
//! Selection follows the Azure MCP Server's rules (default order, the
//! `AZURE_MCP_*` switches and `AZURE_TOKEN_CREDENTIALS`). It is a pure function
//! of an environment lookup so every row of the selection table is testable.

use serde::{Deserialize, Serialize};

use crate::cloud;
use crate::env::{EnvError, Vars};
use crate::secret::Secret;
use crate::tool::{Tool, ToolSpec};

/// Default browser-login timeout (`AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS`).
pub const DEFAULT_BROWSER_TIMEOUT_SECS: u32 = 300;

/// An ordered list of credentials; the first that yields a token wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSpec {
    /// Authority host, e.g. `https://login.microsoftonline.com` (no trailing slash).
    pub authority_host: String,
    pub credentials: Vec<CredentialSpec>,
    /// One line on why this chain was selected, for status and diagnostics.
    pub selected_by: String,
    /// Whether a credential may ask the user (open a browser) for this
    /// client. `false` for the standard doors (the `az` shim, the
    /// managed-identity endpoint): what they stand for never prompts, so they
    /// are served from logins that exist or fail fast. Not part of any
    /// identity: it changes how a token may be had, not whose it is.
    pub interactive: bool,
}

/// The credential kinds of the chain, in default order. Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CredentialKind {
    Environment,
    WorkloadIdentity,
    ManagedIdentity,
    VisualStudio,
    AzureCli,
    AzurePowerShell,
    AzureDeveloperCli,
    InteractiveBrowser,
    DeviceCode,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 9] = [
        CredentialKind::Environment,
        CredentialKind::WorkloadIdentity,
        CredentialKind::ManagedIdentity,
        CredentialKind::VisualStudio,
        CredentialKind::AzureCli,
        CredentialKind::AzurePowerShell,
        CredentialKind::AzureDeveloperCli,
        CredentialKind::InteractiveBrowser,
        CredentialKind::DeviceCode,
    ];

    /// The Azure.Identity class name, as `AZURE_TOKEN_CREDENTIALS` spells it.
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Environment => "EnvironmentCredential",
            CredentialKind::WorkloadIdentity => "WorkloadIdentityCredential",
            CredentialKind::ManagedIdentity => "ManagedIdentityCredential",
            CredentialKind::VisualStudio => "VisualStudioCredential",
            CredentialKind::AzureCli => "AzureCliCredential",
            CredentialKind::AzurePowerShell => "AzurePowerShellCredential",
            CredentialKind::AzureDeveloperCli => "AzureDeveloperCliCredential",
            CredentialKind::InteractiveBrowser => "InteractiveBrowserCredential",
            CredentialKind::DeviceCode => "DeviceCodeCredential",
        }
    }

    fn from_name(name: &str) -> Option<CredentialKind> {
        CredentialKind::ALL
            .into_iter()
            // DeviceCode is never selected implicitly: it needs a terminal.
            .filter(|kind| *kind != CredentialKind::DeviceCode)
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One credential with the settings it read from the client's environment.
/// Missing settings are kept as `None`: the daemon reports them as the reason
/// the credential is unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialSpec {
    Environment {
        tenant_id: Option<String>,
        client_id: Option<String>,
        client_secret: Option<Secret>,
        certificate_path: Option<String>,
        certificate_password: Option<Secret>,
    },
    WorkloadIdentity {
        tenant_id: Option<String>,
        client_id: Option<String>,
        token_file: Option<String>,
    },
    ManagedIdentity {
        /// User-assigned identity; `None` for system-assigned.
        client_id: Option<String>,
        /// App Service style endpoint (`IDENTITY_ENDPOINT`) and its secret header.
        endpoint: Option<String>,
        header: Option<Secret>,
    },
    VisualStudio,
    /// The tools act as whoever is logged in to them in the requester's profile.
    AzureCli(ToolSpec),
    AzurePowerShell(ToolSpec),
    AzureDeveloperCli(ToolSpec),
    InteractiveBrowser {
        client_id: Option<String>,
        tenant_id: Option<String>,
        timeout_secs: u32,
        /// Use the OS broker (WAM) where one exists.
        use_broker: bool,
    },
    DeviceCode {
        client_id: Option<String>,
        tenant_id: Option<String>,
    },
}

impl CredentialSpec {
    /// The tool and its spec, for the tool credentials.
    pub fn tool(&self) -> Option<(Tool, &ToolSpec)> {
        match self {
            CredentialSpec::AzureCli(spec) => Some((Tool::AzureCli, spec)),
            CredentialSpec::AzurePowerShell(spec) => Some((Tool::AzurePowerShell, spec)),
            CredentialSpec::AzureDeveloperCli(spec) => Some((Tool::AzureDeveloperCli, spec)),
            _ => None,
        }
    }

    pub fn kind(&self) -> CredentialKind {
        match self {
            CredentialSpec::Environment { .. } => CredentialKind::Environment,
            CredentialSpec::WorkloadIdentity { .. } => CredentialKind::WorkloadIdentity,
            CredentialSpec::ManagedIdentity { .. } => CredentialKind::ManagedIdentity,
            CredentialSpec::VisualStudio => CredentialKind::VisualStudio,
            CredentialSpec::AzureCli(_) => CredentialKind::AzureCli,
            CredentialSpec::AzurePowerShell(_) => CredentialKind::AzurePowerShell,
            CredentialSpec::AzureDeveloperCli(_) => CredentialKind::AzureDeveloperCli,
            CredentialSpec::InteractiveBrowser { .. } => CredentialKind::InteractiveBrowser,
            CredentialSpec::DeviceCode { .. } => CredentialKind::DeviceCode,
        }
    }

    /// Builds the spec of `kind` from the environment.
    fn from_env(
        kind: CredentialKind,
        env: &Vars<'_>,
        use_broker: bool,
    ) -> Result<Self, ChainError> {
        Ok(match kind {
            CredentialKind::Environment => CredentialSpec::Environment {
                tenant_id: env.text("AZURE_TENANT_ID"),
                client_id: env.text("AZURE_CLIENT_ID"),
                client_secret: env.text("AZURE_CLIENT_SECRET").map(Secret::from),
                certificate_path: env.text("AZURE_CLIENT_CERTIFICATE_PATH"),
                certificate_password: env
                    .text("AZURE_CLIENT_CERTIFICATE_PASSWORD")
                    .map(Secret::from),
            },
            CredentialKind::WorkloadIdentity => CredentialSpec::WorkloadIdentity {
                tenant_id: env.text("AZURE_TENANT_ID"),
                client_id: env.text("AZURE_CLIENT_ID"),
                token_file: env.text("AZURE_FEDERATED_TOKEN_FILE"),
            },
            CredentialKind::ManagedIdentity => CredentialSpec::ManagedIdentity {
                client_id: env.text("AZURE_CLIENT_ID"),
                endpoint: env.text("IDENTITY_ENDPOINT"),
                header: env.text("IDENTITY_HEADER").map(Secret::from),
            },
            CredentialKind::VisualStudio => CredentialSpec::VisualStudio,
            CredentialKind::AzureCli => {
                CredentialSpec::AzureCli(ToolSpec::from_lookup(Tool::AzureCli, env.lookup()))
            }
            CredentialKind::AzurePowerShell => CredentialSpec::AzurePowerShell(
                ToolSpec::from_lookup(Tool::AzurePowerShell, env.lookup()),
            ),
            CredentialKind::AzureDeveloperCli => CredentialSpec::AzureDeveloperCli(
                ToolSpec::from_lookup(Tool::AzureDeveloperCli, env.lookup()),
            ),
            CredentialKind::InteractiveBrowser => CredentialSpec::InteractiveBrowser {
                client_id: env.text("AZURE_MCP_CLIENT_ID"),
                tenant_id: env.text("AZURE_TENANT_ID"),
                timeout_secs: env
                    .seconds("AZURE_MCP_BROWSER_AUTH_TIMEOUT_SECONDS")?
                    .unwrap_or(DEFAULT_BROWSER_TIMEOUT_SECS),
                use_broker,
            },
            CredentialKind::DeviceCode => CredentialSpec::DeviceCode {
                client_id: env.text("AZURE_MCP_CLIENT_ID"),
                tenant_id: env.text("AZURE_TENANT_ID"),
            },
        })
    }
}

/// A setting in the environment that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// A variable holds an unusable value (a boolean that is not one, a bad
    /// cloud name or authority host, ...).
    Env(EnvError),
    /// `AZURE_TOKEN_CREDENTIALS` names no known credential.
    UnknownCredential { value: String },
}

impl From<EnvError> for ChainError {
    fn from(error: EnvError) -> Self {
        ChainError::Env(error)
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Env(error) => error.fmt(f),
            ChainError::UnknownCredential { value } => {
                write!(
                    f,
                    "AZURE_TOKEN_CREDENTIALS={value:?} is not valid: use 'dev', 'prod' or one of "
                )?;
                let names: Vec<&str> = CredentialKind::ALL
                    .iter()
                    .filter(|k| **k != CredentialKind::DeviceCode)
                    .map(|k| k.name())
                    .collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

impl std::error::Error for ChainError {}

impl ChainSpec {
    /// Selects the chain from this process's environment.
    pub fn from_env() -> Result<ChainSpec, ChainError> {
        ChainSpec::from_lookup(|name| std::env::var(name).ok())
    }

    /// Selects the chain from any variable lookup. Precedence, highest first:
    /// `AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL`, `AZURE_TOKEN_CREDENTIALS`,
    /// `AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS`, then the default order.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ChainSpec, ChainError> {
        use CredentialKind::*;
        let env = Vars::new(&lookup);
        let authority_host = authority_host(&env)?;
        let only_broker = env.boolean("AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL")?;
        let include_production = env.boolean("AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS")?;
        let token_credentials = env.text("AZURE_TOKEN_CREDENTIALS");

        let (kinds, selected_by): (Vec<CredentialKind>, String) = if only_broker {
            (
                vec![InteractiveBrowser],
                "AZURE_MCP_ONLY_USE_BROKER_CREDENTIAL=true".into(),
            )
        } else if let Some(value) = token_credentials {
            let value = value.trim();
            let kinds = match value.to_ascii_lowercase().as_str() {
                "dev" => vec![
                    VisualStudio,
                    AzureCli,
                    AzurePowerShell,
                    AzureDeveloperCli,
                    InteractiveBrowser,
                ],
                "prod" => vec![Environment, WorkloadIdentity, ManagedIdentity],
                _ => vec![CredentialKind::from_name(value).ok_or_else(|| {
                    ChainError::UnknownCredential {
                        value: value.to_string(),
                    }
                })?],
            };
            (kinds, format!("AZURE_TOKEN_CREDENTIALS={value}"))
        } else if include_production {
            (
                vec![
                    Environment,
                    WorkloadIdentity,
                    ManagedIdentity,
                    VisualStudio,
                    AzureCli,
                    AzurePowerShell,
                    AzureDeveloperCli,
                    InteractiveBrowser,
                ],
                "default order with AZURE_MCP_INCLUDE_PRODUCTION_CREDENTIALS=true".into(),
            )
        } else {
            (
                vec![
                    Environment,
                    VisualStudio,
                    AzureCli,
                    AzurePowerShell,
                    AzureDeveloperCli,
                    InteractiveBrowser,
                ],
                "default order".into(),
            )
        };

        let credentials = kinds
            .into_iter()
            .map(|kind| CredentialSpec::from_env(kind, &env, only_broker))
            .collect::<Result<_, _>>()?;
        Ok(ChainSpec {
            authority_host,
            credentials,
            selected_by,
            interactive: true,
        })
    }

    pub fn kinds(&self) -> impl Iterator<Item = CredentialKind> + '_ {
        self.credentials.iter().map(CredentialSpec::kind)
    }
}

fn authority_host(env: &Vars<'_>) -> Result<String, ChainError> {
    if let Some(host) = env.text("AZURE_AUTHORITY_HOST") {
        if !host.starts_with("https://") {
            return Err(EnvError {
                variable: "AZURE_AUTHORITY_HOST",
                why: format!("{host:?} must be an https:// URL"),
            }
            .into());
        }
        return Ok(host.trim_end_matches('/').to_string());
    }
    Ok(cloud::from_vars(env)?.authority_url())
}
