//! The results of one run: the table for people, the JSON for machines, and
//! the verdict on each target of issue 5.

use serde_json::{json, Value};

use crate::measure::Latency;
use crate::scenarios::cached::Cached;
use crate::scenarios::cli::Cli;
use crate::scenarios::concurrency::Level;
use crate::scenarios::exec::Exec;
use crate::scenarios::failing_storm::FailingStorm;
use crate::scenarios::identities::Identities;
use crate::scenarios::many_clients::ManyClients;
use crate::scenarios::memory::Memory;
use crate::scenarios::policed::Policed;
use crate::scenarios::refresh::Refresh;
use crate::scenarios::storm::Storm;

pub struct Machine {
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub commit: String,
    pub quick: bool,
}

pub struct Results {
    pub machine: Machine,
    /// Whether the CPUs were held out of idle states ([`crate::idle_states`]).
    pub idle_states: String,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub cached: Cached,
    /// Figure 1 again with the CPUs free to idle (when they were held for the rest).
    pub cached_idling: Option<Cached>,
    pub concurrency: Vec<Level>,
    pub cli: Cli,
    pub many: ManyClients,
    pub storm: Storm,
    pub failing_storm: FailingStorm,
    pub policed: Policed,
    pub exec: Exec,
    pub refresh: Refresh,
    pub memory: Memory,
    pub identities: Identities,
}

/// One target of the issue and how this run did against it.
pub struct Target {
    pub name: &'static str,
    pub value: f64,
    pub limit: f64,
    pub bound: Bound,
    /// A correctness invariant: breaking it fails the run (timings never do).
    pub hard: bool,
}

/// How a value must compare with its target's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    AtMost,
    AtLeast,
    Exactly,
}

impl Bound {
    fn symbol(self) -> &'static str {
        match self {
            Bound::AtMost => "≤",
            Bound::AtLeast => "≥",
            Bound::Exactly => "=",
        }
    }
}

