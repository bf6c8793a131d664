//! What one replica counted since its last flush, in memory: per project, counters
//! for requests, bandwidth and realtime connections, and small capped maps for the
//! counts that have a key (an operation's root field, an error code). A project's
//! counters are kept with its loaded schema, so the request path looks nothing up;
//! they are split in shards, each on its own cache line, and a thread counts in its
//! own shard: two workers counting the same project at 100,000 requests a second do
//! not bounce a cache line between cores. The flush adds the shards up. Nothing here
//! touches the database.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::Metric;

/// The key under which counts beyond a project's cap of distinct keys gather.
pub const OTHER: &str = "other";
/// Longest key kept as it is; a longer one counts as [`OTHER`].
const MAX_KEY_BYTES: usize = 100;
/// Most shards of one project's counters.
const MAX_SHARDS: usize = 64;

/// This replica's counters of every project.
pub struct Usage {
    /// Off (`NIMBUS_USAGE=off`): nothing is counted, [`Usage::project`] answers none.
    enabled: bool,
    /// Distinct keys one project's keyed counts may take between two flushes.
    max_keys: usize,
    /// Shards of each project's counters: a power of two, at least twice the cores,
    /// so that threads seldom share one.
    shards: usize,
    projects: RwLock<HashMap<Box<str>, Arc<ProjectCounters>>>,
}

/// What one replica counted of one project since the last flush.
pub struct ProjectCounters {
    shards: Box<[Shard]>,
    /// Realtime connections open now on this replica, and the most since the last
    /// flush (a connection opens far less often than a request is answered).
    connections: AtomicI64,
    peak: AtomicI64,
    max_keys: usize,
}

/// The metrics counted from the events a replica commits, in the order of
/// [`Shard::resources`].
const RESOURCES: [Metric; 9] = [
    Metric::DocumentsCreated,
    Metric::DocumentsDeleted,
    Metric::FilesCreated,
    Metric::FilesDeleted,
    Metric::UsersCreated,
    Metric::UsersDeleted,
    Metric::SessionsCreated,
    Metric::SessionsDeleted,
    Metric::Executions,
];

/// The counts of the threads that count in one shard, alone on their cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    resources: [AtomicU64; RESOURCES.len()],
    http_in: AtomicU64,
    http_out: AtomicU64,
    ws_in: AtomicU64,
    ws_out: AtomicU64,
    keyed: Mutex<Keyed>,
}

#[derive(Default)]
struct Keyed {
    operations: HashMap<Box<str>, u64>,
    errors: HashMap<Box<str>, u64>,
}

thread_local! {
    /// This thread's shard number, taken in turn the first time it counts.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard_number() -> usize {
    SHARD.with(|shard| {
        let mut n = shard.get();
        if n == usize::MAX {
            n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            shard.set(n);
        }
        n
    })
}

/// Created and deleted resources are counted on the replica that commits their
/// events, as it commits them: once each, with no reading of the log back. The
/// counts of a replica killed before its flush are lost, as its requests' are.
impl crate::bus::CommitWatch for Usage {
    fn committed(&self, message: &crate::bus::BusMessage) {
        if let crate::bus::BusMessage::Event(event) = message
            && !event.project_id.is_empty()
            && let Some(metric) = Metric::of_event(event)
            && let Some(counters) = self.project(&event.project_id)
        {
            counters.resource(metric);
        }
    }
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Usage {
            enabled,
            max_keys: max_keys.max(1),
            shards: (cores * 2).next_power_of_two().min(MAX_SHARDS),
            projects: RwLock::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The counters of `project_id` (an existing project: callers name the project
    /// a request was resolved to, never one a client merely wrote); none when
    /// counting is off. The request path takes them from its loaded project
    /// instead of asking here.
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
                        shards: (0..self.shards).map(|_| Shard::default()).collect(),
                        connections: AtomicI64::new(0),
                        peak: AtomicI64::new(0),
                        max_keys: self.max_keys,
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
    /// The shard this thread counts in.
    fn shard(&self) -> &Shard {
        // `shards.len()` is a power of two.
        &self.shards[shard_number() & (self.shards.len() - 1)]
    }

    /// One GraphQL operation answered: `roots` are the root fields it selected
    /// (`query.users`), empty when it did not pass validation; `errors` the codes
    /// of its errors.
    pub fn operation<'a>(&self, roots: &[String], errors: impl Iterator<Item = &'a str>) {
        let shard = self.shard();
        shard.requests.fetch_add(1, Ordering::Relaxed);
        self.keys(shard, roots, errors);
    }

    /// Errors answered later in an operation counted before (a subscription's).
    pub fn errors<'a>(&self, errors: impl Iterator<Item = &'a str>) {
        self.keys(self.shard(), &[], errors);
    }

