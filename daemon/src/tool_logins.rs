//! Notices when a tool credential's login changes (`az login` as someone
//! else, `az logout`, `az account set`, `azd auth login`, `Connect-AzAccount`)
//! and names the credentials whose tokens are no longer theirs.
//!
//! Each tool keeps its login in files of its profile directory; the daemon
//! watches those directories (through `notify`: inotify, FSEvents,
//! ReadDirectoryChangesW) and reports the credentials defined there as soon as
//! one of those files changes, so the broker drops their tokens within a
//! moment instead of serving the old account's until the refresh point. A
//! profile directory that does not exist yet (nobody logged in there) is
//! watched through its parent until it appears.
//!
//! Watches are few (one per profile directory, shared by every credential of
//! that profile) and capped, so a client naming thousands of directories
//! cannot exhaust the user's inotify watches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use azbroker_proto::Tool;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::identity::CredentialId;

/// At most this many directories are watched.
pub const MAX_WATCHED_DIRS: usize = 64;

/// The files whose change means another login, per tool (relative to the
/// profile directory; a name ending in `/` is a directory, any change inside
/// counts).
fn login_files(tool: Tool) -> &'static [&'static str] {
    match tool {
        // The account list and default subscription, the MSAL token cache,
        // service principal logins, the chosen cloud.
        Tool::AzureCli => &[
            "azureProfile.json",
            "msal_token_cache.json",
            "msal_token_cache.bin",
            "service_principal_entries.json",
            "service_principal_entries.bin",
            "clouds.config",
        ],
        // azd's config (current user) and its auth directory (token cache).
        Tool::AzureDeveloperCli => &["config.json", "auth/"],
        // Az.Accounts' saved contexts.
        Tool::AzurePowerShell => &["AzureRmContext.json", "AzureRmContextSettings.json"],
    }
}

/// What one profile directory's watch is for.
struct Profile {
    tool: Tool,
    credentials: Vec<CredentialId>,
    /// Watching the directory itself (else its parent, until it appears).
    watching_itself: bool,
}

struct State {
    watcher: Option<notify::RecommendedWatcher>,
    profiles: HashMap<PathBuf, Profile>,
}

/// The watches of every tool credential's login.
pub struct ToolLogins {
    state: Arc<Mutex<State>>,
}

/// Changed credentials, as the watcher reports them.
pub type Changes = mpsc::Receiver<Vec<CredentialId>>;

impl ToolLogins {
    /// Starts the watcher (watching nothing yet) and the task that turns its
    /// events into the credentials whose login changed. Call on a runtime.
    pub fn start() -> (Arc<ToolLogins>, Changes) {
        let (events, mut raw) = mpsc::channel::<notify::Event>(EVENT_QUEUE);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // notify's own thread: waiting here only slows the watcher down.
            if let Ok(event) = event {
                let _ = events.blocking_send(event);
            }
        });
        let watcher = watcher
            .map_err(|e| tracing::warn!(error = %e, "cannot watch the tools' logins: after 'az login' as someone else, run 'azbroker invalidate'"))
            .ok();
        let state = Arc::new(Mutex::new(State {
            watcher,
            profiles: HashMap::new(),
        }));
        let (changed, changes) = mpsc::channel(EVENT_QUEUE);
        let task_state = state.clone();
        tokio::spawn(async move {
            while let Some(event) = raw.recv().await {
                let mut ids = lock(&task_state).changed(&event);
                // One login writes several files: report them as one change.
                while let Ok(event) = raw.try_recv() {
                    ids.extend(lock(&task_state).changed(&event));
                }
                ids.sort();
                ids.dedup();
                if !ids.is_empty() && changed.send(ids).await.is_err() {
                    return;
                }
            }
        });
        (Arc::new(ToolLogins { state }), changes)
    }

    /// Watches the login of `id`, a `tool` credential whose profile is `profile_dir`.
    pub fn watch(&self, id: &CredentialId, tool: Tool, profile_dir: &Path) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some(profile) = state.profiles.get_mut(profile_dir) {
            if !profile.credentials.contains(id) {
                profile.credentials.push(id.clone());
            }
            return;
        }
        if state.profiles.len() >= MAX_WATCHED_DIRS {
            tracing::warn!(profile = %profile_dir.display(), "too many tool profiles to watch; this one's login changes are not noticed ('azbroker invalidate' drops its tokens)");
            return;
        }
        let Some(watcher) = state.watcher.as_mut() else {
            return;
        };
        let watching_itself = if watcher.watch(profile_dir, mode(tool)).is_ok() {
            true
        } else {
            // Not there yet: watch the parent until it appears.
            let parent = profile_dir.parent().filter(|p| p.is_dir());
            match parent.map(|p| watcher.watch(p, RecursiveMode::NonRecursive)) {
                Some(Ok(())) => false,
                _ => {
                    tracing::debug!(profile = %profile_dir.display(), "neither the tool profile nor its parent can be watched");
                    return;
                }
            }
        };
        tracing::debug!(profile = %profile_dir.display(), credential = %id, watching_itself, "watching a tool login");
        state.profiles.insert(
            profile_dir.to_path_buf(),
            Profile {
                tool,
                credentials: vec![id.clone()],
                watching_itself,
            },
        );
    }
}

