//! What one replica counted since its last flush, in memory: per project, atomic
//! counters for requests, bandwidth and realtime connections, and small capped maps
//! for the counts that have a key (an operation's root field, an error code). The
//! request path takes a read lock to find its project's counters and, for keyed
//! counts, one short lock per request; the flush swaps everything out. Nothing here
//! touches the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::Metric;

/// The key under which counts beyond a project's cap of distinct keys gather.
pub const OTHER: &str = "other";
/// Longest key kept as it is; a longer one counts as [`OTHER`].
const MAX_KEY_BYTES: usize = 100;

/// This replica's counters of every project.
pub struct Usage {
    /// Off (`NIMBUS_USAGE=off`): nothing is counted, [`Usage::project`] answers none.
    enabled: bool,
    /// Distinct keys one project's keyed counts may take between two flushes.
    max_keys: usize,
    projects: RwLock<HashMap<Box<str>, Arc<ProjectCounters>>>,
}

/// What one replica counted of one project since the last flush.
#[derive(Default)]
pub struct ProjectCounters {
    requests: AtomicU64,
    http_in: AtomicU64,
    http_out: AtomicU64,
    ws_in: AtomicU64,
    ws_out: AtomicU64,
    /// Realtime connections open now on this replica, and the most since the last
    /// flush.
    connections: AtomicI64,
    peak: AtomicI64,
    keyed: Mutex<Keyed>,
    max_keys: usize,
}

#[derive(Default)]
struct Keyed {
    operations: HashMap<Box<str>, u64>,
    errors: HashMap<Box<str>, u64>,
}

/// One count taken out by a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub project_id: String,
    pub metric: Metric,
    pub dimension: String,
    pub value: i64,
}

impl Usage {
    pub fn new(enabled: bool, max_keys: usize) -> Self {
        Usage {
            enabled,
            max_keys: max_keys.max(1),
            projects: RwLock::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The counters of `project_id` (an existing project: callers name the project
    /// a request was resolved to, never one a client merely wrote); none when
    /// counting is off.
    pub fn project(&self, project_id: &str) -> Option<Arc<ProjectCounters>> {
        if !self.enabled {
            return None;
        }
        if let Ok(projects) = self.projects.read()
            && let Some(counters) = projects.get(project_id)
        {
            return Some(counters.clone());
        }
        let mut projects = self.projects.write().ok()?;
        Some(
            projects
                .entry(project_id.into())
                .or_insert_with(|| {
                    Arc::new(ProjectCounters {
                        max_keys: self.max_keys,
                        ..Default::default()
                    })
                })
                .clone(),
        )
    }

    /// Takes every count out, leaving zeros (and the connections still open);
    /// projects that counted nothing and that nobody holds are forgotten.
    pub fn take(&self) -> Vec<Delta> {
        let mut deltas = Vec::new();
        let Ok(mut projects) = self.projects.write() else {
            return deltas;
        };
        projects.retain(|project_id, counters| {
            let before = deltas.len();
            counters.take_into(project_id, &mut deltas);
            let idle = deltas.len() == before
                && counters.connections.load(Ordering::Relaxed) == 0
                && Arc::strong_count(counters) == 1;
            !idle
        });
        deltas
    }
}

impl ProjectCounters {
    /// One GraphQL operation answered: `roots` are the root fields it selected
    /// (`query.users`), empty when it did not pass validation; `errors` the codes
    /// of its errors.
    pub fn operation<'a>(&self, roots: &[String], errors: impl Iterator<Item = &'a str>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.keys(roots, errors);
    }

    /// Errors answered later in an operation counted before (a subscription's).
    pub fn errors<'a>(&self, errors: impl Iterator<Item = &'a str>) {
        self.keys(&[], errors);
    }

    fn keys<'a>(&self, roots: &[String], errors: impl Iterator<Item = &'a str>) {
        let mut errors = errors.peekable();
        if roots.is_empty() && errors.peek().is_none() {
            return;
        }
        let Ok(mut keyed) = self.keyed.lock() else {
            return;
        };
        for root in roots {
            bump(&mut keyed.operations, root, self.max_keys);
        }
        for code in errors {
            bump(&mut keyed.errors, code, self.max_keys);
        }
    }

    /// Body bytes of one HTTP request and its response.
    pub fn http(&self, received: u64, sent: u64) {
        self.http_in.fetch_add(received, Ordering::Relaxed);
        self.http_out.fetch_add(sent, Ordering::Relaxed);
    }

