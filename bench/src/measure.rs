//! Latency samples and their summary.

use std::time::Duration;

#[derive(Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples {
            nanos: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.nanos.push(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn count(&self) -> usize {
        self.nanos.len()
    }

    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    /// Summary over these samples, with `busy` the wall time they took
    /// (for requests per second).
    pub fn summary(mut self, busy: Duration) -> Latency {
        self.nanos.sort_unstable();
        let us = |q: f64| percentile(&self.nanos, q) as f64 / 1000.0;
        Latency {
            count: self.nanos.len(),
            p50_us: us(0.50),
            p99_us: us(0.99),
            max_us: self.nanos.last().copied().unwrap_or(0) as f64 / 1000.0,
            per_sec: if busy.is_zero() {
                0.0
            } else {
                self.nanos.len() as f64 / busy.as_secs_f64()
            },
        }
    }
}

/// The sample at quantile `q` (nearest rank) of sorted samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time a process has used so far, all threads, user and system: the sum
/// of each thread's on-CPU nanoseconds in `/proc/<pid>/task/*/schedstat`.
/// Threads that already exited are not counted, which is why figures take it
/// over windows in which no thread of the process starts or stops.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Median of a handful of durations, in milliseconds.
pub fn median_ms(durations: &[Duration]) -> f64 {
    let mut nanos: Vec<u64> = durations.iter().map(|d| d.as_nanos() as u64).collect();
    nanos.sort_unstable();
    percentile(&nanos, 0.5) as f64 / 1e6
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub per_sec: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 50);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&sorted, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_counts_rate_over_busy_time() {
        let mut samples = Samples::default();
        for ms in [1, 2, 3, 4] {
            samples.push(Duration::from_millis(ms));
        }
        let latency = samples.summary(Duration::from_secs(2));
        assert_eq!(latency.count, 4);
        assert_eq!(latency.p50_us, 2000.0);
        assert_eq!(latency.max_us, 4000.0);
        assert_eq!(latency.per_sec, 2.0);
    }
}
