//! Keeps the CPUs out of their idle states while the figures run, through
//! the kernel's PM QoS request file `/dev/cpu_dma_latency` (as latency
//! benchmarks such as cyclictest do): a wake-up latency of 0 µs is asked for,
//! and the kernel keeps the request while the file stays open.
//!
//! Why: on a virtual machine a halted vCPU wakes through the hypervisor,
//! which costs tens of µs, more than a whole cached round trip. A
//! single-connection ping-pong then runs in one of two states the scheduler
//! flips between: both threads on one CPU (no halt, about 17 µs here) or one
//! on each, every message waking a halted vCPU (about 55 µs). Which state a
//! block of requests falls into is the same lottery for the bare server and
//! the daemon, so without the hold the p50 ratio measured that lottery, not
//! the daemon (docs/PERFORMANCE.md, "Idle states"). The hold is the same for
//! both sides of every figure, and the run says when it could not be taken
//! (it needs root); the cached figure is also measured once without it.

use std::fs::{File, OpenOptions};
use std::io::Write;

const QOS_FILE: &str = "/dev/cpu_dma_latency";

/// Whether the CPUs are held out of idle states; dropping it lets them idle again.
pub enum IdleStates {
    /// The open request; closing it withdraws the request.
    Held { _request: File },
    /// Why the request could not be made.
    Free(String),
}

impl IdleStates {
    /// Asks for 0 µs wake-up latency; on failure the CPUs stay free to idle.
    pub fn hold() -> IdleStates {
        let request = OpenOptions::new()
            .write(true)
            .open(QOS_FILE)
            .and_then(|mut file| {
                // The kernel reads a native-endian s32 of microseconds.
                file.write_all(&0i32.to_ne_bytes())?;
                Ok(file)
            });
        match request {
            Ok(file) => IdleStates::Held { _request: file },
            Err(e) => IdleStates::Free(format!("cannot write {QOS_FILE}: {e}")),
        }
    }

    pub fn held(&self) -> bool {
        matches!(self, IdleStates::Held { .. })
    }

    /// One line for the report's header.
    pub fn describe(&self) -> String {
        match self {
            IdleStates::Held { .. } => {
                format!("CPU idle states held off ({QOS_FILE} = 0 µs) for every figure but 1b")
            }
            IdleStates::Free(why) => {
                format!("CPU idle states NOT held ({why}): single-connection latencies follow vCPU wake-ups")
            }
        }
    }
}
