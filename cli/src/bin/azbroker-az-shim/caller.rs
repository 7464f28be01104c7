//! Whether whoever ran the shim still waits for its answer. A shim outlives
//! its caller when the caller gives up (the SDKs stop waiting for `az` after
//! 10 to 13 s) without killing it; such a shim must not start a daemon later,
//! with the environment of a process that is gone.

use std::time::{Duration, Instant};

use nix::unistd::{getppid, Pid};

/// The longest an Azure SDK waits for `az account get-access-token`
/// (Azure.Identity for .NET, hence the Azure MCP Server: 13 s; Python and
/// JavaScript: 10 s). Past it, nobody is waiting.
pub const PATIENCE: Duration = Duration::from_secs(13);

/// The shim's caller as it was when the shim started.
pub struct Caller {
    parent: Pid,
    since: Instant,
}

impl Caller {
    pub fn now() -> Caller {
        Caller {
            parent: getppid(),
            since: Instant::now(),
        }
    }

    /// `Some(why)` once the caller is known to have stopped waiting.
    pub fn gave_up(&self) -> Option<String> {
        gave_up(self.parent, getppid(), self.since.elapsed())
    }
}

/// The decision: the parent that started the shim has exited (the shim was
/// handed to another parent), or the shim has run longer than any caller waits.
/// A parent pid of 1 at the start is not taken as "gone": in a container a
/// shell can be pid 1.
fn gave_up(parent_then: Pid, parent_now: Pid, running: Duration) -> Option<String> {
    if parent_now != parent_then {
        return Some(format!(
            "the process that ran this shim (pid {parent_then}) has exited"
        ));
    }
    if running > PATIENCE {
        return Some(format!(
            "this shim has run {} s, longer than any caller waits for az ({} s)",
            running.as_secs(),
            PATIENCE.as_secs()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_exited_or_stopped_waiting_gave_up() {
        let (parent, init) = (Pid::from_raw(4242), Pid::from_raw(1));
        let soon = Duration::from_millis(5);
        assert_eq!(gave_up(parent, parent, soon), None);
        assert_eq!(gave_up(init, init, soon), None);
        assert!(gave_up(parent, init, soon).unwrap().contains("pid 4242"));
        assert!(gave_up(parent, Pid::from_raw(77), soon).is_some());
        assert_eq!(gave_up(parent, parent, PATIENCE), None);
        assert!(gave_up(parent, parent, PATIENCE + Duration::from_secs(1))
            .unwrap()
            .contains("longer than any caller waits"));
    }
}
