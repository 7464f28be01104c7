//! Who is asking, and which scopes they may have.
//!
//! Every connection learns its peer once, at Hello ([`Requester`]): the pid
//! from the socket's peer credentials (never from the Hello), the executable,
//! and the exec grant it runs under ([`grants`]: the nearest ancestor that
//! `azbroker exec --name NAME` registered). A token request is then checked
//! against the rules of that NAME, from the exec's own flags and from the
//! policy file ([`file`]), or against the file's rule for processes under no
//! exec (none: everything allowed). The check runs before the cache is read,
//! so a denial never tells whether a token was cached. With no grant and no
//! default rule (the common case) it is one atomic load.

pub mod file;
pub mod grants;
pub mod rules;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use azbroker_proto::{ErrorKind, WireError};

use self::file::{PolicyFile, MAX_POLICY_BYTES};
use self::grants::{Grant, Grants};
use self::rules::Rules;

/// How often the policy file is looked at for changes, and dead grants swept.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The process behind a connection, as the daemon established it.
#[derive(Debug, Default, Clone)]
pub struct Requester {
    /// From the socket's peer credentials; `None` where there are none
    /// (the managed-identity endpoint's TCP peers).
    pub pid: Option<u32>,
    pub executable: Option<String>,
    /// The exec grant the process runs under, if any.
    pub grant: Option<Arc<Grant>>,
}

impl Requester {
    /// The exec NAME the process runs under.
    pub fn name(&self) -> Option<&str> {
        self.grant.as_ref().map(|grant| grant.name.as_str())
    }
}

/// The policy file as last read, and what went wrong reading it since.
#[derive(Default)]
struct Loaded {
    file: PolicyFile,
    /// The file's modification time and length when read (`None`: absent).
    stamp: Option<(SystemTime, u64)>,
    error: Option<String>,
}

pub struct Policy {
    path: Option<PathBuf>,
    loaded: ArcSwap<Loaded>,
    pub grants: Grants,
}

impl Policy {
    /// A policy read from `path` (`None`: no policy file).
    pub fn new(path: Option<PathBuf>) -> Policy {
        let policy = Policy {
            path,
            loaded: ArcSwap::from_pointee(Loaded::default()),
            grants: Grants::default(),
        };
        policy.reload();
        policy
    }

    /// Who is behind a connection from process `pid`.
    pub fn requester(&self, pid: Option<u32>) -> Requester {
        Requester {
            pid,
            executable: pid.and_then(grants::executable),
            grant: pid.and_then(|pid| self.grants.find(pid)),
        }
    }