    /// Bytes of one WebSocket message received.
    pub fn ws_received(&self, bytes: u64) {
        self.ws_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of one WebSocket message sent.
    pub fn ws_sent(&self, bytes: u64) {
        self.ws_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A realtime connection opened; it counts as open until the guard drops.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        let now = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    fn take_into(&self, project_id: &str, deltas: &mut Vec<Delta>) {
        let mut push = |metric: Metric, dimension: &str, value: u64| {
            if value > 0 {
                deltas.push(Delta {
                    project_id: project_id.to_string(),
                    metric,
                    dimension: dimension.to_string(),
                    value: i64::try_from(value).unwrap_or(i64::MAX),
                });
            }
        };
        push(
            Metric::Requests,
            "",
            self.requests.swap(0, Ordering::Relaxed),
        );
        push(
            Metric::BandwidthIn,
            "http",
            self.http_in.swap(0, Ordering::Relaxed),
        );
        push(
            Metric::BandwidthOut,
            "http",
            self.http_out.swap(0, Ordering::Relaxed),
        );
        push(
            Metric::BandwidthIn,
            "ws",
            self.ws_in.swap(0, Ordering::Relaxed),
        );
        push(
            Metric::BandwidthOut,
            "ws",
            self.ws_out.swap(0, Ordering::Relaxed),
        );
        // The next period's peak starts from what is open now.
        let open = self.connections.load(Ordering::Relaxed).max(0);
        let peak = self.peak.swap(open, Ordering::Relaxed).max(open);
        push(Metric::RealtimeConnections, "", peak as u64);
        let keyed = self.keyed.lock().map(|mut k| std::mem::take(&mut *k));
        if let Ok(keyed) = keyed {
            for (key, value) in keyed.operations {
                push(Metric::Operations, &key, value);
            }
            for (key, value) in keyed.errors {
                push(Metric::Errors, &key, value);
            }
        }
    }
}

/// Adds one to `key` in `counts`, or to [`OTHER`] when the map holds `max_keys`
/// keys already (or the key is too long): names clients choose cannot grow it.
fn bump(counts: &mut HashMap<Box<str>, u64>, key: &str, max_keys: usize) {
    if let Some(count) = counts.get_mut(key) {
        *count += 1;
        return;
    }
    let key = if counts.len() < max_keys && key.len() <= MAX_KEY_BYTES {
        key
    } else {
        OTHER
    };
    *counts.entry(key.into()).or_default() += 1;
}

/// An open realtime connection of a project.
pub struct ConnectionGuard(Arc<ProjectCounters>);

impl ConnectionGuard {
    pub fn counters(&self) -> &ProjectCounters {
        &self.0
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(deltas: &[Delta], metric: Metric, dimension: &str) -> i64 {
        deltas
            .iter()
            .filter(|d| d.metric == metric && d.dimension == dimension)
            .map(|d| d.value)
            .sum()
    }

    #[test]
    fn keys_past_the_cap_count_as_other() {
        let usage = Usage::new(true, 2);
        let counters = usage.project("p").unwrap();
        for root in ["query.a", "query.b", "query.c", "query.d", "query.a"] {
            counters.operation(&[root.to_string()], std::iter::empty());
        }
        let deltas = usage.take();
        assert_eq!(value(&deltas, Metric::Requests, ""), 5);
        assert_eq!(value(&deltas, Metric::Operations, "query.a"), 2);
        assert_eq!(value(&deltas, Metric::Operations, "query.b"), 1);
        assert_eq!(value(&deltas, Metric::Operations, OTHER), 2);
        let keys = deltas
            .iter()
            .filter(|d| d.metric == Metric::Operations)
            .count();
        assert_eq!(keys, 3);
    }

    #[test]
    fn a_flush_leaves_zeros_and_the_open_connections_as_the_next_peak() {
        let usage = Usage::new(true, 10);
        let counters = usage.project("p").unwrap();
        let first = counters.connection();
        let second = counters.connection();
        drop(second);
        counters.http(10, 20);
        let deltas = usage.take();
        assert_eq!(value(&deltas, Metric::RealtimeConnections, ""), 2);
        assert_eq!(value(&deltas, Metric::BandwidthIn, "http"), 10);
        assert_eq!(value(&deltas, Metric::BandwidthOut, "http"), 20);
        let deltas = usage.take();
        assert_eq!(value(&deltas, Metric::RealtimeConnections, ""), 1);
        assert_eq!(value(&deltas, Metric::BandwidthIn, "http"), 0);
        drop(first);
        drop(counters);
        usage.take();
        // Nothing counted, nothing open, nobody holding it: forgotten.
        assert!(usage.take().is_empty());
        assert!(usage.projects.read().unwrap().is_empty());
    }

    #[test]
    fn nothing_is_counted_when_off() {
        let usage = Usage::new(false, 10);
        assert!(usage.project("p").is_none());
        assert!(usage.take().is_empty());
    }
}