/// Events waiting to be read; the watcher's thread waits when it is full.
const EVENT_QUEUE: usize = 256;

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // The state stays consistent between statements: a panic elsewhere does not taint it.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    fn changed(&mut self, event: &notify::Event) -> Vec<CredentialId> {
        if matches!(event.kind, EventKind::Access(_)) {
            return Vec::new();
        }
        let removed = matches!(event.kind, EventKind::Remove(_));
        let mut changed = Vec::new();
        let (mut appeared, mut vanished) = (Vec::new(), Vec::new());
        for path in &event.paths {
            for (dir, profile) in &self.profiles {
                let hit = if path == dir {
                    // The directory itself: it appeared (its parent is
                    // watched) or went away (then its watch went with it).
                    if profile.watching_itself && removed {
                        vanished.push(dir.clone());
                    } else if !profile.watching_itself {
                        appeared.push(dir.clone());
                    }
                    true
                } else {
                    profile.watching_itself
                        && path
                            .strip_prefix(dir)
                            .is_ok_and(|inside| is_login_file(profile.tool, inside))
                };
                if hit {
                    changed.extend(profile.credentials.iter().cloned());
                }
            }
        }
        for dir in appeared {
            self.rewatch(&dir);
        }
        for dir in vanished {
            self.watch_parent_of(&dir);
        }
        changed
    }

    /// Watches the parent of `dir`, which is gone, until it comes back.
    fn watch_parent_of(&mut self, dir: &Path) {
        let (Some(watcher), Some(parent)) = (self.watcher.as_mut(), dir.parent()) else {
            return;
        };
        if let Some(profile) = self.profiles.get_mut(dir) {
            profile.watching_itself = false;
            let _ = watcher.watch(parent, RecursiveMode::NonRecursive);
        }
    }

    /// Watches `dir` itself now that it exists (and no longer its parent).
    fn rewatch(&mut self, dir: &Path) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let Some(profile) = self.profiles.get_mut(dir) else {
            return;
        };
        if watcher.watch(dir, mode(profile.tool)).is_ok() {
            profile.watching_itself = true;
            if let Some(parent) = dir.parent() {
                let parent_still_needed = self
                    .profiles
                    .iter()
                    .any(|(d, p)| !p.watching_itself && d.parent() == Some(parent));
                if !parent_still_needed {
                    let _ = watcher.unwatch(parent);
                }
            }
        }
    }
}

fn mode(tool: Tool) -> RecursiveMode {
    match tool {
        Tool::AzureDeveloperCli => RecursiveMode::Recursive,
        Tool::AzureCli | Tool::AzurePowerShell => RecursiveMode::NonRecursive,
    }
}

/// Whether `inside` (a path relative to the profile directory) is one of the
/// files that define `tool`'s login.
fn is_login_file(tool: Tool, inside: &Path) -> bool {
    login_files(tool)
        .iter()
        .any(|name| match name.strip_suffix('/') {
            Some(dir) => inside.starts_with(dir) && inside != Path::new(dir),
            None => inside == Path::new(name),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use azbroker_proto::{CredentialSpec, ToolSpec};
    use std::time::Duration;

    fn az(profile: &Path) -> CredentialId {
        CredentialId::of(
            &CredentialSpec::AzureCli(ToolSpec {
                executable: Some("/usr/bin/az".into()),
                profile_dir: Some(profile.to_string_lossy().into_owned()),
                env: Vec::new(),
            }),
            "https://login.microsoftonline.com",
        )
    }

    /// The next reported change (the wait is a liveness bound, not a timing check).
    async fn next(changes: &mut Changes) -> Vec<CredentialId> {
        tokio::time::timeout(Duration::from_secs(20), changes.recv())
            .await
            .expect("a change is reported")
            .expect("the watcher runs")
    }

    #[test]
    fn login_files_are_named_per_tool() {
        assert!(is_login_file(
            Tool::AzureCli,
            Path::new("azureProfile.json")
        ));
        assert!(is_login_file(
            Tool::AzureCli,
            Path::new("msal_token_cache.json")
        ));
        assert!(!is_login_file(Tool::AzureCli, Path::new("logs/az.log")));
        assert!(!is_login_file(
            Tool::AzureCli,
            Path::new("commandIndex.json")
        ));
        assert!(is_login_file(
            Tool::AzureDeveloperCli,
            Path::new("auth/msal/cache.json")
        ));
        assert!(!is_login_file(Tool::AzureDeveloperCli, Path::new("auth")));
        assert!(is_login_file(
            Tool::AzurePowerShell,
            Path::new("AzureRmContext.json")
        ));
    }

    #[tokio::test]
    async fn a_changed_login_file_reports_the_credentials_of_that_profile() {
        let home = tempfile::tempdir().unwrap();
        let (work, default) = (home.path().join(".azure-work"), home.path().join(".azure"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&default).unwrap();
        let (logins, mut changes) = ToolLogins::start();
        logins.watch(&az(&work), Tool::AzureCli, &work);
        logins.watch(&az(&default), Tool::AzureCli, &default);

        // A log line is no new login; the profile rewritten by `az login` is.
        std::fs::write(work.join("az.log"), "noise").unwrap();
        std::fs::write(work.join("azureProfile.json"), "{}").unwrap();
        assert_eq!(next(&mut changes).await, [az(&work)]);
    }

    #[tokio::test]
    async fn a_profile_that_appears_later_is_noticed() {
        let home = tempfile::tempdir().unwrap();
        let profile = home.path().join(".azure");
        let (logins, mut changes) = ToolLogins::start();
        logins.watch(&az(&profile), Tool::AzureCli, &profile);

        // The first `az login` creates the directory...
        std::fs::create_dir_all(&profile).unwrap();
        assert_eq!(next(&mut changes).await, [az(&profile)]);
        // ...which is watched itself from then on.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(profile.join("msal_token_cache.json"), "{}").unwrap();
        assert_eq!(next(&mut changes).await, [az(&profile)]);
    }
}