    /// Registers `azbroker exec --name NAME`'s rules for its process `pid`.
    pub fn register_exec(
        &self,
        pid: Option<u32>,
        name: &str,
        allow: &[String],
        deny: &[String],
    ) -> Result<(), WireError> {
        let invalid = |e: String| WireError::new(ErrorKind::InvalidRequest, e);
        let pid = pid.ok_or_else(|| invalid("the peer's process id is unknown".into()))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(format!(
                "{name:?} is not an exec name: use 1 to 64 letters, digits, '.', '_' or '-'"
            )));
        }
        let rules =
            Rules::parse(allow, deny, format!("azbroker exec --name {name}")).map_err(invalid)?;
        let grant = Grant {
            name: name.to_string(),
            rules,
        };
        self.grants
            .register(pid, grant)
            .map_err(|e| WireError::new(ErrorKind::Refused, e))
    }

    /// Whether `requester` may have a token for `scopes` (normalized).
    pub fn check(&self, requester: &Requester, scopes: &[String]) -> Result<(), WireError> {
        check_against(&self.loaded.load(), requester, scopes)
    }

    /// [`Policy::check`] for a connection that keeps `memo`: scopes it was
    /// allowed before, under the same version of the policy file, are allowed
    /// again without matching the rules. A connection's requester (its grant
    /// included) is fixed at its Hello, so the file is all that can change.
    pub fn check_remembered(
        &self,
        requester: &Requester,
        scopes: &[String],
        memo: &mut PolicyMemo,
    ) -> Result<(), WireError> {
        let loaded = self.loaded.load_full();
        if !memo
            .loaded
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, &loaded))
        {
            memo.allowed.clear();
            memo.loaded = Some(loaded.clone());
        }
        if memo
            .allowed
            .iter()
            .any(|allowed| allowed.as_slice() == scopes)
        {
            return Ok(());
        }
        check_against(&loaded, requester, scopes)?;
        if memo.allowed.len() == MEMO_ALLOWED {
            memo.allowed.remove(0);
        }
        memo.allowed.push(scopes.to_vec());
        Ok(())
    }

    /// The policy file's last error, if its newest version could not be applied.
    pub fn error(&self) -> Option<String> {
        self.loaded.load().error.clone()
    }

    /// Re-reads the policy file every second when it changed, and sweeps
    /// the grants of ended processes. Runs until the daemon stops.
    pub async fn keep_current(self: Arc<Self>) {
        let mut ticks = 0u32;
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let policy = self.clone();
            let sweep = ticks.is_multiple_of(10);
            let _ = tokio::task::spawn_blocking(move || {
                policy.reload();
                if sweep {
                    policy.grants.sweep();
                }
            })
            .await;
            ticks = ticks.wrapping_add(1);
        }
    }

    /// Reads the policy file if it changed since the last read. A file that
    /// does not parse leaves the previous policy in force.
    fn reload(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let current = self.loaded.load();
        if stamp == current.stamp {
            return;
        }
        let read = match stamp {
            None => Ok(PolicyFile::default()),
            Some(_) => crate::bounded_file::read_blocking(path, MAX_POLICY_BYTES)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
                })
                .and_then(|text| PolicyFile::parse(&text, path)),
        };
        let next = match read {
            Ok(file) => {
                tracing::info!(path = %path.display(), names = file.names.len(), "policy applied");
                Loaded {
                    file,
                    stamp,
                    error: None,
                }
            }
            Err(error) => {
                tracing::error!(%error, "the policy file is not applied; the previous policy stays in force");
                Loaded {
                    file: clone_file(&current.file),
                    stamp,
                    error: Some(error),
                }
            }
        };
        self.loaded.store(Arc::new(next));
    }
}

fn clone_file(file: &PolicyFile) -> PolicyFile {
    PolicyFile {
        default: file.default.clone(),
        names: file.names.clone(),
    }
}

/// What one connection was allowed under one version of the policy file
/// (see [`Policy::check_remembered`]). Owned by the connection's task.
#[derive(Default)]
pub struct PolicyMemo {
    loaded: Option<Arc<Loaded>>,
    allowed: Vec<Vec<String>>,
}

/// Scope lists a [`PolicyMemo`] remembers.
const MEMO_ALLOWED: usize = 4;