impl Target {
    pub fn met(&self) -> bool {
        match self.bound {
            Bound::AtMost => self.value <= self.limit,
            Bound::AtLeast => self.value >= self.limit,
            Bound::Exactly => self.value == self.limit,
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl Results {
    pub fn targets(&self) -> Vec<Target> {
        let level64 = self.concurrency.iter().find(|l| l.connections == 64);
        let throughput64 = level64.map_or(0.0, |l| ratio(l.broker.per_sec, l.bare.per_sec));
        vec![
            Target {
                name: "cached in-process p50 vs bare round trip",
                value: ratio(self.cached.broker.p50_us, self.cached.bare.p50_us),
                limit: 1.5,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "cached in-process p99 vs bare round trip",
                value: ratio(self.cached.broker.p99_us, self.cached.bare.p99_us),
                limit: 3.0,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "throughput at 64 connections vs bare",
                value: throughput64,
                limit: 0.7,
                bound: Bound::AtLeast,
                hard: false,
            },
            Target {
                name:
                    "cached p50 vs bare round trip, with a policy and the audit under an exec NAME",
                value: ratio(
                    self.policed.cached.broker.p50_us,
                    self.policed.cached.bare.p50_us,
                ),
                limit: 1.5,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "throughput at 64 connections vs bare, with a policy and the audit",
                value: ratio(
                    self.policed.level64.broker.per_sec,
                    self.policed.level64.bare.per_sec,
                ),
                limit: 0.7,
                bound: Bound::AtLeast,
                hard: false,
            },
            Target {
                name: "azbroker exec overhead over starting COMMAND directly (ms)",
                value: self.exec.overhead_ms(),
                limit: 5.0,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "azbroker token (whole process) vs one-shot client",
                value: ratio(self.cli.azbroker_ms, self.cli.oneshot_ms),
                limit: 1.5,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "upstream acquisitions in the cold storm",
                value: self.storm.acquisitions.max(self.storm.az_runs as u64) as f64,
                limit: 1.0,
                bound: Bound::Exactly,
                hard: true,
            },
            Target {
                name: "az runs per failure window, storm against a failing credential",
                value: self.failing_storm.runs_per_window(),
                limit: 1.0,
                bound: Bound::Exactly,
                hard: true,
            },
            Target {
                name: "requests that waited after warm-up (refresh run)",
                value: self.refresh.waits.max(self.refresh.uncached_replies) as f64,
                limit: 0.0,
                bound: Bound::AtMost,
                hard: true,
            },
            Target {
                name: "refreshes served during the refresh run",
                value: self
                    .refresh
                    .refreshes
                    .min((self.refresh.distinct_tokens as u64).saturating_sub(1))
                    as f64,
                limit: 1.0,
                bound: Bound::AtLeast,
                hard: true,
            },
            Target {
                name: "idle daemon resident memory (MiB)",
                value: self.memory.idle_rss as f64 / MIB,
                limit: 15.0,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "resident memory per cached key (bytes)",
                value: self.memory.bytes_per_key,
                limit: 4096.0,
                bound: Bound::AtMost,
                hard: false,
            },
            Target {
                name: "resident memory after many identities went idle vs idle daemon",
                value: ratio(
                    self.identities.after_idle_rss as f64,
                    self.identities.idle_rss as f64,
                ),
                limit: 2.0,
                bound: Bound::AtMost,
                hard: false,
            },
        ]
    }

    /// The table for people (Markdown, so it can go into docs/PERFORMANCE.md as is).
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let mut row = |cells: &[String]| {
            out.push_str("| ");
            out.push_str(&cells.join(" | "));
            out.push_str(" |\n");
        };
        let s = |v: &str| v.to_string();
        row(&[s("figure"), s("azbroker"), s("baseline"), s("ratio")]);
        row(&[s("---"), s("---:"), s("---:"), s("---:")]);
        let c = &self.cached;
        let percentiles = |label: &str, measured: &Latency| {
            [
                s(label),
                format!("{:.1} / {:.1}", measured.p50_us, measured.p99_us),
                format!("{:.1} / {:.1}", c.bare.p50_us, c.bare.p99_us),
                format!(
                    "{:.2}x / {:.2}x",
                    ratio(measured.p50_us, c.bare.p50_us),
                    ratio(measured.p99_us, c.bare.p99_us)
                ),
            ]
        };
        row(&percentiles(
            "1. cached token, in-process, p50 / p99 (µs)",
            &c.broker,
        ));
        row(&percentiles(
            "1. the same, daemon alone (prebuilt frames, no client library), p50 / p99 (µs)",
            &c.daemon_only,
        ));
        if let Some(idling) = &self.cached_idling {
            row(&[
                s("1b. the same, CPUs free to idle (informational), p50 / p99 (µs)"),
                format!("{:.1} / {:.1}", idling.broker.p50_us, idling.broker.p99_us),
                format!("{:.1} / {:.1}", idling.bare.p50_us, idling.bare.p99_us),
                format!(
                    "{:.2}x / {:.2}x",
                    ratio(idling.broker.p50_us, idling.bare.p50_us),
                    ratio(idling.broker.p99_us, idling.bare.p99_us)
                ),
            ]);
        }
        row(&[
            s("1. cached token, in-process, requests/s"),
            thousands(c.broker.per_sec),
            thousands(c.bare.per_sec),
            format!("{:.2}x", ratio(c.broker.per_sec, c.bare.per_sec)),
        ]);
        for level in &self.concurrency {
            row(&[
                format!(
                    "2. {} connections: requests/s (p99 µs; CPU µs per request)",
                    level.connections
                ),
                format!(
                    "{} ({:.0}; {:.1})",
                    thousands(level.broker.per_sec),
                    level.broker.p99_us,
                    level.broker_cpu_us
                ),
                format!(
                    "{} ({:.0}; {:.1})",
                    thousands(level.bare.per_sec),
                    level.bare.p99_us,
                    level.bare_cpu_us
                ),
                format!(
                    "{:.2}x ({:.2}x; {:.2}x)",
                    ratio(level.broker.per_sec, level.bare.per_sec),
                    ratio(level.broker.p99_us, level.bare.p99_us),
                    ratio(level.broker_cpu_us, level.bare_cpu_us)
                ),
            ]);
        }
        row(&[
            format!(
                "3. `azbroker token --raw`, whole process, median of {} runs (ms)",
                self.cli.runs
            ),
            format!("{:.2}", self.cli.azbroker_ms),
            format!("{:.2}", self.cli.oneshot_ms),
            format!("{:.2}x", ratio(self.cli.azbroker_ms, self.cli.oneshot_ms)),
        ]);
        row(&[
            s("3. the az shim, `az account get-access-token`, whole process (ms)"),
            format!("{:.2}", self.cli.az_shim_ms),
            format!("{:.2}", self.cli.oneshot_ms),
            format!("{:.2}x", ratio(self.cli.az_shim_ms, self.cli.oneshot_ms)),
        ]);
        let ex = &self.exec;
        row(&[
            format!(
                "11. `azbroker exec -- true` / `exec --name N --allow-scope P -- true`, median of {} runs (ms)",
                ex.runs
            ),
            format!("{:.2} / {:.2}", ex.exec_ms, ex.named_ms),
            format!("{:.2} (`true` alone)", ex.direct_ms),
            format!("+{:.2} ms", ex.overhead_ms()),
        ]);
        let p = &self.policed;
        row(&[
            format!(
                "10. with a policy and the audit, under exec NAME {}: cached p50 / p99 (µs)",
                crate::scenarios::policed::NAME
            ),
            format!(
                "{:.1} / {:.1}",
                p.cached.broker.p50_us, p.cached.broker.p99_us
            ),
            format!("{:.1} / {:.1}", p.cached.bare.p50_us, p.cached.bare.p99_us),
            format!(
                "{:.2}x / {:.2}x",
                ratio(p.cached.broker.p50_us, p.cached.bare.p50_us),
                ratio(p.cached.broker.p99_us, p.cached.bare.p99_us)
            ),
        ]);
        row(&[
            s("10. the same, 64 connections: requests/s"),
            thousands(p.level64.broker.per_sec),
            thousands(p.level64.bare.per_sec),
            format!(
                "{:.2}x",
                ratio(p.level64.broker.per_sec, p.level64.bare.per_sec)
            ),
        ]);
        let st = &self.storm;
        row(&[
            format!(
                "4. cold storm, {} callers, {} ms credential: upstream acquisitions",
                st.callers,
                crate::scenarios::storm::CREDENTIAL_DELAY.as_millis()
            ),
            format!(
                "{} (az ran {}×, {} token)",
                st.acquisitions, st.az_runs, st.distinct_tokens
            ),
            s("1"),
            s(""),
        ]);
        row(&[
            s("4. cold storm: slowest / median caller vs one lone acquisition (ms)"),
            format!("{:.0} / {:.0}", st.slowest_ms, st.median_ms),
            format!("{:.0}", st.lone_acquisition_ms),
            format!("{:.2}x", ratio(st.slowest_ms, st.lone_acquisition_ms)),
        ]);
        let fs = &self.failing_storm;
        row(&[
            format!(
                "9. storm against a failing credential, {} callers × {} requests, {} ms credential: az runs per {} s window",
                fs.callers,
                fs.rounds,
                crate::scenarios::failing_storm::CREDENTIAL_DELAY.as_millis(),
                fs.window.as_secs()
            ),
            format!(
                "{} ({})",
                trim_float(fs.runs_per_window()),
                fs.bursts
                    .iter()
                    .map(|b| format!(
                        "az ran {}× for {} requests in {:.1} s, {} remembered",
                        b.az_runs,
                        thousands(fs.requests_per_burst() as f64),
                        b.seconds,
                        thousands(b.remembered as f64)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            s("1"),
            s(""),
        ]);
        let r = &self.refresh;
        row(&[
            format!(
                "5. refresh, {} s tokens, {} s credential, {:.0} s of traffic: requests that waited",
                r.token_lifetime_secs,
                crate::scenarios::refresh::CREDENTIAL_DELAY.as_secs(),
                r.seconds
            ),
            format!(
                "{} of {} ({} refreshes, {} tokens)",
                r.waits.max(r.uncached_replies),
                thousands(r.requests as f64),
                r.refreshes,
                r.distinct_tokens
            ),
            s("0"),
            s(""),
        ]);
        let mem = &self.memory;
        row(&[
            s("6. daemon resident memory, idle (MiB)"),
            format!("{:.1}", mem.idle_rss as f64 / MIB),
            s("< 15"),
            s(""),
        ]);
        row(&[
            format!(
                "6. per cached key, {} keys (bytes; {:.1} → {:.1} MiB)",
                thousands(mem.keys as f64),
                mem.warm_rss as f64 / MIB,
                mem.filled_rss as f64 / MIB
            ),
            format!("{:.0}", mem.bytes_per_key),
            s("< 4096"),
            s(""),
        ]);
        let ids = &self.identities;
        row(&[
            format!(
                "8. resident memory after {} distinct identities (MiB; {} actors alive, {:.1} s)",
                thousands(ids.identities as f64),
                ids.actors_loaded
                    .map_or_else(|| "too many to list".to_string(), |n| n.to_string()),
                ids.load_seconds
            ),
            format!("{:.1}", ids.loaded_rss as f64 / MIB),
            format!("{:.1} (idle daemon)", ids.idle_rss as f64 / MIB),
            format!("{:.2}x", ratio(ids.loaded_rss as f64, ids.idle_rss as f64)),
        ]);
        row(&[
            format!(
                "8. the same once their actors went idle (MiB; stopped within {:.1} s)",
                ids.drain_seconds
            ),
            format!("{:.1}", ids.after_idle_rss as f64 / MIB),
            s("< 2x idle"),
            format!(
                "{:.2}x",
                ratio(ids.after_idle_rss as f64, ids.idle_rss as f64)
            ),
        ]);
        let many = &self.many;
        row(&[
            format!(
                "7. with {} idle connections, cached p50 / p99 (µs)",
                thousands(many.idle_connections as f64)
            ),
            format!(
                "{:.1} / {:.1}",
                many.with_idle.p50_us, many.with_idle.p99_us
            ),
            format!(
                "{:.1} / {:.1} (none idle)",
                many.without_idle.p50_us, many.without_idle.p99_us
            ),
            format!(
                "{:.2}x / {:.2}x",
                ratio(many.with_idle.p50_us, many.without_idle.p50_us),
                ratio(many.with_idle.p99_us, many.without_idle.p99_us)
            ),
        ]);
        row(&[
            s("7. daemon: open connections, open files, soft open-file limit"),
            format!(
                "{}, {}, {} → {}",
                many.daemon_connections_open,
                many.daemon_open_files,
                many.nofile_at_start,
                many.nofile_now
            ),
            s(""),
            s(""),
        ]);

        let mut text = format!(
            "azbroker-bench {} run, {}, commit {}, {} cores ({}); request {} B, reply {} B; {}\n\n",
            if m.quick { "quick" } else { "full" },
            m.date,
            m.commit,
            m.cores,
            m.cpu,
            self.request_bytes,
            self.reply_bytes,
            self.idle_states
        );
        text.push_str(&out);
        text.push_str("\n| target | this run | limit | |\n| --- | ---: | ---: | --- |\n");
        for target in self.targets() {
            text.push_str(&format!(
                "| {} | {} | {} {} | {}{} |\n",
                target.name,
                trim_float(target.value),
                target.bound.symbol(),
                trim_float(target.limit),
                if target.met() { "met" } else { "MISSED" },
                if target.hard { " (hard)" } else { "" }
            ));
        }
        text
    }

    pub fn json(&self) -> Value {
        let m = &self.machine;
        json!({
            "date": m.date,
            "cores": m.cores,
            "cpu": m.cpu,
            "commit": m.commit,
            "mode": if m.quick { "quick" } else { "full" },
            "idle_states": self.idle_states,
            "request_bytes": self.request_bytes,
            "reply_bytes": self.reply_bytes,
            "cached_in_process": {
                "broker": latency(&self.cached.broker),
                "bare": latency(&self.cached.bare),
                "daemon_only": latency(&self.cached.daemon_only),
            },
            "cached_in_process_cpus_idling": self.cached_idling.as_ref().map(|c| json!({
                "broker": latency(&c.broker),
                "bare": latency(&c.bare),
                "daemon_only": latency(&c.daemon_only),
            })),
            "concurrency": self.concurrency.iter().map(|l| json!({
                "connections": l.connections,
                "broker": latency(&l.broker),
                "bare": latency(&l.bare),
                "broker_cpu_us_per_request": l.broker_cpu_us,
                "bare_cpu_us_per_request": l.bare_cpu_us,
            })).collect::<Vec<_>>(),
            "whole_process": {
                "runs": self.cli.runs,
                "azbroker_token_median_ms": self.cli.azbroker_ms,
                "az_shim_median_ms": self.cli.az_shim_ms,
                "oneshot_median_ms": self.cli.oneshot_ms,
            },
            "cold_storm": {
                "callers": self.storm.callers,
                "credential_delay_ms": crate::scenarios::storm::CREDENTIAL_DELAY.as_millis() as u64,
                "upstream_acquisitions": self.storm.acquisitions,
                "az_runs": self.storm.az_runs,
                "distinct_tokens": self.storm.distinct_tokens,
                "lone_acquisition_ms": self.storm.lone_acquisition_ms,
                "slowest_ms": self.storm.slowest_ms,
                "median_ms": self.storm.median_ms,
            },
            "failing_storm": {
                "callers": self.failing_storm.callers,
                "rounds": self.failing_storm.rounds,
                "credential_delay_ms": crate::scenarios::failing_storm::CREDENTIAL_DELAY.as_millis() as u64,
                "window_ms": self.failing_storm.window.as_millis() as u64,
                "runs_per_window": self.failing_storm.runs_per_window(),
                "bursts": self.failing_storm.bursts.iter().map(|b| json!({
                    "az_runs": b.az_runs,
                    "windows": b.windows,
                    "remembered": b.remembered,
                    "seconds": b.seconds,
                })).collect::<Vec<_>>(),
            },
            "policy_and_audit": {
                "name": crate::scenarios::policed::NAME,
                "cached": latency(&self.policed.cached.broker),
                "cached_bare": latency(&self.policed.cached.bare),
                "connections_64": latency(&self.policed.level64.broker),
                "connections_64_bare": latency(&self.policed.level64.bare),
                "audited_before": self.policed.audited_before,
            },
            "exec": {
                "runs": self.exec.runs,
                "direct_median_ms": self.exec.direct_ms,
                "exec_median_ms": self.exec.exec_ms,
                "exec_named_median_ms": self.exec.named_ms,
                "overhead_ms": self.exec.overhead_ms(),
            },
            "refresh": {
                "token_lifetime_secs": self.refresh.token_lifetime_secs,
                "credential_delay_ms": crate::scenarios::refresh::CREDENTIAL_DELAY.as_millis() as u64,
                "seconds": self.refresh.seconds,
                "requests": self.refresh.requests,
                "refreshes": self.refresh.refreshes,
                "distinct_tokens": self.refresh.distinct_tokens,
                "waits": self.refresh.waits,
                "uncached_replies": self.refresh.uncached_replies,
            },
            "memory": {
                "idle_rss_bytes": self.memory.idle_rss,
                "warm_rss_bytes": self.memory.warm_rss,
                "keys": self.memory.keys,
                "filled_rss_bytes": self.memory.filled_rss,
                "bytes_per_key": self.memory.bytes_per_key,
                "fill_seconds": self.memory.fill_seconds,
            },
            "identities": {
                "identities": self.identities.identities,
                "idle_rss_bytes": self.identities.idle_rss,
                "loaded_rss_bytes": self.identities.loaded_rss,
                "after_idle_rss_bytes": self.identities.after_idle_rss,
                "actors_loaded": self.identities.actors_loaded,
                "load_seconds": self.identities.load_seconds,
                "drain_seconds": self.identities.drain_seconds,
            },
            "many_clients": {
                "idle_connections": self.many.idle_connections,
                "daemon_connections_open": self.many.daemon_connections_open,
                "daemon_open_files": self.many.daemon_open_files,
                "daemon_nofile_at_start": self.many.nofile_at_start,
                "daemon_nofile_now": self.many.nofile_now,
                "without_idle": latency(&self.many.without_idle),
                "with_idle": latency(&self.many.with_idle),
            },
            "targets": self.targets().iter().map(|t| json!({
                "name": t.name,
                "value": t.value,
                "limit": t.limit,
                "bound": t.bound.symbol(),
                "hard": t.hard,
                "met": t.met(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn latency(l: &Latency) -> Value {
    json!({
        "count": l.count,
        "p50_us": l.p50_us,
        "p99_us": l.p99_us,
        "max_us": l.max_us,
        "per_sec": l.per_sec,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::INFINITY
    } else {
        a / b
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// 12345.6 -> "12,346".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn targets_compare_in_their_direction() {
        let at_most = Target {
            name: "a",
            value: 1.5,
            limit: 1.5,
            bound: Bound::AtMost,
            hard: false,
        };
        assert!(at_most.met());
        let at_least = Target {
            name: "b",
            value: 0.69,
            limit: 0.7,
            bound: Bound::AtLeast,
            hard: false,
        };
        assert!(!at_least.met());
        let exactly = |value| Target {
            name: "c",
            value,
            limit: 1.0,
            bound: Bound::Exactly,
            hard: true,
        };
        assert!(exactly(1.0).met());
        assert!(!exactly(0.0).met());
        assert!(!exactly(2.0).met());
    }
}
