//! Exec grants: what `azbroker exec --name NAME` registered for its own
//! process, and which grant a peer falls under.
//!
//! `azbroker exec` registers before it replaces itself with COMMAND (same
//! pid), so the grant is keyed by that process: its pid and its start time
//! (which tells a reused pid apart). A peer falls under the grant of the
//! nearest process in its ancestry (itself, its parent, ...), so grandchildren
//! and children that cleared their environment (`env -i`) are covered. A
//! same-user process that deliberately leaves the tree (double fork and
//! reparenting to init or a subreaper) is no longer under the grant: it gets
//! what the rule for processes under no exec allows (docs/ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::rules::Rules;

/// Most live grants; dead ones are swept first.
pub const MAX_GRANTS: usize = 4096;
/// Longest ancestry walked (a deeper tree is cut there).
const MAX_DEPTH: usize = 128;

/// One exec's name and the rules its flags set.
#[derive(Debug)]
pub struct Grant {
    pub name: String,
    pub rules: Rules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProcessKey {
    pid: u32,
    /// Start time, clock ticks after boot (`/proc/<pid>/stat` field 22).
    started: u64,
}

#[derive(Default)]
pub struct Grants {
    by_process: Mutex<HashMap<ProcessKey, Arc<Grant>>>,
}

impl Grants {
    /// Registers `grant` for the live process `pid`.
    pub fn register(&self, pid: u32, grant: Grant) -> Result<(), String> {
        let (_, started) = stat(pid).ok_or_else(|| format!("process {pid} is gone"))?;
        let mut grants = self.lock();
        if grants.len() >= MAX_GRANTS {
            grants.retain(|key, _| is_alive(*key));
        }
        if grants.len() >= MAX_GRANTS {
            return Err(format!(
                "more than {MAX_GRANTS} azbroker exec processes are running"
            ));
        }
        grants.insert(ProcessKey { pid, started }, Arc::new(grant));
        Ok(())
    }

    /// The grant `pid` runs under: its own or its nearest ancestor's.
    pub fn find(&self, pid: u32) -> Option<Arc<Grant>> {
        let grants = self.lock();
        if grants.is_empty() {
            return None;
        }
        let mut pid = pid;
        for _ in 0..MAX_DEPTH {
            let (parent, started) = stat(pid)?;
            if let Some(grant) = grants.get(&ProcessKey { pid, started }) {
                return Some(grant.clone());
            }
            if parent <= 1 {
                return None;
            }
            pid = parent;
        }
        None
    }

    /// Forgets the grants of processes that ended.
    pub fn sweep(&self) {
        self.lock().retain(|key, _| is_alive(*key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessKey, Arc<Grant>>> {
        self.by_process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn is_alive(key: ProcessKey) -> bool {
    stat(key.pid).is_some_and(|(_, started)| started == key.started)
}

/// A process's parent pid and start time, from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn stat(pid: u32) -> Option<(u32, u64)> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    // The command name (field 2) is in parentheses and may hold anything:
    // the fields after the last ')' are fixed.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, starttime field 22.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Elsewhere the ancestry is not read: no process is under a grant.
#[cfg(not(target_os = "linux"))]
fn stat(_pid: u32) -> Option<(u32, u64)> {
    None
}

/// The executable of `pid`, for the audit and error messages.
#[cfg(target_os = "linux")]
pub fn executable(pid: u32) -> Option<String> {
    let path = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = path.to_string_lossy();
    Some(text.chars().take(1024).collect())
}

#[cfg(not(target_os = "linux"))]
pub fn executable(_pid: u32) -> Option<String> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn grant(name: &str) -> Grant {
        Grant {
            name: name.into(),
            rules: Rules::default(),
        }
    }

    #[test]
    fn a_child_falls_under_its_ancestors_grant_and_a_dead_grant_is_swept() {
        let grants = Grants::default();
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(grants.find(child.id()).is_none());
        grants.register(me, grant("agent")).unwrap();
        assert_eq!(grants.find(child.id()).unwrap().name, "agent");
        assert_eq!(grants.find(me).unwrap().name, "agent");

        // The child's own grant is nearer than its parent's.
        grants.register(child.id(), grant("inner")).unwrap();
        assert_eq!(grants.find(child.id()).unwrap().name, "inner");
        child.kill().unwrap();
        child.wait().unwrap();
        grants.sweep();
        assert_eq!(grants.lock().len(), 1, "the dead child's grant is gone");
        assert!(grants.register(child.id(), grant("late")).is_err());
    }

    #[test]
    fn stat_reads_the_parent_and_the_start_time() {
        let (parent, started) = stat(std::process::id()).unwrap();
        assert_eq!(parent, std::os::unix::process::parent_id());
        assert!(started > 0);
        assert!(executable(std::process::id()).is_some());
    }
}