fn check_against(
    loaded: &Loaded,
    requester: &Requester,
    scopes: &[String],
) -> Result<(), WireError> {
    let grant = requester.grant.as_deref();
    let from_file = match grant {
        Some(grant) => loaded.file.names.get(&grant.name),
        None => Some(&loaded.file.default),
    };
    let from_flags = grant.map(|grant| &grant.rules);
    let rules = [from_file, from_flags];
    if rules.iter().flatten().all(|r| r.is_empty()) {
        return Ok(());
    }
    for scope in scopes {
        for rules in rules.iter().flatten() {
            if let Some(why) = rules.refuses(scope) {
                let who = match grant {
                    Some(grant) => format!("'{}' (azbroker exec --name)", grant.name),
                    None => "a process under no azbroker exec".to_string(),
                };
                return Err(WireError::new(
                    ErrorKind::Refused,
                    format!("azbroker policy: {who} may not get a token for {scope}: {why}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(scope: &str) -> Vec<String> {
        vec![scope.to_string()]
    }

    #[test]
    fn a_connections_memo_of_what_it_was_allowed_ends_with_the_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[default]\ndeny = [\"https://vault.azure.net/*\"]\n").unwrap();
        let policy = Policy::new(Some(path.clone()));
        let anyone = Requester::default();
        let arm = scopes("https://management.azure.com/.default");
        let vault = scopes("https://vault.azure.net/.default");
        let mut memo = PolicyMemo::default();
        for _ in 0..2 {
            assert!(policy.check_remembered(&anyone, &arm, &mut memo).is_ok());
            // A refusal is never remembered as an allowance.
            let refused = policy.check_remembered(&anyone, &vault, &mut memo);
            assert_eq!(refused.unwrap_err().kind, ErrorKind::Refused);
        }
        assert_eq!(memo.allowed, std::slice::from_ref(&arm));

        // A new version of the file: what was allowed is checked again.
        std::fs::write(
            &path,
            "[default]\ndeny = [\"https://management.azure.com/*\"]\n# a new version\n",
        )
        .unwrap();
        policy.reload();
        let refused = policy.check_remembered(&anyone, &arm, &mut memo);
        assert_eq!(refused.unwrap_err().kind, ErrorKind::Refused);
        assert!(policy.check_remembered(&anyone, &vault, &mut memo).is_ok());
        assert_eq!(memo.allowed, [vault]);
    }

    #[test]
    fn no_file_and_no_grant_allows_everything() {
        let policy = Policy::new(None);
        assert!(policy
            .check(
                &Requester::default(),
                &scopes("https://vault.azure.net/.default")
            )
            .is_ok());
    }

    #[test]
    fn a_named_exec_is_held_to_its_flags_and_its_file_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            "[names.agent]\ndeny = [\"https://graph.microsoft.com/*\"]\n[default]\ndeny = [\"https://vault.azure.net/*\"]\n",
        )
        .unwrap();
        let policy = Policy::new(Some(path.clone()));
        policy
            .register_exec(
                Some(std::process::id()),
                "agent",
                &[
                    "https://storage.azure.com/*".into(),
                    "https://graph.microsoft.com/*".into(),
                ],
                &[],
            )
            .unwrap();
        let agent = policy.requester(Some(std::process::id()));
        assert_eq!(agent.name(), Some("agent"));
        assert!(policy
            .check(&agent, &scopes("https://storage.azure.com/.default"))
            .is_ok());
        let arm = policy
            .check(&agent, &scopes("https://management.azure.com/.default"))
            .unwrap_err();
        assert_eq!(arm.kind, ErrorKind::Refused);
        assert!(
            arm.message.contains("'agent'") && arm.message.contains("azbroker exec --name agent"),
            "{}",
            arm.message
        );
        let graph = policy
            .check(&agent, &scopes("https://graph.microsoft.com/.default"))
            .unwrap_err();
        assert!(graph.message.contains("[names.agent]"), "{}", graph.message);
        // Processes under no exec get the default rule.
        let vault = policy
            .check(
                &Requester::default(),
                &scopes("https://vault.azure.net/.default"),
            )
            .unwrap_err();
        assert!(
            vault.message.contains("a process under no azbroker exec"),
            "{}",
            vault.message
        );

        // A broken file is not half-applied: the previous policy stays.
        std::fs::write(
            &path,
            "[default]\ndeny = [\"nonsense\"]\n# longer than before\n",
        )
        .unwrap();
        policy.reload();
        assert!(policy.error().unwrap().contains("nonsense"));
        assert!(policy
            .check(
                &Requester::default(),
                &scopes("https://vault.azure.net/.default")
            )
            .is_err());
        std::fs::remove_file(&path).unwrap();
        policy.reload();
        assert_eq!(policy.error(), None);
        assert!(policy
            .check(
                &Requester::default(),
                &scopes("https://vault.azure.net/.default")
            )
            .is_ok());
    }

    #[test]
    fn exec_names_are_checked() {
        let policy = Policy::new(None);
        for bad in ["", "a b", "x\n", &"n".repeat(65)] {
            assert!(
                policy.register_exec(Some(1), bad, &[], &[]).is_err(),
                "{bad:?}"
            );
        }
    }
}