    fn keys<'a>(&self, shard: &Shard, roots: &[String], errors: impl Iterator<Item = &'a str>) {
        let mut errors = errors.peekable();
        if roots.is_empty() && errors.peek().is_none() {
            return;
        }
        let Ok(mut keyed) = shard.keyed.lock() else {
            return;
        };
        for root in roots {
            bump(&mut keyed.operations, root, 1, self.max_keys);
        }
        for code in errors {
            bump(&mut keyed.errors, code, 1, self.max_keys);
        }
    }

    /// Body bytes of one HTTP request and its response.
    pub fn http(&self, received: u64, sent: u64) {
        let shard = self.shard();
        shard.http_in.fetch_add(received, Ordering::Relaxed);
        shard.http_out.fetch_add(sent, Ordering::Relaxed);
    }

    /// Bytes of one WebSocket message received.
    pub fn ws_received(&self, bytes: u64) {
        self.shard().ws_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of one WebSocket message sent.
    pub fn ws_sent(&self, bytes: u64) {
        self.shard().ws_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One function execution that logs no `create` event (a success of a
    /// function with `logging: false`), counted as that event would have been.
    pub fn unrecorded_execution(&self) {
        self.resource(Metric::Executions);
    }

    /// One resource created or deleted (`metric` one of [`RESOURCES`]).
    fn resource(&self, metric: Metric) {
        if let Some(at) = RESOURCES.iter().position(|m| *m == metric) {
            self.shard().resources[at].fetch_add(1, Ordering::Relaxed);
        }
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
        let take = |field: fn(&Shard) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|shard| field(shard).swap(0, Ordering::Relaxed))
                .fold(0u64, u64::saturating_add)
        };
        push(Metric::Requests, "", take(|s| &s.requests));
        push(Metric::BandwidthIn, "http", take(|s| &s.http_in));
        push(Metric::BandwidthOut, "http", take(|s| &s.http_out));
        push(Metric::BandwidthIn, "ws", take(|s| &s.ws_in));
        push(Metric::BandwidthOut, "ws", take(|s| &s.ws_out));
        for (at, metric) in RESOURCES.iter().enumerate() {
            let taken = self
                .shards
                .iter()
                .map(|shard| shard.resources[at].swap(0, Ordering::Relaxed))
                .fold(0u64, u64::saturating_add);
            push(*metric, "", taken);
        }
        // The next period's peak starts from what is open now.
        let open = self.connections.load(Ordering::Relaxed).max(0);
        let peak = self.peak.swap(open, Ordering::Relaxed).max(open);
        push(Metric::RealtimeConnections, "", peak as u64);
        // Each shard kept up to `max_keys` keys; together they keep as many as one
        // map would have: the most counted (ties by name, so the choice does not
        // depend on the shards' order), the rest under `other`.
        let mut operations = HashMap::new();
        let mut errors = HashMap::new();
        for shard in self.shards.iter() {
            let Ok(keyed) = shard.keyed.lock().map(|mut k| std::mem::take(&mut *k)) else {
                continue;
            };
            add_all(&mut operations, keyed.operations);
            add_all(&mut errors, keyed.errors);
        }
        for (key, value) in capped(operations, self.max_keys) {
            push(Metric::Operations, &key, value);
        }
        for (key, value) in capped(errors, self.max_keys) {
            push(Metric::Errors, &key, value);
        }
    }
}

fn add_all(into: &mut HashMap<Box<str>, u64>, from: HashMap<Box<str>, u64>) {
    for (key, value) in from {
        let count = into.entry(key).or_default();
        *count = count.saturating_add(value);
    }
}

/// The `max_keys` most counted keys of `counts` (ties by name), and the rest
/// added up under [`OTHER`].
fn capped(mut counts: HashMap<Box<str>, u64>, max_keys: usize) -> Vec<(Box<str>, u64)> {
    let mut other = counts.remove(OTHER).unwrap_or(0);
    let mut ranked: Vec<(Box<str>, u64)> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (_, value) in ranked.drain(max_keys.min(ranked.len())..) {
        other = other.saturating_add(value);
    }
    if other > 0 {
        ranked.push((OTHER.into(), other));
    }
    ranked
}

/// Adds `n` to `key` in `counts`, or to [`OTHER`] when the map holds `max_keys`
/// keys already (or the key is too long): names clients choose cannot grow it.
fn bump(counts: &mut HashMap<Box<str>, u64>, key: &str, n: u64, max_keys: usize) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_add(n);
        return;
    }
    let key = if counts.len() < max_keys && key.len() <= MAX_KEY_BYTES {
        key
    } else {
        OTHER
    };
    let count = counts.entry(key.into()).or_default();
    *count = count.saturating_add(n);
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
    fn counts_of_many_threads_add_up_under_one_cap() {
        let usage = Usage::new(true, 3);
        let counters = usage.project("p").unwrap();
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let counters = &counters;
                scope.spawn(move || {
                    for n in 0..100 {
                        let root = format!("query.f{}", (thread + n) % 5);
                        counters.operation(&[root], ["E"].into_iter());
                        counters.http(1, 2);
                    }
                });
            }
        });
        let deltas = usage.take();
        assert_eq!(value(&deltas, Metric::Requests, ""), 800);
        assert_eq!(value(&deltas, Metric::Errors, "E"), 800);
        assert_eq!(value(&deltas, Metric::BandwidthOut, "http"), 1600);
        let operations: Vec<&Delta> = deltas
            .iter()
            .filter(|d| d.metric == Metric::Operations)
            .collect();
        assert_eq!(operations.iter().map(|d| d.value).sum::<i64>(), 800);
        // Three keys and `other`, however the threads shared the shards.
        assert!(operations.len() <= 4, "{operations:?}");
    }

    #[test]
    fn nothing_is_counted_when_off() {
        let usage = Usage::new(false, 10);
        assert!(usage.project("p").is_none());
        assert!(usage.take().is_empty());
    }
}
